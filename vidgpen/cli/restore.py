"""``vidgpen restore IN -o OUT``: restore the faces of a video, a photo, or a folder of both."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidgpen.cli.cluster import add_cluster_arguments, refuse_cluster_flags_without_cluster
from vidgpen.config import RestoreOptions
from vidgpen.errors import InputError
from vidgpen.faces.align import TEMPLATES
from vidgpen.models.variants import VARIANTS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "restore", help="restore faces in a video, photo or folder",
        description="Restore every face in a video (or photo, or a folder of both) with GPEN. Audio and other "
                    "streams, timestamps, rotation and colour tags are kept; the output appears only when complete.")
    p.add_argument("input", type=Path, help="video, photo or folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file (a folder for a folder input)")
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=list(VARIANTS),
                       help="GPEN variant (default GPEN-BFR-512; with --weights, the variant the file holds)")
    model.add_argument("--weights", type=Path, help="checkpoint file to use instead of looking in the weights folder")
    model.add_argument("--weights-dir", type=Path, help="folder holding checkpoints (default: ./weights or the cache)")
    model.add_argument("--offline", action="store_true", help="never download a missing checkpoint")
    model.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    model.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                       help="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32")
    model.add_argument("--batch-size", type=int, help="faces per forward pass (default: per device)")
    model.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster run)")
    faces = p.add_argument_group("faces")
    faces.add_argument("--detector", default="auto", choices=["auto", "retinaface", "retinaface-mobile", "mtcnn"])
    faces.add_argument("--detect-max-side", type=int, default=1000, help="detect on a copy this long at most")
    faces.add_argument("--detect-every", type=int, default=1,
                       help="detect on every Nth frame and track in between (faster; default every frame)")
    faces.add_argument("--faces", default="all", choices=["all", "largest", "center"])
    faces.add_argument("--min-face", type=float, default=8.0, help="skip faces with fewer pixels between the eyes")
    faces.add_argument("--max-faces", type=int, help="restore at most this many faces per frame")
    faces.add_argument("--template", default="gpen", choices=list(TEMPLATES),
                       help="crop template: GPEN's own (what its checkpoints expect) or FFHQ's tighter one")
    faces.add_argument("--smoothing", default="window", choices=["window", "one-euro", "none"],
                       help="landmark smoothing: zero-phase window (default), zero-latency One Euro, or none")
    faces.add_argument("--lookahead", type=int, default=4, help="frames each side of the smoothing window")
    faces.add_argument("--temporal-strength", type=float, default=0.6,
                       help="0..1 blending of each face with its previous restoration against flicker (0: off)")
    paste = p.add_argument_group("paste-back")
    paste.add_argument("--mask", default="auto", choices=["auto", "parsenet", "bisenet", "feathered"])
    paste.add_argument("--alpha", type=float, default=1.0, help="0..1 strength of the restoration")
    paste.add_argument("--paste-mode", default="replace", choices=["replace", "residual"],
                       help="replace the face (official) or add only what the model changed")
    video = p.add_argument_group("video output")
    video.add_argument("--start", help="start time (seconds or HH:MM:SS.ms)")
    video.add_argument("--end", help="end time (seconds or HH:MM:SS.ms)")
    video.add_argument("--codec", help="video encoder (default: the input's codec family, else H.264)")
    video.add_argument("--crf", type=int, help="encoder quality (lower is better)")
    video.add_argument("--preset", help="encoder speed preset")
    video.add_argument("--pix-fmt", help="output pixel format (default: the input's; 10-bit stays 10-bit)")
    video.add_argument("--drop-incompatible", action="store_true",
                       help="drop streams the output container cannot hold instead of stopping")
    extra = p.add_argument_group("extras")
    extra.add_argument("--compare", action="store_true", help="write before | after side by side")
    extra.add_argument("--save-faces", type=Path, metavar="DIR", help="also save every restored face crop here")
    extra.add_argument("--report", type=Path, metavar="FILE.json", help="write every face of every frame as JSON")
    extra.add_argument("--overwrite", action="store_true", help="replace an existing output")
    extra.add_argument("--resume", action="store_true",
                       help="continue an interrupted video run from the faces it kept beside the output (run the "
                            "same command again with --resume; the result equals an uninterrupted run)")
    extra.add_argument("-q", "--quiet", action="store_true", help="no progress bar, notices or summary")
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> RestoreOptions:
    return RestoreOptions(
        model=args.model or (None if args.weights else "GPEN-BFR-512"), weights=args.weights,
        weights_dir=args.weights_dir, offline=args.offline,
        device=args.device, dtype=args.dtype, batch_size=args.batch_size, compile=args.compile,
        detector=args.detector, detect_max_side=args.detect_max_side,
        detect_every=args.detect_every, faces=args.faces, min_face=args.min_face,
        max_faces=args.max_faces, template=args.template, smoothing=args.smoothing, lookahead=args.lookahead,
        temporal_strength=args.temporal_strength, mask=args.mask, alpha=args.alpha, paste_mode=args.paste_mode,
        start=args.start, end=args.end, codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt,
        drop_incompatible=args.drop_incompatible, compare=args.compare, save_faces=args.save_faces,
        report=args.report, overwrite=args.overwrite, resume=args.resume)


def run(args: argparse.Namespace) -> int:
    from vidgpen import api
    from vidgpen.cli.progress import TerminalProgress, make_console

    console = make_console()
    options = options_from_args(args)
    src: Path = args.input
    if not src.exists():
        raise InputError(f"{src}: no such file or folder")
    if args.cluster:
        from vidgpen.cli.cluster import run_cluster

        return run_cluster(args, options, console, _summary_line)
    refuse_cluster_flags_without_cluster(args)

    def notice(message: str) -> None:
        if not args.quiet:
            console.print(f"vidgpen: note: {message}", soft_wrap=True, markup=False)

    if src.is_dir():
        def on_file(path, result, error):
            if error:
                console.print(f"vidgpen: error: {path.name}: {error}", soft_wrap=True, markup=False)
            elif not args.quiet:
                console.print(f"{path.name}: {_summary_line(result)}", soft_wrap=True, markup=False)

        folder = api.restore_folder(src, args.output, options=options, notice=notice, on_file=on_file,
                                    progress_factory=lambda: TerminalProgress(console, args.quiet))
        if not args.quiet:
            failed = f"; {len(folder.failures)} failed" if folder.failures else ""
            console.print(f"restored {len(folder.results)} file(s) into {args.output}{failed}",
                          soft_wrap=True, markup=False)
        return 1 if folder.failures else 0
    if api.is_image_path(src):
        summary = api.restore_image(src, args.output, options=options, notice=notice)
    else:
        summary = api.restore_video(src, args.output, options=options, notice=notice,
                                    progress=TerminalProgress(console, args.quiet))
    for warning in summary.warnings:
        console.print(f"vidgpen: warning: {warning}", soft_wrap=True, markup=False)
    if not args.quiet:
        console.print(f"{args.output}: {_summary_line(summary)}", soft_wrap=True, markup=False)
    return 0


def _summary_line(summary) -> str:
    fps = summary.frames / summary.seconds if summary.seconds else 0.0
    line = f"{summary.frames} frame(s), {summary.faces} face(s) restored in {summary.seconds:.1f} s ({fps:.2f} fps)"
    if summary.faces_reused:
        line += f" ({summary.faces_reused} taken from the saved progress)"
    busy = {k: v for k, v in summary.stage_seconds.items() if v > 0}
    if busy:
        line += "; busy seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in busy.items())
    return line
