"""The decoded frame record that flows from the reader through the pipeline to the writer."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True, eq=False)
class VideoFrame:
    """One decoded picture with the timing it had in the input.

    Attributes:
        index: 0-based position among the frames the reader yielded (after trimming).
        pts: presentation timestamp in ``time_base`` units, exactly as decoded from the input stream.
        time_base: seconds per ``pts`` tick (the input video stream's time base).
        image: ``[height, width, 3]`` uint8 RGB, not rotated (the display rotation travels as stream metadata).
            Read-only when it comes from the reader; to change a frame make a new array and use
            ``dataclasses.replace(frame, image=new_image)``.
        image_high: for sources with more than 8 bits per sample, the same picture as ``[height, width, 3]``
            uint16 RGB on the full 0..65535 scale, else None. The writer keeps this precision wherever
            ``image`` still equals the 8-bit rounding of ``image_high`` (see :func:`round_to_8bit`), so a
            10-bit film stays 10-bit outside the pixels the pipeline changed.
        duration: display duration in ``time_base`` units when the input says, else None.
    """

    index: int
    pts: int
    time_base: Fraction
    image: np.ndarray
    image_high: np.ndarray | None = None
    duration: int | None = None

    def __post_init__(self) -> None:
        image = self.image
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3):
            raise ValueError(
                f"VideoFrame.image must be a [height, width, 3] uint8 RGB array, got "
                f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}"
            )
        high = self.image_high
        if high is not None and not (isinstance(high, np.ndarray) and high.dtype == np.uint16
                                     and high.ndim == 3 and high.shape[2] == 3):
            raise ValueError("VideoFrame.image_high must be a [height, width, 3] uint16 RGB array or None")
        if not isinstance(self.time_base, Fraction):
            raise ValueError(f"VideoFrame.time_base must be a fractions.Fraction, got {self.time_base!r}")

    @property
    def time(self) -> float:
        """Presentation time in seconds (``pts * time_base``)."""
        return float(self.pts * self.time_base)

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]


def round_to_8bit(image_high: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint16 on the 0..65535 scale -> ``[H, W, 3]`` uint8, rounding ``x / 257`` to nearest.

    257 = 65535 / 255, so 8-bit values expanded as ``v * 257`` come back exactly.
    """
    return ((image_high.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
