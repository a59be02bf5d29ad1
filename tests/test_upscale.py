"""``--upscale`` and ``--bg-upscaler``: faces pasted at full resolution into an upscaled picture.

Background models are random-weight Real-ESRGAN networks built with spandrel's own architecture classes (RRDBNet
x4, RRDBNet x2 with pixel unshuffle, SRVGGNetCompact x4), tiny (8 features, 1 block) and saved by the tests;
nothing is downloaded. Faces: recipe GPEN-BFR-256, MTCNN, the feathered mask."""

from __future__ import annotations

import hashlib
import json
import math
import re
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data
import torch

from vidgpen.config import RestoreOptions
from vidgpen.errors import OptionError, OutputError, WeightsError
from vidgpen.faces.align import invert_affine
from vidgpen.faces.mask import feathered_mask
from vidgpen.faces.paste import PasteItem, scale_for_frame
from vidgpen.models.upscaler import CPU_TILE, LanczosUpscaler, tile_starts, upscale_tiled
from vidgpen.samples import write_face_clip
from vidgpen.upscale import learned_upscaler, load_sr_model, max_factor, pick_factor
from vidgpen.video import probe
from vidgpen.video.reader import open_video
from vidgpen.video.writer import VideoWriter
from cli_support import run_cli

# Runs that load the recipe checkpoint reuse the restorer already loaded (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("reuse_loaded_restorer")

WIDTH, HEIGHT, FPS, FRAMES = 320, 240, 24, 4


# ------------------------------------------------------------------------------------------------------ helpers


def _random_sr_model(kind: str) -> torch.nn.Module:
    """A tiny random Real-ESRGAN-family network whose output spans the range (its last conv is scaled up and
    centred), so comparisons between outputs are not comparisons of black pictures."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed({"rrdb-x4": 1, "rrdb-x2": 2, "compact-x4": 3}[kind])
    if kind == "rrdb-x4":
        model = ESRGAN(num_filters=8, num_blocks=1, scale=4)
    elif kind == "rrdb-x2":  # Real-ESRGAN x2plus: pixel unshuffle by 2, then the x4 network
        model = ESRGAN(in_nc=12, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2)
    else:
        return Compact(num_feat=8, num_conv=2, upscale=4)  # adds the nearest-upsampled input to its output
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(6.0)
        last.bias.fill_(0.3)
    return model


@pytest.fixture(scope="module")
def sr_files(tmp_path_factory) -> dict[str, Path]:
    """Each kind saved as a .pth state dict the way the official files are ({"params_ema": ...} for RRDB)."""
    folder = tmp_path_factory.mktemp("sr")
    files = {}
    for kind in ("rrdb-x4", "rrdb-x2", "compact-x4"):
        state = _random_sr_model(kind).state_dict()
        files[kind] = folder / f"{kind}.pth"
        torch.save({"params_ema": state} if kind.startswith("rrdb") else state, files[kind])
    return files


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """320x240, 4 frames, H.264 + AAC, the astronaut's face about 60 px wide."""
    return write_face_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=FRAMES, width=WIDTH, height=HEIGHT,
                           fps=FPS)


def _decode(path: Path) -> tuple[list[np.ndarray], list[int], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return [f.to_ndarray(format="rgb24") for f in frames], [f.pts for f in frames], stream.time_base


def _audio_hashes(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [hashlib.sha256(bytes(p)).hexdigest() for p in container.demux(audio=0) if p.size]


def _input_frames(path: Path) -> list[np.ndarray]:
    """The frames exactly as vidgpen's reader gives them to the pipeline."""
    with open_video(path) as reader:
        return [frame.image for frame in reader]


# ------------------------------------------------------------------------------------------ geometry and factors


def test_scaled_paste_item_maps_the_big_frame_onto_the_crop():
    matrix = np.array([[1.7, 0.3, -40.0], [-0.3, 1.7, -25.0]])
    item = PasteItem(restored_crop=np.zeros((64, 64, 3), np.uint8), crop_matrix=matrix,
                     mask=np.ones((64, 64), np.float32), box=np.array([10, 20, 50, 70]))
    scaled = scale_for_frame(item, 4)
    frame_points = np.array([[30.0, 40.0], [12.5, 61.0]])
    in_crop = frame_points @ matrix[:, :2].T + matrix[:, 2]
    in_crop_from_big = (frame_points * 4) @ scaled.crop_matrix[:, :2].T + scaled.crop_matrix[:, 2]
    np.testing.assert_allclose(in_crop_from_big, in_crop, atol=1e-9)
    np.testing.assert_array_equal(scaled.box, item.box * 4)
    assert scale_for_frame(item, 1) is item


@pytest.mark.parametrize("faces, size, model, expected", [
    ([60.0], (320, 240), 256, 3),      # 3 * 60 = 180 >= 128, 2 * 60 < 128
    ([60.0, 70.0, 200.0], (320, 240), 256, 2),  # median 70
    ([60.0], (320, 240), 512, 4),      # even 4 * 60 < 256: the largest factor
    ([300.0], (320, 240), 512, 1),     # already large enough
    ([20.0], (1280, 720), 512, 3),     # wants 4, 4 * 720 > 2160: capped
    ([20.0], (1920, 1080), 512, 2),
    ([20.0], (1080, 1920), 512, 2),    # portrait: the same cap turned
    ([20.0], (3840, 2160), 512, 1),
    ([], (320, 240), 512, 1),          # no face: the input size
])
def test_auto_factor_is_the_smallest_bringing_the_median_face_to_half_the_crop(faces, size, model, expected):
    assert pick_factor(faces, *size, model) == expected


def test_max_factor_keeps_the_output_within_3840x2160():
    assert max_factor(640, 480) == 4 and max_factor(1280, 720) == 3 and max_factor(960, 540) == 4
    assert max_factor(4000, 3000) == 1


# ---------------------------------------------------------------------------------------------- the upscalers


def test_tile_starts_cover_the_length_with_equal_tiles():
    for length, tile in [(100, 32), (96, 32), (31, 32), (257, 256)]:
        starts = tile_starts(length, tile)
        covered = np.zeros(length, bool)
        for start in starts:
            covered[start:start + tile] = True
            assert start + min(tile, length) <= length
        assert covered.all()


@pytest.mark.parametrize("kind, scale", [("rrdb-x4", 4), ("rrdb-x2", 2), ("compact-x4", 4)])
def test_spandrel_detects_each_real_esrgan_architecture_from_a_weights_only_load(sr_files, kind, scale):
    descriptor = load_sr_model(sr_files[kind])
    assert descriptor.scale == scale
    reference = _random_sr_model(kind).eval()
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        torch.testing.assert_close(descriptor.model(x), reference(x))


@pytest.mark.parametrize("kind", ["rrdb-x4", "rrdb-x2", "compact-x4"])
def test_tiled_and_untiled_upscaling_agree_within_one_level(sr_files, kind):
    image = cv2.resize(skimage.data.astronaut(), (70, 45), interpolation=cv2.INTER_AREA)  # odd sizes on purpose
    whole = learned_upscaler(sr_files[kind], kind, "cpu", tile=0).upscale(image, 4)
    tiled = learned_upscaler(sr_files[kind], kind, "cpu", tile=32).upscale(image, 4)
    assert whole.shape == tiled.shape == (180, 280, 3)
    assert whole.std() > 20  # a real picture, not a saturated one
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_tiling_runs_the_network_on_overlapping_tiles_in_batches():
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    calls = []

    def nearest_x2(patches):
        calls.append(patches.shape)
        return patches.repeat(2, axis=1).repeat(2, axis=2)

    out = upscale_tiled(nearest_x2, image, 2, tile=32, pad=8, batch=3, multiple_of=4)
    np.testing.assert_array_equal(out, image.repeat(2, axis=0).repeat(2, axis=1))
    assert [shape[0] for shape in calls] == [3, 3]            # 2 rows x 3 columns of tiles, batched by 3
    assert all(shape[1:3] == (48, 48) for shape in calls)      # 32 + 2 * 8, already a multiple of 4


def test_cpu_tiles_are_a_fixed_size_and_a_model_of_another_scale_is_resized(sr_files):
    upscaler = learned_upscaler(sr_files["rrdb-x4"], "x4", "cpu")
    assert upscaler.tile == CPU_TILE and upscaler.half_dtype is None
    image = cv2.resize(skimage.data.astronaut(), (24, 20), interpolation=cv2.INTER_AREA)
    at_four = upscaler.upscale(image, 4)
    at_two = upscaler.upscale(image, 2)
    assert at_two.shape == (40, 48, 3)
    np.testing.assert_array_equal(at_two, cv2.resize(at_four, (48, 40), interpolation=cv2.INTER_AREA))


def test_lanczos_is_opencvs_lanczos4():
    image = skimage.data.astronaut()[::8, ::8]
    np.testing.assert_array_equal(LanczosUpscaler().upscale(image, 3),
                                  cv2.resize(image, (192, 192), interpolation=cv2.INTER_LANCZOS4))


def test_a_safetensors_file_loads_too(sr_files, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "compact.safetensors"
    save_file(torch.load(sr_files["compact-x4"], weights_only=True), str(path))
    assert load_sr_model(path).scale == 4


def test_a_pickled_object_is_refused_by_the_weights_only_load(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": Fraction(1, 3)}, path)  # loading it needs the full unpickler
    with pytest.raises(WeightsError, match="does not load as a checkpoint"):
        load_sr_model(path)


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def upscaled_run(clip, sr_files, recipe_args, tmp_path_factory):
    """--upscale 4 with the learned model found in the weights folder (no --bg-upscaler), lossless RGB output."""
    folder = tmp_path_factory.mktemp("upscaled")
    weights = folder / "weights"
    weights.mkdir()
    # The compact model under its official name (the tiny RRDBNet costs seconds per frame on 2 busy cores).
    (weights / "realesr-general-x4v3.pth").write_bytes(sr_files["compact-x4"].read_bytes())
    paths = {"out": folder / "out.mkv", "report": folder / "faces.json", "faces": folder / "faces",
             "weights": weights}
    result = run_cli("restore", clip, "-o", paths["out"], *recipe_args, "--upscale", "4", "--weights-dir", weights,
                     "--tile", "64", "--temporal-strength", "0", "--codec", "ffv1", "--pix-fmt", "bgr0",
                     "--report", paths["report"], "--save-faces", paths["faces"])
    return result, paths


def test_upscale_4_keeps_every_frame_and_audio_packet(clip, upscaled_run):
    (code, out, err), paths = upscaled_run
    assert code == 0, err
    assert "at 4x the input's size" in err
    images, _, _ = _decode(paths["out"])
    assert len(images) == FRAMES and all(image.shape == (HEIGHT * 4, WIDTH * 4, 3) for image in images)
    assert _audio_hashes(paths["out"]) == _audio_hashes(clip)


def test_upscale_4_pastes_the_restored_crop_straight_at_full_resolution(clip, upscaled_run):
    """Inside the face the output is the restored crop warped once to the 4x frame; the background is the learned
    model's output for the input frame, bit for bit."""
    _, paths = upscaled_run
    images, _, _ = _decode(paths["out"])
    inputs = _input_frames(clip)
    report = json.loads(paths["report"].read_text())
    assert report["meta"]["upscale"] == 4  # its coordinates are the input frame's
    frames = report["frames"]
    background_model = learned_upscaler(paths["weights"] / "realesr-general-x4v3.pth", "x4", "cpu", tile=64)
    checked = 0
    for index, (image, frame) in enumerate(zip(images, frames)):
        assert len(frame["faces"]) == 1
        face = frame["faces"][0]
        crop = cv2.cvtColor(cv2.imread(str(paths["faces"] / f"frame{index:06d}_face{face['track_id']:03d}.png")),
                            cv2.COLOR_BGR2RGB)
        size = crop.shape[0]
        to_big = invert_affine(np.asarray(face["crop_matrix"], dtype=np.float64) @ np.diag([0.25, 0.25, 1.0]))
        big = (WIDTH * 4, HEIGHT * 4)
        expected_face = cv2.warpAffine(crop, to_big, big, flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(feathered_mask(size), to_big, big, flags=cv2.INTER_LINEAR)
        inside = mask >= 0.999
        assert inside.sum() > 150 * 150  # a ~60 px face shown about 240 px wide
        error = np.abs(image.astype(int) - expected_face.astype(int))[inside]
        assert error.max() <= 2, error.max()
        # The old way, pasting into the input-sized frame and enlarging the result, loses detail this tolerance sees.
        to_small = invert_affine(np.asarray(face["crop_matrix"], dtype=np.float64))
        small = cv2.warpAffine(crop, to_small, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
        enlarged = cv2.resize(small, big, interpolation=cv2.INTER_LANCZOS4)
        old_error = np.abs(enlarged.astype(int) - expected_face.astype(int))[inside]
        assert (old_error > 2).mean() > 0.05

        background = background_model.upscale(inputs[index], 4)
        outside = cv2.dilate((mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        np.testing.assert_array_equal(image[outside], background[outside])
        checked += 1
    assert checked == FRAMES


def test_upscale_2_h264_compare_and_lanczos_notice(clip, recipe_args, tmp_path):
    """No learned model present: Lanczos with a one-line notice; --compare shows the Lanczos-enlarged input; every
    pts and audio packet kept; x264 picks an H.264 level that holds the bigger picture."""
    out = tmp_path / "compare.mp4"
    code, stdout, err = run_cli("restore", clip, "-o", out, *recipe_args, "--upscale", "2", "--compare",
                                "--weights-dir", tmp_path / "empty", "--preset", "ultrafast", "--crf", "0",
                                "--pix-fmt", "yuv444p")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "upscaling the background with Lanczos" in line]
    assert len(notes) == 1 and notes[0].startswith("vidgpen: note: no Real-ESRGAN weights")
    images, pts, time_base = _decode(out)
    _, in_pts, in_time_base = _decode(clip)
    assert len(images) == FRAMES and images[0].shape == (HEIGHT * 2, WIDTH * 4, 3)
    assert time_base == in_time_base and pts == in_pts
    assert _audio_hashes(out) == _audio_hashes(clip)
    source = _input_frames(clip)[0]
    before = LanczosUpscaler().upscale(source, 2)
    shown = images[0][:, :WIDTH * 2].astype(int)
    assert np.abs(shown - before).max() <= 2  # lossless x264, only the YUV 4:4:4 round trip
    bilinear = cv2.resize(source, (WIDTH * 2, HEIGHT * 2), interpolation=cv2.INTER_LINEAR)
    assert np.abs(shown - bilinear).max() > 2
    with av.open(str(out)) as container:
        level = container.streams.video[0].codec_context.level
    assert level >= 31  # 1280x480 is 2400 macroblocks a frame: more than level 3.0's 1620


def test_auto_factor_on_a_photo_is_said_and_used(recipe_args, tmp_path):
    from vidgpen.faces.detect import make_detector
    from vidgpen.upscale import face_size

    photo = tmp_path / "astronaut.png"
    image = skimage.data.astronaut()
    cv2.imwrite(str(photo), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    faces = [face_size(d.box) for d in make_detector("mtcnn").detect(image)]
    expected = pick_factor(faces, 512, 512, 256)
    assert expected == 2  # the astronaut's face is ~90 px: 2 x 90 >= 128
    code, stdout, err = run_cli("restore", photo, "-o", tmp_path / "out.png", *recipe_args, "--upscale", "auto",
                                "--bg-upscaler", "lanczos")
    assert code == 0, err
    assert "--upscale auto picked 2 (512x512 -> 1024x1024" in err
    assert cv2.imread(str(tmp_path / "out.png")).shape == (1024, 1024, 3)


def test_auto_factor_on_a_video_samples_its_first_frames(clip, recipe_args, tmp_path, sr_files):
    code, stdout, err = run_cli("restore", clip, "-o", tmp_path / "out.mp4", *recipe_args, "--upscale", "auto",
                                "--bg-upscaler", sr_files["compact-x4"], "--preset", "ultrafast")
    assert code == 0, err
    # The clip's face is ~64 px, at the edge between x2 and x3: the factor must follow from the measured median
    # (the smallest that makes it at least half of GPEN-256's 256 px crop) and the output must have that size.
    picked = re.search(r"--upscale auto picked (\d) \(320x240 -> (\d+)x(\d+); median face (\d+) px", err)
    assert picked, err
    factor, median = int(picked[1]), int(picked[4])
    assert 50 <= median <= 75 and factor in {math.ceil(128 / (median + 0.5)), math.ceil(128 / (median - 0.5))}
    assert picked.group(2, 3) == (str(320 * factor), str(240 * factor))
    images, _, _ = _decode(tmp_path / "out.mp4")
    assert len(images) == FRAMES and images[0].shape == (240 * factor, 320 * factor, 3)


# ------------------------------------------------------------------------------------------------- mistakes


@pytest.mark.parametrize("extra, message", [
    (["--upscale", "5"], "--upscale must be 1, 2, 3, 4 or auto, got '5'"),
    (["--upscale", "1.5"], "--upscale must be 1, 2, 3, 4 or auto"),
    (["--bg-upscaler", "lanczos"], "--bg-upscaler and --tile work with --upscale 2, 3, 4 or auto"),
    (["--upscale", "2", "--bg-upscaler", "esrgan"], "--bg-upscaler must be one of lanczos, realesrgan-x2"),
    (["--upscale", "2", "--tile", "8"], "--tile must be at least 32"),
    (["--upscale", "2", "--bg-upscaler", "realesrgan-x4", "--offline"],
     "RealESRGAN-x4plus is not in"),
    (["--upscale", "2", "--bg-upscaler", "missing.pth"], "missing.pth does not exist"),
])
def test_a_mistake_is_one_line_and_exit_code_2(clip, recipe_args, tmp_path, extra, message):
    out = tmp_path / "out.mp4"
    code, stdout, err = run_cli("restore", clip, "-o", out, *recipe_args, "--weights-dir", tmp_path / "empty",
                                *extra)
    assert code == 2, (stdout, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_missing_learned_weights_name_the_official_address(tmp_path):
    from vidgpen.upscale import build_upscaler

    with pytest.raises(WeightsError, match=r"download https://github\.com/xinntao/Real-ESRGAN/releases/download/"
                                           r"v0\.2\.1/RealESRGAN_x2plus\.pth and save it as"):
        build_upscaler("realesrgan-x2", 2, weights_dir=tmp_path, offline=True)


def test_a_codec_that_cannot_take_the_size_is_refused_before_any_work(clip, tmp_path):
    info = probe(clip)
    with pytest.raises(OutputError, match=r"^mpeg4 cannot encode 8400x960 frames \(at most 8191 pixels a side\)"):
        VideoWriter(tmp_path / "out.mkv", info, codec="mpeg4", frame_size=(8400, 960))
    assert not list(tmp_path.iterdir())


def test_options_take_the_factor_as_text_or_number():
    assert RestoreOptions(upscale="3").upscale == 3 and RestoreOptions(upscale="AUTO").upscale == "auto"
    with pytest.raises(OptionError):
        RestoreOptions(upscale=0)


def test_weights_verify_loads_an_upscaler_file(sr_files, tmp_path):
    (tmp_path / "realesr-general-x4v3.pth").write_bytes(sr_files["compact-x4"].read_bytes())
    (tmp_path / "RealESRGAN_x2plus.pth").write_bytes(b"not a checkpoint")
    code, stdout, _ = run_cli("weights", "verify", "--dir", tmp_path)
    lines = {line.split()[0]: line for line in stdout.splitlines() if line.startswith(("real", "Real"))}
    assert "tensors are RealESRGAN Compact x4" in lines["realesr-general-x4v3"] and lines["realesr-general-x4v3"].endswith("ok")
    assert "BAD:" in lines["RealESRGAN-x2plus"]
    assert code != 0


def test_ten_bit_depth_subtitles_and_every_stream_survive_an_upscale(recipe_args, tmp_path):
    from vidgpen.video.synthetic import SyntheticClip, write_synthetic_clip

    source = write_synthetic_clip(tmp_path / "ten_bit.mkv", SyntheticClip(
        width=64, height=48, frames=6, pix_fmt="yuv420p10le", audio=("aac", "libopus"), subtitles=True))
    out = tmp_path / "out.mkv"
    code, _, err = run_cli("restore", source, "-o", out, *recipe_args, "--upscale", "3", "--bg-upscaler", "lanczos")
    assert code == 0, err
    with av.open(str(source)) as before, av.open(str(out)) as after:
        assert [s.type for s in after.streams] == [s.type for s in before.streams]
        video = after.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (192, 144)
        assert video.codec_context.pix_fmt == "yuv420p10le"
        counts = {}
        for container, key in ((before, "before"), (after, "after")):
            for packet in container.demux():
                if packet.size:
                    counts.setdefault(key, {}).setdefault(packet.stream.index, 0)
                    counts[key][packet.stream.index] += 1
    assert counts["after"] == counts["before"]


def test_a_folder_of_a_photo_and_a_video_is_upscaled_file_by_file(clip, recipe_args, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "photo.png"), cv2.cvtColor(skimage.data.astronaut()[::2, ::2], cv2.COLOR_RGB2BGR))
    (folder / "clip.mp4").write_bytes(clip.read_bytes())
    code, _, err = run_cli("restore", folder, "-o", tmp_path / "out", *recipe_args, "--upscale", "2",
                           "--bg-upscaler", "lanczos", "--preset", "ultrafast")
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "out" / "photo.png")).shape == (512, 512, 3)
    images, _, _ = _decode(tmp_path / "out" / "clip.mp4")
    assert len(images) == FRAMES and images[0].shape == (HEIGHT * 2, WIDTH * 2, 3)


def test_cuda_tiles_and_batches_follow_free_memory(monkeypatch):
    from vidgpen.models import upscaler as module

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 16 * 2**30))
    small = module.auto_tile(cuda, 64, 4, torch.float16)
    assert small % 32 == 0 and module.MIN_TILE <= small < module.MAX_GPU_TILE
    assert module.auto_tile(cuda, 64, 4, None) < small  # fp32 activations take twice the room
    assert module.auto_batch(cuda, 64, 4, small, module.TILE_PAD, torch.float16) >= 1
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (140 * 2**30, 141 * 2**30))
    assert module.auto_tile(cuda, 64, 4, torch.float16) == module.MAX_GPU_TILE
    assert 1 < module.auto_batch(cuda, 64, 4, 256, module.TILE_PAD, torch.float16) <= module.MAX_GPU_BATCH
    assert module.auto_tile(torch.device("cpu"), 64, 4, None) == CPU_TILE
    assert module.auto_batch(torch.device("cpu"), 64, 4, 256, 16, None) == 1


def test_running_out_of_gpu_memory_halves_the_batch_then_the_tile(sr_files, monkeypatch):
    """The CUDA fallback, exercised on the CPU: the first passes fail as a full GPU would."""
    upscaler = learned_upscaler(sr_files["compact-x4"], "compact", "cpu", tile=64)
    upscaler.batch = 4
    failures = iter([True, True, True, False])
    real_run = upscaler._run

    def run(patches):
        if next(failures, False):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real_run(patches)

    monkeypatch.setattr(upscaler, "_run", run)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    image = cv2.resize(skimage.data.astronaut(), (80, 60), interpolation=cv2.INTER_AREA)
    result = upscaler.upscale(image, 4)
    assert (upscaler.batch, upscaler.tile) == (1, 32)  # 4 -> 2 -> 1 tiles per pass, then 64 -> 32 px tiles
    whole = learned_upscaler(sr_files["compact-x4"], "compact", "cpu", tile=0).upscale(image, 4)
    assert np.abs(result.astype(int) - whole.astype(int)).max() <= 1
