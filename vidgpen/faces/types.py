"""Data types shared by the face stages: detection, tracking, smoothing, alignment and paste-back.

Coordinates are full-frame pixels, x to the right and y down. The five landmarks are always in GPEN's order:
image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

NUM_LANDMARKS = 5


@dataclass(frozen=True)
class Detection:
    """One face found in one frame.

    box: (4,) float32 x1, y1, x2, y2 in full-frame pixels.
    score: detector confidence in [0, 1].
    landmarks: (5, 2) float32 x, y in GPEN's order (left eye, right eye, nose, left mouth, right mouth).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        box = np.asarray(self.box, dtype=np.float32).reshape(4)
        landmarks = np.asarray(self.landmarks, dtype=np.float32)
        if landmarks.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must have shape (5, 2), got {landmarks.shape}")
        # Frozen: assign the normalised arrays through object.__setattr__.
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "score", float(self.score))

    @property
    def eye_distance(self) -> float:
        """Pixels between the two eye landmarks (the ``--min-face`` measure)."""
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    @property
    def box_area(self) -> float:
        """Area of the box in square pixels (0 for a degenerate box)."""
        width = max(0.0, float(self.box[2] - self.box[0]))
        height = max(0.0, float(self.box[3] - self.box[1]))
        return width * height


@dataclass(frozen=True)
class TrackedFace:
    """One tracked face in one frame, after smoothing.

    track_id: stable id, unique within a run (never reused, also not after a scene cut).
    score: detector score of this frame's detection; for a bridged frame, interpolated from its neighbours.
    box: (4,) float32 x1, y1, x2, y2 (raw detection box, or interpolated when bridged).
    raw_landmarks: (5, 2) float32 as detected, or None when the frame was bridged by interpolation.
    smoothed_landmarks: (5, 2) float64, the points the crop and the paste-back are computed from.
    smoothed_box: (4,) float32, the box smoothed like the landmarks; use it where a size threshold must not flip
        between frames (e.g. GPEN's small-face filter). None only when built by hand without one.
    """

    track_id: int
    score: float
    box: np.ndarray
    raw_landmarks: np.ndarray | None
    smoothed_landmarks: np.ndarray
    smoothed_box: np.ndarray | None = None

    @property
    def bridged(self) -> bool:
        """True when the face was not detected in this frame and its position was interpolated."""
        return self.raw_landmarks is None


@dataclass(frozen=True)
class TrackedFrame:
    """The tracker's output for one frame, emitted in frame order once its look-ahead is complete.

    frame_index: the index passed to ``FaceTracker.push``.
    pts_seconds: presentation time in seconds as passed to ``push``.
    scene_cut: True when this frame starts a new scene (all tracks were reset here).
    faces: the confirmed tracks present in the frame, ordered by track id.
    """

    frame_index: int
    pts_seconds: float
    scene_cut: bool
    faces: tuple[TrackedFace, ...]


class _Dated(Protocol):
    frame_index: int  # the last frame the state was updated on


StateT = TypeVar("StateT", bound=_Dated)


class TrackMemory(Generic[StateT]):
    """Per-track state of a stage that follows faces over time (blending, film detection, drift), which lapses
    when its track goes unseen for more than ``max_gap`` frames; bounded by :meth:`prune`."""

    def __init__(self, max_gap: int):
        self.max_gap = max_gap
        self._states: dict[int, StateT] = {}

    def get(self, track_id: int, frame_index: int) -> StateT | None:
        """The track's state if it was updated within ``max_gap`` frames before ``frame_index``, else None."""
        state = self._states.get(track_id)
        return None if state is None or frame_index - state.frame_index > self.max_gap else state

    def __len__(self) -> int:
        return len(self._states)

    def put(self, track_id: int, state: StateT) -> None:
        self._states[track_id] = state

    def forget(self, track_id: int) -> None:
        self._states.pop(track_id, None)

    def reset(self) -> None:
        """Forget every track (scene cut)."""
        self._states.clear()

    def prune(self, frame_index: int) -> None:
        """Drop tracks not seen for more than ``max_gap`` frames."""
        for track_id in [t for t, s in self._states.items() if frame_index - s.frame_index > self.max_gap]:
            del self._states[track_id]
