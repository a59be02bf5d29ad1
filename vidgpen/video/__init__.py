"""Video I/O that loses nothing: lazy decoding, re-encoding with the input's timestamps, stream copy.

Decode ``open_video`` -> :class:`VideoFrame` records -> :class:`VideoWriter`, or call :func:`transcode`.
Everything is PyAV; no ffmpeg subprocess.
"""

from vidgpen.video.color import ColorTags
from vidgpen.video.frame import VideoFrame, round_to_8bit
from vidgpen.video.probe import StreamInfo, VideoInfo, probe
from vidgpen.video.reader import DamagedVideoWarning, DamageReport, TimeRange, VideoReader, open_video
from vidgpen.video.timecode import format_time, parse_time
from vidgpen.video.transcode import TranscodeResult, transcode
from vidgpen.video.writer import DroppedStream, VideoWriter

__all__ = [
    "ColorTags", "DamageReport", "DamagedVideoWarning", "DroppedStream", "StreamInfo", "TimeRange",
    "TranscodeResult", "VideoFrame", "VideoInfo", "VideoReader", "VideoWriter", "format_time",
    "open_video", "parse_time", "probe", "round_to_8bit", "transcode",
]
