"""``--upscale``: which factor, which background upscaler, and loading its checkpoint.

The output picture is N times the input; faces are detected, tracked and restored on the input-sized frame and
pasted at N times the resolution (:func:`vidgpen.faces.paste.scale_for_frame`), the rest of the picture comes from
a background upscaler (:mod:`vidgpen.models.upscaler`).

- :func:`pick_factor` is ``--upscale auto``: the smallest N in 1..4 that makes the median face (the longer side
  of its detector box) at least half the restorer's crop size, so the restored detail is not shrunk away, capped so
  the output stays within 3840x2160 (either orientation).
- :func:`build_upscaler` turns ``--bg-upscaler`` into an upscaler: ``lanczos``; a Real-ESRGAN name from the
  weights registry (``realesrgan-x2``, ``realesrgan-x4``, ``realesr-general-x4v3``), downloaded unless offline;
  or a checkpoint path. Unset: the first learned model present in the weights folder, else Lanczos with a notice.
- :func:`load_sr_model` reads a checkpoint with ``torch.load(weights_only=True)`` (spandrel's own loader unpickles
  with a restricted unpickler instead) and lets spandrel detect the architecture from the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from vidgpen.errors import OptionError, WeightsError

if TYPE_CHECKING:  # torch is imported only when an upscaler is built, so option checks stay light
    from vidgpen.models.upscaler import BackgroundUpscaler, LearnedUpscaler

FACTORS = (1, 2, 3, 4)
MAX_OUTPUT = (3840, 2160)   # --upscale auto keeps the output's long and short sides within these
# --bg-upscaler name -> weights registry name.
LEARNED_UPSCALERS = {
    "realesrgan-x2": "RealESRGAN-x2plus",
    "realesrgan-x4": "RealESRGAN-x4plus",
    "realesr-general-x4v3": "realesr-general-x4v3",
}
BG_UPSCALER_NAMES = ("lanczos", *LEARNED_UPSCALERS)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")


def parse_factor(value: int | str) -> int | str:
    """``--upscale`` value: 1..4 as int, or "auto"; :class:`OptionError` otherwise."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit() and int(text) in FACTORS:
        return int(text)
    raise OptionError(f"--upscale must be 1, 2, 3, 4 or auto, got {value!r}")


def is_checkpoint_path(name: str) -> bool:
    return Path(name).suffix.lower() in CHECKPOINT_SUFFIXES


def face_size(box: np.ndarray) -> float:
    """The size :func:`pick_factor` uses: the longer side of a detector box (x1, y1, x2, y2), in pixels."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64).reshape(4)
    return float(max(x2 - x1, y2 - y1))


def max_factor(width: int, height: int, limit: tuple[int, int] = MAX_OUTPUT) -> int:
    """The largest factor in 1..4 keeping ``width x height`` within ``limit`` in either orientation (at least 1)."""
    long_side, short_side = max(width, height), min(width, height)
    fitting = [n for n in FACTORS if n * long_side <= max(limit) and n * short_side <= min(limit)]
    return max(fitting, default=1)


def pick_factor(face_sizes: Sequence[float], width: int, height: int, model_size: int) -> int:
    """``--upscale auto``: smallest N in 1..4 with ``N * median(face_sizes) >= model_size / 2`` (4 when none is
    enough), then capped by :func:`max_factor`. No faces: 1."""
    if len(face_sizes) == 0:
        return 1
    median = float(np.median(face_sizes))
    wanted = next((n for n in FACTORS if n * median >= model_size / 2), FACTORS[-1])
    return min(wanted, max_factor(width, height))


def describe_auto(factor: int, face_sizes: Sequence[float], width: int, height: int, model_size: int) -> str:
    """The line a run prints for ``--upscale auto``."""
    if len(face_sizes) == 0:
        return "--upscale auto: no face found in the sampled frames; keeping the input size (factor 1)"
    median = float(np.median(face_sizes))
    wanted = next((n for n in FACTORS if n * median >= model_size / 2), FACTORS[-1])
    capped = f", capped from {wanted} to stay within {MAX_OUTPUT[0]}x{MAX_OUTPUT[1]}" if factor < wanted else ""
    return (f"--upscale auto picked {factor} ({width}x{height} -> {width * factor}x{height * factor}; median face "
            f"{median:.0f} px, half the {model_size} px crop is {model_size // 2} px{capped})")


# --------------------------------------------------------------------------------------------------- loading


def load_sr_model(path: str | Path):
    """A super-resolution checkpoint -> spandrel ``ImageModelDescriptor`` (on CPU, fp32, eval).

    Raises :class:`WeightsError` for a file that does not load with ``weights_only=True`` or whose keys spandrel
    does not recognise as a single-image super-resolution network.
    """
    import torch
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError, canonicalize_state_dict

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"background upscaler checkpoint {path} does not exist; give an existing .pth file")
    try:
        if path.suffix.lower() == ".safetensors":  # a format without pickles
            from safetensors.torch import load_file

            loaded = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files; all mean "not a checkpoint"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"{path} does not load as a checkpoint of tensors ({first_line[:160]})") from exc
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict; give a Real-ESRGAN .pth file")
    try:
        descriptor = ModelLoader().load_from_state_dict(canonicalize_state_dict(loaded))
    except UnsupportedModelError as exc:
        raise WeightsError(f"{path}: spandrel recognises no super-resolution architecture in its keys") from exc
    except (KeyError, RuntimeError, ValueError) as exc:
        raise WeightsError(f"{path}: its tensors do not fit the detected architecture ({exc})"[:300]) from exc
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.input_channels != 3 \
            or descriptor.output_channels != 3 or descriptor.scale < 1:
        raise WeightsError(f"{path} is not an RGB super-resolution model ({descriptor.architecture.name})")
    return descriptor.eval()


def describe_sr_model(descriptor) -> str:
    """E.g. "ESRGAN x4 (64nf, 23nb)"."""
    tags = f" ({', '.join(descriptor.tags)})" if descriptor.tags else ""
    return f"{descriptor.architecture.name} x{descriptor.scale}{tags}"


def learned_upscaler(path: str | Path, name: str, device, tile: int | None = None) -> LearnedUpscaler:
    """Load ``path`` and wrap it for tiled upscaling on ``device`` (fp16 autocast on CUDA when the model takes it,
    else bf16 where supported; fp32 on CPU)."""
    import torch

    from vidgpen.models.restorer import pick_device
    from vidgpen.models.upscaler import TILE_PAD, LearnedUpscaler

    device = pick_device(device)
    descriptor = load_sr_model(path)
    half = None
    if device.type == "cuda":
        if descriptor.supports_half:
            half = torch.float16
        elif descriptor.supports_bfloat16 and torch.cuda.is_bf16_supported():
            half = torch.bfloat16
    descriptor.to(device)
    multiple = descriptor.size_requirements.multiple_of
    # A pixel-unshuffle model (Real-ESRGAN x2plus) runs its body at 1/f of the input's resolution, so each body
    # pixel sees f times more of the input: the tiles need f times the context.
    shuffle = getattr(descriptor.model, "shuffle_factor", None) or 1
    return LearnedUpscaler(descriptor.model, descriptor.scale, name=name, device=device, tile=tile,
                           pad=TILE_PAD * shuffle, half_dtype=half, multiple_of=multiple)


def default_learned_name(factor: int | str, weights_dir) -> str | None:
    """The learned upscaler used when ``--bg-upscaler`` is not given: the first present in the weights folder,
    preferring the x2 model for ``--upscale 2`` (it runs the network at a quarter of the pixels) and x4 otherwise."""
    from vidgpen.weights import find_weights

    order = ["realesrgan-x4", "realesr-general-x4v3", "realesrgan-x2"]
    if factor == 2:
        order = ["realesrgan-x2", *order[:2]]
    for name in order:
        if find_weights(LEARNED_UPSCALERS[name], weights_dir) is not None:
            return name
    return None


def build_upscaler(choice: str | None, factor: int | str, *, weights_dir=None, offline: bool = False,
                   device="auto", tile: int | None = None,
                   notice: Callable[[str], None] | None = None) -> BackgroundUpscaler:
    """``--bg-upscaler`` -> a :class:`BackgroundUpscaler` (see the module docstring for the choices)."""
    from vidgpen.models.upscaler import LanczosUpscaler
    from vidgpen.weights import ensure_weights, weights_dir as resolve_weights_dir

    if choice is None:
        choice = default_learned_name(factor, weights_dir)
        if choice is None:
            if notice:
                unused = "; --tile does not apply to it" if tile is not None else ""
                notice(f"no Real-ESRGAN weights in {resolve_weights_dir(weights_dir)}; upscaling the background with "
                       f"Lanczos{unused} ('vidgpen weights download RealESRGAN-x4plus' gets the learned upscaler)")
            return LanczosUpscaler()
    if choice == "lanczos":
        return LanczosUpscaler()
    if choice in LEARNED_UPSCALERS:
        path = ensure_weights(LEARNED_UPSCALERS[choice], weights_dir, offline=offline)
        return learned_upscaler(path, choice, device, tile)
    return learned_upscaler(Path(choice).expanduser(), Path(choice).name, device, tile)
