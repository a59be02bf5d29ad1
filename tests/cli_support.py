"""Running the ``vidgpen`` command inside the test process, for the end-to-end CLI tests."""

from __future__ import annotations

import contextlib
import io

from vidgpen import cli


def run_cli(*argv) -> tuple[int, str, str]:
    """Run ``vidgpen ARGV`` in this process: (exit code, stdout, stderr). argparse's own errors exit via SystemExit."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()
