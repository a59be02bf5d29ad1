"""Blend masks for pasting restored faces back: a face parser when its weights are present, else a feathered ellipse.

A masker turns restored crops (N, S, S, 3) uint8 RGB into masks (N, S, S) float32 in [0, 1], 1 = take the
restored face. The mask depends only on the restored crop (parser) or only on S (feathered fallback), never on
the frame, so it can be computed right after the restorer.

Parser masks follow GPEN's face_enhancement.py exactly (reference README section 6): the parser sees the restored
crop resized to 512, its argmax classes are mapped to face / not face (background, hat and cloth are not face),
then :func:`postprocess_parse_mask` zeroes a 26 px border, blurs twice with a 101x101 Gaussian of sigma 4, casts to
float32 and resizes to the crop size. The parser networks are facexlib's ParseNet (the one GPEN uses) and BiSeNet
(about 20x faster on CPU); their state dicts are loaded here with ``weights_only=True`` so facexlib never tries to
download anything.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol

import cv2
import numpy as np

from vidgpen.errors import OptionError, WeightsError

MaskSource = Literal["auto", "parsenet", "bisenet", "feathered"]
MASK_SOURCES: tuple[str, ...] = ("auto", "parsenet", "bisenet", "feathered")

PARSER_INPUT_SIZE = 512
# GPEN's mask_postprocess, at the parser's 512 resolution.
MASK_BORDER_PX = 26
MASK_BLUR_KSIZE = 101
MASK_BLUR_SIGMA = 4.0


class FaceMasker(Protocol):
    """Anything that maps restored crops (N, S, S, 3) uint8 RGB to masks (N, S, S) float32 in [0, 1]."""

    name: str

    def __call__(self, restored_crops: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ParserSpec:
    """How to build, feed and read one facexlib face parser.

    file_names: accepted checkpoint names in the weights folder, preferred first.
    non_face_classes: argmax classes that are not part of the face (background, hat, cloth in its label order).
    mean, std: per-channel RGB input normalisation of x / 255.
    """

    name: str
    file_names: tuple[str, ...]
    non_face_classes: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


PARSERS: dict[str, ParserSpec] = {
    # CelebAMask-HQ order as in PSFRGAN/GPEN: 0 background, ..., 14 hat, ..., 18 cloth. GPEN's own file name is
    # accepted too; it is the same network.
    "parsenet": ParserSpec(
        name="parsenet",
        file_names=("parsing_parsenet.pth", "ParseNet-latest.pth"),
        non_face_classes=(0, 14, 18),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
    # face-parsing.PyTorch order: 0 background, ..., 16 cloth, 17 hair, 18 hat; trained on ImageNet normalisation.
    "bisenet": ParserSpec(
        name="bisenet",
        file_names=("parsing_bisenet.pth",),
        non_face_classes=(0, 16, 18),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    ),
}


def postprocess_parse_mask(face_mask: np.ndarray, size: int) -> np.ndarray:
    """GPEN's mask post-processing.

    face_mask: (512, 512) float in [0, 1] (1 = face), at the parser's resolution.
    Returns (size, size) float32: 26 px border zeroed, two 101x101 sigma-4 Gaussian blurs (in float64, as the
    official mask is), cast to float32, bilinear resize to ``size``.
    """
    mask = np.array(face_mask, dtype=np.float64)  # a copy: the border is zeroed in place
    border = MASK_BORDER_PX
    mask[:border, :] = 0.0
    mask[-border:, :] = 0.0
    mask[:, :border] = 0.0
    mask[:, -border:] = 0.0
    kernel = (MASK_BLUR_KSIZE, MASK_BLUR_KSIZE)
    mask = cv2.GaussianBlur(mask, kernel, MASK_BLUR_SIGMA)
    mask = cv2.GaussianBlur(mask, kernel, MASK_BLUR_SIGMA)
    mask = mask.astype(np.float32)
    if mask.shape != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    return mask


def face_classes_to_mask(labels: np.ndarray, non_face_classes: tuple[int, ...]) -> np.ndarray:
    """Per-pixel parser classes (..., H, W) int -> float64 mask, 1.0 where the class is part of the face."""
    return (~np.isin(labels, non_face_classes)).astype(np.float64)


class ParsingMasker:
    """Masks from a face parser network (facexlib ParseNet or BiSeNet), post-processed as GPEN does.

    model: the parser module (weights already loaded), returning a tuple whose first element is the class
        logits (N, 19, 512, 512) for an input (N, 3, 512, 512) float32.
    parser: "parsenet" or "bisenet" (decides the input normalisation and the class meaning).
    """

    def __init__(self, model: Callable, parser: str, device: str = "cpu") -> None:
        if parser not in PARSERS:
            raise ValueError(f"unknown parser {parser!r}; expected one of {tuple(PARSERS)}")
        self.spec = PARSERS[parser]
        self.name = parser
        self.model = model
        self.device = device

    def __call__(self, restored_crops: np.ndarray) -> np.ndarray:
        """restored_crops: (N, S, S, 3) uint8 RGB. Returns (N, S, S) float32 in [0, 1]."""
        import torch

        crops = _check_crops(restored_crops)
        size = crops.shape[1]
        batch = np.stack([_resize_square(crop, PARSER_INPUT_SIZE) for crop in crops])
        # Normalise in float64 then cast, as GPEN's FaceParse.img2tensor does.
        mean = np.asarray(self.spec.mean, dtype=np.float64)
        std = np.asarray(self.spec.std, dtype=np.float64)
        normalised = ((batch / 255.0 - mean) / std).astype(np.float32)
        inputs = torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy()).to(self.device)
        with torch.inference_mode():
            logits = self.model(inputs)[0]
            labels = logits.argmax(dim=1).cpu().numpy()
        face = face_classes_to_mask(labels, self.spec.non_face_classes)
        return np.stack([postprocess_parse_mask(one, size) for one in face])


class FeatheredMasker:
    """Fallback without parser weights: a fixed face-shaped feathered ellipse per crop size (see :func:`feathered_mask`)."""

    name = "feathered"

    def __call__(self, restored_crops: np.ndarray) -> np.ndarray:
        """restored_crops: (N, S, S, 3) uint8. Returns a read-only (N, S, S) float32 view of the cached mask."""
        crops = _check_crops(restored_crops)
        return np.broadcast_to(feathered_mask(crops.shape[1]), crops.shape[:3])


# The ellipses in crop-size units. The GPEN template puts the eyes at y ~0.47, the mouth at ~0.72 and the face in
# the central 2/3 of the crop: the inner ellipse (mask 1) covers brows to chin and cheek to cheek, the outer one
# (mask 0) stays inside the crop so the warped crop square never shows an edge.
FEATHER_CENTER = (0.5, 0.52)
FEATHER_INNER_AXES = (0.30, 0.36)
FEATHER_OUTER_AXES = (0.41, 0.43)


@functools.lru_cache(maxsize=8)
def feathered_mask(size: int) -> np.ndarray:
    """A face-shaped soft mask for a ``size`` crop in the GPEN template: (size, size) float32 in [0, 1], read-only.

    1 inside the inner ellipse, 0 outside the outer one, smoothstep along each ray from the centre in between.
    Deterministic and cached per size.
    """
    if size <= 0:
        raise ValueError(f"mask size must be positive, got {size}")
    centers = (np.arange(size, dtype=np.float64) + 0.5) / size  # pixel centres in crop units
    dx = centers[None, :] - FEATHER_CENTER[0]
    dy = centers[:, None] - FEATHER_CENTER[1]
    inner_radius = np.hypot(dx / FEATHER_INNER_AXES[0], dy / FEATHER_INNER_AXES[1])
    outer_radius = np.hypot(dx / FEATHER_OUTER_AXES[0], dy / FEATHER_OUTER_AXES[1])
    # On the ray through a pixel at distance d: the ellipses cross it at d / inner_radius and d / outer_radius, so
    # the fraction of the way from the outer to the inner crossing is (1/r_out - 1) / (1/r_out - 1/r_in).
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_outer = 1.0 / outer_radius
        inv_inner = 1.0 / inner_radius
        t = (inv_outer - 1.0) / (inv_outer - inv_inner)
    t = np.where(inner_radius <= 1.0, 1.0, np.where(outer_radius >= 1.0, 0.0, t))
    t = np.clip(t, 0.0, 1.0)
    mask = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    mask.setflags(write=False)
    return mask


def find_parser_weights(parser: str, weights_dir: str | Path | None) -> Path | None:
    """The parser's checkpoint file in ``weights_dir`` (default: vidgpen's weights folder), or None."""
    from vidgpen.weights import weights_dir as resolve_weights_dir

    folder = resolve_weights_dir(weights_dir)
    for file_name in PARSERS[parser].file_names:
        path = folder / file_name
        if path.is_file():
            return path
    return None


def build_parser_model(parser: str):
    """facexlib's parser network with random weights (no download). Returns a torch.nn.Module in eval mode."""
    if parser == "parsenet":
        from facexlib.parsing.parsenet import ParseNet

        model = ParseNet(in_size=PARSER_INPUT_SIZE, out_size=PARSER_INPUT_SIZE, parsing_ch=19)
    elif parser == "bisenet":
        from facexlib.parsing.bisenet import BiSeNet

        model = BiSeNet(num_class=19)
    else:
        raise ValueError(f"unknown parser {parser!r}; expected one of {tuple(PARSERS)}")
    return model.eval()


def load_parser_model(parser: str, checkpoint: str | Path, device: str = "cpu"):
    """Build the parser and strictly load its state dict from ``checkpoint`` (weights_only=True).

    Raises WeightsError when the file cannot be read or does not fit the network.
    """
    import pickle

    import torch

    checkpoint = Path(checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise WeightsError(
            f"cannot read face parser weights {checkpoint} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "delete the file and download it again"
        ) from exc
    if isinstance(state, dict):
        for wrapper_key in ("params", "state_dict"):
            if wrapper_key in state and isinstance(state[wrapper_key], dict):
                state = state[wrapper_key]
                break
    model = build_parser_model(parser)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise WeightsError(
            f"{checkpoint} is not a facexlib {parser} checkpoint ({str(exc).splitlines()[0]}); "
            f"replace it with facexlib's {PARSERS[parser].file_names[0]} or remove it to use the feathered mask"
        ) from exc
    return model.to(device).eval()


def build_masker(source: MaskSource = "auto", weights_dir: str | Path | None = None, device: str = "cpu") -> FaceMasker:
    """Choose and build the masker.

    source: "parsenet" (GPEN's choice) or "bisenet" (faster) need their weights in ``weights_dir`` (WeightsError
        otherwise); "feathered" needs nothing; "auto" takes ParseNet, then BiSeNet, whichever weights are present,
        else the feathered mask. The returned masker's ``name`` says which one was chosen.
    """
    if source not in MASK_SOURCES:
        raise OptionError(f"unknown mask source {source!r}; choose one of {', '.join(MASK_SOURCES)}")
    if source == "feathered":
        return FeatheredMasker()
    candidates = ("parsenet", "bisenet") if source == "auto" else (source,)
    for parser in candidates:
        checkpoint = find_parser_weights(parser, weights_dir)
        if checkpoint is not None:
            return ParsingMasker(load_parser_model(parser, checkpoint, device), parser, device)
    if source == "auto":
        return FeatheredMasker()
    raise _missing_parser_weights(source, weights_dir)


def check_masker_weights(source: MaskSource, weights_dir: str | Path | None = None) -> None:
    """Raise the error :func:`build_masker` would, without loading anything: an unknown source, or an explicitly
    requested parser whose weights are not in the weights folder."""
    if source not in MASK_SOURCES:
        raise OptionError(f"unknown mask source {source!r}; choose one of {', '.join(MASK_SOURCES)}")
    if source in PARSERS and find_parser_weights(source, weights_dir) is None:
        raise _missing_parser_weights(source, weights_dir)


def _missing_parser_weights(parser: str, weights_dir: str | Path | None) -> WeightsError:
    from vidgpen.weights import weights_dir as resolve_weights_dir

    names = " or ".join(PARSERS[parser].file_names)
    registry_name = {"parsenet": "ParseNet", "bisenet": "BiSeNet"}[parser]
    return WeightsError(f"face parser weights {names} not found in {resolve_weights_dir(weights_dir)}; run "
                        f"'vidgpen weights download {registry_name}' or use --mask feathered")


def _check_crops(restored_crops: np.ndarray) -> np.ndarray:
    crops = np.asarray(restored_crops)
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2] or crops.shape[3] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"restored crops must be (N, S, S, 3) uint8, got {crops.shape} {crops.dtype}")
    return crops


def _resize_square(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
