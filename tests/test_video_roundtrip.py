"""Identity passes through VideoReader -> VideoWriter keep everything but the re-encoded pictures.

Every clip is generated here with PyAV (vidgpen.video.synthetic) in tmp_path.
"""

import dataclasses
import hashlib
import weakref
from fractions import Fraction

import av
import numpy as np
import pytest

from vidgpen.video import ColorTags, VideoFrame, VideoWriter, open_video, probe, transcode
from vidgpen.video.color import SWS_FLAGS
from vidgpen.video.synthetic import SyntheticClip, synthetic_image, write_synthetic_clip
from vidgpen.video.writer import merge_high_bit

FAST = {"preset": "ultrafast"}


def frame_times(path):
    """Presentation times (exact fractions of a second) of the decoded video frames."""
    with av.open(str(path)) as container:
        return [frame.pts * frame.time_base for frame in container.decode(video=0)]


def frame_pts(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.time_base, [frame.pts for frame in container.decode(stream)]


def packet_digests(path, stream_index, shift_seconds=Fraction(0)):
    """(time in seconds, sha256 of payload) of every data packet of one stream."""
    with av.open(str(path)) as container:
        stream = container.streams[stream_index]
        return [(p.pts * p.time_base - shift_seconds, hashlib.sha256(bytes(p)).hexdigest())
                for p in container.demux(stream) if p.size]


def decoded_rgb(path, fmt="rgb24"):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format=fmt, interpolation=SWS_FLAGS).astype(np.float64)
                         for f in container.decode(video=0)])


def psnr(a, b, peak=255.0):
    mse = np.mean((a - b) ** 2)
    return 10 * np.log10(peak * peak / mse) if mse else float("inf")


def test_identity_mp4_keeps_timing_streams_rotation_color_and_tags(tmp_path):
    clip = SyntheticClip(width=96, height=64, frames=15, audio=("aac", "aac"), subtitles=True, rotation=90,
                         color=ColorTags(1, 1, 1, 1), chapters=2,
                         metadata={"title": "Family 1987", "creation_time": "1987-06-05T04:03:02.000000Z"})
    src = write_synthetic_clip(tmp_path / "in.mp4", clip)
    dst = tmp_path / "out.mp4"

    result = transcode(src, dst, preset="ultrafast")

    assert result.frames_written == 15 and result.encoder == "libx264"
    assert frame_pts(dst) == frame_pts(src)
    # Both audio tracks and the subtitles, packet for packet, byte for byte, at the same times.
    for index in (1, 2, 3):
        original = packet_digests(src, index)
        assert original and packet_digests(dst, index) == original
    before, after = probe(src), probe(dst)
    assert after.frame_count == 15
    assert (after.rotation, after.display_matrix) == (before.rotation, before.display_matrix) == (
        90, before.display_matrix)
    assert after.color == before.color == ColorTags(1, 1, 1, 1)
    assert after.metadata["title"] == "Family 1987"
    assert after.metadata["creation_time"] == "1987-06-05T04:03:02.000000Z"
    assert after.chapters == 2
    assert [(s.kind, s.codec, s.language, s.disposition) for s in after.streams[:4]] == \
           [(s.kind, s.codec, s.language, s.disposition) for s in before.streams[:4]]
    # The pictures themselves went through RGB and a fresh encode, nearly unchanged.
    assert psnr(decoded_rgb(src), decoded_rgb(dst)) > 38


@pytest.mark.parametrize("extension, family, audio", [(".mp4", "h264", "aac"), (".mov", "h264", "aac"),
                                                      (".mkv", "h264", "flac"), (".webm", "vp9", "libopus")])
def test_every_output_container_keeps_frames_and_copies_audio(tmp_path, extension, family, audio):
    # webm cannot hold H.264, so the default falls back to VP9 there.
    src = write_synthetic_clip(tmp_path / "in.mkv", SyntheticClip(audio=(audio,), time_base=Fraction(1, 1000)))
    dst = tmp_path / f"out{extension}"

    result = transcode(src, dst, preset="ultrafast" if family == "h264" else "8")

    assert probe(dst).codec == family and result.frames_written == 15
    assert frame_times(dst) == frame_times(src)
    assert packet_digests(dst, 1) == packet_digests(src, 1)


def test_input_codec_family_is_kept_when_possible(tmp_path):
    src = write_synthetic_clip(tmp_path / "in.webm", SyntheticClip(
        codec="libvpx-vp9", options={"cpu-used": "8", "deadline": "realtime"}, audio=("libopus",)))
    result = transcode(src, tmp_path / "out.mkv", preset="8")
    assert result.encoder == "libvpx-vp9"
    assert probe(tmp_path / "out.mkv").codec == "vp9"


@pytest.mark.parametrize("extension, time_base, pts", [
    (".mkv", Fraction(1, 1000), (0, 40, 73, 140, 150, 230, 300, 333, 420, 500, 517, 600)),
    (".mp4", Fraction(1, 90000), (0, 3003, 9009, 10010, 18000, 21021, 33000, 36036, 45045, 47000)),
])
def test_variable_frame_rate_timestamps_are_kept_exactly(tmp_path, extension, time_base, pts):
    src = write_synthetic_clip(tmp_path / f"in{extension}", SyntheticClip(time_base=time_base, pts=pts,
                                                                         audio=("aac",)))
    assert probe(src).irregular_timestamps is True
    dst = tmp_path / f"out{extension}"
    transcode(src, dst, preset="ultrafast")
    assert frame_pts(dst) == (time_base, list(pts))
    assert probe(dst).irregular_timestamps is True


def test_variable_frame_rate_survives_a_change_of_container(tmp_path):
    time_base = Fraction(1, 90000)
    pts = (0, 3003, 9009, 10010, 18000, 21021, 33000, 36036, 45045, 47000)
    src = write_synthetic_clip(tmp_path / "in.mp4", SyntheticClip(time_base=time_base, pts=pts, audio=("aac",)))
    dst = tmp_path / "out.mkv"
    transcode(src, dst, preset="ultrafast")
    # Matroska stores milliseconds, and shifts every stream by the AAC priming delay so that no timestamp is
    # negative: the steps between frames are the input's to the millisecond, and audio moves with them.
    times = frame_times(dst)
    shift = times[0]
    assert 0 <= shift < Fraction(1, 20)
    assert len(times) == len(pts)
    assert all(abs(t - shift - p * time_base) <= Fraction(1, 1000) for t, p in zip(times, pts))
    audio_in, audio_out = packet_digests(src, 1), packet_digests(dst, 1)
    assert [d for _, d in audio_out] == [d for _, d in audio_in]
    assert all(abs(t_out - shift - t_in) <= Fraction(1, 1000) for (t_in, _), (t_out, _) in zip(audio_in, audio_out))


def test_ten_bit_h264_stays_ten_bit_h264(tmp_path):
    src = write_synthetic_clip(tmp_path / "in.mp4", SyntheticClip(pix_fmt="yuv420p10le", audio=("aac",)))
    result = transcode(src, tmp_path / "out.mp4", preset="ultrafast")
    info = probe(tmp_path / "out.mp4")
    assert (result.pix_fmt, info.pix_fmt, info.bit_depth, info.codec) == ("yuv420p10le", "yuv420p10le", 10, "h264")
    assert psnr(decoded_rgb(src, "rgb48le"), decoded_rgb(tmp_path / "out.mp4", "rgb48le"), peak=65535.0) > 40


def test_ten_bit_hevc_stays_ten_bit_hevc_with_hdr_tags(tmp_path):
    hdr = ColorTags(primaries=9, transfer=16, matrix=9, range=1)  # BT.2020 / PQ
    src = write_synthetic_clip(tmp_path / "in.mkv", SyntheticClip(
        codec="libx265", pix_fmt="yuv420p10le", color=hdr,
        options={"preset": "ultrafast", "x265-params": "log-level=error"}))
    transcode(src, tmp_path / "out.mkv", preset="ultrafast")
    info = probe(tmp_path / "out.mkv")
    assert (info.codec, info.pix_fmt, info.color) == ("hevc", "yuv420p10le", hdr)


def stored_planes(path):
    """The decoded Y, U, V code values of every frame, stacked."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray().astype(np.float64) for f in container.decode(video=0)])


def test_high_bit_precision_survives_where_the_pipeline_changed_nothing(tmp_path):
    # Lossless FFV1 in and out isolates vidgpen's own conversions from codec loss.
    src = write_synthetic_clip(tmp_path / "in.mkv", SyntheticClip(codec="ffv1", options={}, pix_fmt="yuv420p10le",
                                                                 frames=4, moving_square=False))
    transcode(src, tmp_path / "high.mkv")
    transcode(src, tmp_path / "eight.mkv", process=lambda frame: dataclasses.replace(frame, image_high=None))
    reference = stored_planes(src)  # 10-bit code values
    error_high = np.abs(stored_planes(tmp_path / "high.mkv") - reference).mean()
    error_eight = np.abs(stored_planes(tmp_path / "eight.mkv") - reference).mean()
    # Through 8 bits every value is rounded to a multiple of ~4 codes; the high-bit path keeps them.
    assert error_high < 0.15 and error_eight > 0.35, (error_high, error_eight)


def test_merge_high_bit_takes_changed_pixels_from_the_8bit_image():
    image_high = np.array([[[1000, 30000, 65535], [257 * 7 + 100, 0, 129]]], dtype=np.uint16)
    untouched = ((image_high.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    edited = untouched.copy()
    edited[0, 1] = (9, 9, 9)
    merged = merge_high_bit(edited, image_high)
    assert merged[0, 0].tolist() == image_high[0, 0].tolist()
    assert merged[0, 1].tolist() == [9 * 257] * 3


COLOR_CASES = [ColorTags(1, 1, 1, 1), ColorTags(6, 6, 6, 2), ColorTags(9, 16, 9, 1), ColorTags()]


@pytest.mark.parametrize("tags", COLOR_CASES, ids=lambda t: "-".join(t.names.values()))
def test_identity_pass_does_not_shift_colours(tmp_path, tags):
    # Lossless H.264 both ways, so any difference is vidgpen's RGB <-> YUV handling (matrix, range, siting).
    clip = SyntheticClip(frames=3, color=tags, moving_square=False, options={"preset": "ultrafast", "crf": "0"})
    src = write_synthetic_clip(tmp_path / "in.mkv", clip)
    dst = tmp_path / "out.mkv"
    transcode(src, dst, crf=0, preset="ultrafast")
    before, after = decoded_rgb(src), decoded_rgb(dst)
    assert probe(dst).color == tags
    assert np.abs((after - before).mean(axis=(0, 1, 2))).max() < 0.05
    assert np.abs(after - before).mean() < 0.1
    # The same comparison sees a wrong matrix at once: the check above is sensitive.
    with av.open(str(dst)) as container:
        wrong = np.stack([f.to_ndarray(format="rgb24", interpolation=SWS_FLAGS,
                                       src_colorspace="ITU601" if tags.matrix in (1, 9) else "ITU709")
                          for f in container.decode(video=0)]).astype(np.float64)
    assert np.abs(wrong - before).mean() > 2


def test_trim_cuts_video_and_copied_streams_at_the_same_times(tmp_path):
    clip = SyntheticClip(frames=30, fps=Fraction(15), audio=("aac",), subtitles=True, time_base=Fraction(1, 1000))
    src = write_synthetic_clip(tmp_path / "in.mkv", clip)
    dst = tmp_path / "out.mkv"

    result = transcode(src, dst, start="00:00:00.5", end=1.5, preset="ultrafast")

    start, end = Fraction(1, 2), Fraction(3, 2)
    expected = [t - start for t in frame_times(src) if start <= t < end]
    assert frame_times(dst) == expected and result.frames_written == len(expected) == 15
    for index in (1, 2):  # audio, subtitles: same bytes, shifted by exactly 0.5 s
        kept = [(t, digest) for t, digest in packet_digests(src, index, shift_seconds=start)
                if 0 <= t < end - start]
        assert kept and packet_digests(dst, index) == kept


def test_trim_of_an_mp4_with_different_time_bases(tmp_path):
    src = write_synthetic_clip(tmp_path / "in.mp4", SyntheticClip(frames=30, audio=("aac",)))
    dst = tmp_path / "out.mp4"
    transcode(src, dst, start=1, preset="ultrafast")
    start = Fraction(1)
    assert frame_times(dst) == [t - start for t in frame_times(src) if t >= start]
    kept = [(t, d) for t, d in packet_digests(src, 1, shift_seconds=start) if t >= 0]
    copied = packet_digests(dst, 1)
    assert [d for _, d in copied] == [d for _, d in kept]
    # mp4 edit lists count in milliseconds, so audio that starts between two milliseconds moves < 1 ms.
    assert all(abs(t_out - t_in) < Fraction(1, 1000) for (t_out, _), (t_in, _) in zip(copied, kept))


def test_compare_mode_writes_frames_of_another_size(tmp_path):
    src = write_synthetic_clip(tmp_path / "in.mp4", SyntheticClip(audio=("aac",)))
    dst = tmp_path / "side_by_side.mp4"
    result = transcode(src, dst, process=lambda frame: np.concatenate([frame.image, frame.image], axis=1),
                       frame_size=(128, 48), preset="ultrafast")
    info = probe(dst)
    assert (info.width, info.height, result.frames_written) == (128, 48, 15)
    assert frame_pts(dst) == frame_pts(src)
    halves, original = decoded_rgb(dst), decoded_rgb(src)
    # Chroma bleeds a few pixels across the seam between the halves; compare away from it.
    assert psnr(halves[:, :, :60], original[:, :, :60]) > 38
    assert psnr(halves[:, :, 68:], original[:, :, 4:]) > 38


def test_reader_yields_documented_records_lazily(tmp_path):
    src = write_synthetic_clip(tmp_path / "in.mov", SyntheticClip(rotation=-90, width=64, height=48))
    alive = []
    with open_video(src) as reader:
        assert reader.info.display_size == (48, 64) and reader.info.rotation == -90
        frames = iter(reader)
        first = next(frames)
        assert reader.frames_read == 1  # nothing decoded ahead into frame records
        previous = first
        alive.append(weakref.ref(first.image))
        del first
        for frame in frames:
            assert isinstance(frame, VideoFrame) and frame.time_base == reader.info.time_base
            assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8  # stored size, not rotated
            assert not frame.image.flags.writeable and frame.image_high is None
            assert frame.index == previous.index + 1 and frame.pts > previous.pts
            alive.append(weakref.ref(frame.image))
            previous = frame
        del frame
    assert previous.index == 14
    assert sum(ref() is not None for ref in alive) == 1  # only the one still referenced here
    # The first frame shows the generator's picture.
    with open_video(src) as reader:
        image = next(iter(reader)).image
    assert psnr(image.astype(float), synthetic_image(0, 64, 48).astype(float)) > 35


def test_ten_bit_frames_carry_the_high_bit_image(tmp_path):
    src = write_synthetic_clip(tmp_path / "in.mkv", SyntheticClip(pix_fmt="yuv420p10le", frames=2))
    with open_video(src) as reader:
        frame = next(iter(reader))
    assert frame.image_high.dtype == np.uint16 and frame.image_high.shape == frame.image.shape
    expected = ((frame.image_high.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    np.testing.assert_array_equal(frame.image, expected)


def test_writer_accepts_info_and_explicit_codec_options(tmp_path):
    src = write_synthetic_clip(tmp_path / "in.mkv", SyntheticClip(frames=5))
    with open_video(src) as reader:
        with VideoWriter(tmp_path / "out.mkv", reader.info, codec="hevc", crf=30, preset="ultrafast",
                         pix_fmt="yuv444p") as writer:
            for frame in reader:
                writer.write(frame)
    info = probe(tmp_path / "out.mkv")
    assert (info.codec, info.pix_fmt, writer.frames_written) == ("hevc", "yuv444p", 5)


def test_the_same_input_always_encodes_to_the_same_bytes(tmp_path):
    """Resume depends on it. With x264's default CPU-specific code the same frames gave different files from one
    encode to the next, depending on what the process's heap held before (see vidgpen.video.codecs). Each encode
    here runs after the heap was filled with fresh random bytes and freed, as a busy pipeline leaves it."""
    import os

    from vidgpen.samples import write_face_clip

    src = write_face_clip(tmp_path / "in.mp4", frames=8, width=320, height=180, audio=False)
    with open_video(src) as reader:
        frames = list(reader)
    digests = set()
    for attempt in range(6):
        dst = tmp_path / f"out{attempt}.mp4"
        with VideoWriter(dst, probe(src)) as writer:  # the default encoder and preset, as restore uses them
            for frame in frames:
                scratch = [bytearray(os.urandom(4096)) for _ in range(256)]  # small blocks: reused heap memory
                del scratch
                writer.write(frame)
        digests.add(hashlib.sha256(dst.read_bytes()).hexdigest())
    assert len(digests) == 1
