"""Background upscalers: a whole frame in, the same frame N times larger out (no I/O here).

Two kinds, with one method, ``upscale(image, factor)`` (``[H, W, 3]`` uint8 RGB -> ``[H*N, W*N, 3]`` uint8 RGB):

- :class:`LanczosUpscaler`: OpenCV's Lanczos-4 resize; always available, cheap.
- :class:`LearnedUpscaler`: a super-resolution network (Real-ESRGAN's RRDBNet or SRVGGNetCompact, loaded by
  :mod:`vidgpen.upscale` through spandrel). The frame is cut into tiles that overlap by ``pad`` pixels of context
  on every side (:func:`upscale_tiled`); each tile's core, away from its borders, is what the tile contributes, so
  a network that sees less than ``pad`` pixels around a pixel gives exactly the untiled result. When the network's
  own scale is not N, its output is resized to N (area resampling down, Lanczos up).
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Protocol

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)

TILE_PAD = 16          # input pixels of context around each tile (Real-ESRGAN's own script uses 10)
CPU_TILE = 256         # input tile side on CPU: fits the cache-friendly range, ~0.3 GB of x4 activations in fp32
MIN_TILE = 32
MAX_GPU_TILE = 1024
MAX_GPU_BATCH = 8


class BackgroundUpscaler(Protocol):
    """Anything that enlarges whole frames by an integer factor."""

    name: str

    def upscale(self, image: np.ndarray, factor: int) -> np.ndarray: ...


def _check_image(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"expected an [H, W, 3] uint8 image, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")


def lanczos_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> ``[height, width, 3]`` uint8 with OpenCV's Lanczos-4 (8x8 taps)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LANCZOS4)


class LanczosUpscaler:
    """``cv2.resize(..., INTER_LANCZOS4)`` to N times the size."""

    name = "lanczos"

    def upscale(self, image: np.ndarray, factor: int) -> np.ndarray:
        _check_image(image)
        return lanczos_resize(image, image.shape[1] * factor, image.shape[0] * factor)


def tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of ``tile``-long cores covering ``0..length``; the last one is moved back to end at ``length``
    (so every core has the same size when ``length >= tile``)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile))
    starts.append(length - tile)
    return starts


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def upscale_tiled(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, scale: int, tile: int | None,
                  pad: int = TILE_PAD, batch: int = 1, multiple_of: int = 1) -> np.ndarray:
    """Run a scale-``scale`` network over ``image`` in overlapping tiles.

    run: ``[B, h, w, 3]`` float32 RGB in [0, 1] -> ``[B, h*scale, w*scale, 3]`` float32 (any range).
    image: ``[H, W, 3]`` uint8 RGB. tile: core side in input pixels (None or >= the frame: one piece).
    pad: context pixels around every core, taken from the frame or, beyond its borders, from its mirror image
        (so the untiled result, ``tile=None``, sees the same borders). batch: tiles per ``run`` call.
    multiple_of: the network's input sides must be multiples of this (pixel-unshuffle models). Such a network
        also gives the same output for a shifted input only when the shift is a multiple of it, so the frame is
        mirrored out to a multiple of it and tiles, context and offsets are all multiples of it.
    Returns ``[H*scale, W*scale, 3]`` uint8 (rounded, saturated).
    """
    height, width = image.shape[:2]
    align = max(1, multiple_of)
    pad = _round_up(pad, align)
    height_a, width_a = _round_up(height, align), _round_up(width, align)
    tile_h = height_a if tile is None else min(_round_up(tile, align), height_a)
    tile_w = width_a if tile is None else min(_round_up(tile, align), width_a)
    padded = np.pad(image.astype(np.float32) / 255.0,
                    ((pad, pad + height_a - height), (pad, pad + width_a - width), (0, 0)), mode="reflect")
    jobs = [(y, x) for y in tile_starts(height_a, tile_h) for x in tile_starts(width_a, tile_w)]
    in_h, in_w = tile_h + 2 * pad, tile_w + 2 * pad
    out = np.empty((height_a * scale, width_a * scale, 3), dtype=np.uint8)
    for first in range(0, len(jobs), batch):
        group = jobs[first:first + batch]
        result = run(np.stack([padded[y:y + in_h, x:x + in_w] for y, x in group]))
        for (y, x), upscaled in zip(group, result):
            core = upscaled[pad * scale:(pad + tile_h) * scale, pad * scale:(pad + tile_w) * scale]
            out[y * scale:(y + tile_h) * scale, x * scale:(x + tile_w) * scale] = np.clip(np.rint(core * 255.0), 0, 255)
    return np.ascontiguousarray(out[:height * scale, :width * scale])


class LearnedUpscaler:
    """A super-resolution network applied in tiles.

    model: ``[B, 3, h, w]`` float RGB in [0, 1] -> ``[B, 3, h*scale, w*scale]``. scale: the network's factor.
    device: where the model already is. tile: input tile side (None: automatic, see :func:`auto_tile`; 0: the
    whole frame in one piece). pad: context pixels around each tile. half_dtype: on CUDA, run under this autocast
    dtype (fp16 or bf16); if a batch comes out non-finite it is run again in fp32 and fp32 is kept from then on.
    multiple_of: input side divisor the network needs. On CUDA, running out of memory (the face model shares the
    GPU) halves the batch, then the tile, and carries on with the smaller size.
    """

    def __init__(self, model: torch.nn.Module, scale: int, *, name: str, device: torch.device,
                 tile: int | None = None, pad: int = TILE_PAD, half_dtype: torch.dtype | None = None,
                 multiple_of: int = 1) -> None:
        self.model = model.eval()
        self.scale = scale
        self.name = name
        self.device = device
        self.pad = pad
        self.multiple_of = multiple_of
        self.half_dtype = half_dtype if device.type == "cuda" else None
        features = max((m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)), default=64)
        if tile == 0:
            self.tile, self.batch = None, 1
        elif tile is not None:
            self.tile, self.batch = tile, 1 if device.type != "cuda" else None
        else:
            self.tile, self.batch = auto_tile(device, features, scale, self.half_dtype), None
        self._features = features

    def upscale(self, image: np.ndarray, factor: int) -> np.ndarray:
        _check_image(image)
        height, width = image.shape[:2]
        while True:
            batch = self.batch or auto_batch(self.device, self._features, self.scale,
                                             self.tile or max(height, width), self.pad, self.half_dtype)
            try:
                enlarged = upscale_tiled(self._run, image, self.scale, self.tile, self.pad, batch, self.multiple_of)
                break
            except torch.cuda.OutOfMemoryError:
                if not self._shrink_after_oom(batch):
                    raise
        if self.scale == factor:
            return enlarged
        size = (width * factor, height * factor)
        interpolation = cv2.INTER_AREA if self.scale > factor else cv2.INTER_LANCZOS4
        return cv2.resize(enlarged, size, interpolation=interpolation)

    def _shrink_after_oom(self, batch: int) -> bool:
        """Smaller work for the next try: half the batch, else half the tile; False when nothing is left to cut."""
        torch.cuda.empty_cache()
        if batch > 1:
            self.batch = batch // 2
        elif self.tile is None or self.tile > MIN_TILE:
            self.batch = 1
            self.tile = CPU_TILE if self.tile is None else max(MIN_TILE, self.tile // 2)
        else:
            return False
        log.warning("%s ran out of GPU memory; going on with %d tile(s) of %d px per pass", self.name, self.batch,
                    self.tile)
        return True

    def _run(self, patches: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(patches).permute(0, 3, 1, 2).to(self.device)
            if self.half_dtype is not None:
                with torch.autocast(device_type="cuda", dtype=self.half_dtype):
                    y = self.model(x).float()
                if bool(torch.isfinite(y).all()):
                    return y.permute(0, 2, 3, 1).cpu().numpy()
                log.warning("%s overflowed in %s; running it in fp32 from now on", self.name, self.half_dtype)
                self.half_dtype = None
            y = self.model(x.float()).float()
            return y.permute(0, 2, 3, 1).cpu().numpy()


def _bytes_per_input_pixel(features: int, scale: int, half_dtype: torch.dtype | None) -> int:
    # Rough peak activations: a few feature maps at the output resolution dominate (RRDBNet's upsampling convs).
    element = 2 if half_dtype is not None else 4
    return 6 * features * scale * scale * element


def auto_tile(device: torch.device, features: int, scale: int, half_dtype: torch.dtype | None) -> int:
    """Input tile side: fixed on CPU (:data:`CPU_TILE`), on CUDA the largest multiple of 32 whose activations take at
    most a quarter of the free memory (between :data:`MIN_TILE` and :data:`MAX_GPU_TILE`)."""
    if device.type != "cuda":
        return CPU_TILE
    free, _ = torch.cuda.mem_get_info(device)
    side = math.isqrt(int(free * 0.25 // _bytes_per_input_pixel(features, scale, half_dtype))) - 2 * TILE_PAD
    return int(max(MIN_TILE, min(MAX_GPU_TILE, side // 32 * 32)))


def auto_batch(device: torch.device, features: int, scale: int, tile: int, pad: int,
               half_dtype: torch.dtype | None) -> int:
    """Tiles per forward pass: 1 on CPU; on CUDA as many as half the free memory holds (at most 8)."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_tile = (tile + 2 * pad) ** 2 * _bytes_per_input_pixel(features, scale, half_dtype)
    return int(max(1, min(MAX_GPU_BATCH, free * 0.5 // per_tile)))
