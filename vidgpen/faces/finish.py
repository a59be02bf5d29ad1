"""What happens to a restored face between the model and the paste-back, per track, in aligned-crop space.

    raw restoration --(drift measured)--> colour matched to the input --> monochrome: input chroma kept
        --> temporally blended with the track's previous face --> strength lowered where it drifted

One :class:`FaceFinisher` per run; :meth:`FaceFinisher.finish` is called once per face in frame order. Its state
is a few small arrays per live track (see :mod:`vidgpen.faces.temporal`, :mod:`vidgpen.faces.color`,
:mod:`vidgpen.faces.drift`); a scene cut calls :meth:`FaceFinisher.reset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from vidgpen.faces.color import MonochromeDetector, keep_chroma, match_color
from vidgpen.faces.drift import DriftLimiter, measure_drift
from vidgpen.faces.temporal import TemporalBlender

# The landmark drift runs the detector on two crops (~20 ms with MTCNN on 2 cores): every few frames of a track is
# enough for a property that changes slowly, and --max-drift follows it smoothly anyway.
LANDMARK_INTERVAL = 4


@dataclass
class FinishedFace:
    """shown: ``[S, S, 3]`` uint8 RGB, the face to paste; monochrome: paste its luminance only (keep the frame's
    chroma); record: JSON-ready facts for ``--report``."""

    shown: np.ndarray
    monochrome: bool = False
    record: dict[str, Any] = field(default_factory=dict)


class FaceFinisher:
    """``color``: auto (match the input's colour; keep the input's chroma on black-and-white or tinted faces) |
    match (colour matching only) | off. ``max_drift``: landmark shift (fraction of the eye distance) beyond which
    a face's strength is lowered; None: never. ``detector``: finds landmarks on restored crops, for the drift
    report and ``max_drift``, on a track's first face and every ``landmark_interval`` frames after (None: landmark
    shift is not measured). ``template``: the crop template."""

    def __init__(self, *, temporal_strength: float = 0.6, color: str = "auto", max_drift: float | None = None,
                 detector=None, template: str = "gpen", landmark_interval: int = LANDMARK_INTERVAL):
        self.blender = TemporalBlender(strength=temporal_strength)
        self.color = color
        self.monochrome = MonochromeDetector() if color == "auto" else None
        self.limiter = DriftLimiter(max_drift) if max_drift is not None else None
        self.detector = detector
        self.template = template
        self.landmark_interval = landmark_interval
        self._landmarks_measured: dict[int, int] = {}   # track id -> frame of its last landmark measurement

    @classmethod
    def from_options(cls, options, detector=None) -> "FaceFinisher":
        """The finisher a run's :class:`~vidgpen.config.RestoreOptions` ask for; ``detector`` is used only when
        landmark drift is wanted (``--report`` or ``--max-drift``)."""
        wants_landmarks = options.report is not None or options.max_drift is not None
        return cls(temporal_strength=options.temporal_strength, color=options.color, max_drift=options.max_drift,
                   detector=detector if wants_landmarks else None, template=options.template)

    def finish(self, track_id: int, frame_index: int, input_crop: np.ndarray, restored: np.ndarray) -> FinishedFace:
        """input_crop, restored: ``[S, S, 3]`` uint8 RGB aligned crops of one face."""
        last = self._landmarks_measured.get(track_id)
        measure_landmarks = self.detector is not None and (
            last is None or not 0 <= frame_index - last < self.landmark_interval)
        if measure_landmarks:
            self._landmarks_measured[track_id] = frame_index
        drift = measure_drift(input_crop, restored, self.detector if measure_landmarks else None, self.template)
        face = restored
        if self.color != "off":
            face = match_color(face, input_crop)
        monochrome = self.monochrome is not None and self.monochrome.update(track_id, frame_index, input_crop)
        if monochrome:
            face = keep_chroma(face, input_crop)
        face = self.blender.blend(track_id, frame_index, input_crop, face)
        strength = 1.0
        if self.limiter is not None:
            strength = self.limiter.update(track_id, frame_index, drift.landmark_shift)
            if strength < 1.0:
                face = cv2.addWeighted(face, strength, input_crop, 1.0 - strength, 0.0)
        record = {
            "color_shift": round(drift.color_shift, 3),
            "landmark_shift": None if drift.landmark_shift is None else round(drift.landmark_shift, 4),
            "restored_landmarks": None if drift.landmarks is None else np.round(drift.landmarks, 2).tolist(),
            "strength": round(strength, 4),
            "monochrome": bool(monochrome),
        }
        return FinishedFace(face, monochrome, record)

    def reset(self) -> None:
        """Scene cut: every track starts afresh."""
        self.blender.reset()
        self._landmarks_measured.clear()
        if self.monochrome is not None:
            self.monochrome.reset()
        if self.limiter is not None:
            self.limiter.reset()

    def prune(self, frame_index: int) -> None:
        """Forget tracks not seen for a while (bounded memory)."""
        self.blender.prune(frame_index)
        stale = [t for t, f in self._landmarks_measured.items() if frame_index - f > 2 * self.landmark_interval]
        for track_id in stale:
            del self._landmarks_measured[track_id]
        if self.monochrome is not None:
            self.monochrome.prune(frame_index)
        if self.limiter is not None:
            self.limiter.prune(frame_index)
