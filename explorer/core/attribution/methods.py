"""One entry point for every attribution method, shared by the command line and the GUI."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from explorer.core import colormaps
from explorer.core.errors import ExplorerError
from explorer.core.attribution.backprop import backprop_attribution, saliency_image
from explorer.core.attribution.gradcam import grad_cam, guided_grad_cam
from explorer.core.attribution.occlusion import OcclusionSettings, occlusion
from explorer.core.attribution.target import Target, TargetError, top_class
from explorer.core.steps import map_yields

METHODS = ("occlusion", "gradient", "deconvnet", "guided-backprop", "gradcam", "guided-gradcam")


@dataclass
class AttributionResult:
    """``map``: raw attribution, (C, H, W) for occlusion and the gradient methods, (H, W) for Grad-CAM.
    ``display``: (H, W) float32 for showing (max |.| over channels for gradients, signed for occlusion)."""

    method: str
    target: Target
    map: np.ndarray
    display: np.ndarray
    seconds: float
    note: str = ""
    mode: str = ""
    layer: str | None = None  # Grad-CAM layer
    clean_score: float | None = None


def display_map(method: str, attribution: torch.Tensor) -> torch.Tensor:
    """The (H, W) image to show for a raw attribution."""
    if method in ("gradcam",):
        return attribution
    if method == "occlusion":
        return attribution[0]
    return saliency_image(attribution)


def parse_target(text: str | None, labels: tuple[str, ...], model: nn.Module, x: torch.Tensor,
                 layer: str | None = None, unit: int | None = None, score: str = "logit",
                 position: tuple[int, int] | None = None) -> Target:
    """A target from command-line style settings: a unit when ``unit`` is given, else a class index or
    label (case-insensitive), else the top class of ``x``."""
    if unit is not None:
        if not layer:
            raise TargetError("--unit needs --layer")
        return Target.for_unit(layer, unit, position)
    if text is None or text == "":
        return Target.for_class(top_class(model, x), score)
    if text.strip().lstrip("-").isdigit():
        return Target.for_class(int(text), score)
    lowered = [lab.lower() for lab in labels]
    if text.lower() in lowered:
        return Target.for_class(lowered.index(text.lower()), score)
    raise TargetError(f"--target {text!r} is neither a class index nor one of the model's labels")


def compute_attribution(model: nn.Module, x: torch.Tensor, method: str, target: Target,
                        occlusion_settings: OcclusionSettings | None = None, cam_layer: str | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        cancelled: Callable[[], bool] | None = None) -> AttributionResult:
    """Attribution of ``target`` for one input ``x`` (1, C, H, W) by ``method``."""
    if method not in METHODS:
        raise ExplorerError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    start = time.perf_counter()
    note, mode, layer, clean = "", "", None, None
    if method == "occlusion":
        res = occlusion(model, x, target, occlusion_settings, progress=progress, cancelled=cancelled)
        raw, note, mode, clean = res.map, res.note, res.mode, res.clean_score
    elif method in ("gradient", "deconvnet", "guided-backprop"):
        grad, report = backprop_attribution(model, x, target, method)
        raw, note = grad[0], report.note
    elif method == "gradcam":
        cam = grad_cam(model, x, target, cam_layer)
        raw, layer = cam.upsampled[0], cam.layer
    else:
        guided, cam, report = guided_grad_cam(model, x, target, cam_layer)
        raw, layer, note = guided[0], cam.layer, report.note
    raw = raw.detach().float().cpu()
    return AttributionResult(method, target, raw.numpy().astype(np.float32),
                             display_map(method, raw).numpy().astype(np.float32),
                             time.perf_counter() - start, note, mode, layer, clean)


def map_levels(display: np.ndarray) -> tuple[float, float, str]:
    """(low, high, colour map) to show a map: symmetric around 0 with the diverging map when it has both
    signs (the same rule the window uses, from :mod:`explorer.core.colormaps`)."""
    lo, hi, signed = colormaps.map_levels(display)
    return lo, hi, colormaps.auto_colormap(signed)


def overlay_image(picture: np.ndarray, display: np.ndarray, opacity: float = 0.5,
                  colormap: str | None = None) -> np.ndarray:
    """The map (H, W) coloured and blended over the picture (H, W, 3) uint8 → (H, W, 3) uint8."""
    lo, hi, cmap = map_levels(display)
    colour = colormaps.colorize(display, (lo, hi), colormap or cmap).astype(np.float32)
    out = (1 - opacity) * picture.astype(np.float32) + opacity * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass
class AttributionStep:
    """A partial result while occlusion runs: the (H, W) map to show so far, ready for display."""

    done: int
    total: int
    display: np.ndarray  # (H, W) float32, C-contiguous, never mutated after it is yielded
    levels: tuple[float, float]
    signed: bool
    stage: str


def attribution_steps(model: nn.Module, x: torch.Tensor, method: str, target: Target | None,
                      occlusion_settings: OcclusionSettings | None = None, cam_layer: str | None = None,
                      score: str = "logit"):
    """Generator form of :func:`compute_attribution` for a worker thread.

    ``target`` None means the top class (with ``score``). Occlusion yields an :class:`AttributionStep`
    after every batch (stop iterating to cancel); every method returns its :class:`AttributionResult` as
    the generator's return value.
    """
    x = x.to(model_device(model))  # in the worker: the caller may hand over a CPU tensor
    if target is None:
        target = Target.for_class(top_class(model, x), score)
    if method != "occlusion":
        return compute_attribution(model, x, method, target, occlusion_settings, cam_layer)
    from explorer.core.attribution.occlusion import occlusion_sweep  # noqa: PLC0415

    def as_step(step) -> AttributionStep:
        display = np.ascontiguousarray(step.partial_map[0].numpy(), dtype=np.float32)
        lo, hi, cmap = map_levels(display)
        return AttributionStep(step.done, step.total, display, (lo, hi), cmap == "diverging", step.stage)

    start = time.perf_counter()
    occ = yield from map_yields(occlusion_sweep(model, x, target, occlusion_settings), as_step)
    raw = occ.map.numpy().astype(np.float32)
    return AttributionResult(method, target, raw, np.ascontiguousarray(raw[0]), time.perf_counter() - start,
                             occ.note, occ.mode, None, occ.clean_score)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights live (the CPU for a model without any)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def layer_names(model: nn.Module) -> list[str]:
    """Names of every submodule (the layers a unit target can name)."""
    return [n for n, _ in model.named_modules() if n]


def conv_layer_names(model: nn.Module) -> list[str]:
    """Names of the ``nn.Conv2d`` layers (the layers Grad-CAM can use), in order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
