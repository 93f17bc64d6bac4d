"""Models by name: torchvision's classification models and, with the optional extra ``vit``, timm's (their
input specs, untrained builds, pretrained loads)."""
from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from explorer.core.errors import ModelLoadError
from explorer.core.models.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    LoadedModel,
)
from torch import nn


def zoo_names() -> list[str]:
    """torchvision's image-classification model names (``resnet18``, ``vgg16``, ...)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def zoo_spec(name: str) -> InputSpec:
    """Input spec of a zoo model, from its default weights' metadata (no download)."""
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return InputSpec()
    transforms = weights.transforms()
    crop = getattr(transforms, "crop_size", [224])
    size = (crop[0], crop[-1])
    return InputSpec(size=size, channels=3, mean=tuple(getattr(transforms, "mean", IMAGENET_MEAN)),
                     std=tuple(getattr(transforms, "std", IMAGENET_STD)),
                     labels=tuple(weights.meta.get("categories", ())))


def vit_image_size(name: str, input_size: tuple[int, int] | None) -> int | None:
    """The image size to build a torchvision ViT for (its position embeddings fix it), when an input size
    other than its default is asked for; None for other models, square inputs only."""
    if not name.startswith("vit_") or input_size is None or input_size[0] != input_size[-1]:
        return None
    return int(input_size[0]) if int(input_size[0]) != zoo_spec(name).size[0] else None


def build_zoo_model(name: str, num_classes: int | None = None, image_size: int | None = None) -> nn.Module:
    """An untrained torchvision model (random weights); GoogLeNet/Inception without aux heads; a ViT for
    ``image_size`` when given."""
    kwargs: dict = {"weights": None}
    if image_size is not None:
        kwargs["image_size"] = image_size
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    return torchvision.models.get_model(name, **kwargs)


def load_zoo_model_steps(name: str, weights: str = "pretrained", weights_url: str | None = None,
                         input_size: tuple[int, int] | None = None) -> Generator[tuple[int, int], None, LoadedModel]:
    """A torchvision model by name, pretrained (downloaded once, cached) or with random weights.

    A generator: yields ``(bytes done, bytes total)`` while weights download and returns the
    :class:`LoadedModel`; closing it cancels the download (nothing is left behind).
    """
    if name not in zoo_names():
        raise ModelLoadError(f"unknown model {name!r}: not a torchvision classification model")
    spec = zoo_spec(name)
    image_size = vit_image_size(name, input_size)  # a ViT at 384 px is built for 384 px (24x24 patches)
    module = build_zoo_model(name, image_size=image_size)
    if weights == "none":
        return LoadedModel(name, module.eval(), spec, trained=False, source=f"torchvision {name}, random weights")
    if weights != "pretrained":
        raise ModelLoadError(f"weights must be 'pretrained' or 'none', not {weights!r}")
    from explorer.core.models.download import fetch_weights_steps  # noqa: PLC0415 - only pretrained loading needs it

    enum = torchvision.models.get_model_weights(name).DEFAULT
    path = yield from fetch_weights_steps(enum, url=weights_url)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if image_size is not None:  # the pretrained position embeddings, interpolated to the new patch grid
        from torchvision.models.vision_transformer import interpolate_embeddings  # noqa: PLC0415

        state = interpolate_embeddings(image_size, module.patch_size, state)
    missing, unexpected = module.load_state_dict(state, strict=False)
    bad = [k for k in missing if "aux" not in k] + [k for k in unexpected if "aux" not in k]
    if bad:
        raise ModelLoadError(f"downloaded weights for {name} do not fit the model (first key: {bad[0]})")
    return LoadedModel(name, module.eval(), spec, trained=True, source=f"torchvision {name}, {enum}")


# --- timm (the optional extra ``vit``) -------------------------------------------------------------------

TIMM_PREFIX = "timm:"
TIMM_EXTRA = "timm models need the optional extra 'vit' (pip install 'deep-explorer[vit]', which installs timm)"
HF_HUB_URL = "https://huggingface.co/{repo}/resolve/main/{file}"


def _import_timm():
    """timm, or one line naming the extra that installs it."""
    try:
        import timm  # noqa: PLC0415 - an optional extra, imported only when a timm model is asked for
    except ImportError:
        raise ModelLoadError(TIMM_EXTRA) from None
    return timm


def timm_available() -> bool:
    try:
        _import_timm()
    except ModelLoadError:
        return False
    return True


def timm_name(name: str) -> str | None:
    """The timm model ``name`` asks for: the rest of ``timm:NAME`` (timm must then be installed), or a plain
    name that timm knows and torchvision does not (None without timm). None when it is not a timm model."""
    if name.startswith(TIMM_PREFIX):
        rest = name[len(TIMM_PREFIX):]
        timm = _import_timm()
        if not rest or not timm.is_model(rest):
            raise ModelLoadError(f"unknown model {name!r}: timm has no model called {rest!r}")
        return rest
    if name in zoo_names() or not timm_available():
        return None
    import timm  # noqa: PLC0415

    return name if timm.is_model(name) else None


def timm_spec(module: nn.Module) -> InputSpec:
    """Input spec of a timm model from its pretrained config (size, mean, std; no download) and, for the
    1000 ImageNet classes, the class names timm ships (the first name of each synset, as torchvision's)."""
    cfg = getattr(module, "pretrained_cfg", None) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    labels: tuple[str, ...] = ()
    classes = getattr(module, "num_classes", None)
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset  # noqa: PLC0415

        subset = infer_imagenet_subset(module)
        if subset:
            info = ImageNetInfo(subset)
            if info.num_classes() == classes:
                labels = tuple(info.index_to_description(i).split(",")[0].strip() for i in range(classes))
    except (ImportError, AttributeError, ValueError, OSError):  # older timm: no names, the spec still holds
        labels = ()
    return InputSpec(size=(int(size[1]), int(size[2])), channels=int(size[0]),
                     mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
                     labels=labels)


def build_timm_model(name: str, input_size: tuple[int, int] | None = None, **kwargs) -> nn.Module:
    """An untrained timm model (random weights); a ViT built for ``input_size`` when it differs from the
    model's default (its position embeddings fix the grid); models that take no ``img_size`` keep theirs."""
    timm = _import_timm()
    default = timm.create_model(name, pretrained=False, **kwargs) if input_size is None else None
    if default is not None:
        return default
    try:
        return timm.create_model(name, pretrained=False, img_size=tuple(int(s) for s in input_size), **kwargs)
    except TypeError:  # no img_size argument: a CNN, whose size is free anyway
        return timm.create_model(name, pretrained=False, **kwargs)


@dataclass(frozen=True)
class TimmWeights:
    """Where a timm model's pretrained weights come from (the Hugging Face hub, or the config's own URL);
    duck-types the ``.url`` of torchvision's weights for :mod:`.download`, which names ``model_name``."""

    url: str
    model_name: str
    custom_load: bool = False  # timm's own reader (e.g. .npz files of the original ViT release)

    @property
    def cache_folder(self) -> Path:
        """Its own folder in torch.hub's checkpoints (hub files are all called model.safetensors)."""
        return Path(torch.hub.get_dir()) / "checkpoints" / "timm" / self.model_name.replace("/", "--")


def timm_weights(module: nn.Module, name: str) -> TimmWeights:
    cfg = getattr(module, "pretrained_cfg", None) or {}
    repo = cfg.get("hf_hub_id")
    if repo:
        return TimmWeights(HF_HUB_URL.format(repo=repo, file=cfg.get("hf_hub_filename") or "model.safetensors"),
                           name)
    if cfg.get("url"):
        return TimmWeights(cfg["url"], name, bool(cfg.get("custom_load", False)))
    raise ModelLoadError(f"timm has no pretrained weights for {name}; use random weights")


def load_timm_model_steps(name: str, weights: str = "pretrained", weights_url: str | None = None,
                          input_size: tuple[int, int] | None = None
                          ) -> Generator[tuple[int, int], None, LoadedModel]:
    """A timm model by name (``vit_small_patch16_224``, ``deit_tiny_distilled_patch16_224``, ...), with random
    weights or pretrained ones downloaded once from the Hugging Face hub into torch.hub's cache (with
    progress and cancel, as torchvision's; offline, one :class:`WeightsDownloadError` line)."""
    module = build_timm_model(name)
    spec = timm_spec(module)
    if input_size is not None and tuple(input_size) != spec.size:
        module = build_timm_model(name, input_size)
    label = f"{TIMM_PREFIX}{name}"
    if weights == "none":
        return LoadedModel(label, module.eval(), spec, trained=False, source=f"timm {name}, random weights")
    if weights != "pretrained":
        raise ModelLoadError(f"weights must be 'pretrained' or 'none', not {weights!r}")
    from explorer.core.models.download import fetch_weights_steps  # noqa: PLC0415 - only pretrained loading needs it

    source = timm_weights(module, name)
    path = yield from fetch_weights_steps(source, url=weights_url or source.url, cache_dir=source.cache_folder)
    # timm's own loader reads the file: its filters adapt old checkpoints and resample position embeddings
    overlay = {"file": str(path), "custom_load": source.custom_load}
    timm = _import_timm()
    kwargs = {} if input_size is None or tuple(input_size) == spec.size else \
        {"img_size": tuple(int(s) for s in input_size)}
    try:
        module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except TypeError:
        module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        raise ModelLoadError(f"downloaded weights for timm {name} do not fit the model "
                             f"({str(exc).splitlines()[0][:120]})") from None
    return LoadedModel(label, module.eval(), spec, trained=True, source=f"timm {name}, {source.url}")
