"""``--resume``: an interrupted run leaves no output, keeps its restored faces, and a resumed run finishes it with
a file identical to an uninterrupted run's (frames, audio packets and bytes).

End-to-end runs use the recipe GPEN-BFR-256 checkpoint, MTCNN and the feathered mask (see conftest.py) with
batches of 2 faces, so a 16-frame clip with one face makes 8 model calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest

from vidgpen import api
from vidgpen.cli import main as cli_main
from vidgpen.config import RestoreOptions
from vidgpen.errors import OptionError
from vidgpen.models.restorer import GPENRestorer
from vidgpen.pipeline import build_engine
from vidgpen.resume import RestoredFaceStore, journal_differences, saved_progress, store_folder
from vidgpen.samples import write_face_clip

BATCH = 2
LONG_FRAMES, SHORT_FRAMES = 16, 6


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------

class ModelCalls:
    """Wraps a restore callable: counts the calls and raises KeyboardInterrupt at call ``interrupt_at``."""

    def __init__(self, restore, interrupt_at: int | None = None):
        self.restore, self.interrupt_at, self.calls = restore, interrupt_at, 0

    def __call__(self, crops):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.restore(crops)


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def audio_packet_digests(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [hashlib.sha256(bytes(packet)).hexdigest()
                for packet in container.demux(audio=0) if packet.size]


def assert_same_video(result: Path, reference: Path, frames: int) -> None:
    result_frames, reference_frames = decoded_frames(result), decoded_frames(reference)
    assert len(result_frames) == len(reference_frames) == frames
    for index, (got, want) in enumerate(zip(result_frames, reference_frames)):
        assert np.array_equal(got, want), f"frame {index} differs"
    audio = audio_packet_digests(reference)
    assert audio and audio_packet_digests(result) == audio
    assert result.read_bytes() == reference.read_bytes()  # x264 and the muxer are deterministic here


def leftovers(folder: Path) -> list[str]:
    """Hidden files and folders in ``folder`` (partial outputs, stores)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: clips, one engine with batches of 2, uninterrupted reference outputs
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {"long": write_face_clip(folder / "long.mp4", frames=LONG_FRAMES, width=320, height=180),
            "short": write_face_clip(folder / "short.mp4", frames=SHORT_FRAMES, width=320, height=180, seed=1)}


@pytest.fixture(scope="module")
def options(recipe_options) -> RestoreOptions:
    return RestoreOptions(**recipe_options, batch_size=BATCH)


@pytest.fixture(scope="module")
def engine(options):
    return build_engine(options)


@pytest.fixture(scope="module")
def references(clips, options, engine, tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """Uninterrupted outputs of both clips, with the number of model calls each took."""
    folder = tmp_path_factory.mktemp("references")
    result = {}
    for name, clip in clips.items():
        calls = ModelCalls(engine.restorer.restore)
        engine.restorer.restore = calls
        try:
            summary = api.restore_video(clip, folder / f"{name}.mp4", options=options, engine=engine)
        finally:
            del engine.restorer.restore  # back to the class's method
        assert summary.faces_reused == 0
        assert leftovers(folder) == []  # the store is deleted once the output is written
        result[name] = (folder / f"{name}.mp4", calls.calls)
    return result


def run_counted(engine, monkeypatch, src, dst, options, interrupt_at=None, notices=None):
    calls = ModelCalls(engine.restorer.restore, interrupt_at)
    monkeypatch.setattr(engine.restorer, "restore", calls)
    try:
        return api.restore_video(src, dst, options=options, engine=engine,
                                 notice=notices.append if notices is not None else None), calls
    finally:
        monkeypatch.undo()


def interrupt(engine, monkeypatch, src, dst, options, at: int) -> KeyboardInterrupt:
    with pytest.raises(KeyboardInterrupt) as caught:
        run_counted(engine, monkeypatch, src, dst, options, interrupt_at=at)
    return caught.value


# ---------------------------------------------------------------------------------------------------------------
# End to end through the library
# ---------------------------------------------------------------------------------------------------------------

def test_reference_run_uses_several_batches(references):
    for name, frames in (("long", LONG_FRAMES), ("short", SHORT_FRAMES)):
        path, calls = references[name]
        assert calls == frames // BATCH  # one face per frame
        assert len(decoded_frames(path)) == frames


def test_interrupted_run_resumes_to_identical_output(clips, references, engine, options, monkeypatch, tmp_path):
    reference, reference_calls = references["long"]
    dst = tmp_path / "out.mp4"

    stopped = interrupt(engine, monkeypatch, clips["long"], dst, options, at=3)
    assert not dst.exists()
    folder = store_folder(dst)
    assert leftovers(tmp_path) == [folder.name]  # no partial video, only the kept faces
    assert sorted(p.name for p in folder.iterdir()) == ["batch-000000.npz", "batch-000001.npz", "journal.json"]
    progress = saved_progress(folder)
    assert (progress.batches, progress.faces, progress.frames_done, progress.expected_frames) == (2, 4, 4, 16)
    note = stopped.__notes__[-1]
    assert "--resume" in note and str(folder) in note and "4 face(s)" in note

    notices = []
    summary, calls = run_counted(engine, monkeypatch, clips["long"], dst, options.replace(resume=True),
                                 notices=notices)
    assert calls.calls == reference_calls - 2  # the two saved batches skip the model
    assert summary.faces_reused == 4 and summary.faces == LONG_FRAMES and summary.warnings == []
    assert any("resuming" in n and "4 face(s)" in n for n in notices)
    assert leftovers(tmp_path) == []  # the store is gone once the output is written
    assert_same_video(dst, reference, LONG_FRAMES)


def test_resume_checks_every_batch_and_keeps_what_both_runs_restored(clips, references, engine, options,
                                                                    monkeypatch, tmp_path):
    """A resumed run that is interrupted again keeps the earlier batches and its own; a saved batch whose input
    crops differ from the new run's is restored again, the others are reused, and the result is still exact."""
    reference, reference_calls = references["short"]
    dst = tmp_path / "out.mp4"
    folder = store_folder(dst)
    interrupt(engine, monkeypatch, clips["short"], dst, options, at=2)
    assert saved_progress(folder).batches == 1
    stopped = interrupt(engine, monkeypatch, clips["short"], dst, options.replace(resume=True), at=2)
    assert saved_progress(folder).batches == 2  # batch 0 reused, batch 1 restored, batch 2 interrupted
    assert "4 face(s)" in stopped.__notes__[-1]

    first = folder / "batch-000000.npz"
    with np.load(first) as data:
        fields = dict(data)
    fields["face0000"], fields["face0001"] = fields["face0001"], fields["face0000"]  # the faces still match...
    fields["input_sha256"] = np.array("0" * 64)                                     # ...their input crops do not
    with open(first, "wb") as handle:
        np.savez(handle, **fields)

    summary, calls = run_counted(engine, monkeypatch, clips["short"], dst, options.replace(resume=True))
    assert (calls.calls, summary.faces_reused) == (reference_calls - 1, 2)
    assert any("1 saved batch(es)" in w for w in summary.warnings)
    assert leftovers(tmp_path) == []
    assert_same_video(dst, reference, SHORT_FRAMES)


def test_resume_refuses_other_options_and_a_plain_run_discards(clips, references, engine, options, monkeypatch,
                                                               tmp_path):
    reference, reference_calls = references["short"]
    dst = tmp_path / "out.mp4"
    interrupt(engine, monkeypatch, clips["short"], dst, options, at=2)
    folder = store_folder(dst)
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}

    for changed in (dict(crf=30), dict(alpha=0.5), dict(detect_every=2)):
        with pytest.raises(OptionError, match="other input or options.*run without --resume") as caught:
            run_counted(engine, monkeypatch, clips["short"], dst, options.replace(resume=True, **changed))
        assert f"(changed: {next(iter(changed))})" in str(caught.value)
    # the same checkpoint with another batch size groups faces differently: not reusable
    restorer = GPENRestorer(engine.restorer.model, engine.restorer.variant, device="cpu", dtype="fp32",
                            batch_size=3)
    with pytest.raises(OptionError, match=r"\(changed: restorer\)"):
        api.restore_video(clips["short"], dst, options=options.replace(resume=True),
                          engine=dataclasses.replace(engine, restorer=restorer))
    copy = tmp_path / "copy.mp4"  # same bytes, another file
    copy.write_bytes(clips["short"].read_bytes())
    with pytest.raises(OptionError, match=r"\(changed: input\)"):
        run_counted(engine, monkeypatch, copy, dst, options.replace(resume=True))
    copy.unlink()
    assert not dst.exists() and leftovers(tmp_path) == [folder.name]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == kept  # refused runs leave the progress alone

    notices = []
    summary, calls = run_counted(engine, monkeypatch, clips["short"], dst, options, notices=notices)
    assert any("discarding the saved progress" in n for n in notices)
    assert (calls.calls, summary.faces_reused) == (reference_calls, 0)
    assert leftovers(tmp_path) == []
    assert_same_video(dst, reference, SHORT_FRAMES)


def test_photos_ignore_resume(clips, engine, options, tmp_path):
    import cv2

    photo = tmp_path / "face.png"
    assert cv2.imwrite(str(photo), cv2.cvtColor(decoded_frames(clips["short"])[0], cv2.COLOR_RGB2BGR))
    summary = api.restore_image(photo, tmp_path / "restored.png", options=options.replace(resume=True),
                                engine=engine)
    assert summary.faces == 1
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------------

def test_cli_interrupt_prints_how_to_resume_and_resume_completes(clips, references, recipe_options, monkeypatch,
                                                                tmp_path, capsys):
    reference, reference_calls = references["short"]
    dst = tmp_path / "out.mp4"
    folder = store_folder(dst)
    argv = ["restore", str(clips["short"]), "-o", str(dst), "--model", "GPEN-BFR-256",
            "--weights", str(recipe_options["weights"]), "--detector", "mtcnn", "--mask", "feathered",
            "--dtype", "fp32", "--batch-size", str(BATCH), "--resume"]
    real_restore = GPENRestorer.restore  # the CLI builds its own restorer: patch the class
    counter = {"calls": 0, "interrupt_at": 2}

    def restore(self, crops):
        counter["calls"] += 1
        if counter["calls"] == counter["interrupt_at"]:
            raise KeyboardInterrupt
        return real_restore(self, crops)

    monkeypatch.setattr(GPENRestorer, "restore", restore)
    assert cli_main(argv) == 130  # --resume without saved progress: a fresh start, then Ctrl-C
    err = capsys.readouterr().err
    assert "no saved progress" in err and "starting from the beginning" in err
    assert "interrupted; no output was written" in err
    assert (f"stopped after restoring 2 face(s) in the first 2 of {SHORT_FRAMES} frame(s); run the same command "
            f"with --resume to continue (progress kept in {folder})") in err
    assert not dst.exists() and leftovers(tmp_path) == [folder.name]

    counter.update(calls=0, interrupt_at=None)
    assert cli_main(argv) == 0
    assert "resuming: 2 face(s) restored earlier are reused" in capsys.readouterr().err
    assert counter["calls"] == reference_calls - 1
    assert leftovers(tmp_path) == []
    assert_same_video(dst, reference, SHORT_FRAMES)


# ---------------------------------------------------------------------------------------------------------------
# The store on its own
# ---------------------------------------------------------------------------------------------------------------

def _journal(**changes):
    journal = {"format": 1, "input": {"path": "/a.mp4", "size": 1, "mtime_ns": 2},
               "options": {"crf": None, "alpha": 1.0}, "restorer": {"dtype": "float32"}, "expected_frames": 3}
    journal.update(changes)
    return journal


def test_journal_differences_name_what_changed():
    assert journal_differences(_journal(), _journal(expected_frames=9)) == []
    assert journal_differences(_journal(), _journal(options={"crf": 20, "alpha": 1.0})) == ["crf"]
    assert journal_differences(_journal(), _journal(restorer={"dtype": "bfloat16"})) == ["restorer"]
    assert journal_differences(_journal(), _journal(input={"path": "/a.mp4", "size": 1, "mtime_ns": 3})) == ["input"]


def test_store_round_trips_batches_exactly(tmp_path):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in (2, 3)]
    keys = [[(0, 0), (1, 0)], [(2, 0), (2, 1), (3, 0)]]
    model = ModelCalls(lambda c: 255 - c)
    dst = tmp_path / "out.mp4"

    store = RestoredFaceStore.open(dst, _journal(), resume=False)
    first = [store.restore(k, c, model) for k, c in zip(keys, crops)]
    assert model.calls == 2 and store.faces_saved == 5
    assert json.loads((store.folder / "journal.json").read_text()) == _journal()

    again = RestoredFaceStore.open(dst, _journal(expected_frames=4), resume=True)
    second = [again.restore(k, c, model) for k, c in zip(keys, crops)]
    assert model.calls == 2 and again.faces_reused == 5  # nothing recomputed
    for a, b, c in zip(first, second, crops):
        assert b.dtype == np.uint8 and np.array_equal(a, b) and np.array_equal(b, 255 - c)

    other = RestoredFaceStore.open(dst, _journal(), resume=True)
    other.restore([(0, 1), (1, 0)], crops[0], model)                  # other faces in batch 0
    other.restore(keys[1], crops[1][::-1].copy(), model)               # same faces, other crops in batch 1
    assert model.calls == 4 and other.faces_reused == 0 and other.batches_redone == 2

    second_file = other.folder / "batch-000001.npz"
    second_file.write_bytes(second_file.read_bytes()[:100])  # damaged: only batch 0 counts any more
    assert (other.keep().batches, other.keep().faces) == (1, 2)
    damaged = RestoredFaceStore.open(dst, _journal(), resume=True)
    assert np.array_equal(damaged.restore([(0, 1), (1, 0)], crops[0], model), 255 - crops[0])
    assert np.array_equal(damaged.restore(keys[1], crops[1], model), 255 - crops[1])
    assert model.calls == 5 and damaged.faces_reused == 2 and damaged.batches_redone == 1
    damaged.discard()
    assert not damaged.folder.exists()


def test_keep_removes_an_empty_store(tmp_path):
    store = RestoredFaceStore.open(tmp_path / "out.mp4", _journal(), resume=False)
    assert store.folder.is_dir()
    assert store.keep() is None and not store.folder.exists()


def test_cli_no_save_progress_keeps_nothing_beside_the_output(clips, references, recipe_options, monkeypatch,
                                                              tmp_path, capsys):
    reference, _ = references["short"]
    dst = tmp_path / "out.mp4"
    argv = ["restore", str(clips["short"]), "-o", str(dst), "--model", "GPEN-BFR-256",
            "--weights", str(recipe_options["weights"]), "--detector", "mtcnn", "--mask", "feathered",
            "--dtype", "fp32", "--batch-size", str(BATCH), "--no-save-progress"]
    real_restore = GPENRestorer.restore
    counter = {"calls": 0}

    def restore(self, crops):
        counter["calls"] += 1
        if counter["calls"] == 2:
            raise KeyboardInterrupt
        return real_restore(self, crops)

    monkeypatch.setattr(GPENRestorer, "restore", restore)
    assert cli_main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted; no output was written" in err and "--resume" not in err
    assert leftovers(tmp_path) == []  # neither a partial video nor saved faces

    monkeypatch.setattr(GPENRestorer, "restore", real_restore)
    assert cli_main(argv) == 0
    assert leftovers(tmp_path) == []
    assert_same_video(dst, reference, SHORT_FRAMES)  # the same file as a run that saved its progress

    dst.unlink()
    capsys.readouterr()
    assert cli_main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--resume" in err and "--no-save-progress" in err and not dst.exists()


def test_photos_refuse_no_save_progress(clips, engine, options, tmp_path):
    photo = tmp_path / "face.png"
    photo.write_bytes(b"")  # refused before it is read
    with pytest.raises(OptionError, match="--save-progress is for videos"):
        api.restore_image(photo, tmp_path / "restored.png", options=options.replace(save_progress=False),
                          engine=engine)
