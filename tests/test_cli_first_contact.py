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
