"""Images that a class or a unit responds to most: three methods over the one loop.

- ``simonyan`` (Simonyan et al. 2014, class model): argmax_I S_c(I) - lambda ||I||^2 by gradient
  ascent from the zero (mean) image; S_c the score before the softmax.
- ``yosinski`` (Yosinski et al. 2015): gradient ascent with L2 decay, Gaussian blur every k steps,
  clipping of the pixels with small norm and of those with small contribution (percentiles), and
  jitter; their four Table-1 settings are :data:`~explorer.core.optimize.presets.YOSINSKI_PRESETS`.
- ``fourier`` (Olah et al. 2017): a Fourier-parameterised, colour-decorrelated image, seen through
  random pad/jitter/scale/rotation each step, optimised with Adam; optional diversity between images.

The first two work in the 0..255 mean-subtracted space of the papers' Caffe code (where their
learning rates are defined) and keep the image in the valid pixel range; the third's sigmoid does.
"""
from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from explorer.core.attribution.target import Target
from explorer.core.optimize.fourier import STANDARD_TRANSFORMS, FourierImage, random_views
from explorer.core.optimize.loop import OptimizeError, OptimizeStep, ascend
from explorer.core.optimize.objectives import target_objective
from explorer.core.optimize.presets import YOSINSKI_PRESETS
from explorer.core.optimize.regularizers import (PixelSpace, clip_small_contribution, clip_small_norm, decay,
                                                 gaussian_blur)
from explorer.core.optimize.truncate import Truncated, frozen_parameters, truncate_for

METHODS = ("simonyan", "yosinski", "fourier")

# what a setting left as None becomes, per method
_DEFAULTS = {
    "simonyan": {"steps": 200, "lr": 1e4, "l2": 1e-6},
    # no preset: Table 1's third row's regularisers, with a learning rate and step count that work on the
    # bundled model (whose gradients, in the Caffe space, are ~100x smaller than those lr 100 was found for)
    "yosinski": dict(YOSINSKI_PRESETS[3][1], steps=200, lr=1e4, jitter=0),
    "fourier": {"steps": 512, "lr": 0.05},
}
_YOSINSKI_KEYS = ("decay", "blur_sigma", "blur_every", "norm_percentile", "contribution_percentile", "jitter")


@dataclass(frozen=True)
class VisualizeSettings:
    """Every choice of a visualisation; None means the method's (or the preset's) default.

    ``preset`` (1-4) fills Yosinski's settings from Table 1; settings given explicitly win over it.
    """

    method: str = "fourier"
    steps: int | None = None
    lr: float | None = None
    seed: int = 0
    every: int = 5  # yield the image every this many steps
    l2: float | None = None  # simonyan: lambda of -lambda ||I||^2 (I in the 0..255 mean-subtracted space)
    preset: int | None = None  # yosinski: Table 1 row
    decay: float | None = None
    blur_sigma: float | None = None
    blur_every: int | None = None
    norm_percentile: float | None = None
    contribution_percentile: float | None = None
    jitter: int | None = None  # yosinski: random roll of up to this many pixels each step
    size: int | None = None  # fourier: side of the image (default: the model's input size)
    transforms: bool = True  # fourier: transformation robustness
    decorrelate: bool = True  # fourier: decorrelated colour space
    batch: int = 1  # fourier: several images at once
    diversity: float = 0.0  # fourier: weight of the diversity term between the images

    def resolved(self) -> "VisualizeSettings":
        """The same settings with every None replaced by the value the method will use."""
        if self.method not in METHODS:
            raise OptimizeError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        base = dict(_DEFAULTS[self.method])
        if self.preset is not None:
            if self.method != "yosinski":
                raise OptimizeError("presets are Yosinski et al.'s settings: choose the yosinski method")
            if self.preset not in YOSINSKI_PRESETS:
                raise OptimizeError(f"preset must be one of {', '.join(map(str, YOSINSKI_PRESETS))}, "
                                    f"not {self.preset}")
            base.update(YOSINSKI_PRESETS[self.preset][1])
        if self.method == "yosinski":
            for key in _YOSINSKI_KEYS:
                base.setdefault(key, 0)
        given = {k: v for k, v in asdict(self).items() if v is not None}
        base = {k: v for k, v in base.items() if k not in given}
        out = replace(self, **base)
        _check(out)
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _check(s: VisualizeSettings) -> None:
    if s.steps is not None and s.steps < 1:
        raise OptimizeError(f"steps must be at least 1, not {s.steps}")
    if s.lr is not None and not (s.lr > 0 and math.isfinite(s.lr)):
        raise OptimizeError(f"the learning rate must be above 0, not {s.lr}")
    for name in ("norm_percentile", "contribution_percentile"):
        v = getattr(s, name)
        if v is not None and not 0 <= v < 100:
            raise OptimizeError(f"{name.replace('_', ' ')} must be from 0 to under 100, not {v}")
    if s.decay is not None and not 0 <= s.decay < 1:
        raise OptimizeError(f"decay must be from 0 to under 1, not {s.decay}")
    if s.batch < 1 or (s.batch > 1 and s.method != "fourier"):
        raise OptimizeError("several images at once (and diversity) are for the fourier method")
    if s.size is not None and s.size < 8:
        raise OptimizeError(f"the image size must be at least 8 pixels, not {s.size}")


@dataclass
class VisualizeResult:
    pictures: list[np.ndarray]  # (H, W, 3) uint8 each: what the model sees, de-normalised
    objective: float  # the method's objective at the last step
    values: list[float]  # the target's value for each saved picture (as quantised to 8 bits)
    probabilities: list[float] | None  # class targets: the softmax probability of the class per picture
    history: list[float]
    target: Target
    settings: VisualizeSettings
    seconds: float
    extra: dict = field(default_factory=dict)


def to_pictures(pixels: torch.Tensor) -> list[np.ndarray]:
    """(N, C, H, W) pixels in 0..1 → list of (H, W, 3) uint8."""
    p = pixels.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    if p.shape[1] == 1:
        p = p.expand(-1, 3, -1, -1)
    return [np.ascontiguousarray(img.permute(1, 2, 0).numpy()) for img in p]


def pictures_to_pixels(pictures: list[np.ndarray], channels: int, device) -> torch.Tensor:
    x = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float().div(255.0).to(device)
    if channels == 1:
        x = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    return x


class _CaffeAscent:
    """Simonyan's and Yosinski's plain gradient ascent on the image in the 0..255 mean-subtracted space."""

    def __init__(self, truncated: Truncated, target: Target, space: PixelSpace, shape, s: VisualizeSettings,
                 generator: torch.Generator, device):
        self.truncated, self.target, self.space, self.s, self.generator = truncated, target, space, s, generator
        self.image = torch.zeros((1, *shape), device=device, requires_grad=True)
        if s.method == "yosinski":  # a little noise breaks the symmetry of the zero image
            with torch.no_grad():
                self.image.add_(torch.randn((1, *shape), generator=generator).to(device))
        self.params = [self.image]
        self.lo, self.hi = space.caffe_bounds()
        self.shift = (0, 0)

    def objective(self, step: int) -> torch.Tensor:
        c = self.image
        if self.s.method == "yosinski" and self.s.jitter:
            ox, oy = torch.randint(-self.s.jitter, self.s.jitter + 1, (2,), generator=self.generator).tolist()
            c = torch.roll(c, shifts=(int(oy), int(ox)), dims=(-2, -1))
        obj, _ = target_objective(self.truncated, self.target, self.space.caffe_to_model(c))
        if self.s.method == "simonyan" and self.s.l2:
            obj = obj - self.s.l2 * (self.image * self.image).sum()
        return obj

    def update(self, step: int, grads: list[torch.Tensor]) -> None:
        s, x, g = self.s, self.image, grads[0]
        x.add_(s.lr * g)
        if s.method == "yosinski":
            y = x.detach()
            if s.decay:
                y = decay(y, s.decay)
            if s.blur_every and s.blur_sigma and step % s.blur_every == 0:
                y = gaussian_blur(y, s.blur_sigma)
            if s.norm_percentile:
                y = clip_small_norm(y, s.norm_percentile)
            if s.contribution_percentile:
                y = clip_small_contribution(y, g, s.contribution_percentile)
            x.copy_(y)
        x.copy_(torch.maximum(torch.minimum(x, self.hi), self.lo))

    def pixels(self) -> torch.Tensor:
        return self.space.to_pixels(self.space.caffe_to_model(self.image.detach()))

    def pictures(self) -> list[np.ndarray]:
        return to_pictures(self.pixels())


class _FourierProblem:
    def __init__(self, truncated: Truncated, target: Target, space: PixelSpace, spec, s: VisualizeSettings,
                 generator: torch.Generator, device):
        self.truncated, self.target, self.space, self.s, self.generator = truncated, target, space, s, generator
        h, w = (s.size, s.size) if s.size else spec.size
        self.image = FourierImage(h, w, spec.channels, s.batch, decorrelate=s.decorrelate, generator=generator,
                                  device=device)
        self.params = self.image.params
        self.out_size = tuple(spec.size)
        self.optimizer = torch.optim.Adam(self.params, lr=s.lr, maximize=True)

    def objective(self, step: int) -> torch.Tensor:
        views = random_views(self.image.pixels(), self.out_size, self.generator,
                             STANDARD_TRANSFORMS if self.s.transforms else None)
        obj, _ = target_objective(self.truncated, self.target, self.space.to_model(views), self.s.diversity)
        return obj

    def update(self, step: int, grads: list[torch.Tensor]) -> None:
        for p, g in zip(self.params, grads):
            p.grad = g
        self.optimizer.step()
        for p in self.params:
            p.grad = None

    def pixels(self) -> torch.Tensor:
        return self.image.pixels().detach()

    def pictures(self) -> list[np.ndarray]:
        return to_pictures(self.pixels())


@torch.no_grad()
def evaluate_pictures(model: nn.Module, target: Target, spec, pictures: list[np.ndarray], device
                      ) -> tuple[list[float], list[float] | None]:
    """The target's value for each 8-bit picture (brought to the model's input size), and for a class
    target the softmax probability of the class."""
    space = PixelSpace.for_spec(spec, device)
    x = space.to_model(random_views(pictures_to_pixels(pictures, spec.channels, device), tuple(spec.size),
                                    None, None))
    if target.is_unit:
        values = target.from_activation(Truncated(model, target.layer)(x), model, tuple(x.shape[-2:]))
        return [float(v) for v in values], None
    logits = model(x).flatten(1)
    values = Target.for_class(target.class_index).from_output(logits)
    probs = torch.softmax(logits, dim=1)[:, target.class_index]
    return [float(v) for v in values], [float(p) for p in probs]


def visualize_steps(model: nn.Module, spec, target: Target, settings: VisualizeSettings = VisualizeSettings(),
                    device: torch.device | str | None = None
                    ) -> Generator[OptimizeStep, None, VisualizeResult]:
    """Optimise an image for ``target`` (a class or a unit of any layer); yields steps, returns the result."""
    s = settings.resolved()
    device = torch.device(device) if device is not None else next(
        (p.device for p in model.parameters()), torch.device("cpu"))
    truncated = truncate_for(model, target)
    generator = torch.Generator().manual_seed(int(s.seed))
    torch.manual_seed(int(s.seed))  # anything a model itself draws (dropout is off in eval mode)
    space = PixelSpace.for_spec(spec, device)
    start = time.perf_counter()
    if s.method == "fourier":
        problem = _FourierProblem(truncated, target, space, spec, s, generator, device)
    else:
        problem = _CaffeAscent(truncated, target, space, spec.shape, s, generator, device)
    with frozen_parameters(model):
        loop = yield from ascend(problem, s.steps, s.every, stage=s.method)
    pictures = problem.pictures()
    values, probs = evaluate_pictures(model, target, spec, pictures, device)
    return VisualizeResult(pictures, loop.objective, values, probs, loop.history, target, s,
                           time.perf_counter() - start)
