"""Reading GPEN checkpoints: unwrap the container, recognise the architecture from the tensors, refuse the rest.

Accepted: a bare generator state_dict (official ``GPEN-*.pth``; ModelScope ``pytorch_model.pt`` and
``pytorch_model-2048.pt``), a training checkpoint holding ``g_ema``, and either with a DataParallel ``module.``
prefix. The architecture comes from the keys and shapes, never from the file name. A discriminator (``-D``)
file, a truncated or corrupt file, or a foreign one raises :class:`WeightsError` naming the file and what was
expected. Always ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from vidgpen.errors import WeightsError
from vidgpen.models.gpen import FullGenerator
from vidgpen.models.variants import TASKS, VARIANTS, GPENArchitecture, variant_for

_CONV_WEIGHT = re.compile(r"^generator\.convs\.(\d+)\.conv\.weight$")


def read_checkpoint(path: str | Path) -> "OrderedDict[str, torch.Tensor]":
    """Load a checkpoint file and return the generator's state_dict (unwrapped, float tensors)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path} (see 'vidgpen weights list' for where to get it)")
    if path.stat().st_size == 0:
        raise WeightsError(f"checkpoint {path} is empty (0 bytes); download it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise WeightsError(f"checkpoint {path} is truncated or corrupt ({_first_line(exc)}); download it again") from exc
    except Exception as exc:  # pickle.UnpicklingError and friends: not a plain tensor file
        raise WeightsError(
            f"{path} is not a GPEN checkpoint that can be loaded safely ({_first_line(exc)})") from exc
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj, path: str | Path = "<checkpoint>") -> "OrderedDict[str, torch.Tensor]":
    """Find the generator state_dict in a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a GPEN state_dict")
    if "g_ema" in obj and isinstance(obj["g_ema"], dict):
        obj = obj["g_ema"]  # training checkpoint from train_simple.py
    elif "params_ema" in obj:
        raise WeightsError(f"{path} is a Real-ESRGAN/RealESRNet super-resolution checkpoint, not a GPEN face model")
    tensors = OrderedDict((k, v) for k, v in obj.items() if isinstance(v, torch.Tensor))
    if not tensors:
        raise WeightsError(f"{path} contains no tensors; expected a GPEN generator state_dict")
    if all(k.startswith("module.") for k in tensors):
        tensors = OrderedDict((k[len("module."):], v) for k, v in tensors.items())
    if "generator.input.input" not in tensors:
        if any(k.startswith("final_conv.") for k in tensors) and "convs.0.0.weight" in tensors:
            raise WeightsError(
                f"{path} is a GPEN discriminator (-D) checkpoint; restoration needs the generator file, "
                "e.g. GPEN-BFR-512.pth instead of GPEN-BFR-512-D.pth")
        raise WeightsError(
            f"{path} is not a GPEN generator: it has no 'generator.input.input' tensor "
            f"(first keys: {', '.join(list(tensors)[:3])})")
    return OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in tensors.items())


def detect_architecture(state_dict, path: str | Path = "<checkpoint>") -> GPENArchitecture:
    """Read size, channel multiplier and narrow from the tensors, and check every key and shape."""
    try:
        narrow = state_dict["generator.input.input"].shape[1] / 512
        n_convs = 1 + max(int(m.group(1)) for k in state_dict if (m := _CONV_WEIGHT.match(k)))
        size = 2 ** (n_convs // 2 + 2)
        encoder_width = state_dict["ecd0.0.0.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as exc:
        raise WeightsError(f"{path} is not a complete GPEN generator (missing {exc})") from exc
    candidates = [GPENArchitecture(size, cm, narrow) for cm in (1, 2, 4)]
    matching = [a for a in candidates if a.channels(size) == encoder_width] if size <= 2048 else []
    if not matching:
        raise WeightsError(f"{path}: unknown GPEN shape (size {size}, narrow {narrow}, encoder width {encoder_width})")
    arch = matching[0]
    _check_keys_and_shapes(state_dict, arch, path)
    return arch


def _check_keys_and_shapes(state_dict, arch: GPENArchitecture, path) -> None:
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in FullGenerator(arch).state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} != {expected[k]}"
             for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                problems.append(f"{len(items)} {label} (e.g. {items[0]})")
        raise WeightsError(
            f"{path} does not match the GPEN-{arch.size} generator: {'; '.join(problems)}; "
            "the file is damaged or from another model")


def resolve_variant(arch: GPENArchitecture, task_or_variant: str | None, path) -> str:
    """The official variant name for this architecture and the requested task (or variant name)."""
    if task_or_variant is None:
        task = "bfr"
    elif task_or_variant in VARIANTS:
        wanted = VARIANTS[task_or_variant]
        if wanted.architecture != arch:
            raise WeightsError(
                f"{path} holds a GPEN-{arch.size} generator (channel multiplier {arch.channel_multiplier}, "
                f"narrow {arch.narrow:g}), not {task_or_variant}")
        return task_or_variant
    elif task_or_variant in TASKS:
        task = task_or_variant
    else:
        raise WeightsError(f"unknown GPEN model or task {task_or_variant!r}; use one of {', '.join(VARIANTS)}")
    variant = variant_for(arch, task)
    if variant is None:
        raise WeightsError(f"{path} holds a GPEN-{arch.size} generator, which has no official '{task}' variant")
    return variant.name


def build_generator(state_dict, arch: GPENArchitecture) -> FullGenerator:
    """A FullGenerator holding exactly these tensors (strict load, no random init)."""
    with torch.device("meta"):
        model = FullGenerator(arch)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def inspect_checkpoint(path: str | Path, task: str | None = None) -> str:
    """The official variant a checkpoint file loads as (raises WeightsError otherwise)."""
    state_dict = read_checkpoint(path)
    return resolve_variant(detect_architecture(state_dict, path), task, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
