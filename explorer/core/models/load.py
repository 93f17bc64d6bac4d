"""Loading a model the way the command line and the window name it: bundled, torchvision, or a file."""
from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import torch
from explorer.core.errors import ModelLoadError
from explorer.core.models.device import resolve_device
from explorer.core.models.spec import LoadedModel, ProgressFn, check_labels, read_labels_file
from explorer.core.models.zoo import (TIMM_EXTRA, load_timm_model_steps, load_zoo_model_steps, timm_available,
                                      timm_name, zoo_names)
from explorer.core.resources import MODELS_DIR
from explorer.core.steps import drive
from explorer.core.tensors import first_tensor

BUNDLED_MODELS = {"shapes": MODELS_DIR / "shapes.pt"}
DEFAULT_MODEL = "shapes"


def bundled_names() -> list[str]:
    return sorted(BUNDLED_MODELS)


def load_bundled_model(name: str) -> LoadedModel:
    """A bundled CNN by name, read by the one reader of the bundled format (:mod:`.checkpoint`)."""
    from explorer.core.models.checkpoint import load_checkpoint  # noqa: PLC0415

    path = BUNDLED_MODELS[name]
    if not path.exists():
        raise ModelLoadError(f"bundled model {name!r} is missing ({path}); run scripts/train_shapes.py")
    return load_checkpoint(path, bundled_name=name)


def load_model_steps(name: str | None = None, *, checkpoint: str | Path | None = None,
                     weights: str = "pretrained", trust_checkpoint: bool = False,
                     device: str | torch.device | None = None, input_size: tuple[int, int] | None = None,
                     mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                     labels_file: str | Path | None = None,
                     weights_url: str | None = None) -> Generator[tuple[int, int], None, LoadedModel]:
    """Load a model the way the command line and the GUI name it.

    A generator: it yields ``(bytes done, bytes total)`` while pretrained weights download and returns
    the :class:`LoadedModel` (closing it cancels); :func:`load_model` runs it to the end.

    Parameters
    ----------
    name : a bundled name (``shapes``), a torchvision name (``resnet18``), a timm name (``timm:deit_tiny_patch16_224``,
        or a plain name torchvision lacks; the optional extra ``vit``), a checkpoint file path, or None for
        the bundled default.
    checkpoint : a checkpoint file; ``name`` (if a zoo name) then says which architecture it fits.
    weights : ``"pretrained"`` (download once, cached) or ``"none"`` (random, shown as untrained);
        ignored when a checkpoint is given.
    trust_checkpoint : allow unpickling whole modules (this runs code from the file).
    """
    if checkpoint is None and name and Path(name).suffix and Path(name).exists():
        name, checkpoint = None, name
    if checkpoint is not None:  # ``name``, when given, is the checkpoint's architecture
        from explorer.core.models.checkpoint import load_checkpoint  # noqa: PLC0415

        loaded = load_checkpoint(checkpoint, arch=name, trust=trust_checkpoint)
    elif (name := name or DEFAULT_MODEL) in BUNDLED_MODELS:
        loaded = load_bundled_model(name)
    elif name in zoo_names():
        loaded = yield from load_zoo_model_steps(name, weights=weights, weights_url=weights_url,
                                                 input_size=input_size)
    elif (timm := timm_name(name)) is not None:  # timm:NAME, or a name only timm knows
        loaded = yield from load_timm_model_steps(timm, weights=weights, weights_url=weights_url,
                                                  input_size=input_size)
    else:
        extra = "" if timm_available() else f"; {TIMM_EXTRA}"
        raise ModelLoadError(f"unknown model {name!r}: not a file, not bundled "
                             f"({', '.join(bundled_names())}), not a torchvision classification model"
                             + (", not a timm model" if not extra else "") + extra)
    labels = read_labels_file(labels_file) if labels_file else None
    loaded.module.eval()
    for p in loaded.module.parameters():
        p.requires_grad_(False)
    if labels is not None:
        check_labels(labels, output_classes(loaded.module, loaded.spec.shape), f"labels file {Path(labels_file).name}")
    loaded.spec = loaded.spec.with_overrides(size=input_size, mean=mean, std=std, labels=labels)
    return loaded.to(resolve_device(device))


def output_classes(module: torch.nn.Module, shape: tuple[int, ...]) -> int | None:
    """The number of classes ``module`` outputs for one zero input of ``shape`` (its own input size),
    or None when that forward fails or the output is not one score per class."""
    try:
        with torch.no_grad():
            out = first_tensor(module(torch.zeros((1, *shape))))
    except Exception:  # noqa: BLE001 - the model's own code: no answer means no check
        return None
    if out is None or out.dim() < 2:
        return None
    return int(out.flatten(1).shape[1])


def load_model(name: str | None = None, *, progress: ProgressFn | None = None, **options) -> LoadedModel:
    """:func:`load_model_steps` run to the end; ``progress(done, total)`` sees the download's steps."""
    return drive(load_model_steps(name, **options), None if progress is None else (lambda step: progress(*step)))


def load_zoo_model(name: str, weights: str = "pretrained", progress: ProgressFn | None = None,
                   weights_url: str | None = None) -> LoadedModel:
    """:func:`~explorer.core.models.zoo.load_zoo_model_steps` run to the end."""
    return drive(load_zoo_model_steps(name, weights=weights, weights_url=weights_url),
                 None if progress is None else (lambda step: progress(*step)))
