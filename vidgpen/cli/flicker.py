"""``vidgpen flicker IN OUT``: how much the faces flicker in a video and in its restoration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# vidgpen.faces.detect.DETECTOR_KINDS, spelt out so that --help does not import torch
DETECTORS = ["auto", "yunet", "retinaface", "retinaface-mobile", "mtcnn"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "flicker", help="measure face flicker (warping error) of a video and its restoration",
        description="Warping error inside the face regions: optical flow is computed on IN, frame t-1 is warped "
                    "onto frame t (occlusions masked), and the mean absolute difference is reported for IN and OUT. "
                    "Lower is steadier; OUT at or below IN means the restoration added no flicker.")
    p.add_argument("input", type=Path, help="the original video")
    p.add_argument("output", type=Path, help="its restoration (same frames, e.g. from 'vidgpen restore')")
    p.add_argument("--report", type=Path,
                   help="face regions from a 'vidgpen restore --report' file instead of detecting (default: detect)")
    p.add_argument("--detector", default="auto", choices=DETECTORS,
                   help="face detector without --report (default auto: RetinaFace-R50 when its weights are present "
                        "and a GPU is, else YuNet, else MTCNN)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (default: a short table)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr (default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidgpen.cli.progress import TerminalProgress, make_console
    from vidgpen.flicker import measure_flicker

    console = make_console()
    detector = None
    if args.report is None:
        from vidgpen.faces.detect import make_detector

        def notice(message: str) -> None:
            if not args.quiet:
                console.print(f"vidgpen: note: {message}", soft_wrap=True, markup=False)

        detector = make_detector(args.detector, notice=notice)
    # Progress goes to stderr, the result to stdout (so --json stays machine-readable).
    result = measure_flicker(args.input, args.output, detector=detector, report=args.report,
                             progress=TerminalProgress(console, args.quiet))
    if args.json:
        print(json.dumps({"input_error": result.input_error, "output_error": result.output_error,
                          "ratio": result.ratio, "frame_pairs": result.frame_pairs, "pixels": result.pixels}))
    else:
        print(f"face warping error (uint8 levels, lower is steadier) over {result.frame_pairs} frame pairs:")
        print(f"  input  {result.input_error:7.3f}  {args.input}")
        print(f"  output {result.output_error:7.3f}  {args.output}  ({result.ratio:.2f}x the input)")
    return 0
