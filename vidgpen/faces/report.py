"""The ``--report FILE.json`` writer: per frame and track, what the detector saw and what the crop was made from.

The file is one JSON object, streamed frame by frame so nothing grows with the video length, and written to a
temporary file beside the target that is renamed into place only when the report is complete:

    {"format": "vidgpen-face-report", "version": 1, "meta": {...},
     "frames": [
       {"frame": 0, "pts": 0.0, "scene_cut": false,
        "faces": [{"track_id": 0, "score": 0.998, "bridged": false,
                   "box": [x1, y1, x2, y2], "smoothed_box": [x1, y1, x2, y2],
                   "raw_landmarks": [[x, y] * 5] or null (bridged by interpolation),
                   "smoothed_landmarks": [[x, y] * 5],
                   "crop_matrix": [[a, b, c], [d, e, f]],
                   "color_shift": 1.8, "landmark_shift": 0.031 or null, "restored_landmarks": [[x, y] * 5] or null,
                   "strength": 1.0, "monochrome": false}]},
       ...]}

Coordinates are pixels of the *displayed* picture, what a player shows: for a video with a display rotation (phone
clips) or non-square pixels (DV, DVD, tape captures) that differs from the stored frames, and ``meta`` then says
how (``"coordinates"``, ``"display_size"``, ``"rotation"``, ``"sample_aspect_ratio"``, and ``"display_from_stored"``,
the 2x3 affine from stored to displayed pixels). ``crop_matrix`` maps displayed-picture pixels to aligned-crop
pixels (a similarity; compose it with ``display_from_stored`` to cut the crop from a stored frame with
``cv2.warpAffine``). The last five fields come from a restore run (:mod:`vidgpen.faces.finish`): how far the raw
restoration moved from the input (Lab colour shift of the inner face; landmark shift as a fraction of the eye
distance, from the detector run on the restored and the input crop, on a track's first face and every 4th frame
after, else null; the restored landmarks in crop pixels), the factor ``--max-drift`` put on ``--alpha``, and
whether the face was treated as black-and-white film.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vidgpen.errors import OutputError
from vidgpen.faces.types import TrackedFrame

REPORT_FORMAT = "vidgpen-face-report"
REPORT_VERSION = 1
_DECIMALS = 4  # 1e-4 px: far below any visible motion, keeps the file compact


def _numbers(array: np.ndarray | None, decimals: int = _DECIMALS) -> Any:
    if array is None:
        return None
    return np.round(np.asarray(array, dtype=np.float64), decimals).tolist()


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


class ReportWriter:
    """Streams a face report to ``path``; use as a context manager, or call :meth:`close` / :meth:`abort`.

    crop_matrix: computes a face's (2, 3) crop matrix from its (5, 2) smoothed landmarks, used when :meth:`write` is
        not given the matrices (e.g. ``functools.partial(vidgpen.faces.align.crop_matrix, size=512)``).
    meta: JSON-serialisable run information stored under "meta" (input name, detector, model size...).
    On an exception inside the ``with`` block, or on :meth:`abort`, the partial file is removed and ``path`` is left
    untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        crop_matrix: Callable[[np.ndarray], np.ndarray] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self._crop_matrix = crop_matrix
        self._last_frame_index: int | None = None
        self._frame_count = 0
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            raise OutputError(f"cannot write the report {self.path}: folder {folder} does not exist")
        try:
            descriptor, temp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=folder)
        except OSError as exc:
            raise OutputError(f"cannot write the report into {folder}: {exc.strerror}") from None
        self._temp_path = Path(temp_name)
        self._file = os.fdopen(descriptor, "w", encoding="utf-8")
        header = {"format": REPORT_FORMAT, "version": REPORT_VERSION, "meta": dict(meta or {})}
        # Write the header without its closing brace, then stream the frames array.
        self._file.write(json.dumps(header)[:-1] + ', "frames": [\n')

    def write(self, frame: TrackedFrame, crop_matrices: Mapping[int, np.ndarray] | None = None,
              extras: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """Append one frame. crop_matrices: track id -> (2, 3) matrix; computed with ``crop_matrix`` when omitted.
        extras: track id -> more JSON fields for that face (e.g. the restoration's drift)."""
        if self._file is None:
            raise RuntimeError("report already closed")
        if self._last_frame_index is not None and frame.frame_index <= self._last_frame_index:
            raise ValueError(f"frames must be written in order: {frame.frame_index} after {self._last_frame_index}")
        faces = []
        for face in frame.faces:
            if crop_matrices is not None and face.track_id in crop_matrices:
                matrix = crop_matrices[face.track_id]
            elif self._crop_matrix is not None:
                matrix = self._crop_matrix(face.smoothed_landmarks)
            else:
                raise ValueError(f"no crop matrix for track {face.track_id}: pass crop_matrices or crop_matrix=")
            faces.append({
                "track_id": int(face.track_id),
                "score": _finite_or_none(face.score),
                "bridged": face.raw_landmarks is None,
                "box": _numbers(face.box),
                "smoothed_box": _numbers(face.smoothed_box),
                "raw_landmarks": _numbers(face.raw_landmarks),
                "smoothed_landmarks": _numbers(face.smoothed_landmarks),
                "crop_matrix": _numbers(np.asarray(matrix).reshape(2, 3), 8),
                **(extras or {}).get(face.track_id, {}),
            })
        record = {
            "frame": int(frame.frame_index),
            "pts": _finite_or_none(frame.pts_seconds),
            "scene_cut": bool(frame.scene_cut),
            "faces": faces,
        }
        separator = ",\n" if self._frame_count else ""
        self._file.write(separator + json.dumps(record, separators=(",", ":")))
        self._frame_count += 1
        self._last_frame_index = frame.frame_index

    def close(self) -> None:
        """Finish the JSON and move it into place atomically."""
        if self._file is None:
            return
        try:
            self._file.write("\n]}\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            # mkstemp creates the file private (0600); give it the permissions a normal new file would have.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(self._file.fileno(), 0o666 & ~umask)
            self._file.close()
            self._file = None
            os.replace(self._temp_path, self.path)
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write the report {self.path}: {exc.strerror}") from None

    def abort(self) -> None:
        """Drop the partial report; ``path`` is not touched."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._temp_path.unlink(missing_ok=True)

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def load_report(path: str | os.PathLike) -> dict:
    """Read a report written by :class:`ReportWriter` (plain ``json.load`` plus a format check)."""
    with open(path, encoding="utf-8") as handle:
        report = json.load(handle)
    if report.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path} is not a vidgpen face report")
    return report


def landmark_tracks(report: Mapping[str, Any], key: str = "smoothed_landmarks") -> dict[int, dict[str, np.ndarray]]:
    """Per track, the frame indices and landmarks of a loaded report, for jitter measurements.

    key: "smoothed_landmarks" or "raw_landmarks" (bridged frames, which have no raw landmarks, are skipped then).
    Returns {track_id: {"frames": (T,) int64, "landmarks": (T, 5, 2) float64}}.
    """
    collected: dict[int, tuple[list[int], list]] = {}
    for frame in report["frames"]:
        for face in frame["faces"]:
            if face[key] is None:
                continue
            frames, points = collected.setdefault(face["track_id"], ([], []))
            frames.append(frame["frame"])
            points.append(face[key])
    return {
        track_id: {"frames": np.asarray(frames, dtype=np.int64), "landmarks": np.asarray(points, dtype=np.float64)}
        for track_id, (frames, points) in collected.items()
    }
