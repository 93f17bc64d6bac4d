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

METHODS = ("occlusion", "gradient", "deconvnet", "guided-backprop", "gradcam", "guided-gradcam",
           "attention", "rollout", "gradient-rollout")
ZERO_GRADIENT_NOTE = ("the map is zero everywhere: the target's gradient is zero (an untrained model's classifier "
                      "can start as all zeros, as torchvision's vision transformers do)")
TRANSFORMER_METHODS = ("attention", "rollout", "gradient-rollout")  # need attention layers and a patch grid


@dataclass(frozen=True)
class AttentionSettings:
    """``attention``: the query token (0 is the class token; prefix + row * cols + col a patch) and the
    head shown (None: the mean of the heads; every head is in the raw map). ``rollout``: head fusion and
    discard ratio (``gradient-rollout`` fuses heads by the gradient instead)."""

    query: int = 0
    head: int | None = None
    fusion: str = "mean"
    discard_ratio: float = 0.9


@dataclass
class AttributionResult:
    """``map``: raw attribution, (C, H, W) for occlusion and the gradient methods, (H, W) for Grad-CAM,
    (heads, rows, cols) for attention and (rows, cols) for the rollouts (over the patch grid).
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
    grid: tuple[int, int] | None = None  # the patch grid (rows, cols) of the transformer methods
    prefix: int = 0  # prefix tokens before the patch tokens


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
                        cancelled: Callable[[], bool] | None = None,
                        attention: AttentionSettings | None = None) -> AttributionResult:
    """Attribution of ``target`` for one input ``x`` (1, C, H, W) by ``method``."""
    if method not in METHODS:
        raise ExplorerError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    start = time.perf_counter()
    if method in TRANSFORMER_METHODS:
        return _transformer_attribution(model, x, method, target, cam_layer, attention or AttentionSettings(),
                                        start)
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
    if method in ("gradcam", "guided-gradcam") and not note and not bool(raw.any()):
        note = ZERO_GRADIENT_NOTE
    return AttributionResult(method, target, raw.numpy().astype(np.float32),
                             display_map(method, raw).numpy().astype(np.float32),
                             time.perf_counter() - start, note, mode, layer, clean)


def _transformer_attribution(model: nn.Module, x: torch.Tensor, method: str, target: Target, layer: str | None,
                             settings: AttentionSettings, start: float) -> AttributionResult:
    """Attention of one query token (every head), attention rollout, or gradient-weighted rollout."""
    from explorer.core.attribution.attention import attention_rollout, query_attention  # noqa: PLC0415

    if method == "attention":
        tm = query_attention(model, x, layer, settings.query)
        heads = tm.maps[0]
        if settings.head is not None and not 0 <= settings.head < heads.shape[0]:
            raise TargetError(f"head must be in 0..{heads.shape[0] - 1}, not {settings.head}")
        shown = heads.mean(0) if settings.head is None else heads[settings.head]
        names = ("class token" if settings.query == 0 and tm.layout.prefix else
                 f"prefix token {settings.query}" if settings.query < tm.layout.prefix else
                 "patch (%d, %d)" % divmod(settings.query - tm.layout.prefix, tm.layout.grid[1]))
        which = "mean of the heads" if settings.head is None else f"head {settings.head}"
        note = f"attention of the {names} to the patches, {which} ({heads.shape[0]} heads)"
        raw, layer_name = heads, tm.layer
    else:
        tm = attention_rollout(model, x, settings.fusion, settings.discard_ratio,
                               target if method == "gradient-rollout" else None)
        shown = raw = tm.maps[0, 0]
        note = ("gradient-weighted rollout of the class token" if method == "gradient-rollout" else
                f"rollout of the class token, {settings.fusion} over heads, discard ratio {settings.discard_ratio}")
        layer_name = None
    if method == "gradient-rollout" and not bool(shown.any()):
        note = ZERO_GRADIENT_NOTE
    display = torch.nn.functional.interpolate(shown[None, None].float(), size=tuple(x.shape[-2:]),
                                              mode="nearest")[0, 0]
    return AttributionResult(method, target, raw.detach().float().cpu().numpy().astype(np.float32),
                             np.ascontiguousarray(display.cpu().numpy(), dtype=np.float32),
                             time.perf_counter() - start, note, "", layer_name, None, tm.layout.grid, tm.layout.prefix)


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
                      score: str = "logit", attention: AttentionSettings | None = None):
    """Generator form of :func:`compute_attribution` for a worker thread.

    ``target`` None means the top class (with ``score``). Occlusion yields an :class:`AttributionStep`
    after every batch (stop iterating to cancel); every method returns its :class:`AttributionResult` as
    the generator's return value.
    """
    x = x.to(model_device(model))  # in the worker: the caller may hand over a CPU tensor
    if target is None:
        target = Target.for_class(top_class(model, x), score)
    if method != "occlusion":
        return compute_attribution(model, x, method, target, occlusion_settings, cam_layer, attention=attention)
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


def cam_layer_choices(model: nn.Module) -> tuple[list[str], str | None]:
    """The layers offered for Grad-CAM (and for attention, which uses the chosen layer's block) and the
    default one: conv layers for a CNN; for a transformer also its LayerNorms and attention modules."""
    from explorer.core.attribution.attention import is_attention  # noqa: PLC0415
    from explorer.core.attribution.gradcam import default_cam_layer  # noqa: PLC0415

    names = [n for n, m in model.named_modules()
             if n and (isinstance(m, (nn.Conv2d, nn.LayerNorm)) or is_attention(m))]
    try:
        default = default_cam_layer(model)
    except ExplorerError:
        default = None
    return names, default
