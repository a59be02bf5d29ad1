"""``vidgpen probe IN``: print what vidgpen sees in a video (plain text, or ``--json``)."""

from __future__ import annotations

import argparse
import json
import sys

from vidgpen.video.deinterlace import FIELD_ORDER_WORDS
from vidgpen.video.probe import StreamInfo, VideoInfo, probe
from vidgpen.video.timecode import format_time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "probe", help="show a video's streams, timing, rotation and colour tags",
        description="Show what vidgpen reads from a video: duration, frames, size, rotation, frame rate and "
                    "timestamp regularity, pixel format and bit depth, colour tags, and every stream.",
    )
    parser.add_argument("input", help="video file")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--count-frames", action="store_true",
                        help="read the whole file to count frames and check every timestamp")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = probe(args.input, count_frames=args.count_frames)
    if args.json:
        json.dump(info.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(describe(info))
    return 0


def _size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return ""


def _fps(info: VideoInfo) -> str:
    if not info.average_fps:
        return "unknown"
    fps = info.average_fps
    exact = f" ({fps.numerator}/{fps.denominator})" if fps.denominator != 1 else ""
    return f"{float(fps):.3f}".rstrip("0").rstrip(".") + f" fps average{exact}"


def _timestamps(info: VideoInfo) -> str:
    if info.irregular_timestamps is None:
        return f"too few to judge ({info.timestamps_checked} checked)"
    verdict = "irregular (variable frame rate)" if info.irregular_timestamps else "regular"
    return f"{verdict}, {info.timestamps_checked} checked"


def _scan(info: VideoInfo) -> str:
    order = info.field_order
    if info.scan_type == "interlaced":
        if order in FIELD_ORDER_WORDS:
            return f"interlaced, {FIELD_ORDER_WORDS[order]} ({order})"
        return "interlaced (frames flagged; field order not stated)"
    if info.scan_type == "progressive":
        return "progressive"
    return "not stated (treated as progressive)"


def _stream_line(stream: StreamInfo) -> str:
    parts = [f"#{stream.index}", f"{stream.kind:<10}", stream.codec or "(no decoder)"]
    if stream.kind == "video" and stream.width:
        parts.append(f"{stream.width}x{stream.height} {stream.pix_fmt}")
    if stream.kind == "audio" and stream.sample_rate:
        parts.append(f"{stream.sample_rate} Hz {stream.channel_layout or f'{stream.channels} ch'} "
                     f"{stream.sample_format}")
    if stream.filename:
        parts.append(f"{stream.filename} ({stream.mimetype})")
    if stream.language:
        parts.append(f"lang={stream.language}")
    if stream.title:
        parts.append(f'"{stream.title}"')
    if stream.duration is not None:
        parts.append(f"duration {format_time(stream.duration)}")
    if stream.disposition:
        parts.append("[" + ",".join(stream.disposition) + "]")
    return "  " + " ".join(parts)


def describe(info: VideoInfo) -> str:
    """The plain-text report ``vidgpen probe`` prints."""
    width, height = info.display_size
    if info.frame_count is None:
        frames = "unknown (not stored in the container; use --count-frames)"
    else:
        frames = f"{info.frame_count} ({'counted' if info.frame_count_source == 'counted' else 'from header'})"
    colors = info.color.names
    rows = [
        ("file", f"{info.path} ({_size(info.size_bytes)}, {info.container_long_name})"),
        ("duration", f"{format_time(info.duration)} (starts at {info.start_time:.3f} s)"),
        ("frames", frames),
        ("video", f"stream #{info.video_index}, {info.codec} ({info.codec_long_name})"
                  + (f", profile {info.profile}" if info.profile else "")),
        ("size", f"{info.width}x{info.height}"
                 + (f", shown as {width}x{height}" if (width, height) != (info.width, info.height) else "")
                 + (f", pixel aspect {info.sample_aspect_ratio}" if info.sample_aspect_ratio else "")),
        ("rotation", f"{info.rotation} degrees" + ("" if info.rotation else " (none)")),
        ("scan", _scan(info)),
        ("frame rate", _fps(info)),
        ("timestamps", f"{_timestamps(info)}; time base {info.time_base}"),
        ("pixels", f"{info.pix_fmt}, {info.bit_depth}-bit, {info.chroma_subsampling}"),
        ("color", f"primaries {colors['primaries']}, transfer {colors['transfer']}, "
                  f"matrix {colors['matrix']}, range {colors['range']}"),
    ]
    if info.chapters:
        rows.append(("chapters", str(info.chapters)))
    if info.metadata:
        rows.append(("tags", ", ".join(f"{key}={value}" for key, value in info.metadata.items())))
    lines = [f"{key:<12}{value}" for key, value in rows]
    lines.append(f"streams     {len(info.streams)}")
    lines += [_stream_line(stream) for stream in info.streams]
    return "\n".join(lines) + "\n"
