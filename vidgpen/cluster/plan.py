"""Where a long video may be cut into independently restored segments, found without decoding a frame.

A packet scan of the main video stream gives every frame's presentation time and which packets are keyframes.
Segments begin at keyframes (so a piece's decoding starts where the file can be entered) and are restored with
warm-up frames around them:

- pre-roll, before the segment: the tracker's latency (hysteresis and gap bridging decide a face from the frames
  around it), the smoothing window, and the memory of the temporal blend: each frame carries the previous one's
  blended face with a weight of at most ``temporal_strength``, so after ``n`` frames a different start is worth
  less than ``strength ** n`` and, once that is far below float32 precision, gone;
- post-roll, after the segment: the tracker's latency and the smoothing window (frames a face's smoothed pose
  and its confirmation wait for).

Warm-up frames are decoded and restored but not written. A file whose timestamps are missing, repeated or out of
order, or whose packets are damaged, cannot be cut where its frames are: it is restored as one unit; so are runs
whose options carry state across the whole file (One Euro smoothing, ``temporal_strength`` 1) or write one
side file for it (``report``, ``save_faces``, ``start``/``end`` trims).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from vidgpen.config import RestoreOptions
from vidgpen.faces.track import FaceTracker
from vidgpen.video.probe import main_video_stream, open_input_container

DEFAULT_SEGMENT_SECONDS = 60.0
# A blended face's dependence on a different start has fallen below this after the blend memory (a factor of
# ~1e-9 of 255 levels is far below one float32 step at those values, so the blended faces become equal).
BLEND_FORGET_FACTOR = 1e-9


@dataclass(frozen=True)
class PacketScan:
    """The main video stream's timing as its packets state it (no decoding).

    ``frame_pts``: every frame's presentation time in ``time_base`` ticks, sorted; ``keyframe_indices``: positions
    in ``frame_pts`` of keyframe packets; ``problem``: why the timing cannot be trusted (None when it can).
    """

    path: Path
    time_base: Fraction
    start_time: float
    frame_pts: tuple[int, ...]
    keyframe_indices: tuple[int, ...]
    problem: str | None = None

    @property
    def frames(self) -> int:
        return len(self.frame_pts)


def scan_packets(path: str | Path) -> PacketScan:
    """Read every packet of the main video stream (no decoding): timestamps, keyframes, damage."""
    container = open_input_container(path)
    try:
        stream = main_video_stream(container, Path(path))
        time_base = stream.time_base
        start_time = float(container.start_time / av.time_base) if container.start_time is not None else 0.0
        pts_list: list[int] = []
        keyframe_pts: list[int] = []
        problem = None
        last_dts = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's flush packet
                if packet.is_corrupt:
                    problem = problem or "damaged packets"
                if packet.pts is None:
                    problem = problem or "packets without timestamps"
                    continue
                if packet.dts is not None:
                    if last_dts is not None and packet.dts <= last_dts:
                        problem = problem or "decoding timestamps out of order"
                    last_dts = packet.dts
                pts_list.append(packet.pts)
                if packet.is_keyframe:
                    keyframe_pts.append(packet.pts)
        except av.error.FFmpegError:
            problem = problem or "unreadable data"
    finally:
        container.close()
    frame_pts = sorted(pts_list)
    if len(set(frame_pts)) != len(frame_pts):
        problem = problem or "repeated timestamps"
    if not frame_pts:
        problem = problem or "no video packets"
    position = {pts: i for i, pts in enumerate(frame_pts)}
    keyframe_indices = tuple(sorted({position[p] for p in keyframe_pts}))
    return PacketScan(Path(path), time_base, start_time, tuple(frame_pts), keyframe_indices, problem)


@dataclass(frozen=True)
class Warmup:
    """Warm-up frames restored around each segment and dropped: ``preroll`` before it, ``postroll`` after."""

    preroll: int
    postroll: int


def blend_memory_frames(temporal_strength: float) -> int:
    """Frames after which the temporal blend has forgotten how a track started (see the module docstring)."""
    if temporal_strength <= 0.0:
        return 0
    if temporal_strength >= 1.0:
        raise ValueError("a temporal strength of 1 never forgets")
    return math.ceil(math.log(BLEND_FORGET_FACTOR) / math.log(temporal_strength))


def warmup_frames(options: RestoreOptions) -> Warmup:
    """The pre-roll and post-roll a segment needs for its frames to equal those of one uninterrupted run."""
    # As the pipeline builds it: with --detect-every N > 1 optical flow gives faces on every frame in between.
    tracker = FaceTracker(lookahead=options.lookahead, smoothing=options.smoothing)
    latency = tracker.latency_frames + tracker.lookahead
    # Faces followed by optical flow agree with an uninterrupted run from the first regular detection on
    # (vidgpen.faces.flow.DetectAndFollow), at most N frames into the warm-up.
    sync = options.detect_every if options.detect_every > 1 else 0
    preroll = latency + sync + blend_memory_frames(options.temporal_strength)
    return Warmup(preroll=preroll, postroll=latency)


def one_unit_reason(options: RestoreOptions) -> str | None:
    """Why these options keep a video in one piece, or None when it may be segmented."""
    if options.start is not None or options.end is not None:
        return "a --start/--end trim"
    if options.report is not None or options.save_faces is not None:
        return "--report/--save-faces (one file for the whole video)"
    if options.smoothing == "one-euro":
        return "One Euro smoothing (its filter carries state from the first frame)"
    if options.temporal_strength >= 1.0:
        return "--temporal-strength 1 (the blend never forgets)"
    if options.max_drift is not None:
        return "--max-drift (a face's strength follows its drift from the track's first frame on)"
    if options.deinterlace == "field-rate":
        return "--deinterlace field-rate (frames in a time base of their own)"
    return None


@dataclass(frozen=True)
class Segment:
    """One piece of a planned video.

    ``first_frame``/``end_frame``: its frames, positions in the scan's ``frame_pts`` (end exclusive).
    ``keep_start_pts``/``keep_end_pts``: the same as presentation times (None: the file's start / end).
    ``read_start``/``read_end``: the decoded span with its warm-up, in seconds from the beginning of the file
    (None: open), placed half a frame before the first and after the last frame wanted.
    """

    index: int
    first_frame: int
    end_frame: int
    keep_start_pts: int | None
    keep_end_pts: int | None
    read_start: float | None
    read_end: float | None
    preroll: int
    postroll: int

    @property
    def frames(self) -> int:
        return self.end_frame - self.first_frame


@dataclass(frozen=True)
class SegmentPlan:
    """How a video is restored: several :class:`Segment` s, or one unit (then ``reason`` says why)."""

    source: Path
    frames: int
    segments: tuple[Segment, ...]
    warmup: Warmup
    reason: str | None = None

    @property
    def segmented(self) -> bool:
        return len(self.segments) > 1

    def to_json(self) -> dict:
        return {"source": str(self.source), "frames": self.frames, "reason": self.reason,
                "warmup": asdict(self.warmup), "segments": [asdict(s) for s in self.segments]}


def plan_segments(scan: PacketScan, options: RestoreOptions, segment_frames: int, *,
                  warmup: Warmup | None = None) -> SegmentPlan:
    """Cut the scanned video into segments of about ``segment_frames`` frames at keyframes.

    A segment starts at the first keyframe at least ``segment_frames`` after the previous start; a last piece
    shorter than half a segment joins the one before. ``warmup`` overrides :func:`warmup_frames` (tests use it
    to show what a seam looks like without warm-up).
    """
    if segment_frames < 1:
        raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
    total = scan.frames
    if scan.problem is not None:
        reason = f"its video timestamps cannot be trusted ({scan.problem})"
    else:
        reason = one_unit_reason(options)
    starts = [0]
    if reason is None:
        for key in scan.keyframe_indices:
            if key - starts[-1] >= segment_frames:
                starts.append(key)
        if len(starts) > 1 and total - starts[-1] < segment_frames / 2:
            starts.pop()
        if len(starts) == 1:
            reason = "it is not longer than one segment" if total <= segment_frames else \
                "it has no keyframe where a segment could start"
    if reason is not None:
        whole = Segment(0, 0, total, None, None, None, None, 0, 0)
        return SegmentPlan(scan.path, total, (whole,), Warmup(0, 0), reason)
    warmup = warmup if warmup is not None else warmup_frames(options)
    bounds = starts + [total]
    segments = tuple(_segment(scan, i, a, b, warmup, options.detect_every) for i, (a, b) in
                     enumerate(zip(bounds[:-1], bounds[1:])))
    return SegmentPlan(scan.path, total, segments, warmup)


def _segment(scan: PacketScan, index: int, first: int, end: int, warmup: Warmup, detect_every: int) -> Segment:
    pts, total = scan.frame_pts, scan.frames
    # Detection runs on every n-th frame counted from the first decoded one: start the warm-up on the same phase
    # as an uninterrupted run (equal until a scene cut restarts the count).
    read_first = max(0, first - warmup.preroll)
    read_first -= read_first % detect_every
    read_end = min(total, end + warmup.postroll)

    def between(i: int) -> float:  # seconds from the beginning, half-way between frames i - 1 and i
        return float((pts[i - 1] + pts[i]) * scan.time_base / 2) - scan.start_time

    return Segment(
        index=index, first_frame=first, end_frame=end,
        keep_start_pts=pts[first] if first > 0 else None,
        keep_end_pts=pts[end] if end < total else None,
        read_start=between(read_first) if read_first > 0 else None,
        read_end=between(read_end) if read_end < total else None,
        preroll=first - read_first, postroll=read_end - end,
    )


def segment_frames_for(scan: PacketScan, seconds: float = DEFAULT_SEGMENT_SECONDS) -> int:
    """Frames in about ``seconds`` of this video (at least 1)."""
    if scan.frames < 2:
        return 1
    span = float((scan.frame_pts[-1] - scan.frame_pts[0]) * scan.time_base)
    rate = (scan.frames - 1) / span if span > 0 else 25.0
    return max(1, round(seconds * rate))
