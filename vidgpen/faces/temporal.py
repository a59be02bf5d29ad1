"""Motion-compensated temporal blending of restored faces, per track, in aligned-crop space.

Trained GPEN answers small changes of a noisy input (grain, sensor noise, compression) with different invented
detail, so a restored face shimmers, most visibly while it moves. Each track keeps its previous *shown* face and
its previous aligned input crop. For a new frame:

1. dense optical flow (OpenCV DIS) between the two aligned *input* crops, on small grayscale copies
   (``flow_size`` pixels, about a millisecond), in both directions;
2. the previous shown face is warped by the backward flow onto the new crop, so it follows the face's motion
   (talking, turning, zooming) instead of being thrown away;
3. per pixel, ``shown = restored + w * (warped_previous - restored)`` with

       w = strength * exp(-(D / tolerance)^2) * exp(-(E / consistency_px)^2),

   where D is the difference between the new input crop and the warped previous input crop (blurred so sensor
   noise does not count) and E the forward-backward error of the flow (how far following the flow back and forth
   misses the start). Where the flow explains the change, the restored face is averaged over time; where it does
   not (occlusions, blinks, a mouth opening, a cut the detector missed), w falls to 0 and the new restoration
   shows at once.

A track start, a gap of more than ``max_gap`` frames or a scene cut (:meth:`TemporalBlender.reset`) starts from the
new restoration alone. State is one float face and one small gray image per live track; nothing else is kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from vidgpen.faces.types import TrackMemory


@dataclass
class _TrackState:
    shown: np.ndarray        # [S, S, 3] float32, the last shown restored face
    input_gray: np.ndarray   # [F, F] uint8, the last aligned input crop, grayscale at the flow size
    frame_index: int


class TemporalBlender:
    """Per-track recursive blending that follows the face's motion.

    ``strength`` in [0, 1]: the largest weight the previous face gets (0 turns blending off).
    ``tolerance``: difference between the input and the motion-compensated previous input (uint8 levels, after
    blurring) at which the weight has fallen to 1/e.
    ``consistency_px``: forward-backward flow error (pixels of the flow image) at which the weight has fallen to 1/e.
    ``flow_size``: side of the gray crops the flow is computed on (``None``: the crop size, up to 64; the face
    fills the same part of every crop, so this is a fixed resolution on the face).
    ``motion``: False compares the crops without a flow (the weight then falls wherever the face moves).
    ``max_gap``: a track unseen for more than this many frames starts afresh.
    """

    def __init__(self, strength: float = 0.6, tolerance: float = 6.0, max_gap: int = 2, *,
                 consistency_px: float = 0.6, flow_size: int | None = None, motion: bool = True):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"temporal strength must be within 0..1, got {strength}")
        self.strength = float(strength)
        self.tolerance = float(tolerance)
        self.consistency_px = float(consistency_px)
        self.max_gap = max_gap
        self.flow_size = flow_size
        self.motion = motion
        self._tracks: TrackMemory[_TrackState] = TrackMemory(max_gap)
        self._flow = None

    def reset(self) -> None:
        """Forget every track (scene cut)."""
        self._tracks.reset()

    def end_track(self, track_id: int) -> None:
        self._tracks.forget(track_id)

    def blend(self, track_id: int, frame_index: int, input_crop: np.ndarray, restored: np.ndarray) -> np.ndarray:
        """input_crop, restored: ``[S, S, 3]`` uint8 (aligned) -> the face to show, ``[S, S, 3]`` uint8."""
        if self.strength == 0.0:
            return restored
        size = restored.shape[0]
        gray = _small_gray(input_crop, self._flow_side(size))
        state = self._tracks.get(track_id, frame_index)
        fresh = restored.astype(np.float32)
        if state is None or state.shown.shape != fresh.shape:
            shown = fresh
        else:
            warped_shown, weight = self.follow(state.input_gray, gray, state.shown)
            # weight * warped + (1 - weight) * fresh, one multi-threaded pass with a one-channel weight
            shown = cv2.blendLinear(warped_shown, fresh, weight, 1.0 - weight)
        self._tracks.put(track_id, _TrackState(shown, gray, frame_index))
        return cv2.convertScaleAbs(shown)  # rounded and saturated to uint8 (shown is never negative)

    def follow(self, previous_gray: np.ndarray, current_gray: np.ndarray,
               previous_shown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Warp ``previous_shown`` ``[S, S, 3]`` float32 onto the current crop; returns it and the per-pixel weight
        ``[S, S]`` float32 in [0, strength] it gets. The grays are ``[F, F]`` uint8 from the flow size."""
        size = previous_shown.shape[0]
        side = previous_gray.shape[0]
        if not self.motion:
            weight = self.weight(_blurred(previous_gray), _blurred(current_gray))
            return previous_shown, _resize(weight, size)
        flow_back = self._dis().calc(current_gray, previous_gray, None)
        flow_forward = self._dis().calc(previous_gray, current_gray, None)
        where = _grid(side) + flow_back     # [F, F, 2]: where each pixel was in the previous crop
        warped_previous = cv2.remap(_blurred(previous_gray), where, None, cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
        forward_there = cv2.remap(flow_forward, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        round_trip = np.sqrt(np.square(flow_back + forward_there).sum(-1))
        weight = self.weight(warped_previous, _blurred(current_gray))
        weight *= np.exp(-np.square(round_trip / self.consistency_px))
        # pixels whose motion comes from outside the previous crop have nothing to blend with
        weight[((where < 0) | (where > side - 1)).any(axis=-1)] = 0.0
        # the same motion at full size: one interleaved float map, one remap
        where_full = cv2.resize(flow_back, (size, size), interpolation=cv2.INTER_LINEAR)
        cv2.scaleAdd(where_full, size / side, _grid(size), dst=where_full)
        warped_shown = cv2.remap(previous_shown, where_full, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return warped_shown, _resize(weight, size)

    def weight(self, previous_gray: np.ndarray, current_gray: np.ndarray) -> np.ndarray:
        """Per-pixel weight of the previous face from the input difference alone, float32 in [0, strength]."""
        difference = np.abs(current_gray.astype(np.float32) - previous_gray.astype(np.float32))
        return (self.strength * np.exp(-np.square(difference / self.tolerance))).astype(np.float32)

    def prune(self, frame_index: int) -> None:
        """Drop tracks not seen for more than ``max_gap`` frames (bounded memory)."""
        self._tracks.prune(frame_index)

    def _flow_side(self, size: int) -> int:
        return self.flow_size or min(size, 64)

    def _dis(self):
        if self._flow is None:
            self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return self._flow


def _small_gray(crop: np.ndarray, side: int) -> np.ndarray:
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    if gray.shape[0] == side:
        return gray
    return cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)


def _blurred(gray: np.ndarray) -> np.ndarray:
    """Blurred float copy, so that sensor noise does not read as change."""
    return cv2.GaussianBlur(gray.astype(np.float32), (0, 0), max(1.0, gray.shape[0] / 128))


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


@functools.lru_cache(maxsize=8)
def _grid(side: int) -> np.ndarray:
    """Pixel coordinates of a ``side`` square, ``[side, side, 2]`` float32 (x, y), read-only."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    grid = np.ascontiguousarray(np.stack([x, y], axis=-1))
    grid.setflags(write=False)
    return grid
