"""Alignment: GPEN's template, the float32 Umeyama fit and the crop warp against the official reference data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vidgpen.faces.align import (
    FFHQ_POINTS_512,
    crop_matrix,
    fit_crop,
    invert_affine,
    reference_points,
    transform_points,
    umeyama,
    warp_crop,
)

SIZES = (256, 512, 1024, 2048)
PIXEL_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def alignment_reference(data_dir):
    return json.loads((data_dir / "alignment_reference.json").read_text())


@pytest.fixture(scope="module")
def astronaut_rgb():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


def _landmarks(alignment_reference) -> np.ndarray:
    return np.array(alignment_reference["landmarks_xy"], dtype=np.float64)


def _max_point_error(matrix_a: np.ndarray, matrix_b: np.ndarray, points: np.ndarray) -> float:
    """Largest distance in pixels between where two affines send the same points."""
    return float(np.abs(transform_points(matrix_a, points) - transform_points(matrix_b, points)).max())


def _square_corners(size: float) -> np.ndarray:
    return np.array([[0.0, 0.0], [size, 0.0], [0.0, size], [size, size]])


def _crop_scale(landmarks: np.ndarray, template: str) -> float:
    """Crop pixels per frame pixel of the 512 crop for these landmarks."""
    return math.sqrt(abs(np.linalg.det(crop_matrix(landmarks, 512, template)[:, :2])))


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[scale * cos, -scale * sin, tx], [scale * sin, scale * cos, ty]])


@pytest.mark.parametrize("size", SIZES)
def test_reference_points_match_official(alignment_reference, size):
    expected = np.array(alignment_reference["sizes"][str(size)]["reference_pts"])
    np.testing.assert_allclose(reference_points(size), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", SIZES)
def test_fit_reproduces_official_matrices(alignment_reference, size):
    sizes = alignment_reference["sizes"][str(size)]
    landmarks = _landmarks(alignment_reference)
    fit = fit_crop(landmarks, size)
    official = np.array(sizes["tfm"])
    official_inverse = np.array(sizes["tfm_inv"])

    # tfm is judged where it matters, on the face (landmarks) and the crop's footprint in the frame; tfm_inv and the
    # algebraic inverse on the crop square they map back.
    frame_points = np.vstack([landmarks, transform_points(official_inverse, _square_corners(size))])
    assert _max_point_error(fit.matrix, official, frame_points) < PIXEL_TOLERANCE
    assert _max_point_error(fit.inverse, official_inverse, _square_corners(size)) < PIXEL_TOLERANCE
    assert _max_point_error(invert_affine(fit.matrix), official_inverse, _square_corners(size)) < PIXEL_TOLERANCE
    assert fit.scale == pytest.approx(sizes["scale"], rel=1e-9)
    np.testing.assert_array_equal(crop_matrix(landmarks, size), fit.matrix)

    # The fit follows the official float32 path: it is far closer to tfm than a float64 fit is.
    float64_fit = np.array(sizes["tfm_float64_points_instead"])
    ours = np.abs(fit.matrix - official).max()
    assert ours < 0.01 * np.abs(float64_fit - official).max()


@pytest.mark.parametrize("size", [256])
def test_crop_is_byte_identical_to_official(data_dir, alignment_reference, astronaut_rgb, size):
    official_bgr = np.load(data_dir / f"GPEN-BFR-{size}_aligned_face_bgr_u8.npy")
    crop_rgb = warp_crop(astronaut_rgb, crop_matrix(_landmarks(alignment_reference), size), size)
    assert crop_rgb.shape == (size, size, 3) and crop_rgb.dtype == np.uint8
    np.testing.assert_array_equal(crop_rgb[:, :, ::-1], official_bgr)


@pytest.mark.parametrize("size", [512, 1024])
def test_large_crops_are_byte_identical_to_official(shared_reference_dir, alignment_reference, astronaut_rgb, size):
    official_bgr = np.load(shared_reference_dir / f"GPEN-BFR-{size}_aligned_face_bgr_u8.npy")
    crop_rgb = warp_crop(astronaut_rgb, crop_matrix(_landmarks(alignment_reference), size), size)
    np.testing.assert_array_equal(crop_rgb[:, :, ::-1], official_bgr)


@pytest.mark.parametrize(
    ("scale", "angle", "tx", "ty"),
    [(1.35, -0.03, -180.4, -4.7), (0.4, 2.5, 310.0, -20.0), (3.0, -3.0, 12.5, 700.25), (1.0, 0.0, 0.0, 0.0)],
)
def test_umeyama_recovers_exact_similarity(scale, angle, tx, ty):
    rng = np.random.default_rng(7)
    source = rng.uniform(0, 500, size=(5, 2))
    truth = _similarity(scale, angle, tx, ty)
    fit = umeyama(source, transform_points(truth, source))
    assert fit.scale == pytest.approx(scale, rel=1e-5)
    # float32 fit: ~1e-7 relative on coordinates of a few hundred pixels.
    assert _max_point_error(fit.matrix, truth, source) < 1e-3
    linear = fit.matrix[:, :2]
    assert np.linalg.det(linear) > 0  # a rotation, never a reflection


def test_umeyama_never_returns_a_reflection_for_mirrored_points():
    source = reference_points(256)
    mirrored = source * [-1.0, 1.0] + [256.0, 0.0]
    fit = umeyama(source, mirrored)
    assert np.linalg.det(fit.matrix[:, :2]) > 0
    # The best proper similarity is worse than the (excluded) reflection, which would be exact.
    assert _max_point_error(fit.matrix, np.array([[-1.0, 0, 256.0], [0, 1.0, 0]]), source) > 1.0


def test_umeyama_fixed_scale_is_the_official_inverse(alignment_reference):
    landmarks = _landmarks(alignment_reference)
    forward = umeyama(landmarks, reference_points(512))
    backward = umeyama(reference_points(512), landmarks, estimate_scale=False, fixed_scale=1.0 / forward.scale)
    assert backward.scale == 1.0 / forward.scale
    composed = transform_points(backward.matrix, transform_points(forward.matrix, landmarks))
    np.testing.assert_allclose(composed, landmarks, atol=1e-3)


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.full((5, 2), 7.0), np.full((5, 2), np.nan)])
def test_umeyama_rejects_degenerate_points(bad):
    with pytest.raises(ValueError):
        umeyama(bad, reference_points(256))


def test_landmarks_must_be_five_points():
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        crop_matrix(np.zeros((2, 5)), 256)


@pytest.mark.parametrize("template", ["gpen", "ffhq"])
@pytest.mark.parametrize("size", [256, 512])
def test_template_points_map_onto_reference(template, size):
    # Landmarks that are an exact similarity image of the template must be sent exactly back onto it.
    frame_from_crop = _similarity(0.6, 0.3, 400.0, 120.0)
    landmarks = transform_points(frame_from_crop, reference_points(size, template))
    matrix = crop_matrix(landmarks, size, template)
    np.testing.assert_allclose(transform_points(matrix, landmarks), reference_points(size, template), atol=1e-3)
    footprint = transform_points(frame_from_crop, _square_corners(size))
    assert _max_point_error(matrix, invert_affine(frame_from_crop), footprint) < PIXEL_TOLERANCE


def test_ffhq_template_is_tighter_than_gpen(alignment_reference):
    np.testing.assert_allclose(reference_points(512, "ffhq"), FFHQ_POINTS_512)
    np.testing.assert_allclose(reference_points(1024, "ffhq"), 2 * FFHQ_POINTS_512)
    landmarks = _landmarks(alignment_reference)
    # The FFHQ crop shows less around the face: more crop pixels per frame pixel.
    assert _crop_scale(landmarks, "ffhq") > 1.1 * _crop_scale(landmarks, "gpen")
    with pytest.raises(ValueError, match="template"):
        reference_points(512, "arcface")


def test_invert_affine_round_trip():
    rng = np.random.default_rng(3)
    for _ in range(20):
        matrix = np.hstack([rng.normal(size=(2, 2)) + 2 * np.eye(2), rng.uniform(-500, 500, size=(2, 1))])
        inverse = invert_affine(matrix)
        points = rng.uniform(-1000, 1000, size=(10, 2))
        np.testing.assert_allclose(transform_points(inverse, transform_points(matrix, points)), points, atol=1e-8)
        np.testing.assert_allclose(invert_affine(inverse), matrix, rtol=1e-12, atol=1e-9)


def test_warp_crop_with_integer_shift_is_a_slice():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    matrix = np.array([[1.0, 0.0, -30.0], [0.0, 1.0, -20.0]])  # crop origin at frame (30, 20)
    np.testing.assert_array_equal(warp_crop(frame, matrix, 64), frame[20:84, 30:94])


def test_warp_crop_outside_the_frame_is_black():
    frame = np.full((100, 100, 3), 200, dtype=np.uint8)
    matrix = np.array([[1.0, 0.0, 40.0], [0.0, 1.0, 40.0]])  # frame origin lands at crop (40, 40)
    crop = warp_crop(frame, matrix, 64)
    assert (crop[:39, :, :] == 0).all() and (crop[:, :39, :] == 0).all()
    assert (crop[41:, 41:, :] == 200).all()


def test_warp_crop_round_trips_through_the_inverse(astronaut_rgb, alignment_reference):
    # Crop at 512 (upsampling the face), map the crop back: the face interior comes back close to the frame.
    matrix = crop_matrix(_landmarks(alignment_reference), 512)
    crop = warp_crop(astronaut_rgb, matrix, 512)
    back = warp_crop(np.ascontiguousarray(crop), invert_affine(matrix), 512)  # a 512 "crop" = the whole frame
    inside = warp_crop(np.full((512, 512, 3), 255, np.uint8), invert_affine(matrix), 512)[:, :, 0] == 255
    error = np.abs(back.astype(int) - astronaut_rgb.astype(int))[inside]
    assert inside.sum() > 20000
    assert np.median(error) <= 2 and error.mean() < 3
