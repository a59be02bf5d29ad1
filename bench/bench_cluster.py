"""Speed-up of 2 local Ray workers over 1, on a folder of clips and on one long clip in segments, and what
segmenting costs: the packet scan and plan, joining, and the warm-up frames restored around each segment.

One local Ray instance (``--cluster local``) restores generated astronaut clips (vidgpen.samples) with the recipe
weights (same architecture and cost as the official checkpoint), MTCNN and the feathered mask. One worker gets
every CPU thread; two workers get half each (on a GPU machine: one GPU each). The single-machine run of the long
clip (no Ray) is the baseline for Ray's own overhead.

Network rule: like the tests, the benchmark runs Ray in its own network namespace with only loopback (it re-runs
itself under ``unshare -n``, ``-rn`` without root) and stops if Ray's node address is not 127.0.0.1.

    python3 bench/bench_cluster.py --smoke                      # tiny clips: checks that it works
    python3 bench/bench_cluster.py --files 4 --frames 96 --long-frames 480 --height 360 --segment-seconds 4

Run the real settings on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
INSIDE_NAMESPACE = "VIDGPEN_BENCH_LOOPBACK_NAMESPACE"


def rerun_in_loopback_namespace() -> int:
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    env = dict(os.environ, **{INSIDE_NAMESPACE: "1"}, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    command = unshare + ["sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, *sys.argv]
    try:
        return subprocess.run(command, env=env).returncode
    except OSError as exc:
        print(f"cannot make a loopback-only network namespace ({exc}); Ray must not reach the network",
              file=sys.stderr)
        return 2


def recipe_checkpoint(size: int, folder: Path) -> Path:
    import torch

    from vidgpen.models.recipe import recipe_state_dict

    path = folder / f"GPEN-BFR-{size}-recipe.pth"
    manifest = json.loads((DATA / f"manifest-GPEN-BFR-{size}.json").read_text())
    torch.save(recipe_state_dict(manifest), path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny clips, only checks that everything runs")
    parser.add_argument("--files", type=int, default=4, help="clips in the folder")
    parser.add_argument("--frames", type=int, default=96, help="frames per folder clip")
    parser.add_argument("--long-frames", type=int, default=480, help="frames of the long clip")
    parser.add_argument("--height", type=int, default=360, help="clip height (16:9)")
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=256, choices=[256, 512])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.frames, args.long_frames, args.height, args.segment_seconds = 2, 6, 48, 108, 1.0
    if os.environ.get(INSIDE_NAMESPACE) != "1":
        return rerun_in_loopback_namespace()

    import ray

    from vidgpen import api
    from vidgpen.cluster import ray_runner
    from vidgpen.config import RestoreOptions
    from vidgpen.samples import write_face_clip

    work = Path(tempfile.mkdtemp(prefix="vidgpen-bench-cluster-"))
    results: dict = {"settings": vars(args) | {"json": str(args.json) if args.json else None}}
    try:
        width = args.height * 16 // 9 // 2 * 2
        (work / "folder").mkdir()
        for i in range(args.files):
            write_face_clip(work / "folder" / f"clip{i}.mp4", frames=args.frames, width=width, height=args.height,
                            seed=i, keyframe_interval=12)
        long_clip = write_face_clip(work / "long.mp4", frames=args.long_frames, width=width, height=args.height,
                                    seed=99, keyframe_interval=12)
        options = RestoreOptions(model=f"GPEN-BFR-{args.size}", weights=recipe_checkpoint(args.size, work),
                                 detector="mtcnn", mask="feathered", dtype="fp32", overwrite=True)
        cpus = os.cpu_count() or 2

        started = time.perf_counter()
        api.restore_video(long_clip, work / "single.mp4", options=options)
        results["long_single_machine_seconds"] = time.perf_counter() - started

        address = ray_runner.connect(ray_runner.ClusterOptions(address="local", num_cpus=cpus))
        results["ray_node_address"] = address
        if address != "127.0.0.1":
            print(f"Ray's node address is {address}, not 127.0.0.1: stopping", file=sys.stderr)
            return 2
        for workers in (1, 2):
            cluster = ray_runner.ClusterOptions(address="local", workers=workers,
                                                cpus_per_worker=max(1, cpus // workers),
                                                segment_seconds=args.segment_seconds)
            out = work / f"folder_out_{workers}"
            started = time.perf_counter()
            folder = ray_runner.restore_with_ray(work / "folder", out, options, cluster)
            results[f"folder_{workers}_workers_seconds"] = time.perf_counter() - started
            assert not folder.failures, folder.failures
            started = time.perf_counter()
            long = ray_runner.restore_with_ray(long_clip, work / f"long_{workers}.mp4", options, cluster)
            results[f"long_{workers}_workers_seconds"] = time.perf_counter() - started
            results["plan_seconds"], results["join_seconds"] = long.plan_seconds, long.join_seconds
            results["warmup_frames"], results["long_frames"] = long.warmup_frames, args.long_frames
        results["folder_speedup"] = results["folder_1_workers_seconds"] / results["folder_2_workers_seconds"]
        results["long_speedup"] = results["long_1_workers_seconds"] / results["long_2_workers_seconds"]
        results["warmup_overhead"] = results["warmup_frames"] / args.long_frames
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for key, value in results.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
