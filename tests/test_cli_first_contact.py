"""A new user's first runs of ``vidgpen`` (issue 14): messages that lead right, mistakes found before any model is
loaded, short-lived faces restored, honest progress and summary, notices once. Recipe GPEN-BFR-256 weights and
MTCNN throughout, as in test_cli_restore.py."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from vidgpen import api, cli, pipeline


def run_cli(*argv) -> tuple[int, str, str]:
    """Run ``vidgpen ARGV`` in this process: (exit code, stdout, stderr). argparse's own errors exit via SystemExit."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


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
    (["--verison"], "vidgpen: error: unrecognized arguments: --verison; did you mean --version? (see 'vidgpen --help')"),
    (["restore", "in.mp4", "-o", "out.mp4", "--model", "GPEN-BFR-999"],
     "(see 'vidgpen restore --help')"),
])
def test_a_misspelt_option_names_the_command_and_the_option_meant(argv, expected):
    code, stdout, stderr = run_cli(*argv)
    assert (code, stdout) == (2, "")
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.rstrip("\n").endswith(expected) and stderr.startswith("vidgpen: error: "), stderr


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def recipe_args(recipe_checkpoint_256) -> list[str]:
    return ["--model", "GPEN-BFR-256", "--weights", str(recipe_checkpoint_256), "--detector", "mtcnn",
            "--mask", "feathered", "--dtype", "fp32"]


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
def test_explicit_bf16_warns_once_where_the_cpu_emulates_it(native_bf16, photo, recipe_args, tmp_path, loads,
                                                            monkeypatch):
    from vidgpen.models import restorer

    monkeypatch.setattr(restorer, "cpu_has_fast_bf16", lambda: native_bf16)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(photo.read_bytes())
    code, _, stderr = run_cli("restore", folder, "-o", tmp_path / "out", "--device", "cpu",
                              *with_dtype(recipe_args, "bf16"))
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if "--dtype bf16 on this CPU is emulated" in line]
    assert len(warnings) == (0 if native_bf16 else 1), stderr  # once per run, not once per file
    assert loads.count("restorer") == 1
