"""Stand-ins for trained GPEN and generated face clips with known motion, for tests and ``bench/`` scripts.

Trained GPEN weights cannot ship with the project (their licence), and the recipe weights the tests rebuild barely
react to fine texture, so neither shows the problem the temporal blender exists for: trained GPEN answers small
changes of a noisy input (grain, sensor noise, compression) with *different invented detail*, and a restored face
shimmers from frame to frame although the person holds still.

:class:`ShimmeringRestorer` models exactly that and nothing more:

- **what it models**: the face's structure (shape, shading, colour, edges down to a couple of pixels) is kept from
  the input, as GPEN keeps it; fine detail is *invented* from the input's own fine texture by a strongly non-linear
  map (a sine of the high-pass, a few levels per period), so the same pixel noise that a viewer barely sees in the
  input becomes full-contrast detail that changes completely from one frame to the next. A clean, steady input
  gives steady detail; a noisy input shimmers, like trained GPEN on real footage.
- **what it does not model**: no face prior (it does not fix blur, does not draw plausible eyes or teeth, does not
  change identity or colour), no dependence on the wider context of the crop, no style latent. Tests of colour
  drift and landmark drift wrap it in :class:`ColorShiftingRestorer` and :class:`MouthMovingRestorer`, which add
  those faults on purpose.

With ``gpen=`` (a :class:`~vidgpen.models.restorer.GPENRestorer`, e.g. the recipe GPEN-BFR-256) it also runs the
real network on every batch and throws its output away, so benchmarks see GPEN's cost and memory.

:class:`MovingFaceClip` writes a degraded clip of NASA's public-domain astronaut portrait that drifts, rolls and
zooms, blinks, opens its mouth and turns its head (local warps of the face), in colour, grey or sepia, and knows
the true motion between any two consecutive frames (:meth:`MovingFaceClip.true_flow`), so flicker can be measured
against the true motion (:func:`true_warping_error`) and not only against an optical flow estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

from vidgpen.flicker import FlickerResult, warping_error
from vidgpen.models.restorer import crop_batch

# ---------------------------------------------------------------------------------------------------------------
# Restorers
# ---------------------------------------------------------------------------------------------------------------


class _Parameters(torch.nn.Module):
    """The stand-in's settings as buffers, so a resumed run can tell two differently set stand-ins apart."""

    def __init__(self, **values: float):
        super().__init__()
        for name, value in values.items():
            self.register_buffer(name, torch.tensor(float(value)))


class ShimmeringRestorer:
    """Aligned ``[N, S, S, 3]`` uint8 RGB crops in, "restored" crops out, shimmering like trained GPEN.

    ``restored = blur(input, structure_sigma) + amplitude * sin(2 pi * highpass(luma) / period)`` with the high-pass
    ``luma - blur(luma, detail_sigma)``; sigmas are in pixels of a 256 crop and scale with ``size``. See the module
    docstring for what it models. Used through ``build_engine(options, restorer=ShimmeringRestorer(256))``.
    """

    def __init__(self, size: int = 256, *, amplitude: float = 18.0, period: float = 6.0,
                 structure_sigma: float = 0.8, detail_sigma: float = 1.5, batch_size: int = 4, gpen=None):
        if gpen is not None and gpen.size != size:
            raise ValueError(f"the GPEN restorer works on {gpen.size} crops, the stand-in on {size}")
        self.size = size
        self.amplitude = float(amplitude)
        self.period = float(period)
        self.structure_sigma = structure_sigma * size / 256
        self.detail_sigma = detail_sigma * size / 256
        self.gpen = gpen
        self.batch_size = gpen.batch_size if gpen is not None else batch_size
        self.device = gpen.device if gpen is not None else torch.device("cpu")
        self.dtype = gpen.dtype if gpen is not None else torch.float32
        self.variant = gpen.variant if gpen is not None else f"GPEN-BFR-{size}"
        self.model = _Parameters(amplitude=amplitude, period=period, structure_sigma=structure_sigma,
                                 detail_sigma=detail_sigma, gpen=gpen is not None)

    def restore(self, crops: np.ndarray) -> np.ndarray:
        crops, single = crop_batch(crops, self.size)
        if self.gpen is not None:
            self.gpen.restore(crops)  # the real network's cost; its (recipe) output is not what is shown
        restored = np.stack([self._one(crop) for crop in crops])
        return restored[0] if single else restored

    def _one(self, crop: np.ndarray) -> np.ndarray:
        pixels = crop.astype(np.float32)
        structure = cv2.GaussianBlur(pixels, (0, 0), self.structure_sigma)
        luma = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        highpass = luma - cv2.GaussianBlur(luma, (0, 0), self.detail_sigma)
        detail = self.amplitude * np.sin(highpass * (2 * np.pi / self.period))
        detail = cv2.GaussianBlur(detail, (0, 0), 0.5 * self.size / 256)
        return np.clip(structure + detail[:, :, None] + 0.5, 0, 255).astype(np.uint8)


class _Wrapper:
    """Delegates everything a pipeline asks of a restorer to ``base`` and changes its output."""

    def __init__(self, base):
        self.base = base
        self.size, self.batch_size, self.device = base.size, base.batch_size, base.device
        self.dtype, self.variant = base.dtype, base.variant

    def restore(self, crops: np.ndarray) -> np.ndarray:
        crops, single = crop_batch(crops, self.size)
        changed = np.stack([self.change(face) for face in self.base.restore(crops)])
        return changed[0] if single else changed

    def change(self, face: np.ndarray) -> np.ndarray:
        """One restored ``[S, S, 3]`` uint8 face -> the changed face (subclasses; the identity here)."""
        return face


class ColorShiftingRestorer(_Wrapper):
    """``base`` with a colour cast: every restored face shifted by ``lab_shift`` (L 0..100, a, b), as GPEN can
    shift skin tone. Lab is OpenCV's float Lab of RGB in [0, 1]."""

    def __init__(self, base, lab_shift=(4.0, 8.0, -10.0)):
        super().__init__(base)
        self.lab_shift = np.asarray(lab_shift, dtype=np.float32)
        self.model = _Parameters(**{f"shift{i}": v for i, v in enumerate(lab_shift)})

    def change(self, face):
        lab = cv2.cvtColor(face.astype(np.float32) / 255, cv2.COLOR_RGB2Lab) + self.lab_shift
        rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
        return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


class MouthMovingRestorer(_Wrapper):
    """``base`` drawing a smile that is not there: the mouth corners of the GPEN template move outward and up by
    ``shift`` crop pixels (a local warp), as a trained GPEN may on a heavily degraded face."""

    def __init__(self, base, shift: float = 10.0, template: str = "gpen"):
        from vidgpen.faces.align import reference_points

        super().__init__(base)
        self.shift = float(shift)
        self.model = _Parameters(shift=shift)
        size = base.size
        corners = reference_points(size, template)[3:5]
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        map_x, map_y = x.copy(), y.copy()
        sigma = size / 24
        for (cx, cy), direction in zip(corners, (-1.0, 1.0)):
            # backward map: a pixel near the corner's new place takes its colour from the old corner
            moved_x, moved_y = cx + direction * self.shift, cy - self.shift / 2
            bump = np.exp(-((x - moved_x) ** 2 + (y - moved_y) ** 2) / (2 * sigma ** 2))
            map_x -= direction * self.shift * bump
            map_y += self.shift / 2 * bump
        self._maps = map_x, map_y

    def change(self, face):
        return cv2.remap(face, *self._maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ---------------------------------------------------------------------------------------------------------------
# A moving, degraded face clip with known motion
# ---------------------------------------------------------------------------------------------------------------

# The astronaut portrait (512 x 512): hand-picked landmarks in GPEN's order, and the regions the events change.
PORTRAIT_LANDMARKS = np.array([[203, 100], [246, 103], [225, 125], [205, 143], [243, 143]], dtype=np.float64)
PORTRAIT_FACE_CENTER = (225.0, 122.0)
PORTRAIT_FACE_AXES = (34.0, 42.0)   # the inner face: brows to chin, cheek to cheek
MOUTH_CENTER = (224.0, 143.0)
SEPIA_TINT = np.array([1.0, 0.84, 0.64], dtype=np.float32)


def _bump(x, y, cx, cy, sx, sy):
    return np.exp(-((x - cx) ** 2 / (2 * sx ** 2) + (y - cy) ** 2 / (2 * sy ** 2)))


@dataclass(frozen=True)
class MovingFaceClip:
    """A degraded, moving astronaut face. Frame ``t`` shows ``portrait(D_t(A_t^-1 p))``: ``A_t`` the camera (drift,
    roll, zoom), ``D_t`` the face's own motion (blink, mouth opening, head turn as local warps); then the frame is
    softened (half resolution), gets fresh noise and is tinted (``color`` gray or sepia) before H.264 compression.

    ``blink``, ``mouth``, ``turn``: the frame where each event happens in one frame (eyes shut for two frames; the
    mouth opens, showing a dark gap, and stays open; the head turns within two frames and stays turned).
    """

    width: int = 320
    height: int = 240
    frames: int = 24
    fps: int = 24
    noise: float = 8.0
    color: str = "color"            # color | gray | sepia
    scale: float = 0.85             # frame pixels per portrait pixel
    motion: float = 1.0             # camera motion amplitude (0: a still camera)
    blink: int | None = 8
    mouth: int | None = 13
    turn: int | None = 17
    crf: int = 18
    seed: int = 0
    portrait: np.ndarray | None = field(default=None, compare=False, repr=False)

    # --- geometry -----------------------------------------------------------------------------------------------

    def camera(self, t: int) -> np.ndarray:
        """``A_t``: (2, 3) float64, portrait pixels -> frame pixels."""
        phase = t / self.fps
        scale = self.scale * (1 + 0.04 * self.motion * math.sin(2 * math.pi * phase / 1.2))
        angle = 3.0 * self.motion * math.sin(2 * math.pi * phase / 1.6)
        cx = self.width * (0.5 + 0.1 * self.motion * math.sin(2 * math.pi * phase / 1.5))
        cy = self.height * (0.5 + 0.05 * self.motion * math.cos(2 * math.pi * phase / 1.3))
        matrix = cv2.getRotationMatrix2D(PORTRAIT_FACE_CENTER, angle, scale)
        matrix[:, 2] += (cx - PORTRAIT_FACE_CENTER[0], cy - PORTRAIT_FACE_CENTER[1])
        return matrix

    def amounts(self, t: int) -> tuple[float, float, float]:
        """(blink, mouth, turn) in 0..1 at frame ``t``."""
        blink = 1.0 if self.blink is not None and self.blink <= t < self.blink + 2 else 0.0
        mouth = 1.0 if self.mouth is not None and t >= self.mouth else 0.0
        turn = 0.0 if self.turn is None else float(np.clip((t - self.turn + 2) / 2, 0.0, 1.0))
        return blink, mouth, turn

    def face_warp(self, t: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``D_t``: portrait points (x, y) -> the portrait points they show in frame ``t``."""
        blink, mouth, turn = self.amounts(t)
        dx = np.zeros_like(x)
        dy = np.zeros_like(y)
        if blink:
            for ex, ey in PORTRAIT_LANDMARKS[:2]:   # lids close: rows near the eye's axis come from above and below
                dy += blink * 0.9 * (y - ey) * _bump(x, y, ex, ey, 9.0, 5.0)
        if mouth:                                   # lips part: rows near the mouth come from closer to its axis
            dy -= mouth * 0.45 * (y - MOUTH_CENTER[1]) * _bump(x, y, *MOUTH_CENTER, 16.0, 7.0)
        if turn:                                    # eyes, nose and mouth slide sideways inside the outline
            dx += turn * 7.0 * _bump(x, y, *PORTRAIT_FACE_CENTER, 30.0, 40.0)
        return x + dx, y + dy

    def _face_unwarp(self, t: int, x: np.ndarray, y: np.ndarray):
        """``D_t^-1`` by fixed-point iteration (the warps are small and smooth)."""
        ux, uy = x.copy(), y.copy()
        for _ in range(12):
            wx, wy = self.face_warp(t, ux, uy)
            ux, uy = ux - (wx - x), uy - (wy - y)
        return ux, uy

    def _frame_to_portrait(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        inverse = cv2.invertAffineTransform(self.camera(t))
        y, x = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        px = inverse[0, 0] * x + inverse[0, 1] * y + inverse[0, 2]
        py = inverse[1, 0] * x + inverse[1, 1] * y + inverse[1, 2]
        return self.face_warp(t, px, py)

    def true_flow(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """The true motion from frame ``t`` back to ``t - 1``: flow ``[H, W, 2]`` float32 with
        ``frame[t-1](p + flow(p)) ~ frame[t](p)``, and where it holds ``[H, W]`` bool (inside both frames, and not
        where new content appears: the opening mouth's dark gap)."""
        sx, sy = self._frame_to_portrait(t)
        ux, uy = self._face_unwarp(t - 1, sx, sy)
        camera = self.camera(t - 1)
        qx = camera[0, 0] * ux + camera[0, 1] * uy + camera[0, 2]
        qy = camera[1, 0] * ux + camera[1, 1] * uy + camera[1, 2]
        y, x = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        flow = np.stack([qx - x, qy - y], axis=-1).astype(np.float32)
        valid = (qx >= 0) & (qx <= self.width - 1) & (qy >= 0) & (qy <= self.height - 1)
        if self.amounts(t)[1] != self.amounts(t - 1)[1]:
            valid &= ~self._gap_mask(sx, sy)
        return flow, valid

    def region(self, t: int, part: str = "face") -> np.ndarray:
        """Frame ``t`` pixels showing a part of the face: ``[H, W]`` bool; part face | mouth | eyes."""
        sx, sy = self._frame_to_portrait(t)
        if part == "face":
            cx, cy = PORTRAIT_FACE_CENTER
            ax, ay = PORTRAIT_FACE_AXES
            return ((sx - cx) / ax) ** 2 + ((sy - cy) / ay) ** 2 <= 1
        if part == "mouth":
            return ((sx - MOUTH_CENTER[0]) / 22) ** 2 + ((sy - MOUTH_CENTER[1]) / 10) ** 2 <= 1
        if part == "eyes":
            return np.any([((sx - ex) / 12) ** 2 + ((sy - ey) / 8) ** 2 <= 1 for ex, ey in PORTRAIT_LANDMARKS[:2]],
                          axis=0)
        raise ValueError(f"unknown face part {part!r}")

    def landmarks(self, t: int) -> np.ndarray:
        """The five landmarks in frame ``t`` (camera only): (5, 2) float64."""
        camera = self.camera(t)
        return PORTRAIT_LANDMARKS @ camera[:, :2].T + camera[:, 2]

    def _gap_mask(self, sx, sy):
        return ((sx - MOUTH_CENTER[0]) / 15) ** 2 + ((sy - MOUTH_CENTER[1]) / 2.5) ** 2 <= 1

    # --- pixels -------------------------------------------------------------------------------------------------

    def _portrait(self) -> np.ndarray:
        if self.portrait is not None:
            return self.portrait
        from vidgpen.samples import astronaut_rgb

        return astronaut_rgb()

    def clean_frame(self, t: int) -> np.ndarray:
        """Frame ``t`` before degradation, in colour: ``[H, W, 3]`` uint8 RGB."""
        portrait = self._portrait().copy()
        sx, sy = self._frame_to_portrait(t)
        image = cv2.remap(portrait, sx.astype(np.float32), sy.astype(np.float32), cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        if self.amounts(t)[1]:
            gap = cv2.GaussianBlur(self._gap_mask(sx, sy).astype(np.float32), (0, 0), 0.7)[:, :, None]
            image = (image * (1 - gap) + np.array([40, 12, 14]) * gap).astype(np.uint8)
        return image

    def frame(self, t: int, rng: np.random.Generator) -> np.ndarray:
        """Frame ``t`` as written (before compression): ``[H, W, 3]`` uint8 RGB."""
        image = self.clean_frame(t)
        small = cv2.resize(image, (self.width // 2, self.height // 2), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (self.width, self.height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        if self.color == "color":
            return np.clip(image + rng.normal(0, self.noise, image.shape) + 0.5, 0, 255).astype(np.uint8)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) + rng.normal(0, self.noise, image.shape[:2])
        tint = SEPIA_TINT if self.color == "sepia" else np.ones(3, np.float32)
        return np.clip(gray[:, :, None] * tint + 0.5, 0, 255).astype(np.uint8)

    def write(self, path: str | Path) -> Path:
        """H.264 (yuv420p) at ``crf``, no audio."""
        import av

        path = Path(path)
        rng = np.random.default_rng(self.seed)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            # cpu-independent: without it x264's CPU-specific code made two writes of the same frames differ here.
            stream.options = {"crf": str(self.crf), "preset": "veryfast", "threads": "1",
                              "x264-params": "cpu-independent=1"}
            for t in range(self.frames):
                frame = av.VideoFrame.from_ndarray(self.frame(t, rng), format="rgb24")
                frame.pts, frame.time_base = t, Fraction(1, self.fps)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return path


def true_warping_error(clip: MovingFaceClip, input_frames, output_frames) -> FlickerResult:
    """:func:`vidgpen.flicker.warping_error` inside the inner face, with the clip's *true* motion instead of an
    optical flow estimate: lag and ghosting (a previous pose left showing) count as errors too."""

    def true_flow(index, gray_now, gray_before):
        return clip.true_flow(index)

    def face(index, frame):
        return clip.region(index, "face")

    return warping_error(input_frames, output_frames, face, flow_for_pair=true_flow)
