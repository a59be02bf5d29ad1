"""``vidgpen restore`` (and ``vidgpen flicker``) as a user runs them: videos, photos, folders, extras, progress,
one-line errors with exit code 2, Ctrl-C with exit code 130. Recipe GPEN-BFR-256 weights and MTCNN throughout."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data
import torch
from rich.console import Console

from vidgpen.cli import progress as cli_progress
from vidgpen.samples import write_face_clip
from cli_support import run_cli

# Runs that load the recipe checkpoint reuse the restorer already loaded (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("reuse_loaded_restorer")

REPO_ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 320, 180, 24
CLIP_FRAMES = 8
SHORT_FRAMES = 4
INTERRUPTED = "vidgpen: interrupted; no output was written"


# ------------------------------------------------------------------------------------------------------ helpers


def decoded_images(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def audio_packet_hashes(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [hashlib.sha256(bytes(packet)).hexdigest() for packet in container.demux(audio=0) if packet.size]


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def summary_pattern(output: Path, frames: int, faces: int, stages: bool, startup: bool = True) -> re.Pattern:
    from vidgpen.pipeline import STAGES

    busy = (r"; busy share of the run per stage \(they overlap, so the shares add up to more than 100%\): "
            + ", ".join(rf"{stage} \d+%" for stage in STAGES)) if stages else ""
    start_up = r"; start-up [\d.]+ s \(loading the models\)" if startup else ""
    return re.compile(rf"^{re.escape(str(output))}: {frames} frame\(s\), {faces} face\(s\) restored in [\d.]+ s "
                      rf"\([\d.]+ fps\) with GPEN-BFR-256 on cpu \(fp32\){start_up}{busy}$")


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_face_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=CLIP_FRAMES, width=WIDTH,
                           height=HEIGHT, fps=FPS)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    return write_face_clip(tmp_path_factory.mktemp("short") / "short.mp4", frames=SHORT_FRAMES, width=WIDTH,
                           height=HEIGHT, fps=FPS)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def video_run(clip, recipe_args, tmp_path_factory):
    """One full CLI run with --report and --save-faces, plain progress lines forced on every tick."""
    folder = tmp_path_factory.mktemp("video_run")
    paths = {"out": folder / "restored.mp4", "report": folder / "faces.json", "faces": folder / "faces"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli_progress, "PLAIN_INTERVAL_SECONDS", 0.0)
        result = run_cli("restore", clip, "-o", paths["out"], "--report", paths["report"],
                         "--save-faces", paths["faces"], *recipe_args)
    return result, paths


@pytest.fixture(scope="module")
def photo_run(photo, recipe_args, tmp_path_factory):
    """--color off: the recipe weights draw a tinted face (an obvious redraw), which colour matching would undo."""
    out = tmp_path_factory.mktemp("photo_run") / "restored.png"
    return run_cli("restore", photo, "-o", out, "--color", "off", *recipe_args), out


# ---------------------------------------------------------------------------------------------------- videos


def test_video_run_exits_0_and_ends_with_a_summary(video_run):
    (code, stdout, stderr), paths = video_run
    assert code == 0, stderr
    assert stdout == ""  # everything for the user goes to stderr; stdout stays free for pipes
    assert summary_pattern(paths["out"], CLIP_FRAMES, CLIP_FRAMES, stages=True).match(stderr.splitlines()[-1])
    assert "Traceback" not in stderr


def test_video_output_keeps_frames_and_audio(clip, video_run):
    _, paths = video_run
    assert len(decoded_images(paths["out"])) == CLIP_FRAMES
    assert audio_packet_hashes(paths["out"]) == audio_packet_hashes(clip)


def test_plain_progress_lines_when_stderr_is_not_a_terminal(video_run):
    (_, _, stderr), _ = video_run
    lines = [line for line in stderr.splitlines() if line.startswith("clip.mp4: ")]
    pattern = re.compile(rf"^clip\.mp4: (\d+)/{CLIP_FRAMES} frames, +[\d.]+ fps +[\d.]+ faces/s(, ETA \d+s)?$")
    assert lines, stderr
    counts = [int(pattern.match(line).group(1)) for line in lines]
    assert counts == sorted(counts) and counts[-1] <= CLIP_FRAMES
    assert "\x1b[" not in stderr  # no terminal control codes in a log


def test_report_lists_every_face_of_every_frame(video_run):
    _, paths = video_run
    report = json.loads(paths["report"].read_text())
    assert report["format"] == "vidgpen-face-report"
    assert report["meta"]["model"] == "GPEN-BFR-256" and report["meta"]["size"] == 256
    assert [frame["frame"] for frame in report["frames"]] == list(range(CLIP_FRAMES))
    for frame in report["frames"]:
        (face,) = frame["faces"]
        assert np.array(face["crop_matrix"]).shape == (2, 3)
        assert np.array(face["smoothed_landmarks"]).shape == (5, 2)


def test_save_faces_writes_one_restored_crop_per_face(video_run):
    _, paths = video_run
    crops = sorted(paths["faces"].iterdir())
    assert [p.name for p in crops] == [f"frame{i:06d}_face000.png" for i in range(CLIP_FRAMES)]
    images = [read_rgb(p) for p in crops]
    assert all(image.shape == (256, 256, 3) for image in images)
    assert np.std(images[0]) > 10  # a face, not a blank


def test_flicker_command_reports_both_errors_and_blending_does_not_add_flicker(clip, video_run):
    _, paths = video_run
    code, stdout, stderr = run_cli("flicker", clip, paths["out"], "--report", paths["report"])
    assert code == 0, stderr
    input_error = float(re.search(r"^\s+input\s+([\d.]+)\s", stdout, re.M).group(1))
    output_error = float(re.search(r"^\s+output\s+([\d.]+)\s", stdout, re.M).group(1))
    assert input_error > 0.5  # the clip moves and is noisy
    assert output_error <= input_error  # temporal blending is on by default


def test_quiet_prints_nothing_and_compare_writes_before_and_after(short_clip, recipe_args, tmp_path):
    out = tmp_path / "compare.mp4"
    code, stdout, stderr = run_cli("restore", short_clip, "-o", out, "--quiet", "--compare", *recipe_args)
    assert (code, stdout, stderr) == (0, "", "")
    source, output = decoded_images(short_clip), decoded_images(out)
    assert len(output) == SHORT_FRAMES
    assert output[0].shape == (HEIGHT, 2 * WIDTH, 3)
    for before, after in zip(source, output):
        left, right = after[:, :WIDTH].astype(np.float32), after[:, WIDTH:].astype(np.float32)
        assert np.abs(left - before).mean() < 3  # the untouched frame (up to the lossy re-encode)
        assert np.abs(right - before).mean() > np.abs(left - before).mean() + 1  # the restored one


def test_overwrite_replaces_an_existing_output_and_its_absence_protects_it(short_clip, recipe_args, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an older file")
    code, stdout, stderr = run_cli("restore", short_clip, "-o", out, *recipe_args)
    assert code == 2 and stdout == ""
    assert len(stderr.splitlines()) == 1 and "--overwrite" in stderr
    assert out.read_bytes() == b"an older file"
    code, _, stderr = run_cli("restore", short_clip, "-o", out, "--overwrite", "--quiet", *recipe_args)
    assert code == 0, stderr
    assert len(decoded_images(out)) == SHORT_FRAMES


# ---------------------------------------------------------------------------------------------------- photos


def test_photo_in_restored_photo_out(photo, photo_run, data_dir):
    (code, stdout, stderr), out = photo_run
    assert code == 0, stderr
    assert stdout == ""
    assert summary_pattern(out, 1, 1, stages=False).match(stderr.splitlines()[-1]), stderr
    source, restored = read_rgb(photo), read_rgb(out)
    assert restored.shape == source.shape
    landmarks = np.array(json.loads((data_dir / "alignment_reference.json").read_text())["landmarks_xy"])
    face = np.zeros(source.shape[:2], dtype=np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(landmarks.astype(np.int32)), 1)
    change = np.abs(restored.astype(np.float32) - source.astype(np.float32)).mean(axis=2)
    assert np.percentile(change[face.astype(bool)], 10) > 10  # the face is redrawn
    for rows, cols in ((slice(0, 64), slice(0, 64)), (slice(0, 64), slice(-64, None)),
                       (slice(-64, None), slice(0, 64)), (slice(-64, None), slice(-64, None))):
        np.testing.assert_array_equal(restored[rows, cols], source[rows, cols])  # lossless PNG, far from the face


def test_ffhq_template_crops_tighter_and_pastes_back_in_place(photo, photo_run, recipe_args, tmp_path, data_dir):
    """--template ffhq: the saved crop shows the face larger (FFHQ's eyes are further apart than GPEN's), and the
    restoration is pasted back over the same face, leaving the corners of the photo untouched."""
    from vidgpen.faces.align import reference_points

    _, gpen_restored = photo_run
    crops, restored = {}, {}
    for template in ("gpen", "ffhq"):
        out = tmp_path / f"{template}.png"
        faces = tmp_path / f"faces-{template}"
        code, _, stderr = run_cli("restore", photo, "-o", out, "--template", template, "--save-faces", faces,
                                  "--quiet", "--overwrite", "--color", "off", *recipe_args)
        assert code == 0, stderr
        (crop_path,) = faces.iterdir()
        crops[template], restored[template] = read_rgb(crop_path), read_rgb(out)
    np.testing.assert_array_equal(restored["gpen"], read_rgb(gpen_restored))  # gpen is the default
    ffhq_restored = restored["ffhq"]
    eye_gap = {t: np.linalg.norm(np.subtract(*reference_points(256, t)[:2])) for t in ("gpen", "ffhq")}
    assert eye_gap["ffhq"] > 1.15 * eye_gap["gpen"]  # the same face fills more of an FFHQ crop
    assert not np.array_equal(crops["gpen"], crops["ffhq"])
    source = read_rgb(photo)
    changed = np.abs(ffhq_restored.astype(np.int16) - source).max(axis=2) > 0
    rows, cols = np.nonzero(changed)
    landmarks = np.array(json.loads((data_dir / "alignment_reference.json").read_text())["landmarks_xy"])
    face_x, face_y = landmarks.mean(axis=0)
    assert abs(cols.mean() - face_x) < 30 and abs(rows.mean() - face_y) < 40  # pasted over the face itself
    np.testing.assert_array_equal(ffhq_restored[:64, :64], source[:64, :64])


def test_photo_compare_is_the_input_beside_the_restoration(photo, photo_run, recipe_args, tmp_path):
    _, restored = photo_run
    out = tmp_path / "compare.png"
    code, _, stderr = run_cli("restore", photo, "-o", out, "--compare", "--quiet", "--color", "off", *recipe_args)
    assert code == 0, stderr
    both = read_rgb(out)
    np.testing.assert_array_equal(both[:, :512], read_rgb(photo))
    np.testing.assert_array_equal(both[:, 512:], read_rgb(restored))  # the same deterministic restoration


# ---------------------------------------------------------------------------------------------------- folders


def test_folder_in_restores_every_photo_and_video_into_the_output_folder(photo, short_clip, recipe_args, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "astronaut.png").write_bytes(photo.read_bytes())
    (source / "clip.mp4").write_bytes(short_clip.read_bytes())
    (source / "notes.txt").write_text("not a photo or a video; skipped")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("restore", source, "-o", out, *recipe_args)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "clip.mp4"]
    assert read_rgb(out / "astronaut.png").shape == (512, 512, 3)
    assert len(decoded_images(out / "clip.mp4")) == SHORT_FRAMES
    lines = stderr.splitlines()
    assert summary_pattern(Path("astronaut.png"), 1, 1, stages=False, startup=False).match(
        next(line for line in lines if line.startswith("astronaut.png: ")))
    assert summary_pattern(Path("clip.mp4"), SHORT_FRAMES, SHORT_FRAMES, stages=True, startup=False).match(
        next(line for line in lines if line.startswith("clip.mp4: ") and "frame(s)" in line))
    assert re.fullmatch(rf"restored 2 file\(s\) into {re.escape(str(out))} \(start-up [\d.]+ s loading the models, "
                        r"once\)", lines[-1])


def test_folder_with_a_broken_file_restores_the_rest_and_exits_1(photo, recipe_args, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "astronaut.png").write_bytes(photo.read_bytes())
    (source / "broken.mp4").write_text("this is not a video")
    out = tmp_path / "out"
    code, _, stderr = run_cli("restore", source, "-o", out, *recipe_args)
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png"]
    errors = [line for line in stderr.splitlines() if line.startswith("vidgpen: error:")]
    assert len(errors) == 1 and errors[0].startswith("vidgpen: error: broken.mp4: ")
    assert stderr.splitlines()[-1].startswith(f"restored 1 file(s) into {out}; 1 failed (start-up ")


# ------------------------------------------------------------------------------------------- user mistakes


def _mistakes(tmp: Path, clip: Path, photo: Path, recipe_args: list[str]) -> dict[str, tuple[list, str]]:
    """name -> (argv, a phrase the one-line message must contain)."""
    text_video = tmp / "notes.mp4"
    text_video.write_text("plain text with a video extension")
    existing = tmp / "existing.mp4"
    existing.write_bytes(b"keep me")
    empty_weights = tmp / "no-weights"
    empty_weights.mkdir()
    video = ["restore", clip, "-o", tmp / "out.mp4"]
    offline = ["--offline", "--weights-dir", empty_weights, "--detector", "mtcnn", "--mask", "feathered"]
    return {
        "missing input": (["restore", tmp / "nothere.mp4", "-o", tmp / "out.mp4", *recipe_args], "no such file"),
        "text file named .mp4": (["restore", text_video, "-o", tmp / "out.mp4", *recipe_args], "not a video"),
        "alpha out of range": ([*video, *recipe_args, "--alpha", "2"], "--alpha"),
        "batch size 0": ([*video, *recipe_args, "--batch-size", "0"], "--batch-size"),
        "cuda without a gpu": ([*video, *recipe_args, "--device", "cuda"], "cuda"),
        "fp16 on the cpu": ([*video, *recipe_args, "--dtype", "fp16"], "fp16"),
        "offline without weights": ([*video, "--model", "GPEN-BFR-256", *offline], "downloads are off"),
        "missing checkpoint file": ([*video, *recipe_args, "--weights", tmp / "nothere.pth"], "nothere.pth"),
        "text file as checkpoint": ([*video, *recipe_args, "--weights", text_video], "checkpoint"),
        "output exists": (["restore", clip, "-o", existing, *recipe_args], "--overwrite"),
        "output is the input": (["restore", clip, "-o", clip, *recipe_args], "is the input"),
        "photo output is the input": (["restore", photo, "-o", photo, *recipe_args], "is the input"),
        "photo to a video name": (["restore", photo, "-o", tmp / "photo.mp4", *recipe_args], ".mp4"),
        "video to a photo name": (["restore", clip, "-o", tmp / "video.png", *recipe_args], ".png"),
        "output folder missing": (["restore", clip, "-o", tmp / "nodir" / "out.mp4", *recipe_args], "does not exist"),
        "unknown model": ([*video, *recipe_args, "--model", "GPEN-BFR-999"], "--model"),
        "unknown codec": ([*video, *recipe_args, "--codec", "nonsense"], "nonsense"),
        "model does not match the weights": ([*video, *recipe_args, "--model", "GPEN-BFR-512"], "not GPEN-BFR-512"),
        "start past the end": ([*video, *recipe_args, "--start", "100"], "past the end"),
        "save-faces is a file": ([*video, *recipe_args, "--save-faces", text_video], "--save-faces"),
        "unknown template": ([*video, *recipe_args, "--template", "arcface"], "--template"),
    }


MISTAKES = ["missing input", "text file named .mp4", "alpha out of range", "batch size 0", "cuda without a gpu",
            "fp16 on the cpu", "offline without weights", "missing checkpoint file", "text file as checkpoint",
            "output exists", "output is the input", "photo output is the input", "photo to a video name",
            "video to a photo name", "output folder missing", "unknown model", "unknown codec", "model does not match the weights",
            "start past the end", "save-faces is a file", "unknown template"]


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_user_mistake_is_one_line_and_exit_code_2(mistake, short_clip, photo, recipe_args, tmp_path):
    if mistake == "cuda without a gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(short_clip.read_bytes())
    picture = tmp_path / "photo.png"
    picture.write_bytes(photo.read_bytes())
    argv, phrase = _mistakes(tmp_path, clip, picture, recipe_args)[mistake]
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    code, stdout, stderr = run_cli(*argv)
    assert code == 2
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vidgpen: error: ") and phrase in lines[0], lines[0]
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert after == before  # nothing written, nothing touched


def test_every_listed_mistake_is_tested(tmp_path, short_clip, photo):
    assert sorted(_mistakes(tmp_path, short_clip, photo, [])) == sorted(MISTAKES)


# -------------------------------------------------------------------------------------------------- Ctrl-C


def test_an_interrupt_exits_130_without_a_traceback_or_an_output(short_clip, recipe_args, recipe_engine, tmp_path,
                                                                 monkeypatch):
    def interrupted(crops):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe_engine.restorer, "restore", interrupted)
    out = tmp_path / "out.mp4"
    code, stdout, stderr = run_cli("restore", short_clip, "-o", out, *recipe_args)
    assert code == 130
    assert stderr.splitlines()[0] == INTERRUPTED
    assert "Traceback" not in stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.is_file()]  # no partial file either


def test_ctrl_c_in_a_real_process_leaves_no_output(recipe_args, tmp_path):
    """SIGINT to ``python -m vidgpen restore`` while its stages run: exit 130, no output, no temporary file."""
    clip = write_face_clip(tmp_path / "clip.mp4", frames=48, width=WIDTH, height=HEIGHT, fps=FPS)
    out = tmp_path / "out.mp4"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen([sys.executable, "-m", "vidgpen", "restore", str(clip), "-o", str(out), "--quiet",
                                *recipe_args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        # The writer's temporary file appears when the stages are about to start.
        deadline = time.monotonic() + 180
        while not any(".partial" in p.name for p in tmp_path.iterdir()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.05)
        time.sleep(1.0)  # let decode, detection and the model get going
        assert process.poll() is None, "the 48-frame run finished before it could be interrupted"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert stderr.splitlines()[0] == INTERRUPTED, stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["clip.mp4"]


# ----------------------------------------------------------------------------------------------- progress


def test_progress_on_a_terminal_is_a_live_rich_bar():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    progress = cli_progress.TerminalProgress(console)
    assert progress.live
    progress.start("clip [v2].mp4", 8)
    progress.update(4, 4)
    progress.update(8, 8)
    progress.finish()
    text = buffer.getvalue()
    assert "clip [v2].mp4" in text  # a file name is not read as markup
    assert "8/8" in text and "faces/s" in text
    assert "\x1b[" in text  # drawn in place with cursor control


def test_progress_off_a_terminal_prints_plain_lines_at_the_interval(monkeypatch):
    buffer = io.StringIO()
    progress = cli_progress.TerminalProgress(Console(file=buffer, width=80))
    assert not progress.live
    monkeypatch.setattr(cli_progress, "PLAIN_INTERVAL_SECONDS", 3600.0)
    progress.start("clip [v2].mp4", 10)
    progress.update(2, 2)
    assert buffer.getvalue() == ""  # not yet: one line per interval
    monkeypatch.setattr(cli_progress, "PLAIN_INTERVAL_SECONDS", 0.0)
    progress.update(5, 5)
    progress.finish()
    assert re.fullmatch(r"clip \[v2\]\.mp4: 5/10 frames, +[\d.]+ fps +[\d.]+ faces/s, ETA \d+s\n", buffer.getvalue())


def test_quiet_progress_prints_nothing(monkeypatch):
    monkeypatch.setattr(cli_progress, "PLAIN_INTERVAL_SECONDS", 0.0)
    for terminal in (False, True):
        buffer = io.StringIO()
        progress = cli_progress.TerminalProgress(Console(file=buffer, force_terminal=terminal), quiet=True)
        progress.start("clip.mp4", 4)
        progress.update(4, 4)
        progress.finish()
        assert buffer.getvalue() == ""


def test_weights_without_model_use_the_variant_the_file_holds(short_clip, recipe_checkpoint_256, tmp_path):
    out = tmp_path / "out.mp4"
    code, _, err = run_cli("restore", short_clip, "-o", out, "--weights", recipe_checkpoint_256, "--detector",
                           "mtcnn", "--mask", "feathered", "--dtype", "fp32")
    assert code == 0, err
    assert out.is_file()
