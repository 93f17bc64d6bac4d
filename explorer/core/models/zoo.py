"""torchvision's classification models by name: their input specs, untrained builds, pretrained loads."""
from __future__ import annotations

from collections.abc import Generator

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
