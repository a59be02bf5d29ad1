"""Which of a frame's detected faces to restore (``--faces``, ``--min-face``, ``--max-faces``)."""

from __future__ import annotations

import math

import numpy as np

from vidgpen.errors import OptionError
from vidgpen.faces.types import Detection

SELECTION_MODES = ("all", "largest", "center")


def select_faces(
    detections: list[Detection],
    mode: str = "all",
    *,
    min_face: float = 0.0,
    max_faces: int | None = None,
    frame_size: tuple[int, int] | None = None,
) -> list[Detection]:
    """Filter and rank one frame's detections.

    detections: the detector's output for one frame.
    mode: "all" keeps every face, largest first; "largest" keeps the one with the largest box; "center" keeps the one
        whose box centre is nearest the frame centre (needs ``frame_size``).
    min_face: faces with fewer pixels than this between the eyes (landmarks 0 and 1) are dropped first; this removes
        tiny false detections and faces too small to restore.
    max_faces: keep at most this many (after ranking); None for no limit.
    frame_size: (height, width) of the frame in pixels.
    Returns the kept detections, best first.
    """
    if mode not in SELECTION_MODES:
        raise OptionError(f"unknown --faces mode {mode!r}; use one of {', '.join(SELECTION_MODES)}")
    if min_face < 0 or not math.isfinite(min_face):
        raise OptionError(f"--min-face must be a number of pixels >= 0, got {min_face}")
    if max_faces is not None and max_faces < 1:
        raise OptionError(f"--max-faces must be >= 1, got {max_faces}")
    kept = [d for d in detections if d.eye_distance >= min_face]
    if mode == "center":
        if frame_size is None:
            raise ValueError("select_faces(mode='center') needs frame_size=(height, width)")
        center = np.array([frame_size[1] / 2.0, frame_size[0] / 2.0])

        def rank(d: Detection) -> tuple[float, float]:
            box_center = (d.box[:2].astype(np.float64) + d.box[2:].astype(np.float64)) / 2.0
            return float(np.linalg.norm(box_center - center)), -d.score
    else:

        def rank(d: Detection) -> tuple[float, float]:
            return -d.box_area, -d.score

    kept.sort(key=rank)
    limit = 1 if mode in ("largest", "center") else len(kept)
    if max_faces is not None:
        limit = min(limit, max_faces)
    return kept[:limit]
