"""Feature inversion (Mahendran & Vedaldi 2015): the image whose code at a layer matches the input's.

x* = argmin_x ||Phi(x) - Phi0||^2 / ||Phi0||^2 + lambda_alpha R_alpha(x) + lambda_tv R_TV(x), with
R_alpha = sum_ij ||x_ij||^alpha / (H W B^alpha) (the alpha-norm, alpha = 6) and
R_TV = sum_ij ((x_i,j+1 - x_ij)^2 + (x_i+1,j - x_ij)^2)^(beta/2) / (H W V^beta) (beta = 2), the
paper's normalisation: x in the 0..255 mean-subtracted space, B = 80 (a typical pixel's norm),
V = B / 6.5. Optimised from small noise with Adam (the paper used momentum; Adam converges in fewer,
steadier steps); pixels kept in the valid range. Several layers give reconstructions side by side.
"""
from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from explorer.core.optimize.loop import OptimizeError, OptimizeStep, ascend
from explorer.core.optimize.regularizers import PixelSpace, total_variation
from explorer.core.optimize.truncate import Truncated, frozen_parameters
from explorer.core.optimize.visualize import pictures_to_pixels, to_pictures

B_NORM = 80.0
V_NORM = B_NORM / 6.5


@dataclass(frozen=True)
class InvertSettings:
    layers: tuple[str, ...]
    steps: int = 200
    lr: float = 4.0  # Adam, in the 0..255 space
    alpha: float = 6.0
    beta: float = 2.0
    lambda_alpha: float = 1e-5
    lambda_tv: float = 5e-3
    seed: int = 0
    every: int = 5

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


@dataclass
class Inversion:
    layer: str
    picture: np.ndarray
    objective: float  # minus the loss at the last step (the loop maximises)
    representation_error: float  # ||Phi(x*) - Phi0||^2 / ||Phi0||^2, for the saved 8-bit picture
    pixel_correlation: float  # Pearson correlation of x*'s pixels with the input's
    image_error: float  # ||x* - x0||^2 / ||x0 - mean(x0)||^2 in 0..1 pixels: 0 the image, 1 a flat grey at its mean
    history: list[float]

    def summary(self) -> dict:
        """The figures of this reconstruction, for JSON and the settings file."""
        return {"layer": self.layer, "objective": self.objective, "representation_error": self.representation_error,
                "image_error": self.image_error, "pixel_correlation": self.pixel_correlation}


@dataclass
class InvertResult:
    inversions: list[Inversion]
    original: np.ndarray
    settings: InvertSettings
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def strip(self) -> np.ndarray:
        """The input and every reconstruction side by side, 4 white pixels apart."""
        parts: list[np.ndarray] = []
        for img in [self.original] + [inv.picture for inv in self.inversions]:
            if parts:
                parts.append(np.full((img.shape[0], 4, 3), 255, np.uint8))
            parts.append(img)
        return np.concatenate(parts, axis=1)


def alpha_norm(c: torch.Tensor, alpha: float) -> torch.Tensor:
    """sum_ij ||x_ij||^alpha / (H W B^alpha), the norm taken over the colour channels."""
    h, w = c.shape[-2:]
    return ((c * c).sum(1) / B_NORM ** 2 + 1e-12).pow(alpha / 2.0).sum() / (h * w)


class _Inversion:
    def __init__(self, truncated: Truncated, space: PixelSpace, code: torch.Tensor, shape, s: InvertSettings,
                 generator: torch.Generator, device):
        self.truncated, self.space, self.code, self.s = truncated, space, code, s
        self.code_norm = float((code * code).sum()) or 1.0
        self.image = (torch.randn((1, *shape), generator=generator) * 1.0).to(device).requires_grad_(True)
        self.params = [self.image]
        self.optimizer = torch.optim.Adam(self.params, lr=s.lr)
        self.lo, self.hi = space.caffe_bounds()

    def objective(self, step: int) -> torch.Tensor:
        c = self.image
        phi = self.truncated(self.space.caffe_to_model(c))
        data = ((phi - self.code) ** 2).sum() / self.code_norm
        h, w = c.shape[-2:]
        tv = total_variation(c, self.s.beta) / (h * w * V_NORM ** self.s.beta)
        loss = data + self.s.lambda_alpha * alpha_norm(c, self.s.alpha) + self.s.lambda_tv * tv
        return -loss

    def update(self, step: int, grads: list[torch.Tensor]) -> None:
        self.image.grad = -grads[0]
        self.optimizer.step()
        self.image.grad = None
        self.image.copy_(torch.maximum(torch.minimum(self.image, self.hi), self.lo))

    def pictures(self) -> list[np.ndarray]:
        return to_pictures(self.space.to_pixels(self.space.caffe_to_model(self.image.detach())))


def _check(s: InvertSettings) -> None:
    if not s.layers:
        raise OptimizeError("name at least one layer to invert")
    if s.steps < 1:
        raise OptimizeError(f"steps must be at least 1, not {s.steps}")
    if not s.lr > 0:
        raise OptimizeError(f"the learning rate must be above 0, not {s.lr}")
    if s.lambda_alpha < 0 or s.lambda_tv < 0:
        raise OptimizeError("the regulariser weights must be 0 or more")


def invert_steps(model: nn.Module, spec, x: torch.Tensor, settings: InvertSettings,
                 device: torch.device | str | None = None) -> Generator[OptimizeStep, None, InvertResult]:
    """Reconstruct the input ``x`` (1, C, H, W) from each layer's code; yields steps, returns the result."""
    s = settings
    _check(s)
    device = torch.device(device) if device is not None else x.device
    space = PixelSpace.for_spec(spec, device)
    x = x[:1].to(device).float()
    original_pixels = space.to_pixels(x).clamp(0, 1)
    original = to_pictures(original_pixels)[0]
    start = time.perf_counter()
    inversions = []
    for layer in s.layers:
        truncated = Truncated(model, layer, fast=True)
        with torch.no_grad():
            code = truncated(x).detach().clone()
        generator = torch.Generator().manual_seed(int(s.seed))
        problem = _Inversion(truncated, space, code, x.shape[1:], s, generator, device)
        with frozen_parameters(model):
            loop = yield from ascend(problem, s.steps, s.every, stage=f"layer {layer}")
        picture = problem.pictures()[0]
        with torch.no_grad():
            got = pictures_to_pixels([picture], spec.channels, device)
            phi = truncated(space.to_model(got))
            error = float(((phi - code) ** 2).sum() / problem.code_norm)
            a, b = got.flatten() - got.mean(), original_pixels.flatten() - original_pixels.mean()
            corr = float((a * b).sum() / ((a.norm() * b.norm()) + 1e-12))
            image_error = float(((got - original_pixels) ** 2).sum() / ((b * b).sum() + 1e-12))
        inversions.append(Inversion(layer, picture, loop.objective, error, corr, image_error, loop.history))
    return InvertResult(inversions, original, s, time.perf_counter() - start)
