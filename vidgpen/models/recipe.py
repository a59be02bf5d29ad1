"""The deterministic GPEN weight recipe of the reference data (no real checkpoint can be downloaded here).

Given a state_dict manifest (ordered keys and shapes), it rebuilds the exact weights the official reference
outputs were computed with: FIR kernels take their official value, every other tensor is
``randn(shape, generator=manual_seed(crc32(key))) * factor + offset`` in float32. Tests and benchmarks use it;
it does no I/O (the caller reads the manifest JSON).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

import torch

from vidgpen.models.gpen import fir_kernel

# kind: (offset, factor)
RECIPE_SCALES = {
    "noise_strength": (0.5, 0.1),
    "const_input": (0.0, 1.0),
    "mapping_weight": (0.0, 100.0),
    "mapping_bias": (0.0, 10.0),
    "modulation_weight": (0.0, 1.0),
    "modulation_bias": (1.0, 0.1),
    "torgb_weight": (0.0, 0.15),
    "torgb_bias": (0.0, 0.02),
    "conv_or_linear_weight": (0.0, 1.0),
    "bias": (0.0, 0.1),
}


def recipe_kind(key: str) -> str:
    """Classify a state_dict key by the recipe's rules (first match wins)."""
    if key.endswith(".kernel"):
        return "fir_kernel_buffer"
    if key.endswith("noise.weight"):
        return "noise_strength"
    if key.endswith("input.input"):
        return "const_input"
    if key.startswith("generator.style.") and key.endswith(".weight"):
        return "mapping_weight"
    if key.startswith("generator.style.") and key.endswith(".bias"):
        return "mapping_bias"
    if key.endswith("modulation.weight"):
        return "modulation_weight"
    if key.endswith("modulation.bias"):
        return "modulation_bias"
    is_to_rgb = ".to_rgb" in key or key.startswith("generator.to_rgb")
    if is_to_rgb and key.endswith("conv.weight"):
        return "torgb_weight"
    if is_to_rgb and key.endswith(".bias"):
        return "torgb_bias"
    if key.endswith(".weight"):
        return "conv_or_linear_weight"
    if key.endswith(".bias"):
        return "bias"
    raise ValueError(f"no recipe rule for key {key!r}")


def recipe_tensor(key: str, shape) -> torch.Tensor:
    kind = recipe_kind(key)
    if kind == "fir_kernel_buffer":
        # the blurs after upsampling convs and on the ToRGB skips carry gain 4; the encoder's do not
        upsampling = key.startswith("generator.convs.") or key.startswith("generator.to_rgbs.")
        return fir_kernel(gain=4.0 if upsampling else 1.0)
    offset, factor = RECIPE_SCALES[kind]
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    z = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    return z * factor + offset


def recipe_state_dict(manifest: dict) -> "OrderedDict[str, torch.Tensor]":
    """The recipe state_dict for a generator manifest (``manifest["entries"]``: ordered ``key``/``shape``)."""
    return OrderedDict((e["key"], recipe_tensor(e["key"], e["shape"])) for e in manifest["entries"])
