"""Open an input file with clear errors and describe it: container, main video stream, every other stream."""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from vidgpen.errors import InputError, OptionError
from vidgpen.video.color import ColorTags
from vidgpen.video.deinterlace import INTERLACED_FIELD_ORDERS, field_order_name
from vidgpen.video.display import DisplayGeometry
from vidgpen.video.timecode import parse_time

# How many video packets `probe` reads to judge whether timestamps are regular (about 10 s at 30 fps).
DEFAULT_TIMESTAMP_SCAN = 300
# Stream metadata keys the muxer writes itself; copying them would carry stale values into the output.
MUXER_WRITTEN_TAGS = frozenset({"duration", "encoder", "major_brand", "minor_version", "compatible_brands",
                                "number_of_frames", "number_of_bytes", "_statistics_tags",
                                "_statistics_writing_app", "_statistics_writing_date_utc", "bps"})


@dataclass(frozen=True)
class StreamInfo:
    """One stream of the container, as ``vidgpen probe`` lists it."""

    index: int
    kind: str  # "video", "audio", "subtitle", "data", "attachment" or "unknown"
    codec: str | None  # FFmpeg's codec name; None when this FFmpeg build has no decoder for it
    codec_long_name: str | None
    time_base: Fraction | None
    start_time: float | None  # seconds
    duration: float | None  # seconds
    language: str | None
    title: str | None
    disposition: tuple[str, ...]  # e.g. ("default",), ("attached_pic",)
    bit_rate: int | None
    frames: int | None  # packet count from the container header, None if not stored
    width: int | None = None
    height: int | None = None
    pix_fmt: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    channel_layout: str | None = None
    sample_format: str | None = None
    filename: str | None = None  # attachments
    mimetype: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    """Everything known about an input video before decoding it (what ``vidgpen probe`` prints).

    Times are in seconds. ``width``/``height`` are the stored picture size; ``display_size`` applies the
    sample aspect ratio and the rotation. ``rotation`` is FFmpeg's display rotation in degrees (counter-clockwise,
    e.g. 90 or -90), ``display_matrix`` the raw 3x3 matrix (9 int32, row-major) it came from, kept so flips survive
    too. ``field_order`` and ``interlaced_frames`` say whether the video is interlaced (see ``scan_type``).
    """

    path: Path
    container: str
    container_long_name: str
    size_bytes: int
    duration: float | None
    start_time: float
    bit_rate: int | None
    video_index: int
    codec: str
    codec_long_name: str
    profile: str | None
    width: int
    height: int
    sample_aspect_ratio: Fraction | None
    rotation: int
    display_matrix: tuple[int, ...] | None
    frame_count: int | None
    frame_count_source: str  # "header", "counted" or "unknown"
    video_duration: float | None
    average_fps: Fraction | None
    time_base: Fraction
    irregular_timestamps: bool | None  # None when too few frames were checked to tell
    timestamps_checked: int
    pix_fmt: str
    bit_depth: int
    chroma_subsampling: str
    color: ColorTags
    streams: tuple[StreamInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    chapters: int = 0
    field_order: str = "unknown"  # the stream's: "progressive", "tt", "bb", "tb", "bt" or "unknown"
    interlaced_frames: bool = False  # the first frame is flagged interlaced

    @property
    def interlaced(self) -> bool:
        """The stream or its first frame says interlaced (what ``--deinterlace auto`` acts on)."""
        return self.interlaced_frames or self.field_order in INTERLACED_FIELD_ORDERS

    @property
    def scan_type(self) -> str:
        """``"interlaced"``, ``"progressive"`` or ``"unknown"`` (no field order stated, frames not flagged)."""
        if self.interlaced:
            return "interlaced"
        return "progressive" if self.field_order == "progressive" else "unknown"

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` as a player shows it: pixels made square, then the display rotation applied."""
        return DisplayGeometry.of(self).display_size

    @property
    def video_stream(self) -> StreamInfo:
        return next(s for s in self.streams if s.index == self.video_index)

    def as_dict(self) -> dict:
        """A JSON-ready dict (fractions as ``"num/den"`` strings, colour tags as names)."""
        raw = asdict(self)
        raw["path"] = str(self.path)
        raw["color"] = {**self.color.names, "codes": asdict(self.color)}
        raw["display_size"] = list(self.display_size)
        raw["scan_type"] = self.scan_type
        return _jsonable(raw)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    return value


def check_input_path(path: str | Path) -> Path:
    """The path as a Path if it names a non-empty readable file, else :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); the copy or recording did not finish, use the original")
    return path


def open_input_container(path: str | Path) -> av.container.InputContainer:
    """``av.open`` for reading, with every failure turned into a one-line :class:`InputError`."""
    path = check_input_path(path)
    try:
        return av.open(str(path), metadata_errors="replace")
    except PermissionError as exc:
        raise InputError(f"{path}: permission denied; make the file readable") from exc
    except av.error.InvalidDataError as exc:
        raise InputError(
            f"{path} is not a video file FFmpeg can read (invalid data); check that it is a video, "
            "or if it is an interrupted recording, repair it first"
        ) from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"{path} cannot be opened: {getattr(exc, 'strerror', None) or exc}") from exc


def main_video_stream(container: av.container.InputContainer, path: Path):
    """The video stream to restore: the first one that is not cover art. :class:`InputError` if none."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            if stream.codec_context is None:
                raise InputError(
                    f"{path}: its video codec cannot be decoded by this FFmpeg build "
                    f"(PyAV {av.__version__}); convert the file to H.264 or another common codec first"
                )
            return stream
    kinds = collections.Counter(
        "cover image" if s.disposition & av.stream.Disposition.attached_pic else s.type for s in container.streams
    )
    held = ", ".join(f"{n} {kind} stream{'s' if n > 1 else ''}" for kind, n in kinds.items()) or "no streams"
    raise InputError(f"{path} has no video stream (it holds {held}); give a video file")


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _stream_duration(stream) -> float | None:
    """Seconds from the stream header, or from Matroska's per-stream DURATION tag (written at the end of the
    file, so a truncated file lacks it)."""
    seconds = _seconds(stream.duration, stream.time_base)
    if seconds is None and "DURATION" in stream.metadata:
        try:
            seconds = parse_time(stream.metadata["DURATION"])
        except OptionError:
            seconds = None
    return seconds


def _disposition_names(stream) -> tuple[str, ...]:
    flags = stream.disposition
    return tuple(flag.name for flag in av.stream.Disposition if flag.value and flags & flag)


def stream_info(stream) -> StreamInfo:
    """Describe one PyAV stream."""
    cc = stream.codec_context
    codec = cc.codec if cc is not None else None
    metadata = stream.metadata
    common = dict(
        index=stream.index, kind=stream.type,
        codec=codec.canonical_name if codec is not None else None,
        codec_long_name=codec.long_name if codec is not None else None,
        time_base=stream.time_base,
        start_time=_seconds(stream.start_time, stream.time_base),
        duration=_stream_duration(stream),
        language=metadata.get("language"), title=metadata.get("title"),
        disposition=_disposition_names(stream),
        bit_rate=(cc.bit_rate or None) if cc is not None else None,
        frames=stream.frames or None,
    )
    if stream.type == "video" and cc is not None:
        return StreamInfo(**common, width=cc.width, height=cc.height, pix_fmt=cc.pix_fmt)
    if stream.type == "audio" and cc is not None:
        return StreamInfo(**common, sample_rate=cc.sample_rate, channels=cc.channels,
                          channel_layout=cc.layout.name if cc.layout else None,
                          sample_format=cc.format.name if cc.format else None)
    if stream.type == "attachment":
        return StreamInfo(**common, filename=metadata.get("filename"), mimetype=metadata.get("mimetype"))
    return StreamInfo(**common)


def display_matrix_of(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The 9 int32 of a frame's DISPLAYMATRIX side data, or None."""
    for side_data in frame.side_data:
        if side_data.type.name == "DISPLAYMATRIX":
            return tuple(int(v) for v in np.frombuffer(bytes(side_data), dtype="<i4")[:9])
    return None


class TimestampRegularity:
    """Judges whether presentation timestamps advance in equal steps, one packet at a time.

    Packets arrive in decode order, so pts are re-sorted in a small window (B-frame reordering is shallow).
    Steps within one tick or 0.5 % of the most common step count as equal: containers with a millisecond
    time base store 30 fps as 33, 33, 34 ms.
    """

    REORDER_WINDOW = 32

    def __init__(self) -> None:
        self._window: list[int] = []
        self._last: int | None = None
        self._steps: collections.Counter[int] = collections.Counter()
        self.count = 0

    def add(self, pts: int | None) -> None:
        if pts is None:
            return
        self.count += 1
        self._window.append(pts)
        if len(self._window) > self.REORDER_WINDOW:
            self._window.sort()
            self._advance(self._window.pop(0))

    def _advance(self, pts: int) -> None:
        if self._last is not None and pts > self._last:
            self._steps[pts - self._last] += 1
        self._last = pts

    def irregular(self) -> bool | None:
        """True if the steps vary, False if they are equal, None with fewer than 3 timestamps."""
        for pts in sorted(self._window):
            self._advance(pts)
        self._window.clear()
        if sum(self._steps.values()) < 2:
            return None
        typical = self._steps.most_common(1)[0][0]
        tolerance = max(1, typical * 0.005)
        return any(abs(step - typical) > tolerance for step in self._steps)


def probe(path: str | Path, *, count_frames: bool = False,
          timestamp_scan: int = DEFAULT_TIMESTAMP_SCAN) -> VideoInfo:
    """Describe a video file. Decodes only its first frame (for rotation and exact colour tags).

    Args:
        path: the file.
        count_frames: read every video packet to count frames and check all timestamps (reads the whole
            file, no decoding). Without it the count comes from the header when the container stores one
            (mp4, mov), and regularity is judged from the first ``timestamp_scan`` packets.
    Raises:
        InputError: missing, empty, unreadable, no video stream, video codec without decoder, or no frame
            of the video could be decoded.
    """
    path = check_input_path(path)
    with open_input_container(path) as container:
        stream = main_video_stream(container, path)
        cc = stream.codec_context
        regularity = TimestampRegularity()
        first_frame = None
        packets = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                regularity.add(packet.pts)
                if first_frame is None:
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError:
                        frames = []
                    if frames:
                        first_frame = frames[0]
                if first_frame is not None and not count_frames and packets >= timestamp_scan:
                    break
            if first_frame is None:
                # Codecs with decoding delay hand out their first frame only when flushed.
                flushed = cc.decode(None)
                first_frame = flushed[0] if flushed else None
        except av.error.FFmpegError:
            pass  # damaged data: describe what could be read
        if first_frame is None:
            raise InputError(f"{path}: no video frame could be decoded; the file is damaged or not a video")

        pix_fmt = first_frame.format.name
        video_format = av.VideoFormat(pix_fmt)
        header_frames = stream.frames or None
        if count_frames:
            frame_count, count_source = packets, "counted"
        elif header_frames:
            frame_count, count_source = header_frames, "header"
        else:
            frame_count, count_source = None, "unknown"
        duration = container.duration / av.time_base if container.duration else None
        metadata = {k: v for k, v in container.metadata.items() if k.lower() not in MUXER_WRITTEN_TAGS}
        return VideoInfo(
            path=path,
            container=container.format.name,
            container_long_name=container.format.long_name,
            size_bytes=path.stat().st_size,
            duration=duration,
            start_time=container.start_time / av.time_base if container.start_time else 0.0,
            bit_rate=container.bit_rate or None,
            video_index=stream.index,
            codec=cc.codec.canonical_name,
            codec_long_name=cc.codec.long_name,
            profile=cc.profile,
            width=first_frame.width,
            height=first_frame.height,
            sample_aspect_ratio=stream.sample_aspect_ratio or cc.sample_aspect_ratio or None,  # container, codec
            rotation=int(first_frame.rotation),
            display_matrix=display_matrix_of(first_frame),
            frame_count=frame_count,
            frame_count_source=count_source,
            video_duration=_stream_duration(stream),
            average_fps=stream.average_rate or stream.guessed_rate or None,
            time_base=stream.time_base,
            irregular_timestamps=regularity.irregular(),
            timestamps_checked=regularity.count,
            pix_fmt=pix_fmt,
            bit_depth=max(c.bits for c in video_format.components),
            chroma_subsampling=chroma_subsampling(video_format),
            color=ColorTags.from_av(first_frame),
            streams=tuple(stream_info(s) for s in container.streams),
            metadata=metadata,
            chapters=len(container.chapters()),
            field_order=field_order_name(cc.field_order),
            interlaced_frames=first_frame.interlaced_frame,
        )


def chroma_subsampling(video_format: av.VideoFormat) -> str:
    """``"4:2:0"``, ``"4:2:2"``, ``"4:4:4"``, ... for YUV formats; ``"rgb"`` or ``"gray"`` otherwise."""
    if video_format.is_rgb:
        return "rgb"
    chroma = [c for c in video_format.components if c.is_chroma]
    if not chroma:
        return "gray"
    # Component sizes of a 4x4 picture reveal the subsampling factors.
    probe_format = av.VideoFormat(video_format.name, 4, 4)
    comp = next(c for c in probe_format.components if c.is_chroma)
    horizontal, vertical = 4 // comp.width, 4 // comp.height
    return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (4, 1): "4:1:1", (1, 2): "4:4:0",
            (4, 4): "4:1:0"}.get((horizontal, vertical), f"1/{horizontal}x1/{vertical}")
