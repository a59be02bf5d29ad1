"""Small synthetic videos written with PyAV, for tests, benchmarks and bug reports.

Every property the writer must preserve can be set: codec and pixel format (10-bit too), frame timing
(variable frame rate via explicit timestamps), display rotation, colour tags, several audio tracks,
subtitles, container and stream metadata, chapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidgpen.video.color import LEFT_SITED_CODECS, ColorTags, RgbToYuv

# Subtitle codec each container takes.
SUBTITLE_CODECS = {".mkv": "subrip", ".mp4": "mov_text", ".mov": "mov_text", ".webm": "webvtt"}


@dataclass(frozen=True)
class SyntheticClip:
    """What to write. ``pts`` (in ``time_base`` units) overrides the regular ``fps`` cadence."""

    width: int = 64
    height: int = 48
    frames: int = 15
    fps: Fraction = Fraction(15)
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    options: dict[str, str] = field(default_factory=lambda: {"preset": "ultrafast"})
    time_base: Fraction | None = None
    pts: tuple[int, ...] | None = None
    audio: tuple[str, ...] = ()  # one encoder name per audio track, e.g. ("aac", "aac")
    audio_rate: int = 48000
    subtitles: bool = False
    moving_square: bool = True
    container_options: dict[str, str] = field(default_factory=dict)
    rotation: int = 0
    color: ColorTags = ColorTags()
    metadata: dict[str, str] = field(default_factory=dict)
    chapters: int = 0

    def frame_times(self) -> list[Fraction]:
        """Presentation time of every frame in seconds."""
        if self.pts is not None:
            return [p * self.video_time_base for p in self.pts]
        return [Fraction(i) / Fraction(self.fps) for i in range(self.frames)]

    @property
    def video_time_base(self) -> Fraction:
        return self.time_base if self.time_base is not None else 1 / Fraction(self.fps)


def synthetic_image(index: int, width: int, height: int, high_bit: bool = False,
                    moving_square: bool = True) -> np.ndarray:
    """A smooth colour gradient (which drifts with ``index``) and a bright square moving one step per frame.

    Returns ``[height, width, 3]`` uint8 RGB, or uint16 on the 0..65535 scale with ``high_bit`` (the
    gradient then has more than 256 levels, which only a >8-bit path can keep). Without the square the
    picture has no sharp edges, so 4:2:0 chroma subsampling loses almost nothing.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = x / max(width - 1, 1)
    green = y / max(height - 1, 1)
    blue = 0.5 + 0.25 * np.sin((x + y + 3 * index) / 7.0)
    image = np.stack([0.1 + 0.8 * red, 0.1 + 0.8 * green, blue], axis=2)
    if moving_square:
        size = max(4, min(width, height) // 4)
        left = (index * 3) % max(width - size, 1)
        top = (index * 2) % max(height - size, 1)
        image[top:top + size, left:left + size] = (0.95, 0.9, 0.85)
    if high_bit:
        return np.round(image * 65535).astype(np.uint16)
    return np.round(image * 255).astype(np.uint8)


def _add_audio_track(out: av.container.OutputContainer, codec: str, rate: int):
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "stereo"
    return stream


def _audio_frames(stream, seconds: float, rate: int, track: int):
    """Sine tones (a different pitch per track), 1024 samples per frame."""
    sample_format = stream.codec_context.codec.audio_formats[0].name
    total = int(round(seconds * rate))
    for start in range(0, total, 1024):
        count = min(1024, total - start)
        t = (np.arange(start, start + count) / rate)[None, :]
        wave = 0.2 * np.sin(2 * np.pi * (220.0 * (track + 1)) * t) * np.ones((2, 1))
        if sample_format.startswith("s16"):
            samples = (wave * 32767).astype(np.int16)
            layout = samples if sample_format.endswith("p") else samples.T.reshape(1, -1)
        else:
            samples = wave.astype(np.float32)
            layout = samples if sample_format.endswith("p") else samples.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(layout), format=sample_format, layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        yield frame


def _subtitle_payload(codec: str, text: str) -> bytes:
    data = text.encode()
    if codec == "mov_text":  # 3GPP timed text: 16-bit big-endian length, then the text
        return len(data).to_bytes(2, "big") + data
    return data


def write_synthetic_clip(path: str | Path, clip: SyntheticClip = SyntheticClip()) -> Path:
    """Write ``clip`` to ``path`` (container from the extension) and return the path."""
    path = Path(path)
    high_bit = max(c.bits for c in av.VideoFormat(clip.pix_fmt).components) > 8
    times = clip.frame_times()
    duration = float(times[-1] + (times[-1] - times[-2] if len(times) > 1 else 1 / Fraction(clip.fps)))
    with av.open(str(path), "w", options=dict(clip.container_options)) as out:
        video = out.add_stream(clip.codec, rate=Fraction(clip.fps))
        video.width, video.height, video.pix_fmt = clip.width, clip.height, clip.pix_fmt
        video.options = dict(clip.options)
        video.codec_context.time_base = clip.video_time_base
        video.time_base = clip.video_time_base
        clip.color.apply_to(video.codec_context)
        if clip.rotation:
            video.set_display_rotation(clip.rotation)
        audio_streams = [_add_audio_track(out, codec, clip.audio_rate) for codec in clip.audio]
        subtitle_stream = None
        if clip.subtitles:
            codec = SUBTITLE_CODECS[path.suffix.lower()]
            subtitle_stream = out.add_mux_stream(codec, time_base=Fraction(1, 1000))
            subtitle_stream.metadata["language"] = "eng"
        out.metadata.update(clip.metadata)
        if clip.chapters:
            step = duration / clip.chapters
            out.set_chapters([
                {"id": i + 1, "start": round(i * step * 1000), "end": round((i + 1) * step * 1000),
                 "time_base": Fraction(1, 1000), "metadata": {"title": f"Chapter {i + 1}"}}
                for i in range(clip.chapters)
            ])

        family = av.Codec(clip.codec, "w").canonical_name
        to_yuv = RgbToYuv(clip.width, clip.height, high_bit, clip.pix_fmt, clip.color,
                          "left" if family in LEFT_SITED_CODECS else "unknown")
        for index, when in enumerate(times):
            frame = to_yuv(synthetic_image(index, clip.width, clip.height, high_bit, clip.moving_square))
            frame.pts = round(when / clip.video_time_base)
            frame.time_base = clip.video_time_base
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)

        for track, stream in enumerate(audio_streams):
            for frame in _audio_frames(stream, duration, clip.audio_rate, track):
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)

        if subtitle_stream is not None:
            step_ms = max(1, int(duration * 1000) // 4)
            for i in range(4):
                packet = av.Packet(_subtitle_payload(SUBTITLE_CODECS[path.suffix.lower()], f"Line {i + 1}"))
                packet.stream = subtitle_stream
                packet.pts = packet.dts = i * step_ms
                packet.duration = step_ms // 2
                packet.time_base = Fraction(1, 1000)
                out.mux(packet)
    return path


def write_packed_bframe_avi(path: str | Path, images: list[np.ndarray], fps: int = 25,
                            audio: bool = True) -> Path:
    """Write ``images`` (``[H, W, 3]`` uint8 RGB each) as MPEG-4 part 2 in AVI with DivX-style packed B-frames.

    This is how DivX 5 and XviD stored B-frames: each B-frame rides in the same AVI chunk as the P-frame
    before it, and a 6-byte not-coded VOP fills the B-frame's own slot. FFmpeg decodes such a file with
    frames in display order but labelled out of order (1, 3, 2, 5, 4, ...), the case the reader must time
    right. The VOL header carries DivX's "p" (packed) build string so FFmpeg unpacks the chunks. ``audio``
    adds a PCM track as long as the video.
    """
    path = Path(path)
    height, width = images[0].shape[:2]
    encoder = av.CodecContext.create("mpeg4", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, fps), Fraction(fps)
    encoder.max_b_frames = 1
    encoder.options = {"bf": "1", "g": "12", "qscale": "3"}
    encoded: list[tuple[bytes, int]] = []
    for index, image in enumerate([*images, None]):
        frame = None
        if image is not None:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, fps)
        encoded += [(bytes(packet), packet.pts) for packet in encoder.encode(frame)]
    # DivX's user data "DivX503b1393p" marks a packed bitstream; it replaces the encoder's own user data.
    first = encoded[0][0]
    start = first.index(b"\x00\x00\x01\xb2") + 4
    end = first.index(b"\x00\x00\x01", start)
    encoded[0] = (first[:start] + b"DivX503b1393p" + first[end:], encoded[0][1])
    chunks, position = [], 0
    while position < len(encoded):
        data, pts = encoded[position]
        following = encoded[position + 1] if position + 1 < len(encoded) else None
        if following is not None and following[1] < pts:  # a B-frame after its P-frame: pack them
            chunks += [data + following[0], _not_coded_vop(fps)]
            position += 2
        else:
            chunks.append(data)
            position += 1
    with av.open(str(path), "w", format="avi") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        sound = out.add_stream("pcm_s16le", rate=48000) if audio else None
        if sound is not None:
            sound.layout = "stereo"
        out.start_encoding()
        for index, data in enumerate(chunks):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts, packet.time_base = video, index, index, Fraction(1, fps)
            packet.is_keyframe = index == 0
            out.mux(packet)
        if sound is not None:
            for frame in _audio_frames(sound, len(images) / fps, 48000, 0):
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return path


def _not_coded_vop(fps: int) -> bytes:
    """An MPEG-4 VOP header with vop_coded = 0 (a "drop" placeholder), for a time resolution of ``fps``."""
    increment_bits = max(1, (fps - 1).bit_length())
    # vop_coding_type P, modulo_time_base 0, marker, vop_time_increment 0, marker, vop_coded 0
    bits = "01" + "0" + "1" + "0" * increment_bits + "1" + "0"
    bits += "0" + "1" * ((8 - (len(bits) + 1) % 8) % 8)  # stuffing to the byte boundary
    return b"\x00\x00\x01\xb6" + int(bits, 2).to_bytes(len(bits) // 8, "big")
