"""The README's first commands are what a newcomer runs and what `.ci/run` runs: install, test, sample clip."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from vidgpen.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text()


def readme_block(marker: str) -> list[str]:
    """The command lines of the first fenced block after ``<!-- marker -->``."""
    match = re.search(rf"^<!-- {re.escape(marker)} -->\n```\w*\n(.*?)^```", README, re.M | re.S)
    assert match, f"README.md has no block after <!-- {marker} -->"
    return match.group(1).splitlines()


def test_the_three_commands_come_first():
    first_reference_section = README.index("\n## Install\n")
    for marker in ("ci:install", "ci:test", "sample"):
        assert README.index(f"<!-- {marker} -->") < first_reference_section
        assert len(readme_block(marker)) == 1  # one command to copy


def test_ci_runs_exactly_the_readme_commands():
    printed = subprocess.run([str(REPO_ROOT / ".ci" / "run"), "--print"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert printed == readme_block("ci:install") + readme_block("ci:test")
    assert readme_block("ci:test") == ["python3 -m pytest -q tests"]
    ci_script = (REPO_ROOT / ".ci" / "run").read_text()
    assert "\npython3 -m pytest -q tests\n" in ci_script  # runs it literally, after comparing with the README
    assert 'python3 -m venv "$VENV"' in ci_script and 'bash -euo pipefail -c "$INSTALL_COMMAND"' in ci_script


def test_install_command_brings_the_tested_torch_pair_and_the_test_tools():
    (install,) = readme_block("ci:install")
    torch_step, project_step = install.split(" && ")
    assert shlex.split(torch_step) == ["python3", "-m", "pip", "install", "torch==2.14.1", "torchvision==0.29.1"]
    assert shlex.split(project_step)[:5] == ["python3", "-m", "pip", "install", "-e"]
    extras = re.fullmatch(r"\.\[([\w,-]+)\]", shlex.split(project_step)[5]).group(1).split(",")
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()  # (tomllib is not in Python 3.10)
    assert "test" in extras and re.search(r'^test = \[[^\]]*"pytest', pyproject, re.M)
    # The declared minimum is the tested pair (an older torch with PyPI's torchvision does not import).
    assert '"torch>=2.14.1"' in pyproject and '"torchvision>=0.29.1"' in pyproject


def test_sample_command_is_a_valid_restore_of_the_shipped_clip():
    (sample,) = readme_block("sample")
    argv = shlex.split(sample)
    assert argv[0] == "vidgpen"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "restore"
    assert (REPO_ROOT / args.input).is_file()
