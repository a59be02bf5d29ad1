"""Face tracking with stable ids, gap bridging and temporal smoothing, as one streaming object.

Per pushed frame the tracker

1. predicts every live track's landmarks (constant velocity from its recent hits),
2. associates detections to tracks by landmark distance (in eye distances) plus box overlap, with a gate,
   solved globally by the Hungarian method (``scipy.optimize.linear_sum_assignment``),
3. applies hysteresis: a new track is *tentative* until it has ``confirm_hits`` consecutive hits (then it gets an id,
   and its first frames are still emitted: they wait in the look-ahead buffer); a tentative track that ends sooner
   (a face that flashes past, a clip of two frames) is kept when its best detection score is at least
   ``confident_score``, and otherwise left out and counted in :attr:`FaceTracker.left_out_detections`; a confirmed
   track survives up to ``max_misses`` missed frames, and when it is found again the gap is bridged by
   interpolating its pose,
4. on a scene cut ends every track (the next faces get new ids),
5. emits, in order, every frame that is final: no tentative track covering it is still undecided, and every live
   track covering it has its smoothing window complete (or has ended). With no face around a frame comes out at once.

Detection may skip frames (``detections=None``: not searched). Such frames neither match nor count as misses; the
tracks' positions there are interpolated like any gap. Hysteresis counts searched frames only.

Memory is bounded: the tracker keeps at most ``latency_frames + lookahead + 1`` samples per live track and no images.
The caller must hold each frame until it is emitted, at most ``latency_frames`` pushes later.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from vidgpen.errors import OptionError
from vidgpen.faces.smooth import (
    LOG_SCALE,
    OneEuroFilter,
    POSE_SIZE,
    landmarks_to_pose,
    local_linear_smooth,
    pose_to_landmarks,
)
from vidgpen.faces.types import Detection, TrackedFace, TrackedFrame

SMOOTHING_MODES = ("window", "one-euro", "none")

# Cost given to gated-out pairs so the assignment never prefers them; they are rejected afterwards anyway.
_FORBIDDEN_COST = 1e6


@dataclass
class _Sample:
    """One frame of one track. pose (4,), residual (5, 2) float64; raw_landmarks None when bridged."""

    seq: int
    pose: np.ndarray
    residual: np.ndarray
    box: np.ndarray
    score: float
    raw_landmarks: np.ndarray | None


@dataclass
class _Track:
    samples: deque  # of _Sample with consecutive seq values, oldest first
    last_landmarks: np.ndarray  # (5, 2) float64, landmarks of the last hit
    last_box: np.ndarray  # (4,) float64
    velocity: np.ndarray = field(default_factory=lambda: np.zeros((5, 2)))  # landmarks per frame
    hits: int = 1
    misses: int = 0  # searched frames without a match since the last hit
    track_id: int | None = None  # assigned on confirmation
    alive: bool = True
    filter: OneEuroFilter | None = None

    @property
    def confirmed(self) -> bool:
        return self.track_id is not None

    @property
    def first_seq(self) -> int:
        return self.samples[0].seq

    @property
    def last_seq(self) -> int:
        return self.samples[-1].seq

    @property
    def eye_distance(self) -> float:
        # The template's eye distance is 1, so exp(log s) is the face's eye distance in pixels.
        return math.exp(float(self.samples[-1].pose[LOG_SCALE]))

    def sample_at(self, seq: int) -> _Sample:
        return self.samples[seq - self.first_seq]


@dataclass(frozen=True)
class _PendingFrame:
    seq: int
    frame_index: int
    pts_seconds: float
    scene_cut: bool


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair. boxes_a (A, 4), boxes_b (B, 4) x1, y1, x2, y2 -> (A, B) float64."""
    boxes_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_a = np.prod(np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


class FaceTracker:
    """Streaming multi-face tracker and smoother.

    lookahead: frames each side of the zero-phase smoothing window (``smoothing="window"``; 0 otherwise).
    smoothing: "window" (zero-phase local linear fit, Gaussian weights of width ``sigma`` frames, default
        lookahead / 2), "one-euro" (causal, uses pts deltas; ``min_cutoff`` and ``derivative_cutoff`` in Hz,
        ``beta`` per face-size-per-second for translation), or "none".
    confirm_hits: consecutive searched frames with a detection before a track is confirmed and gets an id.
    confident_score: a track that ends before ``confirm_hits`` is still confirmed when one of its detections scored
        at least this much (the age rule guards against false detections, which rarely score this high).
    max_misses: missed (searched) frames a confirmed track survives; such gaps are bridged by interpolation.
    detection_interval: the caller runs detection on every n-th frame (pushing ``None`` in between); only used to
        bound :attr:`latency_frames`.
    max_landmark_distance: association gate, mean landmark distance in eye distances of the track.
    min_iou: pairs beyond the landmark gate are still allowed when their boxes overlap at least this much.
    """

    def __init__(
        self,
        lookahead: int = 4,
        smoothing: str = "window",
        *,
        sigma: float | None = None,
        confirm_hits: int = 3,
        confident_score: float = 0.98,
        max_misses: int = 5,
        detection_interval: int = 1,
        max_landmark_distance: float = 1.0,
        min_iou: float = 0.5,
        min_cutoff: float = 1.0,
        beta: float = 5.0,
        derivative_cutoff: float = 1.0,
    ) -> None:
        if smoothing not in SMOOTHING_MODES:
            raise OptionError(f"unknown smoothing {smoothing!r}; use one of {', '.join(SMOOTHING_MODES)}")
        if lookahead < 0:
            raise OptionError(f"look-ahead must be >= 0 frames, got {lookahead}")
        if confirm_hits < 1:
            raise OptionError(f"confirm hits must be >= 1, got {confirm_hits}")
        if confident_score < 0.0:
            raise OptionError(f"confident score must be >= 0 (above 1 turns it off), got {confident_score}")
        if max_misses < 0:
            raise OptionError(f"max misses must be >= 0, got {max_misses}")
        if detection_interval < 1:
            raise OptionError(f"detection interval must be >= 1 frame, got {detection_interval}")
        if sigma is not None and sigma <= 0:
            raise OptionError(f"smoothing sigma must be > 0 frames, got {sigma}")
        self.lookahead = lookahead if smoothing == "window" else 0
        self.smoothing = smoothing
        self.sigma = sigma if sigma is not None else max(lookahead / 2.0, 0.5)
        self.confirm_hits = confirm_hits
        self.confident_score = confident_score
        # Detections of tentative tracks that ended unconfirmed (short and not confident): never restored.
        self.left_out_detections = 0
        self.max_misses = max_misses
        self.detection_interval = detection_interval
        self.max_landmark_distance = max_landmark_distance
        self.min_iou = min_iou
        self._one_euro_settings = (min_cutoff, beta, derivative_cutoff)
        if smoothing == "one-euro":
            OneEuroFilter(min_cutoff, beta, derivative_cutoff)  # validate now, not at the first face
        self._tracks: list[_Track] = []
        self._pending: deque[_PendingFrame] = deque()
        self._next_seq = 0
        self._next_track_id = 0
        self._last_frame_index: int | None = None

    @property
    def latency_frames(self) -> int:
        """Pushes after which a frame is guaranteed to have been emitted (an upper bound; usually less).

        Worst case: a face vanishes just before a frame's look-ahead is complete, and the tracker must wait until the
        track ends (``max_misses + 1`` searched frames) before it knows that there is nothing to bridge.
        """
        return self.lookahead + self.detection_interval * max(self.confirm_hits - 1, self.max_misses + 1)

    def push(
        self, frame_index: int, pts_seconds: float, detections: list[Detection] | None, scene_cut: bool = False
    ) -> list[TrackedFrame]:
        """Add one frame's detections; return the frames that became final, in order (possibly none).

        frame_index: strictly increasing across pushes. pts_seconds: the frame's presentation time (used by the
        one-euro smoother; any increasing values work for the others). detections: None when detection did not run
        on this frame. scene_cut: end every track before this frame.
        """
        if self._last_frame_index is not None and frame_index <= self._last_frame_index:
            raise ValueError(f"frame_index must increase: got {frame_index} after {self._last_frame_index}")
        self._last_frame_index = frame_index
        seq = self._next_seq
        self._next_seq += 1
        if scene_cut:
            self._end_all_tracks()
        if detections is not None:
            # A detection whose points are not finite or all coincide has no pose; it cannot be tracked.
            usable = [d for d in detections
                      if np.isfinite(d.landmarks).all() and np.isfinite(d.box).all() and np.ptp(d.landmarks) > 1e-3]
            self._update_tracks(seq, usable)
        self._pending.append(_PendingFrame(seq, frame_index, float(pts_seconds), bool(scene_cut)))
        return self._emit_ready()

    def flush(self) -> list[TrackedFrame]:
        """End of stream: end every track and return all remaining frames, in order."""
        self._end_all_tracks()
        return self._emit_ready()

    # -- association and track life cycle ---------------------------------------------------------------------------

    def _end_all_tracks(self) -> None:
        for track in self._tracks:
            if track.alive:
                self._end_track(track)
        # Unconfirmed tracks never reach the output; confirmed ones stay until their frames are emitted.
        self._tracks = [track for track in self._tracks if track.confirmed]

    def _end_track(self, track: _Track) -> None:
        """A track stops here: a short tentative one is confirmed if confident, else its detections are left out."""
        track.alive = False
        if track.confirmed:
            return
        if max(sample.score for sample in track.samples) >= self.confident_score:
            self._confirm(track)
        else:
            self.left_out_detections += track.hits

    def _update_tracks(self, seq: int, detections: list[Detection]) -> None:
        live_tracks = [track for track in self._tracks if track.alive]
        matches, unmatched_detections = self._associate(live_tracks, detections, seq)
        matched_tracks = set()
        for track_index, detection_index in matches:
            self._add_hit(live_tracks[track_index], seq, detections[detection_index])
            matched_tracks.add(track_index)
        for track_index, track in enumerate(live_tracks):
            if track_index in matched_tracks:
                continue
            track.misses += 1
            if not track.confirmed or track.misses > self.max_misses:
                self._end_track(track)  # a tentative track needs consecutive hits
        self._tracks = [track for track in self._tracks if track.alive or track.confirmed]
        for detection_index in unmatched_detections:
            self._start_track(seq, detections[detection_index])

    def _associate(
        self, tracks: list[_Track], detections: list[Detection], seq: int
    ) -> tuple[list[tuple[int, int]], list[int]]:
        if not tracks or not detections:
            return [], list(range(len(detections)))
        predicted_landmarks = np.stack(
            [track.last_landmarks + track.velocity * (seq - track.last_seq) for track in tracks]
        )  # (T, 5, 2)
        predicted_boxes = np.stack(
            [
                track.last_box + np.tile(track.velocity.mean(axis=0), 2) * (seq - track.last_seq)
                for track in tracks
            ]
        )  # (T, 4)
        detected_landmarks = np.stack([d.landmarks for d in detections]).astype(np.float64)  # (D, 5, 2)
        detected_boxes = np.stack([d.box for d in detections]).astype(np.float64)  # (D, 4)
        eye_distances = np.array([max(track.eye_distance, 1.0) for track in tracks])
        landmark_distance = np.linalg.norm(
            predicted_landmarks[:, None] - detected_landmarks[None], axis=3
        ).mean(axis=2) / eye_distances[:, None]  # (T, D)
        overlap = box_iou(predicted_boxes, detected_boxes)
        allowed = (landmark_distance <= self.max_landmark_distance) | (overlap >= self.min_iou)
        cost = np.where(allowed, landmark_distance + (1.0 - overlap), _FORBIDDEN_COST)
        track_indices, detection_indices = linear_sum_assignment(cost)
        matches = [(int(t), int(d)) for t, d in zip(track_indices, detection_indices) if allowed[t, d]]
        matched_detections = {d for _, d in matches}
        return matches, [d for d in range(len(detections)) if d not in matched_detections]

    def _start_track(self, seq: int, detection: Detection) -> None:
        pose, residual = landmarks_to_pose(detection.landmarks)
        sample = _Sample(seq, pose, residual, detection.box.astype(np.float64), detection.score, detection.landmarks)
        track = _Track(
            samples=deque([sample]),
            last_landmarks=detection.landmarks.astype(np.float64),
            last_box=detection.box.astype(np.float64),
        )
        self._tracks.append(track)
        self._confirm_if_ready(track)

    def _add_hit(self, track: _Track, seq: int, detection: Detection) -> None:
        last = track.samples[-1]
        pose, residual = landmarks_to_pose(detection.landmarks, previous_angle=float(last.pose[-1]))
        box = detection.box.astype(np.float64)
        gap = seq - last.seq
        # Bridge the missed frames by interpolating pose, shape, box and score linearly.
        for step in range(1, gap):
            fraction = step / gap
            track.samples.append(
                _Sample(
                    seq=last.seq + step,
                    pose=(1 - fraction) * last.pose + fraction * pose,
                    residual=(1 - fraction) * last.residual + fraction * residual,
                    box=(1 - fraction) * last.box + fraction * box,
                    score=(1 - fraction) * last.score + fraction * detection.score,
                    raw_landmarks=None,
                )
            )
        track.samples.append(_Sample(seq, pose, residual, box, detection.score, detection.landmarks))
        landmarks = detection.landmarks.astype(np.float64)
        step_velocity = (landmarks - track.last_landmarks) / gap
        # The first velocity is the first difference; later ones are averaged to resist detector noise.
        track.velocity = step_velocity if track.hits == 1 else 0.5 * track.velocity + 0.5 * step_velocity
        track.last_landmarks = landmarks
        track.last_box = box
        track.hits += 1
        track.misses = 0
        self._confirm_if_ready(track)

    def _confirm_if_ready(self, track: _Track) -> None:
        if not track.confirmed and track.hits >= self.confirm_hits:
            self._confirm(track)

    def _confirm(self, track: _Track) -> None:
        track.track_id = self._next_track_id
        self._next_track_id += 1
        if self.smoothing == "one-euro":
            track.filter = OneEuroFilter(*self._one_euro_settings)

    # -- emission and smoothing -------------------------------------------------------------------------------------

    def _is_final(self, seq: int) -> bool:
        """Whether nothing still to come can change the output for frame ``seq``."""
        for track in self._tracks:
            if not track.alive or track.first_seq > seq:
                continue  # ended tracks are complete; later tracks do not reach back
            if not track.confirmed:
                return False  # it may yet be confirmed, and then this frame shows it
            if track.last_seq < seq + self.lookahead:
                return False  # the smoothing window is incomplete, or a gap here may yet be bridged
        return True

    def _emit_ready(self) -> list[TrackedFrame]:
        emitted = []
        while self._pending and self._is_final(self._pending[0].seq):
            emitted.append(self._emit(self._pending.popleft()))
        return emitted

    def _emit(self, frame: _PendingFrame) -> TrackedFrame:
        faces = []
        for track in self._tracks:
            if track.confirmed and track.first_seq <= frame.seq <= track.last_seq:
                faces.append(self._smoothed_face(track, frame))
        # Forget what no later frame needs: samples older than the next frame's window, and finished tracks.
        keep_from = frame.seq + 1 - self.lookahead
        for track in self._tracks:
            while len(track.samples) > 1 and track.samples[0].seq < keep_from:
                track.samples.popleft()
        self._tracks = [track for track in self._tracks if track.alive or track.last_seq > frame.seq]
        faces.sort(key=lambda face: face.track_id)
        return TrackedFrame(frame.frame_index, frame.pts_seconds, frame.scene_cut, tuple(faces))

    def _smoothed_face(self, track: _Track, frame: _PendingFrame) -> TrackedFace:
        sample = track.sample_at(frame.seq)
        if self.smoothing == "window":
            # Only samples within the window are kept, plus the newest ones; take the window around this frame.
            start = max(track.first_seq, frame.seq - self.lookahead)
            stop = min(track.last_seq, frame.seq + self.lookahead)
            values = np.stack([_smoothed_quantities(track.sample_at(s)) for s in range(start, stop + 1)])
            smoothed = local_linear_smooth(values, frame.seq - start, self.lookahead, self.sigma)
        elif self.smoothing == "one-euro":
            values = _smoothed_quantities(sample)
            # Translation and box speeds count in face sizes per second, so one beta suits small and large faces.
            speed_scale = np.ones_like(values)
            speed_scale[_TRANSLATION] = speed_scale[_BOX] = math.exp(float(sample.pose[LOG_SCALE]))
            smoothed = track.filter(frame.pts_seconds, values, speed_scale)
        else:
            smoothed = _smoothed_quantities(sample)
        landmarks = pose_to_landmarks(smoothed[_POSE], smoothed[_RESIDUAL].reshape(5, 2))
        raw = None if sample.raw_landmarks is None else np.asarray(sample.raw_landmarks, dtype=np.float32)
        return TrackedFace(
            track_id=int(track.track_id),
            score=float(sample.score),
            box=sample.box.astype(np.float32),
            raw_landmarks=raw,
            smoothed_landmarks=landmarks,
            smoothed_box=smoothed[_BOX].astype(np.float32),
        )


# Layout of the vector smoothed per frame: pose (tx, ty, log s, angle), residual shape (10), box (4).
_POSE = slice(0, POSE_SIZE)
_TRANSLATION = slice(0, 2)
_RESIDUAL = slice(POSE_SIZE, POSE_SIZE + 10)
_BOX = slice(POSE_SIZE + 10, POSE_SIZE + 14)


def _smoothed_quantities(sample: _Sample) -> np.ndarray:
    return np.concatenate([sample.pose, sample.residual.ravel(), sample.box])
