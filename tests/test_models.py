"""The GPEN generator is the official model: same state_dict contract, same numbers, same pre/post-processing."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from vidgpen.errors import WeightsError
from vidgpen.models.checkpoint import detect_architecture, inspect_checkpoint, read_checkpoint, resolve_variant
from vidgpen.models.gpen import FullGenerator
from vidgpen.models.recipe import recipe_kind, recipe_state_dict, recipe_tensor
from vidgpen.models.restorer import GPENRestorer, load_restorer
from vidgpen.models.variants import VARIANTS

GENERATORS = list(VARIANTS)
RAW_TOLERANCE = 1e-5       # max abs diff of the raw fp32 output (reference README section 7)
MEAN_TOLERANCE = 1e-6


def manifest(data_dir, name):
    return json.loads((data_dir / f"manifest-{name}.json").read_text())


@pytest.fixture(scope="module")
def checkpoint_256(data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "GPEN-BFR-256.pth"
    torch.save(recipe_state_dict(manifest(data_dir, "GPEN-BFR-256")), path)
    return path


# --- the state_dict contract -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GENERATORS)
def test_state_dict_equals_manifest(data_dir, name):
    spec = manifest(data_dir, name)
    with torch.device("meta"):
        model = FullGenerator(VARIANTS[name].architecture)
    state = model.state_dict()
    assert list(state) == [e["key"] for e in spec["entries"]]  # same keys, same order
    assert [list(v.shape) for v in state.values()] == [e["shape"] for e in spec["entries"]]
    buffers = {name for name, _ in model.named_buffers()}
    assert buffers == {e["key"] for e in spec["entries"] if e["is_buffer"]} == set(spec["persistent_buffers"])
    assert sum(p.numel() for p in model.parameters()) == spec["n_parameters"]
    # the variant table agrees with the official constructor call
    arch = VARIANTS[name].architecture
    ctor = spec["constructor"]
    assert (arch.size, arch.channel_multiplier, arch.narrow) == (ctor["size"], ctor["channel_multiplier"], ctor["narrow"])


@pytest.mark.parametrize("name", GENERATORS)
def test_fir_buffers_hold_official_values(data_dir, name):
    spec = manifest(data_dir, name)
    for entry in spec["entries"]:
        if entry["is_buffer"]:
            np.testing.assert_array_equal(recipe_tensor(entry["key"], entry["shape"]).numpy(),
                                          np.array(entry["official_value"], dtype=np.float32))


@pytest.mark.parametrize("name", GENERATORS)
def test_architecture_detected_from_tensors(data_dir, name):
    spec = manifest(data_dir, name)
    with torch.device("meta"):
        state = OrderedDict((e["key"], torch.empty(e["shape"])) for e in spec["entries"])
    arch = detect_architecture(state)
    assert arch == VARIANTS[name].architecture
    assert resolve_variant(arch, name, "x") == name
    assert resolve_variant(arch, VARIANTS[name].task, "x") == name


def test_recipe_reproduces_reference_digests(data_dir):
    spec = manifest(data_dir, "GPEN-BFR-256")
    state = recipe_state_dict(spec)
    whole = hashlib.sha256()
    for entry in spec["entries"]:
        assert recipe_kind(entry["key"]) == entry["recipe_kind"]
        tensor = state[entry["key"]].numpy().astype("<f4")
        assert hashlib.sha256(tensor.tobytes()).hexdigest() == entry["recipe_sha256_f32le"], entry["key"]
        whole.update(entry["key"].encode())
        whole.update(tensor.tobytes())
    reference = json.loads((data_dir / "GPEN-BFR-256_reference.json").read_text())
    assert whole.hexdigest() in json.dumps(reference)


# --- exactness against the official outputs ---------------------------------------------------------------------

def assert_matches_reference(model, inputs, reference):
    out = model(torch.from_numpy(inputs)).numpy()
    diff = np.abs(out - reference)
    assert out.dtype == np.float32 and out.shape == reference.shape
    assert diff.max() <= RAW_TOLERANCE, f"max abs diff {diff.max():.3g}"
    assert diff.mean() <= MEAN_TOLERANCE, f"mean abs diff {diff.mean():.3g}"


@pytest.mark.parametrize("batch", [1, 2])
def test_bfr256_reproduces_official_output(model_256, data_dir, batch):
    assert_matches_reference(model_256, np.load(data_dir / f"GPEN-BFR-256_input_b{batch}.npy"),
                             np.load(data_dir / f"GPEN-BFR-256_output_b{batch}.npy"))


@pytest.mark.parametrize("name,batches", [("GPEN-BFR-512", (1, 2)), ("GPEN-BFR-1024", (1,))])
def test_large_variants_reproduce_official_output(shared_reference_dir, name, batches):
    spec = json.loads((shared_reference_dir / f"manifest-{name}.json").read_text())
    model = FullGenerator(VARIANTS[name].architecture).eval()
    model.load_state_dict(recipe_state_dict(spec), strict=True)
    for batch in batches:
        assert_matches_reference(model, np.load(shared_reference_dir / f"{name}_input_b{batch}.npy"),
                                 np.load(shared_reference_dir / f"{name}_output_b{batch}.npy"))
        if batch == 1:
            restorer = GPENRestorer(model, name, device="cpu", dtype="fp32")
            crop_rgb = np.load(shared_reference_dir / f"{name}_aligned_face_bgr_u8.npy")[:, :, ::-1]
            expected = np.load(shared_reference_dir / f"{name}_output_b1_postprocessed_bgr_u8.npy")[:, :, ::-1]
            assert_uint8_close(restorer.restore(crop_rgb), expected)


def assert_uint8_close(actual, expected, levels=1, max_fraction=1e-3):
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    histogram = np.bincount(diff.ravel(), minlength=levels + 2)
    assert diff.max() <= levels, f"max diff {diff.max()} levels; histogram {histogram[:8]}"
    assert (diff > 0).mean() < max_fraction, f"{(diff > 0).mean():.2%} pixels differ; histogram {histogram[:4]}"


def test_restorer_pre_and_post_processing_match_official(model_256, data_dir):
    restorer = GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32")
    crop_rgb = np.load(data_dir / "GPEN-BFR-256_aligned_face_bgr_u8.npy")[:, :, ::-1]
    # the model input equals FaceGAN.img2tensor's, bit for bit
    x = restorer.preprocess(torch.from_numpy(crop_rgb.copy())[None])
    np.testing.assert_array_equal(x.numpy(), np.load(data_dir / "GPEN-BFR-256_input_b1.npy"))
    # and tensor2img of the official raw output is reproduced exactly (truncation, not rounding)
    official = np.load(data_dir / "GPEN-BFR-256_output_b1_postprocessed_bgr_u8.npy")[:, :, ::-1]
    raw = torch.from_numpy(np.load(data_dir / "GPEN-BFR-256_output_b1.npy"))
    np.testing.assert_array_equal(restorer.postprocess(raw)[0].numpy(), official)
    # end to end: crops in, restored crops out, within one level of the official pipeline
    assert_uint8_close(restorer.restore(crop_rgb), official)


def test_restore_batches_equal_single_faces(model_256, data_dir):
    restorer = GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32", batch_size=3)
    face = np.load(data_dir / "GPEN-BFR-256_aligned_face_bgr_u8.npy")[:, :, ::-1]
    crops = np.stack([face, face[:, ::-1], np.roll(face, 7, axis=0), face, np.flipud(face)])
    together = restorer.restore(crops)          # chunks of 3 + 2
    alone = np.stack([restorer.restore(c) for c in crops])
    assert together.shape == crops.shape and together.dtype == np.uint8
    assert np.abs(together.astype(int) - alone).max() <= 1
    np.testing.assert_array_equal(together[0], together[3])


def test_bf16_within_three_levels_of_fp32(model_256, data_dir):
    face = np.load(data_dir / "GPEN-BFR-256_aligned_face_bgr_u8.npy")[:, :, ::-1]
    fp32 = GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32").restore(face)
    try:
        bf16 = GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="bf16").restore(face)
    finally:
        model_256.set_compute_dtype(torch.float32)
    assert np.abs(bf16.astype(int) - fp32).max() <= 3


# --- loading files ----------------------------------------------------------------------------------------------

def test_load_bare_state_dict(checkpoint_256, data_dir):
    restorer = load_restorer(checkpoint_256, device="cpu", dtype="fp32")
    assert (restorer.variant, restorer.size, restorer.device.type) == ("GPEN-BFR-256", 256, "cpu")
    x = torch.from_numpy(np.load(data_dir / "GPEN-BFR-256_input_b1.npy"))
    assert np.abs(restorer.model(x).numpy() - np.load(data_dir / "GPEN-BFR-256_output_b1.npy")).max() <= RAW_TOLERANCE


@pytest.mark.parametrize("wrap", ["g_ema", "module", "modelscope_name"])
def test_load_wrapped_checkpoints(checkpoint_256, tmp_path, wrap):
    state = torch.load(checkpoint_256, weights_only=True)
    if wrap == "g_ema":
        obj = {"g": state, "d": {"convs.0.0.weight": torch.zeros(1)}, "g_ema": state}
        path = tmp_path / "000100.pth"
    elif wrap == "module":
        obj = OrderedDict((f"module.{k}", v) for k, v in state.items())
        path = tmp_path / "dp.pth"
    else:
        obj = state
        path = tmp_path / "pytorch_model.pt"  # ModelScope's name says nothing about the size
    torch.save(obj, path)
    assert inspect_checkpoint(path) == "GPEN-BFR-256"
    assert torch.equal(load_restorer(path, device="cpu").model.state_dict()["ecd1.0.1.weight"],
                       state["ecd1.0.1.weight"])


def test_variant_is_read_from_tensors_not_file_name(checkpoint_256, tmp_path):
    misleading = tmp_path / "GPEN-BFR-512.pth"
    misleading.write_bytes(checkpoint_256.read_bytes())
    assert load_restorer(misleading, device="cpu").variant == "GPEN-BFR-256"
    with pytest.raises(WeightsError, match="not GPEN-BFR-512"):
        load_restorer(misleading, device="cpu", model="GPEN-BFR-512")
    with pytest.raises(WeightsError, match="no official 'colorization'"):
        load_restorer(misleading, device="cpu", model="colorization")


def test_discriminator_is_refused_with_advice(data_dir, tmp_path):
    spec = manifest(data_dir, "GPEN-BFR-512-D")
    path = tmp_path / "GPEN-BFR-512-D.pth"
    torch.save(OrderedDict((e["key"], torch.zeros(e["shape"])) for e in spec["entries"]), path)
    with pytest.raises(WeightsError, match=r"discriminator.*GPEN-BFR-512\.pth"):
        load_restorer(path, device="cpu")


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "empty", "missing", "text", "foreign", "pickle"])
def test_bad_files_raise_weights_error_naming_the_file(checkpoint_256, tmp_path, damage):
    path = tmp_path / f"{damage}.pth"
    data = checkpoint_256.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "corrupt":
        path.write_bytes(data[:1000] + bytes(b ^ 0x5A for b in data[1000:200000]) + data[200000:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("this is not a checkpoint\n")
    elif damage == "foreign":
        torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    elif damage == "pickle":
        import pickle

        path.write_bytes(pickle.dumps(OrderedDict(a=np.zeros(3))))  # weights_only=True refuses arbitrary objects
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path) if damage != "foreign" else load_restorer(path, device="cpu")
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_incomplete_generator_lists_what_is_missing(checkpoint_256, tmp_path):
    state = torch.load(checkpoint_256, weights_only=True)
    del state["generator.convs.3.noise.weight"]
    state["generator.to_rgb1.bias"] = torch.zeros(1, 4, 1, 1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"1 missing.*generator\.convs\.3\.noise\.weight.*1 wrong shape"):
        load_restorer(path, device="cpu")


def test_cuda_request_without_gpu_is_a_user_error(model_256):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error path cannot be exercised")
    from vidgpen.errors import OptionError

    with pytest.raises(OptionError, match="no CUDA GPU"):
        GPENRestorer(model_256, "GPEN-BFR-256", device="cuda")


def test_compiled_restorer_equals_eager(model_256, data_dir):
    face = np.load(data_dir / "GPEN-BFR-256_aligned_face_bgr_u8.npy")[:, :, ::-1]
    eager = GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32").restore(face)
    # batch_size=1: one batch shape, so one compile (warmed at load)
    compiled = GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32", batch_size=1,
                            compile=True).restore(face)
    assert np.abs(compiled.astype(int) - eager).max() <= 1


def test_compile_failure_falls_back_to_eager(model_256, data_dir, monkeypatch, caplog):
    def broken_compile(model, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    face = np.load(data_dir / "GPEN-BFR-256_aligned_face_bgr_u8.npy")[:, :, ::-1]
    restorer = GPENRestorer(model_256, "GPEN-BFR-256", device="cpu", dtype="fp32", compile=True)
    with caplog.at_level("WARNING"):
        restored = restorer.restore(face)
    assert "torch.compile failed" in caplog.text
    expected = np.load(data_dir / "GPEN-BFR-256_output_b1_postprocessed_bgr_u8.npy")[:, :, ::-1]
    assert np.abs(restored.astype(int) - expected).max() <= 1
