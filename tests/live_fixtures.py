"""Shared pieces of the live tests: a tiny CNN, generated videos, the naive grid oracle."""
from __future__ import annotations

import copy
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from explorer.core.models import InputSpec, LoadedModel

FFMPEG = shutil.which("ffmpeg")


class TinyCNN(nn.Module):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 10, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay:
            if torch.jit.is_tracing():  # a traced graph would drop the sleep: refuse to be traced
                raise TypeError("the slow test model is not traceable")
            time.sleep(self.delay)  # a slow model, to see frames dropped rather than queued
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def tiny_model(delay: float = 0.0) -> LoadedModel:
    torch.manual_seed(0)
    module = TinyCNN(delay).eval()
    spec = InputSpec(size=(32, 32), labels=("a", "b", "c", "d"))
    return LoadedModel("tiny", module, spec, trained=False, source="test")


def make_video(path: Path, frames: int = 50, size: str = "96x64", rate: int = 25) -> Path:
    """A moving test pattern encoded with ffmpeg (MPEG-4 part 2, which Qt's FFmpeg backend decodes)."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed: the live tests generate their test video with it "
                    "(apt-get install ffmpeg)")
    subprocess.run([FFMPEG, "-y", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                    "-frames:v", str(frames), "-pix_fmt", "yuv420p", "-c:v", "mpeg4", "-q:v", "3", str(path)],
                   check=True)
    return path


def naive_layer_grid(act: np.ndarray, pad: int = 1, aspect: float | None = None) -> np.ndarray:
    """(C, H, W) activations → uint8 grid by explicit loops: layer-wide min/max scaling, tiles row by row,
    ``pad`` black pixels around and between tiles, columns chosen as :func:`explorer.core.tiling.grid_layout`
    (or :func:`~explorer.core.tiling.fitted_layout` for a pane of ``aspect``, width / height)."""
    from explorer.core.tiling import fitted_layout, grid_layout

    c, h, w = act.shape
    layout = grid_layout(c, h, w, pad=pad) if aspect is None else fitted_layout(c, h, w, aspect, pad=pad)
    lo, hi = float(act.min()), float(act.max())
    grid = np.zeros(layout.shape, np.float64)
    for u in range(c):
        r, col = divmod(u, layout.cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        for y in range(h):
            for x in range(w):
                grid[top + y, left + x] = (act[u, y, x] - lo) / max(hi - lo, 1e-12) * 255.0
    return np.round(grid).astype(np.uint8)


def layer_output(loaded: LoadedModel, x: torch.Tensor, layer: str) -> np.ndarray:
    """The layer's output for ``x`` through a forward hook of our own (independent of the live pipeline),
    on a copy of the module: the live worker may be running the original on another thread."""
    module = copy.deepcopy(loaded.module)
    out = {}
    def keep(_m, _i, o) -> None:  # returns None: a hook's return value would replace the layer's output
        # a copy: an in-place op after the layer (ResNet's bn1 → ReLU(inplace=True)) must not change it;
        # a module that runs several times: its last output, as the layer views show
        out["a"] = o.detach().clone()

    dict(module.named_modules())[layer].register_forward_hook(keep)
    with torch.no_grad():
        module(x)
    return out["a"][0].numpy()
