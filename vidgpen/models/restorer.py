"""The batched GPEN restorer: aligned uint8 crops in, restored uint8 crops out.

Pre/post-processing reproduce the official FaceGAN (face_gan.py) exactly, in RGB: ``x / 255``, ``(x - 0.5) / 0.5``
(skipped for Seg2face), the model, ``y * 0.5 + 0.5``, clip to [0, 1], ``* 255`` and truncation to uint8.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from vidgpen.errors import OptionError
from vidgpen.models.checkpoint import build_generator, detect_architecture, read_checkpoint, resolve_variant
from vidgpen.models.gpen import FullGenerator
from vidgpen.models.variants import VARIANTS, GPENVariant

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto": CUDA when present, else CPU. An explicit "cuda" without a GPU is a user error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise OptionError(f"unsupported device {device}; use auto, cpu or cuda")
    return device


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 convs pay off."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto": bf16 on CUDA GPUs that have it (else fp16), bf16 on a CPU with native bf16, else fp32."""
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    elif dtype is None or dtype == "auto":
        if device.type == "cuda":
            # bf16 has fp32's range (no overflow to guard against); fp16 on GPUs without it (before Ampere).
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    elif dtype in DTYPES:
        chosen = DTYPES[dtype]
    else:
        raise OptionError(f"unknown dtype {dtype!r}; use auto, fp32, bf16 or fp16")
    if chosen == torch.float16 and device.type == "cpu":
        if cpu_has_fast_bf16():
            raise OptionError("fp16 is for CUDA; on this CPU use --dtype bf16 (native here, about 2x faster than "
                              "fp32) or fp32 (exact), or leave --dtype auto")
        raise OptionError("fp16 is for CUDA; on this CPU use --dtype fp32 (or leave --dtype auto): it has no "
                          "native bf16, so bf16 would be emulated and about 20x slower")
    return chosen


def slow_dtype_warning(dtype: str | torch.dtype | None, device: torch.device) -> str | None:
    """The warning for an explicit bf16 on a CPU that only emulates it (about 20x slower than fp32), else None."""
    if device.type == "cpu" and dtype in ("bf16", torch.bfloat16) and not cpu_has_fast_bf16():
        return ("--dtype bf16 on this CPU is emulated (no AVX512-BF16/AMX) and about 20x slower than fp32; "
                "use --dtype fp32, or leave --dtype auto")
    return None


def retain_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse instead of unmapping them (Linux only; process-wide).

    Every large CPU tensor is otherwise a fresh mmap whose pages fault in on first touch: for GPEN-512 that is
    ~25 ms per 64 MB activation, more than the arithmetic of the elementwise op that fills it. Peak RSS is
    unchanged; freed memory is simply reused. Returns whether the setting took effect.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_max, m_arena_max = -1, -2, -4, -8
        int_max = 2 ** 31 - 1  # mallopt takes a C int: larger values would wrap and turn trimming fully on
        # One arena: the pipeline runs the model in a worker thread, whose own arena would not keep big blocks.
        return (bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, int_max))
                and bool(libc.mallopt(m_top_pad, 256 << 20)) and bool(libc.mallopt(m_arena_max, 1)))
    except (OSError, AttributeError):  # not glibc
        return False


def tune_process(device: str | torch.device) -> None:
    """Process-wide settings that make a long restore run fast; the CLI calls this, the library never does.

    CUDA: cuDNN autotuning (``cudnn.benchmark``; the restorer feeds a fixed few batch shapes, so it tunes once).
    CPU (Linux): glibc keeps freed memory for reuse (:func:`retain_freed_memory`). The CUDA allocator's settings
    must be in place before CUDA starts, so the CLI sets ``PYTORCH_CUDA_ALLOC_CONF`` itself, before this.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        retain_freed_memory()


def crop_batch(crops, size: int) -> tuple[np.ndarray, bool]:
    """What a restorer's ``restore`` takes: ``[N, S, S, 3]`` uint8 crops, or one ``[S, S, 3]`` crop ->
    ``([N, S, S, 3] array, whether one crop was given)``; ValueError for any other shape or dtype."""
    crops = np.asarray(crops)
    single = crops.ndim == 3
    if single:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops [N, {size}, {size}, 3], got {crops.dtype} {crops.shape}")
    return crops, single


class GPENRestorer:
    """Restores aligned face crops with one GPEN model.

    Attributes: ``variant`` (official name), ``size`` (crop side S), ``model`` (the :class:`FullGenerator`:
    ``[N, 3, S, S]`` float RGB in [-1, 1] in, raw ``[N, 3, S, S]`` out), ``device``, ``dtype``, ``batch_size``,
    ``batch_shapes`` (the batch sizes forward passes run at: ragged tails are padded up to the next one, so
    torch.compile and cuDNN see a fixed few shapes; None runs every tail at its own size).
    With ``compile`` the model is compiled and run once per batch shape here, at load, not on the first frames.
    The object changes no process-wide setting (see :func:`tune_process`).
    """

    def __init__(self, model: FullGenerator, variant: str, *, device=None, dtype=None, batch_size: int | None = None,
                 compile: bool = False):
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.variant = variant
        self.spec: GPENVariant = VARIANTS[variant]
        self.size = model.size
        self.model = model.to(self.device).eval().set_compute_dtype(self.dtype)
        self.batch_size = batch_size or default_batch_size(self.device, self.size)
        self.batch_shapes = fixed_batch_shapes(self.batch_size) if (compile or self.device.type == "cuda") else None
        self._upload: torch.Tensor | None = None  # pinned host buffer for CUDA uploads, reused
        self._forward = self.model
        if compile:
            self._forward = _compiled(self.model)
            self.warm_up()

    def warm_up(self) -> None:
        """Run one forward pass per batch shape (compiles and autotunes now, not on the first frames)."""
        for batch in self.batch_shapes or (self.batch_size,):
            self.restore_batch(np.zeros((batch, self.size, self.size, 3), dtype=np.uint8))

    def restore(self, crops: np.ndarray) -> np.ndarray:
        """crops: ``[N, S, S, 3]`` uint8 RGB aligned faces -> ``[N, S, S, 3]`` uint8 RGB restored faces."""
        crops, single = crop_batch(crops, self.size)
        out = np.empty_like(crops)
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start:start + self.batch_size]
            out[start:start + len(chunk)] = self.restore_batch(chunk)
        return out[0] if single else out

    def restore_batch(self, crops: np.ndarray) -> np.ndarray:
        """One forward pass over ``[n, S, S, 3]`` uint8 RGB crops (no chunking; padded up to a batch shape).

        Faces do not interact in GPEN (styles, convolutions and demodulation are per sample), so padding with
        blank faces changes nothing but the shape."""
        count = len(crops)
        padded = next((b for b in self.batch_shapes or () if b >= count), count)
        if padded > count:
            crops = np.concatenate([crops, np.zeros((padded - count, *crops.shape[1:]), dtype=crops.dtype)])
        with torch.inference_mode():
            pixels = self._to_device(np.ascontiguousarray(crops))
            x = self.preprocess(pixels)
            y = self._forward(x)
            return self.postprocess(y).cpu().numpy()[:count]

    def _to_device(self, crops: np.ndarray) -> torch.Tensor:
        """Crops as a tensor on the model's device; CUDA uploads go through a reused pinned buffer, without
        blocking the host (the stream orders the copy before the forward pass that reads it)."""
        pixels = torch.from_numpy(crops)
        if self.device.type != "cuda":
            return pixels
        if self._upload is None or self._upload.numel() < pixels.numel():
            self._upload = torch.empty(pixels.numel(), dtype=torch.uint8).pin_memory()
        staged = self._upload[:pixels.numel()].view(pixels.shape)
        staged.copy_(pixels)
        # The previous batch's result was copied back (a sync) before this call, so the buffer is free again.
        return staged.to(self.device, non_blocking=True)

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[N, S, S, 3]`` uint8 -> ``[N, 3, S, S]`` float32 (a channels_last view), as FaceGAN.img2tensor."""
        x = pixels / 255.0
        if self.spec.input_normalized:
            x = (x - 0.5) / 0.5
        return x.permute(0, 3, 1, 2)

    def postprocess(self, y: torch.Tensor) -> torch.Tensor:
        """Raw ``[N, 3, S, S]`` output -> ``[N, S, S, 3]`` uint8, truncating as FaceGAN.tensor2img."""
        y = y.float()
        if self.spec.input_normalized:
            y = y * 0.5 + 0.5
        return (y.clamp(0, 1) * 255).permute(0, 2, 3, 1).to(torch.uint8)


def default_batch_size(device: torch.device, size: int) -> int:
    """Faces per forward pass: enough to fill the device, small enough for its memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        per_face = {256: 0.15, 512: 0.6, 1024: 2.4, 2048: 9.6}.get(size, 2.4) * 2 ** 30  # rough activation bytes
        return int(max(1, min(16, free * 0.5 // per_face)))
    # Measured on 2 AVX-512 cores: 4 faces per pass cut GPEN-512 from 1.90 to 1.84 s/face in fp32 and from 0.91 to
    # 0.82 s/face in bf16 (a 720p run: 61 -> 56 s, peak RSS 2.3 -> 3.4 GB). From 1024 up (4x the activations) one
    # face per pass keeps memory in bounds.
    return 4 if size <= 512 else 1


def fixed_batch_shapes(batch_size: int) -> tuple[int, ...]:
    """The batch sizes a restorer runs at: 1 (single faces, photos) and the full batch; tails pad up to the full
    batch. Two shapes: torch.compile compiles twice, cuDNN tunes twice, and a face is never run 8x padded."""
    return tuple(sorted({1, int(batch_size)}))


def _compiled(model: FullGenerator):
    """The model's forward through torch.compile; if compiling fails (no C++ toolchain, unsupported op), warn
    once and run eagerly from then on, so a missing compiler never stops a restore."""
    compiled = torch.compile(model, dynamic=False)
    state = {"eager": False}

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not state["eager"]:
            try:
                return compiled(x)
            except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to the same eager model
                log.warning("torch.compile failed (%s); running without it", str(exc).splitlines()[0][:200])
                state["eager"] = True
        return model(x)

    return forward


def load_restorer(path: str | Path, device=None, dtype=None, *, model: str | None = None,
                  batch_size: int | None = None, compile: bool = False) -> GPENRestorer:
    """Load any official GPEN checkpoint into a :class:`GPENRestorer`.

    ``model`` names the variant (or task: bfr, colorization, inpainting, seg2face) where the tensors cannot tell
    it (BFR-1024/Colorization-1024/Inpainting-1024 and BFR-512/Seg2face-512 share architectures); default: BFR.
    ``device``: auto/cpu/cuda; ``dtype``: auto/fp32/bf16/fp16.
    """
    state_dict = read_checkpoint(path)
    arch = detect_architecture(state_dict, path)
    variant = resolve_variant(arch, model, path)
    return GPENRestorer(build_generator(state_dict, arch), variant, device=device, dtype=dtype,
                        batch_size=batch_size, compile=compile)
