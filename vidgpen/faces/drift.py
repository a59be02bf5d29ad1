"""How far a restoration moved from its input face, and a per-track restoration strength that backs off from it.

On heavily degraded faces GPEN may invent: a slight smile comes out showing teeth, a face drifts towards another
person. Two signs are measured per face:

- colour shift: Lab distance between the mean colours of the input crop and the raw restoration, inner face;
- landmark shift: the detector is run on the restored crop and on the input crop (one batch), and the five landmarks
  found in the restoration are compared with those of the input (with the template positions the input was aligned
  to when the degraded input shows no face to the detector: detectors place landmarks a little differently from
  the template, so the input's own landmarks are the fairer reference); the mean distance is given as a fraction
  of the template's eye distance (a mouth corner moved by a quarter of the eye distance moves the mean by 5%).

:class:`DriftLimiter` turns the landmark shift into a per-track factor on ``--alpha``: ``max_drift / shift`` for
faces beyond ``max_drift`` (1 otherwise), followed smoothly over time so the restoration fades instead of
popping.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidgpen.faces.align import reference_points
from vidgpen.faces.color import MATCH_SIZE, mean_lab_difference
from vidgpen.faces.types import TrackMemory

# The detector searches the central 3/4 of each crop (the face fills ~2/3 of the crop in GPEN's template), reduced to
# this size: landmarks came out steadier there than on the whole crop at 224 (MTCNN: 0.01-0.03 against 0.01-0.05
# of the eye distance on an unchanged face).
DETECT_MARGIN = 1 / 8
DETECT_SIZE = 128


@dataclass(frozen=True)
class FaceDrift:
    """color_shift: Lab units; landmark_shift: fraction of the template eye distance, None when the detector found
    no face in the restored crop; landmarks: (5, 2) crop pixels found there, or None."""

    color_shift: float
    landmark_shift: float | None
    landmarks: np.ndarray | None


def color_shift(input_crop: np.ndarray, restored: np.ndarray) -> float:
    """Mean-colour Lab distance of the inner faces (central 2/3 of the crops) of two ``[S, S, 3]`` uint8 crops."""
    size = input_crop.shape[0]
    inner = (slice(size // 6, size * 5 // 6),) * 2
    small = [cv2.resize(crop[inner], (MATCH_SIZE, MATCH_SIZE), interpolation=cv2.INTER_AREA)
             for crop in (input_crop, restored)]
    return mean_lab_difference(*small)


def crop_landmarks(crops: list[np.ndarray], detector) -> list[np.ndarray | None]:
    """The detector's five landmarks on aligned ``[S, S, 3]`` crops (one batch), each (5, 2) crop pixels of the
    face nearest the crop's centre, or None where none is found."""
    size = crops[0].shape[0]
    lo, hi = round(size * DETECT_MARGIN), size - round(size * DETECT_MARGIN)
    scale = (hi - lo) / DETECT_SIZE
    small = [cv2.resize(crop[lo:hi, lo:hi], (DETECT_SIZE, DETECT_SIZE), interpolation=cv2.INTER_AREA)
             for crop in crops]
    centre = np.array([DETECT_SIZE / 2, DETECT_SIZE / 2])
    result = []
    for found in detector.detect_batch(small):
        if not found:
            result.append(None)
            continue
        best = min(found, key=lambda d: np.linalg.norm(d.landmarks.mean(axis=0) - centre))
        result.append(best.landmarks.astype(np.float64) * scale + lo)
    return result


def measure_drift(input_crop: np.ndarray, restored: np.ndarray, detector=None, template: str = "gpen") -> FaceDrift:
    """Colour shift and, with a ``detector``, landmark shift of one raw restoration from its input crop."""
    shift = color_shift(input_crop, restored)
    if detector is None:
        return FaceDrift(shift, None, None)
    found, reference = crop_landmarks([restored, input_crop], detector)
    if found is None:
        return FaceDrift(shift, None, None)
    template_points = reference_points(restored.shape[0], template)
    if reference is None:
        reference = template_points
    eye_distance = float(np.linalg.norm(template_points[1] - template_points[0]))
    distance = float(np.linalg.norm(found - reference, axis=1).mean()) / eye_distance
    return FaceDrift(shift, distance, found)


@dataclass
class _LimitState:
    factor: float
    frame_index: int


class DriftLimiter:
    """Per-track factor in (0, 1] on the restoration strength, lowered for faces whose landmark shift exceeds
    ``max_drift``: the target is ``max_drift / shift``; the factor moves ``smoothing`` of the way there each frame,
    by ``max_step`` at most (a new track starts at its target). A face the detector cannot find keeps its track's
    factor."""

    def __init__(self, max_drift: float, smoothing: float = 0.3, max_step: float = 0.1, max_gap: int = 2):
        if not max_drift > 0:
            raise ValueError(f"max_drift must be positive, got {max_drift}")
        self.max_drift, self.smoothing, self.max_gap = float(max_drift), float(smoothing), max_gap
        self.max_step = float(max_step)
        self._tracks: TrackMemory[_LimitState] = TrackMemory(max_gap)

    def target(self, landmark_shift: float | None) -> float | None:
        if landmark_shift is None:
            return None
        return 1.0 if landmark_shift <= self.max_drift else self.max_drift / landmark_shift

    def update(self, track_id: int, frame_index: int, landmark_shift: float | None) -> float:
        target = self.target(landmark_shift)
        state = self._tracks.get(track_id, frame_index)
        if state is None:
            state = _LimitState(1.0 if target is None else target, frame_index)
        else:
            if target is not None:
                step = self.smoothing * (target - state.factor)
                state.factor += float(np.clip(step, -self.max_step, self.max_step))
            state.frame_index = frame_index
        self._tracks.put(track_id, state)
        return state.factor

    def reset(self) -> None:
        self._tracks.reset()

    def prune(self, frame_index: int) -> None:
        self._tracks.prune(frame_index)
