"""``vidgpen restore ... --cluster``: the flags, one progress bar for the whole job, and the per-file summary.

Not a command of its own (``restore`` calls it). Ray is imported only when ``--cluster`` is given.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vidgpen.config import RestoreOptions
from vidgpen.errors import OptionError, VidgpenError

PLAIN_INTERVAL_SECONDS = 5.0


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster (needs the extra: pip install 'vidgpen[cluster]')")
    group.add_argument("--cluster", metavar="WHERE",
                       help="run on Ray: local (a Ray instance on this machine), auto (RAY_ADDRESS or a running "
                            "'ray start'), or a head node's address; a folder becomes one task per file, a long "
                            "video one task per segment (default: no cluster)")
    group.add_argument("--workers", type=int, help="restorer actors (default: one per GPU, else one per "
                                                   "--cpus-per-worker CPUs)")
    group.add_argument("--gpus-per-worker", type=float, default=1.0,
                       help="GPU share of each actor; 0.5 puts two on a GPU (default 1)")
    group.add_argument("--cpus-per-worker", type=int, default=2,
                       help="CPU threads of each actor without a GPU (default 2)")
    group.add_argument("--segment-seconds", type=float, default=60.0,
                       help="about how long each segment of a long video is (default 60)")


class JobBar:
    """One bar for the whole job: units (files or segments) done, frames/s, ETA; plain lines when not a terminal."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console, self.quiet = console, quiet
        self.live = console.is_terminal and not quiet
        self._bar: Progress | None = None
        self._task = None
        self._done = self._frames = 0
        self._total = 0
        self._started = self._last_line = 0.0

    def start(self, description: str, total_units: int) -> None:
        self._started = self._last_line = time.perf_counter()
        self._total = total_units
        if self.live:
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=self.console)
            self._bar.start()
            self._task = self._bar.add_task(escape(description), total=total_units, rate="")

    def unit_done(self, name: str, frames: int, error: str | None) -> None:
        self._done += 1
        self._frames += frames
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        rate = f"{self._frames / elapsed:6.2f} fps"
        if self._bar is not None:
            self._bar.update(self._task, completed=self._done, rate=rate)
        elif not self.quiet and (time.perf_counter() - self._last_line >= PLAIN_INTERVAL_SECONDS
                                 or self._done == self._total):
            self._last_line = time.perf_counter()
            eta = (self._total - self._done) * elapsed / self._done
            self.console.print(f"{self._done}/{self._total} done ({name}), {rate}, ETA {eta:.0f}s",
                               soft_wrap=True, markup=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def run_cluster(args: argparse.Namespace, options: RestoreOptions, console: Console, summary_line) -> int:
    try:
        from vidgpen.cluster import ray_runner
    except ImportError as exc:
        raise OptionError(f"--cluster needs Ray ({exc.name} is missing): pip install 'vidgpen[cluster]'") from exc
    cluster = ray_runner.ClusterOptions(address=args.cluster, workers=args.workers,
                                        gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                                        segment_seconds=args.segment_seconds)

    def notice(message: str) -> None:
        if not args.quiet:
            console.print(f"vidgpen: note: {message}", soft_wrap=True, markup=False)

    try:
        job = ray_runner.restore_with_ray(args.input, args.output, options, cluster,
                                          progress=JobBar(console, args.quiet), notice=notice)
    finally:
        ray_runner.shutdown()
    if job.failures and not args.input.is_dir():
        raise VidgpenError(job.failures[0][1])  # one file: its error is the command's (exit code 2)
    for path, error in job.failures:
        console.print(f"vidgpen: error: {path.name}: {error}", soft_wrap=True, markup=False)
    if not args.quiet:
        for result in job.results:
            for warning in result.warnings:
                console.print(f"vidgpen: warning: {warning}", soft_wrap=True, markup=False)
            console.print(f"{result.output.name}: {summary_line(result)}", soft_wrap=True, markup=False)
        if job.retried:
            console.print(f"vidgpen: note: {len(job.retried)} unit(s) started again on another worker after their "
                          f"worker or node was lost: {', '.join(job.retried)}", soft_wrap=True, markup=False)
        skipped = f", {len(job.skipped)} skipped (output exists)" if job.skipped else ""
        failed = f"; {len(job.failures)} failed" if job.failures else ""
        console.print(f"restored {len(job.results)} file(s) into {args.output} on {job.workers} worker(s)"
                      f"{skipped}{failed}", soft_wrap=True, markup=False)
    return 1 if job.failures else 0


def refuse_cluster_flags_without_cluster(args: argparse.Namespace) -> None:
    """A cluster flag without --cluster would be silently ignored: say so instead."""
    given = [flag for flag, value, default in (
        ("--workers", args.workers, None), ("--gpus-per-worker", args.gpus_per_worker, 1.0),
        ("--cpus-per-worker", args.cpus_per_worker, 2), ("--segment-seconds", args.segment_seconds, 60.0))
        if value != default]
    if given:
        raise OptionError(f"{', '.join(given)} only apply with --cluster; add --cluster local (or auto, or an address)")
