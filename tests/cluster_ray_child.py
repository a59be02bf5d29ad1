"""Run by tests/test_cluster_ray.py inside a network namespace with only loopback: one Ray cluster on this machine
(ray.cluster_utils: a head and two worker nodes), the scenarios one after another, results as JSON.
Usage: cluster_ray_child.py WORK_DIR CHECKPOINT RESULT_JSON

Checks first that Ray's node address is 127.0.0.1 and stops (writing why) if it is not: no traffic may leave
loopback.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from cluster_support import make_kill_once_restorer
from vidgpen.cli import main as cli_main
from vidgpen.cluster import ray_runner
from vidgpen.config import RestoreOptions

SEAM_OPTIONS = dict(model=None, detector="mtcnn", mask="feathered", dtype="fp32", temporal_strength=0.3, lookahead=2)


def main() -> int:
    work, checkpoint, result_path = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    results: dict = {}

    def save():
        result_path.write_text(json.dumps(results, indent=1))

    # A head without CPUs and two worker nodes with one each: each restorer actor has a node of its own.
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
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
