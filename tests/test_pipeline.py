"""The streaming pipeline end to end: generated clips, the recipe GPEN-BFR-256 checkpoint and MTCNN.

What a restore must keep (frame count, every pts, audio packets byte for byte), where it may change pixels (only
inside the face regions it reports, and there a lot), and what a failure leaves behind (nothing).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vidgpen import api, pipeline
from vidgpen.config import RestoreOptions
from vidgpen.faces.align import transform_points
from vidgpen.faces.paste import paste_region
from vidgpen.faces.types import Detection
from vidgpen.resume import store_folder
from vidgpen.samples import face_clip_matrix, write_face_clip
from vidgpen.video import transcode
from vidgpen.video.reader import VideoReader

WIDTH, HEIGHT, FPS = 320, 180, 24
CLIP_FRAMES = 12
CROP = 256


# ------------------------------------------------------------------------------------------------------ helpers


def decoded_frames(path: Path) -> list[tuple[int, np.ndarray]]:
    """(pts, [H, W, 3] uint8 RGB) of every frame of the first video stream, decoded by PyAV directly."""
    with av.open(str(path)) as container:
        return [(frame.pts, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def video_time_base(path: Path):
    with av.open(str(path)) as container:
        return container.streams.video[0].time_base


def audio_packet_hashes(path: Path) -> list[str]:
    """sha256 of every audio packet's payload, in file order."""
    with av.open(str(path)) as container:
        return [hashlib.sha256(bytes(packet)).hexdigest() for packet in container.demux(audio=0) if packet.size]


def astronaut_landmarks(data_dir: Path) -> np.ndarray:
    """(5, 2) hand-picked landmarks of the astronaut portrait, GPEN's order."""
    return np.array(json.loads((data_dir / "alignment_reference.json").read_text())["landmarks_xy"])


def true_landmarks(data_dir: Path, index: int) -> np.ndarray:
    """Where the face's landmarks are in frame ``index`` of the generated clip (its own geometry, not a detector)."""
    return transform_points(face_clip_matrix(index, WIDTH, HEIGHT, FPS), astronaut_landmarks(data_dir))


def face_regions_mask(report_frame: dict, height: int, width: int) -> np.ndarray:
    """True inside every reported face's paste region (the inverse-warped crop square's bounding box)."""
    inside = np.zeros((height, width), dtype=bool)
    for face in report_frame["faces"]:
        region = paste_region(np.array(face["crop_matrix"]), CROP, height, width)
        if region is not None:
            x0, y0, x1, y1 = region
            inside[y0:y1, x0:x1] = True
    return inside


def inner_face_mask(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """True inside the convex hull of eyes, nose and mouth corners: the heart of the face GPEN redraws."""
    mask = np.zeros((height, width), dtype=np.uint8)
    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def fail_on_call(function, call_number: int, exception: BaseException):
    """``function`` wrapped to raise ``exception`` on its ``call_number``-th call (1-based)."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call_number:
            raise exception
        return function(*args, **kwargs)

    wrapper.calls = calls
    return wrapper


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames, 320x180, H.264 + AAC: the degraded moving astronaut."""
    return write_face_clip(tmp_path_factory.mktemp("clip") / "astronaut.mp4", frames=CLIP_FRAMES,
                           width=WIDTH, height=HEIGHT, fps=FPS)


@pytest.fixture(scope="module")
def restored_mp4(clip, recipe_engine, recipe_options, tmp_path_factory):
    """The clip restored with default output settings (same container, the input's codec family) and a report."""
    folder = tmp_path_factory.mktemp("restored_mp4")
    options = RestoreOptions(**recipe_options, report=folder / "faces.json")
    summary = api.restore_video(clip, folder / "restored.mp4", options=options, engine=recipe_engine)
    return summary, folder / "restored.mp4", json.loads((folder / "faces.json").read_text())


@pytest.fixture(scope="module")
def restored_lossless(clip, recipe_engine, recipe_options, tmp_path_factory):
    """The clip restored into lossless FFV1, and the same clip transcoded unchanged into FFV1 (the baseline).
    With --color off: the recipe weights draw a tinted face, which the default colour matching would take back."""
    folder = tmp_path_factory.mktemp("restored_ffv1")
    options = RestoreOptions(**recipe_options, codec="ffv1", report=folder / "faces.json", color="off")
    api.restore_video(clip, folder / "restored.mkv", options=options, engine=recipe_engine)
    transcode(clip, folder / "identity.mkv", codec="ffv1")
    return (folder / "restored.mkv", folder / "identity.mkv", json.loads((folder / "faces.json").read_text()))


def only_inputs_left(folder: Path, inputs: set[str], dst: Path) -> None:
    """No output, temporary file or report in ``folder``; the one thing a failed run may keep is its resume
    folder of restored faces (vidgpen.resume, tested there)."""
    resume_folder = store_folder(dst)
    leftovers = sorted(p.name for p in folder.iterdir()
                       if p.name not in inputs and not (p == resume_folder and p.is_dir()))
    assert leftovers == [], f"files left behind: {leftovers}"


# ------------------------------------------------------------------------------------------ what a run preserves


def test_every_frame_keeps_its_pts_and_time_base(clip, restored_mp4):
    summary, restored, _ = restored_mp4
    source = decoded_frames(clip)
    output = decoded_frames(restored)
    assert len(source) == CLIP_FRAMES
    assert [pts for pts, _ in output] == [pts for pts, _ in source]
    assert video_time_base(restored) == video_time_base(clip)
    assert summary.frames == CLIP_FRAMES and summary.output == restored


def test_audio_packets_are_copied_byte_for_byte(clip, restored_mp4):
    source = audio_packet_hashes(clip)
    assert len(source) > 10  # half a second of AAC
    assert audio_packet_hashes(restored_mp4[1]) == source


def test_summary_counts_every_face_and_every_stage_worked(restored_mp4):
    summary, _, report = restored_mp4
    assert len(report["frames"]) == CLIP_FRAMES
    assert [f["frame"] for f in report["frames"]] == list(range(CLIP_FRAMES))
    assert summary.faces == sum(len(f["faces"]) for f in report["frames"]) == CLIP_FRAMES  # one face, every frame
    assert set(summary.stage_seconds) == set(pipeline.STAGES)
    assert all(seconds > 0 for seconds in summary.stage_seconds.values()), summary.stage_seconds
    assert sum(summary.stage_seconds.values()) < 2 * summary.seconds + 1  # busy time is measured, not invented
    assert summary.warnings == []


def test_faces_are_found_where_the_clip_put_them(restored_mp4, data_dir):
    _, _, report = restored_mp4
    for frame in report["frames"]:
        (face,) = frame["faces"]
        truth = true_landmarks(data_dir, frame["frame"])
        eye_distance = np.linalg.norm(truth[1] - truth[0])
        for key in ("raw_landmarks", "smoothed_landmarks"):
            error = np.linalg.norm(np.array(face[key]) - truth, axis=1)
            assert error.max() < 0.35 * eye_distance, (frame["frame"], key, error, eye_distance)
        assert face["track_id"] == 0  # one track for the whole shot


# ---------------------------------------------------------------------- pixels change inside faces, and nowhere else


def test_pixels_outside_face_regions_are_exactly_the_identity_transcode(restored_lossless):
    restored, identity, report = restored_lossless
    output, baseline = decoded_frames(restored), decoded_frames(identity)
    assert len(output) == len(baseline) == CLIP_FRAMES
    assert [pts for pts, _ in output] == [pts for pts, _ in baseline]
    for (_, out), (_, base), frame in zip(output, baseline, report["frames"]):
        outside = ~face_regions_mask(frame, HEIGHT, WIDTH)
        assert outside.mean() > 0.7  # the faces cover a small part of the frame
        difference = np.abs(out.astype(np.int16) - base.astype(np.int16)).max(axis=2)
        assert difference[outside].max() == 0, f"frame {frame['frame']} changed outside its face regions"


def test_pixels_outside_face_regions_differ_from_the_input_only_by_the_yuv_round_trip(clip, restored_lossless):
    restored, identity, report = restored_lossless
    source = decoded_frames(clip)
    round_trip = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
                     for (_, a), (_, b) in zip(source, decoded_frames(identity)))
    assert 0 < round_trip < 32  # RGB <-> YUV 4:2:0 costs a few levels at sharp colour edges
    for (_, src), (_, out), frame in zip(source, decoded_frames(restored), report["frames"]):
        outside = ~face_regions_mask(frame, HEIGHT, WIDTH)
        difference = np.abs(out.astype(np.int16) - src.astype(np.int16)).max(axis=2)
        assert difference[outside].max() <= round_trip


def test_faces_change_a_lot_where_they_are(clip, restored_lossless, data_dir):
    restored, identity, _ = restored_lossless
    frames = zip(decoded_frames(clip), decoded_frames(restored), decoded_frames(identity))
    for index, ((_, src), (_, out), (_, base)) in enumerate(frames):
        face = inner_face_mask(true_landmarks(data_dir, index), HEIGHT, WIDTH)
        assert face.sum() > 100
        changed = np.abs(out.astype(np.float32) - src.astype(np.float32)).mean(axis=2)[face]
        round_trip = np.abs(base.astype(np.float32) - src.astype(np.float32)).mean(axis=2)[face]
        # The recipe weights draw a tinted face: nine face pixels in ten change by more than ten times the
        # worst round-trip error there.
        assert np.percentile(changed, 10) > 10 * max(round_trip.max(), 1.0), (index, changed.mean())


# ------------------------------------------------------------------------------- failures leave nothing behind


def _failing_stage(stage: str, engine, monkeypatch, exception: BaseException):
    """Make one stage of the pipeline raise ``exception`` part-way through the clip."""
    if stage == "decode":
        monkeypatch.setattr(VideoReader, "_to_frame", fail_on_call(VideoReader._to_frame, 5, exception))
    elif stage == "analyse":
        monkeypatch.setattr(engine.detector, "detect", fail_on_call(engine.detector.detect, 3, exception))
    elif stage == "restore":
        monkeypatch.setattr(engine.restorer, "restore", fail_on_call(engine.restorer.restore, 2, exception))
    elif stage == "encode":
        monkeypatch.setattr(pipeline, "paste_back", fail_on_call(pipeline.paste_back, 2, exception))
    else:
        raise AssertionError(stage)


@pytest.mark.parametrize("stage", ["decode", "analyse", "restore", "encode"])
def test_a_failing_stage_propagates_and_leaves_no_file(stage, clip, recipe_engine, recipe_options, tmp_path,
                                                       monkeypatch):
    source = tmp_path / "in.mp4"
    source.write_bytes(clip.read_bytes())
    failure = RuntimeError(f"{stage} broke")
    _failing_stage(stage, recipe_engine, monkeypatch, failure)
    options = RestoreOptions(**recipe_options, report=tmp_path / "faces.json")
    with pytest.raises(RuntimeError) as raised:
        api.restore_video(source, tmp_path / "out.mp4", options=options, engine=recipe_engine)
    assert raised.value is failure  # the stage's own exception, not a wrapper or a timeout
    only_inputs_left(tmp_path, {"in.mp4"}, tmp_path / "out.mp4")


def test_an_interrupt_stops_every_stage_and_leaves_no_file(clip, recipe_engine, recipe_options, tmp_path,
                                                           monkeypatch):
    import threading

    source = tmp_path / "in.mp4"
    source.write_bytes(clip.read_bytes())
    _failing_stage("restore", recipe_engine, monkeypatch, KeyboardInterrupt())
    options = RestoreOptions(**recipe_options, report=tmp_path / "faces.json")
    with pytest.raises(KeyboardInterrupt):
        api.restore_video(source, tmp_path / "out.mp4", options=options, engine=recipe_engine)
    only_inputs_left(tmp_path, {"in.mp4"}, tmp_path / "out.mp4")
    assert not [t for t in threading.enumerate() if t.name.startswith("vidgpen-")]  # every stage was joined


def test_ctrl_c_while_the_caller_waits_stops_and_joins_every_stage(clip, recipe_engine, recipe_options, tmp_path,
                                                                   monkeypatch):
    """A real SIGINT to this process while the stages run. Python before 3.13 marks a thread as finished when Ctrl-C
    interrupts a join on it; the pipeline must still wait for every stage before the files close under them."""
    import os
    import signal
    import threading
    import time

    def slow_restore(crops):
        time.sleep(1.0)  # a stage busy in the model when Ctrl-C comes
        return np.array(crops, copy=True)

    monkeypatch.setattr(recipe_engine.restorer, "restore", slow_restore)
    source = tmp_path / "in.mp4"
    source.write_bytes(clip.read_bytes())
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            api.restore_video(source, tmp_path / "out.mp4", options=RestoreOptions(**recipe_options),
                              engine=recipe_engine)
    finally:
        timer.cancel()
    assert [t.name for t in threading.enumerate() if t.name.startswith("vidgpen-")] == []
    only_inputs_left(tmp_path, {"in.mp4"}, tmp_path / "out.mp4")


def test_a_finished_run_leaves_only_its_outputs(clip, recipe_engine, recipe_options, tmp_path):
    source = tmp_path / "in.mp4"
    source.write_bytes(clip.read_bytes())
    options = RestoreOptions(**recipe_options, report=tmp_path / "faces.json", end=0.2)  # 5 frames
    summary = api.restore_video(source, tmp_path / "out.mp4", options=options, engine=recipe_engine)
    assert summary.frames == 5 == len(decoded_frames(tmp_path / "out.mp4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.json", "in.mp4", "out.mp4"]


# ---------------------------------------------------------------------------- memory does not grow with length


class _FixedDetector:
    """Stands in for MTCNN: returns the clip's true landmarks (from its geometry), so a long clip runs fast."""

    name = "fixed"

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.index = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        landmarks = true_landmarks(self.data_dir, self.index).astype(np.float32)
        self.index += 1
        low, high = landmarks.min(axis=0) - 20, landmarks.max(axis=0) + 20
        return [Detection(box=np.concatenate([low, high]), score=1.0, landmarks=landmarks)]


def test_frames_in_flight_stay_bounded_whatever_the_length(recipe_engine, recipe_options, data_dir, tmp_path,
                                                           monkeypatch):
    frames = 128
    clip = write_face_clip(tmp_path / "long.mp4", frames=frames, width=WIDTH, height=HEIGHT, fps=FPS, audio=False)
    # Identity restorer and fixed detections: this test is about the queues, not the models.
    engine = pipeline.FaceEngine(RestoreOptions(**recipe_options), recipe_engine.restorer,
                                 _FixedDetector(data_dir), recipe_engine.masker)
    monkeypatch.setattr(engine.restorer, "restore", lambda crops: np.array(crops, copy=True))
    alive = {"now": 0, "peak": 0}

    def released():
        alive["now"] -= 1

    def counting_to_frame(self, *args, **kwargs):
        frame = original_to_frame(self, *args, **kwargs)
        alive["now"] += 1
        alive["peak"] = max(alive["peak"], alive["now"])
        weakref.finalize(frame.image, released)  # the decoded picture, whichever record holds it
        return frame

    original_to_frame = VideoReader._to_frame
    monkeypatch.setattr(VideoReader, "_to_frame", counting_to_frame)
    summary = api.restore_video(clip, tmp_path / "out.mp4", engine=engine, options=engine.options)
    assert summary.frames == frames and summary.faces == frames
    bound = 3 * pipeline.QUEUE_FRAMES + pipeline.MAX_PENDING_FRAMES + engine.options.lookahead + 4
    assert bound < frames / 2
    assert alive["peak"] <= bound, alive
    assert alive["now"] == 0
