"""The official GPEN generator variants, as a literal table.

The architecture of a checkpoint is read from its tensors (see ``checkpoint.py``); the *task* (face restoration,
colorization, inpainting, segmentation-to-face) cannot be, because BFR-1024, Colorization-1024 and
Inpainting-1024 share one architecture, as do BFR-512 and Seg2face-512. The task therefore comes from the user
(``--model``) and defaults to blind face restoration.
"""

from __future__ import annotations

from dataclasses import dataclass

STYLE_DIM = 512
N_MLP = 8
BLUR_KERNEL = (1, 3, 3, 1)


@dataclass(frozen=True)
class GPENArchitecture:
    """What fixes the tensor shapes of a FullGenerator."""

    size: int
    channel_multiplier: int
    narrow: float

    def channels(self, resolution: int) -> int:
        """Feature channels at a resolution (the official channel table)."""
        base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16, 2048: 8}[resolution]
        multiplier = 1 if resolution <= 32 else self.channel_multiplier
        return int(base * multiplier * self.narrow)

    @property
    def log_size(self) -> int:
        return self.size.bit_length() - 1


@dataclass(frozen=True)
class GPENVariant:
    """An official checkpoint family: architecture plus how its inputs are prepared."""

    name: str
    task: str                  # "bfr" | "colorization" | "inpainting" | "seg2face"
    architecture: GPENArchitecture
    input_normalized: bool     # True: input in [-1, 1]; False (Seg2face): input in [0, 1]
    crop_template: str         # alignment template the variant was trained with

    @property
    def size(self) -> int:
        return self.architecture.size


VARIANTS: dict[str, GPENVariant] = {
    "GPEN-BFR-256": GPENVariant("GPEN-BFR-256", "bfr", GPENArchitecture(256, 1, 0.5), True, "gpen"),
    "GPEN-BFR-512": GPENVariant("GPEN-BFR-512", "bfr", GPENArchitecture(512, 2, 1.0), True, "gpen"),
    "GPEN-BFR-1024": GPENVariant("GPEN-BFR-1024", "bfr", GPENArchitecture(1024, 2, 1.0), True, "gpen"),
    "GPEN-BFR-2048": GPENVariant("GPEN-BFR-2048", "bfr", GPENArchitecture(2048, 2, 1.0), True, "gpen"),
    "GPEN-Colorization-1024": GPENVariant(
        "GPEN-Colorization-1024", "colorization", GPENArchitecture(1024, 2, 1.0), True, "gpen"),
    "GPEN-Inpainting-1024": GPENVariant(
        "GPEN-Inpainting-1024", "inpainting", GPENArchitecture(1024, 2, 1.0), True, "gpen"),
    "GPEN-Seg2face-512": GPENVariant("GPEN-Seg2face-512", "seg2face", GPENArchitecture(512, 2, 1.0), False, "gpen"),
}

TASKS = ("bfr", "colorization", "inpainting", "seg2face")


def variant_for(architecture: GPENArchitecture, task: str = "bfr") -> GPENVariant | None:
    """The official variant with this architecture and task, or None if there is none."""
    for variant in VARIANTS.values():
        if variant.architecture == architecture and variant.task == task:
            return variant
    return None
