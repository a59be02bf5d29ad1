"""GPEN forward speed on this machine, as a fraction of what its convolutions can do.

For each variant/dtype/batch: seconds per face, GFLOP/s (the official FLOP count from the manifest, batch 1, times
the batch), and the fraction of the machine's limit measured in the same run: a 3x3 conv of GPEN shape
(1x128x256x256 -> 64, channels_last) in the same dtype. The CPU-time/wall ratio of each timing shows whether the
run was contended (about equal to the thread count when it was not).

    python3 bench/bench_model.py                      # 256 and 512, batch 1 and 4, fp32 and bf16
    python3 bench/bench_model.py --sizes 256 --dtypes fp32 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidgpen.models.gpen import FullGenerator
from vidgpen.models.recipe import recipe_state_dict
from vidgpen.models.restorer import retain_freed_memory
from vidgpen.models.variants import VARIANTS

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def timed(fn, rounds: int) -> tuple[float, float]:
    """Median wall seconds of ``fn()`` over ``rounds`` after one warm-up, and the CPU/wall ratio."""
    fn()
    walls, cpus = [], []
    for _ in range(rounds):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), sum(cpus) / sum(walls)


def conv_limit(dtype: torch.dtype, rounds: int) -> float:
    """GFLOP/s of a GPEN-shaped 3x3 conv, channels_last: the machine's practical limit for this dtype."""
    x = torch.randn(1, 128, 256, 256).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 128, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * 128 * 64 * 9 * 256 * 256
    with torch.inference_mode():
        seconds, _ = timed(lambda: F.conv2d(x, w, padding=1), rounds * 2)
    return flops / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as `vidgpen restore` does on CPU

    limits = {name: conv_limit(DTYPES[name], args.rounds) for name in args.dtypes}
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    for name, gflops in limits.items():
        print(f"conv limit {name}: {gflops:.1f} GFLOP/s (3x3 conv 1x128x256x256->64, channels_last)")
    print(f"{'variant':<14}{'dtype':<6}{'batch':>5}{'s/face':>9}{'GFLOP/s':>9}{'of limit':>9}{'cpu/wall':>9}")
    results = {"limits_gflops": limits, "runs": []}
    for size in args.sizes:
        name = f"GPEN-BFR-{size}"
        manifest = json.loads((DATA / f"manifest-{name}.json").read_text())
        model = FullGenerator(VARIANTS[name].architecture).eval()
        model.load_state_dict(recipe_state_dict(manifest))
        flops_per_face = manifest["forward_flops_batch1"]
        for dtype_name in args.dtypes:
            model.set_compute_dtype(DTYPES[dtype_name])
            for batch in args.batches:
                x = torch.rand(batch, 3, size, size) * 2 - 1
                with torch.inference_mode():
                    seconds, ratio = timed(lambda: model(x), args.rounds)
                per_face = seconds / batch
                gflops = flops_per_face / per_face / 1e9
                fraction = gflops / limits[dtype_name]
                print(f"{name:<14}{dtype_name:<6}{batch:>5}{per_face:>9.3f}{gflops:>9.1f}{fraction:>9.0%}{ratio:>9.2f}")
                results["runs"].append(dict(variant=name, dtype=dtype_name, batch=batch, seconds_per_face=per_face,
                                            gflops=gflops, fraction_of_limit=fraction, cpu_wall_ratio=ratio))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    sample = np.round(limits.get("fp32", 0), 1)
    print(f"(FLOPs: official count from the manifest; limit measured in this run: fp32 {sample} GFLOP/s)")


if __name__ == "__main__":
    main()
