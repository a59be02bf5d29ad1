"""Colour fidelity of restored faces: the input's low-frequency colour, and black-and-white film kept so.

GPEN can shift skin tone and colour cast, and drift on heavily degraded faces. :func:`match_color` gives the
restored face the input face's low-frequency colour (its heavily blurred mean per channel, in CIE Lab) and keeps
GPEN's fine detail, which is what restoration is for.

Old film is often monochrome or tinted (sepia); a colour face pasted into such a picture is the worst artefact a
restorer can make. :func:`tint_spread` measures how far a face's chroma departs from a single tint (chroma as a
linear function of luminance: exactly what grey and tinted film are); :class:`MonochromeDetector` turns it into a
per-track decision with hysteresis, and :func:`keep_chroma` keeps the restored luminance with the input's chroma.

All functions take ``[..., 3]`` uint8 RGB arrays and are pure; the detector keeps one small state per track.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from vidgpen.faces.types import TrackMemory

COLOR_MODES: tuple[str, ...] = ("auto", "match", "off")

MATCH_SIZE = 32          # the low-frequency colour is compared on copies this small
MATCH_SIGMA = 3.0        # blur of the colour difference, pixels of the small copy (~1/10 of the crop)
STATS_SIZE = 48          # tint statistics on the inner face, reduced to this size


def _lab(image_rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image_rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _small(image: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def match_color(restored: np.ndarray, input_crop: np.ndarray) -> np.ndarray:
    """The restored face with the input face's low-frequency colour.

    restored, input_crop: ``[S, S, 3]`` uint8 RGB aligned crops. Both are reduced to ``MATCH_SIZE`` pixels, their
    Lab difference is blurred (``MATCH_SIGMA``) and added to the restored face's Lab there; the resulting change is
    brought back to full size as a smooth RGB offset, so detail finer than ~1/10 of the crop is GPEN's untouched.
    Pixels of the input crop that lie outside the frame (exact black, the crop's border fill) do not count.
    Returns ``[S, S, 3]`` uint8 RGB.
    """
    size = restored.shape[0]
    small_restored = _small(restored, MATCH_SIZE).astype(np.float32)
    small_input = _small(input_crop, MATCH_SIZE)
    outside = cv2.inRange(input_crop, (0, 0, 0), (0, 0, 0))   # 255 on the crop's black border fill
    inside = _small(255 - outside, MATCH_SIZE).astype(np.float32) / 255.0
    difference = (_lab(small_input) - _lab(small_restored)) * inside[:, :, None]
    # normalised convolution: a blurred mean over the pixels that came from the frame
    weight = cv2.GaussianBlur(inside, (0, 0), MATCH_SIGMA)
    blurred = cv2.GaussianBlur(difference, (0, 0), MATCH_SIGMA) / np.maximum(weight, 1e-3)[:, :, None]
    target = cv2.cvtColor(_lab(small_restored) + blurred, cv2.COLOR_Lab2RGB) * 255.0
    offset = cv2.resize(target - small_restored, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.add(restored, offset, dtype=cv2.CV_8U)   # rounded and saturated


def mean_lab_difference(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Euclidean distance between the mean Lab colours of two ``[H, W, 3]`` uint8 RGB images (inside ``where``,
    ``[H, W]`` bool): the colour shift of a face, in Lab units (1 is about a just-noticeable difference)."""
    lab_a, lab_b = _lab(a), _lab(b)
    if where is not None:
        lab_a, lab_b = lab_a[where], lab_b[where]
    return float(np.linalg.norm(lab_a.reshape(-1, 3).mean(0) - lab_b.reshape(-1, 3).mean(0)))


def tint_spread(input_crop: np.ndarray) -> float:
    """How far the inner face's chroma is from a single tint, in % of its mean luminance.

    Grey film has no chroma and tinted film (sepia, cyanotype) chroma proportional to luminance, so chroma fitted
    linearly on luminance leaves nothing; a colour face (lips, eyes, skin under its lighting) leaves several % of
    its brightness. Dividing by the brightness keeps a colour face in a dark scene a colour face.
    input_crop: ``[S, S, 3]`` uint8 RGB aligned crop; its central 2/3 (the face in GPEN's template) is measured.
    """
    size = input_crop.shape[0]
    inner = input_crop[size // 6:size * 5 // 6, size // 6:size * 5 // 6]
    ycc = cv2.cvtColor(_small(inner, STATS_SIZE), cv2.COLOR_RGB2YCrCb).reshape(-1, 3).astype(np.float64)
    luma = ycc[:, 0]
    design = np.stack([np.ones_like(luma), luma], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, ycc[:, 1:], rcond=None)
    residual = ycc[:, 1:] - design @ coefficients
    return float(100.0 * np.sqrt(np.square(residual).sum(axis=1).mean()) / max(luma.mean(), 16.0))


@dataclass
class _TintState:
    spread: float        # running average of tint_spread
    monochrome: bool
    frame_index: int


class MonochromeDetector:
    """Per-track decision "this face is black-and-white or tinted film", with hysteresis.

    A track's :func:`tint_spread` is averaged over time (``smoothing`` per frame); a colour track turns monochrome
    below ``enter`` % and a monochrome one turns colour above ``leave`` %, so noise, compression and dark scenes do
    not flip the decision. A new track decides from its first face against the midpoint.
    """

    def __init__(self, enter: float = 2.5, leave: float = 4.0, smoothing: float = 0.3, max_gap: int = 2):
        if not 0 < enter < leave:
            raise ValueError(f"need 0 < enter < leave, got {enter}, {leave}")
        self.enter, self.leave, self.smoothing, self.max_gap = enter, leave, smoothing, max_gap
        self._tracks: TrackMemory[_TintState] = TrackMemory(max_gap)

    def update(self, track_id: int, frame_index: int, input_crop: np.ndarray) -> bool:
        """Measure one face of a track; returns whether the track is monochrome now."""
        spread = tint_spread(input_crop)
        state = self._tracks.get(track_id, frame_index)
        if state is None:
            state = _TintState(spread, spread < (self.enter + self.leave) / 2, frame_index)
        else:
            state.spread += self.smoothing * (spread - state.spread)
            state.frame_index = frame_index
            if state.monochrome and state.spread > self.leave:
                state.monochrome = False
            elif not state.monochrome and state.spread < self.enter:
                state.monochrome = True
        self._tracks.put(track_id, state)
        return state.monochrome

    def reset(self) -> None:
        self._tracks.reset()

    def prune(self, frame_index: int) -> None:
        self._tracks.prune(frame_index)


def keep_chroma(restored: np.ndarray, original: np.ndarray) -> np.ndarray:
    """``restored``'s luminance with ``original``'s chroma (YCrCb): ``[..., 3]`` uint8 RGB of equal shape.

    A grey ``original`` gives a grey result exactly; a tinted one keeps its tint."""
    restored_ycc = cv2.cvtColor(restored, cv2.COLOR_RGB2YCrCb)
    original_ycc = cv2.cvtColor(original, cv2.COLOR_RGB2YCrCb)
    original_ycc[..., 0] = restored_ycc[..., 0]
    return cv2.cvtColor(original_ycc, cv2.COLOR_YCrCb2RGB)
