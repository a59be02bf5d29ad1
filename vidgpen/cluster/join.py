"""Join restored segments into one video by packet copy, with the source's other streams muxed once.

Every segment is a video-only file written with identical encoder settings and the source's own timestamps, and
starts with a keyframe, so its packets can follow the previous segment's unchanged. Presentation times are copied
as they are. Decoding times are set afresh for the whole stream: an encoder that reorders frames starts each
segment's decoding times before its first presentation time, which would run back into the previous segment; the
joined stream uses ``dts[i] = sorted_pts[i - delay]`` (the usual rule, with the largest reorder delay of any
segment), which is strictly increasing and never after a packet's presentation time.

Audio, subtitles, data streams, attachments, chapters and metadata come from the source, exactly as the
single-machine writer copies them. The output appears by atomic rename when complete.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

from vidgpen.errors import OutputError
from vidgpen.video.codecs import container_format_for
from vidgpen.video.probe import open_input_container, probe, stream_info
from vidgpen.video.reader import TimeRange
# The writer's own copy machinery, so a joined file carries the other streams exactly as a single run's does.
from vidgpen.video.writer import _chapters_in_range, _copyable_tags, _fits_container, _StreamCopier


@dataclass(frozen=True)
class JoinSummary:
    output: Path
    video_packets: int
    other_packets: int
    reorder_delay: int


def _video_stream(container):
    if len(container.streams.video) != 1:
        raise OutputError(f"{container.name}: a segment must hold exactly one video stream")
    return container.streams.video[0]


def _stream_signature(stream) -> tuple:
    ctx = stream.codec_context
    return (ctx.name, ctx.width, ctx.height, str(ctx.format.name if ctx.format else None),
            bytes(ctx.extradata or b""), stream.time_base)


def _segment_pts(path: Path) -> tuple[list[int], int, bool]:
    """(pts in decode order, reorder delay in packets, first packet is a keyframe) of a segment's video."""
    with av.open(str(path)) as container:
        stream = _video_stream(container)
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and p.pts is not None]
    if not packets:
        raise OutputError(f"{path}: segment holds no video packets")
    pts = [p for p, _ in packets]
    rank = {value: i for i, value in enumerate(sorted(pts))}
    delay = max(0, max(i - rank[value] for i, value in enumerate(pts)))
    return pts, delay, packets[0][1]


def join_segments(source: str | Path, segments: list[str | Path], dst: str | Path, *, overwrite: bool = False,
                  drop_incompatible: bool = False) -> JoinSummary:
    """Write ``dst``: the video packets of ``segments`` in order, and every other stream of ``source``."""
    info = probe(source)
    segments = [Path(s) for s in segments]
    dst = Path(dst)
    if not segments:
        raise ValueError("join_segments needs at least one segment")
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst} already exists; pass --overwrite to replace it or choose another name")
    if not dst.parent.is_dir():
        raise OutputError(f"{dst}: the folder {dst.parent} does not exist; create it first")

    # First pass (timestamps only): segments must follow each other and fit together.
    all_pts: list[int] = []
    delay = 0
    signature = None
    for path in segments:
        pts, segment_delay, starts_with_keyframe = _segment_pts(path)
        if not starts_with_keyframe:
            raise OutputError(f"{path}: segment does not start with a keyframe; it cannot be joined by packet copy")
        with av.open(str(path)) as container:
            this = _stream_signature(_video_stream(container))
        if signature is not None and this != signature:
            raise OutputError(f"{path}: encoded with other settings than the first segment; restore it again")
        signature = this
        ordered = sorted(pts)
        if all_pts and ordered[0] <= all_pts[-1]:
            raise OutputError(f"{path}: its frames overlap the previous segment's")
        all_pts += ordered
        delay = max(delay, segment_delay)
    step = min((b - a for a, b in zip(all_pts, all_pts[1:])), default=1)

    def decode_time(i: int) -> int:
        return all_pts[i - delay] if i >= delay else all_pts[0] - (delay - i) * step

    tmp = dst.parent / f".{dst.stem}.{uuid.uuid4().hex[:8]}.partial{dst.suffix}"
    source_container = open_input_container(source)
    out = None
    try:
        out = av.open(str(tmp), "w", format=container_format_for(dst))
        with av.open(str(segments[0])) as first:
            template = _video_stream(first)
            video = out.add_stream_from_template(template)
            video.metadata.update(_copyable_tags(template.metadata))
            video.disposition = template.disposition
        routes = _add_other_streams(source_container, out, info.video_index, dst, drop_incompatible)
        out.metadata.update(_copyable_tags(source_container.metadata))
        chapters = _chapters_in_range(source_container.chapters(), TimeRange())
        if chapters:
            out.set_chapters(chapters)
        out.start_encoding()
        copier = _StreamCopier(source_container, routes, out, TimeRange())
        index = 0
        for path in segments:
            with av.open(str(path)) as container:
                stream = _video_stream(container)
                for packet in container.demux(stream):
                    if not packet.size or packet.pts is None:
                        continue
                    # Times stay in the segment's time base (the same for all, checked above); mux converts them.
                    packet.dts = decode_time(index)
                    copier.mux_until(float(packet.dts * stream.time_base))
                    packet.stream = video
                    out.mux(packet)
                    index += 1
        copier.mux_until(None)
        out.close()
        out = None
        os.replace(tmp, dst)
        return JoinSummary(dst, index, copier.packets_copied, delay)
    except av.error.FFmpegError as exc:
        raise OutputError(f"joining segments into {dst} failed: {exc}") from exc
    finally:
        if out is not None:
            try:
                out.close()
            except Exception:  # the file is deleted next
                pass
        tmp.unlink(missing_ok=True)
        source_container.close()


def _add_other_streams(source, out, video_index: int, dst: Path, drop_incompatible: bool) -> dict:
    """Streams of ``source`` other than its main video, added to ``out``; returns input index -> output stream."""
    routes = {}
    container_format = out.format.name.split(",")[0]
    for stream in source.streams:
        if stream.index == video_index or stream.discard == av.stream.Discard.all:
            continue
        attachment = stream.type == "attachment"
        fits = container_format == "matroska" if attachment else _fits_container(container_format, stream)
        if fits and attachment:
            out.add_attachment(stream.metadata.get("filename", f"attachment{stream.index}"),
                               stream.metadata.get("mimetype", "application/octet-stream"), stream.data)
            continue
        if not fits:
            if drop_incompatible:
                continue
            description = stream_info(stream)
            raise OutputError(f"stream #{stream.index} ({stream.type}, {description.codec or 'unknown codec'}) "
                              f"cannot go into a {dst.suffix} file; drop such streams (--drop-incompatible)")
        copy = out.add_stream_from_template(stream)
        copy.metadata.update(_copyable_tags(stream.metadata))
        copy.disposition = stream.disposition
        routes[stream.index] = copy
    return routes
