"""Small helpers over module outputs that several core families use (probe, costs, model loading)."""
from __future__ import annotations

import torch


def first_tensor(value) -> torch.Tensor | None:
    """The first tensor in a module output (tensors, tuples, namedtuples, dicts)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None
