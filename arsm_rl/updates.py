"""What one ARSM update is made of: its real experience, its plan, its rollouts' values and a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arsm_rl.rollouts import BranchPoint
from arsm_rl.strategies import Selection

__all__ = ["RolloutValues", "UpdateData", "UpdatePlan", "UpdateReport"]


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


@dataclass
class UpdateReport:
    """The last update's plan, rollouts and seconds per part (``plan``, ``rollouts``, ``gradient``)."""

    plan: UpdatePlan
    rollouts: RolloutValues
    seconds: dict[str, float]
