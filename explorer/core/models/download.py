"""Downloading pretrained weights into torch.hub's cache, with progress, cancel and hash check.

The cache is the one torchvision itself uses (``<torch.hub.get_dir()>/checkpoints``), so weights that
torchvision downloaded before are reused, and ours are reused by torchvision.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import torch
from explorer.core.errors import WeightsDownloadError
from explorer.core.steps import drive

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)

WEIGHTS_URL_ENV = "DEEP_EXPLORER_WEIGHTS_URL"
DEFAULT_TIMEOUT_S = 30.0
# torch.hub.HASH_REGEX: torchvision's file names carry the first hex digits of the file's sha256,
# e.g. ``resnet18-f37072fd.pth``.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


def iter_download(url: str, dest: Path, chunk: int = 1 << 16,
                  timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[tuple[int, int]]:
    """Stream ``url`` into ``dest``, yielding ``(bytes_done, bytes_total)`` as it goes.

    ``bytes_total`` is 0 when the server does not say. The bytes go to a temporary file next to
    ``dest`` that is renamed into place only once the whole body has arrived, so ``dest`` never holds a
    partial file. Closing the generator early (``gen.close()``, or leaving a ``for`` loop over it and
    dropping it) cancels: the temporary file is removed. Network errors propagate as ``OSError``
    (``urllib.error.URLError``, ``TimeoutError``, ``ConnectionError``) or ``http.client.HTTPException``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            yield done, total
            while block := response.read(chunk):
                out.write(block)
                done += len(block)
                yield done, total
        if total and done != total:
            raise ConnectionError(f"connection closed after {done} of {total} bytes")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def weights_path(weights, cache_dir: Path | None = None) -> Path:
    """Where ``weights`` (a torchvision ``WeightsEnum`` member) live in the cache.

    ``cache_dir`` replaces torch.hub's ``checkpoints`` folder when given.
    """
    folder = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    return folder / _file_name(weights.url)


def weights_cached(weights, cache_dir: Path | None = None) -> bool:
    """True when ``weights`` are already in the cache (loading them needs no network)."""
    return weights_path(weights, cache_dir).is_file()


def fetch_weights_steps(weights, url: str | None = None, cache_dir: Path | None = None,
                        timeout: float = DEFAULT_TIMEOUT_S) -> Generator[tuple[int, int], None, Path]:
    """The local file of torchvision ``weights``, downloaded once into torch.hub's cache.

    A generator: yields ``(bytes done, bytes total or 0)`` while downloading and returns the file's
    path. Closing it early cancels the download and leaves nothing behind.

    Parameters
    ----------
    weights : a torchvision ``WeightsEnum`` member (anything with ``.url`` will do).
    url : where to download from instead of ``weights.url``: the file's URL, or a mirror's base URL
        to which the file name is appended. Without it, the environment variable
        ``DEEP_EXPLORER_WEIGHTS_URL`` (same meaning) is tried before ``weights.url``.
    cache_dir : the folder to keep the file in instead of ``<torch.hub dir>/checkpoints``.

    Raises
    ------
    WeightsDownloadError : with one line saying why (offline, HTTP error, corrupt download); its
        ``random_weights_fallback`` is True where going on with random weights makes sense.
    """
    dest = weights_path(weights, cache_dir)
    if dest.is_file():
        return dest
    source = _source_url(weights.url, url or os.environ.get(WEIGHTS_URL_ENV) or None)
    model = _model_name(weights)
    host = urllib.parse.urlsplit(source).netloc or source
    # Download under a staging name and rename only after the hash check, so the cache never holds an
    # unverified file under the real name (torchvision would load it without checking).
    staging = dest.with_name(dest.name + ".download")
    chunks = iter_download(source, staging, timeout=timeout)
    try:
        while (step := _next_chunk(chunks, model, host, dest.parent)) is not None:
            yield step
    except BaseException:  # failed or cancelled (GeneratorExit): closing the download removes its file
        chunks.close()
        staging.unlink(missing_ok=True)
        raise
    expected = _hash_prefix(dest.name)
    if expected:
        digest = _sha256(staging)
        if not digest.startswith(expected):
            staging.unlink(missing_ok=True)
            raise WeightsDownloadError(f"downloaded {model} weights from {host} are corrupt (sha256 "
                                       f"{digest[:len(expected)]}, expected {expected}); the file was deleted, "
                                       f"try again or continue with random (untrained) weights",
                                       random_weights_fallback=True)
    os.replace(staging, dest)
    return dest


def fetch_weights(weights, progress: ProgressFn | None = None, url: str | None = None,
                  cache_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """:func:`fetch_weights_steps` run to the end; ``progress(done, total)`` may raise to cancel."""
    return drive(fetch_weights_steps(weights, url=url, cache_dir=cache_dir, timeout=timeout),
                 None if progress is None else (lambda step: progress(*step)))


def _next_chunk(chunks: Iterator[tuple[int, int]], model: str, host: str, folder: Path) -> tuple[int, int] | None:
    """The next progress step of a download, None at its end; its failures as one-line errors."""
    try:
        return next(chunks)
    except StopIteration:
        return None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: a malformed URL
        if isinstance(exc, OSError) and not _is_network_error(exc):
            raise WeightsDownloadError(f"cannot save {model} weights to {folder}: {exc.strerror or exc}") from None
        raise WeightsDownloadError(f"cannot download {model} weights from {host} ({_reason(exc)}): offline? "
                                   f"continue with random (untrained) weights",
                                   random_weights_fallback=True) from None


def _file_name(url: str) -> str:
    return os.path.basename(urllib.parse.urlsplit(url).path)


def _source_url(weights_url: str, override: str | None) -> str:
    """``override`` as given when it names the file itself, else as a base URL with the file appended."""
    name = _file_name(weights_url)
    if not override:
        return weights_url
    if _file_name(override) == name:
        return override
    return override.rstrip("/") + "/" + name


def _hash_prefix(file_name: str) -> str:
    match = _HASH_IN_NAME.search(file_name)
    return match.group(1) if match else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _model_name(weights) -> str:
    """``resnet18`` for ``ResNet18_Weights.IMAGENET1K_V1``; the file name's stem for anything else."""
    if getattr(weights, "model_name", None):  # timm's weights (core.models.zoo.TimmWeights) carry their name
        return weights.model_name
    import torchvision  # noqa: PLC0415 - only to name the model in messages

    for name in torchvision.models.list_models(module=torchvision.models):
        if torchvision.models.get_model_weights(name) is type(weights):
            return name
    return _file_name(weights.url).split("-")[0].split(".")[0] or "the"


def _is_network_error(exc: OSError) -> bool:
    return isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError, socket.gaierror))


def _reason(exc: BaseException) -> str:
    """A few words for why a download failed: ``HTTP 404 Not Found``, ``connection refused``, ..."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
