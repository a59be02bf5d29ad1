"""End-to-end speed and memory of ``vidgpen restore`` on the sample clip, against the model alone.

For each model size and clip length, one fresh process restores a generated astronaut clip (vidgpen.samples, the
same generator as samples/astronaut_degraded.mp4) with the recipe weights (same architecture and cost as the
official checkpoint), the default detector (``--detector auto``: YuNet on a CPU, with optical flow between
detections every ``--detect-every`` frames) and the feathered mask, and reports:

- frames/s and faces/s of the whole run (wall time, decode to the finished file);
- busy seconds per stage (RunSummary.stage_seconds; stages overlap, so they can add up to more than the wall),
  and the analyse stage (scene cuts, detection + flow, tracking) in milliseconds per frame;
- the model alone: ``restorer.restore`` timed on aligned crops of the same size in batches of the same size,
  per face, times the run's face count (measured on ``--model-faces`` faces before the run and again after it,
  the mean of the two, so long clips stay cheap and a drifting machine speed does not decide the overhead);
- overhead = (wall - model time) / model time, the pipeline's cost beyond the model (targets: <= 40 % at
  GPEN-256, <= 15 % at 512 and 1024);
- peak RSS of the process (VmHWM), which must not grow with the clip length.

    python3 bench/bench_pipeline.py                                   # 720p, 256 and 512, 48 and 480 frames
    python3 bench/bench_pipeline.py --sizes 256 --frames 48 240 --json results.json
    python3 bench/bench_pipeline.py --frames 8 --sizes 256 --height 180   # smoke run: checks that it works
    python3 bench/bench_pipeline.py --isa avx2    # as on an AVX2-only CPU (fp32 by --dtype auto), on a newer one

The defaults take a long time on a CPU (GPEN-512 at several seconds per face): run them on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from peak_rss import peak_rss_mb  # bench/ is on sys.path when this script runs

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
RESULT_PREFIX = "RESULT "
OVERHEAD_TARGETS = {256: 0.40, 512: 0.15, 1024: 0.15}  # issue 12's targets per model size


def recipe_checkpoint(size: int, folder: Path) -> Path:
    """A GPEN-BFR-<size> checkpoint file with the recipe weights (built once per folder)."""
    import torch

    from vidgpen.models.recipe import recipe_state_dict

    path = folder / f"GPEN-BFR-{size}-recipe.pth"
    if not path.exists():
        manifest = json.loads((DATA / f"manifest-GPEN-BFR-{size}.json").read_text())
        torch.save(recipe_state_dict(manifest), path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# One measurement, in its own process so peak RSS belongs to it alone
# ---------------------------------------------------------------------------------------------------------------

def measure(config: dict) -> dict:
    import torch

    from vidgpen import api
    from vidgpen.config import RestoreOptions
    from vidgpen.pipeline import build_engine, crop_face
    from vidgpen.video import open_video

    if config["threads"]:
        torch.set_num_threads(config["threads"])
    from vidgpen.models.restorer import tune_process

    tune_process("cpu")  # what `vidgpen restore` does
    options = RestoreOptions(model=f"GPEN-BFR-{config['size']}", weights=Path(config["checkpoint"]),
                             detector=config["detector"], mask="feathered", dtype=config["dtype"],
                             batch_size=config["batch_size"], detect_every=config["detect_every"], overwrite=True)
    loaded = time.perf_counter()
    engine = build_engine(options)
    # The model alone runs on a real aligned crop of the clip, in full batches of the run's size.
    with open_video(config["clip"]) as reader:
        first = next(iter(reader)).image
    (face, *_) = engine.detector.detect(first)
    crop = crop_face(first, 0, face.landmarks.astype(np.float64), engine.size, box=face.box).input_crop
    batch_size = engine.restorer.batch_size
    batch = np.repeat(crop[None], batch_size, axis=0)
    engine.restorer.restore(batch)  # warm-up: the first forward's one-off cost is neither pipeline nor model speed
    load_seconds = time.perf_counter() - loaded
    batches = max(1, math.ceil(config["model_faces"] / batch_size))

    def model_seconds_per_face() -> float:
        started = time.perf_counter()
        for _ in range(batches):
            engine.restorer.restore(batch)
        return (time.perf_counter() - started) / (batches * batch_size)

    # The model alone is timed before and after the run (a shared machine's speed drifts by 10-30% over minutes)
    # and the mean of the two taken, so the overhead is not an artefact of one lucky or unlucky timing.
    model_before = model_seconds_per_face()
    summary = api.restore_video(config["clip"], config["output"], options=options, engine=engine)
    rss_after_run = peak_rss_mb()  # before the model-only timing below can add anything
    model_after = model_seconds_per_face()

    model_seconds = (model_before + model_after) / 2 * summary.faces
    return {
        "size": config["size"], "frames": summary.frames, "faces": summary.faces,
        "width": config["width"], "height": config["height"], "dtype": str(engine.restorer.dtype),
        "batch_size": batch_size, "detect_every": config["detect_every"], "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "detector": engine.detector.name,
        "analyse_ms_per_frame": 1000 * summary.stage_seconds["analyse"] / max(summary.frames, 1),
        "load_seconds": load_seconds,
        "wall_seconds": summary.seconds, "fps": summary.frames / summary.seconds,
        "faces_per_second": summary.faces / summary.seconds, "stage_seconds": summary.stage_seconds,
        "model_seconds_per_face": (model_before + model_after) / 2, "model_before_after": [model_before, model_after],
        "model_seconds": model_seconds,
        "overhead": (summary.seconds - model_seconds) / model_seconds if model_seconds else float("nan"),
        "peak_rss_mb": rss_after_run,
    }


# What an AVX2-only CPU (AMD Zen 3, Intel before Ice Lake) can run, imposed on a newer one: oneDNN's JIT and
# ATen's kernels stop at AVX2, and oneDNN then reports no native bf16, so --dtype auto picks fp32 as it does there.
ISA_LIMITS = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def run_child(config: dict) -> dict:
    """``measure(config)`` in a fresh interpreter; its result comes back as one JSON line."""
    env = dict(os.environ, **ISA_LIMITS.get(config.get("isa"), {}))
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise SystemExit(f"measurement {config['size']}/{config['frames']} failed:\n{done.stderr}")
    line = next(l for l in done.stdout.splitlines() if l.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX):])


# ---------------------------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], choices=[256, 512, 1024])
    parser.add_argument("--frames", type=int, nargs="+", default=[48, 480], help="clip lengths (frames at 24 fps)")
    parser.add_argument("--height", type=int, default=720, help="frame height; width is 16:9 (default 1280x720)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, help="faces per forward pass (default: the restorer's)")
    parser.add_argument("--detector", default="auto", help="as vidgpen restore --detector (default auto)")
    parser.add_argument("--detect-every", type=int, default=3,
                        help="detection on every n-th frame, optical flow between (default 3, the CLI's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--isa", choices=sorted(ISA_LIMITS),
                        help="run as on a CPU with only this instruction set (avx2: what a Zen 3 has; the clock and "
                             "caches stay this machine's)")
    parser.add_argument("--model-faces", type=int, default=32,
                        help="faces the model-only timing runs on, before the run and again after it")
    parser.add_argument("--workdir", type=Path, help="keep clips, checkpoints and outputs here (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT_PREFIX + json.dumps(measure(json.loads(args.child))), flush=True)
        return

    from vidgpen.samples import write_face_clip

    height = args.height - args.height % 2
    width = round(height * 16 / 9 / 2) * 2
    with tempfile.TemporaryDirectory(prefix="vidgpen-bench-") as temp:
        work = args.workdir or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        clips = {}
        for frames in args.frames:
            clips[frames] = work / f"astronaut_{width}x{height}_{frames}f.mp4"
            if not clips[frames].exists():
                write_face_clip(clips[frames], frames=frames, width=width, height=height)
        results = []
        for size in args.sizes:
            checkpoint = recipe_checkpoint(size, work)
            for frames in args.frames:
                config = {"size": size, "frames": frames, "width": width, "height": height,
                          "clip": str(clips[frames]), "output": str(work / f"restored_{size}_{frames}f.mp4"),
                          "checkpoint": str(checkpoint), "dtype": args.dtype, "batch_size": args.batch_size,
                          "threads": args.threads, "model_faces": args.model_faces,
                          "detect_every": args.detect_every, "detector": args.detector, "isa": args.isa}
                result = run_child(config)
                results.append(result)
                report(result)
    summarize(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in r["stage_seconds"].items())
    target = OVERHEAD_TARGETS[r["size"]]
    verdict = f"within the {target:.0%} target" if r["overhead"] <= target else f"over the {target:.0%} target"
    print(f"GPEN-{r['size']} {r['width']}x{r['height']} {r['frames']} frames, {r['faces']} faces, {r['dtype']}, "
          f"batch {r['batch_size']}, {r['detector']} every {r['detect_every']}, {r['threads']} threads, "
          f"{r['cpu_capability']} kernels", flush=True)
    print(f"  {r['fps']:.3f} frames/s, {r['faces_per_second']:.3f} faces/s, wall {r['wall_seconds']:.1f} s "
          f"(+ {r['load_seconds']:.1f} s loading and warm-up)")
    print(f"  busy seconds per stage: {stages}; detection + flow + tracking {r['analyse_ms_per_frame']:.1f} ms/frame")
    before, after = r["model_before_after"]
    print(f"  model alone {r['model_seconds_per_face']:.3f} s/face (before the run {before:.3f}, after {after:.3f}) "
          f"-> {r['model_seconds']:.1f} s; "
          f"overhead {r['overhead']:+.1%} ({verdict})")
    print(f"  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)


def summarize(results: list[dict]) -> None:
    """Peak RSS against clip length, per model size: it must stay flat."""
    for size in sorted({r["size"] for r in results}):
        runs = sorted((r for r in results if r["size"] == size), key=lambda r: r["frames"])
        if len(runs) < 2:
            continue
        short, long = runs[0], runs[-1]
        growth = long["peak_rss_mb"] - short["peak_rss_mb"]
        print(f"GPEN-{size}: peak RSS {short['peak_rss_mb']:.0f} MB at {short['frames']} frames, "
              f"{long['peak_rss_mb']:.0f} MB at {long['frames']} frames ({growth:+.0f} MB)")


if __name__ == "__main__":
    main()
