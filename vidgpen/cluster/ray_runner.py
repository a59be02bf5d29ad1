"""Run a restore on a Ray cluster: a folder as one task per file, a long video as one task per segment.

Imported only for ``--cluster``; nothing else in vidgpen imports Ray. The job:

1. connects (``local``: a Ray instance on this machine; ``auto``: ``RAY_ADDRESS`` or a running ``ray start``;
   anything else: a head node's address);
2. checks that every node sees the inputs, the outputs' folder and the checkpoint at the same paths (a probe file
   written here and read on every node); a checkpoint no node sees is sent once through the object store instead;
3. starts a pool of restorer actors, each holding one loaded engine (one per GPU, or a fraction of a GPU so two
   share one and overlap their CPU stages; CPU-only actors where there is no GPU);
4. hands out units, longest first: a whole file (folder inputs, and videos that stay one unit) or one segment.
   When a worker process or its node dies, Ray restarts the actor (wherever there is room) and the unit goes back
   to the queue for the next free actor, so a lost node never stalls the job on an actor that has nowhere to
   restart; a unit whose worker dies :data:`MAX_UNIT_ATTEMPTS` times fails. A user's mistake in one file (a
   :class:`~vidgpen.errors.VidgpenError`) is collected for the summary instead;
5. joins each segmented file's segments on the driver (:mod:`vidgpen.cluster.join`).

Outputs, segment files and checkpoint copies appear by atomic rename, so an existing output is complete: folder
runs skip outputs that exist (unless ``overwrite``) and ``resume`` skips finished segments.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from vidgpen.api import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image_path
from vidgpen.cluster.plan import DEFAULT_SEGMENT_SECONDS, Segment, plan_segments, scan_packets, segment_frames_for
from vidgpen.cluster.segment import (
    SegmentJournal, check_output, combine_summaries, journal_record, restore_segment,
)
from vidgpen.config import RestoreOptions
from vidgpen.errors import InputError, OptionError, OutputError, VidgpenError
from vidgpen.pipeline import RunSummary

POLL_SECONDS = 0.5
MAX_UNIT_ATTEMPTS = 3  # a unit that takes its worker down this often is the unit's fault, not the cluster's


class ClusterError(VidgpenError):
    """The cluster cannot run the job as asked (unreachable, storage not shared, no workers)."""


@dataclass(frozen=True)
class ClusterOptions:
    """How a job uses the cluster (nothing here changes a pixel).

    ``address``: local | auto | a head node's address. ``workers``: restorer actors (default: one per
    ``gpus_per_worker`` of the cluster's GPUs, else one per ``cpus_per_worker`` CPUs). ``gpus_per_worker`` may be a
    fraction (0.5: two actors share a GPU). ``segment_seconds``: about how long a segment of a long video is.
    ``num_cpus``: CPUs a ``local`` instance may use (default all).
    """

    address: str = "local"
    workers: int | None = None
    gpus_per_worker: float = 1.0
    cpus_per_worker: int = 2
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise OptionError(f"--workers must be at least 1, got {self.workers}")
        if not 0.0 < self.gpus_per_worker <= 1.0:
            raise OptionError(f"--gpus-per-worker must be within (0, 1], got {self.gpus_per_worker}")
        if self.cpus_per_worker < 1:
            raise OptionError(f"--cpus-per-worker must be at least 1, got {self.cpus_per_worker}")
        if self.segment_seconds <= 0:
            raise OptionError(f"--segment-seconds must be > 0, got {self.segment_seconds}")


class JobProgress(Protocol):
    """What a cluster job reports to (the CLI draws one bar for the whole job)."""

    def start(self, description: str, total_units: int) -> None: ...

    def unit_done(self, name: str, frames: int, error: str | None) -> None: ...

    def finish(self) -> None: ...


class _SilentJobProgress:
    def start(self, description, total_units):
        pass

    def unit_done(self, name, frames, error):
        pass

    def finish(self):
        pass


@dataclass
class ClusterSummary:
    """Per-file results of a job: summaries of restored files, files skipped (output exists), failures."""

    results: list[RunSummary] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    workers: int = 0
    node_address: str = ""
    plan_seconds: float = 0.0   # packet scans and plans of segmented files
    join_seconds: float = 0.0   # joining their segments
    warmup_frames: int = 0      # frames restored around segments and dropped
    retried: list[str] = field(default_factory=list)  # units started again after their worker or node was lost


# ---------------------------------------------------------------------------------------------------------------
# Connecting and checking the cluster
# ---------------------------------------------------------------------------------------------------------------

def connect(cluster: ClusterOptions) -> str:
    """Join or start Ray as asked; returns this node's address. Already connected: reuses the connection."""
    if ray.is_initialized():
        return ray.util.get_node_ip_address()
    try:
        if cluster.address == "local":
            ray.init(address="local", num_cpus=cluster.num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            address = "auto" if cluster.address == "auto" else cluster.address
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = "a running cluster (RAY_ADDRESS or 'ray start')" if cluster.address == "auto" else cluster.address
        raise ClusterError(f"cannot connect to Ray at {where}: {exc}; start the head node with 'ray start --head' "
                           f"or use --cluster local") from exc
    return ray.util.get_node_ip_address()


@ray.remote(num_cpus=0)
def _probe_node(probe: str, token: str, must_exist: list[str]) -> tuple[str, list[str]]:
    """On one node: read the probe file and look for the paths; returns (node address, what is wrong)."""
    problems = []
    try:
        if Path(probe).read_text() != token:
            problems.append(f"{probe} holds other content")
    except OSError:
        problems.append(f"cannot read {probe}")
    problems += [f"cannot see {p}" for p in must_exist if not os.path.exists(p)]
    return ray.util.get_node_ip_address(), problems


def check_shared_storage(work_dirs: list[Path], inputs: list[Path], checkpoint: Path | None) -> bool:
    """Every live node must see ``inputs`` and read a probe file written into each of ``work_dirs``; raises
    ClusterError naming the node and path when not. Returns whether every node sees ``checkpoint``."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    token = uuid.uuid4().hex
    probes = []
    try:
        for folder in dict.fromkeys(work_dirs):
            probe = folder / f".vidgpen-probe-{token}"
            probe.write_text(token)
            probes.append(probe)
        problems = []
        weights_everywhere = checkpoint is not None
        for probe in probes:
            must_exist = [str(p) for p in inputs]
            refs = [_probe_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probe), token, must_exist) for n in nodes]
            for address, wrong in ray.get(refs):
                problems += [f"node {address}: {w}" for w in wrong]
        if checkpoint is not None:
            refs = [_probe_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probes[0]), token, [str(checkpoint)]) for n in nodes]
            weights_everywhere = all(not wrong for _, wrong in ray.get(refs))
    finally:
        for probe in probes:
            probe.unlink(missing_ok=True)
    if problems:
        raise ClusterError(f"inputs, outputs and the work folder must be on storage every node sees at the same "
                           f"path: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return weights_everywhere


# ---------------------------------------------------------------------------------------------------------------
# The restorer actors
# ---------------------------------------------------------------------------------------------------------------

class RestoreWorker:
    """One loaded engine on a worker; restores whole files and segments handed to it."""

    def __init__(self, options: RestoreOptions, checkpoint: str | bytes | None,
                 restorer_factory: Callable[[], object] | None, threads: int):
        import torch

        from vidgpen.pipeline import build_engine

        torch.set_num_threads(threads)  # this actor's share of its node's CPUs
        if isinstance(checkpoint, bytes):  # one object-store copy of a checkpoint the node cannot see
            options = options.replace(weights=_local_copy(checkpoint))
        elif checkpoint is not None:
            options = options.replace(weights=Path(checkpoint))
        restorer = restorer_factory() if restorer_factory is not None else None
        self.engine = build_engine(options, restorer=restorer)

    def restore_file(self, src: str, dst: str) -> tuple[RunSummary | None, str | None]:
        from vidgpen import api

        options = self.engine.options
        try:
            if is_image_path(src):
                return api.restore_image(src, dst, options=options, engine=self.engine), None
            return api.restore_video(src, dst, options=options, engine=self.engine), None
        except VidgpenError as exc:
            return None, "; ".join([str(exc), *getattr(exc, "__notes__", [])])

    def restore_segment(self, src: str, segment: Segment, out: str) -> RunSummary:
        return restore_segment(src, segment, out, self.engine)

    def ready(self) -> bool:
        """Answers once the actor (restarted after a lost worker) has loaded its engine again."""
        return True


def _local_copy(checkpoint: bytes) -> Path:
    """The checkpoint as a file on this node (named by its content, so restarted actors reuse it; it stays while
    the actor runs because resumable runs identify their weights by the file)."""
    path = Path(tempfile.gettempdir()) / f"vidgpen-weights-{hashlib.sha256(checkpoint).hexdigest()[:16]}.pth"
    if not path.is_file():
        handle, temp = tempfile.mkstemp(prefix=".vidgpen-weights-", dir=path.parent)
        with os.fdopen(handle, "wb") as file:
            file.write(checkpoint)
        os.replace(temp, path)
    return path


def _start_workers(cluster: ClusterOptions, options: RestoreOptions, checkpoint, restorer_factory) -> list:
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0.0))
    cpus = int(resources.get("CPU", 1))
    if options.device == "cuda" and gpus == 0:
        raise ClusterError("--device cuda was asked for but the cluster has no GPU; use --device auto or cpu")
    if gpus > 0:
        count = cluster.workers or max(1, int(gpus / cluster.gpus_per_worker))
        shape = dict(num_gpus=cluster.gpus_per_worker, num_cpus=1)
        threads = max(1, cluster.cpus_per_worker)
    else:
        count = cluster.workers or max(1, cpus // cluster.cpus_per_worker)
        per_worker = max(1, min(cluster.cpus_per_worker, cpus // count))
        shape = dict(num_cpus=per_worker)
        threads = per_worker
    # Ray restarts a lost actor; the job, not Ray, retries its unit, on whichever actor is free first.
    actor = ray.remote(RestoreWorker).options(max_restarts=-1, max_task_retries=0, **shape)
    return [actor.remote(options, checkpoint, restorer_factory, threads) for _ in range(count)]


def _checkpoint_for_workers(options: RestoreOptions, restorer_factory) -> Path | None:
    if restorer_factory is not None:
        return None
    if options.weights is not None:
        path = Path(options.weights).resolve()
        if not path.is_file():
            raise InputError(f"--weights {options.weights}: no such file")
        return path
    from vidgpen.weights import ensure_weights

    return ensure_weights(options.model or "GPEN-BFR-512", options.weights_dir, offline=options.offline).resolve()


# ---------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _Unit:
    name: str
    method: str
    args: tuple
    weight: float  # for longest-first ordering
    file: Path
    segment: Segment | None = None


def _duration(path: Path) -> float:
    if is_image_path(path):
        return 0.0
    try:
        from vidgpen.video import probe

        return probe(path).duration or 0.0
    except VidgpenError:
        return float(path.stat().st_size)  # unreadable: its error is collected when it runs


def restore_with_ray(src: str | Path, dst: str | Path, options: RestoreOptions, cluster: ClusterOptions, *,
                     progress: JobProgress | None = None, notice: Callable[[str], None] | None = None,
                     restorer_factory: Callable[[], object] | None = None) -> ClusterSummary:
    """Restore a file or a folder on Ray. ``restorer_factory`` (a picklable callable returning a restorer) replaces
    loading the checkpoint on the workers (tests use a cheap stand-in)."""
    src, dst = Path(src), Path(dst)
    progress = progress or _SilentJobProgress()
    if not src.exists():
        raise InputError(f"{src}: no such file or folder")
    folder_job = src.is_dir()
    if folder_job:
        if dst.exists() and not dst.is_dir():
            raise OutputError(f"{dst} exists and is not a folder; a folder input needs a folder output")
        if dst.resolve() == src.resolve():
            raise OutputError("the output folder is the input folder; choose another one (inputs are never "
                              "overwritten)")
        files = sorted(p for p in src.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        if not files:
            raise InputError(f"{src} holds no photos or videos")
        dst.mkdir(parents=True, exist_ok=True)
    else:
        check_output(dst, options.overwrite)
        files = [src]
    checkpoint = _checkpoint_for_workers(options, restorer_factory)

    summary = ClusterSummary()
    summary.node_address = connect(cluster)
    weights_shared = check_shared_storage([dst if folder_job else dst.parent], files, checkpoint)
    worker_checkpoint = None
    if checkpoint is not None:
        # Shared: every actor opens the file; else one copy in the object store (resolved into the actor).
        worker_checkpoint = str(checkpoint) if weights_shared else ray.put(checkpoint.read_bytes())

    units: list[_Unit] = []
    segmented: dict[Path, tuple] = {}  # file -> (plan, journal)
    if folder_job:
        for path in files:
            target = dst / path.name
            if target.exists() and not options.overwrite:
                summary.skipped.append(path)  # outputs appear only complete, so it is done
                continue
            units.append(_Unit(path.name, "restore_file", (str(path), str(target)), _duration(path), path))
    else:
        planning = time.perf_counter()
        scan = scan_packets(src)
        plan = plan_segments(scan, options, segment_frames_for(scan, cluster.segment_seconds))
        summary.plan_seconds += time.perf_counter() - planning
        summary.warmup_frames += sum(s.preroll + s.postroll for s in plan.segments)
        if not plan.segmented:
            if notice and plan.reason:
                notice(f"{src.name} is restored as one unit: {plan.reason}")
            units.append(_Unit(src.name, "restore_file", (str(src), str(dst)), 1.0, src))
        else:
            journal = SegmentJournal.open(dst, journal_record(src, options, plan), options.resume)
            segmented[src] = (plan, journal)
            for segment in plan.segments:
                if journal.done(segment):
                    continue
                units.append(_Unit(f"{src.name} segment {segment.index + 1}/{len(plan.segments)}", "restore_segment",
                                   (str(src), segment, str(journal.output(segment))), segment.frames, src, segment))
    units.sort(key=lambda u: -u.weight)

    parts: dict[Path, list[RunSummary]] = {}
    started = time.perf_counter()
    progress.start(src.name, len(units))
    workers = []
    try:
        if units:
            workers = _start_workers(cluster, options, worker_checkpoint, restorer_factory)
            summary.workers = len(workers)
            _dispatch(units, workers, summary, parts, progress)
    finally:
        progress.finish()
        for worker in workers:  # their CPUs and GPUs go back to the cluster
            ray.kill(worker)
    for path, (plan, journal) in segmented.items():
        from vidgpen.cluster.join import join_segments

        joining = time.perf_counter()
        join_segments(path, [journal.output(s) for s in plan.segments], dst, overwrite=options.overwrite,
                      drop_incompatible=options.drop_incompatible)
        summary.join_seconds += time.perf_counter() - joining
        journal.discard()
        combined = combine_summaries(dst, parts.get(path, []), time.perf_counter() - started)
        combined.frames = plan.frames
        summary.results.append(combined)
    return summary


def _dispatch(units: list[_Unit], workers: list, summary: ClusterSummary, parts: dict, progress: JobProgress) -> None:
    """Keep every actor busy with the next unit (longest first) until all are done.

    An actor gets work only once it answers :meth:`RestoreWorker.ready` (its engine is loaded), so an actor the
    cluster has no room for never holds a unit. An actor whose worker died goes back to waiting for that answer
    (Ray restarts it where there is room); its unit goes back to the front of the queue at once. The job ends
    when every unit is done, whether or not every actor found a node."""
    pending = list(units)
    idle: list = []
    running: dict = {}     # unit task -> (unit, actor)
    restarting: dict = {actor.ready.remote(): actor for actor in workers}  # ready() call -> actor (re)starting
    attempts: dict[int, int] = {}
    while pending or running:
        while pending and idle:
            unit, actor = pending.pop(0), idle.pop(0)
            running[getattr(actor, unit.method).remote(*unit.args)] = (unit, actor)
        ready, _ = ray.wait(list(running) + list(restarting), num_returns=1, timeout=POLL_SECONDS)
        for ref in ready:
            if ref in restarting:
                actor = restarting.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    _raise_if_cannot_start(exc)
                    restarting[actor.ready.remote()] = actor  # lost again while restarting: wait again
                    continue
                idle.append(actor)
                continue
            unit, actor = running.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                _raise_if_cannot_start(exc)
                restarting[actor.ready.remote()] = actor
                attempts[id(unit)] = attempts.get(id(unit), 0) + 1
                if attempts[id(unit)] < MAX_UNIT_ATTEMPTS:
                    summary.retried.append(unit.name)
                    pending.insert(0, unit)
                    continue
                error = f"its worker died {MAX_UNIT_ATTEMPTS} times while restoring it (last: {_last_line(exc)})"
                if unit.segment is not None:
                    raise ClusterError(f"{unit.name}: {error}") from exc
                summary.failures.append((unit.file, error))
                progress.unit_done(unit.name, 0, error)
                continue
            except ray.exceptions.RayTaskError as exc:
                idle.append(actor)
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                if unit.segment is not None:
                    raise cause  # a segment's failure fails its file: the finished segments stay for --resume
                value = (None, f"{type(cause).__name__}: {cause}")
            else:
                idle.append(actor)
            if unit.segment is not None:
                parts.setdefault(unit.file, []).append(value)
                progress.unit_done(unit.name, value.frames, None)
                continue
            result, error = value
            if error is not None:
                summary.failures.append((unit.file, error))
            else:
                summary.results.append(result)
            progress.unit_done(unit.name, result.frames if result is not None else 0, error)


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def _raise_if_cannot_start(exc: "ray.exceptions.RayActorError") -> None:
    """An actor whose constructor fails (bad checkpoint, missing weights) never will start: stop the job."""
    if exc.actor_init_failed:
        raise ClusterError(f"a restorer worker could not start: {_last_line(exc)}") from exc


def shutdown() -> None:
    """Leave the cluster (stops a ``local`` instance)."""
    if ray.is_initialized():
        ray.shutdown()

