"""The weights manager against a real HTTP server on 127.0.0.1: download, resume, corruption, offline, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import re
import sys
import threading
import types
from pathlib import Path

import pytest
import torch

from vidgpen import weights
from vidgpen.cli import main as cli_main
from vidgpen.errors import WeightsError

UNREACHABLE_URL = "http://127.0.0.1:1/GPEN-BFR-256.pth"


def _checkpoint_bytes(seed: int = 0, numel: int = 600_000) -> bytes:
    """A small real torch checkpoint (zip format, ~2.4 MB): bigger than one download chunk."""
    generator = torch.Generator().manual_seed(seed)
    state = {"conv.weight": torch.randn(numel, generator=generator), "conv.bias": torch.randn(8, generator=generator)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoint() -> bytes:
    return _checkpoint_bytes()


class _ServerState:
    """What the test server serves and how it misbehaves; ``requests`` logs (Range header, status) per GET."""

    def __init__(self, body: bytes):
        self.body = body
        self.cuts_left = 0  # this many responses stop after ``cut_at`` bytes of the file
        self.cut_at = len(body) * 2 // 5
        self.ignore_range = False  # answer 200 with the whole file even to a Range request
        self.corrupt_offset: int | None = None  # flip the byte at this offset
        self.error_status: int | None = None  # answer every request with this HTTP error
        self.requests: list[tuple[str | None, int]] = []
        self.lock = threading.Lock()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        state: _ServerState = self.server.state
        if state.error_status is not None:
            self.send_error(state.error_status)
            return
        data = bytearray(state.body)
        if state.corrupt_offset is not None:
            data[state.corrupt_offset] ^= 0xFF
        range_header = self.headers.get("Range")
        start, status = 0, 200
        if range_header and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            status = 206
            if start >= len(data):
                with state.lock:
                    state.requests.append((range_header, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        with state.lock:
            state.requests.append((range_header, status))
            cut = state.cuts_left > 0
            state.cuts_left -= cut
        payload = bytes(data[start:])
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if cut:
            # Send part of the body, then drop the connection as a flaky network would.
            self.wfile.write(payload[: max(0, state.cut_at - start)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(checkpoint):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.daemon_threads = True
    httpd.state = _ServerState(checkpoint)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/GPEN-BFR-256.pth"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _point_registry_at(monkeypatch, name: str, url: str, **changes) -> weights.WeightsEntry:
    entry = dataclasses.replace(weights.REGISTRY[name], urls=(url,), **changes)
    monkeypatch.setitem(weights.REGISTRY, name, entry)
    return entry


# ------------------------------------------------------------------------------------------------ download


def test_download_writes_the_served_file_and_prints_its_sha256(server, checkpoint, tmp_path, capsys):
    folder = tmp_path / "weights"
    path = weights.download("GPEN-BFR-256", folder, url=server.url, expected_sha256=_sha256(checkpoint),
                            progress=False)
    assert path == folder / "GPEN-BFR-256.pth"
    assert path.read_bytes() == checkpoint
    assert sorted(p.name for p in folder.iterdir()) == ["GPEN-BFR-256.pth"]  # no .partial left behind
    assert weights.sha256_file(path) == _sha256(checkpoint)
    assert f"sha256 {_sha256(checkpoint)}  GPEN-BFR-256.pth (matches the published digest)" in capsys.readouterr().err
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(loaded["conv.bias"], torch.load(io.BytesIO(checkpoint), weights_only=True)["conv.bias"])
    assert server.state.requests == [(None, 200)]


def test_digest_is_printed_even_when_none_is_published(server, checkpoint, tmp_path, capsys):
    assert weights.REGISTRY["GPEN-BFR-256"].sha256 is None
    weights.download("GPEN-BFR-256", tmp_path, url=server.url, progress=False)
    assert f"sha256 {_sha256(checkpoint)}  GPEN-BFR-256.pth (no published digest to compare)" in capsys.readouterr().err


def test_interrupted_download_resumes_with_range_in_the_same_call(server, checkpoint, tmp_path):
    server.state.cuts_left = 1
    path = weights.download("GPEN-BFR-256", tmp_path, url=server.url, expected_sha256=_sha256(checkpoint),
                            progress=False)
    assert path.read_bytes() == checkpoint
    cut_at = server.state.cut_at
    assert server.state.requests == [(None, 200), (f"bytes={cut_at}-", 206)]


def test_interrupted_download_keeps_the_partial_and_the_next_call_resumes(server, checkpoint, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(weights, "_MAX_ATTEMPTS_PER_URL", 1)
    server.state.cuts_left = 1
    destination = tmp_path / "GPEN-BFR-256.pth"
    partial = tmp_path / "GPEN-BFR-256.pth.partial"
    with pytest.raises(WeightsError) as caught:
        weights.download("GPEN-BFR-256", tmp_path, url=server.url, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert server.url in message and str(destination) in message and "resume" in message
    assert not destination.exists()
    assert partial.read_bytes() == checkpoint[: server.state.cut_at]

    path = weights.download("GPEN-BFR-256", tmp_path, url=server.url, expected_sha256=_sha256(checkpoint),
                            progress=False)
    assert path.read_bytes() == checkpoint
    assert not partial.exists()
    assert server.state.requests[-1] == (f"bytes={server.state.cut_at}-", 206)


def test_server_that_ignores_range_makes_the_download_start_over(server, checkpoint, tmp_path):
    server.state.ignore_range = True
    (tmp_path / "GPEN-BFR-256.pth.partial").write_bytes(b"stale bytes from another file" * 100)
    path = weights.download("GPEN-BFR-256", tmp_path, url=server.url, progress=False)
    assert path.read_bytes() == checkpoint  # the stale prefix was truncated, not kept
    assert server.state.requests == [("bytes=2900-", 200)]


def test_complete_partial_is_finished_without_a_body(server, checkpoint, tmp_path):
    (tmp_path / "GPEN-BFR-256.pth.partial").write_bytes(checkpoint)
    path = weights.download("GPEN-BFR-256", tmp_path, url=server.url, expected_sha256=_sha256(checkpoint),
                            progress=False)
    assert path.read_bytes() == checkpoint
    assert server.state.requests == [(f"bytes={len(checkpoint)}-", 416)]


def test_resume_false_discards_the_partial(server, checkpoint, tmp_path):
    (tmp_path / "GPEN-BFR-256.pth.partial").write_bytes(checkpoint[:1000])
    weights.download("GPEN-BFR-256", tmp_path, url=server.url, progress=False, resume=False)
    assert server.state.requests == [(None, 200)]


def test_wrong_digest_is_rejected_and_nothing_is_left(server, checkpoint, tmp_path):
    server.state.corrupt_offset = len(checkpoint) // 2
    with pytest.raises(WeightsError) as caught:
        weights.download("GPEN-BFR-256", tmp_path, url=server.url, expected_sha256=_sha256(checkpoint),
                         progress=False)
    message = str(caught.value)
    assert "\n" not in message and "corrupt" in message and _sha256(checkpoint) in message
    assert str(tmp_path / "GPEN-BFR-256.pth") in message
    assert list(tmp_path.iterdir()) == []


def test_damaged_archive_is_rejected_without_a_published_digest(server, checkpoint, tmp_path):
    # A flipped byte inside the tensor data breaks that zip member's CRC32.
    server.state.corrupt_offset = len(checkpoint) // 2
    with pytest.raises(WeightsError, match="damaged"):
        weights.download("GPEN-BFR-256", tmp_path, url=server.url, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_never_replaces_a_present_file(server, checkpoint, tmp_path):
    destination = tmp_path / "GPEN-BFR-256.pth"
    destination.write_bytes(b"the file that was here")
    server.state.corrupt_offset = 10
    with pytest.raises(WeightsError):
        weights.download("GPEN-BFR-256", tmp_path, url=server.url, expected_sha256=_sha256(checkpoint),
                         progress=False)
    assert destination.read_bytes() == b"the file that was here"


def test_unreachable_url_gives_one_line_naming_url_and_path(tmp_path):
    with pytest.raises(WeightsError) as caught:
        weights.download("GPEN-BFR-256", tmp_path, url=UNREACHABLE_URL, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert UNREACHABLE_URL in message and str(tmp_path / "GPEN-BFR-256.pth") in message
    assert "refused" in message.lower()
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_reported_with_its_status(server, tmp_path):
    server.state.error_status = 404
    with pytest.raises(WeightsError) as caught:
        weights.download("GPEN-BFR-256", tmp_path, url=server.url, progress=False)
    assert "HTTP 404" in str(caught.value) and server.url in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_second_source_is_used_when_the_first_is_down(server, checkpoint, tmp_path, monkeypatch):
    entry = _point_registry_at(monkeypatch, "GPEN-BFR-256", UNREACHABLE_URL)
    entry = dataclasses.replace(entry, urls=(UNREACHABLE_URL, server.url))
    monkeypatch.setitem(weights.REGISTRY, "GPEN-BFR-256", entry)
    path = weights.download("GPEN-BFR-256", tmp_path, progress=False)
    assert path.read_bytes() == checkpoint


def test_plain_progress_lines_when_stderr_is_not_a_terminal(server, checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(weights, "_PLAIN_REPORT_INTERVAL_S", 0.0)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    weights.download("GPEN-BFR-256", tmp_path, url=server.url, progress=True)
    err = capsys.readouterr().err
    assert f"downloading GPEN-BFR-256 from {server.url}" in err
    assert "GPEN-BFR-256.pth: starting 0 B of 2.4 MB (0%)" in err
    assert "GPEN-BFR-256.pth: 2.4 MB of 2.4 MB (100%)" in err
    assert "\x1b[" not in err  # no terminal control codes in a log


def test_rich_bar_on_a_terminal(server, checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    path = weights.download("GPEN-BFR-256", tmp_path, url=server.url, progress=True)
    assert path.read_bytes() == checkpoint
    err = capsys.readouterr().err
    assert "starting" not in err  # the live bar replaces the plain lines
    assert "2.4/2.4 MB" in err


# -------------------------------------------------------------------------------------- lookup and folders


def test_registry_table_is_unambiguous_and_complete():
    expected_names = {"GPEN-BFR-256", "GPEN-BFR-512", "GPEN-BFR-1024", "GPEN-BFR-2048", "GPEN-Colorization-1024",
                      "GPEN-Inpainting-1024", "GPEN-Seg2face-512"}
    gpen = {name for name, entry in weights.REGISTRY.items() if entry.kind == "gpen"}
    assert gpen == expected_names
    other_files = {entry.file_name: entry.kind for entry in weights.REGISTRY.values() if entry.kind != "gpen"}
    assert other_files == {
        "detection_Resnet50_Final.pth": "detector", "detection_mobilenet0.25_Final.pth": "detector",
        "face_detection_yunet_2023mar.onnx": "detector",
        "parsing_parsenet.pth": "parser", "parsing_bisenet.pth": "parser",
        "RealESRGAN_x2plus.pth": "upscaler", "RealESRGAN_x4plus.pth": "upscaler",
        "realesr-general-x4v3.pth": "upscaler",
    }
    all_file_names = [name.lower() for entry in weights.REGISTRY.values() for name in entry.file_names]
    assert len(all_file_names) == len(set(all_file_names))
    for entry in weights.REGISTRY.values():
        assert entry.urls and all(url.startswith("https://") for url in entry.urls)
        assert any(entry.urls[0].endswith(name) for name in entry.file_names)
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert ("non-commercial" in entry.licence) == (entry.kind == "gpen")


@pytest.mark.parametrize("query, name", [
    ("GPEN-BFR-512", "GPEN-BFR-512"),
    ("gpen-bfr-512", "GPEN-BFR-512"),
    ("GPEN-BFR-512.pth", "GPEN-BFR-512"),
    ("pytorch_model.pt", "GPEN-BFR-1024"),
    ("pytorch_model-2048.pt", "GPEN-BFR-2048"),
    ("GPEN-BFR-2048.pt", "GPEN-BFR-2048"),
    ("detection_Resnet50_Final.pth", "RetinaFace-R50"),
    ("parsing_bisenet", "BiSeNet"),
])
def test_lookup_accepts_names_file_names_and_stems(query, name):
    assert weights.lookup(query).name == name


def test_lookup_of_an_unknown_name_lists_the_known_ones():
    with pytest.raises(WeightsError, match="GPEN-BFR-512.*BiSeNet"):
        weights.lookup("GPEN-BFR-999")


def test_find_weights_accepts_the_original_modelscope_name(tmp_path):
    assert weights.find_weights("GPEN-BFR-1024", tmp_path) is None
    (tmp_path / "pytorch_model.pt").write_bytes(b"x")
    assert weights.find_weights("GPEN-BFR-1024", tmp_path) == tmp_path / "pytorch_model.pt"
    (tmp_path / "GPEN-BFR-1024.pt").write_bytes(b"x")
    assert weights.find_weights("GPEN-BFR-1024", tmp_path) == tmp_path / "GPEN-BFR-1024.pt"
    (tmp_path / "GPEN-BFR-512.pth.partial").write_bytes(b"x")
    assert weights.find_weights("GPEN-BFR-512", tmp_path) is None


def test_find_weights_takes_a_path_to_any_file(tmp_path):
    own = tmp_path / "my_finetune.pth"
    assert weights.find_weights(str(own)) is None
    own.write_bytes(b"x")
    assert weights.find_weights(str(own)) == own


def test_weights_dir_resolution_order(tmp_path, monkeypatch):
    repo_dir, home_cache = tmp_path / "repo_weights", tmp_path / "cache" / "weights"
    monkeypatch.setattr(weights, "_REPO_WEIGHTS_DIR", repo_dir)
    monkeypatch.setattr(weights, "_USER_CACHE_DIR", home_cache)
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    assert weights.weights_dir() == home_cache
    repo_dir.mkdir()
    assert weights.weights_dir() == repo_dir
    (workdir / "weights").mkdir()
    assert weights.weights_dir() == workdir / "weights"
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "from_env"))
    assert weights.weights_dir() == tmp_path / "from_env"
    assert weights.weights_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_ensure_weights_downloads_once_from_the_registry_url(server, checkpoint, tmp_path, monkeypatch):
    _point_registry_at(monkeypatch, "GPEN-BFR-256", server.url)
    path = weights.ensure_weights("GPEN-BFR-256", tmp_path, progress=False)
    assert path.read_bytes() == checkpoint
    assert weights.ensure_weights("GPEN-BFR-256", tmp_path, offline=True) == path
    assert len(server.state.requests) == 1


def test_ensure_weights_offline_names_url_and_destination(tmp_path):
    with pytest.raises(WeightsError) as caught:
        weights.ensure_weights("GPEN-BFR-512", tmp_path, offline=True)
    message = str(caught.value)
    assert "\n" not in message
    assert weights.REGISTRY["GPEN-BFR-512"].url in message and str(tmp_path / "GPEN-BFR-512.pth") in message
    with pytest.raises(WeightsError, match="neither an existing file nor a known weights name"):
        weights.ensure_weights(str(tmp_path / "missing.pth"), tmp_path, offline=True)


# --------------------------------------------------------------------------------------------------- verify


@pytest.fixture
def stand_in_inspector(monkeypatch):
    """Replace vidgpen.models.checkpoint.inspect_checkpoint: it answers from a table keyed by file name."""
    answers: dict[str, str] = {}

    def inspect_checkpoint(path) -> str:
        torch.load(path, map_location="cpu", weights_only=True)
        if Path(path).name not in answers:
            raise WeightsError(f"{path} is not a GPEN generator checkpoint")
        return answers[Path(path).name]

    module = types.ModuleType("vidgpen.models.checkpoint")
    module.inspect_checkpoint = inspect_checkpoint
    monkeypatch.setitem(sys.modules, "vidgpen.models.checkpoint", module)
    return answers


def test_verify_reports_size_digest_and_variant(tmp_path, stand_in_inspector, monkeypatch):
    good = _checkpoint_bytes(seed=1, numel=1000)
    for file_name in ("GPEN-BFR-256.pth", "GPEN-Colorization-1024.pth", "GPEN-BFR-512.pth",
                      "detection_Resnet50_Final.pth", "GPEN-Seg2face-512.pth"):
        (tmp_path / file_name).write_bytes(good)
    (tmp_path / "parsing_parsenet.pth").write_bytes(b"not a checkpoint at all")
    damaged = bytearray(_checkpoint_bytes(seed=2, numel=50_000))
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "GPEN-BFR-2048.pt").write_bytes(bytes(damaged))
    stand_in_inspector.update({
        "GPEN-BFR-256.pth": "GPEN-BFR-256",
        "GPEN-Colorization-1024.pth": "GPEN-BFR-1024",  # same tensors as Colorization: accepted
        "GPEN-BFR-512.pth": "GPEN-BFR-256",  # a 256 file under the 512 name: rejected
        "GPEN-BFR-2048.pt": "GPEN-BFR-2048",
    })
    _point_registry_at(monkeypatch, "RetinaFace-R50", "https://example.invalid/x", sha256=_sha256(good))

    results = {result.entry.name: result for result in weights.verify(tmp_path)}
    assert list(results) == ["GPEN-BFR-256", "GPEN-BFR-512", "GPEN-BFR-2048", "GPEN-Colorization-1024",
                             "GPEN-Seg2face-512", "RetinaFace-R50", "ParseNet"]
    assert results["GPEN-BFR-256"].ok and results["GPEN-BFR-256"].detected_variant == "GPEN-BFR-256"
    assert results["GPEN-BFR-256"].size_bytes == len(good)
    assert results["GPEN-BFR-256"].sha256 == _sha256(good)
    assert results["GPEN-BFR-256"].digest_matches is None
    assert results["GPEN-Colorization-1024"].ok
    assert not results["GPEN-BFR-512"].ok and "GPEN-BFR-256, not GPEN-BFR-512" in results["GPEN-BFR-512"].problem
    assert not results["GPEN-BFR-2048"].ok and "damaged" in results["GPEN-BFR-2048"].problem
    assert results["GPEN-BFR-2048"].detected_variant is None  # a damaged file is not inspected
    assert not results["GPEN-Seg2face-512"].ok and "not a GPEN" in results["GPEN-Seg2face-512"].problem
    assert results["RetinaFace-R50"].ok and results["RetinaFace-R50"].digest_matches is True
    assert not results["ParseNet"].ok and "does not load" in results["ParseNet"].problem


def test_verify_flags_a_digest_mismatch(tmp_path, monkeypatch):
    (tmp_path / "parsing_bisenet.pth").write_bytes(_checkpoint_bytes(seed=3, numel=100))
    _point_registry_at(monkeypatch, "BiSeNet", "https://example.invalid/x", sha256="0" * 64)
    [result] = weights.verify(tmp_path)
    assert result.digest_matches is False and not result.ok and "0" * 64 in result.problem


def test_verify_with_the_real_inspector(tmp_path, data_dir):
    """A recipe GPEN-BFR-256 checkpoint is accepted under its own name and refused under the 512 name."""
    pytest.importorskip("vidgpen.models.checkpoint", reason="vidgpen.models.checkpoint not written yet")
    import json

    from vidgpen.models.recipe import recipe_state_dict

    manifest = json.loads((data_dir / "manifest-GPEN-BFR-256.json").read_text())
    torch.save(recipe_state_dict(manifest), tmp_path / "GPEN-BFR-256.pth")
    (tmp_path / "GPEN-BFR-512.pth").write_bytes((tmp_path / "GPEN-BFR-256.pth").read_bytes())
    (tmp_path / "GPEN-Colorization-1024.pth").write_bytes(_checkpoint_bytes(seed=4, numel=100))  # foreign
    results = {result.entry.name: result for result in weights.verify(tmp_path)}
    assert results["GPEN-BFR-256"].ok and results["GPEN-BFR-256"].detected_variant == "GPEN-BFR-256"
    assert not results["GPEN-BFR-512"].ok and "GPEN-BFR-256, not GPEN-BFR-512" in results["GPEN-BFR-512"].problem
    assert not results["GPEN-Colorization-1024"].ok
    assert results["GPEN-Colorization-1024"].detected_variant is None


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_list_shows_every_file_and_its_state(tmp_path, capsys):
    (tmp_path / "pytorch_model.pt").write_bytes(b"x" * 2_500_000)
    assert cli_main(["weights", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"weights folder: {tmp_path}" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.split()[0] in weights.REGISTRY}
    assert set(rows) == set(weights.REGISTRY)
    assert rows["GPEN-BFR-1024"][2:6] == ["pytorch_model.pt", "present", "2.5", "MB"]
    assert rows["GPEN-BFR-512"][2:4] == ["GPEN-BFR-512.pth", "missing"]
    assert rows["ParseNet"][1:4] == ["parser", "parsing_parsenet.pth", "missing"]
    assert "non-commercial" in " ".join(rows["GPEN-BFR-512"])
    assert cli_main(["weights", "list", "--dir", str(tmp_path), "--urls"]) == 0
    assert weights.REGISTRY["BiSeNet"].url in capsys.readouterr().out


def test_cli_download_skip_and_force(server, checkpoint, tmp_path, capsys):
    args = ["weights", "download", "GPEN-BFR-256", "--dir", str(tmp_path), "--url", server.url]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "GPEN-BFR-256.pth").read_bytes() == checkpoint
    assert f"sha256 {_sha256(checkpoint)}" in captured.err
    assert f"saved as {tmp_path / 'GPEN-BFR-256.pth'}" in captured.out

    assert cli_main(args) == 0
    assert "already present" in capsys.readouterr().out
    assert len(server.state.requests) == 1

    (tmp_path / "GPEN-BFR-256.pth.partial").write_bytes(b"junk")
    assert cli_main([*args, "--force"]) == 0
    assert server.state.requests[-1] == (None, 200)  # --force starts over instead of resuming the junk
    assert (tmp_path / "GPEN-BFR-256.pth").read_bytes() == checkpoint


def test_cli_download_offline_is_one_error_line_and_exit_2(tmp_path, capsys):
    code = cli_main(["weights", "download", "GPEN-BFR-256", "--dir", str(tmp_path), "--url", UNREACHABLE_URL])
    assert code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vidgpen: error:")]
    assert len(err_lines) == 1
    assert UNREACHABLE_URL in err_lines[0] and str(tmp_path / "GPEN-BFR-256.pth") in err_lines[0]
    assert cli_main(["weights", "download", "nope", "--dir", str(tmp_path)]) == 2
    assert cli_main(["weights", "download", "GPEN-BFR-256", "BiSeNet", "--url", UNREACHABLE_URL]) == 2


def test_cli_verify_exit_codes(tmp_path, capsys, stand_in_inspector):
    assert cli_main(["weights", "verify", "--dir", str(tmp_path)]) == 0
    assert "no known weights files" in capsys.readouterr().out

    good = _checkpoint_bytes(seed=5, numel=100)
    (tmp_path / "GPEN-BFR-256.pth").write_bytes(good)
    stand_in_inspector["GPEN-BFR-256.pth"] = "GPEN-BFR-256"
    assert cli_main(["weights", "verify", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {_sha256(good)}" in out and "tensors are GPEN-BFR-256" in out and out.rstrip().endswith("ok")

    (tmp_path / "parsing_parsenet.pth").write_bytes(b"junk")
    assert cli_main(["weights", "verify", "--dir", str(tmp_path)]) == 1
    assert "1 of 2 files have problems" in capsys.readouterr().out
