"""Per-frame cost of the face stages on a 720p frame with one face, against the GPEN model time per face.

Stages timed (median ms per frame over the rounds, after a warm-up):
  detect     each detector at --max-side (default: its own, YuNet 640, the others 1000; MTCNN and YuNet with their
             real weights; RetinaFace with random weights -- the forward costs the same, decoding/NMS a little less)
  flow       LandmarkFlow.follow of one face (Lucas-Kanade, forward and backward)
  find       the default detector (--detector auto) with optical flow between detections, as the pipeline runs
             it (DetectAndFollow, --detect-every N), averaged over whole detection cycles
  scene      SceneCutDetector.is_cut
  track      FaceTracker.push (association + window smoothing)
  align      crop_matrix + warp_crop at the model size
  mask       the feathered mask (and BiSeNet with random weights, if --bisenet)
  paste      paste_faces of one restored crop into the frame
  model      GPENRestorer.restore of one crop (recipe weights, fp32), per face at batch 1 and batch 4

The target from issue 5: detect + scene + track + align + mask + paste <= 15% of the model time per face.
With --detect-every N (default 3, the CLI's) the detection cost per frame is divided by N and the flow is paid on
the N-1 frames between.

    python3 bench/bench_faces.py                        # the full run (takes a few minutes on 2 cores)
    python3 bench/bench_faces.py --smoke                # tiny sizes, one round: checks the script runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

from vidgpen.faces.align import crop_matrix, warp_crop
from vidgpen.faces.detect import (
    RETINAFACE_VARIANTS,
    MTCNNDetector,
    RetinaFaceDetector,
    YuNetDetector,
    load_retinaface_network,
    make_detector,
)
from vidgpen.faces.flow import DetectAndFollow, LandmarkFlow
from vidgpen.faces.mask import FeatheredMasker
from vidgpen.faces.paste import PasteItem, paste_faces
from vidgpen.faces.scene import SceneCutDetector
from vidgpen.faces.track import FaceTracker

from timing import timed_ms  # bench/ is on sys.path when this script runs

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"



def test_frames(width: int, height: int, count: int) -> list[np.ndarray]:
    """``count`` frames of a slowly moving astronaut face on a 720p-like background, (H, W, 3) uint8 RGB."""
    astronaut = skimage.data.astronaut()
    face_height = int(height * 0.7)
    face = cv2.resize(astronaut, (face_height, face_height), interpolation=cv2.INTER_AREA)
    background = cv2.resize(skimage.data.coffee(), (width + count * 2, height), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(count):
        frame = background[:, i * 2: i * 2 + width].copy()
        x = (width - face_height) // 2 + i
        frame[(height - face_height) // 2: (height - face_height) // 2 + face_height, x: x + face_height] = face
        frames.append(frame)
    return frames


def build_restorer(size: int):
    from vidgpen.models.gpen import FullGenerator
    from vidgpen.models.recipe import recipe_state_dict
    from vidgpen.models.restorer import GPENRestorer
    from vidgpen.models.variants import VARIANTS

    name = f"GPEN-BFR-{size}"
    manifest = json.loads((DATA / f"manifest-{name}.json").read_text())
    model = FullGenerator(VARIANTS[name].architecture).eval()
    model.load_state_dict(recipe_state_dict(manifest))
    return GPENRestorer(model, name, device="cpu", dtype="fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--max-side", type=int, help="detection size (long side; default: each detector's own)")
    parser.add_argument("--size", type=int, default=256, help="GPEN model size (crop side)")
    parser.add_argument("--detect-every", type=int, default=3, help="detection on every n-th frame, flow between")
    parser.add_argument("--mtcnn-min-face", type=int, default=20, help="MTCNN smallest face, detection pixels")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--detectors", nargs="+", default=["yunet", "mtcnn", "retinaface-mobile", "retinaface"],
                        choices=["yunet", "mtcnn", "retinaface-mobile", "retinaface"])
    parser.add_argument("--bisenet", action="store_true", help="also time BiSeNet parsing (random weights)")
    parser.add_argument("--no-model", action="store_true", help="skip the model timing")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--smoke", action="store_true", help="tiny frame, one round (checks that the script runs)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.smoke:
        args.width, args.height, args.max_side, args.rounds = 320, 180, 320, 1
        args.detectors = ["yunet", "mtcnn", "retinaface-mobile"]
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; frame {args.width}x{args.height}, "
          f"detection at long side <= {args.max_side or 'the detector default'}, crop {args.size}")

    frames = test_frames(args.width, args.height, max(args.rounds, 1) + 1)
    frame = frames[0]
    results: dict[str, float] = {}

    # Detection.
    detections = None
    for kind in args.detectors:
        if kind == "mtcnn":
            detector = MTCNNDetector(max_side=args.max_side or 1000, min_face_size=args.mtcnn_min_face)
        elif kind == "yunet":
            detector = YuNetDetector(max_side=args.max_side or 640)
        else:
            torch.manual_seed(0)
            network = load_retinaface_network(RETINAFACE_VARIANTS[kind][0], None)
            detector = RetinaFaceDetector(network, name=kind, max_side=args.max_side or 1000)
        results[f"detect {kind}"] = timed_ms(lambda: detector.detect(frame), args.rounds)
        if kind == "mtcnn":
            detections = detector.detect(frame)
    if not detections:
        raise SystemExit("MTCNN found no face in the bench frame; the timings below would mean nothing")
    face = detections[0]
    print(f"face: eye distance {face.eye_distance:.0f} px, box {np.round(face.box).astype(int).tolist()}")

    # Optical flow of one face between two frames, and the default detector with flow as the pipeline runs it.
    flow = LandmarkFlow()
    flow_cycle = iter(range(10**9))

    def follow_one():
        flow.start(frames[0], [face])
        flow.follow(frames[1 + next(flow_cycle) % (len(frames) - 1)])

    results["flow"] = timed_ms(follow_one, max(args.rounds, 20)) - timed_ms(lambda: flow.start(frames[0], [face]),
                                                                            max(args.rounds, 20))
    default_detector = make_detector("auto", max_side=args.max_side)
    cycle = args.detect_every
    clip = test_frames(args.width, args.height, cycle * max(args.rounds, 2))
    finder = DetectAndFollow(default_detector.detect, cycle)
    clip_index = iter(range(10**9))
    results[f"find {default_detector.name} + flow"] = timed_ms(
        lambda: [finder(clip[next(clip_index) % len(clip)]) for _ in range(cycle)], max(args.rounds, 2)) / cycle

    # Scene cuts.
    scene = SceneCutDetector()
    frame_cycle = iter(range(10**9))
    results["scene"] = timed_ms(lambda: scene.is_cut(frames[next(frame_cycle) % len(frames)]), args.rounds)

    # Tracking and smoothing, steady state (the window is full).
    tracker = FaceTracker()
    rng = np.random.default_rng(0)
    counter = iter(range(10**9))

    def push_one():
        index = next(counter)
        jittered = type(face)(face.box, face.score, face.landmarks + rng.normal(0, 1, (5, 2)).astype(np.float32))
        tracker.push(index, index / 30.0, [jittered])

    for _ in range(20):
        push_one()
    results["track"] = timed_ms(push_one, max(args.rounds, 20))

    # Alignment, mask, paste-back.
    matrix = crop_matrix(face.landmarks, args.size)
    results["align"] = timed_ms(lambda: warp_crop(frame, crop_matrix(face.landmarks, args.size), args.size),
                                args.rounds)
    crop = warp_crop(frame, matrix, args.size)
    masker = FeatheredMasker()
    results["mask feathered"] = timed_ms(lambda: np.array(masker(crop[None])), args.rounds)
    mask = np.array(masker(crop[None])[0])
    if args.bisenet:
        from vidgpen.faces.mask import ParsingMasker, build_parser_model

        bisenet = ParsingMasker(build_parser_model("bisenet"), "bisenet")
        results["mask bisenet"] = timed_ms(lambda: bisenet(crop[None]), args.rounds)
    restored = np.ascontiguousarray(crop[:, ::-1])  # any different face will do for the paste cost
    item = PasteItem(restored_crop=restored, crop_matrix=matrix, mask=mask, box=face.box, original_crop=crop)
    results["paste"] = timed_ms(lambda: paste_faces(frame, [item]), args.rounds)

    # The model.
    if not args.no_model:
        restorer = build_restorer(args.size)
        results["model b1 per face"] = timed_ms(lambda: restorer.restore(crop[None]), args.rounds)
        batch = np.repeat(crop[None], 4, axis=0)
        results["model b4 per face"] = timed_ms(lambda: restorer.restore(batch), max(1, args.rounds // 2)) / 4

    for name, ms in results.items():
        print(f"{name:<24}{ms:10.2f} ms")
    overhead_without_detect = sum(results[k] for k in ("scene", "track", "align", "mask feathered", "paste"))
    model_ms = min((v for k, v in results.items() if k.startswith("model")), default=None)
    summary = {}
    find_key = f"find {default_detector.name} + flow"
    line = f"face stages, default detector + flow{overhead_without_detect + results[find_key]:10.2f} ms/frame"
    print(line + f" (detect every {args.detect_every}, {default_detector.name})")
    for kind in args.detectors:
        total = overhead_without_detect + results[f"detect {kind}"] / args.detect_every
        summary[kind] = total
        line = f"face stages with {kind:<18}{total:10.2f} ms/frame (detect every {args.detect_every}, no flow)"
        if model_ms:
            line += f"  = {100 * total / model_ms:5.1f}% of the model's {model_ms:.0f} ms/face (target <= 15%)"
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)},
                                         "ms": results, "face_stages_ms": summary}, indent=1, default=str))


if __name__ == "__main__":
    main()
