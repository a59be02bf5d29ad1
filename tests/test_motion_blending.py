"""Motion-compensated temporal blending, measured with a restorer that shimmers like trained GPEN.

The recipe weights barely react to fine texture, so they cannot show the shimmer of trained GPEN on noisy footage.
:class:`vidgpen.testing.ShimmeringRestorer` is the stand-in for trained weights here: it keeps the face's structure
and invents fine detail from the input's own fine texture (noise included) through a strongly non-linear map, so
fresh sensor noise in every frame becomes different full-contrast detail in every frame. It has no face prior: it
does not sharpen, does not change identity or colour (see its module docstring). The clip
(:class:`vidgpen.testing.MovingFaceClip`) is the astronaut drifting, rolling and zooming, softened, noisy and
H.264-compressed, blinking at frame 8, opening the mouth at frame 13 and turning the head at frames 16-17; its true
motion is known, so flicker is the warping error inside the face against the *true* motion (lag and ghosting
count as errors too).
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from vidgpen import api
from vidgpen.config import RestoreOptions
from vidgpen.faces.align import crop_matrix, warp_crop
from vidgpen.faces.temporal import TemporalBlender
from vidgpen.flicker import measure_flicker
from vidgpen.pipeline import build_engine
from vidgpen.testing import MovingFaceClip, ShimmeringRestorer, true_warping_error

CLIP = MovingFaceClip(frames=20, scale=1.2, noise=10.0, crf=14)
DEFAULT_STRENGTH = RestoreOptions().temporal_strength


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def stand_in_engine():
    options = RestoreOptions(model="GPEN-BFR-256", detector="mtcnn", mask="feathered", dtype="fp32")
    return build_engine(options, restorer=ShimmeringRestorer(256))


@pytest.fixture(scope="module")
def runs(stand_in_engine, tmp_path_factory):
    """The clip restored with blending off and at the default strength (each with its face report)."""
    folder = tmp_path_factory.mktemp("motion")
    source = CLIP.write(folder / "in.mp4")
    result = {"source": source, "input": decoded(source)}
    for name, strength in (("off", 0.0), ("default", DEFAULT_STRENGTH)):
        options = stand_in_engine.options.replace(temporal_strength=strength, report=folder / f"{name}.json")
        summary = api.restore_video(source, folder / f"{name}.mp4", options=options, engine=stand_in_engine)
        assert summary.frames == summary.faces == CLIP.frames
        result[name] = decoded(folder / f"{name}.mp4")
        result[name + "_path"] = folder / f"{name}.mp4"
        result[name + "_report"] = folder / f"{name}.json"
    return result


# ------------------------------------------------------------------------------------------- the stand-in restorer


def aligned_clean_crop(t: int = 0, size: int = 256) -> np.ndarray:
    return warp_crop(CLIP.clean_frame(t), crop_matrix(CLIP.landmarks(t), size), size)


def test_shimmering_restorer_keeps_structure_and_turns_noise_into_detail():
    restorer = ShimmeringRestorer(256)
    rng = np.random.default_rng(0)
    clean = aligned_clean_crop()
    noisy = [np.clip(clean + rng.normal(0, 4, clean.shape), 0, 255).astype(np.uint8) for _ in range(2)]
    restored = restorer.restore(np.stack([clean, clean, *noisy])).astype(np.float32)
    np.testing.assert_array_equal(restored[0], restored[1])            # deterministic, steady on a steady input
    # structure kept: at a coarse scale the restoration is the input
    coarse = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), 4) for x in (clean, restored[2])]
    assert np.abs(coarse[0] - coarse[1]).mean() < 3
    # 4 levels of fresh noise in the input become a much larger change of the restored detail
    input_change = np.abs(noisy[0].astype(np.float32) - noisy[1]).mean()
    restored_change = np.abs(restored[2] - restored[3]).mean()
    assert restored_change > 2 * input_change           # measured: 9.3 against 4.4


def test_shimmering_restorer_with_gpen_runs_the_network(recipe_engine):
    gpen = recipe_engine.restorer
    calls = []
    real_restore = gpen.restore
    stand_in = ShimmeringRestorer(gpen.size, gpen=gpen)
    gpen.restore = lambda crops: calls.append(len(crops)) or real_restore(crops)
    try:
        crops = aligned_clean_crop(0, gpen.size)[None]
        out = stand_in.restore(crops)
    finally:
        del gpen.restore
    assert calls == [1]
    np.testing.assert_array_equal(out, ShimmeringRestorer(gpen.size).restore(crops))
    assert stand_in.batch_size == gpen.batch_size and stand_in.variant == gpen.variant


# --------------------------------------------------------------------------------------------------- the blender


def shifted(image: np.ndarray, dx: float) -> np.ndarray:
    matrix = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(image, matrix, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_blending_follows_motion():
    """A face sliding 2 px per frame, restored with fresh noise each frame: the motion-compensated blend averages
    the noise away and stays on the moving face; the still-only gate of before cannot blend at all."""
    rng = np.random.default_rng(1)
    base = aligned_clean_crop(0, 128).astype(np.float32)
    results = {}
    for motion in (True, False):
        blender = TemporalBlender(strength=0.6, motion=motion)
        errors = []
        for t in range(12):
            clean = shifted(base, 2.0 * t)
            restored = np.clip(clean + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
            shown = blender.blend(0, t, clean.astype(np.uint8), restored)
            if t >= 4:
                errors.append(np.abs(shown[16:-16, 16:-16] - clean[16:-16, 16:-16]).mean())
        results[motion] = float(np.mean(errors))
    noise_level = 10 * np.sqrt(2 / np.pi)  # mean |N(0, 10)|
    assert results[False] > 0.8 * noise_level       # no blending while the face moves
    assert results[True] < 0.7 * noise_level        # noise averaged over time, no smear of the moving face


# ------------------------------------------------------------------------------------------------ the whole clip


def test_default_blending_halves_face_flicker_against_the_true_motion(runs):
    inputs = runs["input"]
    off = true_warping_error(CLIP, inputs, runs["off"])
    on = true_warping_error(CLIP, inputs, runs["default"])
    assert off.input_error == on.input_error and on.frame_pairs == CLIP.frames - 1
    # measured: input 5.66, off 5.23 (the stand-in shimmers about as much as the noisy input), default 2.20 levels;
    # the clip is written reproducibly (x264 cpu-independent), so these are the same numbers on every run
    assert off.output_error > 0.9 * off.input_error
    assert off.output_error >= 2.0 * on.output_error
    assert on.output_error <= on.input_error


@pytest.mark.parametrize("event, part", [("blink", "eyes"), ("mouth", "mouth"), ("turn", "face")])
def test_a_new_pose_shows_within_one_frame(runs, event, part):
    """At the frame of a blink, a mouth opening and a head turn, the blended face equals the new restoration (what
    blending off shows), not the previous pose: the residue is a small part of the change."""
    frame = getattr(CLIP, event)
    region = CLIP.region(frame, part)

    def smooth(image):  # compare shapes, not the stand-in's invented detail
        return cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.5)

    new, shown, before = smooth(runs["off"][frame]), smooth(runs["default"][frame]), smooth(runs["default"][frame - 1])
    residue = np.abs(shown - new).mean(axis=2)[region].mean()
    change = np.abs(before - new).mean(axis=2)[region].mean()
    assert change > 15                      # the event is a real change there
    assert residue < 0.12 * change          # measured: 5%, 3%, 8%


def test_flicker_command_agrees_with_the_true_motion(runs):
    """``vidgpen flicker`` (the input's own optical flow, face regions from the report) tells the same story."""
    measured = measure_flicker(runs["source"], runs["default_path"], report=runs["default_report"])
    truth = {name: true_warping_error(CLIP, runs["input"], runs[name]) for name in ("off", "default")}
    assert measured.input_error == pytest.approx(truth["default"].input_error, rel=0.35)
    assert measured.ratio == pytest.approx(truth["default"].ratio, rel=0.3)
    assert measured.output_error <= measured.input_error
