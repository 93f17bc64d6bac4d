"""Occlusion sensitivity (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2013).

A window slides over the input (every channel at once); inside it the input is replaced by a baseline.
The map at a pixel is the mean, over the windows that cover it, of

    f(x) - f(x with the window replaced by the baseline),

where f is the target (class logit or probability, or a unit). Window positions follow Captum's
``Occlusion``: ``0, s, 2s, ...`` up to ``ceil((H - w) / s) * s``, the last one clipped at the border, so every
pixel is covered.

The sweep is a generator: it yields progress and the partial map after every batch, and the caller
cancels by closing it (or simply not asking for more). Batches that do not fit in GPU memory are halved
and retried. With ``fast=True`` the model is evaluated incrementally (:mod:`.incremental`), exactly.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from collections.abc import Generator
from typing import Callable

import torch
import torchvision.transforms.functional as TF
from torch import nn

from explorer.core.errors import Cancelled, ExplorerError
from explorer.core.attribution.incremental import IncrementalModel, IncrementalUnsupported
from explorer.core.attribution.target import Target, target_fn
from explorer.core.steps import drive

BASELINES = ("zero", "mean", "blur")
MIN_SAVING = 1.5  # incremental evaluation is kept when it skips at least this share of the work


class OcclusionOutOfMemory(ExplorerError):
    """Even a batch of one occluded image does not fit in the device's memory."""


@dataclass(frozen=True)
class Window:
    """One occlusion window: rows [y0, y1), columns [x0, x1)."""

    y0: int
    y1: int
    x0: int
    x1: int


@dataclass
class OcclusionProgress:
    """What the sweep yields after each batch.

    ``partial_map`` (C, H, W) is the mean over the windows evaluated so far (zero where none has been);
    after the last batch (``done == total``) it is the occlusion map.
    """

    done: int
    total: int
    partial_map: torch.Tensor
    batch_size: int
    mode: str  # "incremental" or "full"
    note: str = ""
    clean_score: float = float("nan")
    stage: str = "sweep"  # "coarse" or "refine" in progressive mode
    elapsed_s: float = 0.0


@dataclass
class OcclusionSettings:
    window: tuple[int, int] = (16, 16)
    stride: tuple[int, int] = (8, 8)
    baseline: str = "zero"
    batch_size: int = 16
    fast: bool = True
    progressive: bool = False
    blur_sigma: float | None = None  # default: half the window
    # incremental evaluation falls back to full passes when it would skip less than this share of the
    # conv/linear work (0: always incremental where the model allows it)
    min_saving: float = MIN_SAVING

    def __post_init__(self):
        self.window = _pair(self.window)
        self.stride = _pair(self.stride)
        if min(self.window) < 1 or min(self.stride) < 1:
            raise ExplorerError("occlusion window and stride must be at least 1")
        if self.baseline not in BASELINES:
            raise ExplorerError(f"baseline must be one of {', '.join(BASELINES)}, not {self.baseline!r}")
        if self.batch_size < 1:
            raise ExplorerError("batch size must be at least 1")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Captum's positions along one axis: 0, s, ... up to ceil((size - window) / s) * s."""
    if window > size:
        raise ExplorerError(f"occlusion window {window} is larger than the input ({size})")
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


def occlusion_windows(height: int, width: int, window: tuple[int, int], stride: tuple[int, int]) -> list[Window]:
    return [Window(y, min(y + window[0], height), x, min(x + window[1], width))
            for y in window_positions(height, window[0], stride[0])
            for x in window_positions(width, window[1], stride[1])]


def make_baseline(x: torch.Tensor, kind: str, window: tuple[int, int] = (16, 16),
                  sigma: float | None = None) -> torch.Tensor:
    """The values an occluded window takes, as a tensor shaped like ``x`` (1, C, H, W).

    ``zero``: 0 in the model's input space (the dataset mean colour for a normalised input);
    ``mean``: each channel's mean over the image; ``blur``: the input blurred by a Gaussian of
    ``sigma`` (default half the window).
    """
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    if kind == "blur":
        sigma = sigma or max(window) / 2
        radius = min(int(math.ceil(3 * sigma)), (min(x.shape[-2:]) - 1) // 2)
        return TF.gaussian_blur(x, kernel_size=[2 * radius + 1] * 2, sigma=[sigma] * 2)
    raise ExplorerError(f"baseline must be one of {', '.join(BASELINES)}, not {kind!r}")


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class _Evaluator:
    """Scores a list of windows, incrementally when the model allows it, else by full forward passes."""

    def __init__(self, model: nn.Module, x: torch.Tensor, target: Target, baseline: torch.Tensor, fast: bool,
                 min_saving: float = 0.0):
        self.x, self.baseline, self.model, self.target = x, baseline, model, target
        self.min_saving = min_saving
        self.note = ""
        self.incremental: IncrementalModel | None = None
        if fast:
            try:
                self.incremental = IncrementalModel(model, x, target)
            except IncrementalUnsupported as exc:
                self.note = f"incremental occlusion unavailable ({exc}); every occluded image runs in full"
        if self.incremental is not None:
            self.clean_score = self.incremental.clean_score
        else:
            self.fn = target_fn(model, target)
            with torch.no_grad():
                self.clean_score = float(self.fn(x)[0])

    @property
    def mode(self) -> str:
        return "incremental" if self.incremental is not None else "full"

    @torch.no_grad()
    def scores(self, windows: list[Window]) -> torch.Tensor:
        """f(x occluded by each window), shape (len(windows),)."""
        if self.incremental is None:
            batch = self.x.expand(len(windows), *self.x.shape[1:]).clone()
            for i, w in enumerate(windows):
                batch[i, :, w.y0:w.y1, w.x0:w.x1] = self.baseline[0, :, w.y0:w.y1, w.x0:w.x1]
            return self.fn(batch)
        # every window's region has the full window size, shifted inward where the window is clipped
        h, wd = self.x.shape[-2:]
        rh = max(w.y1 - w.y0 for w in windows)
        rw = max(w.x1 - w.x0 for w in windows)
        oy = [min(w.y0, h - rh) for w in windows]
        ox = [min(w.x0, wd - rw) for w in windows]
        values = torch.stack([self.x[0, :, y:y + rh, x:x + rw] for y, x in zip(oy, ox)])
        for i, w in enumerate(windows):
            values[i, :, w.y0 - oy[i]:w.y1 - oy[i], w.x0 - ox[i]:w.x1 - ox[i]] = \
                self.baseline[0, :, w.y0:w.y1, w.x0:w.x1]
        scores = self.incremental.scores(values, oy, ox)
        if self.incremental.saving < self.min_saving:
            # small inputs: the changed region covers the maps within a few layers, and the bookkeeping
            # would cost more than it saves
            self.note = (f"incremental inference saves little here ({self.incremental.saving:.1f}x less "
                         f"work); every occluded image runs in full")
            self.fn = target_fn(self.model, self.target)
            self.incremental = None
        return scores


def _scores_fitting_memory(evaluator: _Evaluator, windows: list[Window], state: dict) -> torch.Tensor:
    """Scores of ``windows`` in batches of ``state['batch']``, halving it on out-of-memory errors."""
    out: list[torch.Tensor] = []
    i = 0
    while i < len(windows):
        chunk = windows[i:i + state["batch"]]
        try:
            out.append(evaluator.scores(chunk).float().cpu())
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if state["batch"] == 1:
                raise OcclusionOutOfMemory("out of memory even with one occluded image per batch; "
                                           "try a smaller input or --device cpu") from None
            state["batch"] = max(1, state["batch"] // 2)
            continue
        i += len(chunk)
    return torch.cat(out)


class _Accumulator:
    def __init__(self, channels: int, height: int, width: int):
        self.channels = channels
        self.total = torch.zeros(height, width, dtype=torch.float64)
        self.count = torch.zeros(height, width, dtype=torch.float64)

    def add(self, windows: list[Window], diffs: torch.Tensor) -> None:
        for w, d in zip(windows, diffs.tolist()):
            self.total[w.y0:w.y1, w.x0:w.x1] += d
            self.count[w.y0:w.y1, w.x0:w.x1] += 1

    def mean(self) -> torch.Tensor:
        m = torch.where(self.count > 0, self.total / self.count.clamp(min=1), torch.zeros_like(self.total))
        return m.float().expand(self.channels, -1, -1).contiguous()


def occlusion_sweep(model: nn.Module, x: torch.Tensor, target: Target,
                    settings: OcclusionSettings | None = None) -> Generator[OcclusionProgress, None, "OcclusionResult"]:
    """Occlusion map of ``target`` for one input ``x`` (1, C, H, W), as a generator of progress.

    Each yielded :class:`OcclusionProgress` carries the partial map (C, H, W) (the last one the whole
    map); the generator returns the :class:`OcclusionResult`. ``close()`` it to cancel. With
    ``settings.progressive`` a coarse pass (stride = window) comes first, then the fine windows in order of
    the coarse map's strength; the final map is the same exact map.
    """
    settings = settings or OcclusionSettings()
    target.validate(model)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ExplorerError(f"occlusion takes one input (1, C, H, W), not {tuple(x.shape)}")
    start = time.perf_counter()
    x = x.detach()
    c, h, w = x.shape[1:]
    baseline = make_baseline(x, settings.baseline, settings.window, settings.blur_sigma)
    try:
        evaluator = _Evaluator(model, x, target, baseline, settings.fast, settings.min_saving)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise OcclusionOutOfMemory("out of memory running the model once on the clean input; "
                                   "try a smaller input or --device cpu") from None
    windows = occlusion_windows(h, w, settings.window, settings.stride)
    state = {"batch": settings.batch_size}  # lowered for good when the device runs out of memory
    step = settings.batch_size  # windows per yield
    fine = _Accumulator(c, h, w)

    def progress(done: int, total: int, partial: torch.Tensor, stage: str) -> OcclusionProgress:
        return OcclusionProgress(done, total, partial, state["batch"], evaluator.mode, evaluator.note,
                                 evaluator.clean_score, stage, time.perf_counter() - start)

    if settings.progressive:
        coarse_stride = (max(settings.stride[0], settings.window[0]), max(settings.stride[1], settings.window[1]))
        coarse_windows = occlusion_windows(h, w, settings.window, coarse_stride)
        coarse = _Accumulator(c, h, w)
        known: dict[Window, float] = {}
        for i in range(0, len(coarse_windows), step):
            chunk = coarse_windows[i:i + step]
            diffs = evaluator.clean_score - _scores_fitting_memory(evaluator, chunk, state)
            coarse.add(chunk, diffs)
            known.update(zip(chunk, diffs.tolist()))
            yield progress(i + len(chunk), len(coarse_windows), coarse.mean(), "coarse")
        strength = coarse.mean()[0].abs()
        windows = sorted(windows, key=lambda wd: -float(strength[wd.y0:wd.y1, wd.x0:wd.x1].mean()))
        reused = [wd for wd in windows if wd in known]
        fine.add(reused, torch.tensor([known[wd] for wd in reused]))
        todo = [wd for wd in windows if wd not in known]
        done = len(reused)
        coarse_map = coarse.mean()
        for i in range(0, len(todo), step):
            chunk = todo[i:i + step]
            fine.add(chunk, evaluator.clean_score - _scores_fitting_memory(evaluator, chunk, state))
            done += len(chunk)
            partial = torch.where(fine.count > 0, fine.mean()[0], coarse_map[0]).expand(c, -1, -1).contiguous()
            yield progress(done, len(windows), partial if done < len(windows) else fine.mean(), "refine")
        if not todo:
            yield progress(len(windows), len(windows), fine.mean(), "refine")
    else:
        for i in range(0, len(windows), step):
            chunk = windows[i:i + step]
            fine.add(chunk, evaluator.clean_score - _scores_fitting_memory(evaluator, chunk, state))
            yield progress(i + len(chunk), len(windows), fine.mean(), "sweep")
    return OcclusionResult(fine.mean(), evaluator.clean_score, evaluator.mode, evaluator.note,
                           time.perf_counter() - start, len(windows), state["batch"])


@dataclass
class OcclusionResult:
    map: torch.Tensor  # (C, H, W) float32
    clean_score: float
    mode: str
    note: str
    seconds: float
    windows: int
    batch_size: int = field(default=0)


def occlusion(model: nn.Module, x: torch.Tensor, target: Target, settings: OcclusionSettings | None = None,
              progress: Callable[[int, int], None] | None = None,
              cancelled: Callable[[], bool] | None = None) -> OcclusionResult:
    """Run :func:`occlusion_sweep` to the end; ``cancelled()`` returning True stops it (raises Cancelled)."""
    def on_step(step: OcclusionProgress) -> None:
        if progress is not None:
            progress(step.done, step.total)
        if cancelled is not None and cancelled() and step.done < step.total:
            raise Cancelled("occlusion cancelled")

    return drive(occlusion_sweep(model, x, target, settings), on_step)
