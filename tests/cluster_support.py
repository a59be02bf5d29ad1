"""Helpers shared by the segment and Ray tests (and the Ray test's child process): a clip with keyframes every
few frames, a cheap deterministic stand-in restorer (and variants that kill or block their worker), and frame-exact
comparisons."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from vidgpen.samples import write_face_clip

STAND_IN_SIZE = 128


class StandInRestorer:
    """Looks like a GPENRestorer to the pipeline; restores each crop on its own with a fixed, visible change
    (sharpened and warmed), so results do not depend on batching and the tests stay fast."""

    variant = "GPEN-BFR-256"
    size = STAND_IN_SIZE
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, batch_size: int = 4):
        self.batch_size = batch_size
        self.model = torch.nn.Conv2d(3, 3, 1)  # only for the resume journal's identity of the weights
        with torch.no_grad():
            self.model.weight.fill_(0.5)
            self.model.bias.fill_(0.0)

    def restore(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3) or crops.dtype != np.uint8:
            raise ValueError(f"expected uint8 crops [N, {self.size}, {self.size}, 3], got {crops.dtype} {crops.shape}")
        out = []
        for crop in crops:
            blurred = cv2.GaussianBlur(crop, (0, 0), 2.0).astype(np.int16)
            sharp = np.clip(2 * crop.astype(np.int16) - blurred, 0, 255)
            sharp[..., 0] = np.clip(sharp[..., 0] + 20, 0, 255)
            out.append(sharp.astype(np.uint8))
        return np.stack(out)


def make_stand_in_restorer() -> StandInRestorer:
    return StandInRestorer()


def write_keyframed_face_clip(path: str | Path, *, frames: int, width: int = 192, height: int = 108, fps: int = 24,
                              keyframe_interval: int = 12, audio: bool = True, seed: int = 0) -> Path:
    """The degraded moving astronaut with a keyframe every ``keyframe_interval`` frames (places to cut) and a tone."""
    return write_face_clip(path, frames=frames, width=width, height=height, fps=fps, noise=8.0, audio=audio,
                           seed=seed, keyframe_interval=keyframe_interval)


def decoded_video(path: Path) -> list[tuple[float, bytes]]:
    """(presentation time in seconds, sha256 of the rgb24 picture) of every frame of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(float(f.pts * stream.time_base), hashlib.sha256(f.to_ndarray(format="rgb24").tobytes()).digest())
                for f in container.decode(stream)]


def decoded_images(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def audio_packets(path: Path) -> list[tuple[int | None, bytes]]:
    """(pts, payload) of every audio packet, in file order."""
    with av.open(str(path)) as container:
        return [(p.pts, bytes(p)) for p in container.demux(audio=0) if p.size]


class KillOnceRestorer(StandInRestorer):
    """The stand-in restorer that kills its own worker process at its ``after_calls``-th call, once per ``marker``
    file (created atomically, so of all workers only the first to get there dies)."""

    def __init__(self, marker: str, after_calls: int):
        super().__init__()
        self.marker, self.after_calls, self.calls = marker, after_calls, 0

    def restore(self, crops):
        self.calls += 1
        if self.calls == self.after_calls:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)  # the worker process dies mid-unit, as on a crash or an OOM kill
        return super().restore(crops)


def make_kill_once_restorer(marker: str, after_calls: int) -> KillOnceRestorer:
    return KillOnceRestorer(marker, after_calls)


class BlockOnceRestorer(StandInRestorer):
    """The stand-in restorer that stops at its ``after_calls``-th call, once per ``marker`` file: it writes its node
    id and process id into the marker and sleeps, so the test can remove that node while the unit is in flight.
    Restorers made after the marker exists (the actor restarted elsewhere) append their node id to
    ``<marker>.restarted``. Never blocks past ``block_seconds``: a test that fails to remove the node gets an error."""

    def __init__(self, marker: str, after_calls: int, block_seconds: float):
        super().__init__()
        self.marker, self.after_calls, self.block_seconds, self.calls = marker, after_calls, block_seconds, 0
        if os.path.exists(marker):
            with open(f"{marker}.restarted", "a") as file:
                file.write(_ray_node_id() + "\n")

    def restore(self, crops):
        self.calls += 1
        if self.calls == self.after_calls and self._claim():
            deadline = time.monotonic() + self.block_seconds
            while time.monotonic() < deadline:
                time.sleep(0.1)  # the node (this process with it) should be removed now
            raise RuntimeError(f"the blocked restorer (pid {os.getpid()}) was not killed in {self.block_seconds} s")
        return super().restore(crops)

    def _claim(self) -> bool:
        """Writes the marker, complete, unless another restorer wrote it first (os.link never replaces)."""
        draft = f"{self.marker}.{os.getpid()}"
        Path(draft).write_text(json.dumps({"node_id": _ray_node_id(), "pid": os.getpid()}))
        try:
            os.link(draft, self.marker)
        except FileExistsError:
            return False
        finally:
            os.unlink(draft)
        return True


def _ray_node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def make_block_once_restorer(marker: str, after_calls: int, block_seconds: float) -> BlockOnceRestorer:
    return BlockOnceRestorer(marker, after_calls, block_seconds)
