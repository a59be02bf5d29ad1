"""Deinterlacing decoded frames with FFmpeg's bwdif (yadif where bwdif is missing) through PyAV's filter graph.

Tape captures and broadcast recordings hold two fields per frame, taken 1/50 or 1/60 s apart; a moving face
combs, which spoils detection and the crop GPEN sees, and a face pasted across both fields breaks them. The
reader deinterlaces before anything else sees the frames, so the pipeline and the output are progressive.

Modes (``--deinterlace``): ``auto`` deinterlaces when the stream or its first frame says interlaced (field order
tt, bb, tb or bt, or the frame's interlaced flag); ``on`` always, ``off`` never; both ``auto`` and ``on`` give one
frame per input frame at the input's times. ``field-rate`` gives one frame per field, twice the frame rate,
the second field of each frame half a frame later.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av

from vidgpen.errors import OptionError

DEINTERLACE_MODES = ("auto", "on", "off", "field-rate")
# AVFieldOrder values -> names as ffprobe prints them; tt/bb/tb/bt are interlaced.
FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
INTERLACED_FIELD_ORDERS = frozenset({"tt", "bb", "tb", "bt"})
FIELD_ORDER_WORDS = {"tt": "top field first", "bb": "bottom field first",
                     "tb": "top field first, bottom coded first", "bt": "bottom field first, top coded first"}


def field_order_name(value: int) -> str:
    """AVFieldOrder as ``"progressive"``, ``"tt"``, ``"bb"``, ``"tb"``, ``"bt"`` or ``"unknown"``."""
    return FIELD_ORDERS.get(int(value), "unknown")


def deinterlace_filter() -> str:
    """``"bwdif"``, or ``"yadif"`` when this FFmpeg build lacks bwdif; OptionError when it has neither."""
    available = av.filter.filters_available
    for name in ("bwdif", "yadif"):
        if name in available:
            return name
    raise OptionError("this FFmpeg build has neither bwdif nor yadif to deinterlace with; use --deinterlace off")


def resolve_mode(mode: str, interlaced: bool) -> str | None:
    """What to do for ``mode`` on a video that is (or is not) ``interlaced``: None, ``"frame"`` or ``"field"``."""
    if mode not in DEINTERLACE_MODES:
        raise OptionError(f"--deinterlace must be one of {', '.join(DEINTERLACE_MODES)}, got {mode!r}")
    if mode == "field-rate":
        return "field"
    if mode == "on" or (mode == "auto" and interlaced):
        return "frame"
    return None


class Deinterlacer:
    """Feeds decoded frames through bwdif (or yadif); yields progressive frames with their timestamps.

    ``field_rate``: one frame per field instead of one per frame. The graph is built on the first frame (its
    size and pixel format). Output frames carry pts in :attr:`time_base`, half the input's (the filter's own
    time base, in which the second field's time is exact).
    """

    def __init__(self, time_base: Fraction, field_rate: bool = False) -> None:
        self.filter = deinterlace_filter()
        self.field_rate = field_rate
        self.input_time_base = Fraction(time_base)
        self.time_base = self.input_time_base / 2
        self._graph: av.filter.Graph | None = None

    def _build(self, frame: av.VideoFrame) -> None:
        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=self.input_time_base)
        mode = "send_field" if self.field_rate else "send_frame"
        # parity=auto: the field order each frame states; deint=all: also frames not flagged interlaced
        deinterlace = graph.add(self.filter, f"mode={mode}:parity=auto:deint=all")
        sink = graph.add("buffersink")
        source.link_to(deinterlace)
        deinterlace.link_to(sink)
        graph.configure()
        self._graph = graph

    def push(self, frame: av.VideoFrame) -> Iterator[av.VideoFrame]:
        """Give one decoded frame (its ``pts`` in the input time base); yield what the filter has ready."""
        if self._graph is None:
            self._build(frame)
        frame.time_base = self.input_time_base
        self._graph.vpush(frame)
        yield from self._drain()

    def flush(self) -> Iterator[av.VideoFrame]:
        """The frames the filter still holds (it looks one frame ahead)."""
        if self._graph is None:
            return
        self._graph.vpush(None)
        yield from self._drain()

    def _drain(self) -> Iterator[av.VideoFrame]:
        while True:
            try:
                frame = self._graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            if frame.time_base != self.time_base:
                raise RuntimeError(f"{self.filter} gave time base {frame.time_base}, expected {self.time_base}")
            yield frame
