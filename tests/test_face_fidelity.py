"""Faces that stay themselves: the input's colour (--color), black-and-white film kept so, and the drift report
(--report, --max-drift).

The restorers are stand-ins for trained GPEN (see :mod:`vidgpen.testing`): :class:`ShimmeringRestorer` keeps the
face's structure and colour and invents shimmering fine detail; :class:`ColorShiftingRestorer` adds a colour cast
as GPEN can; :class:`MouthMovingRestorer` draws a smile that is not there (mouth corners out and up).
"""

from __future__ import annotations

import json
import av
import cv2
import numpy as np
import pytest

from vidgpen import api, pipeline
from vidgpen.config import RestoreOptions
from vidgpen.errors import OptionError
from vidgpen.faces.color import MonochromeDetector, keep_chroma, match_color, tint_spread
from vidgpen.faces.align import crop_matrix, warp_crop
from vidgpen.pipeline import build_engine
from vidgpen.testing import ColorShiftingRestorer, MouthMovingRestorer, MovingFaceClip, ShimmeringRestorer
from cli_support import run_cli


FRAMES = 10
LAB_SHIFT = (5.0, 9.0, -12.0)


def clip_of(color: str) -> MovingFaceClip:
    return MovingFaceClip(frames=FRAMES, color=color, scale=1.2, noise=4.0, crf=14, blink=None, mouth=None,
                          turn=None)


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)


def face_lab_difference(clip, inputs, outputs) -> float:
    """Mean over frames of the distance between the face's mean Lab colour in the input and in the output."""
    distances = []
    for t, (a, b) in enumerate(zip(inputs, outputs)):
        region = clip.region(t, "face")
        distances.append(np.linalg.norm(lab(a)[region].mean(0) - lab(b)[region].mean(0)))
    return float(np.mean(distances))


def highpass(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return gray - cv2.GaussianBlur(gray, (0, 0), 2.0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fidelity")
    written = {}
    for color in ("color", "gray", "sepia"):
        clip = clip_of(color)
        path = clip.write(folder / f"{color}.mp4")
        written[color] = (clip, path, decoded(path))
    return written


@pytest.fixture(scope="module")
def engine():
    options = RestoreOptions(model="GPEN-BFR-256", detector="mtcnn", mask="feathered", dtype="fp32")
    return build_engine(options, restorer=ShimmeringRestorer(256))


def run(engine, source, target, restorer=None, **options):
    engine_here = engine if restorer is None else pipeline.FaceEngine(engine.options, restorer, engine.detector,
                                                                      engine.masker)
    summary = api.restore_video(source, target, options=engine.options.replace(**options), engine=engine_here)
    assert summary.frames == summary.faces == FRAMES
    return decoded(target)


# ------------------------------------------------------------------------------------------------------ colour


def test_match_color_removes_a_cast_and_keeps_the_detail():
    clip = clip_of("color")
    crop = warp_crop(clip.clean_frame(0), crop_matrix(clip.landmarks(0), 256), 256)
    restored = ShimmeringRestorer(256).restore(crop)
    shifted = ColorShiftingRestorer(ShimmeringRestorer(256), LAB_SHIFT).restore(crop)
    inner = (slice(256 // 6, 256 * 5 // 6),) * 2
    before = np.linalg.norm(lab(shifted[inner]).reshape(-1, 3).mean(0) - lab(crop[inner]).reshape(-1, 3).mean(0))
    matched = match_color(shifted, crop)
    after = np.linalg.norm(lab(matched[inner]).reshape(-1, 3).mean(0) - lab(crop[inner]).reshape(-1, 3).mean(0))
    assert before > 12 and after < 1.0
    # the invented detail is the restorer's, not the input's
    correlation = np.corrcoef(highpass(matched[inner]).ravel(), highpass(restored[inner]).ravel())[0, 1]
    assert correlation > 0.95
    # a restoration that already has the input's colour is left nearly as it is
    assert np.abs(match_color(restored, crop).astype(int) - restored).mean() < 1.5


def test_color_match_through_the_pipeline(clips, engine, tmp_path):
    clip, source, inputs = clips["color"]
    shifting = ColorShiftingRestorer(engine.restorer, LAB_SHIFT)
    off = run(engine, source, tmp_path / "off.mp4", shifting, color="off")
    matched = run(engine, source, tmp_path / "match.mp4", shifting, color="match")
    plain = run(engine, source, tmp_path / "plain.mp4", color="off")
    assert face_lab_difference(clip, inputs, off) > 8            # the cast shows without matching
    assert face_lab_difference(clip, inputs, matched) <= 2       # measured: 0.6
    # fine detail stays the restorer's: the matched output's high-pass is the uncast restoration's
    for t in (0, FRAMES - 1):
        region = clip.region(t, "face")
        correlation = np.corrcoef(highpass(matched[t])[region], highpass(plain[t])[region])[0, 1]
        assert correlation > 0.9


# --------------------------------------------------------------------------------------------- black and white


def test_tint_spread_tells_film_from_colour(clips):
    spreads = {}
    for color, (clip, _, inputs) in clips.items():
        crop = warp_crop(inputs[0], crop_matrix(clip.landmarks(0), 256), 256)
        spreads[color] = tint_spread(crop)
        spreads[color + " dark"] = tint_spread((crop * 0.25).astype(np.uint8))
    assert spreads["gray"] < 1.0 and spreads["sepia"] < 1.5
    assert spreads["color"] > 4.5 and spreads["color dark"] > 4.5


def test_monochrome_decision_has_hysteresis(monkeypatch):
    import vidgpen.faces.color as color_module

    def decisions(spreads, smoothing):
        values = iter(spreads)
        monkeypatch.setattr(color_module, "tint_spread", lambda crop: next(values))
        detector = MonochromeDetector(enter=2.5, leave=4.0, smoothing=smoothing)
        return [detector.update(1, t, None) for t in range(len(spreads))]

    assert decisions([5.0, 3.0, 2.0, 3.0, 3.9, 4.5], 1.0) == [False, False, True, True, True, False]
    assert decisions([2.0, 3.9, 4.1], 1.0) == [True, True, False]   # a new track decides at the midpoint
    # averaged over time, one grey-looking face (a dark shot) does not flip a colour track
    assert decisions([5.0, 1.0, 5.0], 0.3) == [False, False, False]


def test_keep_chroma_is_exact_on_grey():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), 3, axis=2)
    colourful = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    kept = keep_chroma(colourful, grey)
    assert (kept[..., 0] == kept[..., 1]).all() and (kept[..., 1] == kept[..., 2]).all()
    np.testing.assert_allclose(kept[..., 0], cv2.cvtColor(colourful, cv2.COLOR_RGB2GRAY), atol=1)


def cli_restore(source, target, restorer, *args) -> None:
    """``vidgpen restore`` with the run's engine built around ``restorer`` (MTCNN, feathered mask, fp32)."""
    def build(options, notice=None, _restorer=None):
        return pipeline.build_engine(options, notice, restorer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "build_engine", build)
        code, _, err = run_cli("restore", source, "-o", target, "--model", "GPEN-BFR-256", "--detector", "mtcnn",
                               "--mask", "feathered", "--dtype", "fp32", "--quiet", *args)
    assert code == 0, err


@pytest.mark.parametrize("color, through", [("gray", "library"), ("sepia", "cli")])
def test_black_and_white_film_keeps_its_chroma(clips, engine, tmp_path, color, through):
    clip, source, inputs = clips[color]
    colourful = ColorShiftingRestorer(engine.restorer, (0.0, 20.0, 25.0))   # a restorer that colours the face
    if through == "cli":
        cli_restore(source, tmp_path / "out.mp4", colourful, "--report", tmp_path / "report.json")
        outputs = decoded(tmp_path / "out.mp4")
    else:
        outputs = run(engine, source, tmp_path / "out.mp4", colourful, report=tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert all(face["monochrome"] for frame in report["frames"] for face in frame["faces"])
    for t, (a, b) in enumerate(zip(inputs, outputs)):
        region = clip.region(t, "face")
        chroma_in = cv2.cvtColor(a, cv2.COLOR_RGB2YCrCb)[..., 1:][region].astype(np.float32)
        chroma_out = cv2.cvtColor(b, cv2.COLOR_RGB2YCrCb)[..., 1:][region].astype(np.float32)
        assert np.abs(chroma_out.mean(0) - chroma_in.mean(0)).max() <= 1.0      # the face's chroma: within 1 level
        assert np.abs(chroma_out - chroma_in).mean() <= 1.0                       # and pixel by pixel
        luma_change = np.abs(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(int) - cv2.cvtColor(b, cv2.COLOR_RGB2GRAY))
        assert luma_change[region].mean() > 3                                   # while it was restored
    # without the rule (--color off) the restorer's colour shows
    colour_shown = run(engine, source, tmp_path / "off.mp4", colourful, color="off")
    chroma = cv2.cvtColor(colour_shown[0], cv2.COLOR_RGB2YCrCb)[..., 1:][clip.region(0, "face")].astype(np.float32)
    chroma_in = cv2.cvtColor(inputs[0], cv2.COLOR_RGB2YCrCb)[..., 1:][clip.region(0, "face")].astype(np.float32)
    assert np.abs(chroma - chroma_in).mean() > 5


def test_colour_clip_is_untouched_by_the_black_and_white_rule(clips, engine, tmp_path):
    clip, source, inputs = clips["color"]
    auto = run(engine, source, tmp_path / "auto.mp4", report=tmp_path / "report.json")
    matched = run(engine, source, tmp_path / "match.mp4", color="match")
    report = json.loads((tmp_path / "report.json").read_text())
    assert not any(face["monochrome"] for frame in report["frames"] for face in frame["faces"])
    for a, b in zip(auto, matched):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------------- drift


def test_options_are_checked(clips, tmp_path):
    with pytest.raises(OptionError, match="--color"):
        RestoreOptions(color="sepia")
    with pytest.raises(OptionError, match="--max-drift"):
        RestoreOptions(max_drift=0)
    _, source, _ = clips["color"]
    code, _, err = run_cli("restore", source, "-o", tmp_path / "out.mp4", "--max-drift", "-1")
    assert code == 2 and err.strip().splitlines()[-1].startswith("vidgpen: error: --max-drift must be a positive")
    code, _, err = run_cli("restore", source, "-o", tmp_path / "out.mp4", "--color", "sepia")
    assert code == 2 and "--color" in err
    assert not (tmp_path / "out.mp4").exists()


@pytest.fixture(scope="module")
def drift_runs(clips, engine, tmp_path_factory):
    """The colour clip through the CLI with --report: the plain stand-in, and one that moves the mouth corners
    (with --max-drift). The stand-in shimmers little here: its invented detail would only add noise to the
    detector's landmarks, which this test is not about."""
    clip, source, _ = clips["color"]
    folder = tmp_path_factory.mktemp("drift")
    results = {}
    base = ShimmeringRestorer(256, amplitude=3.0)
    for name, restorer, extra in (("plain", base, []),
                                  ("smile", MouthMovingRestorer(base, shift=16.0), ["--max-drift", "0.035"])):
        cli_restore(source, folder / f"{name}.mp4", restorer, "--report", folder / f"{name}.json", *extra)
        report = json.loads((folder / f"{name}.json").read_text())
        results[name] = [frame["faces"][0] for frame in report["frames"]]
        results[name + "_frames"] = decoded(folder / f"{name}.mp4")
    results["input"] = decoded(source)
    return results


def test_drift_report_flags_a_moved_mouth(drift_runs):
    plain, smile = drift_runs["plain"], drift_runs["smile"]
    # the detector runs on a track's first face and every 4th frame after
    assert [face["landmark_shift"] is not None for face in plain] == [t % 4 == 0 for t in range(FRAMES)]
    plain = [face for face in plain if face["landmark_shift"] is not None]
    smile = [face for face in smile if face["landmark_shift"] is not None]
    plain_shift = [face["landmark_shift"] for face in plain]
    smile_shift = [face["landmark_shift"] for face in smile]
    assert None not in smile_shift
    # measured: 0.013, 0.018, 0.017 against 0.050, 0.078, 0.059
    assert max(plain_shift) < 0.035 < min(smile_shift), repr((plain_shift, smile_shift))
    assert np.mean(smile_shift) > 2 * np.mean(plain_shift)
    # the mouth corners are where the restored landmarks moved (median over the frames)
    moved = np.median([np.linalg.norm(np.subtract(s["restored_landmarks"], p["restored_landmarks"]), axis=1)
                       for p, s in zip(plain, smile)], axis=0)
    assert moved[3:].mean() > 2 * moved[:3].max(), moved     # measured: 4.8 and 8.2 px against 2.6 at most
    assert all(face["color_shift"] < 3 for face in plain + smile)    # the stand-ins keep the colour


def test_max_drift_lowers_the_strength_smoothly(drift_runs):
    plain, smile = drift_runs["plain"], drift_runs["smile"]
    assert all(face["strength"] == 1.0 for face in plain)             # no --max-drift: never lowered
    strengths = [face["strength"] for face in smile]
    assert strengths[0] == pytest.approx(0.035 / smile[0]["landmark_shift"], abs=1e-3)  # a new track: its target
    assert max(strengths) < 0.9 and np.mean(strengths) < 0.75
    assert max(abs(a - b) for a, b in zip(strengths, strengths[1:])) <= 0.1 + 1e-4  # then changes smoothly


class ShiftedLandmarks:
    """A detector stand-in: finds one face whose landmarks are the template's moved by ``offset`` pixels on the
    restored crop (told apart from the input crop by its mean), so the drift is known exactly."""

    name = "stub"

    def __init__(self, offset: float):
        self.offset = offset

    def detect_batch(self, frames):
        from vidgpen.faces.align import reference_points
        from vidgpen.faces.types import Detection
        from vidgpen.faces.drift import DETECT_MARGIN, DETECT_SIZE

        # the template points of the whole crop, in the coordinates of the detector's view of its centre
        points = (reference_points(DETECT_SIZE) - DETECT_SIZE * DETECT_MARGIN) / (1 - 2 * DETECT_MARGIN)
        return [[Detection(box=[0, 0, DETECT_SIZE, DETECT_SIZE], score=1.0,
                           landmarks=points + (self.offset if frame.mean() > 100 else 0.0))] for frame in frames]


def test_finisher_lowers_the_strength_of_a_drifting_face():
    from vidgpen.faces.align import reference_points
    from vidgpen.faces.finish import FaceFinisher

    size = 256
    rng = np.random.default_rng(3)
    input_crop = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)       # mean < 100: "the input"
    restored = rng.integers(120, 255, (size, size, 3), dtype=np.uint8)      # mean > 100: "the restoration"
    eye = np.linalg.norm(np.subtract(*reference_points(size)[:2]))
    view = size * (1 - 2 * 1 / 8) / 128                                        # crop pixels per detector pixel
    offset_small = 0.1 * eye / view / np.sqrt(2)                               # every landmark moved by 0.1 eyes
    finisher = FaceFinisher(temporal_strength=0.0, color="off", max_drift=0.05,
                            detector=ShiftedLandmarks(offset_small), landmark_interval=1)
    first = finisher.finish(7, 0, input_crop, restored)
    assert first.record["landmark_shift"] == pytest.approx(0.1, abs=1e-3)
    assert first.record["strength"] == pytest.approx(0.5, abs=1e-3)         # max_drift / shift
    expected = cv2.addWeighted(restored, 0.5, input_crop, 0.5, 0.0)
    assert np.abs(first.shown.astype(int) - expected).max() <= 1                # (0.5 up to float rounding)
    finisher.detector = ShiftedLandmarks(0.0)                                # the face stops drifting:
    strengths = [finisher.finish(7, t, input_crop, restored).record["strength"] for t in range(1, 6)]
    assert all(a < b for a, b in zip(strengths, strengths[1:])) and strengths[0] < 0.7 and strengths[-1] > 0.85


def test_finisher_state_is_bounded_and_reset_by_a_cut():
    from vidgpen.faces.finish import FaceFinisher

    rng = np.random.default_rng(4)
    crop = rng.integers(0, 90, (64, 64, 3), dtype=np.uint8)
    restored = rng.integers(120, 255, (64, 64, 3), dtype=np.uint8)
    finisher = FaceFinisher(max_drift=0.05, detector=ShiftedLandmarks(0.0))
    stores = lambda: [finisher.blender._tracks, finisher.monochrome._tracks, finisher.limiter._tracks,  # noqa: E731
                      finisher._landmarks_measured]
    for track in range(100):                     # a new face every frame, each seen once
        finisher.finish(track, track, crop, restored)
        finisher.prune(track)
        assert max(len(store) for store in stores()) <= 2 * 4 + 1
    finisher.reset()
    assert all(len(store) == 0 for store in stores())


def test_monochrome_paste_keeps_the_frame_chroma_and_leaves_the_rest_alone():
    from dataclasses import replace

    from vidgpen.faces.mask import feathered_mask
    from vidgpen.pipeline import _FaceWork, paste_back
    from vidgpen.testing import SEPIA_TINT

    clip = clip_of("sepia")
    frame = clip.frame(0, np.random.default_rng(5))
    matrix = crop_matrix(clip.landmarks(0), 256)
    input_crop = warp_crop(frame, matrix, 256)
    colourful = ColorShiftingRestorer(ShimmeringRestorer(256), (0.0, 20.0, 25.0)).restore(input_crop)
    face = _FaceWork(track_id=0, crop_matrix=matrix, display_crop_matrix=matrix, box=np.array([0, 0, 200, 200], np.float32),
                     input_crop=input_crop, shown=colourful, mask=np.array(feathered_mask(256)), monochrome=True)
    pasted = paste_back(frame, [face], RestoreOptions())
    untouched_by_colour_paste = (paste_back(frame, [replace(face, monochrome=False)], RestoreOptions()) == frame).all(2)
    np.testing.assert_array_equal(pasted[untouched_by_colour_paste], frame[untouched_by_colour_paste])
    changed = (pasted != frame).any(axis=2)
    assert changed.sum() > 2000                                      # the face was pasted
    ycc_in, ycc_out = (cv2.cvtColor(x, cv2.COLOR_RGB2YCrCb).astype(int) for x in (frame, pasted))
    assert np.abs(ycc_out[..., 1:] - ycc_in[..., 1:])[changed].max() <= 1    # with the frame's own chroma
    assert np.abs(ycc_out[..., 0] - ycc_in[..., 0])[changed].mean() > 3      # and the restored luminance
    assert SEPIA_TINT[2] < 1                                         # (the clip really is tinted)
