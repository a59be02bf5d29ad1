"""The ``vidgpen`` command: parse arguments, call the library, report.

Each subcommand lives in its own module in this package and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed namespace and returning an exit code).
This module is the only place that maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vidgpen import __version__
from vidgpen.errors import VidgpenError

# Subcommand modules, in the order `vidgpen --help` lists them.
COMMAND_MODULES = ("restore", "probe", "flicker", "weights")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse prints usage + error and exits 2 on a bad flag; keep that but make it one line."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_USER_ERROR, f"vidgpen: error: {message} (see 'vidgpen {self.prog.split()[-1]} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vidgpen", description="Restore faces in videos and photos with GPEN.")
    parser.add_argument("--version", action="version", version=f"vidgpen {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"vidgpen.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vidgpen.cli.{name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except VidgpenError as exc:
        print(f"vidgpen: error: {exc}", file=sys.stderr)
        _print_notes(exc)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        print("vidgpen: interrupted; no output was written", file=sys.stderr)
        _print_notes(exc)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


def _print_notes(exc: BaseException) -> None:
    """Lines the library attached on the way up (PEP 678), e.g. how to resume an interrupted run."""
    for note in getattr(exc, "__notes__", ()):
        print(f"vidgpen: {note}", file=sys.stderr)
