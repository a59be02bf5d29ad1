"""Progress on stderr: a rich bar on a terminal, plain periodic lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_INTERVAL_SECONDS = 5.0


def make_console() -> Console:
    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)


class TerminalProgress:
    """Implements the pipeline's Progress protocol: frames, fps, faces/s and ETA."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self._bar: Progress | None = None
        self._task = None
        self._started = 0.0
        self._last_line = 0.0
        self._total: int | None = None
        self._name = ""

    def start(self, description: str, total_frames: int | None) -> None:
        self._started = self._last_line = time.perf_counter()
        self._total, self._name = total_frames, description
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rates]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False)
            self._bar.start()
            # A file name is text, not rich markup ("clip [v2].mp4" would lose its brackets or fail to render).
            self._task = self._bar.add_task(escape(description), total=total_frames, rates="")

    def update(self, frames: int, faces: int) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        rates = f"{frames / elapsed:5.2f} fps {faces / elapsed:5.2f} faces/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=frames, rates=rates)
        elif not self.quiet and time.perf_counter() - self._last_line >= PLAIN_INTERVAL_SECONDS:
            self._last_line = time.perf_counter()
            of_total = f"/{self._total}" if self._total else ""
            eta = ""
            if self._total and frames:
                eta = f", ETA {max(0.0, (self._total - frames) * elapsed / frames):.0f}s"
            self.console.print(f"{self._name}: {frames}{of_total} frames, {rates}{eta}", soft_wrap=True,
                               markup=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
