"""Restores on Ray equal single-machine runs: a folder through ``--cluster ADDRESS`` (with an unreadable file and
an existing output), and a long clip in segments while a worker process is killed mid-segment, and again while a
whole node is lost mid-segment.

Network rule: Ray on Linux swaps 127.0.0.1 for the machine's interface address, so the Ray side runs in a child
process inside its own network namespace that has only loopback (``unshare -n``, or ``-rn`` without root); the
child checks that Ray's node address is 127.0.0.1 before anything else. One Ray cluster (a head and two worker
nodes, ray.cluster_utils, one more added after the node is lost) serves the whole module
(``tests/cluster_ray_child.py``); the tests below judge what it produced. Skipped, with the reason, where Ray
is not installed or no namespace can be made.

Single-machine references run with one torch thread, as each worker does: MTCNN's float results depend on the
thread count, and with them the detections.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster_support import (
    StandInRestorer, audio_packets, decoded_video, write_keyframed_face_clip,
)
from vidgpen import api
from vidgpen.cluster.segment import work_folder
from vidgpen.config import RestoreOptions
from vidgpen.pipeline import build_engine

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'vidgpen[cluster]'")

TESTS_DIR = Path(__file__).resolve().parent
CHILD = TESTS_DIR / "cluster_ray_child.py"
CHILD_TIMEOUT = 420
SEAM_OPTIONS = dict(model=None, detector="mtcnn", mask="feathered", dtype="fp32", temporal_strength=0.3, lookahead=2)
FOLDER_CLIPS = {"clip0.mp4": 6, "clip1.mp4": 9, "done.mp4": 4}
LONG_FRAMES = 72


def loopback_namespace_prefix() -> list[str]:
    """The command prefix that runs a program in a new network namespace with loopback up, or skips."""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    prefix = unshare + ["sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    try:
        probe = subprocess.run(prefix + ["true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot make a loopback-only network namespace for Ray ({exc}); needs util-linux's unshare")
    if probe.returncode != 0:
        pytest.skip("cannot make a loopback-only network namespace for Ray (unshare -n / ip link set lo up: "
                    f"{probe.stderr.strip() or probe.returncode}); Ray tests need it so no traffic leaves loopback")
    return prefix


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("ray")
    (work / "folder").mkdir()
    (work / "folder_out").mkdir()
    for seed, (name, frames) in enumerate(FOLDER_CLIPS.items()):
        write_keyframed_face_clip(work / "folder" / name, frames=frames, seed=seed)
    (work / "folder" / "broken.mp4").write_bytes(b"not a video " * 100)
    (work / "folder_out" / "done.mp4").write_bytes(b"restored by an earlier run")
    write_keyframed_face_clip(work / "long.mp4", frames=LONG_FRAMES, seed=7)
    return work


@pytest.fixture(scope="module")
def child(work, recipe_checkpoint_256) -> dict:
    """Run every Ray scenario once, in a loopback-only namespace; returns its results and stderr."""
    prefix = loopback_namespace_prefix()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
               PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent), str(TESTS_DIR),
                                           os.environ.get("PYTHONPATH", "")]))
    result_path = work / "result.json"
    try:
        run = subprocess.run(prefix + [sys.executable, str(CHILD), str(work), str(recipe_checkpoint_256),
                                       str(result_path)], capture_output=True, text=True, env=env,
                             timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        done = result_path.read_text() if result_path.exists() else "no results"
        pytest.fail(f"the Ray child ran past {CHILD_TIMEOUT} s; results so far: {done}\n{(exc.stderr or '')[-3000:]}")
    results = json.loads(result_path.read_text()) if result_path.exists() else {}
    assert "error" not in results, results["error"]
    assert run.returncode == 0, f"child exited {run.returncode}: {results}\n{run.stderr[-3000:]}"
    return dict(results, stderr=run.stderr)


@pytest.fixture(scope="module")
def one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def long_reference(work, one_torch_thread, tmp_path_factory) -> Path:
    """The long clip restored on this machine, lossless, as the segmented Ray runs restore it."""
    options = RestoreOptions(**SEAM_OPTIONS, codec="ffv1")
    reference = tmp_path_factory.mktemp("reference") / "long.mkv"
    api.restore_video(work / "long.mp4", reference, options=options,
                      engine=build_engine(options, restorer=StandInRestorer()))
    return reference


def test_ray_ran_on_loopback_only(child):
    assert child["node_address"] == "127.0.0.1" and child["nodes"] == ["127.0.0.1"] * 3


def test_folder_on_ray_equals_single_machine_runs(child, work, recipe_engine, recipe_options, one_torch_thread,
                                                  tmp_path):
    assert child["folder"]["exit"] == 1  # one file failed
    stderr = child["stderr"]
    assert "broken.mp4" in stderr and "is not a video file" in stderr
    assert "restored 2 file(s)" in stderr and "1 skipped (output exists)" in stderr and "1 failed" in stderr
    assert (work / "folder_out" / "done.mp4").read_bytes() == b"restored by an earlier run"
    assert sorted(p.name for p in (work / "folder_out").iterdir()) == ["clip0.mp4", "clip1.mp4", "done.mp4"]
    for name in ("clip0.mp4", "clip1.mp4"):
        reference = tmp_path / name
        api.restore_video(work / "folder" / name, reference, options=RestoreOptions(**recipe_options),
                          engine=recipe_engine)
        assert (work / "folder_out" / name).read_bytes() == reference.read_bytes()


def test_segmented_clip_with_a_killed_worker_equals_single_machine_run(child, work, long_reference):
    segmented = child["segmented"]
    assert segmented["killed"] and segmented["workers"] == 2  # a worker really died mid-segment
    assert segmented["frames"] == LONG_FRAMES
    output = work / "long_cluster.mkv"
    assert decoded_video(output) == decoded_video(long_reference)
    assert audio_packets(output) == audio_packets(long_reference)
    assert not work_folder(output).exists()


def test_segmented_clip_with_a_node_lost_mid_segment_equals_single_machine_run(child, work, long_reference):
    lost = child["node_lost"]
    removal = lost["removal"]
    assert "error" not in removal, removal["error"]
    assert removal["node_id"] in lost["dead_nodes"]  # Ray saw the node die
    # No node was spare, so the lost actor could not restart; its segment went back to the queue and the other
    # actor restored it: the job neither waited for the lost actor nor lost the segment.
    assert lost["restarted_on"] == []
    assert len(lost["retried"]) == 1 and lost["retried"][0].startswith("long.mp4 segment ")
    assert lost["workers"] == 2 and lost["frames"] == LONG_FRAMES
    output = work / "long_node_lost.mkv"
    assert decoded_video(output) == decoded_video(long_reference)
    assert audio_packets(output) == audio_packets(long_reference)
    assert not work_folder(output).exists()


def test_storage_probe_names_what_a_node_cannot_see(child, work):
    assert child["storage_error"].startswith("inputs, outputs and the work folder must be on storage every node sees")
    assert f"node 127.0.0.1: cannot see {work / 'missing.mp4'}" in child["storage_error"]
    assert child["weights_seen"] is True and child["weights_unseen"] is False
    assert child["probes_left"] == []


def test_worker_loads_a_checkpoint_sent_through_the_object_store(recipe_checkpoint_256, recipe_engine,
                                                                  one_torch_thread):
    import numpy as np

    from vidgpen.cluster.ray_runner import RestoreWorker

    options = RestoreOptions(model="GPEN-BFR-256", detector="mtcnn", mask="feathered", dtype="fp32")
    worker = RestoreWorker(options, recipe_checkpoint_256.read_bytes(), None, threads=1)
    local = worker.engine.options.weights
    assert local != recipe_checkpoint_256 and local.read_bytes() == recipe_checkpoint_256.read_bytes()
    crops = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    try:
        assert np.array_equal(worker.engine.restorer.restore(crops), recipe_engine.restorer.restore(crops))
    finally:
        local.unlink()
