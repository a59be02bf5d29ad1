"""One check of the GPU path on a CUDA machine, printed as one table.

    python3 bench/gpu_check.py                   # everything (a few minutes on a current GPU)
    python3 bench/gpu_check.py --quick           # 256 and 512 only, fewer batches, a 48-frame clip

Rows:
  accuracy   GPEN-BFR-256 raw output (recipe weights, the reference inputs in tests/data) on CUDA in fp32, fp16
             and bf16 against the CPU fp32 model (which equals the official code within 1e-5): max and mean |diff|
             and a histogram of |diff| over [0, 1e-4, 1e-3, 1e-2, 1e-1, inf)
  model      faces/s per batch size at 256/512/1024/2048 (--dtype, default: what `--dtype auto` picks here), with
             the peak VRAM of each (torch.cuda.max_memory_allocated); batch sizes stop at the first out-of-memory
  end to end `vidgpen restore` on a generated 1080p clip with one face (GPEN-BFR-512 recipe weights, the default
             detector, feathered mask): frames/s and busy seconds per stage

Recipe weights have the official architecture and cost; their outputs are not faces, which does not change speed.
On a machine without CUDA the script says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
HISTOGRAM_BINS = [0, 1e-4, 1e-3, 1e-2, 1e-1, np.inf]


def recipe_model(size: int):
    from vidgpen.models.gpen import FullGenerator
    from vidgpen.models.recipe import recipe_state_dict
    from vidgpen.models.variants import VARIANTS

    name = f"GPEN-BFR-{size}"
    model = FullGenerator(VARIANTS[name].architecture).eval()
    model.load_state_dict(recipe_state_dict(json.loads((DATA / f"manifest-{name}.json").read_text())), strict=True)
    return model


def accuracy_rows() -> list[list[str]]:
    import torch

    inputs = torch.from_numpy(np.load(DATA / "GPEN-BFR-256_input_b2.npy"))
    cpu_model = recipe_model(256)
    reference = cpu_model(inputs).numpy()
    official = np.load(DATA / "GPEN-BFR-256_output_b2.npy")
    rows = [["accuracy", "256 cpu fp32 vs official", f"max {np.abs(reference - official).max():.2e}",
             f"mean {np.abs(reference - official).mean():.2e}", ""]]
    dtypes = {"fp32": torch.float32, "fp16": torch.float16}
    if torch.cuda.is_bf16_supported():
        dtypes["bf16"] = torch.bfloat16
    gpu_model = recipe_model(256).cuda()
    for name, dtype in dtypes.items():
        out = gpu_model.set_compute_dtype(dtype)(inputs.cuda()).float().cpu().numpy()
        diff = np.abs(out - reference)
        histogram = np.histogram(diff, bins=HISTOGRAM_BINS)[0]
        finite = "" if np.isfinite(out).all() else "  NON-FINITE OUTPUT"
        rows.append(["accuracy", f"256 cuda {name} vs cpu fp32", f"max {diff.max():.2e}", f"mean {diff.mean():.2e}",
                     "hist " + "/".join(str(int(c)) for c in histogram) + finite])
    return rows


def model_rows(sizes: list[int], dtype_name: str, batches: list[int], seconds: float) -> list[list[str]]:
    import torch

    from vidgpen.models.restorer import pick_dtype

    dtype = pick_dtype(dtype_name, torch.device("cuda"))
    rows = []
    for size in sizes:
        model = recipe_model(size).cuda().set_compute_dtype(dtype)
        for batch in batches:
            x = torch.rand(batch, 3, size, size, device="cuda") * 2 - 1
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            try:
                model(x)  # warm-up (cuDNN autotuning)
                torch.cuda.synchronize()
                runs, started = 0, time.perf_counter()
                while runs < 3 or time.perf_counter() - started < seconds:
                    model(x)
                    runs += 1
                torch.cuda.synchronize()
            except torch.cuda.OutOfMemoryError:
                rows.append(["model", f"{size} {str(dtype).removeprefix('torch.')} batch {batch}", "out of memory",
                             "", ""])
                break
            elapsed = time.perf_counter() - started
            peak = torch.cuda.max_memory_allocated() / 2 ** 30
            rows.append(["model", f"{size} {str(dtype).removeprefix('torch.')} batch {batch}",
                         f"{runs * batch / elapsed:.1f} faces/s", f"peak {peak:.2f} GiB", ""])
            del x
        del model
        torch.cuda.empty_cache()
    return rows


def end_to_end_rows(frames: int, dtype_name: str) -> list[list[str]]:
    import torch

    from vidgpen import api
    from vidgpen.config import RestoreOptions
    from vidgpen.models.recipe import recipe_state_dict
    from vidgpen.models.restorer import tune_process
    from vidgpen.samples import write_face_clip

    tune_process("cuda")
    with tempfile.TemporaryDirectory(prefix="vidgpen-gpu-check-") as temp:
        work = Path(temp)
        clip = write_face_clip(work / "clip_1080p.mp4", frames=frames, width=1920, height=1080)
        checkpoint = work / "GPEN-BFR-512-recipe.pth"
        torch.save(recipe_state_dict(json.loads((DATA / "manifest-GPEN-BFR-512.json").read_text())), checkpoint)
        options = RestoreOptions(model="GPEN-BFR-512", weights=checkpoint, device="cuda", dtype=dtype_name,
                                 mask="feathered", overwrite=True)
        torch.cuda.reset_peak_memory_stats()
        summary = api.restore_video(clip, work / "restored.mp4", options=options)
        peak = torch.cuda.max_memory_allocated() / 2 ** 30
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in summary.stage_seconds.items())
    return [["end to end", f"1080p {summary.frames} frames, GPEN-512", f"{summary.frames / summary.seconds:.2f} fps",
             f"peak {peak:.2f} GiB", f"busy s: {stages}"]]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per (size, batch)")
    parser.add_argument("--frames", type=int, default=240, help="frames of the 1080p clip")
    parser.add_argument("--quick", action="store_true", help="256 and 512, batches up to 8, a 48-frame clip")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is available here (torch.cuda.is_available() is False); run this on a machine "
              "with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        return 2
    if args.quick:
        args.sizes, args.batches, args.frames, args.seconds = [256, 512], [1, 2, 4, 8], 48, 1.0
    properties = torch.cuda.get_device_properties(0)
    print(f"{properties.name}, {properties.total_memory / 2 ** 30:.0f} GiB, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}")
    rows = [["check", "what", "result", "", ""]]
    rows += accuracy_rows()
    rows += model_rows(args.sizes, args.dtype, args.batches, args.seconds)
    rows += end_to_end_rows(args.frames, args.dtype)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
