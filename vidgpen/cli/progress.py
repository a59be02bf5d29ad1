"""Progress on stderr: a rich bar on a terminal, plain periodic lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

PLAIN_INTERVAL_SECONDS = 5.0
NAME_CELLS = 24         # a longer file name is shortened in the bar, so the bar keeps its room on 80 columns
WIDE_TERMINAL = 100     # from this width on the bar also shows faces/s and the elapsed time


def make_console() -> Console:
    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def short_name(name: str, cells: int = NAME_CELLS) -> str:
    """``name`` cut in the middle to ``cells`` characters, keeping its start and its extension."""
    if len(name) <= cells:
        return name
    tail = max(4, cells // 3)
    return f"{name[:cells - tail - 1]}…{name[-tail:]}"


class TerminalProgress:
    """Implements the pipeline's Progress protocol: frames, fps, faces/s and ETA.

    The rate behind fps and the ETA is measured from the first finished frame on: before it, the pipeline fills
    (decoding ahead, the tracker's look-ahead, the first batch), and spreading that over the whole video made the
    first ETA about twice too long.
    """

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
        self._first: tuple[float, int, int] | None = None  # (time, frames, faces) at the first finished frame

    def start(self, description: str, total_frames: int | None) -> None:
        self._started = self._last_line = time.perf_counter()
        self._total, self._name, self._first = total_frames, description, None
        if self.live:
            wide = self.console.width >= WIDE_TERMINAL
            columns = [TextColumn("[bold]{task.description}"), BarColumn(bar_width=None), MofNCompleteColumn(),
                       TextColumn("{task.fields[fps]}")]
            if wide:
                columns += [TextColumn("{task.fields[faces]}"), TextColumn("{task.fields[elapsed]}")]
            columns.append(TextColumn("ETA {task.fields[eta]}"))
            self._bar = Progress(*columns, console=self.console, transient=False, expand=True)
            self._bar.start()
            # A file name is text, not rich markup ("clip [v2].mp4" would lose its brackets or fail to render).
            self._task = self._bar.add_task(escape(short_name(description) if not wide else description),
                                            total=total_frames, fps="", faces="", elapsed="", eta="-:--:--")

    def rates(self, frames: int, faces: int) -> tuple[float, float, float | None]:
        """(frames/s, faces/s, seconds left or None) from the first finished frame on."""
        now = time.perf_counter()
        if frames and self._first is None:
            self._first = (now, frames, faces)
        if self._first is None or frames <= self._first[1] or now <= self._first[0]:
            elapsed = max(now - self._started, 1e-9)
            return frames / elapsed, faces / elapsed, None
        span = now - self._first[0]
        fps = (frames - self._first[1]) / span
        faces_per_second = (faces - self._first[2]) / span
        eta = max(0.0, (self._total - frames) / fps) if self._total else None
        return fps, faces_per_second, eta

    def update(self, frames: int, faces: int) -> None:
        fps, faces_per_second, eta = self.rates(frames, faces)
        eta_text = format_seconds(eta) if eta is not None else "-:--:--"
        if self._bar is not None:
            self._bar.update(self._task, completed=frames, fps=f"{fps:5.2f} fps",
                             faces=f"{faces_per_second:5.2f} faces/s",
                             elapsed=format_seconds(time.perf_counter() - self._started), eta=eta_text)
        elif not self.quiet and time.perf_counter() - self._last_line >= PLAIN_INTERVAL_SECONDS:
            self._last_line = time.perf_counter()
            of_total = f"/{self._total}" if self._total else ""
            eta_part = f", ETA {eta:.0f}s" if eta is not None else ""
            self.console.print(f"{self._name}: {frames}{of_total} frames, {fps:5.2f} fps {faces_per_second:5.2f} "
                               f"faces/s{eta_part}", soft_wrap=True, markup=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
