"""Temporal blending of restored faces, per track, in aligned-crop space.

GPEN is deterministic, but it answers small changes of a noisy input with different hallucinated detail, so a
restored face shimmers from frame to frame. Each track keeps its previous *shown* face; the new shown face is

    shown_t = w * shown_{t-1} + (1 - w) * restored_t,    w = strength * exp(-(D / tolerance)^2)

per pixel, where D is the (blurred) difference between this and the previous aligned *input* crop. Where the
input is steady (D small) the restored face is averaged over time; where the input really changes (motion,
expression, occlusion) w falls towards 0 and the new restoration shows at once. A track start or a scene cut
starts from the new restoration alone. Crops are aligned by the smoothed transform, so the same pixel of two
consecutive crops shows the same part of the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class _TrackState:
    shown: np.ndarray        # [S, S, 3] float32, the last shown restored face
    input_gray: np.ndarray   # [S, S] float32, the last aligned input crop, grayscale and blurred
    frame_index: int


class TemporalBlender:
    """Per-track recursive blending with a motion-dependent weight.

    ``strength`` in [0, 1]: the largest weight the previous face gets (0 turns blending off).
    ``tolerance``: input difference (uint8 levels, after blurring) at which the weight has fallen to 1/e.
    ``max_gap``: a track unseen for more than this many frames starts afresh.
    """

    def __init__(self, strength: float = 0.6, tolerance: float = 6.0, max_gap: int = 2):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"temporal strength must be within 0..1, got {strength}")
        self.strength = float(strength)
        self.tolerance = float(tolerance)
        self.max_gap = max_gap
        self._tracks: dict[int, _TrackState] = {}

    def reset(self) -> None:
        """Forget every track (scene cut)."""
        self._tracks.clear()

    def end_track(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)

    def blend(self, track_id: int, frame_index: int, input_crop: np.ndarray, restored: np.ndarray) -> np.ndarray:
        """input_crop, restored: ``[S, S, 3]`` uint8 (aligned) -> the face to show, ``[S, S, 3]`` uint8."""
        if self.strength == 0.0:
            return restored
        gray = _blurred_gray(input_crop)
        state = self._tracks.get(track_id)
        fresh = restored.astype(np.float32)
        if state is None or frame_index - state.frame_index > self.max_gap or state.shown.shape != fresh.shape:
            shown = fresh
        else:
            weight = self.weight(state.input_gray, gray)[:, :, None]
            shown = fresh + weight * (state.shown - fresh)
        self._tracks[track_id] = _TrackState(shown, gray, frame_index)
        return np.clip(shown + 0.5, 0, 255).astype(np.uint8)

    def weight(self, previous_gray: np.ndarray, current_gray: np.ndarray) -> np.ndarray:
        """Per-pixel weight of the previous face, ``[S, S]`` float32 in [0, strength]."""
        difference = np.abs(current_gray - previous_gray)
        return (self.strength * np.exp(-np.square(difference / self.tolerance))).astype(np.float32)

    def prune(self, frame_index: int) -> None:
        """Drop tracks not seen for more than ``max_gap`` frames (bounded memory)."""
        stale = [tid for tid, st in self._tracks.items() if frame_index - st.frame_index > self.max_gap]
        for tid in stale:
            del self._tracks[tid]


def _blurred_gray(crop: np.ndarray) -> np.ndarray:
    """Grayscale, blurred in proportion to the crop size, so sensor noise does not read as motion."""
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    sigma = max(1.0, crop.shape[0] / 128)
    return cv2.GaussianBlur(gray, (0, 0), sigma)
