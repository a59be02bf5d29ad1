"""Scene-cut detection from two cheap cues on a small copy of each frame.

A cut changes both *what colours* are in the picture and *where things are*. Motion (a pan, a walk through the frame)
changes the layout but hardly the colour distribution; a flash or exposure change shifts the colours but keeps the
layout. So a frame is a cut only when both cues agree:

- colour: total-variation distance between Lab histograms (L: 16 bins; a*b*: 8x8 bins), averaged, in [0, 1];
- layout: normalised cross-correlation of 16x16 lightness thumbnails, in [-1, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

from vidgpen.errors import OptionError

_ANALYSIS_WIDTH = 64  # pixels; plenty for histograms and thumbnails, and cheap at any input size
_THUMBNAIL_SIZE = 16


def frame_signature(frame_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The features compared between consecutive frames.

    frame_rgb: (H, W, 3) uint8 RGB.
    Returns (lightness histogram (16,), chroma histogram (64,), thumbnail (256,)), float64; histograms sum to 1 and the
    thumbnail has zero mean and unit norm (all zeros for a flat frame).
    """
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame_rgb.shape} {frame_rgb.dtype}")
    height, width = frame_rgb.shape[:2]
    small_size = (_ANALYSIS_WIDTH, max(1, round(_ANALYSIS_WIDTH * height / width)))
    small = cv2.resize(frame_rgb, small_size, interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
    lightness = cv2.calcHist([lab], [0], None, [16], [0, 256]).ravel().astype(np.float64)
    chroma = cv2.calcHist([lab], [1, 2], None, [8, 8], [0, 256, 0, 256]).ravel().astype(np.float64)
    thumbnail = cv2.resize(lab[..., 0], (_THUMBNAIL_SIZE, _THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA)
    thumbnail = thumbnail.astype(np.float64).ravel()
    thumbnail -= thumbnail.mean()
    norm = np.linalg.norm(thumbnail)
    if norm > 1e-6:
        thumbnail /= norm
    return lightness / lightness.sum(), chroma / chroma.sum(), thumbnail


def signature_distance(
    first: tuple[np.ndarray, np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[float, float]:
    """(colour distance in [0, 1], layout correlation in [-1, 1]) between two :func:`frame_signature` results."""
    colour = 0.25 * (np.abs(first[0] - second[0]).sum() + np.abs(first[1] - second[1]).sum())
    layout = float(first[2] @ second[2])
    return float(colour), layout


class SceneCutDetector:
    """Says whether each frame starts a new shot, comparing it with the previous frame.

    threshold: minimum colour-histogram distance (0..1) for a cut.
    max_correlation: maximum layout correlation (-1..1) for a cut.
    The first frame is not a cut (there is nothing to reset).
    """

    def __init__(self, threshold: float = 0.2, max_correlation: float = 0.5) -> None:
        if not 0.0 < threshold <= 1.0:
            raise OptionError(f"scene-cut threshold must be in (0, 1], got {threshold}")
        if not -1.0 <= max_correlation <= 1.0:
            raise OptionError(f"scene-cut max correlation must be in [-1, 1], got {max_correlation}")
        self.threshold = threshold
        self.max_correlation = max_correlation
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.last_colour_distance = 0.0  # for diagnostics
        self.last_layout_correlation = 1.0

    def is_cut(self, frame_rgb: np.ndarray) -> bool:
        """Feed the next frame ((H, W, 3) uint8 RGB) and return True when it starts a new scene."""
        signature = frame_signature(frame_rgb)
        previous, self._previous = self._previous, signature
        if previous is None:
            return False
        self.last_colour_distance, self.last_layout_correlation = signature_distance(previous, signature)
        return self.last_colour_distance >= self.threshold and self.last_layout_correlation <= self.max_correlation

    def reset(self) -> None:
        """Forget the previous frame (e.g. when starting a new input)."""
        self._previous = None
