"""Bad inputs, unsafe outputs, damaged files and bad options: clear one-line errors, no half-written files."""

import dataclasses
import os
from fractions import Fraction

import av
import numpy as np
import pytest

from vidgpen.cli import main
from vidgpen.errors import InputError, OptionError, OutputError, VidgpenError
from vidgpen.video import DamagedVideoWarning, VideoWriter, open_video, probe, transcode
from vidgpen.video.synthetic import SyntheticClip, write_synthetic_clip


# -- bad inputs ------------------------------------------------------------------------------------------

def _missing(tmp_path):
    return tmp_path / "no_such_video.mp4"


def _empty(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    return path


def _text(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("These are my holiday notes, not a video.\n" * 20)
    return path


def _audio_only(tmp_path):
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, index * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _undecodable(tmp_path):
    # AVS3 is a codec FFmpeg knows but this build cannot decode: packets muxed without an encoder.
    path = tmp_path / "avs3.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_mux_stream("avs3", width=64, height=48, time_base=Fraction(1, 1000))
        for index in range(5):
            packet = av.Packet(b"\x00\x00\x01\xb0" + bytes(range(60)))
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, index * 40, index * 40, Fraction(1, 1000)
            out.mux(packet)
    return path


def _folder(tmp_path):
    return tmp_path


def _index_lost(tmp_path):
    # An mp4 whose recording was cut off before its index (moov) was written.
    path = write_synthetic_clip(tmp_path / "cut.mp4", SyntheticClip(frames=30))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_INPUTS = {
    "missing": (_missing, "no such file"),
    "empty": (_empty, "empty (0 bytes)"),
    "text named .mp4": (_text, "not a video file"),
    "audio only": (_audio_only, "no video stream"),
    "undecodable codec": (_undecodable, "cannot be decoded"),
    "folder": (_folder, "is a folder"),
    "index lost": (_index_lost, "not a video file"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises_one_line_input_error(tmp_path, case):
    make, phrase = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        open_video(path)
    message = str(info.value)
    assert phrase in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_through_the_cli_exits_2_with_one_line(tmp_path, capsys, case):
    make, phrase = BAD_INPUTS[case]
    code = main(["probe", str(make(tmp_path))])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidgpen: error: ") and phrase in lines[0]
    assert "Traceback" not in captured.err


# -- output safety -------------------------------------------------------------------------------------

@pytest.fixture
def clip(tmp_path):
    return write_synthetic_clip(tmp_path / "in.mp4", SyntheticClip(frames=12, audio=("aac",)))


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def test_existing_output_needs_overwrite(tmp_path, clip):
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        transcode(clip, dst, preset="ultrafast")
    assert dst.read_bytes() == b"precious"
    transcode(clip, dst, preset="ultrafast", overwrite=True)
    assert probe(dst).frame_count == 12


def test_the_input_is_never_overwritten(tmp_path, clip):
    before = clip.read_bytes()
    link = tmp_path / "same.mp4"
    os.link(clip, link)
    for target in (clip, tmp_path / "." / "in.mp4", link):
        with pytest.raises(OutputError, match="is the input file"):
            transcode(clip, target, overwrite=True)
    assert clip.read_bytes() == before


@pytest.mark.parametrize("name, phrase", [("out.avi", "unknown output extension"),
                                          ("missing_folder/out.mp4", "does not exist"),
                                          ("", "is a folder")])
def test_unusable_destinations(tmp_path, clip, name, phrase):
    with pytest.raises(OutputError, match=phrase):
        transcode(clip, tmp_path / name)


@pytest.mark.parametrize("failure", [RuntimeError("model crashed"), KeyboardInterrupt()])
def test_failure_midway_leaves_nothing_at_the_output(tmp_path, clip, failure):
    dst = tmp_path / "out.mp4"

    def process(frame):
        if frame.index == 6:
            raise failure
        return frame

    with pytest.raises(type(failure)):
        transcode(clip, dst, process=process, preset="ultrafast")
    assert not dst.exists() and leftovers(tmp_path) == []


def test_failure_keeps_the_previous_output_when_overwriting(tmp_path, clip):
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"yesterday's result")

    def process(frame):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        transcode(clip, dst, process=process, overwrite=True)
    assert dst.read_bytes() == b"yesterday's result" and leftovers(tmp_path) == []


def test_the_output_appears_only_when_finished(tmp_path, clip):
    dst = tmp_path / "out.mp4"
    with open_video(clip) as reader:
        with VideoWriter(dst, reader, preset="ultrafast") as writer:
            for frame in reader:
                writer.write(frame)
                assert not dst.exists() and len(leftovers(tmp_path)) == 1
    assert dst.exists() and leftovers(tmp_path) == []


def test_writing_no_frames_is_an_error_and_writes_nothing(tmp_path, clip):
    dst = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match="no video frames"):
        with open_video(clip) as reader, VideoWriter(dst, reader):
            pass
    assert not dst.exists() and leftovers(tmp_path) == []


def test_stream_the_container_cannot_hold_is_an_error_or_dropped(tmp_path, clip):
    dst = tmp_path / "out.webm"  # webm takes no AAC
    with pytest.raises(OutputError) as info:
        transcode(clip, dst)
    assert "stream #1 (audio, aac) cannot go into a .webm file" in str(info.value)
    assert not dst.exists()
    result = transcode(clip, dst, drop_incompatible=True, preset="8")
    assert [d.stream.index for d in result.dropped_streams] == [1]
    assert [s.kind for s in probe(dst).streams] == ["video"]


def test_subtitles_follow_the_same_rule(tmp_path):
    src = write_synthetic_clip(tmp_path / "in.mkv", SyntheticClip(subtitles=True))
    with pytest.raises(OutputError, match=r"stream #1 \(subtitle, subrip\) cannot go into a .mp4"):
        transcode(src, tmp_path / "out.mp4")
    transcode(src, tmp_path / "out.mp4", drop_incompatible=True, preset="ultrafast")
    assert [s.kind for s in probe(tmp_path / "out.mp4").streams] == ["video"]


# -- options -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, phrase", [
    (dict(codec="divx"), "unknown or unavailable video codec"),
    (dict(crf=70), "out of range"),
    (dict(preset="warp"), "unknown preset"),
    (dict(codec="ffv1", crf=10), "has no CRF"),
    (dict(pix_fmt="yuv420p12le"), "cannot encode pixel format"),
    (dict(start=5), "past the end"),
    (dict(start=0.5, end=0.2), "must be after start"),
    (dict(end="soon"), "cannot read time"),
])
def test_bad_options_raise_option_error(tmp_path, clip, options, phrase):
    with pytest.raises(OptionError, match=phrase):
        transcode(clip, tmp_path / "out.mp4", **options)
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.mp4").exists()


def test_codec_the_container_cannot_hold(tmp_path, clip):
    with pytest.raises(OutputError, match="cannot hold h264"):
        transcode(clip, tmp_path / "out.webm", codec="libx264", drop_incompatible=True)


def test_all_errors_are_vidgpen_errors():
    assert issubclass(InputError, VidgpenError) and issubclass(OutputError, VidgpenError)
    assert issubclass(OptionError, VidgpenError)


# -- damaged files -------------------------------------------------------------------------------------

DAMAGE_CLIP = SyntheticClip(width=128, height=96, frames=60, fps=Fraction(30), audio=("aac",),
                            options={"preset": "ultrafast", "g": "10"})


def _truncated(tmp_path, extension, container_options):
    path = write_synthetic_clip(tmp_path / f"full{extension}",
                                dataclasses.replace(DAMAGE_CLIP, container_options=container_options))
    data = path.read_bytes()
    broken = tmp_path / f"broken{extension}"
    broken.write_bytes(data[: int(len(data) * 0.7)])
    return broken


@pytest.mark.parametrize("extension, container_options, declared", [
    (".mkv", {}, None), (".mp4", {"movflags": "+faststart"}, 60)])
def test_truncated_file_is_recovered_and_reported(tmp_path, extension, container_options, declared):
    broken = _truncated(tmp_path, extension, container_options)
    dst = tmp_path / f"out{extension}"
    with pytest.warns(DamagedVideoWarning, match=r"recovered \d+ frames"):
        result = transcode(broken, dst, preset="ultrafast")
    damage = result.damage
    assert damage is not None and damage.cause == "file ends early"
    assert 10 < damage.frames_recovered < 60 and damage.frames_recovered == result.frames_written
    assert damage.expected_frames == declared
    # The damage starts right after the last frame that could be decoded.
    recovered = probe(dst, count_frames=True)
    assert recovered.frame_count == result.frames_written
    assert damage.damage_start == pytest.approx(result.frames_written / 30, abs=0.002)
    assert result.packets_copied > 0  # the audio that survived came along


def test_hole_in_the_middle_is_skipped_and_reported(tmp_path):
    path = write_synthetic_clip(tmp_path / "full.mkv", DAMAGE_CLIP)
    data = bytearray(path.read_bytes())
    start, stop = int(len(data) * 0.4), int(len(data) * 0.6)
    data[start:stop] = bytes(stop - start)
    broken = tmp_path / "hole.mkv"
    broken.write_bytes(bytes(data))
    with pytest.warns(DamagedVideoWarning, match="missing frames"):
        result = transcode(broken, tmp_path / "out.mkv", preset="ultrafast")
    assert 10 < result.frames_written < 60
    assert 0.3 < result.damage.damage_start < 1.5
    assert probe(tmp_path / "out.mkv", count_frames=True).frame_count == result.frames_written


def test_healthy_files_report_no_damage(tmp_path, recwarn):
    path = write_synthetic_clip(tmp_path / "full.mkv", DAMAGE_CLIP)
    result = transcode(path, tmp_path / "out.mkv", preset="ultrafast")
    assert result.damage is None and result.frames_written == 60
    assert not [w for w in recwarn if issubclass(w.category, DamagedVideoWarning)]


def test_audio_running_past_the_video_is_not_damage_and_is_copied_whole(tmp_path, recwarn):
    path = tmp_path / "long_audio.mkv"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt, video.options = 64, 48, "yuv420p", {"preset": "ultrafast"}
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for index in range(10):  # 1 s of video
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8))
            frame.pts, frame.time_base = index, Fraction(1, 10)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        for start in range(0, 2 * 48000, 1024):  # 2 s of audio
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    with av.open(str(path)) as container:
        audio_packets = sum(1 for p in container.demux(audio=0) if p.size)
    result = transcode(path, tmp_path / "out.mkv", preset="ultrafast")
    assert result.damage is None and result.frames_written == 10
    assert result.packets_copied == audio_packets
    assert not [w for w in recwarn if issubclass(w.category, DamagedVideoWarning)]
