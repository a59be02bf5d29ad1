"""The streaming restore pipeline: the only place with threads and queues.

    decode -> analyse (scene cuts, detect + optical flow, select, track + smooth) -> restore (align, GPEN in
    batches that mix faces from several frames) -> post (temporal blend, colour, masks)
    [-> upscale (the background, with --upscale)] -> paste + encode

The restore stage runs only the model (and the alignment warps feeding it), so the model is never kept waiting
by the per-face CPU work after it; the resume store's files are written by a "keep" thread beside it.

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
import torch

from vidgpen.config import RestoreOptions
from vidgpen.errors import OptionError
from vidgpen.faces.align import fit_crop, warp_crop
from vidgpen.faces.color import keep_chroma
from vidgpen.faces.detect import FaceDetector, check_detector_weights, make_detector
from vidgpen.faces.finish import FaceFinisher
from vidgpen.faces.flow import DetectAndFollow
from vidgpen.faces.mask import FaceMasker, build_masker, check_masker_weights
from vidgpen.faces.paste import PasteItem, paste_faces, paste_region, scale_for_frame
from vidgpen.faces.report import ReportWriter
from vidgpen.faces.scene import SceneCutDetector
from vidgpen.faces.select import select_faces
from vidgpen.faces.track import FaceTracker
from vidgpen.faces.types import TrackedFace, TrackedFrame
from vidgpen.models.restorer import GPENRestorer, load_restorer, pick_device, pick_dtype, slow_dtype_warning
from vidgpen.models.upscaler import BackgroundUpscaler, LanczosUpscaler
from vidgpen.resume import RestoredFaceStore, SavedBatch, add_note, run_journal
from vidgpen.video.display import DisplayGeometry
from vidgpen.upscale import build_upscaler, describe_auto, face_size, pick_factor
from vidgpen.video.frame import VideoFrame
from vidgpen.video.reader import open_video
from vidgpen.video.writer import VideoWriter

log = logging.getLogger(__name__)

QUEUE_FRAMES = 8            # frames waiting between two stages
MAX_PENDING_FRAMES = 16     # frames the restore stage holds while it fills a batch
POLL_SECONDS = 0.1          # how often blocked stages look at the stop flag
SAVE_QUEUE_BATCHES = 4      # restored batches waiting for the resume store's writer
POST_QUEUE_BATCHES = 2      # model results waiting for blending and masks
STAGES = ("decode", "analyse", "restore", "keep", "post", "encode")  # plus "upscale" in runs with --upscale
AUTO_SAMPLE_FRAMES = 48     # --upscale auto looks at faces in the first frames of a video...
AUTO_SAMPLE_EVERY = 12      # ...detecting on every 12th of them


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
    upscale: int = 1       # the output is this many times the input's size
    left_out: dict[str, int] = field(default_factory=dict)  # detections not restored, per reason (a phrase)
    startup_seconds: float = 0.0  # loading the models before the run (0 when the engine was handed in)
    model: str = ""               # what actually ran: variant, device, dtype ("fp32", "bf16", "fp16")
    device: str = ""
    dtype: str = ""

    def describe_engine(self, engine: "FaceEngine") -> None:
        restorer = engine.restorer
        self.model, self.device = restorer.variant, str(restorer.device)
        self.dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
            restorer.dtype, str(restorer.dtype))


# ---------------------------------------------------------------------------------------------------------------
# The models, built once per run (or once for a whole folder)
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class FaceEngine:
    """The restorer, detector and masker a run uses, with the options that shaped them, the checkpoint
    file the restorer was loaded from (None when it was handed in; resumed runs then compare its tensors), and the
    background upscaler (None unless ``options.upscale`` asks for a bigger picture)."""

    options: RestoreOptions
    restorer: GPENRestorer
    detector: FaceDetector
    masker: FaceMasker
    checkpoint: Path | None = None
    upscaler: BackgroundUpscaler | None = None

    @property
    def size(self) -> int:
        return self.restorer.size

    def with_options(self, options: RestoreOptions, notice: Callable[[str], None] | None = None) -> "FaceEngine":
        """This engine for other run options (same models); the background upscaler is rebuilt when the
        upscale options changed."""
        if options is self.options:
            return self
        upscaler = self.upscaler
        if _upscale_settings(options) != _upscale_settings(self.options):
            upscaler = _build_upscaler(options, str(self.restorer.device), notice)
        return dataclasses.replace(self, options=options, upscaler=upscaler).with_upscaler(notice)

    def with_upscaler(self, notice: Callable[[str], None] | None = None) -> "FaceEngine":
        """This engine with the background upscaler its options ask for (built here if it was handed in without)."""
        if self.options.upscale == 1 or self.upscaler is not None:
            return self
        return dataclasses.replace(self, upscaler=_build_upscaler(self.options, str(self.restorer.device), notice))


def _upscale_settings(options: RestoreOptions) -> tuple:
    return options.upscale, options.bg_upscaler, options.tile, options.weights_dir, options.offline


def _build_upscaler(options: RestoreOptions, device: str,
                    notice: Callable[[str], None] | None) -> BackgroundUpscaler | None:
    if options.upscale == 1:
        return None
    return build_upscaler(options.bg_upscaler, options.upscale, weights_dir=options.weights_dir,
                          offline=options.offline, device=device, tile=options.tile, notice=notice)


def build_engine(options: RestoreOptions, notice: Callable[[str], None] | None = None,
                 restorer: GPENRestorer | None = None) -> FaceEngine:
    """Load the checkpoint (downloading it unless offline), the detector and the masker."""
    from vidgpen.weights import ensure_weights, weights_dir

    # Resolved once, so the checkpoint, the detector and the parser are all looked up in the same folder.
    folder = weights_dir(options.weights_dir)
    # Everything that can be wrong is reported before a model is read, loaded or downloaded: the device and dtype,
    # then the detector's and the parser's weights when they were asked for by name.
    check_detector_weights(options.detector, folder)
    check_masker_weights(options.mask, folder)
    checkpoint = None
    if restorer is None:
        device = pick_device(options.device)
        pick_dtype(options.dtype, device)
        slow = slow_dtype_warning(options.dtype, device)
        if slow and notice:
            notice(slow)
        if options.weights is not None:
            path = Path(options.weights)
        else:
            path = ensure_weights(options.model or "GPEN-BFR-512", folder, offline=options.offline)
        checkpoint = path
        restorer = load_restorer(path, options.device, options.dtype, model=options.model,
                                 batch_size=options.batch_size, compile=options.compile)
    spec = getattr(restorer, "spec", None)  # a stand-in restorer handed in (tests, benches) has none
    if spec is not None and spec.task != "bfr":
        raise OptionError(f"{checkpoint or 'the restorer'} holds {restorer.variant}, which is not a face restoration "
                          "model; use a GPEN-BFR checkpoint")
    device = str(restorer.device)
    detector = make_detector(options.detector, weights_dir=folder, device=device,
                             max_side=options.detect_max_side, notice=notice)
    masker = build_masker(options.mask, weights_dir=folder, device=device)
    if notice and getattr(masker, "name", "") == "feathered" and options.mask == "auto":
        notice("no face-parsing weights found; pasting with a feathered face mask "
               "('vidgpen weights download ParseNet' gets the official parsing mask)")
    upscaler = _build_upscaler(options, device, notice)
    return FaceEngine(options, restorer, detector, masker, checkpoint, upscaler)


# ---------------------------------------------------------------------------------------------------------------
# Work items that travel between stages
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _FaceWork:
    track_id: int
    crop_matrix: np.ndarray            # (2, 3) stored frame pixels -> crop (what the warp and the paste use)
    display_crop_matrix: np.ndarray    # (2, 3) displayed picture pixels -> crop (the similarity; the report's)
    box: np.ndarray                    # (4,) steady box for the small-face rule
    input_crop: np.ndarray             # (S, S, 3) uint8 RGB aligned input
    shown: np.ndarray | None = None    # (S, S, 3) uint8 RGB restored and temporally blended
    mask: np.ndarray | None = None     # (S, S) float32
    monochrome: bool = False           # paste the luminance only, keep the frame's chroma
    record: dict | None = None         # drift and colour facts for --report


@dataclass
class _FrameWork:
    frame: VideoFrame
    tracked: TrackedFrame
    faces: list[_FaceWork]
    background: np.ndarray | None = None   # (H*N, W*N, 3) the upscaled frame the faces go into (--upscale N)
    before: np.ndarray | None = None       # (H*N, W*N, 3) the input enlarged with Lanczos, for --compare


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
              template: str = "gpen", geometry: DisplayGeometry | None = None) -> _FaceWork:
    """Align one face: landmarks (5, 2) -> crop matrix and ``[S, S, 3]`` crop onto ``template``; ``box`` drives the
    small-face rule (a smoothed box in videos, so the rule does not switch on and off from frame to frame).

    ``image`` is a stored frame; ``landmarks`` and ``box`` are in its displayed picture (``geometry``; None: the
    same). The similarity is fitted there, where the face is upright and undistorted, and composed with the
    stored-to-displayed map, so the crop is cut from the stored pixels in one warp and pasted back exactly."""
    fit = fit_crop(landmarks, size, template)
    matrix = fit.matrix if geometry is None else geometry.crop_from_stored(fit.matrix)
    return _FaceWork(track_id=track_id, crop_matrix=matrix, display_crop_matrix=fit.matrix,
                     box=np.asarray(box, dtype=np.float32), input_crop=warp_crop(image, matrix, size))


def paste_back(image: np.ndarray, faces: list[_FaceWork], options: RestoreOptions, factor: int = 1) -> np.ndarray:
    """Paste restored faces into ``image``, a frame ``factor`` times the size the faces were cropped from."""
    if not faces:
        return image
    items = [scale_for_frame(PasteItem(restored_crop=f.shown, crop_matrix=f.crop_matrix, mask=f.mask, box=f.box,
                                       original_crop=f.input_crop), factor) for f in faces]
    pasted = paste_faces(image, items, alpha=options.alpha, mode=options.paste_mode)
    height, width = image.shape[:2]
    for face, item in zip(faces, items):
        region = paste_region(item.crop_matrix, face.shown.shape[0], height, width) if face.monochrome else None
        if region is not None:  # black-and-white film: the frame keeps its own chroma exactly
            x0, y0, x1, y1 = region
            after, before = pasted[y0:y1, x0:x1], image[y0:y1, x0:x1]
            unchanged = cv2.inRange(cv2.absdiff(after, before), (0, 0, 0), (0, 0, 0))
            # where the paste left the frame alone it stays bit-identical (a YCrCb round trip could move it a level)
            np.copyto(after, keep_chroma(after, before), where=(unchanged == 0)[:, :, None])
    return pasted


def enlarge_for_compare(image: np.ndarray, factor: int) -> np.ndarray:
    """The input as ``--compare`` shows it beside an upscaled result: Lanczos to the same size."""
    return image if factor == 1 else LanczosUpscaler().upscale(image, factor)


def upscale_factor(engine: FaceEngine, width: int, height: int, face_sizes: list[float] | None = None,
                   notice: Callable[[str], None] | None = None) -> int:
    """The run's factor: ``options.upscale``, or for "auto" :func:`vidgpen.upscale.pick_factor` over
    ``face_sizes`` (said through ``notice``)."""
    wanted = engine.options.upscale
    if wanted != "auto":
        return int(wanted)
    face_sizes = face_sizes or []
    factor = pick_factor(face_sizes, width, height, engine.size)
    if notice:
        notice(describe_auto(factor, face_sizes, width, height, engine.size))
    return factor


def _sampled_face_sizes(src, engine: FaceEngine) -> list[float]:
    """Sizes (:func:`vidgpen.upscale.face_size`) of the selected faces in the first frames of a video."""
    options = engine.options
    sizes: list[float] = []
    with open_video(src, options.start, options.end) as reader:
        geometry = DisplayGeometry.of(reader.info)  # faces are upright only in the displayed picture
        for frame in reader:
            if frame.index % AUTO_SAMPLE_EVERY == 0:
                view = geometry.view(frame.image)
                detections = select_faces(engine.detector.detect(view), options.faces,
                                          min_face=options.min_face, max_faces=options.max_faces,
                                          frame_size=view.shape[:2])
                sizes += [face_size(d.box) for d in detections]
            if frame.index + 1 >= AUTO_SAMPLE_FRAMES:
                break
    return sizes


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

    Unless ``options.save_progress`` is False, the restored faces are kept beside ``dst`` while the run goes
    (see :mod:`vidgpen.resume`): deleted once ``dst`` is written, kept when the run fails or is interrupted (the
    exception then carries a note saying how to continue), and reused instead of running the model when
    ``engine.options.resume`` is set.
    """
    options = engine.options
    progress = progress or _SilentProgress()
    summary = RunSummary(output=Path(dst))
    summary.describe_engine(engine)
    stages = _Stages(summary)
    counts = {"frames": 0, "faces": 0}
    started = time.perf_counter()
    start, end = (window.read_start, window.read_end) if window is not None else (options.start, options.end)
    with open_video(src, start, end, deinterlace=options.deinterlace) as reader:
        if reader.deinterlace is not None and notice is not None:
            notice(_deinterlace_notice(reader, options.deinterlace))
        factor = 1
        if options.upscale != 1:
            engine = engine.with_upscaler(notice)
            sizes = _sampled_face_sizes(src, engine) if options.upscale == "auto" else None
            factor = upscale_factor(engine, reader.info.width, reader.info.height, sizes, notice)
        summary.upscale = factor
        if factor != 1:
            summary.stage_seconds["upscale"] = 0.0
        width, height = reader.info.width * factor, reader.info.height * factor
        writer_size = (2 * width if options.compare else width, height) if (factor != 1 or options.compare) else None
        geometry = DisplayGeometry.of(reader.info)
        report = open_report(options, engine, src, geometry, reader.deinterlace, factor)
        store: RestoredFaceStore | None = None
        try:
            with VideoWriter(dst, reader, codec=options.codec, crf=options.crf, preset=options.preset,
                             pix_fmt=options.pix_fmt, overwrite=options.overwrite,
                             drop_incompatible=options.drop_incompatible, frame_size=writer_size,
                             video_only=window is not None) as writer:
                # Opened once the writer has accepted dst, so a command that fails its checks keeps old progress.
                expected_frames = _expected_frames(reader)
                if options.save_progress:
                    store = RestoredFaceStore.open(dst, run_journal(src, engine, expected_frames),
                                                   resume=options.resume, notice=notice)
                # Nothing that can raise may come between starting the stages and waiting for them: the writer
                # and reader must not close under running threads.
                progress.start(Path(src).name, expected_frames)
                decoded, analysed, restored = stages.queue(), stages.queue(), stages.queue()
                modelled = stages.queue(POST_QUEUE_BATCHES)
                to_keep = stages.queue(SAVE_QUEUE_BATCHES) if store is not None else None
                stages.start("decode", lambda: _decode(stages, reader, decoded))
                stages.start("analyse", lambda: _analyse(stages, engine, geometry, decoded, analysed))
                stages.start("restore", lambda: _restore(stages, engine, geometry, analysed, modelled, store,
                                                         to_keep))
                if store is not None:
                    stages.start("keep", lambda: _keep(stages, store, to_keep))
                stages.start("post", lambda: _post(stages, engine, modelled, restored))
                to_encode = restored
                if factor != 1:
                    to_encode = stages.queue()
                    stages.start("upscale", lambda: _upscale(stages, engine, factor, restored, to_encode))
                stages.start("encode", lambda: _encode(stages, engine, to_encode, writer, report, counts, factor,
                                                       window))
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
        if store is not None:
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


def _deinterlace_notice(reader, mode: str) -> str:
    info, rate = reader.info, "one frame per field" if reader.deinterlace == "field" else "one frame per frame"
    if mode == "auto":
        said = f"field order {info.field_order}" if info.field_order != "unknown" else "its frames say so"
        return (f"the video is interlaced ({said}); deinterlacing it ({rate}); "
                "--deinterlace off keeps the fields, field-rate doubles the frame rate")
    return f"deinterlacing ({rate}); the output is progressive"


def _expected_frames(reader) -> int | None:
    """Frames the run will write, for the progress bar: the header's count, or the packets' timestamps in the
    trimmed range (see :mod:`vidgpen.video.count`); the span times the rate only when those cannot be read."""
    from vidgpen.video.count import count_frames

    info, time_range = reader.info, reader.time_range
    per_frame = 2 if reader.deinterlace == "field" else 1
    counted = count_frames(info, time_range)
    if counted is not None:
        return counted * per_frame
    if time_range.start is None and time_range.end is None:
        return info.frame_count * per_frame if info.frame_count else info.frame_count
    if not info.average_fps:
        return None
    # TimeRange holds container times (start_time included); either side may be open.
    begin = time_range.start if time_range.start is not None else info.start_time
    end = info.start_time + info.duration if info.duration is not None else None
    if time_range.end is not None:
        end = time_range.end if end is None else min(end, time_range.end)
    if end is None:
        return None
    return max(1, round((end - begin) * float(info.average_fps))) * per_frame


def open_report(options: RestoreOptions, engine: FaceEngine, src, geometry: DisplayGeometry | None = None,
                deinterlace: str | None = None, factor: int = 1) -> ReportWriter | None:
    if options.report is None:
        return None
    # Boxes, landmarks and crop matrices are in the input's displayed picture; "upscale" says how much larger the
    # output is.
    meta = {"input": str(src), "model": engine.restorer.variant, "size": engine.size,
            "detector": getattr(engine.detector, "name", type(engine.detector).__name__),
            "mask": getattr(engine.masker, "name", type(engine.masker).__name__),
            "smoothing": options.smoothing, "lookahead": options.lookahead, "upscale": factor,
            "temporal_strength": options.temporal_strength, "color": options.color, "max_drift": options.max_drift,
            "deinterlace": {"frame": "one frame per frame", "field": "one frame per field"}.get(deinterlace, "off"),
            **(display_meta(geometry) if geometry is not None else {})}
    return ReportWriter(options.report, meta=meta)


def display_meta(geometry: DisplayGeometry) -> dict:
    """What the report says about its coordinates: the displayed picture, and how stored pixels map to it."""
    sar = geometry.sample_aspect_ratio
    return {"coordinates": "displayed picture (after the display rotation and non-square pixels)",
            "display_size": list(geometry.display_size), "stored_size": [geometry.width, geometry.height],
            "rotation": geometry.rotation,
            "sample_aspect_ratio": f"{sar.numerator}/{sar.denominator}" if sar is not None else "1/1",
            "display_from_stored": np.round(geometry.matrix[:2], 10).tolist()}


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


def _analyse(stages: _Stages, engine: FaceEngine, geometry: DisplayGeometry, in_q: queue.Queue,
             out_q: queue.Queue) -> None:
    """Scene cuts, detection (optical flow between detections), selection and tracking; frames wait here until
    their look-ahead is complete.

    Faces are detected and tracked in the displayed picture (``geometry``): upright and with square pixels."""
    options = engine.options
    scenes = SceneCutDetector()

    not_selected = 0

    def detect(shown: np.ndarray) -> list:
        nonlocal not_selected
        found = engine.detector.detect(shown)
        selected = select_faces(found, options.faces, min_face=options.min_face, max_faces=options.max_faces,
                                frame_size=shown.shape[:2])
        not_selected += len(found) - len(selected)
        return selected

    # With --detect-every N > 1 the faces are followed by optical flow in between, so every frame has faces.
    find_faces = DetectAndFollow(detect, options.detect_every)
    tracker = FaceTracker(lookahead=options.lookahead, smoothing=options.smoothing)
    waiting: deque[VideoFrame] = deque()

    def emit(tracked_frames: list[TrackedFrame]) -> None:
        for tracked in tracked_frames:
            frame = waiting.popleft()
            assert frame.index == tracked.frame_index, (frame.index, tracked.frame_index)
            stages.put(out_q, (frame, tracked))

    # Each frame is analysed once the next one has arrived, so the last frame of the video is known and always
    # searched.
    held = stages.get(in_q)
    while held is not _END:
        following = stages.get(in_q)
        t0 = time.perf_counter()
        frame, image = held, held.image
        cut = scenes.is_cut(image)
        detections = find_faces(geometry.view(image), force_detection=cut or following is _END)
        waiting.append(frame)
        ready = tracker.push(frame.index, frame.time, detections, scene_cut=cut)
        stages.busy("analyse", time.perf_counter() - t0)
        emit(ready)
        held = following
    emit(tracker.flush())
    left_out = {
        "not selected (smaller than --min-face, or left out by --faces / --max-faces)": not_selected,
        f"seen in fewer than {tracker.confirm_hits} frames with scores below {tracker.confident_score:g} "
        "(likely false detections)": tracker.left_out_detections,
    }
    stages.summary.left_out.update({reason: count for reason, count in left_out.items() if count})
    stages.put(out_q, _END)


def _restore(stages: _Stages, engine: FaceEngine, geometry: DisplayGeometry, in_q: queue.Queue,
             out_q: queue.Queue, store: RestoredFaceStore | None = None, keep_q: queue.Queue | None = None) -> None:
    """Crop and restore in batches mixing several frames; each batch goes on as (frames, restored crops).

    Batches are cut where the frame stream says (face count, pending frames, end), never by timing, so a
    resumed run meets the same batches and can take their restored crops from ``store``."""
    options, size = engine.options, engine.size
    batch_size = engine.restorer.batch_size
    pending: list[_FrameWork] = []
    face_count = 0
    finished = False
    save = (lambda batch: stages.put(keep_q, batch)) if keep_q is not None else None
    while not finished:
        item = stages.get(in_q)
        if item is _END:
            finished = True
        else:
            frame, tracked = item
            t0 = time.perf_counter()
            faces = [crop_face(frame.image, f.track_id, f.smoothed_landmarks, size, box=f.smoothed_box,
                               template=options.template, geometry=geometry)
                     for f in tracked.faces]
            stages.busy("restore", time.perf_counter() - t0)
            pending.append(_FrameWork(frame, tracked, faces))
            face_count += len(faces)
        if pending and (finished or face_count >= batch_size or len(pending) >= MAX_PENDING_FRAMES):
            t0 = time.perf_counter()
            restored = _run_model(engine, pending, store, save)
            stages.busy("restore", time.perf_counter() - t0)
            stages.put(out_q, (pending, restored))
            pending, face_count = [], 0
    if keep_q is not None:
        stages.put(keep_q, _END)
    stages.put(out_q, _END)


def _keep(stages: _Stages, store: RestoredFaceStore, in_q: queue.Queue) -> None:
    """Write the restored batches into the resume store, off the model's thread. What is queued is written even
    when the run stops (Ctrl-C, a failing stage), so the kept progress holds every batch the model finished."""
    while True:
        try:
            batch = in_q.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if stages.stop.is_set():
                return
            continue
        if batch is _END:
            return
        t0 = time.perf_counter()
        store.save(batch)
        stages.busy("keep", time.perf_counter() - t0)


def _post(stages: _Stages, engine: FaceEngine, in_q: queue.Queue, out_q: queue.Queue) -> None:
    """Blend each restored face with its track's previous one and compute the masks, batch by batch, in order."""
    finisher = FaceFinisher.from_options(engine.options, engine.detector)
    while True:
        item = stages.get(in_q)
        if item is _END:
            break
        pending, restored = item
        t0 = time.perf_counter()
        _finish_faces(engine, finisher, pending, restored)
        stages.busy("post", time.perf_counter() - t0)
        for work in pending:
            stages.put(out_q, work)
    stages.put(out_q, _END)


def _run_model(engine: FaceEngine, pending: list[_FrameWork], store: RestoredFaceStore | None = None,
               save: Callable[[SavedBatch], None] | None = None) -> np.ndarray | None:
    """The restored crops ``[N, S, S, 3]`` of every face of ``pending``, in order (None without faces)."""
    faces = [face for work in pending for face in work.faces]
    if not faces:
        return None
    crops = np.stack([f.input_crop for f in faces])
    if store is None:
        return engine.restorer.restore(crops)
    keys = [(work.frame.index, face.track_id) for work in pending for face in work.faces]
    return store.restore(keys, crops, engine.restorer.restore, save=save)


def _finish_faces(engine: FaceEngine, finisher: FaceFinisher, pending: list[_FrameWork],
                  restored: np.ndarray | None) -> None:
    """Blend, colour-match and check each restored face (:class:`FaceFinisher`), then compute the masks."""
    faces = [face for work in pending for face in work.faces]
    if restored is None:
        return
    index = 0
    for work in pending:
        if work.tracked.scene_cut:
            finisher.reset()
        for face in work.faces:
            finished = finisher.finish(face.track_id, work.frame.index, face.input_crop, restored[index])
            face.shown, face.monochrome, face.record = finished.shown, finished.monochrome, finished.record
            index += 1
        finisher.prune(work.frame.index)
    masks = engine.masker(np.stack([f.shown for f in faces]))
    for face, mask in zip(faces, masks):
        face.mask = mask


def _upscale(stages: _Stages, engine: FaceEngine, factor: int, in_q: queue.Queue, out_q: queue.Queue) -> None:
    """The background at ``factor`` times the size (and the Lanczos input for --compare), in its own thread so a
    learned upscaler runs while the restore stage runs the face model."""
    compare = engine.options.compare
    while True:
        work = stages.get(in_q)
        if work is _END:
            break
        t0 = time.perf_counter()
        work.background = engine.upscaler.upscale(work.frame.image, factor)
        if compare:
            lanczos = engine.upscaler.name == "lanczos"
            work.before = work.background if lanczos else enlarge_for_compare(work.frame.image, factor)
        stages.busy("upscale", time.perf_counter() - t0)
        stages.put(out_q, work)
    stages.put(out_q, _END)


def _encode(stages: _Stages, engine: FaceEngine, in_q: queue.Queue, writer: VideoWriter,
            report: ReportWriter | None, counts: dict, factor: int = 1, window: FrameWindow | None = None) -> None:
    options = engine.options
    while True:
        work = stages.get(in_q)
        if work is _END:
            break
        if window is not None and not window.keeps(work.frame.pts):
            continue  # a warm-up frame around a piece of a longer run
        t0 = time.perf_counter()
        background = work.frame.image if work.background is None else work.background
        image = paste_back(background, work.faces, options, factor)
        if options.compare:
            before = work.frame.image if work.before is None else work.before
            image = np.concatenate([before, image], axis=1)
        if options.save_faces is not None and work.faces:
            save_face_crops(Path(options.save_faces), f"frame{work.frame.index:06d}", work.faces)
        if report is not None:
            report.write(work.tracked, {f.track_id: f.display_crop_matrix for f in work.faces},
                         {f.track_id: f.record for f in work.faces if f.record})
        # An enlarged picture has no high-bit-depth twin: the writer widens its 8 bits.
        high = work.frame.image_high if factor == 1 else None
        writer.write(dataclasses.replace(work.frame, image=image, image_high=high))
        stages.busy("encode", time.perf_counter() - t0)
        counts["faces"] += len(work.faces)
        counts["frames"] += 1


# ---------------------------------------------------------------------------------------------------------------
# Photos
# ---------------------------------------------------------------------------------------------------------------

def restore_photo(image: np.ndarray, engine: FaceEngine,
                  report: ReportWriter | None = None,
                  notice: Callable[[str], None] | None = None) -> tuple[np.ndarray, list[_FaceWork]]:
    """image: ``[H, W, 3]`` uint8 RGB -> the restored image (``options.upscale`` times the size) and the faces that
    were restored.

    ``report`` receives the photo as frame 0: each face's box, score, landmarks and crop matrix."""
    options = engine.options
    detections = select_faces(engine.detector.detect(image), options.faces, min_face=options.min_face,
                              max_faces=options.max_faces, frame_size=image.shape[:2])
    factor = 1
    if options.upscale != 1:
        engine = engine.with_upscaler(notice)
        factor = upscale_factor(engine, image.shape[1], image.shape[0], [face_size(d.box) for d in detections],
                                notice)
    background = image if factor == 1 else engine.upscaler.upscale(image, factor)
    faces = [crop_face(image, i, d.landmarks.astype(np.float64), engine.size, box=d.box, template=options.template)
             for i, d in enumerate(detections)]
    if not faces:
        if report is not None:
            report.write(_photo_frame(detections), {})
        return background, faces
    restored = engine.restorer.restore(np.stack([f.input_crop for f in faces]))
    finisher = FaceFinisher.from_options(options.replace(temporal_strength=0.0), engine.detector)
    for face, crop in zip(faces, restored):
        finished = finisher.finish(face.track_id, 0, face.input_crop, crop)
        face.shown, face.monochrome, face.record = finished.shown, finished.monochrome, finished.record
    masks = engine.masker(np.stack([f.shown for f in faces]))
    for face, mask in zip(faces, masks):
        face.mask = mask
    if report is not None:
        report.write(_photo_frame(detections), {f.track_id: f.crop_matrix for f in faces},
                     {f.track_id: f.record for f in faces if f.record})
    return paste_back(background, faces, options, factor), faces


def _photo_frame(detections) -> TrackedFrame:
    """A photo's faces as frame 0 of a report (each detection its own one-frame track)."""
    tracked = tuple(TrackedFace(track_id=i, score=d.score, box=d.box, raw_landmarks=d.landmarks,
                                smoothed_landmarks=d.landmarks.astype(np.float64), smoothed_box=d.box)
                    for i, d in enumerate(detections))
    return TrackedFrame(frame_index=0, pts_seconds=0.0, scene_cut=False, faces=tracked)
