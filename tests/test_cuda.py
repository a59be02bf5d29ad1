"""The GPU path against the CPU reference, per dtype. Skipped, with the reason, on a machine without CUDA.

Tolerances are of GPEN-BFR-256's raw output (range about [-1, 1]) against the CPU fp32 model, which equals the
official implementation within 1e-5 (tests/test_models.py). fp32 on CUDA is not bit-exact: cuDNN runs fp32
convolutions in TF32 by default on Ampere and later, and picks other algorithms than the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidgpen.models.gpen import FullGenerator
from vidgpen.models.restorer import GPENRestorer, fixed_batch_shapes, pick_dtype

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here: the GPU path (fp32/fp16/bf16 against the CPU) is not tested")

# dtype -> (max abs, mean abs) difference of the raw output from the CPU fp32 reference
TOLERANCES = {
    "fp32": (1e-2, 1e-3),   # TF32 convolutions (10-bit mantissa)
    "fp16": (5e-2, 5e-3),   # 10-bit mantissa; styles normalised so x * s stays in range
    "bf16": (1.5e-1, 2e-2),  # 7-bit mantissa, fp32's range
}
# dtype -> (max levels, fraction of pixels off by more than 1 level) of restored uint8 crops
UINT8_TOLERANCES = {"fp32": (2, 0.001), "fp16": (6, 0.02), "bf16": (16, 0.15)}


def dtype_available(name: str) -> bool:
    return name != "bf16" or torch.cuda.is_bf16_supported()


@pytest.fixture(scope="module")
def inputs(data_dir):
    return torch.from_numpy(np.load(data_dir / "GPEN-BFR-256_input_b2.npy"))


@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_raw_output_against_cpu_reference(model_256, inputs, data_dir, dtype):
    if not dtype_available(dtype):
        pytest.skip(f"this GPU has no {dtype}")
    reference = np.load(data_dir / "GPEN-BFR-256_output_b2.npy")
    gpu_model = FullGenerator(model_256.arch).eval()
    gpu_model.load_state_dict(model_256.state_dict())
    gpu_model = gpu_model.cuda().set_compute_dtype({"fp32": torch.float32, "fp16": torch.float16,
                                                    "bf16": torch.bfloat16}[dtype])
    out = gpu_model(inputs.cuda()).float().cpu().numpy()
    diff = np.abs(out - reference)
    max_allowed, mean_allowed = TOLERANCES[dtype]
    histogram = np.histogram(diff, bins=[0, 1e-4, 1e-3, 1e-2, 1e-1, np.inf])[0]
    assert np.isfinite(out).all(), f"{dtype}: non-finite outputs"
    assert diff.max() <= max_allowed and diff.mean() <= mean_allowed, (
        f"{dtype}: max {diff.max():.3g} (allowed {max_allowed}), mean {diff.mean():.3g} (allowed {mean_allowed}); "
        f"histogram of |diff| over [0, 1e-4, 1e-3, 1e-2, 1e-1, inf): {histogram.tolist()}")


@pytest.mark.parametrize("dtype", list(UINT8_TOLERANCES))
def test_restored_crops_against_cpu(model_256, data_dir, dtype):
    if not dtype_available(dtype):
        pytest.skip(f"this GPU has no {dtype}")
    face = np.load(data_dir / "GPEN-BFR-256_aligned_face_bgr_u8.npy")[:, :, ::-1]
    crops = np.stack([face, face[:, ::-1], np.roll(face, 9, axis=1)])
    expected = GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32").restore(crops)
    gpu_model = FullGenerator(model_256.arch).eval()
    gpu_model.load_state_dict(model_256.state_dict())
    restorer = GPENRestorer(gpu_model, "GPEN-BFR-256", device="cuda", dtype=dtype, batch_size=2)
    assert restorer.batch_shapes == fixed_batch_shapes(2)
    restored = restorer.restore(crops)  # batches of 2 + 1: both fixed shapes
    diff = np.abs(restored.astype(int) - expected)
    max_levels, max_fraction = UINT8_TOLERANCES[dtype]
    assert diff.max() <= max_levels and (diff > 1).mean() <= max_fraction, (
        f"{dtype}: max {diff.max()} levels, {(diff > 1).mean():.2%} pixels off by more than 1; "
        f"histogram {np.bincount(diff.ravel())[:20].tolist()}")
    # The pinned upload buffer is reused between batches and comes back page-locked.
    assert restorer._upload is not None and restorer._upload.is_pinned()


def test_auto_dtype_on_this_gpu():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert pick_dtype("auto", torch.device("cuda")) == expected
