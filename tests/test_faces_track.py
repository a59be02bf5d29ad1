"""Tracking, smoothing and the face report, on synthetic trajectories whose truth is known.

Detector-like noise is Gaussian on each landmark coordinate (1 px on a ~60 px eye distance, about what RetinaFace
shows on a still face). Metrics:
- jitter = RMS of the landmarks' frame-to-frame second difference (acceleration), compared with the truth's own;
- error = mean landmark distance to the truth.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vidgpen.errors import OptionError
from vidgpen.faces.report import ReportWriter, landmark_tracks, load_report
from vidgpen.faces.smooth import (
    TEMPLATE,
    OneEuroFilter,
    fit_similarity,
    landmarks_to_pose,
    local_linear_smooth,
    local_linear_weights,
    pose_to_landmarks,
)
from vidgpen.faces.track import FaceTracker, box_iou
from vidgpen.faces.types import Detection, TrackedFrame

FPS = 30.0


# ------------------------------------------------------------------------------------------------------- helpers


def landmarks_from_poses(poses: np.ndarray) -> np.ndarray:
    """(T, 4) poses [tx, ty, log s, angle] -> (T, 5, 2) landmarks of the template."""
    return np.stack([pose_to_landmarks(pose) for pose in poses])


def detection_for(landmarks: np.ndarray, score: float = 0.99) -> Detection:
    """A detector-like box around the landmarks (margins proportional to the eye distance)."""
    eye_distance = np.linalg.norm(landmarks[1] - landmarks[0])
    low = landmarks.min(axis=0) - 0.6 * eye_distance
    high = landmarks.max(axis=0) + 0.6 * eye_distance
    return Detection(box=np.r_[low, high], score=score, landmarks=landmarks)


def run_tracker(tracker: FaceTracker, detections_per_frame, cuts=(), pts=None) -> list[TrackedFrame]:
    """Push every frame, collect the output, and check the streaming contract on the way."""
    out: list[TrackedFrame] = []
    for index, detections in enumerate(detections_per_frame):
        time = index / FPS if pts is None else pts[index]
        out += tracker.push(index, time, detections, scene_cut=index in cuts)
        # Every frame is out at most latency_frames pushes after it went in.
        assert len(out) >= index + 1 - tracker.latency_frames
    out += tracker.flush()
    assert [frame.frame_index for frame in out] == list(range(len(detections_per_frame)))
    return out


def track_landmarks(frames: list[TrackedFrame], track_id: int, key: str = "smoothed_landmarks") -> np.ndarray:
    """(T, 5, 2) landmarks of one track over all frames (NaN where the track is absent or the value is None)."""
    series = np.full((len(frames), 5, 2), np.nan)
    for i, frame in enumerate(frames):
        for face in frame.faces:
            value = getattr(face, key)
            if face.track_id == track_id and value is not None:
                series[i] = value
    return series


def jitter(landmarks: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(np.diff(landmarks, n=2, axis=0) ** 2, axis=-1))))


def mean_error(landmarks: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(landmarks - truth, axis=-1)))


def wandering_face(frames: int, phase: float = 0.0) -> np.ndarray:
    """A face that sways, nods, leans and moves closer and back: (T, 4) true poses."""
    t = np.arange(frames, dtype=np.float64)
    return np.stack([
        320 + 40 * np.sin(2 * np.pi * t / 90 + phase),
        240 + 15 * np.sin(2 * np.pi * t / 70 + 1 + phase),
        np.log(60.0) + 0.1 * np.sin(2 * np.pi * t / 120 + phase),
        0.15 * np.sin(2 * np.pi * t / 100 + phase),
    ], axis=1)


# -------------------------------------------------------------------------------------------- pose arithmetic


def test_similarity_fit_recovers_a_known_transform_and_pose_round_trips():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(5, 2))
    scale, angle, translation = 3.7, 2.9, np.array([12.5, -4.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    target = scale * source @ rotation.T + translation
    fitted_scale, fitted_angle, fitted_translation = fit_similarity(source, target)
    assert fitted_scale == pytest.approx(scale, abs=1e-12)
    assert fitted_angle == pytest.approx(angle, abs=1e-12)
    np.testing.assert_allclose(fitted_translation, translation, atol=1e-10)

    landmarks = rng.uniform(100, 200, size=(5, 2))
    pose, residual = landmarks_to_pose(landmarks)
    np.testing.assert_allclose(pose_to_landmarks(pose, residual), landmarks, atol=1e-10)
    # The residual is what a similarity cannot explain: zero for a transformed template.
    pose, residual = landmarks_to_pose(pose_to_landmarks(np.array([50.0, 60.0, math.log(40.0), 0.3])))
    np.testing.assert_allclose(residual, 0.0, atol=1e-12)
    np.testing.assert_allclose(pose, [50.0, 60.0, math.log(40.0), 0.3], atol=1e-12)
    # The template has unit eye distance, so exp(log s) is the eye distance in pixels.
    assert np.linalg.norm(TEMPLATE[1] - TEMPLATE[0]) == pytest.approx(1.0)


def test_angle_is_unwrapped_through_half_turns():
    angles = np.linspace(2.5, 4.5, 21)  # crosses +pi, where atan2 jumps to -pi
    previous = None
    unwrapped = []
    for angle in angles:
        pose, _ = landmarks_to_pose(pose_to_landmarks(np.array([0.0, 0.0, 3.0, angle])), previous)
        previous = pose[3]
        unwrapped.append(previous)
    np.testing.assert_allclose(unwrapped, angles, atol=1e-12)


def test_local_linear_weights_reproduce_lines_also_one_sided():
    for offsets in (np.arange(-4, 5), np.arange(0, 5), np.arange(-4, 1), np.arange(-1, 4)):
        weights = local_linear_weights(offsets, sigma=2.0)
        assert weights.sum() == pytest.approx(1.0, abs=1e-12)
        assert (weights * offsets).sum() == pytest.approx(0.0, abs=1e-12)
    symmetric = local_linear_weights(np.arange(-4, 5), sigma=2.0)
    gaussian = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
    np.testing.assert_allclose(symmetric, gaussian / gaussian.sum(), atol=1e-12)
    line = np.arange(10, dtype=np.float64)[:, None] * 2.5 + 7.0
    for center in range(10):
        assert local_linear_smooth(line, center, 4, 2.0)[0] == pytest.approx(line[center, 0], abs=1e-10)


# ----------------------------------------------------------------------------------- the smoothing numbers


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_window_smoothing_is_as_steady_as_the_truth_and_closer_to_it(seed):
    rng = np.random.default_rng(seed)
    truth = landmarks_from_poses(wandering_face(240, phase=seed))
    raw = truth + rng.normal(0.0, 1.0, truth.shape)
    frames = run_tracker(FaceTracker(), [[detection_for(points)] for points in raw])
    assert {face.track_id for frame in frames for face in frame.faces} == {0}
    smoothed = track_landmarks(frames, 0)
    assert not np.isnan(smoothed).any()  # the first frames of a confirmed track are not dropped
    np.testing.assert_array_equal(track_landmarks(frames, 0, "raw_landmarks"), raw.astype(np.float32))

    truth_jitter = jitter(truth)
    assert 12 < jitter(raw) / truth_jitter < 30  # the setting: raw detections are ~15-20x jumpier
    assert jitter(smoothed) < 1.5 * truth_jitter
    assert mean_error(smoothed, truth) < 0.6 * mean_error(raw, truth)
    # The box is smoothed the same way (it drives size thresholds such as GPEN's small-face filter).
    raw_boxes = np.stack([frame.faces[0].box for frame in frames]).astype(np.float64)
    smoothed_boxes = np.stack([frame.faces[0].smoothed_box for frame in frames]).astype(np.float64)
    true_boxes = np.stack([detection_for(points).box for points in truth]).astype(np.float64)
    assert np.abs(smoothed_boxes - true_boxes).mean() < 0.6 * np.abs(raw_boxes - true_boxes).mean()


def test_no_smoothing_passes_detections_through():
    rng = np.random.default_rng(4)
    truth = landmarks_from_poses(wandering_face(40))
    raw = truth + rng.normal(0.0, 1.0, truth.shape)
    frames = run_tracker(FaceTracker(smoothing="none"), [[detection_for(points)] for points in raw])
    np.testing.assert_allclose(track_landmarks(frames, 0), raw.astype(np.float32), atol=1e-4)


def test_constant_motion_is_followed_without_lag_even_at_track_ends():
    # Noise-free constant speed, turn and zoom: a local linear fit reproduces it exactly, including the one-sided
    # windows at both ends of the track.
    t = np.arange(60, dtype=np.float64)
    truth = landmarks_from_poses(np.stack([100 + 6 * t, 200 - 2 * t, np.log(50) + 0.004 * t, 0.01 * t], axis=1))
    frames = run_tracker(FaceTracker(), [[detection_for(points)] for points in truth])
    # Only float32 rounding of the detections remains.
    np.testing.assert_allclose(track_landmarks(frames, 0), truth, atol=2e-4)


def crossing_frame(series: np.ndarray, level: float) -> float:
    """First fractional frame where a rising series reaches ``level`` (linear interpolation)."""
    above = np.nonzero(series >= level)[0][0]
    return above - 1 + (level - series[above - 1]) / (series[above] - series[above - 1])


def test_ramp_and_sudden_move_lag_at_most_one_frame():
    rng = np.random.default_rng(5)
    t = np.arange(120, dtype=np.float64)
    # Still, then a ramp of 3 px/frame for 30 frames, still, then a sudden move of 2 eye distances in 3 frames.
    x = 300 + 3 * np.clip(t - 20, 0, 30) + 40 * np.clip(t - 80, 0, 3)
    poses = np.stack([x, np.full_like(t, 240), np.full_like(t, np.log(60)), np.zeros_like(t)], axis=1)
    truth = landmarks_from_poses(poses)
    raw = truth + rng.normal(0.0, 1.0, truth.shape)
    frames = run_tracker(FaceTracker(), [[detection_for(points)] for points in raw])
    smoothed_x = track_landmarks(frames, 0)[:, :, 0].mean(axis=1)
    truth_x = truth[:, :, 0].mean(axis=1)
    raw_x = raw[:, :, 0].mean(axis=1)

    # Ramp: the time shift between smoothed and true position, in frames, over the ramp's interior.
    ramp = slice(26, 45)
    ramp_lag = np.mean(truth_x[ramp] - smoothed_x[ramp]) / 3.0
    assert abs(ramp_lag) <= 1.0
    # Sudden move: when the smoothed centre passes the middle of the jump, compared with the truth.
    middle = (truth_x[79] + truth_x[84]) / 2
    move_lag = crossing_frame(smoothed_x, middle) - crossing_frame(truth_x, middle)
    assert abs(move_lag) <= 1.0
    # And it settles: once the window no longer spans the move, it is back within the raw noise of the truth.
    settled = slice(83 + 4, 120)
    assert np.abs(smoothed_x[settled] - truth_x[settled]).max() < np.abs(raw_x[settled] - truth_x[settled]).max()


# --------------------------------------------------------------------------------------- track life cycle


def test_scene_cut_resets_tracks_and_smoothing_does_not_cross_it():
    before = landmarks_from_poses(np.tile([200.0, 200.0, np.log(60), 0.0], (20, 1)))
    after = landmarks_from_poses(np.tile([210.0, 205.0, np.log(60), 0.0], (20, 1)))
    detections = [[detection_for(points)] for points in np.concatenate([before, after])]
    tracker = FaceTracker()
    out = []
    for index, dets in enumerate(detections):
        emitted = tracker.push(index, index / FPS, dets, scene_cut=index == 20)
        if index == 20:
            # At the cut every frame before it is final and comes out at once.
            assert [frame.frame_index for frame in out + emitted] == list(range(20))
        out += emitted
    out += tracker.flush()
    assert [frame.scene_cut for frame in out] == [i == 20 for i in range(40)]
    assert all(face.track_id == 0 for frame in out[:20] for face in frame.faces)
    # Same place, new shot: a new id, and no blending of the two positions.
    assert all([face.track_id for face in frame.faces] == [1] for frame in out[20:])
    np.testing.assert_allclose(track_landmarks(out, 0)[:20], before, atol=1e-4)
    np.testing.assert_allclose(track_landmarks(out, 1)[20:], after, atol=1e-4)


def test_two_crossing_faces_keep_their_ids():
    frames_count = 80
    t = np.arange(frames_count, dtype=np.float64)
    # Same size, same height, moving towards each other at 8 px/frame; they pass at frame 40.
    left = landmarks_from_poses(np.stack([40 + 8 * t, 240 + 0 * t, np.full_like(t, np.log(40)), 0 * t], axis=1))
    right = landmarks_from_poses(np.stack([680 - 8 * t, 250 + 0 * t, np.full_like(t, np.log(40)), 0 * t], axis=1))
    rng = np.random.default_rng(6)
    left_raw = left + rng.normal(0, 1.0, left.shape)
    right_raw = right + rng.normal(0, 1.0, right.shape)
    detections = []
    hidden = []
    for i in range(frames_count):
        left_det, right_det = detection_for(left_raw[i]), detection_for(right_raw[i])
        if box_iou(left_det.box, right_det.box)[0, 0] > 0.4:
            detections.append([right_det])  # the right face passes in front: the left one is not detected
            hidden.append(i)
        else:
            detections.append([left_det, right_det][:: 1 if i % 2 else -1])  # detector order varies
    assert 2 <= len(hidden) <= 5
    frames = run_tracker(FaceTracker(), detections)
    assert {face.track_id for frame in frames for face in frame.faces} == {0, 1}
    # Which id is which is decided in the first frames; from then on each id stays on its own face, through the
    # crossing (within a fifth of the 40 px eye distance, in every frame).
    left_id = min(frames[0].faces, key=lambda face: face.smoothed_landmarks[0, 0]).track_id
    left_track = track_landmarks(frames, left_id)
    right_track = track_landmarks(frames, 1 - left_id)
    assert np.linalg.norm(left_track - left, axis=-1).max() < 8.0
    assert np.linalg.norm(right_track - right, axis=-1).max() < 8.0
    # The hidden frames were bridged (no raw landmarks) rather than dropped.
    for i in hidden:
        (left_face,) = [face for face in frames[i].faces if face.track_id == left_id]
        assert left_face.bridged


def test_gaps_are_bridged_up_to_max_misses_and_end_the_track_beyond():
    t = np.arange(60, dtype=np.float64)
    truth = landmarks_from_poses(np.stack([100 + 4 * t, 200 + 1 * t, np.full_like(t, np.log(50)), 0.005 * t], axis=1))
    missing = set(range(20, 25)) | set(range(40, 46))  # 5 frames (bridged), then 6 frames (> max_misses=5)
    detections = [[] if i in missing else [detection_for(points)] for i, points in enumerate(truth)]
    frames = run_tracker(FaceTracker(max_misses=5), detections)
    ids = [[face.track_id for face in frame.faces] for frame in frames]
    assert all(ids[i] == [0] for i in range(40))
    assert all(ids[i] == [] for i in range(40, 46))
    assert all(ids[i] == [1] for i in range(46, 60))
    bridged = [frame.frame_index for frame in frames for face in frame.faces if face.bridged]
    assert bridged == list(range(20, 25))
    # Linear motion interpolates exactly, and smoothing keeps it.
    smoothed = track_landmarks(frames, 0)[:40]
    np.testing.assert_allclose(smoothed, truth[:40], atol=2e-4)


def test_short_false_detections_never_become_tracks_but_confirmed_tracks_keep_their_first_frames():
    face = landmarks_from_poses(np.tile([300.0, 200.0, np.log(50), 0.0], (30, 1)))
    blip = landmarks_from_poses(np.tile([80.0, 80.0, np.log(20), 0.0], (30, 1)))
    detections = []
    for i in range(30):
        dets = [detection_for(face[i])] if i >= 5 else []
        if i in (10, 11, 20):  # a false detection flickering for 2 frames, then 1
            dets.append(detection_for(blip[i], score=0.95))
        if i in (15, 16, 17):  # degenerate points (no pose can be fitted) are ignored, not fatal
            dets.append(Detection(box=np.zeros(4), score=0.9, landmarks=np.full((5, 2), 7.0)))
        detections.append(dets)
    frames = run_tracker(FaceTracker(confirm_hits=3), detections)
    ids = [[face.track_id for face in frame.faces] for frame in frames]
    assert ids == [[]] * 5 + [[0]] * 25
    with pytest.raises(OptionError):
        FaceTracker(smoothing="kalman")


def test_detection_on_every_third_frame_is_tracked_and_interpolated():
    rng = np.random.default_rng(11)
    truth = landmarks_from_poses(wandering_face(90))
    raw = truth + rng.normal(0.0, 1.0, truth.shape)
    # Detection runs on frames 0, 3, 6, ... (None = not searched); a 2-frame false blip (a false detection's score) on
    # searched frames 30 and 33 must not become a track, since hysteresis counts searched frames.
    detections = []
    for i in range(90):
        if i % 3:
            detections.append(None)
        else:
            dets = [detection_for(raw[i])]
            if i in (30, 33):
                dets.append(detection_for(landmarks_from_poses(np.array([[60.0, 60.0, np.log(20), 0.0]]))[0], 0.9))
            detections.append(dets)
    tracker = FaceTracker(detection_interval=3)
    frames = run_tracker(tracker, detections)
    assert tracker.left_out_detections == 2
    # Every frame from the first to the last detection shows the face under one id; unsearched frames are bridged.
    assert all([face.track_id for face in frame.faces] == [0] for frame in frames[:88])
    assert all(frame.faces == () for frame in frames[88:])
    assert [frame.frame_index for frame in frames[:88] if not frame.faces[0].bridged] == list(range(0, 88, 3))
    smoothed = track_landmarks(frames, 0)[:88]
    assert mean_error(smoothed, truth[:88]) < mean_error(raw[::3], truth[::3])


def test_tracker_memory_stays_bounded_on_a_long_stream():
    rng = np.random.default_rng(7)
    poses = wandering_face(3000)
    tracker = FaceTracker()
    emitted = 0
    for i, pose in enumerate(poses):
        points = pose_to_landmarks(pose) + rng.normal(0, 1.0, (5, 2))
        detections = [] if i % 97 == 0 else [detection_for(points)]  # occasional misses create bridged gaps
        emitted += len(tracker.push(i, i / FPS, detections))
        held = sum(len(track.samples) for track in tracker._tracks)
        assert held <= tracker.latency_frames + tracker.lookahead + 2
        assert len(tracker._pending) <= tracker.latency_frames
    assert emitted + len(tracker.flush()) == 3000


# -------------------------------------------------------------------------------------- one-euro, real timestamps


def variable_frame_times(count: int, seed: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    intervals = rng.choice([1 / 60, 1 / 30, 1 / 24, 1 / 12], size=count - 1)
    return np.concatenate([[0.0], np.cumsum(intervals)])


def test_one_euro_lag_is_constant_in_seconds_on_variable_frame_rate():
    # On a steady ramp a dt-aware One Euro filter settles to a lag of exactly 1 / (2 pi cutoff) seconds, whatever the
    # spacing of the samples; a filter counting frames instead would lag longer after long intervals.
    times = variable_frame_times(400)
    speed = 30.0  # units per second
    filter_ = OneEuroFilter(min_cutoff=1.0, beta=0.05, derivative_cutoff=1.0)
    lags = np.array([(speed * time - filter_(time, np.array([speed * time]))[0]) / speed for time in times])
    expected = 1.0 / (2 * math.pi * (1.0 + 0.05 * speed))
    np.testing.assert_allclose(lags[200:], expected, rtol=1e-6)
    # The same filter fed frame numbers as time has a lag (in real seconds) that depends on the interval.
    counting = OneEuroFilter(min_cutoff=1.0, beta=0.05 * 30.0, derivative_cutoff=1.0)
    frame_lags = np.array([
        (speed * time - counting(index / 30.0, np.array([speed * time]))[0]) / speed
        for index, time in enumerate(times)
    ])
    assert np.ptp(frame_lags[200:]) > 100 * np.ptp(lags[200:])


def test_one_euro_tracker_uses_pts_deltas():
    times = variable_frame_times(150, seed=9)
    speed = 90.0  # px per second, constant
    poses = np.stack([200 + speed * times, np.full_like(times, 240), np.full_like(times, np.log(60)), 0 * times], 1)
    truth = landmarks_from_poses(poses)
    tracker = FaceTracker(smoothing="one-euro", min_cutoff=1.0, beta=0.5)
    assert tracker.lookahead == 0  # causal: no smoothing look-ahead
    frames = run_tracker(tracker, [[detection_for(points)] for points in truth], pts=times)
    lag_seconds = (truth[:, :, 0] - track_landmarks(frames, 0)[:, :, 0]).mean(axis=1) / speed
    # Translation speed counts in face sizes per second: cutoff = 1 + 0.5 * 90 / 60 Hz.
    expected = 1.0 / (2 * math.pi * (1.0 + 0.5 * speed / 60.0))
    np.testing.assert_allclose(lag_seconds[100:], expected, rtol=1e-4)
    # The still parts of the pose are left exactly where they are.
    np.testing.assert_allclose(track_landmarks(frames, 0)[:, :, 1], truth[:, :, 1], atol=1e-4)


# ------------------------------------------------------------------------------------------------------ report


def test_report_round_trip(tmp_path):
    rng = np.random.default_rng(10)
    truth = landmarks_from_poses(wandering_face(30))
    detections = [[] if i in (12, 13) else [detection_for(p + rng.normal(0, 1, p.shape))] for i, p in enumerate(truth)]
    frames = run_tracker(FaceTracker(), detections, cuts=(25,))

    def crop_matrix(landmarks):  # any deterministic function of the landmarks will do here
        return np.array([[1.0, 0.0, -landmarks[2, 0]], [0.0, 1.0, -landmarks[2, 1]]])

    path = tmp_path / "faces.json"
    with ReportWriter(path, crop_matrix=crop_matrix, meta={"input": "clip.mp4", "detector": "mtcnn"}) as report:
        for frame in frames:
            report.write(frame)
    loaded = load_report(path)
    assert json.loads(path.read_text()) == loaded
    assert loaded["meta"] == {"input": "clip.mp4", "detector": "mtcnn"}
    assert len(loaded["frames"]) == 30
    for frame, record in zip(frames, loaded["frames"]):
        assert record["frame"] == frame.frame_index
        assert record["pts"] == pytest.approx(frame.pts_seconds, abs=1e-6)
        assert record["scene_cut"] == frame.scene_cut
        assert [f["track_id"] for f in record["faces"]] == [f.track_id for f in frame.faces]
        for face, stored in zip(frame.faces, record["faces"]):
            assert stored["score"] == pytest.approx(face.score, abs=1e-6)
            np.testing.assert_allclose(stored["box"], face.box, atol=1e-4)
            np.testing.assert_allclose(stored["smoothed_box"], face.smoothed_box, atol=1e-4)
            np.testing.assert_allclose(stored["smoothed_landmarks"], face.smoothed_landmarks, atol=1e-4)
            np.testing.assert_allclose(stored["crop_matrix"], crop_matrix(face.smoothed_landmarks), atol=1e-7)
            if face.raw_landmarks is None:
                assert stored["raw_landmarks"] is None and stored["bridged"]
            else:
                np.testing.assert_allclose(stored["raw_landmarks"], face.raw_landmarks, atol=1e-4)
    assert [r["frame"] for r in loaded["frames"] if r["scene_cut"]] == [25]
    series = landmark_tracks(loaded)
    assert sorted(series) == [0, 1]
    np.testing.assert_array_equal(series[0]["frames"], np.arange(25))
    assert series[0]["landmarks"].shape == (25, 5, 2)
    assert list(landmark_tracks(loaded, "raw_landmarks")[0]["frames"]) == [i for i in range(25) if i not in (12, 13)]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_report_is_not_written_when_the_run_fails(tmp_path):
    path = tmp_path / "faces.json"
    path.write_text("previous report")
    frame = TrackedFrame(0, 0.0, False, ())
    with pytest.raises(RuntimeError, match="decoder died"):
        with ReportWriter(path) as report:
            report.write(frame)
            raise RuntimeError("decoder died")
    assert path.read_text() == "previous report"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("frames_seen, score, kept", [(2, 0.995, True), (1, 0.995, True), (2, 0.95, False)])
def test_a_short_track_is_kept_when_its_detection_is_confident(frames_seen, score, kept):
    """A face seen in fewer frames than the confirmation age (a 2-frame clip, a face flashing past a cut) is restored
    when the detector is confident; a short, unconfident one is left out and counted."""
    face = landmarks_from_poses(wandering_face(frames_seen))
    blip = [detection_for(landmarks, score) for landmarks in face]
    for ending in ("end of stream", "scene cut", "face gone"):
        tracker = FaceTracker(confirm_hits=3)
        detections = [[d] for d in blip] + ([] if ending == "end of stream" else [[]] * 3)
        cuts = (frames_seen,) if ending == "scene cut" else ()
        frames = run_tracker(tracker, detections, cuts=cuts)
        faces_per_frame = [len(frame.faces) for frame in frames[:frames_seen]]
        assert faces_per_frame == [1 if kept else 0] * frames_seen
        assert tracker.left_out_detections == (0 if kept else frames_seen)
        if kept:
            np.testing.assert_allclose(frames[0].faces[0].raw_landmarks, face[0], atol=1e-4)
