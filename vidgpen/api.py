"""The library API the CLI is a thin layer over: restore a video, a photo, or a folder of both."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from vidgpen.config import RestoreOptions
from vidgpen.errors import InputError, OptionError, OutputError, VidgpenError
from vidgpen.pipeline import (FaceEngine, Progress, RunSummary, build_engine, enlarge_for_compare, open_report,
                              restore_photo, run_video, save_face_crops)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                    ".wmv", ".flv", ".3gp", ".ogv", ".mxf")


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _options(options: RestoreOptions | None, kwargs) -> RestoreOptions:
    if options is None:
        return RestoreOptions.from_kwargs(**kwargs)
    return options.replace(**kwargs) if kwargs else options


def restore_video(src: str | Path, dst: str | Path, *, options: RestoreOptions | None = None,
                  engine: FaceEngine | None = None, progress: Progress | None = None,
                  notice: Callable[[str], None] | None = None, **kwargs) -> RunSummary:
    """Restore the faces of a video. ``kwargs`` are :class:`RestoreOptions` fields (model, alpha, start, ...).

    Streams, timestamps, rotation and colour tags of ``src`` are kept; ``dst`` appears only when complete.
    The restored faces are kept beside ``dst`` until then, so ``resume=True`` can finish an interrupted run with
    the same result (see :mod:`vidgpen.resume`).
    """
    options = _options(options, kwargs)
    _check_video_job(src, dst, options)  # every path and option, before a model is loaded or downloaded
    startup = 0.0
    if engine is None:
        started = time.perf_counter()
        engine = build_engine(options, notice)
        startup = time.perf_counter() - started
    engine = engine.with_options(options, notice)
    _make_extras_folders(options)
    summary = run_video(src, dst, engine, progress, notice)
    summary.startup_seconds = startup
    return summary


def _check_video_job(src: str | Path, dst: str | Path, options: RestoreOptions) -> None:
    """The input is a readable video, and the writer would accept ``dst`` with these options (folder, name,
    container, codec, quality, pixel format, streams, trim), and the extras can be written: the writer checks
    again when it opens, but by then the models are loaded."""
    from vidgpen.video import probe
    from vidgpen.video.writer import VideoWriter

    info = probe(src)
    writer = VideoWriter(dst, info, codec=options.codec, crf=options.crf, preset=options.preset,
                         pix_fmt=options.pix_fmt, overwrite=options.overwrite,
                         drop_incompatible=options.drop_incompatible, start=options.start, end=options.end)
    writer.release_unused()
    _check_writable_folder(Path(dst).parent, f"the output {dst}")
    _check_extras(options, src, dst)


def _check_writable_folder(folder: Path, what: str) -> None:
    """Create and delete a file in ``folder`` (permission bits do not tell: root, read-only mounts, ACLs)."""
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{what}: the folder {folder} does not exist; create it first")
    try:
        descriptor, probe_file = tempfile.mkstemp(prefix=".vidgpen-write-check.", dir=folder)
    except OSError as exc:
        raise OutputError(f"{what}: cannot write in {folder} ({exc.strerror}); choose a folder you can "
                          "write to") from None
    os.close(descriptor)
    os.unlink(probe_file)


def read_image(path: str | Path) -> np.ndarray:
    """An image file -> ``[H, W, 3]`` uint8 RGB (16-bit and alpha images are reduced), or InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"{path} is not an image OpenCV can read; convert it to PNG or JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _check_image_destination(path: Path) -> None:
    if not path.parent.is_dir():
        raise OutputError(f"{path}: the folder {path.parent} does not exist; create it first")
    if not cv2.haveImageWriter(str(path)):  # also refuses a missing extension
        raise OutputError(f"{path}: OpenCV cannot write '{path.suffix}' images; use .png, .jpg, .webp or .tif")


def write_image_atomically(path: str | Path, image_rgb: np.ndarray, overwrite: bool = False) -> None:
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    _check_image_destination(path)
    try:
        ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    except cv2.error:  # OpenCV raises, rather than returning False, for some formats and sizes
        ok = False
    if not ok:
        raise OutputError(f"{path}: OpenCV could not encode the image as '{path.suffix}'; use .png or .jpg")
    descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(encoded.tobytes())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# Options that only mean something for a video: set to anything but their defaults on a photo, they are refused.
# (--resume is not among them: a photo is done in one step, so running the same command again with --resume simply
# redoes it.)
_VIDEO_ONLY = ("start", "end", "codec", "crf", "preset", "pix_fmt", "drop_incompatible", "detect_every", "smoothing",
               "lookahead", "temporal_strength", "deinterlace", "save_progress")
_DEFAULTS = RestoreOptions()


def _refuse_video_only_options(options: RestoreOptions, src: Path) -> None:
    for name in _VIDEO_ONLY:
        if getattr(options, name) != getattr(_DEFAULTS, name):
            flag = "--" + name.replace("_", "-")
            raise OptionError(f"{flag} is for videos; {src.name} is a photo (photo mode has no time axis to use it)")


def restore_image(src: str | Path, dst: str | Path, *, options: RestoreOptions | None = None,
                  engine: FaceEngine | None = None, notice: Callable[[str], None] | None = None,
                  **kwargs) -> RunSummary:
    """Restore the faces of a photo into ``dst`` (format from its extension); ``report`` lists its faces.

    Video-only options (``start``, ``codec``, ``smoothing``, ...) set to anything but their defaults are refused."""
    options = _options(options, kwargs)
    _refuse_video_only_options(options, Path(src))
    return _restore_image(src, dst, options, engine, notice)


def _restore_image(src: str | Path, dst: str | Path, options: RestoreOptions, engine: FaceEngine | None,
                   notice: Callable[[str], None] | None) -> RunSummary:
    # Every path and option before the model is loaded, not after the work is done.
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError(f"{dst} is the input file; choose another output name (the input is never overwritten)")
    if dst.exists() and not options.overwrite:
        raise OutputError(f"{dst} exists; pass --overwrite to replace it")
    _check_image_destination(dst)
    _check_writable_folder(dst.parent, f"the output {dst}")
    _check_extras(options, src, dst)
    image = read_image(src)
    startup = 0.0
    if engine is None:
        started = time.perf_counter()
        engine = build_engine(options, notice)
        startup = time.perf_counter() - started
    _make_extras_folders(options)
    engine = engine.with_options(options, notice)
    started = time.perf_counter()
    report = open_report(options, engine, src)
    try:
        restored, faces = restore_photo(image, engine, report, notice)
        factor = restored.shape[1] // image.shape[1]
        if options.compare:
            restored = np.concatenate([enlarge_for_compare(image, factor), restored], axis=1)
        write_image_atomically(dst, restored, overwrite=options.overwrite)
    except BaseException:
        if report is not None:
            report.abort()
        raise
    if report is not None:
        report.close()
    if options.save_faces is not None and faces:
        save_face_crops(Path(options.save_faces), src.stem, faces)
    summary = RunSummary(output=dst, frames=1, faces=len(faces), upscale=factor, startup_seconds=startup)
    summary.describe_engine(engine)
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass
class FolderSummary:
    results: list[RunSummary] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    startup_seconds: float = 0.0  # loading the models, once for the whole folder


def restore_folder(src: str | Path, dst: str | Path, *, options: RestoreOptions | None = None,
                   progress_factory: Callable[[], Progress] | None = None,
                   notice: Callable[[str], None] | None = None,
                   on_file: Callable[[Path, RunSummary | None, str | None], None] | None = None,
                   **kwargs) -> FolderSummary:
    """Restore every photo and video directly inside ``src`` into the folder ``dst`` (same file names).

    One bad file does not stop the others: its error is collected in ``failures`` and passed to ``on_file``.
    """
    options = _options(options, kwargs)
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise InputError(f"{src} is not a folder")
    if options.report is not None:
        raise OptionError("--report writes the faces of one photo or video; run each file of a folder on its own "
                          "to get its report")
    if dst.exists() and not dst.is_dir():
        raise OutputError(f"{dst} exists and is not a folder; a folder input needs a folder output")
    if dst.resolve() == src.resolve():
        raise OutputError("the output folder is the input folder; choose another one (inputs are never overwritten)")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    if not files:
        raise InputError(f"{src} holds no photos or videos (looked for {', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
    _check_writable_folder(_nearest_existing(dst), f"the output folder {dst}")
    _check_extras(options, src, dst)
    started = time.perf_counter()
    engine = build_engine(options, notice)
    summary = FolderSummary(startup_seconds=time.perf_counter() - started)
    dst.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = dst / path.name
        try:
            if is_image_path(path):
                result = _restore_image(path, target, options, engine, notice)
            else:
                progress = progress_factory() if progress_factory else None
                result = restore_video(path, target, options=options, engine=engine, progress=progress,
                                       notice=notice)
        except VidgpenError as exc:
            message = "; ".join([str(exc), *getattr(exc, "__notes__", [])])  # e.g. how to resume this file
            summary.failures.append((path, message))
            if on_file:
                on_file(path, None, message)
            continue
        summary.results.append(result)
        if on_file:
            on_file(path, result, None)
    return summary


def _check_extras(options: RestoreOptions, src: str | Path, dst: str | Path) -> None:
    """--report and --save-faces can be written (nothing is created yet)."""
    if options.save_faces is not None:
        folder = Path(options.save_faces)
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"--save-faces {folder} is a file; give a folder")
        _check_writable_folder(_nearest_existing(folder), f"--save-faces {folder}")
    if options.report is not None:
        report = Path(options.report)
        if report.is_dir():
            raise OutputError(f"--report {report} is a folder; give a file name such as {report / 'faces.json'}")
        for other in (Path(src), Path(dst)):
            if report.resolve() == other.resolve():
                raise OutputError(f"--report {report} is also the input or the output; give it another name")
        _check_writable_folder(report.parent, f"--report {report}")


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or the closest of its parents that exists (where creating it will start)."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _make_extras_folders(options: RestoreOptions) -> None:
    if options.save_faces is not None:
        Path(options.save_faces).mkdir(parents=True, exist_ok=True)
