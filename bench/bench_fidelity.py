"""Face flicker with and without temporal blending, and the per-face cost of the blending, colour and drift steps.

Flicker: a moving, noisy, H.264-compressed astronaut clip that blinks, opens its mouth and turns its head
(:class:`vidgpen.testing.MovingFaceClip`), restored through the library with the shimmering stand-in for trained
GPEN (:class:`vidgpen.testing.ShimmeringRestorer`; with --gpen it also runs the recipe GPEN for realistic timing)
with blending off and at the default strength. Reported: the warping error inside the face against the clip's
*true* motion (input, off, default), and what ``vidgpen flicker`` estimates from the input's own optical flow.
Targets (issue 10): default <= off / 2, default <= input.

Cost per face (median ms after a warm-up), on aligned crops of --size (default 512) from the same clip:
  blend       TemporalBlender.blend of a track in steady state (DIS flow both ways, warp, weight)
  color       match_color (Lab low-frequency match)
  monochrome  MonochromeDetector.update + keep_chroma (auto mode; keep_chroma runs only on black-and-white film)
  drift       measure_drift with MTCNN on the restored and the input crop (only with --report or --max-drift)
Target: blend + color + monochrome + drift under 10 ms per 512 face on 2 cores.

    python3 bench/bench_fidelity.py              # 48 frames at 320x240, crops of 512 (a minute or two)
    python3 bench/bench_fidelity.py --smoke      # tiny: checks that the script runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from vidgpen import api
from vidgpen.config import RestoreOptions
from vidgpen.faces.align import crop_matrix, warp_crop
from vidgpen.faces.color import MonochromeDetector, keep_chroma, match_color
from vidgpen.faces.detect import MTCNNDetector
from vidgpen.faces.drift import measure_drift
from vidgpen.faces.temporal import TemporalBlender
from vidgpen.flicker import measure_flicker
from vidgpen.pipeline import build_engine
from vidgpen.testing import MovingFaceClip, ShimmeringRestorer, true_warping_error

from timing import timed_ms  # bench/ is on sys.path when this script runs

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"



def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def recipe_gpen(size: int):
    from vidgpen.models.gpen import FullGenerator
    from vidgpen.models.recipe import recipe_state_dict
    from vidgpen.models.restorer import GPENRestorer
    from vidgpen.models.variants import VARIANTS

    name = f"GPEN-BFR-{size}"
    model = FullGenerator(VARIANTS[name].architecture).eval()
    model.load_state_dict(recipe_state_dict(json.loads((DATA / f"manifest-{name}.json").read_text())))
    return GPENRestorer(model, name, device="cpu", dtype="fp32")


def flicker(clip: MovingFaceClip, restorer, folder: Path) -> dict[str, float]:
    source = clip.write(folder / "in.mp4")
    inputs = decoded(source)
    options = RestoreOptions(model=restorer.variant, detector="mtcnn", mask="feathered", dtype="fp32")
    engine = build_engine(options, restorer=restorer)
    result: dict[str, float] = {}
    for name, strength in (("off", 0.0), ("default", options.temporal_strength)):
        run_options = options.replace(temporal_strength=strength, report=folder / f"{name}.json")
        started = time.perf_counter()
        api.restore_video(source, folder / f"{name}.mp4", options=run_options, engine=engine)
        result[f"{name} run seconds"] = time.perf_counter() - started
        truth = true_warping_error(clip, inputs, decoded(folder / f"{name}.mp4"))
        estimate = measure_flicker(source, folder / f"{name}.mp4", report=folder / f"{name}.json")
        result["input (true motion)"] = truth.input_error
        result[f"{name} (true motion)"] = truth.output_error
        result["input (vidgpen flicker)"] = estimate.input_error
        result[f"{name} (vidgpen flicker)"] = estimate.output_error
    return result


def costs(clip: MovingFaceClip, size: int, rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    crops = [warp_crop(clip.frame(t, rng), crop_matrix(clip.landmarks(t), size), size) for t in range(clip.frames)]
    restored = ShimmeringRestorer(size).restore(np.stack(crops))
    blender = TemporalBlender()
    counter = iter(range(10 ** 9))

    def blend_next():
        t = next(counter)
        blender.blend(0, t, crops[t % len(crops)], restored[t % len(crops)])

    monochrome = MonochromeDetector()
    detector = MTCNNDetector()
    result = {
        "blend": timed_ms(blend_next, rounds),
        "color": timed_ms(lambda: match_color(restored[1], crops[1]), rounds),
        "monochrome (detect)": timed_ms(lambda: monochrome.update(0, 0, crops[1]), rounds),
        "monochrome (keep chroma)": timed_ms(lambda: keep_chroma(restored[1], crops[1]), rounds),
        "drift (colour only)": timed_ms(lambda: measure_drift(crops[1], restored[1]), rounds),
        "drift (with landmarks)": timed_ms(lambda: measure_drift(crops[1], restored[1], detector), rounds),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--size", type=int, help="crop side for the cost measurement (default 512; 256 with --smoke)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--gpen", action="store_true", help="also run the recipe GPEN-256 in the flicker runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks that the script runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.smoke:
        args.frames, args.rounds = 6, 3
    args.size = args.size or (256 if args.smoke else 512)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    clip = MovingFaceClip(frames=args.frames, width=args.width, height=args.height, scale=1.2 * args.height / 240,
                          noise=10.0, crf=14, blink=min(8, args.frames - 3), mouth=min(13, args.frames - 2),
                          turn=min(17, args.frames - 1))
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} threads; clip {args.frames} frames "
          f"{args.width}x{args.height}; cost on {args.size} crops")
    restorer = ShimmeringRestorer(256, gpen=recipe_gpen(256) if args.gpen else None)
    with tempfile.TemporaryDirectory() as folder:
        flicker_result = flicker(clip, restorer, Path(folder))
    for name, value in flicker_result.items():
        print(f"flicker {name:<28}{value:8.2f}" + (" s" if "seconds" in name else " levels"))
    off, on = flicker_result["off (true motion)"], flicker_result["default (true motion)"]
    print(f"flicker off / default {off / on:.2f} (target >= 2); default / input "
          f"{on / flicker_result['input (true motion)']:.2f} (target <= 1)")
    cost_result = costs(clip, args.size, args.rounds)
    for name, ms in cost_result.items():
        print(f"cost {name:<30}{ms:8.2f} ms/face")
    total = sum(cost_result[k] for k in ("blend", "color", "monochrome (detect)", "drift (colour only)"))
    with_landmarks = total - cost_result["drift (colour only)"] + cost_result["drift (with landmarks)"]
    print(f"cost blend + color + monochrome + drift (colour) {total:.2f} ms per {args.size} face (target < 10); "
          f"with the landmark drift on that face {with_landmarks:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)},
                                         "flicker": flicker_result, "cost_ms": cost_result}, indent=1, default=str))


if __name__ == "__main__":
    main()
