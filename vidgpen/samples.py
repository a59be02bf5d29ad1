"""Degraded face clips made from public-domain material, for the sample, the tests and the benchmarks.

The face is NASA's astronaut portrait (``skimage.data.astronaut()``, public domain). It drifts and zooms slowly
across the frame like a hand-held shot, and every frame is degraded the way old footage is: softened, with
fresh sensor noise, then compressed. Audio is a quiet two-tone AAC track so stream copying can be checked.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def astronaut_rgb() -> np.ndarray:
    """``[512, 512, 3]`` uint8 RGB (scikit-image's copy of the NASA portrait)."""
    from skimage import data

    return data.astronaut()


def face_clip_matrix(index: int, width: int, height: int, fps: float) -> np.ndarray:
    """The ``[2, 3]`` float64 affine map from portrait pixels to frame ``index`` pixels (so tests know where the
    face is in every frame)."""
    t = index / fps
    scale = height / 400 * (1.0 + 0.06 * math.sin(2 * math.pi * t / 3.0))    # slow zoom
    angle = 3.0 * math.sin(2 * math.pi * t / 4.0)                             # slight roll, degrees
    cx = width * (0.5 + 0.12 * math.sin(2 * math.pi * t / 5.0))                # drift
    cy = height * (0.55 + 0.05 * math.cos(2 * math.pi * t / 4.0))
    # portrait face centre is about (225, 125) in the 512x512 image
    matrix = cv2.getRotationMatrix2D((225.0, 125.0), angle, scale)
    matrix[:, 2] += (cx - 225.0, cy - 125.0)
    return matrix


def face_clip_frame(index: int, width: int, height: int, fps: float, noise: float,
                    rng: np.random.Generator, portrait: np.ndarray) -> np.ndarray:
    """Frame ``index`` of the clip: ``[height, width, 3]`` uint8 RGB."""
    matrix = face_clip_matrix(index, width, height, fps)
    frame = cv2.warpAffine(portrait, matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    # degrade: lose resolution, add fresh noise every frame
    small = cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    frame = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if noise > 0:
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
    return frame


def write_face_clip(path: str | Path, *, frames: int = 48, width: int = 640, height: int = 360, fps: int = 24,
                    noise: float = 10.0, crf: int = 20, audio: bool = True, seed: int = 0,
                    keyframe_interval: int | None = None) -> Path:
    """Write the degraded astronaut clip (H.264 + AAC) to ``path`` and return it; ``keyframe_interval`` forces a
    keyframe every that many frames (default: the encoder's choice, one in 250)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    portrait = astronaut_rgb()
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        # cpu-independent: without it x264's CPU-specific code made two writes of the same frames differ here.
        video.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "cpu-independent=1"}
        if keyframe_interval is not None:
            video.options = dict(video.options, g=str(keyframe_interval), keyint_min=str(keyframe_interval),
                                 sc_threshold="0")
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=48000)
            sound.layout = "stereo"
        for index in range(frames):
            image = face_clip_frame(index, width, height, fps, noise, rng, portrait)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            _encode(out, video, frame)
        _encode(out, video, None)  # flush
        if sound is not None:
            _write_tone(out, sound, frames / fps)
    return path


def _write_tone(out, stream, seconds: float) -> None:
    rate, chunk = 48000, 1024
    total = int(seconds * rate)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        left = 0.1 * np.sin(2 * np.pi * 440 * t)
        right = 0.1 * np.sin(2 * np.pi * 660 * t)
        samples = np.stack([left, right]).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        _encode(out, stream, frame)
    _encode(out, stream, None)  # flush


def _encode(out, stream, frame) -> None:
    """Encode one frame (None flushes the encoder) and mux whatever packets come out."""
    for packet in stream.encode(frame):
        out.mux(packet)
