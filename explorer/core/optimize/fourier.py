"""Feature visualisation's image parameterisation (Olah et al. 2017; Lucid, Lucent).

The image is a spectrum: its rFFT coefficients, scaled by 1/frequency (so that every frequency learns
at the same rate), in a colour space decorrelated by the square root of ImageNet's colour covariance,
squashed to 0..1 by a sigmoid. :class:`FourierImage` holds the spectrum (the parameter the optimiser
changes) and gives the image; :meth:`FourierImage.from_pixels` is its inverse. :func:`random_views`
is the transformation robustness: pad, jitter, scale and rotate, drawn anew every step, all done in
one affine resampling (which also brings the image to the model's input size).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Lucid's colour_correlation_svd_sqrt: the square root of ImageNet's RGB covariance
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
MAGIC = 4.0  # Lucid's divisor of the inverse FFT


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


class FourierImage:
    """``batch`` images of ``channels`` x ``h`` x ``w`` pixels in 0..1, parameterised by a spectrum."""

    def __init__(self, h: int, w: int, channels: int = 3, batch: int = 1, sd: float = 0.01,
                 decay_power: float = 1.0, decorrelate: bool = True, fft: bool = True,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu"):
        self.h, self.w, self.channels, self.batch = h, w, channels, batch
        self.fft = fft
        self.decorrelate = decorrelate and channels == 3
        if fft:
            freqs = rfft2d_freqs(h, w)
            shape = (batch, channels, *freqs.shape, 2)
            scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power
            self.scale = torch.tensor(scale, dtype=torch.float32, device=device)[None, None, ..., None]
        else:
            shape = (batch, channels, h, w)
            self.scale = None
        self.param = (torch.randn(*shape, generator=generator) * sd).to(device).requires_grad_(True)
        self.color = torch.tensor(COLOR_CORRELATION, device=device)

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.param]

    def _spatial(self, spectrum: torch.Tensor) -> torch.Tensor:
        if not self.fft:
            return spectrum
        scaled = torch.view_as_complex((self.scale * spectrum).contiguous())
        image = torch.fft.irfftn(scaled, s=(self.h, self.w), norm="ortho")
        return image[:, :, : self.h, : self.w] / MAGIC

    def pixels(self) -> torch.Tensor:
        """The images (batch, channels, h, w) in 0..1, differentiable in the spectrum."""
        image = self._spatial(self.param)
        if self.decorrelate:
            image = torch.einsum("nchw,dc->ndhw", image, self.color)
        return torch.sigmoid(image)

    @torch.no_grad()
    def from_pixels(self, pixels: torch.Tensor) -> "FourierImage":
        """Set the spectrum so that :meth:`pixels` gives ``pixels`` (values strictly inside 0..1)."""
        p = pixels.to(self.param.device, torch.float32).clamp(1e-6, 1 - 1e-6)
        image = torch.log(p) - torch.log1p(-p)  # the inverse of the sigmoid
        if self.decorrelate:
            image = torch.einsum("nchw,dc->ndhw", image, torch.linalg.inv(self.color))
        if self.fft:
            spectrum = torch.fft.rfftn(image * MAGIC, s=(self.h, self.w), norm="ortho")
            spectrum = torch.view_as_real(spectrum) / self.scale
            self.param.copy_(spectrum)
        else:
            self.param.copy_(image)
        return self


# Lucid's standard_transforms: pad 12, jitter 8, scale 0.9..1.1, rotate -10..10 degrees, jitter 4
STANDARD_TRANSFORMS = {"pad": 12, "jitter": 8, "scales": tuple(1 + (i - 5) / 50.0 for i in range(11)),
                       "angles": tuple(list(range(-10, 11)) + 5 * [0]), "jitter2": 4}


def random_views(pixels: torch.Tensor, out_size: tuple[int, int], generator: torch.Generator,
                 transforms: dict | None = STANDARD_TRANSFORMS, pad_value: float = 0.5) -> torch.Tensor:
    """Each image of (N, C, H, W) seen through a random pad/jitter/scale/rotation, at ``out_size``.

    The composed transform is one affine map: the view is the padded image less the two jitters' margins,
    shifted by the jitters, zoomed by the scale and turned by the angle; outside the image lies the pad
    value. With ``transforms`` None the whole image is resampled to ``out_size`` as it is.
    """
    n, _, h, w = pixels.shape
    if transforms is None:
        if (h, w) == tuple(out_size):
            return pixels
        return F.interpolate(pixels, size=out_size, mode="bilinear", align_corners=False)
    pad, j1, j2 = transforms["pad"], transforms["jitter"], transforms["jitter2"]
    scales = torch.tensor(transforms["scales"])[torch.randint(len(transforms["scales"]), (n,), generator=generator)]
    angles = torch.tensor(transforms["angles"], dtype=torch.float32)[
        torch.randint(len(transforms["angles"]), (n,), generator=generator)] * (math.pi / 180)
    # offsets: the two jitters (uniform in 0..j-1 each, as Lucid's crops) about the centre of the margins
    ox = (torch.randint(j1, (n,), generator=generator) + torch.randint(j2, (n,), generator=generator)
          - (j1 - 1 + j2 - 1) / 2.0).float()
    oy = (torch.randint(j1, (n,), generator=generator) + torch.randint(j2, (n,), generator=generator)
          - (j1 - 1 + j2 - 1) / 2.0).float()
    # half-extent of the view in normalised coordinates of the unpadded image (1 = its border)
    ax = (w + 2 * pad - j1 - j2) / w / scales
    ay = (h + 2 * pad - j1 - j2) / h / scales
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = ax * cos, -ay * sin * h / w, 2 * ox / w
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = ax * sin * w / h, ay * cos, 2 * oy / h
    theta = theta.to(pixels.device, pixels.dtype)
    grid = F.affine_grid(theta, [n, pixels.shape[1], *out_size], align_corners=False)
    return F.grid_sample(pixels - pad_value, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + pad_value
