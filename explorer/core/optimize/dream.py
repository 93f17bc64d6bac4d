"""DeepDream (Mordvintsev et al. 2015), as the original notebook does it.

From the input image, at each of ``octaves`` scales (smallest first, each ``octave_scale`` times the
last): ``steps`` gradient steps of the chosen layer's L2 objective (gradient = the activations), each
step normalised by the mean |gradient| (``step_size`` in the 0..255 space), the image rolled by a
random shift of up to ``jitter`` pixels for each step, pixels clipped to the valid range. The details
(the image less its octave's base) are carried up, resized, from octave to octave.
"""
from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.optimize.loop import OptimizeError, OptimizeStep, ascend
from explorer.core.optimize.objectives import l2_objective
from explorer.core.optimize.regularizers import PixelSpace, random_roll
from explorer.core.optimize.truncate import Truncated, frozen_parameters
from explorer.core.optimize.visualize import to_pictures


@dataclass(frozen=True)
class DreamSettings:
    layer: str
    octaves: int = 4
    octave_scale: float = 1.4
    steps: int = 10  # per octave
    step_size: float = 1.5  # in the 0..255 space, after dividing the gradient by its mean |value|
    jitter: int = 32
    seed: int = 0
    every: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DreamResult:
    picture: np.ndarray  # (H, W, 3) uint8 at the input's size
    objective: float  # the L2 objective at the last step
    octaves: list[dict]  # per octave: size, activation norm at its start and at its end
    history: list[float]
    settings: DreamSettings
    seconds: float
    extra: dict = field(default_factory=dict)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _Octave:
    def __init__(self, truncated: Truncated, space: PixelSpace, start: torch.Tensor, s: DreamSettings,
                 generator: torch.Generator):
        self.truncated, self.space, self.s, self.generator = truncated, space, s, generator
        self.image = start.clone().requires_grad_(True)
        self.params = [self.image]
        self.lo, self.hi = space.caffe_bounds()

    def objective(self, step: int) -> torch.Tensor:
        ox, oy = random_roll(self.image, self.s.jitter, self.generator)
        rolled = torch.roll(self.image, shifts=(oy, ox), dims=(-2, -1)) if (ox or oy) else self.image
        return l2_objective(self.truncated(self.space.caffe_to_model(rolled)))

    def update(self, step: int, grads: list[torch.Tensor]) -> None:
        g = grads[0]
        self.image.add_(self.s.step_size / (g.abs().mean() + 1e-12) * g)
        self.image.copy_(torch.maximum(torch.minimum(self.image, self.hi), self.lo))

    def pictures(self) -> list[np.ndarray]:
        return to_pictures(self.space.to_pixels(self.space.caffe_to_model(self.image.detach())))


def _check(s: DreamSettings) -> None:
    if s.octaves < 1:
        raise OptimizeError(f"the number of octaves must be at least 1, not {s.octaves}")
    if not s.octave_scale >= 1.0:
        raise OptimizeError(f"the octave scale must be at least 1, not {s.octave_scale}")
    if s.steps < 1:
        raise OptimizeError(f"steps per octave must be at least 1, not {s.steps}")
    if not s.step_size > 0:
        raise OptimizeError(f"the step size must be above 0, not {s.step_size}")


def dream_steps(model: nn.Module, spec, x: torch.Tensor, settings: DreamSettings,
                device: torch.device | str | None = None) -> Generator[OptimizeStep, None, DreamResult]:
    """DeepDream on the model input ``x`` (1, C, H, W); yields steps, returns a :class:`DreamResult`."""
    s = settings
    _check(s)
    device = torch.device(device) if device is not None else x.device
    truncated = Truncated(model, s.layer, fast=True)
    space = PixelSpace.for_spec(spec, device)
    generator = torch.Generator().manual_seed(int(s.seed))
    start = time.perf_counter()
    base = space.model_to_caffe(x[:1].to(device).float())
    h, w = base.shape[-2:]
    sizes = [(max(1, round(h / s.octave_scale ** i)), max(1, round(w / s.octave_scale ** i)))
             for i in range(s.octaves)][::-1]
    detail = torch.zeros((1, base.shape[1], *sizes[0]), device=device)
    octaves, history, objective = [], [], float("nan")
    for i, size in enumerate(sizes):
        octave_base = _resize(base, size)
        detail = _resize(detail, size)
        problem = _Octave(truncated, space, octave_base + detail, s, generator)
        try:
            with torch.no_grad():
                before = float(truncated(space.caffe_to_model(problem.image)).norm())
        except RuntimeError as exc:
            raise OptimizeError(f"octave {i + 1} ({size[1]}x{size[0]} pixels) is too small for this model up to "
                                f"layer {s.layer}; use fewer octaves or a smaller octave scale") from exc
        with frozen_parameters(model):
            loop = yield from ascend(problem, s.steps, s.every, stage=f"octave {i + 1}/{len(sizes)}")
        with torch.no_grad():
            after = float(truncated(space.caffe_to_model(problem.image)).norm())
        octaves.append({"octave": i + 1, "size": [size[0], size[1]], "norm_before": before, "norm_after": after})
        history += loop.history
        objective = loop.objective
        detail = problem.image.detach() - octave_base
    final = octave_base + detail
    picture = to_pictures(space.to_pixels(space.caffe_to_model(final)))[0]
    return DreamResult(picture, objective, octaves, history, s, time.perf_counter() - start)
