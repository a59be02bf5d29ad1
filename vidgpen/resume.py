"""Keep the faces a video run has restored, so an interrupted run can be finished with ``--resume``.

Everything in a run except the GPEN model is cheap and deterministic: decoding, scene cuts, detection, tracking,
smoothing, temporal blending, masks, paste-back and the encoder give the same result when the same input is run
again with the same options. So a run keeps only the model's output: every batch of restored crops is written,
as it is computed, to a hidden folder beside the destination::

    <dst.parent>/.<dst.name>.vidgpen-resume/
        journal.json          what the run was: input file, every option that changes pixels, model, dtype
        batch-000000.npz      one model call: its faces' (frame_index, track_id), a digest of the input crops,
        batch-000001.npz      and the restored crops as lossless PNG (fast compression level 1)
        ...

A resumed run replays the whole pipeline from the first frame and takes each batch from the folder instead of
running the model, so its output is identical to an uninterrupted run's. Batches are stored whole because the
model's result can depend on which faces share a forward pass; a stored batch is used only when the new run's
batch has the same faces and byte-identical input crops. Each file is written under a temporary name and renamed,
so a batch is either complete or absent, whenever the run is stopped.

The folder is deleted when the output has been written; after a failure or Ctrl-C it stays (unless it is empty).

Keeping progress must not slow the model: the pipeline hands each batch to a writer thread (``restore(...,
save=...)``), draining it before the store is kept or discarded, and that thread encodes the crops as PNG at the
fastest compression level (lossless, so a resumed run gets the same bytes back). On a restored 512 face that is
about 12 ms and 210 KB instead of 786 KB raw: roughly 23 GB per hour of 30 fps video with one face at 512, freed
when the output is written. Batches cannot be pruned as the output advances: the encoder's bytes depend on every
earlier frame, so a resumed run replays from the first frame and needs every batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from vidgpen.errors import OptionError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: raw crops (1 stored PNGs)
JOURNAL_NAME = "journal.json"
BATCH_PATTERN = "batch-*.npz"
TEMP_SUFFIX = ".partial"
HEAD_BYTES = 1 << 20  # checkpoint bytes hashed at each end: enough to tell two GPEN files apart, fast for 1 GB ones

# RestoreOptions fields whose value changes the output's pixels or streams. The model's device, dtype and batch
# size go into the journal as the restorer actually resolved them ("auto" can resolve differently elsewhere).
PIXEL_OPTIONS = (
    "model", "compile", "detect_max_side", "detect_every", "faces", "min_face", "max_faces", "template", "smoothing",
    "lookahead", "temporal_strength", "alpha", "paste_mode", "color", "max_drift", "deinterlace", "start", "end",
    "codec", "crf", "preset", "pix_fmt", "drop_incompatible", "compare", "upscale", "bg_upscaler", "tile",
)

FaceKey = tuple[int, int]  # (frame_index, track_id)


def store_folder(dst: str | Path) -> Path:
    """Where the restored faces of a run writing ``dst`` are kept."""
    dst = Path(dst)
    return dst.parent / f".{dst.name}.vidgpen-resume"


# ---------------------------------------------------------------------------------------------------------------
# The journal: what a store was made from
# ---------------------------------------------------------------------------------------------------------------

def file_identity(path: str | Path) -> dict[str, Any]:
    """Resolved path, size and modification time of an input file."""
    path = Path(path).resolve()
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def checkpoint_identity(path: str | Path) -> dict[str, Any]:
    """Size and sha256 of the first and last MiB of a checkpoint: survives copying and moving, not editing."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(HEAD_BYTES))
        if size > HEAD_BYTES:
            handle.seek(max(HEAD_BYTES, size - HEAD_BYTES))
            digest.update(handle.read(HEAD_BYTES))
    return {"size": size, "sha256_ends": digest.hexdigest()}


def model_identity(model) -> dict[str, Any]:
    """sha256 over every parameter and buffer of a torch module (for a restorer that came without a file)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return {"sha256_tensors": digest.hexdigest()}


def restorer_identity(restorer, checkpoint: str | Path | None) -> dict[str, Any]:
    """The restorer as resolved: variant, weights, device type, dtype and batch size (each can change pixels)."""
    return {
        "variant": restorer.variant,
        "weights": checkpoint_identity(checkpoint) if checkpoint is not None else model_identity(restorer.model),
        "device": restorer.device.type,
        "dtype": str(restorer.dtype).removeprefix("torch."),
        "batch_size": restorer.batch_size,
    }


def run_journal(src: str | Path, engine, expected_frames: int | None) -> dict[str, Any]:
    """The journal of a run: everything that decides its output, in JSON types.

    ``engine`` is the run's :class:`~vidgpen.pipeline.FaceEngine` (its options, restorer, detector, masker and
    the checkpoint file it was loaded from, if any). ``expected_frames`` is only reported, never compared.
    """
    import torch

    from vidgpen import __version__
    from vidgpen.video.codecs import encoder_threads

    journal = {
        "format": FORMAT_VERSION,
        "vidgpen": __version__,
        "torch": torch.__version__,
        "input": file_identity(src),
        "options": {name: getattr(engine.options, name) for name in PIXEL_OPTIONS},
        "restorer": restorer_identity(engine.restorer, getattr(engine, "checkpoint", None)),
        "detector": getattr(engine.detector, "name", type(engine.detector).__name__),
        "mask": getattr(engine.masker, "name", type(engine.masker).__name__),
        "encoder_threads": encoder_threads(),  # x264's bytes depend on it
        "expected_frames": expected_frames,
    }
    return json.loads(json.dumps(journal, default=str))  # the form it has after a round trip through the file


def journal_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of what differs between two journals (nested option names as ``options.crf``)."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key == "expected_frames":
            continue  # derived from the input
        old, new = saved.get(key), current.get(key)
        if key == "options" and isinstance(old, dict) and isinstance(new, dict):
            differences += [name for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
        elif old != new:
            differences.append(key)
    return differences


def _write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    temp = path.with_name(path.name + TEMP_SUFFIX)
    try:
        with open(temp, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------------------
# What a store holds, for messages
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SavedProgress:
    """The restored faces kept in a store folder."""

    folder: Path
    batches: int
    faces: int
    frames_done: int            # frames up to the last one with a stored face
    expected_frames: int | None

    def message(self) -> str:
        """One line telling the user how to continue."""
        of_total = f" of {self.expected_frames}" if self.expected_frames else ""
        return (f"stopped after restoring {self.faces} face(s) in the first {self.frames_done}{of_total} frame(s); "
                f"run the same command with --resume to continue (progress kept in {self.folder})")


def saved_progress(folder: str | Path) -> SavedProgress | None:
    """What the store folder holds, or None when it holds no complete batch."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    batches = faces = frames_done = 0
    for path in sorted(folder.glob(BATCH_PATTERN)):
        keys = _read_keys(path)
        if keys is None:
            continue
        batches += 1
        faces += len(keys)
        if len(keys):
            frames_done = max(frames_done, int(keys[:, 0].max()) + 1)
    if not batches:
        return None
    try:
        expected = json.loads((folder / JOURNAL_NAME).read_text()).get("expected_frames")
    except (OSError, ValueError, AttributeError):
        expected = None
    return SavedProgress(folder, batches, faces, frames_done, expected if isinstance(expected, int) else None)


def _read_keys(path: Path) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data["keys"], dtype=np.int64).reshape(-1, 2)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


# ---------------------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------------------

def crops_digest(crops: np.ndarray) -> str:
    """sha256 of a ``[N, S, S, 3]`` uint8 crop stack, shape included."""
    crops = np.ascontiguousarray(crops)
    digest = hashlib.sha256(repr((crops.dtype.str, crops.shape)).encode())
    digest.update(crops.data)
    return digest.hexdigest()


def _encode_crop(crop: np.ndarray) -> np.ndarray:
    """A ``[S, S, 3]`` uint8 crop as PNG bytes (a 1-D uint8 array). The channels are stored in whatever order they
    come and come back the same (OpenCV swaps them on the way in and back on the way out)."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(crop), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"could not encode a {crop.shape} crop as PNG")
    return encoded.reshape(-1)


def _decode_crop(encoded: np.ndarray) -> np.ndarray | None:
    return cv2.imdecode(np.asarray(encoded, dtype=np.uint8), cv2.IMREAD_UNCHANGED)


@dataclass(frozen=True)
class SavedBatch:
    """One model call's result on its way to the store folder (see :meth:`RestoredFaceStore.save`)."""

    path: Path
    keys: np.ndarray        # (N, 2) int64 frame_index, track_id
    input_sha256: str
    restored: np.ndarray    # (N, S, S, 3) uint8, a copy the pipeline does not touch


class RestoredFaceStore:
    """The restored crops of one video run, one file per model call, numbered in call order.

    Made by :meth:`open`; the restore stage calls :meth:`restore` for every batch (in one thread); the caller
    calls :meth:`discard` once the output is written, or :meth:`keep` when the run failed.
    """

    def __init__(self, folder: Path, journal: dict[str, Any]):
        self.folder = folder
        self.journal = journal
        self.faces_reused = 0
        self.faces_saved = 0
        self.batches_redone = 0              # saved batches that did not match this run (or were damaged)
        self.write_error: str | None = None  # why progress could not be kept, if it could not
        self._next_batch = 0

    @classmethod
    def open(cls, dst: str | Path, journal: dict[str, Any], *, resume: bool,
             notice: Callable[[str], None] | None = None) -> "RestoredFaceStore":
        """The store for a run writing ``dst``: the saved one when ``resume`` and it matches ``journal``, else new.

        Raises OptionError when ``resume`` is asked for and the saved progress was made from another input or
        other options. Without ``resume`` saved progress is discarded (with a notice).
        """
        notice = notice or (lambda message: None)
        store = cls(store_folder(dst), journal)
        if store.folder.is_dir():
            saved = store._read_journal()
            if resume and saved is not None:
                changed = journal_differences(saved, journal)
                if changed:
                    raise OptionError(f"saved progress in {store.folder} was made with other input or options "
                                      f"(changed: {', '.join(changed)}); run without --resume to start over")
                store._remove_files(store.folder.glob("*" + TEMP_SUFFIX))
                progress = saved_progress(store.folder)
                faces = progress.faces if progress else 0
                notice(f"resuming: {faces} face(s) restored earlier are reused from {store.folder}")
                return store
            if resume:
                notice(f"the saved progress in {store.folder} cannot be read; starting over")
            else:
                notice(f"discarding the saved progress of an earlier run in {store.folder} (pass --resume to "
                       "continue it instead)")
            store.discard()
        elif resume:
            notice(f"no saved progress for {Path(dst).name} (looked for {store.folder}); starting from the beginning")
        store._create()
        return store

    # -- the restore stage -----------------------------------------------------------------------------------
    def restore(self, keys: list[FaceKey], crops: np.ndarray, model: Callable[[np.ndarray], np.ndarray],
                save: Callable[[SavedBatch], None] | None = None) -> np.ndarray:
        """The restored crops of the next batch: from the store when an earlier run saved this very batch, else
        ``model(crops)``, which are then saved: by ``save`` (the pipeline passes its writer thread's queue; it must
        call :meth:`save` later), else here and now.

        keys: the batch's faces as (frame_index, track_id); crops: ``[N, S, S, 3]`` uint8 RGB aligned inputs.
        Returns ``[N, S, S, 3]`` uint8 RGB.
        """
        number = self._next_batch
        self._next_batch += 1
        key_array = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
        if len(key_array) != len(crops):
            raise ValueError(f"{len(key_array)} keys for {len(crops)} crops")
        digest = crops_digest(crops)
        path = self._batch_path(number)
        restored = self._load(path, key_array, digest, crops.shape) if path.exists() else None
        if restored is not None:
            self.faces_reused += len(restored)
            return restored
        restored = model(crops)
        (save or self.save)(SavedBatch(path, key_array, digest, np.array(restored, dtype=np.uint8, copy=True)))
        return restored

    def _load(self, path: Path, keys: np.ndarray, digest: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The saved batch if it holds exactly these faces with these input crops, else None (then redone)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                same = (np.array_equal(data["keys"], keys) and str(data["input_sha256"]) == digest
                        and int(data["count"]) == len(keys))
                crops = [_decode_crop(data[f"face{i:04d}"]) for i in range(len(keys))] if same else []
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            same, crops = False, []
        if not same or any(c is None or c.dtype != np.uint8 or c.shape != shape[1:] for c in crops):
            self.batches_redone += 1
            return None
        return np.stack(crops)

    def save(self, batch: SavedBatch) -> None:
        """Write one batch (atomically: complete or absent). Called in the restore stage or in a writer thread,
        never in both for one store."""
        if self.write_error is not None:
            return
        faces = {f"face{i:04d}": _encode_crop(crop) for i, crop in enumerate(batch.restored)}
        try:
            _write_atomically(batch.path, lambda handle: np.savez(
                handle, keys=batch.keys, input_sha256=np.array(batch.input_sha256), count=np.array(len(batch.keys)),
                **faces))
        except OSError as exc:
            # Keeping progress is a convenience: a full disk here must not stop the run itself.
            self.write_error = str(exc.strerror or exc)
            return
        self.faces_saved += len(batch.keys)

    @property
    def warnings(self) -> list[str]:
        """What the user should know about the store after the run."""
        warnings = []
        if self.batches_redone:
            warnings.append(f"{self.batches_redone} saved batch(es) in {self.folder} did not match this run's faces "
                            "or could not be read; those faces were restored again")
        if self.write_error is not None:
            warnings.append(f"could not keep progress in {self.folder} ({self.write_error}); "
                            "the run could not have been resumed had it stopped")
        return warnings

    # -- life cycle ------------------------------------------------------------------------------------------
    def discard(self) -> None:
        """Delete the folder and the files vidgpen put in it (anything else is left, with the folder).

        Never raises for a file system error: it runs after the output is written, or while another error
        is on its way up."""
        if not self.folder.is_dir():
            return
        try:
            self._remove_files([self.folder / JOURNAL_NAME, *self.folder.glob(BATCH_PATTERN),
                                *self.folder.glob("*" + TEMP_SUFFIX)])
            self.folder.rmdir()
        except OSError as exc:
            log.warning("could not delete %s (%s); remove it by hand", self.folder, exc.strerror or exc)

    def keep(self) -> SavedProgress | None:
        """After a failed run: what can be resumed, or None (then the empty folder is removed)."""
        progress = saved_progress(self.folder)
        if progress is None:
            self.discard()
        return progress

    def _create(self) -> None:
        try:
            self.folder.mkdir(exist_ok=True)
            _write_atomically(self.folder / JOURNAL_NAME,
                              lambda handle: handle.write(json.dumps(self.journal, indent=1).encode()))
        except OSError as exc:
            self.write_error = str(exc.strerror or exc)

    def _read_journal(self) -> dict[str, Any] | None:
        try:
            journal = json.loads((self.folder / JOURNAL_NAME).read_text())
        except (OSError, ValueError):
            return None
        return journal if isinstance(journal, dict) else None

    def _batch_path(self, number: int) -> Path:
        return self.folder / f"batch-{number:06d}.npz"

    @staticmethod
    def _remove_files(paths: Iterable[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)


def add_note(exc: BaseException, note: str) -> None:
    """Attach a line to an exception on its way up (PEP 678; shown in tracebacks, printed by the CLI)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]
