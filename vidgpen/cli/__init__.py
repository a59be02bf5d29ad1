"""The ``vidgpen`` command: parse arguments, call the library, report.

Each subcommand lives in its own module in this package and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed namespace and returning an exit code).
This module is the only place that maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from vidgpen import __version__
from vidgpen.errors import VidgpenError

# Subcommand modules, in the order `vidgpen --help` lists them.
COMMAND_MODULES = ("restore", "probe", "flicker", "weights")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse prints usage + error and exits 2 on a bad flag; keep that but make it one line, name the command
    whose help to read, and suggest the option a misspelt one was meant to be."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def parse_args(self, args=None, namespace=None):
        # argparse reports a subcommand's unknown options from the top parser ("see 'vidgpen vidgpen --help'");
        # report them from the subcommand's own parser, which knows the options they were meant to be.
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            owner = _chosen_parser(self, parsed)
            owner.error(f"unrecognized arguments: {' '.join(unknown)}{_did_you_mean(owner, unknown)}")
        return parsed

    def error(self, message):  # noqa: D401 - argparse API
        command = " ".join(self.prog.split()[1:])  # "" for the top-level parser
        see = f"vidgpen {command} --help" if command else "vidgpen --help"
        self.exit(EXIT_USER_ERROR, f"vidgpen: error: {message} (see '{see}')\n")


def _chosen_parser(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)command parser the arguments chose, e.g. the one of 'vidgpen weights download'."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(parsed, action.dest, None)
            if chosen in action.choices:
                return _chosen_parser(action.choices[chosen], parsed)
    return parser


def _did_you_mean(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """"; did you mean --model?" for the closest known option to each misspelt one ('--modle', '--modle=X')."""
    known = [option for action in parser._actions for option in action.option_strings if option.startswith("--")]
    hints = []
    for word in unknown:
        if not word.startswith("--"):
            continue
        close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6)
        if close and close[0] not in hints:
            hints.append(close[0])
    return f"; did you mean {' or '.join(hints)}?" if hints else ""


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
    parser.commands = dict(subparsers.choices)
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
