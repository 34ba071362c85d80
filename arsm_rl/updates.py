"""What one ARSM update is made of: its real experience, its plan, its rollouts' values and a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arsm_rl.estimators import Selection
from arsm_rl.rollouts import BranchPoint

__all__ = ["RolloutValues", "UpdateData", "UpdatePlan", "UpdateReport", "budget_steps", "keep_probability"]


@dataclass
class UpdateData:
    """One update's real experience, time-major: index ``[t, e]`` is step t of sub-env e; row ``t * E + e`` when flat."""

    obs: Any  # (n, E, *obs_shape) array, or dict of such arrays
    logits: np.ndarray  # (n, E, sum(nvec)) float32, the logits the actions were drawn with (-inf at masked actions)
    noise: np.ndarray  # (n, E, K, C) float32 flat-Dirichlet draws (C = max(nvec))
    actions: np.ndarray  # (n, E, K) int64
    rewards: np.ndarray  # (n, E) float64, original (un-normalised) rewards
    dones: np.ndarray  # (n, E) bool, the episode ended with this step
    branches: list[BranchPoint | None]  # (n * E,) branch point before each step, by row (None: no rollouts needed)
    tail_branches: dict[int, BranchPoint]  # e -> branch point after the last step (ongoing episode)
    tail_obs: Any  # (E, *obs_shape) observations after the last step
    masks: np.ndarray | None = None  # (n, E, sum(nvec)) bool, the valid actions at each step; None: no masks
    tail_masks: np.ndarray | None = None  # (E, sum(nvec)) bool, the valid actions after the last step
    kept: tuple[np.ndarray, float] | None = None  # budget_sampling="step": ((n, E) bool steps kept, their probability p)


@dataclass
class UpdatePlan:
    """Which real steps of an update contribute to its gradient and which rollouts they need (rows ``t * E + e``)."""

    true_codes: np.ndarray  # (B,) codes of the actions taken
    counts: np.ndarray  # (B,) rollouts each step would need
    used: np.ndarray  # (B,) bool, steps contributing to the gradient
    weight: float = 1.0  # Horvitz-Thompson weight of the used steps (1 unless the budget sub-samples)
    requests: list[tuple[int, int]] = field(default_factory=list)  # (row, action code) to roll out
    selection: Selection | None = None  # the actions the estimator values at each step (None: rollout-free)


@dataclass
class RolloutValues:
    """What an update's pseudo and tail rollouts returned."""

    values: np.ndarray  # (R,) discounted value of each requested (row, action) rollout
    tail_rewards: dict[int, np.ndarray]  # e -> rewards of the tail rollout completing sub-env e's episode
    env_steps: int  # simulator steps spent, restores included
    restore_steps: int  # the part of env_steps spent replaying snapshots
    lockstep_steps: int = 0  # length of the longest rollout: the lockstep iterations, when run in this process
    worker_rollouts: int = 0  # how many of the rollouts ran on rollout workers (the rest in the training process)


@dataclass
class UpdateReport:
    """The last update's plan, rollouts and seconds per part (``plan``, ``rollouts``, ``gradient``)."""

    plan: UpdatePlan
    rollouts: RolloutValues
    seconds: dict[str, float]


def keep_probability(budget: int | None, asked: int | None, n_rows: int) -> float | None:
    """
    ``budget_sampling="step"``: the probability p of keeping each step of the coming update, from the past only.

    :param budget: rollouts per update (``None``: no budget, nothing to sample)
    :param asked: rollouts the previous update's steps asked for (``None`` before the first update)
    :param n_rows: steps in the update (the first update's stand-in for ``asked``)
    :return: p = min(1, budget / asked), or ``None`` without a budget
    """
    return None if budget is None else min(1.0, budget / max(1, asked or n_rows))


def budget_steps(
    counts: np.ndarray, budget: int | None, kept: tuple[np.ndarray, float] | None, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """
    The informative steps an update uses and their Horvitz-Thompson weight, which keeps the estimate unbiased.

    :param counts: ``(B,)`` rollouts each step would need
    :param budget: rollouts per update, ``None`` for all
    :param kept: steps kept when they were drawn, with their probability p (``budget_sampling="step"``): weight 1/p
    :param rng: draws the fixed-size subset otherwise: m = budget / (mean rollouts per informative step) steps,
        weight (informative steps) / m
    :return: the used steps' rows and their weight
    """
    informative = np.flatnonzero(counts > 0)
    if kept is not None:
        return informative[kept[0].reshape(-1)[informative]], 1.0 / kept[1]
    if budget is not None and counts.sum() > budget:
        m = max(1, int(budget * len(informative) / counts.sum()))
        return rng.choice(informative, size=m, replace=False), len(informative) / m
    return informative, 1.0
