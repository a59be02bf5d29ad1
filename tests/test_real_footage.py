"""Real footage end to end through ``vidgpen restore``: phone clips stored sideways, anamorphic (non-square pixel)
captures, interlaced tape, and AVI files whose frames carry mislabelled timestamps. Every case is generated here
with PyAV; recipe GPEN-BFR-256 weights and MTCNN throughout."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vidgpen.faces.align import transform_points
from vidgpen.faces.paste import paste_region
from vidgpen.faces.report import load_report
from vidgpen.samples import astronaut_rgb, face_clip_frame, face_clip_matrix
from vidgpen.video.display import DisplayGeometry
from vidgpen.video.probe import probe
from vidgpen.video.reader import open_video
from vidgpen.video.synthetic import write_packed_bframe_avi
from vidgpen.video.transcode import transcode
from vidgpen.video.timestamps import DisplayTimes
from cli_support import run_cli

# Runs that load the recipe checkpoint reuse the restorer already loaded (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("reuse_loaded_restorer")

FPS = 25


@pytest.fixture(scope="module")
def recipe_args(recipe_args) -> list[str]:
    return [*recipe_args, "--quiet"]


def packets(path: Path, kind: str) -> list[tuple[str, int]]:
    """(sha256, time in whole milliseconds) of every packet of the first ``kind`` stream."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [(hashlib.sha256(bytes(p)).hexdigest(), round(1000 * p.pts * p.time_base))
                for p in container.demux(stream) if p.size]


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]


# ------------------------------------------------------------------------------------------- mislabelled timestamps


def test_display_times_sorts_labels_within_the_window():
    times = DisplayTimes(step=1)
    labels = [1, 2, 3, 5, 4, 6, 8, 7, 9, 11, 10]
    out = [t for i, label in enumerate(labels) for t in times.push(i, label, None)] + list(times.flush())
    assert [item for item, _ in out] == list(range(len(labels)))  # order of the frames is kept
    assert [ticks for _, ticks in out] == sorted(labels)


def test_display_times_falls_back_to_dts_then_to_the_cadence():
    times = DisplayTimes(step=10, window=2)
    # a duplicate label (20) that sorting cannot place takes its dts (25); a frame without any label continues
    # the cadence; a duplicate without a usable dts gets one tick more.
    pushes = [(0, 0), (10, 10), (20, 20), (20, 25), (None, None), (30, 5)]
    out = [t for pts, dts in pushes for t in times.push(None, pts, dts)] + list(times.flush())
    assert [ticks for _, ticks in out] == [0, 10, 20, 25, 35, 36]


def test_well_labelled_frames_keep_their_timestamps():
    labels = [0, 3, 7, 8, 20, 21, 40]  # variable frame rate
    times = DisplayTimes(step=3)
    out = [t for label in labels for t in times.push(label, label, label)] + list(times.flush())
    assert [ticks for _, ticks in out] == labels


@pytest.fixture(scope="module")
def packed_avi(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    portrait = astronaut_rgb()
    images = [face_clip_frame(i, 320, 240, FPS, 3.0, rng, portrait) for i in range(10)]
    return write_packed_bframe_avi(tmp_path_factory.mktemp("avi") / "packed.avi", images, fps=FPS)


def test_packed_bframe_avi_restores_with_display_times(packed_avi, recipe_args, tmp_path):
    with av.open(str(packed_avi)) as container:
        decoded = [(frame.pts, frame.dts) for frame in container.decode(video=0)]
    labels = [pts for pts, _ in decoded]
    assert labels != sorted(labels), "the generated file must reproduce the mislabelled frames"
    # FFmpeg's best-effort times: the packet dts (pts are faulty), the last frame's pts (its dts is unknown).
    display = [dts if dts is not None else pts for pts, dts in decoded]
    assert display == list(range(1, 11))

    out = tmp_path / "restored.mkv"
    code, _, err = run_cli("restore", packed_avi, "-o", out, *recipe_args)
    assert code == 0, err
    assert frame_times(out) == pytest.approx([t / FPS for t in display], abs=1e-3)
    # audio copied packet for packet with its own times: the offset between sound and picture is unchanged
    assert packets(out, "audio") == packets(packed_avi, "audio")


# ----------------------------------------------------------------------------------------- rotation and pixel aspect


def test_display_geometry_matches_its_view_and_inverts():
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (7, 7), 3)  # smooth: filters agree
    for rotation in (0, 90, 180, 270, -90):
        for sar in (None, Fraction(64, 45), Fraction(8, 9)):
            geometry = DisplayGeometry(40, 30, rotation, sar)
            view = geometry.view(image)
            width, height = geometry.display_size
            assert view.shape == (height, width, 3) and view.flags.c_contiguous
            warped = cv2.warpAffine(image, geometry.matrix[:2], (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
            # the matrix describes the view exactly: equal for turns; a resize filters, but samples the same place
            assert np.abs(warped.astype(int) - view).max() <= (0 if sar is None else 2)
            np.testing.assert_allclose(geometry.inverse @ geometry.matrix, np.eye(3), atol=1e-12)
    assert DisplayGeometry(720, 576, -90, Fraction(64, 45)).display_size == (576, 1024)
    assert DisplayGeometry(720, 576, 0, Fraction(1, 1)).is_identity


def test_crop_from_stored_cuts_the_crop_the_displayed_picture_gives():
    rng = np.random.default_rng(2)
    image = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (5, 5), 2)
    display_crop = np.array([[0.9, -0.2, 4.0], [0.2, 0.9, -3.0]])  # a similarity in displayed pixels
    for rotation, sar in ((90, None), (270, None), (180, None), (0, Fraction(16, 15)), (-90, Fraction(64, 45))):
        geometry = DisplayGeometry(64, 48, rotation, sar)
        from_stored = geometry.crop_from_stored(display_crop)
        direct = cv2.warpAffine(image, from_stored, (32, 32), flags=cv2.INTER_LINEAR)
        via_view = cv2.warpAffine(geometry.view(image), display_crop, (32, 32), flags=cv2.INTER_LINEAR)
        inner = (slice(4, -4), slice(4, -4))
        # one warp instead of two: equal for turns; with a resize in between, the two samplings differ a little
        assert np.abs(direct[inner].astype(int) - via_view[inner]).mean() <= (0.01 if sar is None else 3.0)


def encode_frames(out, video, images) -> None:
    """Encode ``[H, W, 3]`` uint8 RGB ``images`` into ``video`` of ``out`` at FPS, one per tick, and flush it."""
    for index, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = index, Fraction(1, FPS)
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode(None):
        out.mux(packet)


def write_stored_clip(path: Path, display_frames: list[np.ndarray], geometry: DisplayGeometry) -> Path:
    """Encode the stored form of ``display_frames`` (H.264 + AAC): turned back by the rotation and squeezed by the
    SAR, with the rotation tag and the SAR on the stream, as a phone or a DV camcorder writes them."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = geometry.width, geometry.height, "yuv420p"
        video.options = {"crf": "12", "preset": "veryfast"}
        if geometry.sample_aspect_ratio is not None:
            video.codec_context.sample_aspect_ratio = geometry.sample_aspect_ratio
        if geometry.rotation:
            video.set_display_rotation(geometry.rotation)
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "stereo"
        stored_frames = (np.ascontiguousarray(np.rot90(shown, -(geometry.rotation // 90)))
                         for shown in display_frames)
        if geometry.scaled_width != geometry.width:
            stored_frames = (cv2.resize(stored, (geometry.width, geometry.height), interpolation=cv2.INTER_AREA)
                             for stored in stored_frames)
        encode_frames(out, video, stored_frames)
        samples = np.zeros((2, 1024), dtype=np.float32)
        for start in range(0, 48000 * len(display_frames) // FPS, 1024):
            tone = (samples + 0.1 * np.sin(start / 300.0)).astype(np.float32)
            chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
            chunk.sample_rate, chunk.pts, chunk.time_base = 48000, start, Fraction(1, 48000)
            for packet in sound.encode(chunk):
                out.mux(packet)
        for packet in sound.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def portrait_landmarks(recipe_engine) -> np.ndarray:
    """The detector's 5 landmarks on the clean, upright portrait: the truth, once moved into each frame."""
    (face,) = recipe_engine.detector.detect(astronaut_rgb())
    return face.landmarks.astype(np.float64)


def displayed_clip(width: int, height: int, frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The astronaut clip as a player shows it, and the ``[2, 3]`` portrait -> displayed-frame map of each frame."""
    rng = np.random.default_rng(3)
    portrait = astronaut_rgb()
    images = [face_clip_frame(i, width, height, FPS, 3.0, rng, portrait) for i in range(frames)]
    return images, [face_clip_matrix(i, width, height, FPS) for i in range(frames)]


def check_faces_in_displayed_picture(source: Path, output: Path, report: Path, geometry: DisplayGeometry,
                                     truth: list[np.ndarray]) -> None:
    """The report's faces (displayed coordinates) against the truth, and the restored pixels where the face is."""
    report_data = load_report(report)
    assert report_data["meta"]["rotation"] == geometry.rotation
    assert report_data["meta"]["display_size"] == list(geometry.display_size)
    frames = report_data["frames"]
    assert len(frames) == len(truth)
    found = 0
    for record, points in zip(frames, truth):
        assert len(record["faces"]) <= 1, f"false faces in frame {record['frame']}"
        eye_distance = np.linalg.norm(points[1] - points[0])
        for face in record["faces"]:
            # every face pasted is the true one (smoothed), and detections are within 10% of the eye distance
            assert np.linalg.norm(np.array(face["smoothed_landmarks"]) - points, axis=1).max() < 0.1 * eye_distance
            if face["raw_landmarks"] is not None:
                error = np.linalg.norm(np.array(face["raw_landmarks"]) - points, axis=1).max()
                assert error <= 0.1 * eye_distance, (record["frame"], error, eye_distance)
                found += 1
    assert found >= 0.9 * len(truth)

    # Written losslessly (x264 at CRF 0), the output equals the input re-encoded unchanged outside the faces' paste
    # regions (found from the report alone: its crop matrices composed with its display_from_stored map), and
    # differs where the face is.
    baseline = transcode(source, output.with_name("identity.mkv"), crf=0).output
    before, after = decoded_rgb(baseline), decoded_rgb(output)
    assert len(after) == len(before) and after[0].shape == before[0].shape  # stored orientation and size kept
    display_from_stored = np.vstack([report_data["meta"]["display_from_stored"], [0.0, 0.0, 1.0]])
    height, width = before[0].shape[:2]
    for old, new, points, record in zip(before, after, truth, frames):
        outside = np.ones((height, width), dtype=bool)
        for face in record["faces"]:
            stored_crop = np.array(face["crop_matrix"]) @ display_from_stored
            x0, y0, x1, y1 = paste_region(stored_crop, report_data["meta"]["size"], height, width)
            outside[y0:y1, x0:x1] = False
        assert np.array_equal(old[outside], new[outside])
        changed = geometry.view(np.abs(new.astype(np.int16) - old).max(axis=2).astype(np.uint8)) > 40
        ys, xs = np.nonzero(changed)
        eye_distance = np.linalg.norm(points[1] - points[0])
        assert len(xs) > 0.5 * eye_distance ** 2
        centre = points.mean(axis=0)
        assert (np.hypot(xs - centre[0], ys - centre[1]) < 2.5 * eye_distance).mean() > 0.99
        assert np.hypot(xs.mean() - centre[0], ys.mean() - centre[1]) < 0.5 * eye_distance


def decoded_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("rotation", [-90, 90])
def test_phone_clip_stored_sideways(rotation, recipe_args, portrait_landmarks, tmp_path):
    geometry = DisplayGeometry(320, 240, rotation)            # stored landscape, shown as a 240x320 portrait
    shown, maps = displayed_clip(*geometry.display_size, frames=10)
    source = write_stored_clip(tmp_path / "phone.mp4", shown, geometry)
    assert probe(source).rotation == rotation
    out, report = tmp_path / "restored.mkv", tmp_path / "faces.json"
    code, _, err = run_cli("restore", source, "-o", out, "--report", report, "--crf", "0", *recipe_args)
    assert code == 0, err
    written = probe(out)
    assert (written.width, written.height, written.rotation) == (320, 240, rotation)  # stored form and tag kept
    # audio copied packet for packet (its times differ: Matroska shifts the mp4's negative AAC priming time to 0)
    assert [digest for digest, _ in packets(out, "audio")] == [digest for digest, _ in packets(source, "audio")]
    truth = [transform_points(matrix, portrait_landmarks) for matrix in maps]
    check_faces_in_displayed_picture(source, out, report, geometry, truth)


def test_anamorphic_capture(recipe_args, portrait_landmarks, tmp_path):
    geometry = DisplayGeometry(720, 576, 0, Fraction(64, 45))  # PAL 16:9: shown 1024 wide
    shown, maps = displayed_clip(*geometry.display_size, frames=10)
    source = write_stored_clip(tmp_path / "dv.mkv", shown, geometry)
    assert probe(source).sample_aspect_ratio == Fraction(64, 45)
    out, report = tmp_path / "restored.mkv", tmp_path / "faces.json"
    code, _, err = run_cli("restore", source, "-o", out, "--report", report, "--crf", "0", *recipe_args)
    assert code == 0, err
    written = probe(out)
    assert (written.width, written.height, written.sample_aspect_ratio) == (720, 576, Fraction(64, 45))
    truth = [transform_points(matrix, portrait_landmarks) for matrix in maps]
    check_faces_in_displayed_picture(source, out, report, geometry, truth)


# ------------------------------------------------------------------------------------------------------- interlaced

FIELD_STEP_PX = 6.0  # the face moves this far between two fields: strong combing in every frame
INTERLACED_FRAMES = 8


def field_matrix(field: int) -> np.ndarray:
    """Portrait -> frame map of the face in one field: a 38 px eye distance, moving right."""
    matrix = cv2.getRotationMatrix2D((225.0, 125.0), 0.0, 0.9)  # portrait face centre -> origin, scaled
    matrix[:, 2] += (160.0 - 225.0 + FIELD_STEP_PX * (field - INTERLACED_FRAMES), 125.0 - 125.0)
    return matrix


@pytest.fixture(scope="module")
def interlaced_clip(tmp_path_factory) -> Path:
    """Frames woven from two fields of a moving face, bottom field first as DV stores them, coded as interlaced
    H.264. (Bottom first because PyAV cannot flag a frame top-field-first, and FFmpeg's libx264 follows each
    frame's flag.)"""
    portrait = astronaut_rgb()
    path = tmp_path_factory.mktemp("tape") / "tape.mkv"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.options = {"x264-params": "bff=1", "crf": "12", "preset": "veryfast"}
        encode_frames(out, video, (woven_frame(portrait, index) for index in range(INTERLACED_FRAMES)))
    return path


def woven_frame(portrait: np.ndarray, index: int) -> np.ndarray:
    """Frame ``index`` of the interlaced clip: fields ``2 * index`` (bottom, taken first) and ``2 * index + 1``."""
    bottom, top = (cv2.warpAffine(portrait, field_matrix(2 * index + k), (320, 240),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for k in (0, 1))
    woven = top.copy()
    woven[1::2] = bottom[1::2]  # odd rows: the bottom field
    return woven


def test_probe_shows_scan_type_and_field_order(interlaced_clip, packed_avi):
    info = probe(interlaced_clip)
    assert (info.scan_type, info.field_order, info.interlaced_frames) == ("interlaced", "bb", True)
    code, text, _ = run_cli("probe", interlaced_clip)
    assert code == 0 and "scan        interlaced, bottom field first (bb)" in text
    assert probe(packed_avi).scan_type != "interlaced"


def test_field_rate_reader_gives_every_field_its_own_time(interlaced_clip):
    with open_video(interlaced_clip, deinterlace="field-rate") as reader:
        frames = list(reader)
        assert reader.time_base == reader.info.time_base / 2 and reader.frame_rate == 2 * FPS
    assert [f.time for f in frames] == pytest.approx([k / (2 * FPS) for k in range(2 * INTERLACED_FRAMES)])
    with open_video(interlaced_clip, deinterlace="off") as reader:
        assert reader.deinterlace is None and len(list(reader)) == INTERLACED_FRAMES


def test_interlaced_tape_is_deinterlaced_automatically(interlaced_clip, recipe_args, portrait_landmarks, tmp_path):
    out, report = tmp_path / "restored.mkv", tmp_path / "faces.json"
    args = [a for a in recipe_args if a != "--quiet"]
    code, _, err = run_cli("restore", interlaced_clip, "-o", out, "--report", report, *args)
    assert code == 0, err
    assert "the video is interlaced (field order bb); deinterlacing it (one frame per frame)" in err
    written = probe(out, count_frames=True)
    assert written.scan_type == "progressive" and written.field_order == "progressive"
    assert written.frame_count == INTERLACED_FRAMES
    assert frame_times(out) == pytest.approx([i / FPS for i in range(INTERLACED_FRAMES)], abs=1e-3)
    faces = load_report(report)
    assert faces["meta"]["deinterlace"] == "one frame per frame"
    for record in faces["frames"]:
        (face,) = record["faces"]
        assert face["raw_landmarks"] is not None, f"the face was missed in frame {record['frame']}"


def test_field_rate_output_doubles_the_frames_and_follows_the_motion(interlaced_clip, recipe_args,
                                                                      portrait_landmarks, tmp_path):
    out, report = tmp_path / "restored.mkv", tmp_path / "faces.json"
    code, _, err = run_cli("restore", interlaced_clip, "-o", out, "--report", report, "--deinterlace",
                           "field-rate", "--smoothing", "none", *recipe_args)
    assert code == 0, err
    assert frame_times(out) == pytest.approx([k / (2 * FPS) for k in range(2 * INTERLACED_FRAMES)], abs=1e-3)
    assert probe(out).scan_type == "progressive"
    records = load_report(report)["frames"]
    assert len(records) == 2 * INTERLACED_FRAMES
    for field, record in enumerate(records):
        (face,) = record["faces"]
        truth = transform_points(field_matrix(field), portrait_landmarks)
        error = np.linalg.norm(np.array(face["raw_landmarks"]) - truth, axis=1).max()
        assert error < 0.1 * np.linalg.norm(truth[1] - truth[0]), (field, error)  # each field where it was taken


def test_probe_shows_the_displayed_size_of_anamorphic_video(tmp_path):
    shown, _ = displayed_clip(1024, 576, frames=2)
    source = write_stored_clip(tmp_path / "dv.mkv", shown, DisplayGeometry(720, 576, 0, Fraction(64, 45)))
    code, text, _ = run_cli("probe", source)
    assert code == 0 and "size        720x576, shown as 1024x576, pixel aspect 64/45" in text
    assert probe(source).display_size == (1024, 576)


def test_deinterlace_option_is_checked():
    from vidgpen.config import RestoreOptions
    from vidgpen.errors import OptionError

    with pytest.raises(OptionError, match=r"^--deinterlace must be one of auto, on, off, field-rate, got 'yes'$"):
        RestoreOptions(deinterlace="yes")
    assert RestoreOptions().deinterlace == "auto"
