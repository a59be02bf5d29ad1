"""Temporal blending of restored faces, and the flicker (warping error) measurement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vidgpen.errors import InputError
from vidgpen.faces.align import crop_matrix, reference_points, transform_points
from vidgpen.faces.temporal import TemporalBlender
from vidgpen.flicker import face_polygon, region_mask, warping_error

S = 64


def textured(seed: int, size: int = S) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)


def test_strength_zero_is_off():
    blender = TemporalBlender(strength=0.0)
    face = textured(0)
    for index in range(3):
        restored = textured(10 + index)
        assert blender.blend(1, index, face, restored) is restored


def test_steady_input_averages_restorer_noise_over_time():
    """A steady face whose restorations differ only by noise: the shown face varies much less."""
    strength = 0.6
    blender = TemporalBlender(strength=strength)
    face = textured(1)
    rng = np.random.default_rng(2)
    clean = textured(3).astype(np.float32)
    raw, shown = [], []
    for index in range(200):
        restored = np.clip(clean + rng.normal(0, 8, clean.shape), 0, 255).astype(np.uint8)
        raw.append(restored)
        shown.append(blender.blend(7, index, face, restored))
    raw_var = np.var(np.stack(raw[50:]).astype(np.float32), axis=0).mean()
    shown_var = np.var(np.stack(shown[50:]).astype(np.float32), axis=0).mean()
    # an exponential average with weight w keeps (1 - w) / (1 + w) of white noise's variance
    expected = (1 - strength) / (1 + strength)
    assert shown_var / raw_var == pytest.approx(expected, rel=0.2)
    # and it is unbiased: the time average equals the restorer's average
    assert np.abs(np.mean(shown[50:], axis=0) - np.mean(raw[50:], axis=0)).mean() < 1.0


def test_real_change_in_the_input_shows_at_once():
    """Where the input changes (motion, expression), the new restoration is shown without ghosting."""
    blender = TemporalBlender(strength=0.9)
    before = (textured(4) // 2).astype(np.uint8)      # every pixel of the input changes by 60+ levels
    after = (before + 60 + textured(5) // 4).astype(np.uint8)
    blender.blend(1, 0, before, textured(6))
    new_restoration = textured(7)
    shown = blender.blend(1, 1, after, new_restoration)
    assert np.abs(shown.astype(int) - new_restoration).mean() < 1.0


def test_weight_is_bounded_and_falls_with_input_difference():
    blender = TemporalBlender(strength=0.7, tolerance=6.0)
    previous = np.full((S, S), 100, np.float32)
    steps = [0, 3, 6, 12, 40]
    weights = [float(blender.weight(previous, previous + step).mean()) for step in steps]
    assert weights[0] == pytest.approx(0.7)
    assert weights[2] == pytest.approx(0.7 / np.e, rel=1e-5)
    assert all(a > b for a, b in zip(weights, weights[1:]))
    assert 0 <= min(weights) and max(weights) <= 0.7


@pytest.mark.parametrize("how", ["reset", "gap", "new_track"])
def test_tracks_start_afresh(how):
    blender = TemporalBlender(strength=0.9, max_gap=2)
    face = textured(8)
    blender.blend(1, 0, face, textured(9))
    fresh = textured(10)
    if how == "reset":
        blender.reset()
        shown = blender.blend(1, 1, face, fresh)
    elif how == "gap":
        shown = blender.blend(1, 4, face, fresh)   # unseen for 3 frames > max_gap
    else:
        shown = blender.blend(2, 1, face, fresh)   # another track has no history
    np.testing.assert_array_equal(shown, fresh)


def test_prune_bounds_memory():
    blender = TemporalBlender(strength=0.5, max_gap=2)
    for track in range(100):
        blender.blend(track, track, textured(0), textured(1))
        blender.prune(track)
    assert len(blender._tracks) <= 3


# --- flicker ----------------------------------------------------------------------------------------------------

def moving_sequence(frames: int, noise: float, seed: int, size=(120, 160)):
    """A textured scene panning one pixel per frame, with optional fresh per-frame noise."""
    rng = np.random.default_rng(seed)
    scene = cv2.resize(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), (240, 180), interpolation=cv2.INTER_CUBIC)
    height, width = size
    out = []
    for t in range(frames):
        frame = scene[20:20 + height, 10 + t:10 + t + width].astype(np.float32)
        out.append(np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8) if noise else
                   frame.astype(np.uint8))
    return out


def whole_frame(index, frame):
    h, w = frame.shape[:2]
    return [np.array([[20, 20], [w - 20, 20], [w - 20, h - 20], [20, h - 20]], np.float32)]


def test_flow_compensates_motion_and_noise_shows_as_flicker():
    clean = moving_sequence(6, 0.0, seed=1)
    noisy = moving_sequence(6, 6.0, seed=1)
    same = warping_error(clean, clean, whole_frame)
    assert same.input_error == pytest.approx(same.output_error)
    assert same.input_error < 2.0                       # a clean pan is explained by the flow
    flickering = warping_error(clean, noisy, whole_frame)
    assert flickering.output_error > 3 * flickering.input_error
    assert flickering.ratio > 3 and flickering.frame_pairs == 5


def test_flicker_needs_matching_videos():
    clean = moving_sequence(4, 0.0, seed=2)
    with pytest.raises(InputError, match="frame counts"):
        warping_error(clean, clean[:3], whole_frame)
    with pytest.raises(InputError, match="no faces"):
        warping_error(clean, clean, lambda i, f: [])


def test_face_polygon_is_the_inner_crop_mapped_back():
    landmarks = np.array([[203, 100], [246, 103], [225, 125], [205, 143], [243, 143]], np.float64)
    matrix = crop_matrix(landmarks, 512)
    polygon = face_polygon(matrix, 512)
    # mapping the polygon forward lands on the central 2/3 square of the crop
    np.testing.assert_allclose(transform_points(matrix, polygon),
                               [[512 / 6, 512 / 6], [512 * 5 / 6, 512 / 6], [512 * 5 / 6, 512 * 5 / 6],
                                [512 / 6, 512 * 5 / 6]], atol=1e-3)
    # and it holds the eyes, nose and mouth
    mask = region_mask((512, 512), [polygon])
    assert all(mask[int(y), int(x)] for x, y in landmarks)
    assert not mask[10, 10]
    assert reference_points(512).shape == (5, 2)


# --- end to end on the shipped sample ------------------------------------------------------------------------------

def consecutive_crop_difference(folder, size: int) -> float:
    """Mean absolute change (uint8 levels) between the restored crops of consecutive frames, inside the inner face
    (central 2/3 of the aligned crop). The crops are aligned by the smoothed transform, so what changes there from
    one frame to the next is the restoration itself: its flicker."""
    paths = sorted(folder.glob("frame*_face000.png"))
    crops = np.stack([cv2.imread(str(p)).astype(np.float32) for p in paths])
    inner = slice(size // 6, size * 5 // 6)
    return float(np.abs(np.diff(crops[:, inner, inner], axis=0)).mean()), len(paths)


def test_blending_on_the_sample_clip_lowers_the_restorers_flicker(recipe_engine, tmp_path):
    """Recipe GPEN-256 on samples/astronaut_degraded.mp4 (72 frames), blending off and on (the default 0.6)."""
    from pathlib import Path

    from vidgpen import api
    from vidgpen.flicker import measure_flicker

    sample = Path(__file__).resolve().parent.parent / "samples" / "astronaut_degraded.mp4"
    size = recipe_engine.size
    results = {}
    for strength in (0.0, 0.6):
        folder = tmp_path / f"strength{strength}"
        folder.mkdir()
        options = recipe_engine.options.replace(temporal_strength=strength, save_faces=folder / "faces",
                                                report=folder / "faces.json")
        summary = api.restore_video(sample, folder / "out.mp4", options=options, engine=recipe_engine)
        assert summary.frames == summary.faces == 72  # one face, found in every frame
        crop_flicker, crops = consecutive_crop_difference(folder / "faces", size)
        assert crops == 72
        frame_flicker = measure_flicker(sample, folder / "out.mp4", report=folder / "faces.json")
        results[strength] = crop_flicker, frame_flicker
    (off, frame_off), (on, frame_on) = results[0.0], results[0.6]
    assert off / on >= 1.5  # measured: 0.47 -> 0.28 levels
    # In the frames, the restored face flickers less than the degraded input with blending on (and off).
    assert frame_on.output_error <= frame_on.input_error
    assert frame_on.output_error <= frame_off.output_error
