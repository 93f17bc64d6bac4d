"""What the loop maximises: a target's value (class logit, channel mean, one neuron), a layer's L2
norm (DeepDream), a representation's distance (inversion), and the diversity term (Olah et al. 2017)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from explorer.core.attribution.target import Target
from explorer.core.optimize.truncate import Truncated


def target_objective(truncated: Truncated, target: Target, x: torch.Tensor,
                     diversity: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective summed over the batch, the target's value per image) for model inputs ``x``.

    Class targets use the logit, the score before the softmax (Simonyan et al.: maximising the
    probability can be done by pushing the other classes down instead)."""
    out = truncated(x)
    if target.is_unit:  # a token layer's unit is a channel over the patch grid (core.transformers.units_first)
        values = target.from_activation(out, truncated.model, tuple(x.shape[-2:]))
    else:
        values = Target.for_class(target.class_index).from_output(out)
    objective = values.sum()
    if diversity and x.shape[0] > 1:
        objective = objective + diversity * diversity_term(out)
    return objective, values


def diversity_term(act: torch.Tensor) -> torch.Tensor:
    """Minus the mean cosine similarity between the Gram matrices of the batch's activations
    (Lucid's ``diversity`` objective): larger when the images use the layer's channels differently."""
    n = act.shape[0]
    if act.dim() < 3 or n < 2:
        return act.new_zeros(())
    flat = act.flatten(2)
    grams = F.normalize(torch.bmm(flat, flat.transpose(1, 2)).flatten(1), p=2, dim=1)
    sim = grams @ grams.t()
    return -(sim.sum() - sim.diagonal().sum()) / n


def l2_objective(act: torch.Tensor) -> torch.Tensor:
    """DeepDream's objective: 0.5 * ||a||^2, whose gradient with respect to ``a`` is ``a`` itself."""
    return 0.5 * (act * act).sum()
