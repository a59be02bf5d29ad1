"""probe() and `vidgpen probe`: the facts about a video, checked against clips whose facts we chose."""

import json
from fractions import Fraction

import pytest

from vidgpen.cli import main
from vidgpen.video import ColorTags, probe
from vidgpen.video.probe import TimestampRegularity
from vidgpen.video.synthetic import SyntheticClip, write_synthetic_clip

RICH = SyntheticClip(width=96, height=64, frames=20, fps=Fraction(30000, 1001), audio=("aac", "aac"),
                     subtitles=True, rotation=90, color=ColorTags(1, 1, 1, 1), chapters=3,
                     metadata={"title": "Beach 1994"})


@pytest.fixture(scope="module")
def rich_clip(tmp_path_factory):
    return write_synthetic_clip(tmp_path_factory.mktemp("probe") / "beach.mp4", RICH)


def test_probe_reports_the_facts_the_clip_was_made_with(rich_clip):
    info = probe(rich_clip)
    assert (info.width, info.height, info.display_size, info.rotation) == (96, 64, (64, 96), 90)
    assert info.codec == "h264" and info.video_index == 0
    assert info.frame_count == 20 and info.frame_count_source == "header"
    assert info.average_fps == Fraction(30000, 1001)
    assert info.duration == pytest.approx(20 * 1001 / 30000, abs=0.01)
    assert info.video_duration == pytest.approx(20 * 1001 / 30000, abs=1e-9)
    assert info.irregular_timestamps is False and info.timestamps_checked == 20
    assert (info.pix_fmt, info.bit_depth, info.chroma_subsampling) == ("yuv420p", 8, "4:2:0")
    assert info.color.names == {"primaries": "bt709", "transfer": "bt709", "matrix": "bt709", "range": "tv"}
    assert info.metadata["title"] == "Beach 1994" and info.chapters == 3
    kinds = [(s.kind, s.codec) for s in info.streams]
    assert kinds[:4] == [("video", "h264"), ("audio", "aac"), ("audio", "aac"), ("subtitle", "mov_text")]
    audio = info.streams[1]
    assert (audio.sample_rate, audio.channels, audio.channel_layout) == (48000, 2, "stereo")
    assert info.streams[3].language == "eng"


def test_ten_bit_full_range_facts(tmp_path):
    path = write_synthetic_clip(tmp_path / "ten.mkv", SyntheticClip(
        pix_fmt="yuv422p10le", color=ColorTags(9, 18, 9, 2), frames=5))
    info = probe(path)
    assert (info.pix_fmt, info.bit_depth, info.chroma_subsampling) == ("yuv422p10le", 10, "4:2:2")
    assert info.color.names == {"primaries": "bt2020", "transfer": "arib-std-b67", "matrix": "bt2020nc",
                                "range": "pc"}
    # Matroska stores no frame count: unknown until counted.
    assert info.frame_count is None and info.frame_count_source == "unknown"
    counted = probe(path, count_frames=True)
    assert counted.frame_count == 5 and counted.frame_count_source == "counted"


def test_variable_frame_rate_is_detected(tmp_path):
    vfr = write_synthetic_clip(tmp_path / "vfr.mkv", SyntheticClip(
        time_base=Fraction(1, 1000), pts=(0, 33, 100, 120, 200, 233, 300, 400, 433, 500)))
    assert probe(vfr).irregular_timestamps is True


def test_millisecond_rounding_is_not_variable_frame_rate(tmp_path):
    # 29.97 fps in a 1 ms time base: steps of 33 and 34 ms are one regular cadence.
    cfr = write_synthetic_clip(tmp_path / "cfr.mkv", SyntheticClip(fps=Fraction(30000, 1001), frames=40))
    info = probe(cfr)
    assert info.time_base == Fraction(1, 1000) and info.irregular_timestamps is False


@pytest.mark.parametrize("timestamps, expected", [
    ([0, 512, 1024, 1536, 2048], False),
    ([0, 1024, 512, 2048, 1536, 3072, 2560], False),  # decode order of B-frames, regular once sorted
    ([0, 33, 67, 100, 133, 167, 200, 233], False),
    ([0, 33, 80, 100, 170, 200], True),
    ([0, 100, 200, 400, 500], True),  # a dropped frame is an irregular step too
    ([0, 100], None),
])
def test_timestamp_regularity(timestamps, expected):
    judge = TimestampRegularity()
    for pts in timestamps:
        judge.add(pts)
    assert judge.irregular() is expected


def test_cli_probe_prints_readable_facts(rich_clip, capsys):
    assert main(["probe", str(rich_clip)]) == 0
    out = capsys.readouterr().out
    for fact in ("frames      20 (from header)", "96x64, shown as 64x96", "rotation    90 degrees",
                 "29.97 fps average (30000/1001)", "regular, 20 checked",
                 "yuv420p, 8-bit, 4:2:0", "primaries bt709, transfer bt709, matrix bt709, range tv",
                 "title=Beach 1994", "#1 audio      aac 48000 Hz stereo fltp",
                 "#3 subtitle   mov_text lang=eng"):
        assert fact in out, fact


def test_cli_probe_json_matches_the_library(rich_clip, capsys):
    assert main(["probe", "--json", str(rich_clip)]) == 0
    data = json.loads(capsys.readouterr().out)
    info = probe(rich_clip)
    assert data["frame_count"] == info.frame_count == 20
    assert data["rotation"] == 90 and data["display_size"] == [64, 96]
    assert data["average_fps"] == "30000/1001" and data["irregular_timestamps"] is False
    assert data["color"]["matrix"] == "bt709" and data["color"]["codes"]["matrix"] == 1
    assert [s["kind"] for s in data["streams"]][:4] == ["video", "audio", "audio", "subtitle"]
    assert data["streams"][3]["language"] == "eng"


def test_cli_probe_count_frames(tmp_path, capsys):
    path = write_synthetic_clip(tmp_path / "x.webm", SyntheticClip(
        codec="libvpx-vp9", options={"cpu-used": "8", "deadline": "realtime"}, frames=7))
    assert main(["probe", str(path)]) == 0
    assert "frames      unknown" in capsys.readouterr().out
    assert main(["probe", "--count-frames", str(path)]) == 0
    assert "frames      7 (counted)" in capsys.readouterr().out
