"""Models and folders for the compare tests: the bundled shapes model fine-tuned with frozen early layers."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

FROZEN = ("features.conv1", "features.bn1", "features.conv2", "features.bn2")


def fine_tuned(loaded, steps: int = 6, seed: int = 0, frozen=FROZEN):
    """A copy of ``loaded`` trained a few Adam steps on shapes images with permuted labels, ``frozen``
    layers untouched (no gradient; their BatchNorm kept in eval mode, so its running statistics stay)."""
    from explorer.core.models.shapes_data import generate_batch
    from explorer.core.preprocess import image_to_tensor

    b = copy.deepcopy(loaded)
    model = b.module
    mods = dict(model.named_modules())
    trainable = []
    for name, m in mods.items():
        if not name or list(m.children()):
            continue
        for p in m.parameters(recurse=False):
            p.requires_grad_(name not in frozen)
            if name not in frozen:
                trainable.append(p)
    images, labels = generate_batch(seed, 16 * steps, 128)
    x = torch.cat([image_to_tensor(img, b.spec) for img in images])
    y = (torch.as_tensor(labels).long() + 1) % 6  # a new task: the late layers must change
    opt = torch.optim.Adam(trainable, lr=1e-2)
    torch.manual_seed(seed)
    model.train()
    for name in frozen:
        mods[name].eval()
    for i in range(steps):
        xb, yb = x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    b.name, b.source = "fine-tuned copy", f"{loaded.name} fine-tuned {steps} steps, {', '.join(frozen)} frozen"
    return b


def reinitialised(loaded, seed: int = 0):
    """A copy of ``loaded`` with every layer's parameters drawn afresh (the anatome#18 case)."""
    b = copy.deepcopy(loaded)
    torch.manual_seed(seed)
    for m in b.module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    b.module.eval()
    return b


def image_folder(folder: Path, count: int, seed: int = 0) -> Path:
    from explorer.cli.topk import generate_folder

    return generate_folder(folder, count, seed=seed, classes=False)
