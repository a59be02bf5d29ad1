"""Timing shared by the bench scripts (bench/ is on sys.path when one of them runs)."""

import statistics
import time


def timed_ms(fn, rounds: int) -> float:
    """Median wall milliseconds of ``fn()`` over ``rounds`` after one warm-up call."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)
