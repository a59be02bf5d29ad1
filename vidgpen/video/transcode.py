"""Decode, optionally change, and re-encode a whole video in one call (tests, benchmarks, simple scripts)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


from vidgpen.video.frame import VideoFrame
from vidgpen.video.reader import DamageReport, open_video
from vidgpen.video.writer import DroppedStream, VideoWriter

FrameProcessor = Callable[[VideoFrame], "VideoFrame | np.ndarray"]


@dataclass(frozen=True)
class TranscodeResult:
    """What :func:`transcode` did."""

    output: Path
    frames_written: int
    packets_copied: int
    encoder: str
    pix_fmt: str
    dropped_streams: tuple[DroppedStream, ...]
    damage: DamageReport | None


def transcode(src: str | Path, dst: str | Path, process: FrameProcessor | None = None, *,
              start: float | str | None = None, end: float | str | None = None,
              **writer_options) -> TranscodeResult:
    """Re-encode ``src`` into ``dst`` frame by frame, copying every other stream untouched.

    Args:
        process: called with each :class:`VideoFrame`; returns a new frame or just a new ``[H, W, 3]``
            uint8 RGB image. None: identity pass.
        start, end: trim range (see :func:`open_video`).
        writer_options: keyword arguments of :class:`VideoWriter` (codec, crf, preset, pix_fmt, overwrite,
            drop_incompatible, frame_size).
    """
    with open_video(src, start=start, end=end) as reader:
        writer = VideoWriter(dst, reader, **writer_options)
        with writer:
            for frame in reader:
                if process is not None:
                    result = process(frame)
                    frame = result if isinstance(result, VideoFrame) else dataclasses.replace(frame, image=result)
                writer.write(frame)
        return TranscodeResult(
            output=writer.dst, frames_written=writer.frames_written, packets_copied=writer.packets_copied,
            encoder=writer.encoder.encoder, pix_fmt=writer.pix_fmt,
            dropped_streams=tuple(writer.dropped_streams), damage=reader.damage,
        )
