"""Run by tests/test_cluster_ray.py inside a network namespace with only loopback: one Ray cluster on this machine
(ray.cluster_utils: a head and two worker nodes, a third added once one is lost), the scenarios one after another,
results as JSON.
Usage: cluster_ray_child.py WORK_DIR CHECKPOINT RESULT_JSON

Checks first that Ray's node address is 127.0.0.1 and stops (writing why) if it is not: no traffic may leave
loopback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from functools import partial
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from cluster_support import make_block_once_restorer, make_kill_once_restorer
from vidgpen.cli import main as cli_main
from vidgpen.cluster import ray_runner
from vidgpen.config import RestoreOptions

SEAM_OPTIONS = dict(model=None, detector="mtcnn", mask="feathered", dtype="fp32", temporal_strength=0.3, lookahead=2)
# A SIGKILLed raylet fails its health checks at once; the default (3 s period, 5 failures) would add ~15 s before
# the GCS declares its node dead and restarts the actors it held. The timeout of one check stays at its default, so
# a live node that answers slowly on a busy machine is not counted as failing.
HEAD_SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
BLOCK_SECONDS = 90          # a blocked restorer gives up (the scenario fails) after this
NODE_LOSS_SECONDS = 150     # the node-loss restore, from start to joined output, or the child fails


def remove_blocked_node(nodes: Cluster, marker: Path, finished: threading.Event, record: dict) -> None:
    """Waits for the blocked restorer's marker, then removes its node as a lost machine goes: the raylet and the
    node's other processes SIGKILLed, and the restorer's own worker process with them."""
    try:
        deadline = time.monotonic() + BLOCK_SECONDS
        while not marker.exists():
            if finished.is_set() or time.monotonic() > deadline:
                record["error"] = "no restorer blocked (the restore ended first)" if finished.is_set() else \
                    f"no restorer blocked within {BLOCK_SECONDS} s"
                return
            time.sleep(0.1)
        blocked = json.loads(marker.read_text())
        record.update(node_id=blocked["node_id"], pid=blocked["pid"])
        node = next((n for n in nodes.worker_nodes if n.node_id == blocked["node_id"]), None)
        if node is None:
            record["error"] = f"the blocked restorer runs on {blocked['node_id']}, not on a worker node"
            return
        removing = time.perf_counter()
        nodes.remove_node(node, allow_graceful=False)
        try:
            os.kill(blocked["pid"], signal.SIGKILL)
            record["worker_outlived_raylet"] = True
        except ProcessLookupError:
            record["worker_outlived_raylet"] = False
        record["remove_seconds"] = time.perf_counter() - removing
    except Exception:  # noqa: BLE001 - reported by the parent test
        record["error"] = traceback.format_exc()


def main() -> int:
    work, checkpoint, result_path = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    results: dict = {}

    def save():
        result_path.write_text(json.dumps(results, indent=1))

    # A head without CPUs and two worker nodes with one CPU each: each of the two restorer actors has a node of
    # its own, and none is spare, so an actor whose node is lost has nowhere to restart.
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": HEAD_SYSTEM_CONFIG})
    try:
        for _ in range(2):
            nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
        cluster = ray_runner.ClusterOptions(address=nodes.address, workers=2, cpus_per_worker=1, segment_seconds=1.0)
        results["node_address"] = ray_runner.connect(cluster)
        results["nodes"] = [n["NodeManagerAddress"] for n in ray.nodes()]
        save()
        if results["node_address"] != "127.0.0.1" or set(results["nodes"]) != {"127.0.0.1"}:
            return 3  # never go on off loopback

        # The storage probe: every node must see the inputs and read a probe file written beside the outputs.
        try:
            ray_runner.check_shared_storage([work], [work / "missing.mp4"], None)
        except ray_runner.ClusterError as exc:
            results["storage_error"] = str(exc)
        results["weights_seen"] = ray_runner.check_shared_storage([work], [work / "long.mp4"], Path(checkpoint))
        results["weights_unseen"] = ray_runner.check_shared_storage([work], [work / "long.mp4"], work / "none.pth")
        results["probes_left"] = sorted(p.name for p in work.glob(".vidgpen-probe-*"))
        save()

        # A long clip in segments; a worker process dies at its 5th model call (mid-segment), Ray restarts the actor
        # and retries the segment.
        started = time.perf_counter()
        marker = work / "killed.marker"
        lossless = RestoreOptions(**SEAM_OPTIONS, codec="ffv1")
        long = ray_runner.restore_with_ray(work / "long.mp4", work / "long_cluster.mkv", lossless, cluster,
                                           restorer_factory=partial(make_kill_once_restorer, str(marker), 5))
        results["segmented"] = {"frames": long.results[0].frames, "faces": long.results[0].faces,
                                "workers": long.workers, "killed": marker.exists(),
                                "seconds": time.perf_counter() - started}
        save()

        # The same clip while a whole node is lost: a restorer blocks mid-segment, its node is removed (raylet and
        # worker SIGKILLed). With no spare node its actor cannot restart; the segment goes back to the queue and the
        # surviving actor restores it. A watchdog turns a restore that never ends into a reported failure.
        started = time.perf_counter()
        marker = work / "blocked.marker"
        removal: dict = {}
        finished = threading.Event()
        remover = threading.Thread(target=remove_blocked_node, args=(nodes, marker, finished, removal), daemon=True)
        remover.start()

        def watchdog():
            if not finished.wait(NODE_LOSS_SECONDS):
                results["error"] = f"node loss: the restore did not finish in {NODE_LOSS_SECONDS} s; removal: {removal}"
                save()
                nodes.shutdown()
                os._exit(1)  # the driver may be stuck inside Ray: leave without its cleanup

        threading.Thread(target=watchdog, daemon=True).start()
        try:
            lost = ray_runner.restore_with_ray(
                work / "long.mp4", work / "long_node_lost.mkv", lossless, cluster,
                restorer_factory=partial(make_block_once_restorer, str(marker), 3, BLOCK_SECONDS))
        finally:
            finished.set()
        remover.join(timeout=10)
        restarted = Path(f"{marker}.restarted")
        results["node_lost"] = {
            "frames": lost.results[0].frames, "workers": lost.workers, "removal": removal,
            "dead_nodes": [n["NodeID"] for n in ray.nodes() if not n["Alive"]],
            "restarted_on": restarted.read_text().split() if restarted.exists() else [],
            "retried": lost.retried, "seconds": time.perf_counter() - started}
        save()
        nodes.add_node(num_cpus=1)  # a replacement, so the folder below has two workers again
        nodes.wait_for_nodes()

        # Last (the command shuts Ray down when done): a folder through the command line, with the recipe
        # GPEN-BFR-256 on two workers (one CPU thread each); one file cannot be read, one output exists already.
        started = time.perf_counter()
        code = cli_main(["restore", str(work / "folder"), "-o", str(work / "folder_out"), "--cluster", nodes.address,
                         "--workers", "2", "--cpus-per-worker", "1", "--model", "GPEN-BFR-256", "--weights",
                         checkpoint, "--detector", "mtcnn", "--mask", "feathered", "--dtype", "fp32"])
        results["folder"] = {"exit": code, "seconds": time.perf_counter() - started}
        save()
    except BaseException:  # noqa: BLE001 - the parent test reports it
        results["error"] = traceback.format_exc()
        save()
        return 1
    finally:
        ray_runner.shutdown()
        nodes.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
