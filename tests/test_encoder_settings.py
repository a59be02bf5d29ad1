"""Encoder defaults: a preset that keeps up with the model, and a pinned thread count (x264's bytes depend on it)."""

from __future__ import annotations

import av
import numpy as np

from vidgpen.resume import journal_differences
from vidgpen.video.codecs import ENCODERS, X264_PRESET_CPU_MS_720P, encoder_options, encoder_threads


def test_x264_defaults_are_veryfast_with_pinned_threads():
    options = encoder_options(ENCODERS["libx264"], None, None, "yuv420p")
    assert options["preset"] == "veryfast" and options["crf"] == "18"
    assert options["threads"] == str(encoder_threads()) and 1 <= encoder_threads() <= 16
    assert options["x264-params"] == "cpu-independent=1"
    # The default costs less CPU at 720p than the 256 model at its fastest here (~66 CPU-ms per face: bf16, AMX).
    assert X264_PRESET_CPU_MS_720P["veryfast"] < 66
    assert "threads" not in encoder_options(ENCODERS["libvpx-vp9"], None, None, "yuv420p")


def encode(frames, threads: int) -> bytes:
    import io

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {**encoder_options(ENCODERS["libx264"], None, None, "yuv420p"), "threads": str(threads)}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def test_pinned_thread_count_gives_the_same_bytes():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
    frames = [np.roll(base, 2 * i, axis=1) for i in range(24)]
    assert encode(frames, 2) == encode(frames, 2)


def test_resume_journal_names_a_different_encoder_thread_count():
    saved = {"encoder_threads": 2, "options": {"preset": None}}
    assert journal_differences(saved, {"encoder_threads": 4, "options": {"preset": None}}) == ["encoder_threads"]


def test_help_states_what_each_preset_costs(capsys):
    import pytest

    from vidgpen.cli import main

    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: x264 veryfast" in text
    assert all(f"{name} {ms}" in text for name, ms in X264_PRESET_CPU_MS_720P.items())
