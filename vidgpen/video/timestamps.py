"""Display times for decoded frames whose timestamp labels are out of order.

Decoders hand out frames in display order, but some files label them wrongly: MPEG-4 part 2 (DivX/XviD) in AVI
with "packed" B-frames decodes to labels 1, 3, 2, 5, 4, ... (or 1, 2, 3, 5, 4, 6, 8, 7, ...), because the
demuxer's timestamps belong to the packets, not to the pictures packed inside them. The pictures themselves come
out in the right order, so their true display times are the same labels, sorted. FFmpeg's best-effort timestamp
gets there by falling back to the packet dts once the pts look faulty; here the labels are sorted within a
window as deep as any decoder's reordering, and only a label that sorting cannot place (a duplicate, or a jump
back further than the window) falls back to the frame's packet dts, or to one tick after its predecessor.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

Item = TypeVar("Item")

# Frames held back to sort their labels: MPEG-4 part 2 and H.264 reorder by at most a few frames.
REORDER_WINDOW = 4


class DisplayTimes(Generic[Item]):
    """Assigns strictly increasing display timestamps to items arriving in display order.

    push(item, pts, dts) per decoded frame (``pts``/``dts`` in stream ticks, None when missing), then flush()
    at the end; both yield ``(item, ticks)`` in arrival order, ``REORDER_WINDOW`` frames behind the input.
    ``step``: one frame's duration in ticks, used when a frame has neither pts nor dts.
    """

    def __init__(self, step: int, window: int = REORDER_WINDOW) -> None:
        if step < 1 or window < 0:
            raise ValueError(f"step must be >= 1 and window >= 0, got {step}, {window}")
        self._step = step
        self._window = window
        self._held: deque[tuple[Item, bool, int | None, int | None]] = deque()  # item, has a label, dts, pts
        self._labels: list[int] = []  # min-heap of the held frames' labels
        self._last: int | None = None

    def push(self, item: Item, pts: int | None, dts: int | None) -> Iterator[tuple[Item, int]]:
        label = pts if pts is not None else dts
        self._held.append((item, label is not None, dts, pts))
        if label is not None:
            heapq.heappush(self._labels, label)
        while len(self._held) > self._window:
            yield self._emit()

    def flush(self) -> Iterator[tuple[Item, int]]:
        while self._held:
            yield self._emit()

    def _emit(self) -> tuple[Item, int]:
        item, labelled, dts, pts = self._held.popleft()
        last = self._last
        ticks = heapq.heappop(self._labels) if labelled else None
        if ticks is None:
            ticks = 0 if last is None else last + self._step
        elif last is not None and ticks <= last:
            # Sorting could not place it: the packet dts if it moves forward, else the next tick.
            ticks = dts if dts is not None and dts > last else last + 1
        self._last = ticks
        return item, ticks
