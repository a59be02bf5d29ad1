"""Restore one segment of a long video, keep a journal of finished segments, and run a segmented file.

A segment is restored by the ordinary pipeline over its span plus warm-up frames (see :mod:`vidgpen.cluster.plan`)
and written, video only and with the source's timestamps, to a work folder beside the output::

    <dst.parent>/.<dst.name>.vidgpen-segments/
        journal.json            the input, every option that changes pixels, and the plan
        segment-00000.mkv       finished segments (they appear by atomic rename, so present means complete)
        segment-00001.mkv
        ...

A resumed run (``resume``) with the same journal skips the segments present; the others are restored again (and a
segment interrupted half-way resumes from its own saved faces, :mod:`vidgpen.resume`). When every segment is there
they are joined into ``dst`` (:mod:`vidgpen.cluster.join`) and the work folder is deleted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from vidgpen.cluster.join import join_segments
from vidgpen.cluster.plan import Segment, SegmentPlan
from vidgpen.config import RestoreOptions
from vidgpen.errors import InputError, OptionError, OutputError
from vidgpen.pipeline import FaceEngine, FrameWindow, Progress, RunSummary, run_video
from vidgpen.resume import PIXEL_OPTIONS, file_identity

JOURNAL_NAME = "journal.json"
FORMAT_VERSION = 1


def work_folder(dst: str | Path) -> Path:
    dst = Path(dst)
    return dst.parent / f".{dst.name}.vidgpen-segments"


def journal_record(src: str | Path, options: RestoreOptions, plan: SegmentPlan) -> dict:
    """What decides the segments' content: the input file, the pixel options and the plan, in JSON types."""
    record = {"format": FORMAT_VERSION, "input": file_identity(src),
              "options": {name: getattr(options, name) for name in PIXEL_OPTIONS},
              "plan": plan.to_json()}
    return json.loads(json.dumps(record, default=str))


class SegmentJournal:
    """The work folder of one segmented output: which segments exist, where each one goes."""

    def __init__(self, folder: Path, suffix: str):
        self.folder = folder
        self.suffix = suffix

    @classmethod
    def open(cls, dst: str | Path, record: dict, resume: bool) -> "SegmentJournal":
        """Create (or, with ``resume``, reopen) the work folder for ``dst``; a stale folder is replaced unless
        ``resume`` asks to keep it, and then it must have been made for the same input, options and plan."""
        dst = Path(dst)
        folder = work_folder(dst)
        journal_file = folder / JOURNAL_NAME
        if folder.exists():
            saved = None
            if journal_file.is_file():
                try:
                    saved = json.loads(journal_file.read_text())
                except (OSError, ValueError):
                    saved = None
            if resume and saved is not None and saved != record:
                changed = sorted(k for k in set(saved) | set(record) if saved.get(k) != record.get(k))
                raise OptionError(f"--resume: the finished segments in {folder} were made from a different "
                                  f"{', '.join(changed)}; run without --resume to start again")
            if not resume or saved is None:
                shutil.rmtree(folder)
        folder.mkdir(exist_ok=True)
        for leftover in folder.glob(".*.partial*"):  # an encoder's temporary file from a crashed run
            if leftover.is_file():
                leftover.unlink()
        if not journal_file.exists():
            temp = folder / (JOURNAL_NAME + ".partial")
            temp.write_text(json.dumps(record, indent=1))
            os.replace(temp, journal_file)
        return cls(folder, dst.suffix)

    def output(self, segment: Segment) -> Path:
        return self.folder / f"segment-{segment.index:05d}{self.suffix}"

    def done(self, segment: Segment) -> bool:
        return self.output(segment).is_file()

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def frame_window(segment: Segment) -> FrameWindow:
    return FrameWindow(segment.read_start, segment.read_end, segment.keep_start_pts, segment.keep_end_pts)


def restore_segment(src: str | Path, segment: Segment, out: str | Path, engine: FaceEngine,
                    progress: Progress | None = None, notice: Callable[[str], None] | None = None) -> RunSummary:
    """Restore ``segment`` of ``src`` into ``out`` (video only, the source's timestamps); checks that every frame
    the packet scan promised was written, so a file that decodes differently from its packets is caught."""
    options = engine.options.replace(start=None, end=None, overwrite=True)
    summary = run_video(src, out, dataclasses.replace(engine, options=options), progress, notice,
                        window=frame_window(segment))
    if summary.frames != segment.frames:
        Path(out).unlink(missing_ok=True)
        raise InputError(f"{src}: segment {segment.index} decoded to {summary.frames} frames where its packets "
                         f"promise {segment.frames}; restore this file without --cluster")
    return summary


def combine_summaries(dst: Path, parts: list[RunSummary], seconds: float) -> RunSummary:
    """One summary for a segmented file (frames and faces of the kept frames, busy seconds summed)."""
    total = RunSummary(output=dst, seconds=seconds)
    for part in parts:
        total.frames += part.frames
        total.faces += part.faces
        total.faces_reused += part.faces_reused
        for stage, busy in part.stage_seconds.items():
            total.stage_seconds[stage] = total.stage_seconds.get(stage, 0.0) + busy
        total.warnings += [w for w in part.warnings if w not in total.warnings]
    return total


def check_output(dst: str | Path, overwrite: bool) -> None:
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst} already exists; pass --overwrite to replace it or choose another name")
    if not dst.parent.is_dir():
        raise OutputError(f"{dst}: the folder {dst.parent} does not exist; create it first")


def restore_segmented(src: str | Path, dst: str | Path, engine: FaceEngine, plan: SegmentPlan, *,
                      progress_factory: Callable[[], Progress] | None = None,
                      notice: Callable[[str], None] | None = None,
                      on_segment: Callable[[Segment, RunSummary | None], None] | None = None) -> RunSummary:
    """Restore ``plan``'s segments one after another on this machine, then join them into ``dst``.

    What a cluster does in parallel, in one process: the reference its output must equal, and the fallback.
    """
    options = engine.options
    check_output(dst, options.overwrite)
    started = time.perf_counter()
    journal = SegmentJournal.open(dst, journal_record(src, options, plan), options.resume)
    parts = []
    for segment in plan.segments:
        if journal.done(segment):
            if on_segment:
                on_segment(segment, None)
            continue
        progress = progress_factory() if progress_factory else None
        part = restore_segment(src, segment, journal.output(segment), engine, progress, notice)
        parts.append(part)
        if on_segment:
            on_segment(segment, part)
    join_segments(src, [journal.output(s) for s in plan.segments], dst, overwrite=options.overwrite,
                  drop_incompatible=options.drop_incompatible)
    journal.discard()
    summary = combine_summaries(Path(dst), parts, time.perf_counter() - started)
    summary.frames = plan.frames
    return summary
