"""The estimators that come with arsm_rl, each a registered :class:`~arsm_rl.estimators.base.Estimator`: what it
values at a step (:meth:`~arsm_rl.estimators.base.Estimator.select`) and which formula of
:mod:`arsm_rl.estimators.math` merges the values (:meth:`~arsm_rl.estimators.base.Estimator.gradient`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch as th

from arsm_rl.estimators.base import Draws, Estimator, Selection, StepBatch, register_estimator
from arsm_rl.estimators.math import (
    all_action_gradient,
    ar_gradient,
    ars_gradient,
    arsm_gradient,
    reinforce_gradient,
    rloo_gradient,
)

if TYPE_CHECKING:  # for the annotations only, as in arsm_rl.estimators.base
    from arsm_rl.actions import JointActions

__all__ = [
    "AREstimator",
    "ARSEstimator",
    "ARSMEstimator",
    "AllActionEstimator",
    "RLOOEstimator",
    "ReinforceEstimator",
]


def _some_swap_differs(draws: Draws) -> np.ndarray:
    """``(B,)`` bool: some swap pseudo action differs from the true action (the steps ARSM and ARS may roll out)."""
    codes = draws.actions.swap_codes(draws.logits, draws.noise)
    return np.asarray((codes != draws.true_codes[:, None, None]).any(axis=(1, 2)))


@register_estimator
class ARSMEstimator(Estimator):
    """The paper's ARSM estimator: every swap pseudo action, merged over all references (sec. 4)."""

    name = "arsm"
    summary = "the distinct swap pseudo actions of every reference, merged (the paper's estimator; default)"
    selects_by_step = True

    def may_roll_out(self, draws: Draws) -> np.ndarray:
        return _some_swap_differs(draws)

    def select(self, draws: Draws, rng: np.random.Generator) -> Selection:
        return Selection(draws.actions.swap_codes(draws.logits, draws.noise))

    def gradient(self, batch: StepBatch) -> th.Tensor:
        _, values = batch.selected()
        return arsm_gradient(batch.noise, batch.per_dimension(values))


@register_estimator
class ARSEstimator(Estimator):
    """ARS: the swap pseudo actions of one reference category drawn uniformly per step."""

    name = "ars"
    summary = "the swap pseudo actions of one random reference category per step"

    def may_roll_out(self, draws: Draws) -> np.ndarray:
        return _some_swap_differs(draws)

    def select(self, draws: Draws, rng: np.random.Generator) -> Selection:
        n_rows = len(draws.true_codes)
        refs = rng.integers(draws.actions.n_categories, size=n_rows)
        column = draws.actions.swap_codes(draws.logits, draws.noise)[np.arange(n_rows), :, refs]  # (B, C): swaps (m, ref)
        return Selection(column, {"refs": refs})

    def gradient(self, batch: StepBatch) -> th.Tensor:
        selection, values = batch.selected()
        f = batch.per_dimension(np.repeat(values[:, :, None], values.shape[1], axis=2))  # f[m, j] = f(z^{m<->ref})
        return ars_gradient(batch.noise, f, batch.per_dimension(selection.extra["refs"]))


@register_estimator
class AREstimator(Estimator):
    """AR: REINFORCE on the race, Rao-Blackwellised over the noise; the real return only."""

    name = "ar"
    summary = "the real return only, REINFORCE on the race (no rollouts)"
    rolls_out = False

    def gradient(self, batch: StepBatch) -> th.Tensor:
        return ar_gradient(batch.noise, batch.per_dimension(batch.q_true))


@register_estimator
class ReinforceEstimator(Estimator):
    """REINFORCE without a baseline; the real return only."""

    name = "reinforce"
    summary = "the real return only, REINFORCE without a baseline (no rollouts)"
    rolls_out = False

    def gradient(self, batch: StepBatch) -> th.Tensor:
        taken = th.as_tensor(batch.actions.decode(batch.true_codes)).reshape(-1)
        return reinforce_gradient(batch.logits, taken, batch.per_dimension(batch.q_true))


@register_estimator
class RLOOEstimator(Estimator):
    """
    REINFORCE with a leave-one-out baseline over ``S = max(nvec)`` i.i.d. actions per step: the real one and
    ``S - 1`` fresh draws. Like ARSM, each distinct action is valued once (the estimate is linear in the values, so
    sharing a value between equal actions keeps it unbiased).
    """

    name = "rloo"
    summary = "leave-one-out REINFORCE over max(nvec) i.i.d. actions per step, the real one first"
    algo = True

    def select(self, draws: Draws, rng: np.random.Generator) -> Selection:
        actions, n_rows = draws.actions, len(draws.true_codes)
        extra = actions.n_categories - 1
        fresh = actions.race(th.as_tensor(np.repeat(draws.logits, extra, axis=0)), actions.noise(rng, n_rows * extra))
        return Selection(np.concatenate([draws.true_codes[:, None], actions.encode(fresh).reshape(n_rows, extra)], axis=1))

    def gradient(self, batch: StepBatch) -> th.Tensor:
        selection, values = batch.selected()
        samples = selection.codes  # (U, S) codes, the true action first
        taken = th.as_tensor(batch.actions.decode(samples)).permute(0, 2, 1).reshape(-1, samples.shape[1])
        return rloo_gradient(batch.logits, taken, batch.per_dimension(values))


@register_estimator
class AllActionEstimator(Estimator):
    """Every action valued at every step: the exact expectation over actions (``Discrete`` only)."""

    name = "all_action"
    summary = "every action rolled out at every step, the exact expectation over actions (Discrete only)"
    algo = True
    selects_by_step = True

    def check(self, actions: JointActions) -> None:
        if not actions.discrete:
            raise ValueError("estimator='all_action' needs a Discrete action space (MultiDiscrete has too many joint actions)")

    def select(self, draws: Draws, rng: np.random.Generator) -> Selection:
        n_rows, n_cat = len(draws.true_codes), draws.actions.n_categories
        # Impossible actions (masked, or Discrete(1)'s padding) have probability 0 and no gradient: value them with
        # the true action's value (already known) instead of rolling them out.
        possible = draws.actions.padded(th.as_tensor(draws.logits)).reshape(n_rows, n_cat).isfinite().numpy()
        return Selection(np.where(possible, np.arange(n_cat), draws.true_codes[:, None]))

    def gradient(self, batch: StepBatch) -> th.Tensor:
        _, values = batch.selected()
        return all_action_gradient(batch.logits, th.as_tensor(values))
