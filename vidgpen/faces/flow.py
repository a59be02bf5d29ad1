"""Following faces between detections: pyramidal Lucas-Kanade optical flow on the 5 landmarks.

Detection runs every few frames (``--detect-every``); on the frames between, each face's landmarks are moved by
optical flow from the previous frame (``cv2.calcOpticalFlowPyrLK``, well under a millisecond per face) and checked
by tracking them back again: a point whose backward track does not return to where it started (forward-backward
error, Kalal et al. 2010) has drifted onto something else. When any face fails that check, or leaves the frame, or
changes size implausibly between two frames, :meth:`LandmarkFlow.follow` says so and the caller detects on that
frame instead. New faces are only found by detection.

The object holds the faces being followed and, in grey, the part of the previous frame around them (the
flow never looks further; see :meth:`LandmarkFlow._region`); nothing per frame accumulates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from vidgpen.errors import OptionError
from vidgpen.faces.types import Detection

_LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)


@dataclass(frozen=True)
class FollowedFaces:
    """The faces of the previous frame moved into the current one.

    detections: the faces that could be followed, in full-frame pixels (box and landmarks moved, score kept).
    lost: True when a face could not be followed reliably or left the frame: detect on this frame.
    """

    detections: list[Detection]
    lost: bool


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking ``source`` to ``target`` (both (N, 2)).

    Returns a (2, 3) float64 matrix. Closed form (Umeyama without reflection).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    s, t = source - source_mean, target - target_mean
    variance = float((s ** 2).sum())
    if variance <= 0.0:
        return np.array([[1.0, 0.0, target_mean[0] - source_mean[0]], [0.0, 1.0, target_mean[1] - source_mean[1]]])
    # As complex numbers: t ~ z * s with z = a + ib.
    a = float((s[:, 0] * t[:, 0] + s[:, 1] * t[:, 1]).sum()) / variance
    b = float((s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]).sum()) / variance
    linear = np.array([[a, -b], [b, a]])
    offset = target_mean - linear @ source_mean
    return np.concatenate([linear, offset[:, None]], axis=1)


def _move_box(box: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """A box carried by a similarity: its centre moved, its sides scaled (kept axis-aligned)."""
    center = (box[:2] + box[2:]) / 2
    half = (box[2:] - box[:2]) / 2 * float(np.hypot(matrix[0, 0], matrix[1, 0]))
    moved = matrix[:, :2] @ center + matrix[:, 2]
    return np.concatenate([moved - half, moved + half])


class LandmarkFlow:
    """Moves the landmarks of the last detected faces from frame to frame.

    window: Lucas-Kanade window side in pixels; levels: pyramid levels above the full frame (each halves it, so
        motions up to about ``window * 2**levels / 2`` pixels per frame are followed).
    max_error: forward-backward error allowed per landmark, in eye distances of the face (and at least
        ``min_error_px`` pixels, so sub-pixel noise on small faces is not a failure).
    max_scale_change: a face whose eye distance changes by more than this factor between two frames is lost.
    """

    def __init__(self, *, window: int = 21, levels: int = 3, max_error: float = 0.05, min_error_px: float = 1.0,
                 max_scale_change: float = 1.25) -> None:
        if window < 5 or window % 2 == 0:
            raise OptionError(f"optical flow window must be an odd number >= 5, got {window}")
        if levels < 0:
            raise OptionError(f"optical flow pyramid levels must be >= 0, got {levels}")
        self.window = (int(window), int(window))
        self.levels = int(levels)
        self.max_error = float(max_error)
        self.min_error_px = float(min_error_px)
        self.max_scale_change = float(max_scale_change)
        self._faces: list[Detection] = []
        self._frame_size: tuple[int, int] | None = None
        self._frame_region: tuple[int, int, int, int] | None = None  # (y0, y1, x0, x1)
        self._grey_region: np.ndarray | None = None

    def _region(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """The part of the frame the flow needs for the followed faces: their boxes and landmarks with room for the
        largest motion the pyramid follows, as (y0, y1, x0, x1). Its corners sit on multiples of the coarsest
        pyramid step, so every pyramid level of the region samples the same pixels as the whole frame's; the flow
        then agrees with the whole frame's to a few thousandths of a pixel (measured on the sample clip) and costs
        a fraction of it (720p, one face: 4.0 -> 2.2 CPU ms per frame)."""
        if not self._faces:
            return None
        step = 2 ** (self.levels + 1)
        margin = self.window[0] * 2 ** self.levels
        corners = np.concatenate([np.concatenate([f.box.reshape(2, 2), f.landmarks]) for f in self._faces])
        low = np.floor((corners.min(axis=0) - margin) / step) * step
        high = np.ceil((corners.max(axis=0) + margin) / step) * step
        x0, y0 = (max(0, int(v)) for v in low)
        x1, y1 = min(width, int(high[0])), min(height, int(high[1]))
        if x1 - x0 < self.window[0] or y1 - y0 < self.window[1]:
            return None
        return y0, y1, x0, x1

    def _keep_region(self, image_rgb: np.ndarray) -> None:
        """Keep, in grey, the region of this frame the next :meth:`follow` will track the faces from."""
        self._frame_region = self._region(*image_rgb.shape[:2])
        if self._frame_region is None:
            self._grey_region = None
            return
        y0, y1, x0, x1 = self._frame_region
        self._grey_region = cv2.cvtColor(image_rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)

    def start(self, image_rgb: np.ndarray, detections: list[Detection]) -> None:
        """Follow these faces (just detected in ``image_rgb``, (H, W, 3) uint8) from now on."""
        self._faces = list(detections)
        self._frame_size = image_rgb.shape[:2]
        self._keep_region(image_rgb)

    def follow(self, image_rgb: np.ndarray) -> FollowedFaces:
        """Move the followed faces into the next frame ((H, W, 3) uint8 RGB, the same size as before)."""
        if self._frame_size is None:
            raise RuntimeError("LandmarkFlow.follow() before start()")
        if image_rgb.shape[:2] != self._frame_size:
            raise ValueError(f"frame size changed from {self._frame_size} to {image_rgb.shape[:2]}")
        if not self._faces:
            return FollowedFaces([], lost=False)
        height, width = image_rgb.shape[:2]
        if self._frame_region is None:  # faces too close to the frame's edges to follow
            self._faces = []
            return FollowedFaces([], lost=True)
        y0, y1, x0, x1 = self._frame_region
        previous = self._grey_region
        current = cv2.cvtColor(image_rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
        origin = np.array([x0, y0], dtype=np.float32)
        landmarks = np.concatenate([face.landmarks for face in self._faces]).astype(np.float32)
        points = (landmarks - origin).reshape(-1, 1, 2)
        forward, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, points, None, winSize=self.window,
                                                      maxLevel=self.levels, criteria=_LK_CRITERIA)
        backward, back_status, _ = cv2.calcOpticalFlowPyrLK(current, previous, forward, None, winSize=self.window,
                                                            maxLevel=self.levels, criteria=_LK_CRITERIA)
        ok = (status.reshape(-1) == 1) & (back_status.reshape(-1) == 1)
        error = np.linalg.norm((backward - points).reshape(-1, 2), axis=1)
        moved = forward.reshape(-1, 5, 2).astype(np.float64) + origin.astype(np.float64)
        followed, lost = [], False
        for index, face in enumerate(self._faces):
            landmarks = moved[index]
            rows = slice(5 * index, 5 * index + 5)
            allowed = max(self.min_error_px, self.max_error * max(face.eye_distance, 1.0))
            inside = (np.all(landmarks >= 0) and np.all(landmarks[:, 0] < width) and np.all(landmarks[:, 1] < height))
            new_eye = float(np.linalg.norm(landmarks[1] - landmarks[0]))
            scale = new_eye / max(face.eye_distance, 1e-6)
            if (not np.all(ok[rows]) or float(error[rows].max()) > allowed or not inside
                    or not 1 / self.max_scale_change <= scale <= self.max_scale_change):
                lost = True
                continue
            matrix = similarity_transform(face.landmarks, landmarks)
            followed.append(Detection(box=_move_box(face.box.astype(np.float64), matrix), score=face.score,
                                      landmarks=landmarks))
        self._faces = followed
        self._keep_region(image_rgb)
        return FollowedFaces(followed, lost=lost)


class DetectAndFollow:
    """Faces for every frame of a stream: detection every ``interval`` frames, optical flow in between.

    detect: full-frame detection with selection applied, ``(H, W, 3) uint8 RGB -> list[Detection]``.
    interval: frames from one detection to the next when nothing goes wrong (1: detect on every frame).
    Detection also runs when the caller forces it (a scene cut, the last frame) and when a followed face is lost.
    The regular detections fall on frames 0, interval, 2 * interval, ... of the stream whatever happened in between,
    so two runs that start on the same phase (a whole video and a segment of it, see :mod:`vidgpen.cluster.plan`)
    detect on the same frames and agree from their first regular detection on.
    """

    def __init__(self, detect: Callable[[np.ndarray], list[Detection]], interval: int,
                 flow: LandmarkFlow | None = None) -> None:
        if interval < 1:
            raise OptionError(f"detection interval must be at least 1 frame, got {interval}")
        self.detect = detect
        self.interval = int(interval)
        self.flow = flow or LandmarkFlow()
        self.detections_run = 0
        self._frames_seen = 0

    def __call__(self, image_rgb: np.ndarray, *, force_detection: bool = False) -> list[Detection]:
        """The faces of the next frame ((H, W, 3) uint8 RGB) of the stream."""
        position, self._frames_seen = self._frames_seen, self._frames_seen + 1
        if not (force_detection or position % self.interval == 0):
            followed = self.flow.follow(image_rgb)
            if not followed.lost:
                return followed.detections
        detections = self.detect(image_rgb)
        self.detections_run += 1
        if self.interval > 1:
            self.flow.start(image_rgb, detections)
        return detections
