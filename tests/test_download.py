"""Downloading pretrained weights, against a local HTTP server on 127.0.0.1 only."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision

from explorer.core.models.download import WEIGHTS_URL_ENV, fetch_weights, iter_download, weights_cached, weights_path
from explorer.core.errors import Cancelled, WeightsDownloadError
from explorer.core.models import build_zoo_model, load_model

torch.set_num_threads(1)

OFFLINE_HINT = "offline? continue with random (untrained) weights"  # the CLI adds "(--weights none)"


@dataclass(frozen=True)
class FakeWeights:
    """The part of a torchvision WeightsEnum member that downloading uses."""

    url: str
    name: str = "IMAGENET1K_V1"


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.requests.append(self.path)
        if self.path.startswith("/short/"):  # promises more bytes than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@dataclass
class Server:
    url: str
    folder: Path
    requests: list[str]
    stop: callable


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []
    handler = functools.partial(type("Handler", (_Handler,), {"requests": requests}), directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)
            stopped.append(True)

    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", folder, requests, stop)
    stop()
    assert not thread.is_alive()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch.hub's cache redirected to a temporary folder, with no mirror configured."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(WEIGHTS_URL_ENV, raising=False)
    assert Path(torch.hub.get_dir()) == tmp_path / "torch-home" / "hub"
    return Path(torch.hub.get_dir()) / "checkpoints"


def _serve_state_dict(folder: Path, stem: str, state: dict, hash_prefix: str | None = None) -> tuple[str, bytes]:
    """Save ``state`` as torchvision names its files (``stem-<sha256 prefix>.pth``); the name and the bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    name = f"{stem}-{hash_prefix or hashlib.sha256(data).hexdigest()[:8]}.pth"
    (folder / name).write_bytes(data)
    return name, data


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {"weight": torch.randn(300, 300), "bias": torch.randn(300)}  # ~360 kB: several chunks


def test_fetch_downloads_into_torch_hub_cache_with_progress(server, hub):
    name, data = _serve_state_dict(server.folder, "tiny", _tiny_state())
    weights = FakeWeights(f"https://download.pytorch.org/models/{name}")
    assert not weights_cached(weights)
    calls = []
    path = fetch_weights(weights, progress=lambda done, total: calls.append((done, total)), url=server.url)
    assert path == hub / name == weights_path(weights)
    assert path.read_bytes() == data
    assert weights_cached(weights)
    assert server.requests == [f"/{name}"]
    done = [d for d, _ in calls]
    assert done == sorted(set(done)) and len(done) > 3  # strictly increasing, several chunks
    assert calls[-1] == (len(data), len(data)) and {t for _, t in calls} == {len(data)}
    assert sorted(p.name for p in hub.iterdir()) == [name]  # no temporary files left

    server.stop()  # a second fetch must not need the network
    assert fetch_weights(weights, progress=lambda *_: pytest.fail("downloaded again"), url=server.url) == path
    assert server.requests == [f"/{name}"]


def test_mirror_from_environment_and_full_file_url(server, hub, monkeypatch, tmp_path):
    name, data = _serve_state_dict(server.folder, "tiny", _tiny_state())
    weights = FakeWeights(f"https://download.pytorch.org/models/{name}")
    monkeypatch.setenv(WEIGHTS_URL_ENV, server.url + "/")
    assert fetch_weights(weights).read_bytes() == data
    # A URL naming the file itself is used as it is; cache_dir overrides the hub folder.
    elsewhere = tmp_path / "elsewhere"
    path = fetch_weights(weights, url=f"{server.url}/{name}", cache_dir=elsewhere)
    assert path == elsewhere / name and path.read_bytes() == data
    assert server.requests == [f"/{name}", f"/{name}"]


def test_hash_mismatch_is_an_error_and_leaves_nothing(server, hub):
    name, _ = _serve_state_dict(server.folder, "tiny", _tiny_state(), hash_prefix="0123abcd")
    weights = FakeWeights(f"https://download.pytorch.org/models/{name}")
    with pytest.raises(WeightsDownloadError) as info:
        fetch_weights(weights, url=server.url)
    message = str(info.value)
    assert message.startswith(f"downloaded tiny weights from 127.0.0.1:{server.url.rsplit(':', 1)[1]} are corrupt")
    assert "expected 0123abcd" in message and "\n" not in message
    assert list(hub.iterdir()) == []
    assert not weights_cached(weights)


def test_closed_port_gives_the_offline_line(hub):
    port = _closed_port()
    weights = FakeWeights("https://download.pytorch.org/models/tiny-0123abcd.pth")
    with pytest.raises(WeightsDownloadError) as info:
        fetch_weights(weights, url=f"http://127.0.0.1:{port}/models/")
    assert str(info.value) == f"cannot download tiny weights from 127.0.0.1:{port} (connection refused): {OFFLINE_HINT}"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not any(hub.iterdir())


def test_http_error_and_timeout_are_named(server, hub):
    weights = FakeWeights("https://download.pytorch.org/models/absent-0123abcd.pth")
    with pytest.raises(WeightsDownloadError, match=r"\(HTTP 404 File not found\): offline\?"):
        fetch_weights(weights, url=server.url)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(WeightsDownloadError) as info:
            fetch_weights(weights, url=f"http://127.0.0.1:{port}", timeout=0.3)
    assert str(info.value) == f"cannot download absent weights from 127.0.0.1:{port} (timed out): {OFFLINE_HINT}"
    assert list(hub.iterdir()) == []


def test_connection_cut_short_leaves_nothing(server, hub):
    weights = FakeWeights("https://download.pytorch.org/short/tiny-0123abcd.pth")
    with pytest.raises(WeightsDownloadError, match=r"cannot download tiny weights .*random \(untrained\) weights"):
        fetch_weights(weights, url=f"{server.url}/short/")
    assert list(hub.iterdir()) == []


def test_cancel_from_progress_leaves_nothing(server, hub):
    name, _ = _serve_state_dict(server.folder, "tiny", _tiny_state())
    weights = FakeWeights(f"https://download.pytorch.org/models/{name}")

    def cancel_midway(done, total):
        if done > total // 3:
            raise Cancelled("download cancelled")

    with pytest.raises(Cancelled):
        fetch_weights(weights, progress=cancel_midway, url=server.url)
    assert list(hub.iterdir()) == []


def test_iter_download_renames_into_place(server, tmp_path):
    data = bytes(range(256)) * 1000
    (server.folder / "blob.bin").write_bytes(data)
    dest = tmp_path / "out" / "blob.bin"
    steps = list(iter_download(f"{server.url}/blob.bin", dest, chunk=10_000))
    assert steps[0] == (0, len(data)) and steps[-1] == (len(data), len(data))
    assert len(steps) == 1 + -(-len(data) // 10_000)
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]


def test_closing_iter_download_early_removes_the_temporary_file(server, tmp_path):
    (server.folder / "blob.bin").write_bytes(b"\x01" * 50_000)
    dest = tmp_path / "out" / "blob.bin"
    chunks = iter_download(f"{server.url}/blob.bin", dest, chunk=1000)
    assert next(chunks) == (0, 50_000)
    assert next(chunks) == (1000, 50_000)
    partial = list(dest.parent.iterdir())
    assert len(partial) == 1 and partial[0].name != "blob.bin"  # the download is under a temporary name
    chunks.close()
    assert list(dest.parent.iterdir()) == []


def test_load_model_pretrained_end_to_end(server, hub, monkeypatch):
    """The zoo path through models.py: download, check, cache where torchvision looks, load."""
    torch.manual_seed(0)
    reference = build_zoo_model("squeezenet1_1").eval()
    name, _ = _serve_state_dict(server.folder, "squeezenet1_1", reference.state_dict())
    enum = torchvision.models.get_model_weights("squeezenet1_1").DEFAULT
    # The real file's name carries the real file's hash; stand in ours under its own name.
    monkeypatch.setattr(enum.value, "url", f"https://download.pytorch.org/models/{name}")
    progress = []
    loaded = load_model("squeezenet1_1", weights="pretrained", weights_url=server.url, device="cpu",
                        progress=lambda done, total: progress.append(done))
    assert loaded.trained and loaded.display_name == "squeezenet1_1"
    assert len(loaded.spec.labels) == 1000
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=0)
    assert progress and progress[-1] == (hub / name).stat().st_size
    # torchvision's own loader finds the file in its cache and needs no network.
    server.stop()
    state = enum.get_state_dict(progress=False)
    assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())


def test_load_model_pretrained_offline_names_the_model(hub):
    port = _closed_port()
    with pytest.raises(WeightsDownloadError) as info:
        load_model("squeezenet1_1", weights="pretrained", weights_url=f"http://127.0.0.1:{port}", device="cpu")
    assert str(info.value) == (f"cannot download squeezenet1_1 weights from 127.0.0.1:{port} (connection refused): "
                               f"{OFFLINE_HINT}")
