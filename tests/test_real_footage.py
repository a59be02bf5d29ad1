"""Real footage end to end through ``vidgpen restore``: phone clips stored sideways, anamorphic (non-square pixel)
captures, interlaced tape, and AVI files whose frames carry mislabelled timestamps. Every case is generated here
with PyAV; recipe GPEN-BFR-256 weights and MTCNN throughout."""

from __future__ import annotations

import contextlib
import hashlib
import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidgpen import api, cli, pipeline
from vidgpen.samples import astronaut_rgb, face_clip_frame
from vidgpen.video.synthetic import write_packed_bframe_avi
from vidgpen.video.timestamps import DisplayTimes

FPS = 25


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module", autouse=True)
def reuse_loaded_restorer(recipe_engine, recipe_checkpoint_256):
    """Runs with the recipe checkpoint on the CPU in fp32 reuse the restorer already loaded (loading takes seconds)."""
    real_build_engine = pipeline.build_engine

    def build_engine(options, notice=None, restorer=None):
        if restorer is None and options.weights is not None and Path(options.weights) == recipe_checkpoint_256 \
                and options.dtype == "fp32" and options.batch_size is None:
            restorer = recipe_engine.restorer
        return real_build_engine(options, notice, restorer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "build_engine", build_engine)
        yield


@pytest.fixture(scope="module")
def recipe_args(recipe_checkpoint_256) -> list[str]:
    return ["--model", "GPEN-BFR-256", "--weights", str(recipe_checkpoint_256), "--detector", "mtcnn",
            "--mask", "feathered", "--dtype", "fp32", "--quiet"]


def packets(path: Path, kind: str) -> list[tuple[str, int]]:
    """(sha256, time in whole milliseconds) of every packet of the first ``kind`` stream."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [(hashlib.sha256(bytes(p)).hexdigest(), round(1000 * p.pts * p.time_base))
                for p in container.demux(stream) if p.size]


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]


# ------------------------------------------------------------------------------------------- mislabelled timestamps


def test_display_times_sorts_labels_within_the_window():
    times = DisplayTimes(step=1)
    labels = [1, 2, 3, 5, 4, 6, 8, 7, 9, 11, 10]
    out = [t for i, label in enumerate(labels) for t in times.push(i, label, None)] + list(times.flush())
    assert [item for item, _ in out] == list(range(len(labels)))  # order of the frames is kept
    assert [ticks for _, ticks in out] == sorted(labels)


def test_display_times_falls_back_to_dts_then_to_the_cadence():
    times = DisplayTimes(step=10, window=2)
    # a duplicate label (20) that sorting cannot place takes its dts (25); a frame without any label continues
    # the cadence; a duplicate without a usable dts gets one tick more.
    pushes = [(0, 0), (10, 10), (20, 20), (20, 25), (None, None), (30, 5)]
    out = [t for pts, dts in pushes for t in times.push(None, pts, dts)] + list(times.flush())
    assert [ticks for _, ticks in out] == [0, 10, 20, 25, 35, 36]


def test_well_labelled_frames_keep_their_timestamps():
    labels = [0, 3, 7, 8, 20, 21, 40]  # variable frame rate
    times = DisplayTimes(step=3)
    out = [t for label in labels for t in times.push(label, label, label)] + list(times.flush())
    assert [ticks for _, ticks in out] == labels


@pytest.fixture(scope="module")
def packed_avi(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    portrait = astronaut_rgb()
    images = [face_clip_frame(i, 320, 240, FPS, 3.0, rng, portrait) for i in range(10)]
    return write_packed_bframe_avi(tmp_path_factory.mktemp("avi") / "packed.avi", images, fps=FPS)


def test_packed_bframe_avi_restores_with_display_times(packed_avi, recipe_args, tmp_path):
    with av.open(str(packed_avi)) as container:
        decoded = [(frame.pts, frame.dts) for frame in container.decode(video=0)]
    labels = [pts for pts, _ in decoded]
    assert labels != sorted(labels), "the generated file must reproduce the mislabelled frames"
    # FFmpeg's best-effort times: the packet dts (pts are faulty), the last frame's pts (its dts is unknown).
    display = [dts if dts is not None else pts for pts, dts in decoded]
    assert display == list(range(1, 11))

    out = tmp_path / "restored.mkv"
    code, _, err = run_cli("restore", packed_avi, "-o", out, *recipe_args)
    assert code == 0, err
    assert frame_times(out) == pytest.approx([t / FPS for t in display], abs=1e-3)
    # audio copied packet for packet with its own times: the offset between sound and picture is unchanged
    assert packets(out, "audio") == packets(packed_avi, "audio")
