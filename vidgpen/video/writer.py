"""Encode processed frames with the input's timestamps and copy every other stream packet for packet.

The output goes to a hidden temporary file beside the destination and is renamed over it only after the
container is finished; on any exception (Ctrl-C included) the temporary file is deleted. Audio, subtitle
and data streams are read by a second demuxer on the input and muxed in step with the video packets, so
memory stays at a few packets whatever the length of the film.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from vidgpen.errors import OutputError
from vidgpen.video.color import LEFT_SITED_CODECS, RgbToYuv
from vidgpen.video.codecs import (
    check_frame_size, container_format_for, encoder_options, resolve_encoder, resolve_pix_fmt,
)
from vidgpen.video.frame import VideoFrame, round_to_8bit
from vidgpen.video.probe import MUXER_WRITTEN_TAGS, StreamInfo, VideoInfo, open_input_container, stream_info
from vidgpen.video.reader import TimeRange, VideoReader

DEFAULT_FPS = Fraction(25)
PROGRESSIVE = 1  # AVFieldOrder AV_FIELD_PROGRESSIVE  # encoder rate-control hint when the input states no frame rate


@dataclass(frozen=True)
class DroppedStream:
    """A stream left out of the output because its container cannot hold it."""

    stream: StreamInfo
    reason: str


def _copyable_tags(metadata: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k.lower() not in MUXER_WRITTEN_TAGS}


def _fits_container(container_format: str, template) -> bool:
    """Whether a copy of ``template`` (an input stream) can be muxed into this container format."""
    try:
        with av.open(io.BytesIO(), "w", format=container_format) as trial:
            trial.add_stream_from_template(template)
            trial.start_encoding()
        return True
    except (ValueError, av.error.FFmpegError):
        return False


def merge_high_bit(image: np.ndarray, image_high: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint16: ``image_high`` where ``image`` is still its 8-bit rounding, else ``image * 257``.

    Keeps a high-bit-depth source's precision in every pixel the pipeline left alone.
    """
    changed = np.any(image != round_to_8bit(image_high), axis=2, keepdims=True)
    return np.where(changed, image.astype(np.uint16) * 257, image_high)


class _StreamCopier:
    """Reads the input's other streams with its own demuxer and muxes them up to a given output time."""

    def __init__(self, source: av.container.InputContainer, routes: dict[int, av.stream.Stream],
                 out: av.container.OutputContainer, time_range: TimeRange) -> None:
        self._source = source
        self._routes = routes
        self._out = out
        self._range = time_range
        self._shift_ticks = {
            index: round(Fraction(time_range.shift).limit_denominator(10**9) / source.streams[index].time_base)
            for index in routes
        }
        # The mp4/mov muxer fills gaps between timed-text samples with empty samples itself; copying the
        # input's fillers as well would double them.
        self._regenerated_by_muxer = {
            index for index, stream in routes.items()
            if out.format.name in ("mp4", "mov") and stream.codec_context is not None
            and stream.codec_context.name == "mov_text"
        }
        self._pending: tuple[av.Packet, float] | None = None
        self._packets = self._selected_packets()
        self.packets_copied = 0

    def _selected_packets(self) -> Iterator[tuple[av.Packet, float]]:
        """(packet, output time in seconds) for every packet of the routed streams inside the range."""
        if not self._routes:
            return
        streams = [self._source.streams[i] for i in self._routes]
        if self._range.start is not None:
            try:
                self._source.seek(int(self._range.start * av.time_base), backward=True)
            except av.error.FFmpegError:
                self._source.seek(0)
        past_end: set[int] = set()
        try:
            for packet in self._source.demux(streams):
                timestamp = packet.pts if packet.pts is not None else packet.dts
                if timestamp is None:
                    continue  # flush packets carry no data
                seconds = float(timestamp * packet.time_base)
                if self._range.end is not None and seconds >= self._range.end:
                    past_end.add(packet.stream_index)
                    if len(past_end) == len(streams):
                        return
                    continue
                if packet.stream_index in self._regenerated_by_muxer and bytes(packet) == b"\x00\x00":
                    continue
                if self._range.contains(seconds):
                    yield packet, seconds - self._range.shift
        except av.error.FFmpegError:
            return  # damaged input: the video reader reports it; copy what was readable

    def mux_until(self, limit: float | None) -> None:
        """Mux every pending packet whose output time is <= ``limit`` seconds (all when None)."""
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            packet, seconds = self._pending
            if limit is not None and seconds > limit:
                return
            index = packet.stream_index
            shift = self._shift_ticks[index]
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self._routes[index]
            self._out.mux(packet)
            self.packets_copied += 1
            self._pending = None


class VideoWriter:
    """Writes a video that differs from ``source`` only in its (processed) video frames.

    Use as a context manager and call :meth:`write` once per frame, in presentation order. On a clean exit
    the encoder is flushed, the other streams are copied to the end of the range, and the temporary file is
    renamed to ``dst``; on an exception it is deleted and the exception re-raised.

    Args:
        dst: output path; its extension picks the container (.mp4, .m4v, .mov, .mkv, .webm).
        source: the :class:`VideoReader` the frames come from (its trim range is used for the other
            streams), or a :class:`VideoInfo` (then ``start``/``end`` give the range, default whole file).
        codec: encoder or codec name ("libx264", "h264", "hevc", "av1", "vp9", "prores", "ffv1", ...).
            Default: the input's codec family when an encoder exists and the container takes it, else
            H.264 (VP9 for .webm).
        crf, preset: quality and speed for the encoder (see :mod:`vidgpen.video.codecs` for defaults).
        pix_fmt: output pixel format; default: the input's, or the encoder's closest (10-bit stays 10-bit).
        overwrite: replace an existing ``dst`` (never the input itself).
        drop_incompatible: leave out streams the container cannot hold instead of raising OutputError.
        frame_size: ``(width, height)`` of the frames that will be written, when it differs from the input
            (e.g. side-by-side comparisons). Default: the size of the first written frame.
        video_only: write the video stream alone, with the source's own timestamps (no shift for a trim, no
            other streams, no chapters): a piece of a longer output that :mod:`vidgpen.cluster` joins later.
    Raises:
        OutputError: bad destination (exists, is the input, unknown extension, missing folder), a codec or
            stream the container cannot hold, or a failure while writing.
        OptionError: unknown codec, preset, pixel format or out-of-range CRF.
    """

    def __init__(self, dst: str | Path, source: VideoReader | VideoInfo, *, codec: str | None = None,
                 crf: int | None = None, preset: str | None = None, pix_fmt: str | None = None,
                 overwrite: bool = False, drop_incompatible: bool = False,
                 frame_size: tuple[int, int] | None = None,
                 start: float | str | None = None, end: float | str | None = None,
                 video_only: bool = False) -> None:
        if isinstance(source, VideoReader):
            self.info, self.time_range = source.info, source.time_range
            # A deinterlacing reader may hand out frames at field rate, in a finer time base; they are progressive.
            self.time_base, self.frame_rate = source.time_base, source.frame_rate
            self._progressive = source.deinterlace is not None
        else:
            self.info, self.time_range = source, TimeRange.for_video(source, start, end)
            self.time_base, self.frame_rate = source.time_base, source.average_fps
            self._progressive = False
        self.video_only = video_only
        if video_only:
            self.time_range = TimeRange()  # the source's timestamps, unshifted
        self.dst = Path(dst)
        self._check_destination(overwrite)
        self._container_format = container_format_for(self.dst)
        self.encoder = resolve_encoder(codec, self.info.codec, self._container_format, self.dst.suffix.lower())
        self.pix_fmt = resolve_pix_fmt(self.encoder, self.info.pix_fmt, pix_fmt)
        self._options = encoder_options(self.encoder, crf, preset, self.pix_fmt)
        self._high_bit = max(c.bits for c in av.VideoFormat(self.pix_fmt).components) > 8
        self._frame_size = frame_size
        if frame_size is not None:
            check_frame_size(self.encoder, *frame_size)  # before any work is done for a picture it cannot take
        self.frames_written = 0
        self.dropped_streams: list[DroppedStream] = []

        self._source = open_input_container(self.info.path)
        try:
            self._copy_plan = [] if video_only else self._plan_copies(drop_incompatible)
        except BaseException:
            self._source.close()
            raise
        self._tmp_path: Path | None = None
        self._out: av.container.OutputContainer | None = None
        self._video: av.video.stream.VideoStream | None = None
        self._copier: _StreamCopier | None = None
        self._converter: RgbToYuv | None = None
        self._last_pts: int | None = None
        self._shift_ticks = round(Fraction(self.time_range.shift).limit_denominator(10**9) / self.time_base)

    def release_unused(self) -> None:
        """Close the input a writer that will never be entered holds: constructing one and releasing it runs
        every destination, codec and stream check without writing anything (done before models are loaded)."""
        self._source.close()

    # -- checks before anything is written -------------------------------------------------------------
    def _check_destination(self, overwrite: bool) -> None:
        dst, src = self.dst, self.info.path
        if dst.is_dir():
            raise OutputError(f"{dst} is a folder; give an output file name such as {dst / src.name}")
        if not dst.parent.is_dir():
            raise OutputError(f"{dst}: the folder {dst.parent} does not exist; create it first")
        if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(dst, src)):
            raise OutputError(f"{dst} is the input file; choose another output name (the input is never overwritten)")
        if dst.exists() and not overwrite:
            raise OutputError(f"{dst} already exists; pass --overwrite to replace it or choose another name")

    def _plan_copies(self, drop_incompatible: bool) -> list:
        """Input streams to copy as (stream, "packets" | "attachment"); raises or drops what cannot go in."""
        plan = []
        for stream in self._source.streams:
            if stream.index == self.info.video_index:
                continue
            if stream.discard == av.stream.Discard.all:
                continue  # e.g. a QuickTime chapter track: its content arrives as chapters, copied below
            if stream.type == "attachment":
                fits = self._container_format == "matroska"
                kind = "attachment"
            else:
                fits = _fits_container(self._container_format, stream)
                kind = "packets"
            if fits:
                plan.append((stream, kind))
                continue
            info = stream_info(stream)
            extension = self.dst.suffix.lower()
            if not drop_incompatible:
                alternative = "write .mkv instead, or " if self._container_format != "matroska" else ""
                raise OutputError(
                    f"stream #{stream.index} ({stream.type}, {info.codec or 'unknown codec'}) cannot go into a "
                    f"{extension} file; {alternative}drop such streams (--drop-incompatible)"
                )
            self.dropped_streams.append(
                DroppedStream(info, f"a {extension} file cannot hold {info.codec or stream.type}")
            )
        return plan

    # -- context manager -------------------------------------------------------------------------------
    def __enter__(self) -> "VideoWriter":
        self._tmp_path = self.dst.parent / f".{self.dst.stem}.{uuid.uuid4().hex[:8]}.partial{self.dst.suffix}"
        try:
            self._out = av.open(str(self._tmp_path), "w", format=self._container_format)
        except (av.error.FFmpegError, OSError) as exc:
            self._source.close()
            raise OutputError(f"cannot write in {self.dst.parent}: {getattr(exc, 'strerror', None) or exc}") from exc
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is None:
            try:
                self._finish()
            except BaseException:
                self._abort()
                raise
        else:
            self._abort()
        return False

    # -- writing ---------------------------------------------------------------------------------------
    def write(self, frame: VideoFrame) -> None:
        """Encode one frame. Its ``pts`` (in ``frame.time_base``) must increase from frame to frame."""
        if self._out is None:
            raise RuntimeError("use VideoWriter as a context manager: with VideoWriter(...) as writer: ...")
        if self._video is None:
            self._start(frame)
        if (frame.width, frame.height) != (self._video.width, self._video.height):
            raise ValueError(f"frame {frame.index} is {frame.width}x{frame.height}, the output stream is "
                             f"{self._video.width}x{self._video.height}")
        pts, duration = frame.pts, frame.duration
        if frame.time_base != self.time_base:
            pts = round(pts * frame.time_base / self.time_base)
            duration = round(duration * frame.time_base / self.time_base) if duration else None
        pts -= self._shift_ticks
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"frame {frame.index}: pts {frame.pts} does not increase; write frames in order")
        self._last_pts = pts
        av_frame = self._to_av_frame(frame)
        av_frame.pts = pts
        av_frame.time_base = self.time_base
        if duration:
            av_frame.duration = duration
        try:
            for packet in self._video.encode(av_frame):
                self._mux_video(packet)
        except av.error.FFmpegError as exc:
            raise OutputError(f"encoding frame {frame.index} for {self.dst} failed: {exc}") from exc
        self.frames_written += 1

    def _to_av_frame(self, frame: VideoFrame) -> av.VideoFrame:
        """RGB -> the output pixel format with the input's matrix, range and tags."""
        if not self._high_bit:
            return self._converter(frame.image)
        if frame.image_high is not None and frame.image_high.shape == frame.image.shape:
            return self._converter(merge_high_bit(frame.image, frame.image_high))
        return self._converter(frame.image.astype(np.uint16) * 257)

    def _mux_video(self, packet: av.Packet) -> None:
        timestamp = packet.dts if packet.dts is not None else packet.pts
        if self._copier is not None and timestamp is not None:
            self._copier.mux_until(float(timestamp * packet.time_base))
        self._out.mux(packet)

    def _start(self, first: VideoFrame) -> None:
        """Create all output streams (sizes are known now) and write the container header."""
        info, out = self.info, self._out
        width, height = self._frame_size or (first.width, first.height)
        check_frame_size(self.encoder, width, height)
        chroma_format = av.VideoFormat(self.pix_fmt, 2, 2)
        if any(c.width < 2 or c.height < 2 for c in chroma_format.components) and (width % 2 or height % 2):
            raise OutputError(f"{self.pix_fmt} needs an even frame size, got {width}x{height}; "
                              "choose pixel format yuv444p")
        chroma_location = "left" if self.encoder.family in LEFT_SITED_CODECS else "unknown"
        self._converter = RgbToYuv(width, height, self._high_bit, self.pix_fmt, info.color, chroma_location)
        video = out.add_stream(self.encoder.encoder, rate=self.frame_rate or DEFAULT_FPS)
        video.width, video.height, video.pix_fmt = width, height, self.pix_fmt
        video.options = dict(self._options)
        # The input's time base keeps every pts exact (variable frame rate included).
        video.codec_context.time_base = self.time_base
        video.time_base = self.time_base
        if self._progressive:
            video.codec_context.field_order = PROGRESSIVE  # say so in the container too
        info.color.apply_to(video.codec_context)
        if info.sample_aspect_ratio:
            video.codec_context.sample_aspect_ratio = info.sample_aspect_ratio
        if info.display_matrix is not None:
            video.set_display_matrix(list(info.display_matrix))
        elif info.rotation:
            video.set_display_rotation(info.rotation)
        in_video = self._source.streams[info.video_index]
        video.metadata.update(_copyable_tags(in_video.metadata))
        video.disposition = in_video.disposition

        routes: dict[int, av.stream.Stream] = {}
        for stream, kind in self._copy_plan:
            if kind == "attachment":
                out.add_attachment(stream.metadata.get("filename", f"attachment{stream.index}"),
                                   stream.metadata.get("mimetype", "application/octet-stream"), stream.data)
                continue
            copy = out.add_stream_from_template(stream)
            copy.metadata.update(_copyable_tags(stream.metadata))
            copy.disposition = stream.disposition
            routes[stream.index] = copy
        out.metadata.update(_copyable_tags(self._source.metadata))
        chapters = [] if self.video_only else _chapters_in_range(self._source.chapters(), self.time_range)
        if chapters:
            out.set_chapters(chapters)
        try:
            out.start_encoding()
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(f"cannot start writing {self.dst}: {exc}") from exc
        self._video = video
        self._copier = _StreamCopier(self._source, routes, out, self.time_range)

    # -- finishing -------------------------------------------------------------------------------------
    def _finish(self) -> None:
        if self._video is None:
            raise OutputError(f"no video frames were written; {self.dst} was not created")
        try:
            for packet in self._video.encode(None):
                self._mux_video(packet)
            self._copier.mux_until(None)
            self._out.close()
        except av.error.FFmpegError as exc:
            raise OutputError(f"writing {self.dst} failed: {exc}") from exc
        self._out = None
        try:
            os.replace(self._tmp_path, self.dst)
        except OSError as exc:
            raise OutputError(f"cannot move the finished video to {self.dst}: {exc.strerror}") from exc
        self._source.close()

    def _abort(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except Exception:  # the file is deleted next; its trailer does not matter
                pass
            self._out = None
        if self._tmp_path is not None:
            self._tmp_path.unlink(missing_ok=True)
        self._source.close()

    @property
    def packets_copied(self) -> int:
        """Packets of other streams copied so far."""
        return self._copier.packets_copied if self._copier is not None else 0


def _chapters_in_range(chapters: list[dict], time_range: TimeRange) -> list[dict]:
    """Chapters overlapping the range, clipped to it and shifted like the streams."""
    if time_range == TimeRange():
        return chapters
    kept = []
    for chapter in chapters:
        time_base = chapter["time_base"]
        start, end = float(chapter["start"] * time_base), float(chapter["end"] * time_base)
        if not (time_range.end is None or start < time_range.end) or end <= time_range.shift:
            continue
        start = max(start, time_range.shift) - time_range.shift
        end = (min(end, time_range.end) if time_range.end is not None else end) - time_range.shift
        kept.append({**chapter, "start": round(start / time_base), "end": round(end / time_base)})
    return kept
