"""Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017) for a chosen convolutional layer.

For a vision transformer the layer's tokens (N, T, D) are laid out on the patch grid inferred from the
model (:mod:`explorer.core.transformers`), so each of the D channels is a feature map A^k over the patches.

With A^k the layer's k-th feature map and y the target, Grad-CAM weighs each map by its mean gradient,

    alpha_k = mean_{i,j} dy / dA^k_ij,        L = ReLU(sum_k alpha_k A^k),

and upsamples L bilinearly to the input size. Guided Grad-CAM multiplies guided backprop by that map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.attribution.backprop import ActivationReport, guided_backprop
from explorer.core.attribution.attention import is_attention
from explorer.core.attribution.target import Target, TargetError, find_layer
from explorer.core.tensors import first_tensor
from explorer.core.transformers import channel_maps, patch_embedding


@dataclass
class GradCamResult:
    cam: torch.Tensor  # (N, h, w) at the layer's resolution, >= 0, raw (not normalised)
    upsampled: torch.Tensor  # (N, H, W) at the input's resolution
    layer: str


def default_cam_layer(model: nn.Module) -> str:
    """Grad-CAM's default layer: the last conv layer of a CNN; for a vision transformer a late block's
    normalisation, where the patch tokens still have gradient (the last block's output does not: only its
    class token reaches the head).

    ViT-style (attention modules): the normalisation right before the last attention module. Swin-style
    (channels-last LayerNorms, no recomputable attention): the last LayerNorm.
    """
    conv = patch_embedding(model)
    if conv is not None:
        order = [(n, m) for n, m in model.named_modules() if n]
        attention = [i for i, (_n, m) in enumerate(order) if is_attention(m)]
        norms = [i for i, (_n, m) in enumerate(order) if isinstance(m, nn.LayerNorm)]
        if attention:
            before = [i for i in norms if i < attention[-1]]
            if before:
                return order[before[-1]][0]
        elif norms:
            return order[norms[-1]][0]
    return last_conv_layer(model)


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` in registration order: Grad-CAM's usual default layer."""
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            name = n
    if name is None:
        raise TargetError("the model has no Conv2d layer for Grad-CAM; name one with --layer")
    return name


def upsample_map(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) → (N, H, W), bilinear with half-pixel centres (as OpenCV's INTER_LINEAR)."""
    return F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def grad_cam(model: nn.Module, x: torch.Tensor, target: Target, layer: str | None = None) -> GradCamResult:
    """Grad-CAM of ``target`` at ``layer`` (default: the last conv layer) for inputs ``x`` (N, C, H, W)."""
    target.validate(model)
    layer = layer or default_cam_layer(model)
    module = find_layer(model, layer)
    acts: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        acts.append(out)

    from explorer.core.attribution.target import target_fn  # noqa: PLC0415

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            value = target_fn(model, target)(x)
            if not acts:
                raise TargetError(f"layer {layer} did not run in the forward pass")
            a = first_tensor(acts[-1])
            (grad,) = torch.autograd.grad(value.sum(), a, allow_unused=True)
    finally:
        handle.remove()
    if grad is None:
        grad = torch.zeros_like(a)
    a, grad = a.detach(), grad
    maps = channel_maps(model, a, tuple(x.shape[-2:]))
    if maps is not None:  # a transformer's tokens (N, T, D) or channels-last (N, H, W, C): the patch grid
        a, grad = _as_maps(model, a, x), _as_maps(model, grad, x)
    elif a.dim() != 4:
        raise TargetError(f"Grad-CAM needs a layer with (N, C, h, w) output, or a transformer's tokens on a "
                          f"patch grid; {layer} gives {tuple(a.shape)}")
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * a.detach()).sum(1))
    return GradCamResult(cam, upsample_map(cam, tuple(x.shape[-2:])), layer)


def _as_maps(model: nn.Module, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N, T, D) tokens or (N, H, W, C) → (N, C, rows, cols) over the patch grid (prefix tokens dropped)."""
    return torch.stack([channel_maps(model, t[i:i + 1], tuple(x.shape[-2:])).maps for i in range(t.shape[0])])


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target: Target,
                    layer: str | None = None) -> tuple[torch.Tensor, GradCamResult, ActivationReport]:
    """Guided backprop (N, C, H, W) times the upsampled Grad-CAM map, per pixel and channel."""
    cam = grad_cam(model, x, target, layer)
    guided, report = guided_backprop(model, x, target)
    return guided * cam.upsampled.unsqueeze(1), cam, report
