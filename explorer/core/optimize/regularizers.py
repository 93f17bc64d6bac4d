"""Image regularisers and the pixel spaces they act in.

The methods of the lectures work on the image, not on the model: :class:`PixelSpace` converts between
the model's normalised input and pixels (0..1), and the 0..255 mean-subtracted space of the Caffe
papers (Simonyan et al., Yosinski et al., Mordvintsev et al., Mahendran & Vedaldi), where their
learning rates and step sizes are defined. Every regulariser here changes the image tensor it is
given (never a layer of the model: clipping the *image's* small pixels is what Yosinski et al. do).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class PixelSpace:
    """The model's normalisation ``x = (p - mean) / std``, for pixels ``p`` in 0..1."""

    def __init__(self, mean, std, device: torch.device | str = "cpu"):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    @classmethod
    def for_spec(cls, spec, device) -> "PixelSpace":
        return cls(spec.mean, spec.std, device)

    def to_model(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    # the Caffe space: 0..255 with the mean image subtracted (0 is the mean image)
    def caffe_to_model(self, c: torch.Tensor) -> torch.Tensor:
        return c / (255.0 * self.std)

    def model_to_caffe(self, x: torch.Tensor) -> torch.Tensor:
        return x * (255.0 * self.std)

    def caffe_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The valid range in the Caffe space: pixels 0..255 minus the mean."""
        return -255.0 * self.mean, 255.0 * (1.0 - self.mean)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel of (N, C, H, W) with a Gaussian of ``sigma`` pixels (reflected borders)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel(sigma).to(x.device, x.dtype)
    c, r = x.shape[1], k.numel() // 2
    if r >= min(x.shape[-2:]):  # reflection needs the image to be larger than the kernel's radius
        r = min(x.shape[-2:]) - 1
        k = k[k.numel() // 2 - r: k.numel() // 2 + r + 1]
        k = k / k.sum()
    kh = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    kv = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kh, groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), kv, groups=c)


def decay(x: torch.Tensor, amount: float) -> torch.Tensor:
    """L2 decay: ``x * (1 - amount)`` (the image shrinks towards 0, the mean image)."""
    return x * (1.0 - amount)


def clip_small_norm(x: torch.Tensor, percentile: float) -> torch.Tensor:
    """Set to 0 the pixels whose norm over channels is below the ``percentile`` of all pixels' norms."""
    if percentile <= 0:
        return x
    norms = x.norm(dim=1, keepdim=True)  # (N, 1, H, W)
    cut = torch.quantile(norms.flatten(1).float(), percentile / 100.0, dim=1).view(-1, 1, 1, 1)
    return x * (norms >= cut)


def clip_small_contribution(x: torch.Tensor, grad: torch.Tensor, percentile: float) -> torch.Tensor:
    """Set to 0 the pixels whose contribution ``|sum_c x * grad|`` (a linear estimate of how much the
    activation would fall if the pixel were set to 0) is below the ``percentile``."""
    if percentile <= 0:
        return x
    contrib = (x * grad).sum(1, keepdim=True).abs()
    cut = torch.quantile(contrib.flatten(1).float(), percentile / 100.0, dim=1).view(-1, 1, 1, 1)
    return x * (contrib >= cut)


def total_variation(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """TV_beta of Mahendran & Vedaldi: sum over pixels of ((dx)^2 + (dy)^2)^(beta/2)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    sq = dx * dx + dy * dy
    if beta == 2.0:
        return sq.sum()
    return (sq + 1e-8).pow(beta / 2.0).sum()


def high_frequency_energy(x: torch.Tensor, fraction: float = 0.5) -> float:
    """Share of the spectrum's energy above ``fraction`` of the Nyquist frequency (for tests and notes)."""
    spec = torch.fft.rfft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h).abs().view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    high = torch.sqrt(fx ** 2 + fy ** 2) > 0.5 * fraction
    total = float(spec.sum()) or 1.0
    return float(spec[..., high].sum()) / total


def random_roll(x: torch.Tensor, jitter: int, generator: torch.Generator) -> tuple[int, int]:
    """Two shifts uniform in -jitter..jitter (the roll of the DeepDream notebook)."""
    if jitter <= 0:
        return 0, 0
    ox, oy = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return int(ox), int(oy)
