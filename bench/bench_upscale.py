"""Cost of ``--upscale``: each background upscaler per frame, and whole runs at ``--upscale 2`` and ``4``.

1. Per frame: every ``--bg-upscaler`` (Lanczos; Real-ESRGAN x2plus, x4plus and general-x4v3 as random-weight
   networks of the official shapes, built with spandrel's architecture classes, so they cost exactly what the
   official files cost) on a ``--width x --height`` frame at factors 2 and 4, on the CPU and on CUDA when present,
   in the tile size vidgpen picks by default. Reported: seconds per frame, median of ``--repeats``.
2. End to end: ``vidgpen.restore_video`` on a generated astronaut clip of that size with the recipe GPEN weights,
   MTCNN and the feathered mask, at ``--upscale 1``, ``2`` and ``4`` with Lanczos and with ``--e2e-upscaler``
   (default realesr-general-x4v3): frames/s and busy seconds per stage (the upscale stage runs beside the model).

    python3 bench/bench_upscale.py                                  # 854x480, 24 frames: slow on a CPU
    python3 bench/bench_upscale.py --smoke                          # tiny sizes: proves the script works

Run the full measurement on an idle machine; a learned x4 model at 480p costs seconds per frame on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"

# Official architectures (Real-ESRGAN's inference script): RRDBNet 64 features, 23 blocks (x2plus with pixel
# unshuffle 2); SRVGGNetCompact 64 features, 32 convs.
OFFICIAL = {"realesrgan-x2": "RealESRGAN_x2plus.pth", "realesrgan-x4": "RealESRGAN_x4plus.pth",
            "realesr-general-x4v3": "realesr-general-x4v3.pth"}


def build_official_shape(name: str, smoke: bool):
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    blocks, convs = (1, 2) if smoke else (23, 32)
    if name == "realesrgan-x2":
        return ESRGAN(in_nc=12, num_filters=64, num_blocks=blocks, scale=4, shuffle_factor=2)
    if name == "realesrgan-x4":
        return ESRGAN(num_filters=64, num_blocks=blocks, scale=4)
    return Compact(num_feat=64, num_conv=convs, upscale=4)


def write_weights(folder: Path, smoke: bool) -> None:
    import torch

    for name, file_name in OFFICIAL.items():
        torch.save(build_official_shape(name, smoke).state_dict(), folder / file_name)


def per_frame(folder: Path, width: int, height: int, repeats: int) -> list[dict]:
    import numpy as np
    import torch

    from vidgpen.models.upscaler import LanczosUpscaler
    from vidgpen.samples import astronaut_rgb, face_clip_frame
    from vidgpen.upscale import learned_upscaler

    frame = face_clip_frame(0, width, height, 24, 8.0, np.random.default_rng(0), astronaut_rgb())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        upscalers = {"lanczos": LanczosUpscaler()} if device == "cpu" else {}
        for name, file_name in OFFICIAL.items():
            upscalers[name] = learned_upscaler(folder / file_name, name, device)
        for name, upscaler in upscalers.items():
            for factor in (2, 4):
                upscaler.upscale(frame, factor)  # warm-up
                seconds = []
                for _ in range(repeats):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    upscaler.upscale(frame, factor)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    seconds.append(time.perf_counter() - t0)
                row = {"device": device, "upscaler": name, "factor": factor,
                       "tile": getattr(upscaler, "tile", None), "seconds_per_frame": statistics.median(seconds)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def end_to_end(folder: Path, width: int, height: int, frames: int, upscaler: str) -> list[dict]:
    import torch

    from vidgpen import api
    from vidgpen.models.recipe import recipe_state_dict
    from vidgpen.samples import write_face_clip

    checkpoint = folder / "GPEN-BFR-256-recipe.pth"
    torch.save(recipe_state_dict(json.loads((DATA / "manifest-GPEN-BFR-256.json").read_text())), checkpoint)
    clip = write_face_clip(folder / "clip.mp4", frames=frames, width=width, height=height)
    rows = []
    runs = [(1, None), (2, "lanczos"), (2, upscaler), (4, "lanczos"), (4, upscaler)]
    for factor, bg in dict.fromkeys(runs):  # once each when the upscaler is lanczos
        summary = api.restore_video(clip, folder / f"out-{factor}-{bg}.mp4", model="GPEN-BFR-256",
                                    weights=checkpoint, weights_dir=folder, detector="mtcnn", mask="feathered",
                                    upscale=factor, bg_upscaler=bg, overwrite=True)
        row = {"upscale": factor, "bg_upscaler": bg or "-", "frames": summary.frames,
               "fps": summary.frames / summary.seconds,
               "busy_seconds": {k: round(v, 2) for k, v in summary.stage_seconds.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=24, help="frames of the end-to-end clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--e2e-upscaler", default="realesr-general-x4v3", choices=["lanczos", *OFFICIAL],
                        help="learned upscaler of the end-to-end runs, beside Lanczos (lanczos: Lanczos only)")
    parser.add_argument("--only", choices=["per-frame", "end-to-end"], help="run one of the two parts")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny frames, 2 frames, 1 repeat, one-block networks: checks that the script works")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.smoke:
        args.width, args.height, args.frames, args.repeats = 160, 96, 2, 1
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; frame {args.width}x{args.height}"
          + (" (smoke run: one-block networks, numbers mean nothing)" if args.smoke else ""), flush=True)
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        write_weights(folder, args.smoke)
        results = {}
        if args.only != "end-to-end":
            results["per_frame"] = per_frame(folder, args.width, args.height, args.repeats)
        if args.only != "per-frame":
            results["end_to_end"] = end_to_end(folder, args.width, args.height, args.frames, args.e2e_upscaler)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
