"""Flicker measurement: the warping error inside face regions.

For each pair of consecutive frames, dense optical flow is computed on the *input* video (Farneback, from frame t
back to frame t-1) and used to warp frame t-1 onto frame t, for the input and for the output alike. Pixels whose
flow fails the forward-backward consistency check (occlusions, disocclusions) are left out. The error is the
mean absolute difference (0..255 levels, over RGB) between frame t and the warped frame t-1, inside the face
boxes of frame t. A restorer that adds no flicker leaves the output's error at or below the input's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from vidgpen.errors import InputError

FLOW_DENOISE_SIGMA = 0.0  # pixels (0: flow on the frames as they are)

FacesForFrame = Callable[[int, np.ndarray], "Sequence[np.ndarray] | np.ndarray"]
# (index, gray now, gray before) -> (backward flow [H, W, 2], where it holds [H, W] bool)
FlowForPair = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FlickerResult:
    input_error: float      # mean warping error of the input inside face regions, uint8 levels
    output_error: float     # the same for the output
    frame_pairs: int        # consecutive pairs that had face pixels to compare
    pixels: int             # face pixels compared in all (after the occlusion mask)

    @property
    def ratio(self) -> float:
        """output / input: below 1 means the output flickers less than the input in the faces."""
        return self.output_error / self.input_error if self.input_error else float("inf")


def backward_flow(gray_now: np.ndarray, gray_before: np.ndarray) -> np.ndarray:
    """Flow ``[H, W, 2]`` such that ``before(p + flow(p)) ~ now(p)``."""
    return cv2.calcOpticalFlowFarneback(gray_now, gray_before, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def warp_with_flow(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def consistent_flow_mask(flow_back: np.ndarray, flow_forward: np.ndarray) -> np.ndarray:
    """True where following the backward flow and then the forward flow returns to the start (no occlusion)."""
    forward_at_target = warp_with_flow(flow_forward, flow_back)
    round_trip = flow_back + forward_at_target
    magnitude = (flow_back ** 2).sum(-1) + (forward_at_target ** 2).sum(-1)
    return (round_trip ** 2).sum(-1) < 0.01 * magnitude + 0.5


def face_polygon(crop_matrix: np.ndarray, size: float) -> np.ndarray:
    """The inner face of an aligned crop (its central 2/3, where GPEN's template puts eyes, nose and mouth),
    mapped back into the frame: ``[4, 2]`` float32 corners."""
    lo, hi = size / 6, size * 5 / 6
    corners = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]], dtype=np.float64)
    matrix = np.vstack([np.asarray(crop_matrix, dtype=np.float64).reshape(2, 3), [0, 0, 1]])
    inverse = np.linalg.inv(matrix)[:2]
    return (corners @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32)


def region_mask(shape: tuple[int, int], polygons: Sequence[np.ndarray]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for polygon in polygons:
        cv2.fillConvexPoly(mask, np.round(polygon * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def estimated_flow(index: int, gray_now: np.ndarray, gray_before: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input's own motion from frame ``index`` back to the one before, and where it is consistent."""
    flow_back = backward_flow(gray_now, gray_before)
    flow_forward = backward_flow(gray_before, gray_now)
    return flow_back, consistent_flow_mask(flow_back, flow_forward)


def warping_error(input_frames, output_frames, faces_for_frame: FacesForFrame,
                  flow_for_pair: FlowForPair = estimated_flow,
                  on_frame: Callable[[int, int], None] | None = None) -> FlickerResult:
    """input_frames, output_frames: iterables of ``[H, W, 3]`` uint8 RGB of equal length and size.

    faces_for_frame(index, input_frame) gives the face regions of that frame as ``[N, 2]`` polygons, or as one
    ``[H, W]`` bool mask. flow_for_pair gives the motion between consecutive frames: by default the input's own
    optical flow (what ``vidgpen flicker`` uses); tests with generated clips pass the true motion.
    on_frame(frames done, face regions so far) is called after each frame (progress).
    """
    totals = np.zeros(2)
    pixels = pairs = regions = 0
    previous = None
    for index, (frame_in, frame_out) in enumerate(_zip_strict(input_frames, output_frames)):
        if on_frame is not None and index:
            on_frame(index, regions)
        if frame_in.shape != frame_out.shape:
            raise InputError(f"frame {index}: input is {frame_in.shape[1]}x{frame_in.shape[0]} but output is "
                             f"{frame_out.shape[1]}x{frame_out.shape[0]}; compare a video with its own restoration")
        gray = cv2.cvtColor(frame_in, cv2.COLOR_RGB2GRAY)
        if FLOW_DENOISE_SIGMA > 0:
            gray = cv2.GaussianBlur(gray, (0, 0), FLOW_DENOISE_SIGMA)
        if previous is not None:
            gray_prev, in_prev, out_prev = previous
            faces = faces_for_frame(index, frame_in)
            if isinstance(faces, np.ndarray) and faces.dtype == bool:
                region = faces
                regions += int(faces.any())
            else:
                region = region_mask(gray.shape, faces)
                regions += len(faces)
            if region.any():
                flow_back, consistent = flow_for_pair(index, gray, gray_prev)
                valid = region & consistent
                count = int(valid.sum())
                if count:
                    for k, (now, before) in enumerate(((frame_in, in_prev), (frame_out, out_prev))):
                        warped = warp_with_flow(before, flow_back)
                        diff = np.abs(now.astype(np.float32) - warped.astype(np.float32)).mean(axis=2)
                        totals[k] += float(diff[valid].sum())
                    pixels += count
                    pairs += 1
        previous = (gray, frame_in, frame_out)
    if on_frame is not None:
        on_frame(index + 1 if previous is not None else 0, regions)
    if pixels == 0:
        raise InputError("no faces were found in consecutive frames; flicker cannot be measured")
    return FlickerResult(totals[0] / pixels, totals[1] / pixels, pairs, pixels)


def _zip_strict(a, b):
    sentinel = object()
    iter_a, iter_b = iter(a), iter(b)
    while True:
        x, y = next(iter_a, sentinel), next(iter_b, sentinel)
        if x is sentinel and y is sentinel:
            return
        if x is sentinel or y is sentinel:
            raise InputError("the two videos have different frame counts; compare a video with its own restoration")
        yield x, y


def measure_flicker(input_path: str | Path, output_path: str | Path, *, detector=None,
                    report: str | Path | None = None, progress=None) -> FlickerResult:
    """Face-region warping error of two videos.

    Face regions come from the crop matrices of a ``--report`` file of the run, or from faces that ``detector``
    finds in the input (their landmarks give the same GPEN crop geometry). ``progress`` (the pipeline's Progress
    protocol) sees frames done and face regions measured.
    """
    from vidgpen.video.reader import open_video

    if report is not None:
        from vidgpen.faces.report import load_report

        loaded = load_report(report)
        size = float(loaded.get("meta", {}).get("size", 512))
        polygons = {f["frame"]: [face_polygon(np.asarray(face["crop_matrix"]), size) for face in f["faces"]]
                    for f in loaded["frames"]}

        def faces_for_frame(index, frame):
            return polygons.get(index, [])
    else:
        from vidgpen.faces.align import crop_matrix

        if detector is None:
            from vidgpen.faces.detect import make_detector

            detector = make_detector("auto")

        def faces_for_frame(index, frame):
            return [face_polygon(crop_matrix(d.landmarks, 512), 512) for d in detector.detect(frame)]

    with open_video(input_path) as source, open_video(output_path) as restored:
        if progress is None:
            return warping_error((f.image for f in source), (f.image for f in restored), faces_for_frame)
        from vidgpen.video.count import count_frames

        progress.start(Path(input_path).name, count_frames(source.info, source.time_range))
        try:
            return warping_error((f.image for f in source), (f.image for f in restored), faces_for_frame,
                                 on_frame=progress.update)
        finally:
            progress.finish()
