"""Reduced-precision safety and the restorer's batch shapes, checked on the CPU (tests/test_cuda.py has the GPU)."""

from __future__ import annotations

import numpy as np
import torch

from vidgpen.models import restorer as restorer_module
from vidgpen.models.gpen import StyledConv, _PreparedStyledConv
from vidgpen.models.restorer import GPENRestorer, fixed_batch_shapes, pick_dtype


def test_fp16_styled_conv_does_not_overflow_with_large_styles():
    torch.manual_seed(0)
    layer = StyledConv(32, 32)
    with torch.no_grad():
        layer.conv.modulation.bias.fill_(400.0)  # styles ~400, as trained GPEN layers reach
    x = (torch.randn(2, 32, 16, 16) * 300).contiguous(memory_format=torch.channels_last)
    latent = torch.randn(2, 512)
    feature = torch.randn(2, 32, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # as FullGenerator.forward runs it
        reference = _PreparedStyledConv(layer, torch.float32, gain=1.0)(x, latent, feature)
        prepared = _PreparedStyledConv(layer, torch.float16, gain=1.0)
        half = prepared(x.half(), latent, feature.half()).float()
        styles = prepared.conv.styles(latent)
    # Without the guard the modulated activation itself is out of fp16's range:
    assert not torch.isfinite(x.half() * styles.half()[:, :, None, None]).all()
    assert torch.isfinite(half).all()
    relative = (half - reference).abs().max() / reference.abs().max()
    assert relative < 2e-3, float(relative)


def test_style_normalisation_keeps_fp32_exact(model_256, data_dir):
    # The official reference at 1e-5 is tests/test_models.py; here: the guard is active in that very path.
    x = torch.from_numpy(np.load(data_dir / "GPEN-BFR-256_input_b1.npy"))
    expected = np.load(data_dir / "GPEN-BFR-256_output_b1.npy")
    out = model_256.set_compute_dtype(torch.float32)(x).numpy()
    assert np.abs(out - expected).max() <= 1e-5


def test_auto_dtype_on_cuda_prefers_bf16(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("auto", cuda) == torch.float16
    assert pick_dtype("fp16", cuda) == torch.float16


def test_ragged_tails_are_padded_to_fixed_batch_shapes(model_256, data_dir):
    assert fixed_batch_shapes(4) == (1, 4) and fixed_batch_shapes(1) == (1,)
    restorer = GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32", batch_size=3)
    shapes = []
    model_forward = restorer._forward
    restorer._forward = lambda x: shapes.append(x.shape[0]) or model_forward(x)
    face = np.load(data_dir / "GPEN-BFR-256_aligned_face_bgr_u8.npy")[:, :, ::-1]
    crops = np.stack([face, face[:, ::-1], face, face[:, ::-1], face])
    unpadded = restorer.restore(crops)
    assert shapes == [3, 2]  # CPU without compile: tails run at their own size
    restorer.batch_shapes = fixed_batch_shapes(3)
    shapes.clear()
    padded = restorer.restore(crops)
    assert shapes == [3, 3]  # the tail of 2 ran padded to 3
    assert padded.shape == crops.shape
    assert np.abs(padded.astype(int) - unpadded).max() <= 1  # padding faces do not touch the real ones
    shapes.clear()
    restorer.restore(face)
    assert shapes == [1]


def test_compiled_restorer_warms_every_batch_shape_at_load(model_256, monkeypatch):
    compiled_shapes = []

    def fake_compile(model, **kwargs):
        def run(x):
            compiled_shapes.append(x.shape[0])
            return model(x)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32", batch_size=2, compile=True)
    assert compiled_shapes == [1, 2]


def test_restorer_changes_no_process_wide_setting(model_256, monkeypatch):
    calls = []
    monkeypatch.setattr(restorer_module, "retain_freed_memory", lambda: calls.append("mallopt"))
    benchmark = torch.backends.cudnn.benchmark
    GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32")
    assert calls == [] and torch.backends.cudnn.benchmark == benchmark
    restorer_module.tune_process("cpu")  # the CLI's call
    assert calls == ["mallopt"]
