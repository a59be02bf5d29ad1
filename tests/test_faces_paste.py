"""Paste-back and masks: the official process_* cases, identity round trips on decoded video, region-only warping,
and the mask sources (parser contract with random weights, class mapping, feathered fallback)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from vidgpen.errors import OptionError, WeightsError
from vidgpen.faces.align import crop_matrix, fit_crop, invert_affine, reference_points, transform_points, warp_crop
from vidgpen.faces.mask import (
    FeatheredMasker,
    ParsingMasker,
    build_masker,
    feathered_mask,
    postprocess_parse_mask,
)
from vidgpen.faces.paste import SMALL_FACE_KERNEL, PasteItem, paste_faces, paste_region

# The astronaut's landmarks in skimage.data.astronaut() (alignment_reference.json) and a box around them.
ASTRONAUT_LANDMARKS = np.array([[203.0, 100.0], [246.0, 103.0], [225.0, 125.0], [205.0, 143.0], [243.0, 143.0]])
ASTRONAUT_BOX = np.array([160.0, 45.0, 290.0, 205.0])


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _read_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.ascontiguousarray(image[:, :, ::-1])


def _official_paste(frame, items, alpha=1.0, small_face_px=100.0):
    """GPEN's FaceEnhancement paste-back written out plainly: every face warped to the whole frame."""
    height, width = frame.shape[:2]
    full_mask = np.zeros((height, width), dtype=np.float32)
    full_img = np.zeros(frame.shape, dtype=np.uint8)
    for item in items:
        inverse = invert_affine(item.crop_matrix)
        tmp_mask = cv2.warpAffine(item.mask, inverse, (width, height), flags=3)
        face = item.restored_crop
        if min(item.box[3] - item.box[1], item.box[2] - item.box[0]) < small_face_px:
            face = cv2.filter2D(face, -1, SMALL_FACE_KERNEL)
        face = cv2.addWeighted(face, alpha, item.original_crop, 1.0 - alpha, 0.0)
        tmp_img = cv2.warpAffine(face, inverse, (width, height), flags=3)
        larger = (tmp_mask - full_mask) > 0
        full_mask[larger] = tmp_mask[larger]
        full_img[larger] = tmp_img[larger]
    full_mask = full_mask[:, :, None]
    return cv2.convertScaleAbs(frame * (1 - full_mask) + full_img * full_mask)


def _support(item, frame_shape) -> np.ndarray:
    """Frame pixels that a face can touch: its crop square warped back over the whole frame, > 0."""
    ones = np.ones((item.size, item.size), dtype=np.float32)
    return cv2.warpAffine(ones, invert_affine(item.crop_matrix), frame_shape[1::-1], flags=cv2.INTER_LINEAR) > 0


def _similarity(scale, angle, tx, ty) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[scale * cos, -scale * sin, tx], [scale * sin, scale * cos, ty]])


def _encode_decode(frames, path) -> list[np.ndarray]:
    """Write RGB frames to an H.264 file with PyAV and decode them back (the pipeline sees decoded frames)."""
    av = pytest.importorskip("av")
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "preset": "ultrafast"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == len(frames)
    return decoded


@pytest.fixture(scope="module")
def astronaut_rgb():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def process_cases(data_dir):
    return {case["case"]: case for case in json.loads((data_dir / "process_reference.json").read_text())}


# ----------------------------------------------------------------------------------------------------------------
# the official process_* cases (given the same boxes, landmarks and stub parser mask)


def _run_process_case(case, reference_dir, prefix, size, data_dir):
    frame = _read_rgb(reference_dir / f"{prefix}_input.png")
    stub = cv2.imread(str(data_dir / "process_parse_mask_stub.png"), cv2.IMREAD_GRAYSCALE)
    mask = postprocess_parse_mask(stub / 255.0, size)
    items = []
    boxes = case["detector_stub_facebs_x1y1x2y2score"]
    landmarks = case["detector_stub_landms_x1..x5_y1..y5"]
    for box, points in zip(boxes, landmarks):
        if box[4] < 0.9:  # GPEN's score threshold (the detector stage applies it in the pipeline)
            continue
        matrix = fit_crop(np.reshape(points, (2, 5)).T, size).matrix
        face_index = len(items)
        restored = _read_rgb(reference_dir / f"{prefix}_face{face_index}_enhanced.png")
        items.append(PasteItem(restored, matrix, mask, np.array(box[:4]), warp_crop(frame, matrix, size)))
    assert len(items) == case["n_faces_enhanced"]
    expected = np.load(reference_dir / f"{prefix}_output_bgr_u8.npy")[:, :, ::-1]
    return frame, items, expected


def _assert_matches_official(output, expected, frame):
    difference = np.abs(output.astype(int) - expected.astype(int))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) < 1e-4 * difference.size  # OpenCV fixed-point rounding: a handful
    changed = np.any(expected != frame, axis=2).mean()
    assert changed > 0.05  # the reference really does change the face


def test_process_case_b_small_face_alpha(data_dir, process_cases):
    case = process_cases["B_bfr256_smallface_alpha0.8"]
    frame, items, expected = _run_process_case(case, data_dir, "process_B_bfr256_smallface_alpha0.8", 256, data_dir)
    output = paste_faces(frame, items, alpha=case["alpha"])
    _assert_matches_official(output, expected, frame)
    # The small-face filter is part of the result: without it the output is off by more than a level.
    unfiltered = paste_faces(frame, items, alpha=case["alpha"], small_face_px=0)
    assert np.abs(unfiltered.astype(int) - expected).max() > 1


def test_process_case_a_512(shared_reference_dir, data_dir, process_cases):
    case = process_cases["A_bfr512"]
    frame, items, expected = _run_process_case(case, shared_reference_dir, "process_A_bfr512", 512, data_dir)
    np.testing.assert_array_equal(
        items[0].original_crop, _read_rgb(shared_reference_dir / "process_A_bfr512_face0_aligned.png")
    )
    _assert_matches_official(paste_faces(frame, items, alpha=case["alpha"]), expected, frame)


def test_process_case_c_two_faces(shared_reference_dir, data_dir, process_cases):
    case = process_cases["C_bfr256_two_faces"]
    frame, items, expected = _run_process_case(case, shared_reference_dir, "process_C_bfr256_two_faces", 256, data_dir)
    for index, item in enumerate(items):
        aligned = _read_rgb(shared_reference_dir / f"process_C_bfr256_two_faces_face{index}_aligned.png")
        np.testing.assert_array_equal(item.original_crop, aligned)
    _assert_matches_official(paste_faces(frame, items, alpha=case["alpha"]), expected, frame)


# ----------------------------------------------------------------------------------------------------------------
# identity restorer on decoded video


def _moving_face_video(astronaut_rgb, tmp_path):
    """8 decoded 640x360 frames of the astronaut moving, turning and zooming; the last one half out of the frame.

    Returns the decoded frames and, per frame, the face's landmarks and box in frame pixels.
    """
    frames, landmarks, boxes = [], [], []
    for index in range(8):
        scale = 0.9 + 0.04 * index
        placement = _similarity(scale, 0.04 * (index - 3), 150.0 + 30 * index, -20.0 + 5 * index)
        if index == 7:
            placement = _similarity(1.0, 0.1, -260.0, 40.0)  # the face straddles the left edge
        frames.append(cv2.warpAffine(astronaut_rgb, placement, (640, 360), flags=cv2.INTER_LINEAR))
        landmarks.append(transform_points(placement, ASTRONAUT_LANDMARKS))
        corners = transform_points(placement, ASTRONAUT_BOX.reshape(2, 2))
        boxes.append(corners.reshape(4))
    return _encode_decode(frames, tmp_path / "moving_face.mp4"), landmarks, boxes


def test_identity_restorer_leaves_every_frame_unchanged(astronaut_rgb, tmp_path):
    frames, landmarks, boxes = _moving_face_video(astronaut_rgb, tmp_path)
    masker = FeatheredMasker()
    for index, frame in enumerate(frames):
        for size, alpha in ((256, 1.0), (512, 0.7)):
            matrix = crop_matrix(landmarks[index], size)
            crop = warp_crop(frame, matrix, size)
            restored = crop.copy()  # the identity restorer
            mask = masker(restored[None])[0]
            item = PasteItem(restored, matrix, mask, boxes[index], original_crop=crop)
            output = paste_faces(frame, [item], alpha=alpha, mode="residual")
            assert np.abs(output.astype(int) - frame.astype(int)).max() <= 1, (index, size)


def test_replace_mode_cannot_be_identity(astronaut_rgb):
    # Why residual mode exists: warping a crop forward and back with bilinear is not the identity, so GPEN's replace
    # rule changes the frame even when the restorer changes nothing.
    matrix = crop_matrix(ASTRONAUT_LANDMARKS, 256)
    crop = warp_crop(astronaut_rgb, matrix, 256)
    item = PasteItem(crop.copy(), matrix, feathered_mask(256), ASTRONAUT_BOX, original_crop=crop)
    replaced = paste_faces(astronaut_rgb, [item], mode="replace")
    residual = paste_faces(astronaut_rgb, [item], mode="residual")
    assert np.abs(replaced.astype(int) - astronaut_rgb).max() > 10
    np.testing.assert_array_equal(residual, astronaut_rgb)


def test_alpha_zero_in_residual_mode_returns_the_input(astronaut_rgb):
    matrix = crop_matrix(ASTRONAUT_LANDMARKS, 256)
    crop = warp_crop(astronaut_rgb, matrix, 256)
    restored = 255 - crop
    item = PasteItem(restored, matrix, feathered_mask(256), ASTRONAUT_BOX, original_crop=crop)
    np.testing.assert_array_equal(paste_faces(astronaut_rgb, [item], alpha=0.0, mode="residual"), astronaut_rgb)
    assert np.abs(paste_faces(astronaut_rgb, [item], alpha=1.0, mode="residual").astype(int) - astronaut_rgb).max() > 100


# ----------------------------------------------------------------------------------------------------------------
# region-only warping: same result as whole-frame warps, nothing touched outside


def _random_items(rng, frame_shape):
    """Four faces: two overlapping, one apart, one half outside the bottom-right corner; restored crops are noise."""
    placements = [
        (256, (60.0, 40.0), 0.7, 0.2, np.ones((256, 256), np.float32)),  # hard-edged mask: stresses region bounds
        (256, (110.0, 70.0), 0.6, -0.4, None),
        (512, (330.0, 20.0), 0.25, 1.2, None),
        (256, (420.0, 250.0), 0.5, 0.0, None),
    ]
    items = []
    for size, (tx, ty), scale, angle, mask in placements:
        frame_from_crop = _similarity(scale, angle, tx, ty)
        matrix = invert_affine(frame_from_crop)
        if mask is None:
            mask = rng.uniform(0.0, 1.0, size=(size, size)).astype(np.float32)
        restored = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        original = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        box_side = 60.0 if len(items) == 1 else 150.0  # face 1 gets the small-face filter
        items.append(PasteItem(restored, matrix, mask, np.array([0.0, 0.0, box_side, box_side]), original))
    return items


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_region_paste_matches_whole_frame_paste(alpha):
    rng = np.random.default_rng(11)
    frame = rng.integers(0, 256, size=(300, 480, 3), dtype=np.uint8)
    items = _random_items(rng, frame.shape)
    output = paste_faces(frame, items, alpha=alpha)
    expected = _official_paste(frame, items, alpha=alpha)
    difference = np.abs(output.astype(int) - expected.astype(int))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) < 1e-3 * difference.size

    touched = np.zeros(frame.shape[:2], dtype=bool)
    for item in items:
        support = _support(item, frame.shape)
        x0, y0, x1, y1 = paste_region(item.crop_matrix, item.size, *frame.shape[:2])
        inside = np.zeros_like(support)
        inside[y0:y1, x0:x1] = True
        assert not (support & ~inside).any(), "a pixel the face reaches lies outside its region"
        touched |= support
    np.testing.assert_array_equal(output[~touched], frame[~touched])  # bit-identical outside every face
    assert np.any(output[touched] != frame[touched])


def test_face_partly_or_fully_outside_the_frame(astronaut_rgb):
    frame = astronaut_rgb[:180, :260].copy()  # cuts through the face (box 160..290 x 45..205)
    matrix = crop_matrix(ASTRONAUT_LANDMARKS, 256)
    crop = warp_crop(frame, matrix, 256)
    assert (crop[-20:] == 0).all()  # the crop's lower part is beyond the frame: black
    restored = np.full_like(crop, 255)
    item = PasteItem(restored, matrix, feathered_mask(256), ASTRONAUT_BOX, crop)
    output = paste_faces(frame, [item])
    assert output.shape == frame.shape
    assert (output[110:160, 205:245] == 255).all()  # the visible part of the face was pasted
    difference = np.abs(output.astype(int) - _official_paste(frame, [item]).astype(int))
    assert difference.max() <= 1

    far_away = matrix.copy()
    far_away[0, 2] += 5000.0  # the crop now shows a spot 5000/1.35 px left of the frame
    gone = PasteItem(restored, far_away, feathered_mask(256), ASTRONAUT_BOX, crop)
    assert paste_region(gone.crop_matrix, 256, *frame.shape[:2]) is None
    np.testing.assert_array_equal(paste_faces(frame, [gone]), frame)


def test_later_face_wins_only_where_its_mask_is_strictly_larger():
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # crop == frame
    box = np.array([0.0, 0.0, 200.0, 200.0])
    mask_a = np.full((64, 64), 0.5, np.float32)
    mask_b = mask_a.copy()
    mask_b[:, 32:] = 0.75
    first = PasteItem(np.full((64, 64, 3), 100, np.uint8), matrix, mask_a, box)
    second = PasteItem(np.full((64, 64, 3), 200, np.uint8), matrix, mask_b, box)
    output = paste_faces(frame, [first, second])
    assert (output[:, :32] == 50).all()  # equal masks: the first face stays (0.5 * 100)
    assert (output[:, 32:] == 150).all()  # larger mask: the second face replaces it (0.75 * 200)


def test_bad_options_are_user_errors(astronaut_rgb):
    matrix = crop_matrix(ASTRONAUT_LANDMARKS, 256)
    crop = warp_crop(astronaut_rgb, matrix, 256)
    item = PasteItem(crop, matrix, feathered_mask(256), ASTRONAUT_BOX, crop)
    with pytest.raises(OptionError, match="alpha"):
        paste_faces(astronaut_rgb, [item], alpha=1.5)
    with pytest.raises(OptionError, match="mode"):
        paste_faces(astronaut_rgb, [item], mode="average")
    with pytest.raises(ValueError, match="mask"):
        PasteItem(crop, matrix, np.ones((128, 128), np.float32), ASTRONAUT_BOX)
    without_original = PasteItem(crop, matrix, feathered_mask(256), ASTRONAUT_BOX)
    with pytest.raises(ValueError, match="original_crop"):
        paste_faces(astronaut_rgb, [without_original], mode="residual")


# ----------------------------------------------------------------------------------------------------------------
# masks


def test_feathered_mask_shape_and_properties():
    for size in (256, 512):
        mask = feathered_mask(size)
        assert mask.shape == (size, size) and mask.dtype == np.float32
        assert mask.min() == 0.0 and mask.max() == 1.0
        border = max(1, size // 32)
        assert not mask[:border].any() and not mask[-border:].any()
        assert not mask[:, :border].any() and not mask[:, -border:].any()
        # Eyes, nose and mouth of the GPEN template are fully restored.
        for x, y in reference_points(size):
            assert mask[int(y), int(x)] == 1.0
        # Non-increasing outwards from the centre along the four axes.
        cy, cx = int(0.52 * size), size // 2
        for ray in (mask[cy, cx:], mask[cy, cx::-1], mask[cy:, cx], mask[cy::-1, cx]):
            assert (np.diff(ray) <= 1e-7).all()
    assert feathered_mask(256) is feathered_mask(256)  # cached per size
    assert not feathered_mask(256).flags.writeable
    batch = FeatheredMasker()(np.zeros((3, 256, 256, 3), np.uint8))
    assert batch.shape == (3, 256, 256)
    np.testing.assert_array_equal(batch[2], feathered_mask(256))


def test_postprocess_parse_mask_properties(data_dir):
    stub = cv2.imread(str(data_dir / "process_parse_mask_stub.png"), cv2.IMREAD_GRAYSCALE) / 255.0
    stub_before = stub.copy()
    full = postprocess_parse_mask(np.ones((512, 512)), 512)
    assert full.dtype == np.float32
    assert full[256, 256] == pytest.approx(1.0, abs=1e-6)
    assert full[0, 0] < 1e-6 and full[:, :8].max() < 1e-3  # the 26 px border was zeroed before the blur
    small = postprocess_parse_mask(stub, 256)
    assert small.shape == (256, 256)
    np.testing.assert_allclose(small, cv2.resize(postprocess_parse_mask(stub, 512), (256, 256)), atol=0)
    np.testing.assert_array_equal(stub, stub_before)  # the border is zeroed on a copy
    np.testing.assert_array_equal(np.unique(stub), [0.0, 1.0])


class _FakeParser:
    """Stands in for a parser network: records its input and returns one-hot logits of a known label map."""

    def __init__(self, labels):
        self.labels = labels
        self.inputs = None

    def __call__(self, inputs):
        import torch

        self.inputs = inputs.numpy().copy()
        logits = torch.nn.functional.one_hot(torch.from_numpy(self.labels), 19).permute(2, 0, 1).float()
        return (logits[None].repeat(inputs.shape[0], 1, 1, 1), None)


@pytest.mark.parametrize(
    ("parser", "non_face", "mean", "std"),
    [
        ("parsenet", {0, 14, 18}, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # background, hat, cloth (GPEN's map)
        ("bisenet", {0, 16, 18}, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # background, cloth, hat
    ],
)
def test_parsing_masker_classes_and_input(parser, non_face, mean, std, astronaut_rgb):
    labels = (np.arange(512)[:, None] // 27 + np.zeros((1, 512), int)) % 19  # horizontal bands of classes 0..18
    fake = _FakeParser(labels)
    crop = warp_crop(astronaut_rgb, crop_matrix(ASTRONAUT_LANDMARKS, 256), 256)
    masks = ParsingMasker(fake, parser)(np.stack([crop, crop[::-1]]))

    face = np.array([[0.0 if label in non_face else 1.0 for label in row] for row in labels])
    expected = postprocess_parse_mask(face, 256)
    assert masks.shape == (2, 256, 256) and masks.dtype == np.float32
    np.testing.assert_array_equal(masks[0], expected)
    np.testing.assert_array_equal(masks[1], expected)

    # The parser saw the RGB crop at 512, normalised with its own statistics.
    upscaled = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_LINEAR) / 255.0
    expected_input = ((upscaled - mean) / std).transpose(2, 0, 1)
    assert fake.inputs.shape == (2, 3, 512, 512)
    np.testing.assert_allclose(fake.inputs[0], expected_input, atol=1e-6)


@pytest.fixture(scope="module")
def random_parser_weights(tmp_path_factory):
    """facexlib's parser networks with random weights, saved under facexlib's file names (no download)."""
    torch = pytest.importorskip("torch")
    from facexlib.parsing import BiSeNet, ParseNet

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    torch.save(BiSeNet(num_class=19).state_dict(), folder / "parsing_bisenet.pth")
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(), folder / "parsing_parsenet.pth")
    return folder


@pytest.mark.parametrize("parser", ["bisenet", "parsenet"])
def test_parser_contract_with_random_weights(parser, random_parser_weights, astronaut_rgb, monkeypatch):
    import torch

    load_calls = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        load_calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    masker = build_masker(parser, random_parser_weights)
    assert masker.name == parser
    assert load_calls and all(call.get("weights_only") is True for call in load_calls)

    crop = warp_crop(astronaut_rgb, crop_matrix(ASTRONAUT_LANDMARKS, 256), 256)
    masks = masker(crop[None])
    assert masks.shape == (1, 256, 256) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0 + 1e-6
    assert masks[0, :4].max() < 1e-3 and masks[0, :, -4:].max() < 1e-3  # GPEN's zeroed border
    np.testing.assert_array_equal(masker(crop[None]), masks)  # deterministic


def test_build_masker_choice(random_parser_weights, tmp_path, monkeypatch):
    assert build_masker("auto", random_parser_weights).name == "parsenet"
    only_bisenet = tmp_path / "only_bisenet"
    only_bisenet.mkdir()
    (only_bisenet / "parsing_bisenet.pth").write_bytes((random_parser_weights / "parsing_bisenet.pth").read_bytes())
    assert build_masker("auto", only_bisenet).name == "bisenet"
    assert build_masker("auto", tmp_path / "empty").name == "feathered"
    monkeypatch.setenv("VIDGPEN_WEIGHTS_DIR", str(only_bisenet))
    assert build_masker("auto", None).name == "bisenet"  # None: vidgpen's default weights folder
    assert build_masker("feathered", random_parser_weights).name == "feathered"
    with pytest.raises(WeightsError, match="not found"):
        build_masker("parsenet", only_bisenet)
    with pytest.raises(OptionError, match="mask source"):
        build_masker("segformer", only_bisenet)


def test_broken_parser_weights_are_weights_errors(random_parser_weights, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    # A BiSeNet checkpoint under ParseNet's name does not fit the network.
    (wrong / "parsing_parsenet.pth").write_bytes((random_parser_weights / "parsing_bisenet.pth").read_bytes())
    with pytest.raises(WeightsError, match="not a facexlib parsenet checkpoint"):
        build_masker("parsenet", wrong)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "parsing_bisenet.pth").write_bytes((random_parser_weights / "parsing_bisenet.pth").read_bytes()[:5000])
    with pytest.raises(WeightsError, match="cannot read"):
        build_masker("auto", truncated)
