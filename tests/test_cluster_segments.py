"""Segmented restores without Ray: the planner, the joiner, the seam, and resuming from the segment journal."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import pytest

from cluster_support import StandInRestorer, audio_packets, decoded_video, write_keyframed_face_clip
from vidgpen import api
from vidgpen.cluster.join import join_segments
from vidgpen.cluster.plan import PacketScan, Warmup, blend_memory_frames, plan_segments, scan_packets, warmup_frames
from vidgpen.cluster.segment import restore_segmented, work_folder
from vidgpen.config import RestoreOptions
from vidgpen.errors import OutputError
from vidgpen.faces.scene import SceneCutDetector
from vidgpen.pipeline import build_engine
from vidgpen.video.reader import open_video
from vidgpen.video.writer import VideoWriter

CLIP_FRAMES, KEYFRAME_INTERVAL, SEGMENT_FRAMES = 72, 12, 24
# Short warm-up for a fast test: blend memory 18 frames at strength 0.3, smoothing window 2.
SEAM_OPTIONS = dict(model=None, detector="mtcnn", mask="feathered", dtype="fp32", temporal_strength=0.3,
                    lookahead=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_keyframed_face_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=CLIP_FRAMES,
                                     keyframe_interval=KEYFRAME_INTERVAL)


@pytest.fixture(scope="module")
def engine():
    return build_engine(RestoreOptions(**SEAM_OPTIONS), restorer=StandInRestorer())


def video_packets(path: Path) -> list[tuple[int, int, bool]]:
    with av.open(str(path)) as container:
        return [(p.pts, p.dts, p.is_keyframe) for p in container.demux(video=0) if p.size]


# ------------------------------------------------------------------------------------------------------ planner


def fake_scan(frames: int, keyframes: list[int], problem: str | None = None) -> PacketScan:
    return PacketScan(Path("x.mp4"), Fraction(1, 1000), 0.0, tuple(40 * i for i in range(frames)), tuple(keyframes),
                      problem)


def test_scan_finds_every_frame_and_keyframe(clip):
    scan = scan_packets(clip)
    assert scan.problem is None and scan.frames == CLIP_FRAMES
    assert scan.keyframe_indices == tuple(range(0, CLIP_FRAMES, KEYFRAME_INTERVAL))
    with av.open(str(clip)) as container:
        decoded = [f.pts for f in container.decode(video=0)]
    assert list(scan.frame_pts) == decoded


def test_warmup_covers_tracker_latency_smoothing_and_blend_memory():
    # Defaults: tracker latency = lookahead 4 + max(confirm_hits - 1, max_misses + 1) = 10, then the smoothing
    # window (4) again; blend memory: 0.6 ** n < 1e-9 from n = 41.
    assert blend_memory_frames(0.6) == 41 and 0.6 ** 41 < 1e-9 < 0.6 ** 40
    assert blend_memory_frames(0.0) == 0
    # The default detects on every 3rd frame and follows faces by optical flow in between: the pre-roll also waits
    # for the first regular detection (3 frames at most).
    assert warmup_frames(RestoreOptions()) == Warmup(preroll=14 + 3 + 41, postroll=14)
    assert warmup_frames(RestoreOptions(temporal_strength=0.0, lookahead=2, detect_every=1)) == Warmup(10, 10)
    assert warmup_frames(RestoreOptions(detect_every=5, temporal_strength=0.0)) == Warmup(14 + 5, 14)


def test_plan_cuts_at_keyframes_with_warmup_around_each_segment():
    options = RestoreOptions(temporal_strength=0.0, lookahead=2, detect_every=1)  # warm-up 10 frames each side
    scan = fake_scan(100, [0, 10, 25, 37, 50, 61, 90])
    plan = plan_segments(scan, options, 24)
    assert plan.reason is None
    # Starts: the first keyframe at least 24 frames after the previous start; 90 leaves a 10-frame tail (< 12),
    # which joins the segment before.
    assert [(s.first_frame, s.end_frame) for s in plan.segments] == [(0, 25), (25, 50), (50, 100)]
    first, middle, last = plan.segments
    assert (first.keep_start_pts, first.keep_end_pts, first.read_start) == (None, 1000, None)
    assert (middle.keep_start_pts, middle.keep_end_pts) == (1000, 2000)
    assert (middle.preroll, middle.postroll) == (10, 10)
    # Read from half a frame before frame 15 to half a frame after frame 59.
    assert middle.read_start == pytest.approx(0.58) and middle.read_end == pytest.approx(2.38)
    assert (last.keep_end_pts, last.read_end, last.postroll) == (None, None, 0)
    assert sum(s.frames for s in plan.segments) == 100


def test_plan_warmup_starts_on_the_detection_phase():
    options = RestoreOptions(temporal_strength=0.0, lookahead=2, detect_every=4)
    plan = plan_segments(fake_scan(200, list(range(0, 200, 10))), options, 60)
    for segment in plan.segments[1:]:
        read_first = segment.first_frame - segment.preroll
        assert read_first % 4 == 0 and segment.preroll >= warmup_frames(options).preroll


@pytest.mark.parametrize("problem, options, reason", [
    ("repeated timestamps", {}, "timestamps cannot be trusted (repeated timestamps)"),
    ("damaged packets", {}, "damaged packets"),
    (None, {"start": 1.0}, "--start/--end"),
    (None, {"report": Path("faces.json")}, "--report"),
    (None, {"smoothing": "one-euro"}, "One Euro"),
    (None, {"temporal_strength": 1.0}, "never forgets"),
])
def test_plan_keeps_untrustworthy_files_and_stateful_options_in_one_unit(problem, options, reason):
    plan = plan_segments(fake_scan(100, [0, 30, 60], problem), RestoreOptions(**options), 24)
    assert not plan.segmented and reason in plan.reason
    (whole,) = plan.segments
    assert (whole.first_frame, whole.end_frame, whole.read_start, whole.keep_end_pts) == (0, 100, None, None)


def test_plan_one_unit_without_keyframes_or_length():
    assert "no keyframe" in plan_segments(fake_scan(100, [0]), RestoreOptions(), 24).reason
    assert "not longer than one segment" in plan_segments(fake_scan(20, [0, 10]), RestoreOptions(), 24).reason


def test_scan_reports_damaged_file(tmp_path, clip):
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = bytes(range(256)) * 15 + bytes(160)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    scan = scan_packets(damaged)
    # The mp4 index still lists every packet; what gives the damage away is the payload, so the scan must say
    # nothing wrong about timing here, while a Matroska file cut short loses packets at the end.
    assert scan.frames == CLIP_FRAMES
    mkv = tmp_path / "cut.mkv"
    with av.open(str(clip)) as src, av.open(str(mkv), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    cut = tmp_path / "cut_short.mkv"
    cut.write_bytes(mkv.read_bytes()[: mkv.stat().st_size * 2 // 3])
    assert scan_packets(cut).frames < CLIP_FRAMES


# ------------------------------------------------------------------------------------------------------ joiner


def write_pieces(src: Path, folder: Path, bounds: list[int], **encoder) -> list[Path]:
    """Re-encode the source's frames [a, b) of each bound pair into video-only pieces with the source's pts."""
    pieces = []
    with open_video(src) as reader:
        frames = list(reader)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        path = folder / f"piece{i}.mp4"
        with open_video(src) as reader, VideoWriter(path, reader, video_only=True, **encoder) as writer:
            for frame in frames[a:b]:
                writer.write(frame)
        pieces.append(path)
    return pieces


def test_join_keeps_frame_times_and_other_streams_with_increasing_dts(clip, tmp_path):
    pieces = write_pieces(clip, tmp_path, [0, 24, 48, CLIP_FRAMES], codec="libx264", preset="veryfast")
    assert all(not p[2] for p in video_packets(pieces[0])[1:3])  # x264 reorders: B-frames, dts before pts
    joined = tmp_path / "joined.mp4"
    summary = join_segments(clip, pieces, joined)
    assert summary.reorder_delay > 0 and summary.video_packets == CLIP_FRAMES
    assert [t for t, _ in decoded_video(joined)] == [t for t, _ in decoded_video(clip)]
    packets = video_packets(joined)
    dts = [d for _, d, _ in packets]
    assert all(b > a for a, b in zip(dts, dts[1:]))
    assert all(d <= p for p, d, _ in packets)
    keyframe_pts = {p for p, _, key in packets if key}
    with av.open(str(clip)) as container:
        time_base = container.streams.video[0].time_base
    source_pts = sorted(p for p, _, _ in video_packets(clip))
    assert {source_pts[24], source_pts[48]} <= keyframe_pts  # a keyframe opens each seam
    assert audio_packets(joined) == audio_packets(clip)  # byte-identical, same times
    assert time_base == av.open(str(joined)).streams.video[0].time_base
    # Every joined frame decodes to what its piece held.
    pieces_decoded = [h for p in pieces for _, h in decoded_video(p)]
    assert [h for _, h in decoded_video(joined)] == pieces_decoded


def test_join_refuses_pieces_encoded_differently(clip, tmp_path):
    first = write_pieces(clip, tmp_path, [0, 24], codec="libx264", preset="veryfast")
    (tmp_path / "b").mkdir()
    second = write_pieces(clip, tmp_path / "b", [0, 24, 48], codec="libx264", preset="veryfast", pix_fmt="yuv444p")
    with pytest.raises(OutputError, match="other settings"):
        join_segments(clip, [first[0], second[1]], tmp_path / "joined.mp4")
    assert not any(p.name.startswith(".joined") or p.name == "joined.mp4" for p in tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------------ seam


@pytest.fixture(scope="module")
def single_run(clip, engine, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("single") / "single.mkv"
    api.restore_video(clip, dst, options=RestoreOptions(**SEAM_OPTIONS, codec="ffv1"), engine=engine)
    return dst


def test_segmented_run_equals_single_run_frame_for_frame(clip, engine, single_run, tmp_path):
    options = RestoreOptions(**SEAM_OPTIONS, codec="ffv1")
    scenes = SceneCutDetector()
    with open_video(clip) as reader:
        assert not any(scenes.is_cut(frame.image) for frame in reader)  # no seam sits at a scene cut
    plan = plan_segments(scan_packets(clip), options, SEGMENT_FRAMES)
    assert [s.first_frame for s in plan.segments] == [0, 24, 48]
    assert plan.segments[1].preroll == 24  # all it can have (the file's start)
    # tracker latency and smoothing 10, the first regular detection 3 (faces followed by flow in between), blend 18
    assert warmup_frames(options).preroll == 10 + 3 + 18
    assert plan.segments[2].preroll == 33 < 48  # started on the detection phase: frame 15, a multiple of 3
    dst = tmp_path / "segmented.mkv"
    summary = restore_segmented(clip, dst, dataclasses.replace(engine, options=options), plan)
    assert summary.frames == CLIP_FRAMES and summary.faces >= CLIP_FRAMES - 4
    assert decoded_video(dst) == decoded_video(single_run)  # same times, same pictures
    assert audio_packets(dst) == audio_packets(single_run)
    assert not work_folder(dst).exists()

    # Control: without warm-up the seams show (tracks, smoothing and blending start afresh at each seam).
    control = tmp_path / "control.mkv"
    restore_segmented(clip, control, dataclasses.replace(engine, options=options),
                      plan_segments(scan_packets(clip), options, SEGMENT_FRAMES, warmup=Warmup(0, 0)))
    differing = [i for i, (a, b) in enumerate(zip(decoded_video(control), decoded_video(single_run))) if a != b]
    assert differing and all(min(abs(i - 24), abs(i - 48)) <= 8 for i in differing)
    assert any(24 <= i < 30 for i in differing) and any(48 <= i < 54 for i in differing)


def test_resume_skips_finished_segments(clip, engine, single_run, tmp_path):
    options = RestoreOptions(**SEAM_OPTIONS, codec="ffv1")
    plan = plan_segments(scan_packets(clip), options, SEGMENT_FRAMES)
    dst = tmp_path / "resumed.mkv"
    calls = {"n": 0}

    class Crashing(StandInRestorer):
        def restore(self, crops):
            calls["n"] += 1
            if calls["n"] > 12:  # segment 0 (34 frames read, 4 faces a call) finishes, segment 1 does not
                raise KeyboardInterrupt
            return super().restore(crops)

    crashing = dataclasses.replace(build_engine(options, restorer=Crashing()), options=options)
    with pytest.raises(KeyboardInterrupt):
        restore_segmented(clip, dst, crashing, plan)
    finished = sorted(p.name for p in work_folder(dst).glob("segment-*.mkv"))
    assert finished == ["segment-00000.mkv"] and not dst.exists()

    seen = []
    resumed = dataclasses.replace(engine, options=options.replace(resume=True))
    restore_segmented(clip, dst, resumed, plan, on_segment=lambda s, part: seen.append((s.index, part is None)))
    assert seen == [(0, True), (1, False), (2, False)]  # segment 0 taken from the journal
    assert decoded_video(dst) == decoded_video(single_run)
    assert not work_folder(dst).exists()


def test_resume_refuses_a_journal_of_other_options(clip, engine, tmp_path):
    from vidgpen.cluster.segment import SegmentJournal, journal_record
    from vidgpen.errors import OptionError

    options = RestoreOptions(**SEAM_OPTIONS, codec="ffv1")
    plan = plan_segments(scan_packets(clip), options, SEGMENT_FRAMES)
    dst = tmp_path / "out.mkv"
    SegmentJournal.open(dst, journal_record(clip, options, plan), resume=False)
    other = options.replace(alpha=0.5)
    with pytest.raises(OptionError, match="options"):
        SegmentJournal.open(dst, journal_record(clip, other, plan), resume=True)


# ------------------------------------------------------------------------------------------------------ command line


def test_cluster_flags_without_cluster_are_refused(clip, tmp_path, capsys):
    from vidgpen.cli import main as cli_main

    code = cli_main(["restore", str(clip), "-o", str(tmp_path / "out.mp4"), "--workers", "2", "--offline"])
    assert code == 2
    assert "--workers only apply with --cluster" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_nothing_imports_ray_without_cluster():
    import subprocess
    import sys

    code = ("import sys, vidgpen, vidgpen.api, vidgpen.cluster.segment, vidgpen.cluster.join; "
            "from vidgpen.cli import build_parser; build_parser(); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cluster_without_ray_installed_says_how_to_install(clip, tmp_path, monkeypatch, capsys):
    import sys

    from vidgpen.cli import main as cli_main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "vidgpen.cluster.ray_runner", raising=False)
    import vidgpen.cluster

    monkeypatch.delattr(vidgpen.cluster, "ray_runner", raising=False)  # an earlier test may have imported it
    code = cli_main(["restore", str(clip), "-o", str(tmp_path / "out.mp4"), "--cluster", "local"])
    assert code == 2
    assert "pip install 'vidgpen[cluster]'" in capsys.readouterr().err


def test_join_keeps_variable_frame_times_rotation_subtitles_and_chapters(tmp_path):
    from fractions import Fraction

    from vidgpen.video.probe import probe
    from vidgpen.video.synthetic import SyntheticClip, write_synthetic_clip

    # Irregular steps (variable frame rate) in a 1/90000 time base, a keyframe every 6 frames.
    steps = [3000, 3000, 4500, 1500, 6000, 3000, 3003, 2997] * 3
    pts = tuple(sum(steps[:i]) for i in range(len(steps)))
    clip = SyntheticClip(width=64, height=48, frames=len(pts), time_base=Fraction(1, 90000), pts=pts,
                         options={"preset": "ultrafast", "g": "6", "keyint_min": "6", "sc_threshold": "0"},
                         audio=("aac",), subtitles=True, rotation=90, chapters=2)
    src = write_synthetic_clip(tmp_path / "vfr.mkv", clip)
    scan = scan_packets(src)
    assert scan.keyframe_indices == (0, 6, 12, 18)
    pieces = write_pieces(src, tmp_path, [0, 6, 18, len(pts)], codec="libx264", preset="ultrafast")
    joined = tmp_path / "joined.mkv"
    join_segments(src, pieces, joined)
    assert [t for t, _ in decoded_video(joined)] == [t for t, _ in decoded_video(src)]
    info, source_info = probe(joined), probe(src)
    assert info.rotation == source_info.rotation == 90
    described = [[(s.kind, s.codec, s.language) for s in i.streams] for i in (info, source_info)]
    assert described[0] == described[1]
    assert audio_packets(joined) == audio_packets(src)
    with av.open(str(joined)) as out, av.open(str(src)) as original:
        assert len(out.chapters()) == len(original.chapters()) == 2
        subtitles = [bytes(p) for p in out.demux(subtitles=0) if p.size]
        assert subtitles and subtitles == [bytes(p) for p in original.demux(subtitles=0) if p.size]
