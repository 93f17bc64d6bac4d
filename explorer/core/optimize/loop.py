"""The one optimisation loop: gradient steps on an input, watched as they go.

Every method (class model, regularised activation maximisation, Fourier feature visualisation,
DeepDream, feature inversion) is a :class:`Problem`: its parameters, the objective to *maximise*
(a descent method returns minus its loss) and the update that applies one gradient (an optimiser step
plus the method's regularisers). :func:`ascend` is the loop: a generator (:mod:`explorer.core.steps`)
that yields an :class:`OptimizeStep` with the current image and objective every few steps and returns a
:class:`LoopResult`; closing it stops the work at the next step.

Gradients are taken with ``torch.autograd.grad`` with respect to the parameters only, so nothing is
accumulated in the model's weights; the methods also mark the weights as needing no gradient while they
run (:func:`~explorer.core.optimize.truncate.frozen_parameters`), so that theirs are never computed.
"""
from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from explorer.core.errors import ExplorerError


class OptimizeError(ExplorerError):
    """An optimisation cannot run as asked (bad setting, objective not finite)."""


class Problem(Protocol):
    params: list[torch.Tensor]

    def objective(self, step: int) -> torch.Tensor:
        """The scalar to maximise, computed from the current parameters (differentiable)."""

    def update(self, step: int, grads: list[torch.Tensor]) -> None:
        """Apply one step with the gradients of the objective (called under ``torch.no_grad``)."""

    def pictures(self) -> list[np.ndarray]:
        """The current image(s) as (H, W, 3) uint8, in pixel space (what the model sees, de-normalised)."""


@dataclass
class OptimizeStep:
    """Yielded every few steps: where the loop is and what the image looks like now."""

    step: int  # steps done in this stage
    total: int
    objective: float
    pictures: list[np.ndarray]
    stage: str = ""  # e.g. "octave 2/4" or "layer features.relu3"
    history: list[float] = field(default_factory=list)  # the objective at every step so far (this stage)


@dataclass
class LoopResult:
    objective: float  # at the last step
    history: list[float]
    steps: int
    seconds: float


def ascend(problem: Problem, steps: int, every: int = 5, stage: str = ""
           ) -> Generator[OptimizeStep, None, LoopResult]:
    """Run ``steps`` gradient steps on ``problem``; yield every ``every`` steps (and after the last)."""
    if steps < 1:
        raise OptimizeError(f"the number of steps must be at least 1, not {steps}")
    every = max(1, int(every))
    history: list[float] = []
    start = time.perf_counter()
    for i in range(steps):
        with torch.enable_grad():
            value = problem.objective(i)
            grads = torch.autograd.grad(value, problem.params)
        v = float(value.detach())
        if not math.isfinite(v):
            raise OptimizeError(f"the objective is not finite at step {i + 1} ({v}); "
                                f"try a smaller learning rate")
        history.append(v)
        with torch.no_grad():
            problem.update(i, list(grads))
        if (i + 1) % every == 0 or i + 1 == steps:
            yield OptimizeStep(i + 1, steps, v, problem.pictures(), stage, list(history))
    return LoopResult(history[-1], history, steps, time.perf_counter() - start)
