"""``vidgpen weights list | download NAME... | verify``: see, fetch and check checkpoint files."""

from __future__ import annotations

import argparse
import sys

from vidgpen import weights
from vidgpen.errors import OptionError

EXIT_PROBLEMS_FOUND = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, download and verify checkpoint files",
        description="List, download and verify the checkpoint files vidgpen knows. "
        "GPEN weights are for non-commercial use only.",
    )
    actions = parser.add_subparsers(dest="weights_action", metavar="ACTION", parser_class=type(parser))
    dir_help = f"weights folder (default: ${weights.WEIGHTS_DIR_ENV}, ./weights, the repository's weights/, " \
               "or ~/.cache/vidgpen/weights)"

    list_parser = actions.add_parser("list", help="every known file, whether it is present, size, licence")
    list_parser.add_argument("--dir", help=dir_help)
    list_parser.add_argument("--urls", action="store_true", help="also print each file's official URL")
    list_parser.set_defaults(func=run_list)

    download_parser = actions.add_parser("download", help="download files (resumable, sha256 checked)")
    download_parser.add_argument("names", nargs="+", metavar="NAME", help="a name from 'vidgpen weights list'")
    download_parser.add_argument("--dir", help=dir_help)
    download_parser.add_argument("--url", help="download from this mirror instead of the official URL")
    download_parser.add_argument("--force", action="store_true",
                                 help="download again even if present, discarding any partial download")
    download_parser.set_defaults(func=run_download)

    verify_parser = actions.add_parser("verify", help="check size, sha256 and variant of the files present")
    verify_parser.add_argument("--dir", help=dir_help)
    verify_parser.set_defaults(func=run_verify)

    parser.set_defaults(func=lambda args: _print_help(parser))


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _size_text(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:.1f} MB"


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        print("  ".join(cells).rstrip())


def run_list(args: argparse.Namespace) -> int:
    folder = weights.weights_dir(args.dir)
    rows = [("NAME", "KIND", "FILE", "STATUS", "SIZE", "LICENCE" + ("  URL" if args.urls else ""))]
    for entry in weights.REGISTRY.values():
        path = weights.find_weights(entry.name, folder)
        if path is None:
            status, size = "missing", entry.size_bytes
        else:
            status, size = "present", path.stat().st_size
        last = entry.licence + (f"  {entry.url}" if args.urls else "")
        rows.append((entry.name, entry.kind, path.name if path else entry.file_name, status, _size_text(size), last))
    print(f"weights folder: {folder}")
    _print_table(rows)
    for path in weights.unrecognised_files(folder):
        print(f"unrecognised file {path.name}: {weights.rename_advice(path)}")
    print("GPEN weights are released for non-commercial use only.")
    return 0


def run_download(args: argparse.Namespace) -> int:
    if args.url and len(args.names) > 1:
        raise OptionError("--url names one file's mirror; download one NAME at a time with --url")
    entries = [weights.lookup(name) for name in args.names]  # fail on a typo before downloading anything
    folder = weights.weights_dir(args.dir)
    for entry in entries:
        present = weights.find_weights(entry.name, folder)
        if present is not None and not args.force:
            print(f"{entry.name} is already present at {present} (use --force to download it again)")
            continue
        path = weights.download(entry, folder, url=args.url, resume=not args.force)
        print(f"{entry.name} saved as {path}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    folder = weights.weights_dir(args.dir)
    results = weights.verify(folder)
    if not results:
        print(f"no known weights files in {folder} (see 'vidgpen weights list')")
        return 0
    for result in results:
        if result.digest_matches is None:
            digest_note = "no published digest"
        else:
            digest_note = "digest matches" if result.digest_matches else "DIGEST MISMATCH"
        variant_note = f", tensors are {result.detected_variant}" if result.detected_variant else ""
        verdict = "ok" if result.ok else f"BAD: {result.problem}"
        print(f"{result.entry.name}  {result.path}  {_size_text(result.size_bytes)}  "
              f"sha256 {result.sha256} ({digest_note}{variant_note})  {verdict}")
    bad = [result for result in results if not result.ok]
    if bad:
        print(f"{len(bad)} of {len(results)} files have problems; download them again with "
              f"'vidgpen weights download --force NAME'")
        return EXIT_PROBLEMS_FOUND
    return 0
