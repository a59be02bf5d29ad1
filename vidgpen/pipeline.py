"""The streaming restore pipeline: the only place with threads and queues.

    decode -> analyse (scene cuts, detect, select, track + smooth) -> restore (align, GPEN in batches that mix
    faces from several frames, temporal blend, masks) -> paste + encode

Each arrow is a bounded queue, so decoding, detection and encoding overlap the model while only a handful of
frames are in flight whatever the video's length. Every stage runs in its own thread; an exception in any of
them stops all of them and is re-raised in the caller; Ctrl-C (KeyboardInterrupt in the calling thread) stops
them too, and the writer then deletes its temporary file, so nothing is left at the output path.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

from vidgpen.config import RestoreOptions
from vidgpen.faces.align import fit_crop, warp_crop
from vidgpen.faces.detect import FaceDetector, make_detector
from vidgpen.faces.mask import FaceMasker, build_masker
from vidgpen.faces.paste import PasteItem, paste_faces
from vidgpen.faces.report import ReportWriter
from vidgpen.faces.scene import SceneCutDetector
from vidgpen.faces.select import select_faces
from vidgpen.faces.temporal import TemporalBlender
from vidgpen.faces.track import FaceTracker
from vidgpen.faces.types import TrackedFrame
from vidgpen.models.restorer import GPENRestorer, load_restorer, pick_device, pick_dtype
from vidgpen.resume import RestoredFaceStore, add_note, run_journal
from vidgpen.video.frame import VideoFrame
from vidgpen.video.reader import open_video
from vidgpen.video.writer import VideoWriter

log = logging.getLogger(__name__)

QUEUE_FRAMES = 8            # frames waiting between two stages
MAX_PENDING_FRAMES = 16     # frames the restore stage holds while it fills a batch
POLL_SECONDS = 0.1          # how often blocked stages look at the stop flag
STAGES = ("decode", "analyse", "restore", "encode")


class Progress(Protocol):
    """What the pipeline reports to (the CLI draws it; the library default is silent)."""

    def start(self, description: str, total_frames: int | None) -> None: ...

    def update(self, frames: int, faces: int) -> None: ...

    def finish(self) -> None: ...


class _SilentProgress:
    def start(self, description, total_frames):
        pass

    def update(self, frames, faces):
        pass

    def finish(self):
        pass


@dataclass
class RunSummary:
    """What a run did: counts, wall time, busy seconds per stage, and warnings for the user."""

    output: Path
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    warnings: list[str] = field(default_factory=list)
    faces_reused: int = 0  # restored by an earlier, interrupted run and taken from its saved progress


# ---------------------------------------------------------------------------------------------------------------
# The models, built once per run (or once for a whole folder)
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class FaceEngine:
    """The restorer, detector and masker a run uses, with the options that shaped them, and the checkpoint
    file the restorer was loaded from (None when it was handed in; resumed runs then compare its tensors)."""

    options: RestoreOptions
    restorer: GPENRestorer
    detector: FaceDetector
    masker: FaceMasker
    checkpoint: Path | None = None

    @property
    def size(self) -> int:
        return self.restorer.size


def build_engine(options: RestoreOptions, notice: Callable[[str], None] | None = None,
                 restorer: GPENRestorer | None = None) -> FaceEngine:
    """Load the checkpoint (downloading it unless offline), the detector and the masker."""
    checkpoint = None
    if restorer is None:
        # A device or dtype this machine lacks is reported before a checkpoint is read or downloaded.
        pick_dtype(options.dtype, pick_device(options.device))
        if options.weights is not None:
            path = Path(options.weights)
        else:
            from vidgpen.weights import ensure_weights

            path = ensure_weights(options.model or "GPEN-BFR-512", options.weights_dir, offline=options.offline)
        checkpoint = path
        restorer = load_restorer(path, options.device, options.dtype, model=options.model,
                                 batch_size=options.batch_size, compile=options.compile)
    device = str(restorer.device)
    detector = make_detector(options.detector, weights_dir=options.weights_dir, device=device,
                             max_side=options.detect_max_side, notice=notice)
    masker = build_masker(options.mask, weights_dir=options.weights_dir, device=device)
    if notice and getattr(masker, "name", "") == "feathered" and options.mask == "auto":
        notice("no face-parsing weights found; pasting with a feathered face mask "
               "('vidgpen weights download ParseNet' gets the official parsing mask)")
    return FaceEngine(options, restorer, detector, masker, checkpoint)


# ---------------------------------------------------------------------------------------------------------------
# Work items that travel between stages
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _FaceWork:
    track_id: int
    crop_matrix: np.ndarray            # (2, 3) frame -> crop
    box: np.ndarray                    # (4,) steady box for the small-face rule
    input_crop: np.ndarray             # (S, S, 3) uint8 RGB aligned input
    shown: np.ndarray | None = None    # (S, S, 3) uint8 RGB restored and temporally blended
    mask: np.ndarray | None = None     # (S, S) float32


@dataclass
class _FrameWork:
    frame: VideoFrame
    tracked: TrackedFrame
    faces: list[_FaceWork]


_END = object()


class _Stopped(Exception):
    """Raised inside a stage when another stage failed or the run was interrupted."""


class _Stages:
    """Threads, bounded queues and a shared stop flag; the first error wins and is re-raised by ``run``."""

    def __init__(self, summary: RunSummary):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.summary = summary
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self._done: list[threading.Event] = []  # set by each stage when it has finished, however it finished

    def queue(self, size: int = QUEUE_FRAMES) -> queue.Queue:
        return queue.Queue(maxsize=size)

    def put(self, q: queue.Queue, item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue, block: bool = True):
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=POLL_SECONDS) if block else q.get_nowait()
            except queue.Empty:
                if not block:
                    raise
                continue

    def busy(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.summary.stage_seconds[stage] += seconds

    def start(self, name: str, target: Callable[[], None]) -> None:
        done = threading.Event()

        def body():
            try:
                target()
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - every failure must reach the caller
                with self._lock:
                    self.errors.append(exc)
                self.stop.set()
            finally:
                done.set()

        thread = threading.Thread(target=body, name=f"vidgpen-{name}", daemon=True)
        self.threads.append(thread)
        self._done.append(done)
        thread.start()

    def wait(self, on_tick: Callable[[], None]) -> None:
        """Wait for every stage, ticking progress; on Ctrl-C stop them all, wait for them, and re-raise.

        Stages report the end through an Event, not ``Thread.join``: before Python 3.13 a KeyboardInterrupt that
        lands inside ``join(timeout)`` marks the still-running thread as finished, so it would outlive the reader
        and writer it uses (and abort the interpreter at exit, in the middle of a torch call).
        """
        try:
            while not all(done.is_set() for done in self._done):
                for done in self._done:
                    done.wait(POLL_SECONDS)
                    on_tick()
        except BaseException:
            self.stop.set()
            self._finish()
            raise
        self._finish()
        if self.errors:
            raise self.errors[0]

    def _finish(self) -> None:
        """Block until every stage has returned; a second Ctrl-C does not cut this short (it takes one batch)."""
        for done in self._done:
            while True:
                try:
                    if done.wait(POLL_SECONDS):
                        break
                except KeyboardInterrupt:
                    continue
        for thread in self.threads:
            thread.join()


# ---------------------------------------------------------------------------------------------------------------
# Per-face work shared by videos and photos (no threads)
# ---------------------------------------------------------------------------------------------------------------

def crop_face(image: np.ndarray, track_id: int, landmarks: np.ndarray, size: int, box: np.ndarray,
              template: str = "gpen") -> _FaceWork:
    """Align one face: landmarks (5, 2) -> crop matrix and ``[S, S, 3]`` crop onto ``template``; ``box`` drives the
    small-face rule (a smoothed box in videos, so the rule does not switch on and off from frame to frame)."""
    fit = fit_crop(landmarks, size, template)
    return _FaceWork(track_id=track_id, crop_matrix=fit.matrix, box=np.asarray(box, dtype=np.float32),
                     input_crop=warp_crop(image, fit.matrix, size))


def paste_back(image: np.ndarray, faces: list[_FaceWork], options: RestoreOptions) -> np.ndarray:
    if not faces:
        return image
    items = [PasteItem(restored_crop=f.shown, crop_matrix=f.crop_matrix, mask=f.mask, box=f.box,
                       original_crop=f.input_crop) for f in faces]
    return paste_faces(image, items, alpha=options.alpha, mode=options.paste_mode)


def save_face_crops(folder: Path, stem: str, faces: list[_FaceWork]) -> None:
    for face in faces:
        path = folder / f"{stem}_face{face.track_id:03d}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(face.shown, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


# ---------------------------------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameWindow:
    """One piece of a longer run (see :mod:`vidgpen.cluster.segment`): decode from ``read_start`` to ``read_end``
    (seconds from the beginning, like ``start``/``end``; None is open) so that tracks, smoothing and blending warm
    up on the frames around the piece, and write only the frames with ``keep_start_pts <= pts < keep_end_pts``
    (the source's time base; None is open): the video stream alone, with the source's own timestamps."""

    read_start: float | None
    read_end: float | None
    keep_start_pts: int | None
    keep_end_pts: int | None

    def keeps(self, pts: int) -> bool:
        return ((self.keep_start_pts is None or pts >= self.keep_start_pts)
                and (self.keep_end_pts is None or pts < self.keep_end_pts))


def run_video(src: str | Path, dst: str | Path, engine: FaceEngine, progress: Progress | None = None,
              notice: Callable[[str], None] | None = None, window: FrameWindow | None = None) -> RunSummary:
    """Restore every face of ``src`` into ``dst``; see the module docstring for the stages.

    With ``window`` only that piece is written (``options.start``/``end`` are then not used); ``summary.frames``
    counts the frames written.

    The restored faces are kept beside ``dst`` while the run goes (see :mod:`vidgpen.resume`): deleted once
    ``dst`` is written, kept when the run fails or is interrupted (the exception then carries a note saying how
    to continue), and reused instead of running the model when ``engine.options.resume`` is set.
    """
    options = engine.options
    progress = progress or _SilentProgress()
    summary = RunSummary(output=Path(dst))
    stages = _Stages(summary)
    counts = {"frames": 0, "faces": 0}
    started = time.perf_counter()
    start, end = (window.read_start, window.read_end) if window is not None else (options.start, options.end)
    with open_video(src, start, end) as reader:
        writer_size = None
        if options.compare:
            width, height = reader.info.width, reader.info.height
            writer_size = (2 * width, height)
        report = _open_report(options, engine, src)
        store: RestoredFaceStore | None = None
        try:
            with VideoWriter(dst, reader, codec=options.codec, crf=options.crf, preset=options.preset,
                             pix_fmt=options.pix_fmt, overwrite=options.overwrite,
                             drop_incompatible=options.drop_incompatible, frame_size=writer_size,
                             video_only=window is not None) as writer:
                # Opened once the writer has accepted dst, so a command that fails its checks keeps old progress.
                expected_frames = _expected_frames(reader)
                store = RestoredFaceStore.open(dst, run_journal(src, engine, expected_frames),
                                               resume=options.resume, notice=notice)
                # Nothing that can raise may come between starting the stages and waiting for them: the writer
                # and reader must not close under running threads.
                progress.start(Path(src).name, expected_frames)
                decoded, analysed, restored = stages.queue(), stages.queue(), stages.queue()
                stages.start("decode", lambda: _decode(stages, reader, decoded))
                stages.start("analyse", lambda: _analyse(stages, engine, decoded, analysed))
                stages.start("restore", lambda: _restore(stages, engine, analysed, restored, store))
                stages.start("encode", lambda: _encode(stages, engine, restored, writer, report, counts, window))
                stages.wait(lambda: progress.update(counts["frames"], counts["faces"]))
                progress.update(counts["frames"], counts["faces"])
        except BaseException as exc:
            if report is not None:
                report.abort()
            saved = store.keep() if store is not None else None
            if saved is not None:
                add_note(exc, saved.message())
            raise
        finally:
            progress.finish()
        store.discard()
        summary.faces_reused = store.faces_reused
        summary.warnings += store.warnings
        if report is not None:
            report.close()
        if reader.damage is not None:
            summary.warnings.append(reader.damage.message(src))
        for dropped in getattr(writer, "dropped_streams", []):
            summary.warnings.append(f"dropped stream: {dropped}")
    summary.frames, summary.faces = counts["frames"], counts["faces"]
    summary.seconds = time.perf_counter() - started
    return summary


def _expected_frames(reader) -> int | None:
    """Frames the run will write, for the progress bar: the header's count, or the trimmed span times the rate."""
    info, time_range = reader.info, reader.time_range
    if time_range.start is None and time_range.end is None:
        return info.frame_count
    if not info.average_fps:
        return None
    # TimeRange holds container times (start_time included); either side may be open.
    begin = time_range.start if time_range.start is not None else info.start_time
    end = info.start_time + info.duration if info.duration is not None else None
    if time_range.end is not None:
        end = time_range.end if end is None else min(end, time_range.end)
    if end is None:
        return None
    return max(1, round((end - begin) * float(info.average_fps)))


def _open_report(options: RestoreOptions, engine: FaceEngine, src) -> ReportWriter | None:
    if options.report is None:
        return None
    meta = {"input": str(src), "model": engine.restorer.variant, "size": engine.size,
            "detector": getattr(engine.detector, "name", type(engine.detector).__name__),
            "smoothing": options.smoothing, "lookahead": options.lookahead}
    return ReportWriter(options.report, meta=meta)


def _decode(stages: _Stages, reader, out_q: queue.Queue) -> None:
    frames = iter(reader)
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        stages.busy("decode", time.perf_counter() - t0)
        if frame is None:
            break
        stages.put(out_q, frame)
    stages.put(out_q, _END)


def _analyse(stages: _Stages, engine: FaceEngine, in_q: queue.Queue, out_q: queue.Queue) -> None:
    """Scene cuts, detection, selection and tracking; frames wait here until their look-ahead is complete."""
    options = engine.options
    scenes = SceneCutDetector()
    tracker = FaceTracker(lookahead=options.lookahead, smoothing=options.smoothing,
                          detection_interval=options.detect_every)
    waiting: deque[VideoFrame] = deque()
    last_detected = -options.detect_every

    def emit(tracked_frames: list[TrackedFrame]) -> None:
        for tracked in tracked_frames:
            frame = waiting.popleft()
            assert frame.index == tracked.frame_index, (frame.index, tracked.frame_index)
            stages.put(out_q, (frame, tracked))

    # Each frame is analysed once the next one has arrived, so the last frame of the video is known and always
    # searched: with --detect-every N the tracker then interpolates up to the end instead of dropping the tail.
    held = stages.get(in_q)
    while held is not _END:
        following = stages.get(in_q)
        t0 = time.perf_counter()
        frame, image = held, held.image
        cut = scenes.is_cut(image)
        detections = None  # not searched: the tracker interpolates between the frames that were
        if cut or following is _END or (frame.index - last_detected) >= options.detect_every:
            detections = select_faces(engine.detector.detect(image), options.faces, min_face=options.min_face,
                                      max_faces=options.max_faces, frame_size=image.shape[:2])
            last_detected = frame.index
        waiting.append(frame)
        ready = tracker.push(frame.index, frame.time, detections, scene_cut=cut)
        stages.busy("analyse", time.perf_counter() - t0)
        emit(ready)
        held = following
    emit(tracker.flush())
    stages.put(out_q, _END)


def _restore(stages: _Stages, engine: FaceEngine, in_q: queue.Queue, out_q: queue.Queue,
             store: RestoredFaceStore | None = None) -> None:
    """Crop, restore in batches mixing several frames, blend over time, compute masks; frames stay in order.

    Batches are cut where the frame stream says (face count, pending frames, end), never by timing, so a
    resumed run meets the same batches and can take their restored crops from ``store``."""
    options, size = engine.options, engine.size
    blender = TemporalBlender(strength=options.temporal_strength)
    batch_size = engine.restorer.batch_size
    pending: list[_FrameWork] = []
    face_count = 0
    finished = False
    while not finished:
        item = stages.get(in_q)
        if item is _END:
            finished = True
        else:
            frame, tracked = item
            t0 = time.perf_counter()
            faces = [crop_face(frame.image, f.track_id, f.smoothed_landmarks, size, box=f.smoothed_box,
                               template=options.template)
                     for f in tracked.faces]
            stages.busy("restore", time.perf_counter() - t0)
            pending.append(_FrameWork(frame, tracked, faces))
            face_count += len(faces)
        if pending and (finished or face_count >= batch_size or len(pending) >= MAX_PENDING_FRAMES):
            t0 = time.perf_counter()
            _restore_pending(engine, blender, pending, store)
            stages.busy("restore", time.perf_counter() - t0)
            for work in pending:
                stages.put(out_q, work)
            pending, face_count = [], 0
    stages.put(out_q, _END)


def _restore_pending(engine: FaceEngine, blender: TemporalBlender, pending: list[_FrameWork],
                     store: RestoredFaceStore | None = None) -> None:
    faces = [face for work in pending for face in work.faces]
    if not faces:
        return
    crops = np.stack([f.input_crop for f in faces])
    if store is None:
        restored = engine.restorer.restore(crops)
    else:
        keys = [(work.frame.index, face.track_id) for work in pending for face in work.faces]
        restored = store.restore(keys, crops, engine.restorer.restore)
    index = 0
    for work in pending:
        if work.tracked.scene_cut:
            blender.reset()
        for face in work.faces:
            face.shown = blender.blend(face.track_id, work.frame.index, face.input_crop, restored[index])
            index += 1
        blender.prune(work.frame.index)
    masks = engine.masker(np.stack([f.shown for f in faces]))
    for face, mask in zip(faces, masks):
        face.mask = mask


def _encode(stages: _Stages, engine: FaceEngine, in_q: queue.Queue, writer: VideoWriter,
            report: ReportWriter | None, counts: dict, window: FrameWindow | None = None) -> None:
    options = engine.options
    while True:
        work = stages.get(in_q)
        if work is _END:
            break
        if window is not None and not window.keeps(work.frame.pts):
            continue  # a warm-up frame around a piece of a longer run
        t0 = time.perf_counter()
        image = paste_back(work.frame.image, work.faces, options)
        if options.compare:
            image = np.concatenate([work.frame.image, image], axis=1)
        if options.save_faces is not None and work.faces:
            save_face_crops(Path(options.save_faces), f"frame{work.frame.index:06d}", work.faces)
        if report is not None:
            report.write(work.tracked, {f.track_id: f.crop_matrix for f in work.faces})
        writer.write(dataclasses.replace(work.frame, image=image))
        stages.busy("encode", time.perf_counter() - t0)
        counts["faces"] += len(work.faces)
        counts["frames"] += 1


# ---------------------------------------------------------------------------------------------------------------
# Photos
# ---------------------------------------------------------------------------------------------------------------

def restore_photo(image: np.ndarray, engine: FaceEngine) -> tuple[np.ndarray, list[_FaceWork]]:
    """image: ``[H, W, 3]`` uint8 RGB -> the restored image and the faces that were restored."""
    options = engine.options
    detections = select_faces(engine.detector.detect(image), options.faces, min_face=options.min_face,
                              max_faces=options.max_faces, frame_size=image.shape[:2])
    faces = [crop_face(image, i, d.landmarks.astype(np.float64), engine.size, box=d.box, template=options.template)
             for i, d in enumerate(detections)]
    if not faces:
        return image, faces
    restored = engine.restorer.restore(np.stack([f.input_crop for f in faces]))
    masks = engine.masker(restored)
    for face, crop, mask in zip(faces, restored, masks):
        face.shown, face.mask = crop, mask
    return paste_back(image, faces, options), faces
