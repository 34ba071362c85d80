"""What one ARSM update is made of: its real experience, its plan, its rollouts' values and a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import obs_as_tensor

from arsm_rl.actions import JointActions, distinct_codes
from arsm_rl.estimators import Draws, Estimator, Selection, StepBatch
from arsm_rl.rollouts import BranchPoint, flatten_steps
from arsm_rl.rollouts.workers import SentShare

__all__ = [
    "COSTLY",
    "GradientStep",
    "RolloutValues",
    "SentRollouts",
    "UpdateData",
    "UpdatePlan",
    "UpdateReport",
    "budget_steps",
    "costly_warning",
    "gradient_diagnostics",
    "keep_probability",
    "other_actions",
    "plan_update",
    "policy_gradient_step",
    "record_update",
    "step_gradients",
    "value_spread",
]


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
    terminated: np.ndarray | None = None  # (n, E) bool, the episode ended by termination (not by a time limit's truncation)
    final_obs: dict[int, Any] = field(default_factory=dict)  # row -> terminal observation of a truncated episode
    early: SentRollouts | None = None  # rollouts sent to workers while the steps were taken (arsm_rl.collection)


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
    tail_closings: dict[int, float] = field(default_factory=dict)  # e -> V of the state where its tail was cut (bootstrap)


@dataclass
class UpdateReport:
    """The last update's plan, rollouts and seconds per part (``plan``, ``rollouts``, ``gradient``)."""

    plan: UpdatePlan
    rollouts: RolloutValues
    seconds: dict[str, float]


#: Simulator steps per real step above which the first update warns that the unbounded defaults are costly.
COSTLY = 100


def costly_warning(per_step: float, budget: int | None, horizon: int | None) -> str | None:
    """
    What the first update says when the unbounded defaults cost over :data:`COSTLY` simulator steps per real step (long
    episodes, many actions: Taxi, Acrobot): the two knobs that bound it.

    :param per_step: the update's simulator steps per real step
    :param budget: ``max_pseudo_rollouts``
    :param horizon: ``pseudo_horizon``
    :return: the warning, or ``None`` (bounded, or not costly)
    """
    if budget is not None or horizon is not None or per_step <= COSTLY:
        return None
    return (
        f"ARSM's first update spent {per_step:.0f} simulator steps per real step: with max_pseudo_rollouts=None and "
        "pseudo_horizon=None every informative step is rolled out to the episode's end. Bound it with "
        "max_pseudo_rollouts (rollouts per update, e.g. 64) or pseudo_horizon (steps per rollout, e.g. 50), as the "
        "presets in agents/arsm.yml do (python train.py --algo arsm --list)."
    )


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


def plan_update(
    strategy: Estimator, joint: JointActions, collected: UpdateData, max_rollouts: int | None, rng: np.random.Generator
) -> UpdatePlan:
    """
    Choose the steps that contribute to the update and the rollouts they need: the estimator selects the actions it
    values at each step, each distinct one other than the true action is requested once, and over ``max_rollouts`` a
    uniform subset of the informative steps is kept (:func:`budget_steps`, reweighted, so unbiased).

    :param strategy: the update's estimator
    :param joint: the action coding
    :param collected: the update's real experience
    :param max_rollouts: the budget (``None``: every requested rollout)
    :param rng: the pseudo-rollout random stream (the estimator's selection draws first, then the budget)
    :return: the plan
    """
    n_rows = collected.rewards.size
    logits = collected.logits.reshape(n_rows, -1)
    true_codes = joint.encode(collected.actions.reshape(n_rows, -1))
    noise = collected.noise.reshape(n_rows, *collected.noise.shape[2:])
    selection = strategy.select(Draws(joint, logits, noise, true_codes), rng)
    plan = UpdatePlan(true_codes, np.zeros(n_rows, dtype=np.int64), np.zeros(n_rows, dtype=bool), selection=selection)
    if selection is None:
        plan.used[:] = True
        return plan
    rows, codes = other_actions(joint, selection, true_codes)
    plan.counts = np.bincount(rows, minlength=n_rows)
    informative, plan.weight = budget_steps(plan.counts, max_rollouts, collected.kept, rng)
    plan.used[informative] = True
    keep = plan.used[rows]
    plan.requests = list(zip(rows[keep].tolist(), codes[keep].tolist(), strict=True))
    return plan


def other_actions(joint: JointActions, selection: Selection, true_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    The rollouts steps ask for: each distinct selected action but the true one, which the real return values.

    :param joint: the action coding
    :param selection: the estimator's selection at ``B`` steps
    :param true_codes: ``(B,)`` codes of the actions taken
    :return: the rows (ascending) and action codes to roll out
    """
    rows, codes, _ = distinct_codes(selection.codes, joint.n_joint)
    other = codes != true_codes[rows]
    return rows[other], codes[other]


@dataclass
class SentRollouts:
    """The rollouts :class:`~arsm_rl.collection.EarlyRollouts` sent while an update's steps were taken: the seed of
    their noise streams, the requests of the steps it selected (in :func:`plan_update`'s order) and the shares sent,
    which cover the first of them."""

    entropy: int
    requests: list[tuple[int, int]] = field(default_factory=list)
    sent: list[SentShare] = field(default_factory=list)

    def shares_for(self, requests: list[tuple[int, int]], entropy: int) -> list[SentShare]:
        """
        :param requests: the update's requests, as :meth:`ARSM.run_rollouts` rolls them out
        :param entropy: the seed of their noise streams there
        :return: the shares sent, if they are the first of ``requests`` with that seed (otherwise none: the update
            was planned for another estimator, or rolled out once already, and everything runs again)
        """
        done = self.sent[-1].stop if self.sent else 0
        return self.sent if entropy == self.entropy and requests[:done] == self.requests[:done] else []


def step_gradients(strategy: Estimator, joint: JointActions, plan: UpdatePlan, collected: UpdateData, q_true: np.ndarray,
                   values: np.ndarray) -> np.ndarray:  # fmt: skip
    """
    Per-step estimates of d E[Q] / d logits at the used steps, from the estimator.

    :param strategy: the update's estimator
    :param joint: the action coding
    :param plan: the update's plan
    :param collected: the update's real experience
    :param q_true: ``(B,)`` the true actions' values (real returns, completed by tail rollouts)
    :param values: the values of ``plan.requests``, in order
    :return: ``(U, sum(nvec))``, one row per used step (zero at masked actions)
    """
    used = np.flatnonzero(plan.used)
    k, c = joint.valid.shape
    q = q_true[used]
    if np.isnan(q).any():
        raise RuntimeError("internal error: a used step has no value for its true action")
    true_codes = plan.true_codes[used]
    selection = plan.selection.rows(used) if plan.selection is not None else None
    selected_values = None
    if selection is not None:
        value_of = dict(zip(plan.requests, values.tolist(), strict=True))
        rows, distinct, inverse = distinct_codes(selection.codes, joint.n_joint)
        found = [
            q[r] if a == true_codes[r] else value_of[(int(used[r]), int(a))] for r, a in zip(rows, distinct, strict=True)
        ]
        selected_values = np.asarray(found)[inverse].reshape(selection.codes.shape)
    n_rows = len(collected.logits.reshape(-1, collected.logits.shape[-1]))
    logits = th.as_tensor(collected.logits.reshape(n_rows, -1)[used], dtype=th.float64)
    batch = StepBatch(
        actions=joint,
        logits=joint.padded(logits).reshape(-1, c),
        noise=th.as_tensor(collected.noise.reshape(n_rows, k, c)[used], dtype=th.float64).reshape(-1, c),
        true_codes=true_codes,
        q_true=q,
        selection=selection,
        values=selected_values,
    )
    grads = strategy.gradient(batch).reshape(len(used), k, c)[:, joint.valid].numpy()
    if collected.masks is None:
        return grads
    return np.where(collected.masks.reshape(n_rows, -1)[used], grads, 0.0)  # masked actions get no gradient


def gradient_diagnostics(
    grad: th.Tensor, ema: tuple[th.Tensor, th.Tensor] | None
) -> tuple[float, float, tuple[th.Tensor, th.Tensor]]:
    """
    Gradient norm and the paper's variance diagnostic: mean over parameters of log Var[grad], from moving averages
    (weight 0.01) of the gradient and its square.

    :param grad: the flattened gradient of this update
    :param ema: the moving averages so far (``None`` at the first update)
    :return: the norm, the diagnostic and the updated moving averages
    """
    if ema is None:
        ema = (grad.clone(), grad.square())
    else:
        mean, square = ema
        ema = (0.99 * mean + 0.01 * grad, 0.99 * square + 0.01 * grad.square())
    mean, square = ema
    variance = (square - mean.square()).clamp(min=0.0)
    return grad.norm().item(), th.log(variance + 1e-20).mean().item(), ema


def value_spread(plan: UpdatePlan, q_true: np.ndarray, values: np.ndarray) -> float:
    """
    The spread of the action values an update's gradient uses: mean over its used steps of (max - min) over the true
    action's value and the requested ones (0 for a step with the true action only; ``train/value_spread``).

    :param plan: the update's plan
    :param q_true: ``(B,)`` the true actions' values (NaN where unknown, at unused steps)
    :param values: the values of ``plan.requests``, in order
    :return: the mean spread (0 without used steps)
    """
    used = np.flatnonzero(plan.used)
    if len(used) == 0:
        return 0.0
    high, low = q_true.copy(), q_true.copy()
    rows = np.array([row for row, _ in plan.requests], dtype=np.int64)
    np.maximum.at(high, rows, values)
    np.minimum.at(low, rows, values)
    return float((high - low)[used].mean())


@dataclass
class GradientStep:
    """What :func:`policy_gradient_step` did: its losses, the gradient's norm and variance diagnostic, the averages."""

    pg_loss: float
    entropy_loss: float
    grad_norm: float
    grad_log_variance: float
    ema: tuple[th.Tensor, th.Tensor]


def policy_gradient_step(policy: Any, joint: JointActions, collected: UpdateData, plan: UpdatePlan, grads: np.ndarray,
                         ent_coef: float, max_grad_norm: float | None,
                         ema: tuple[th.Tensor, th.Tensor] | None) -> GradientStep:  # fmt: skip
    """
    One optimizer step of the actor on the surrogate loss ``-(logits * g).sum()`` over the used steps (each estimate g
    weighted by the plan's weight), averaged over the update's steps, minus ``ent_coef`` times the mean entropy, the
    actor's gradient clipped to ``max_grad_norm``.

    :param policy: the :class:`~arsm_rl.policies.ARSMPolicy` (its ``actor_parameters()`` and optimizer)
    :param joint: the action coding
    :param collected: the update's real experience
    :param plan: the update's plan
    :param grads: :func:`step_gradients`
    :param ent_coef: entropy bonus coefficient
    :param max_grad_norm: gradient clipping norm (``None``: none)
    :param ema: the gradient's moving averages so far (:func:`gradient_diagnostics`)
    """
    n_rows = collected.rewards.size
    policy.set_training_mode(True)  # only for the gradient's forward pass (Dropout, BatchNorm)
    logits = policy(obs_as_tensor(flatten_steps(collected.obs, n_rows), policy.device))
    masks = None if collected.masks is None else collected.masks.reshape(n_rows, -1)
    distribution = policy.action_dist.proba_distribution(action_logits=joint.masked(logits, masks))
    rows = th.as_tensor(np.flatnonzero(plan.used), device=policy.device)
    weighted = th.as_tensor(plan.weight * grads, dtype=logits.dtype, device=policy.device)
    pg_loss = -(logits[rows] * weighted).sum() / n_rows
    entropy_loss = -th.mean(distribution.entropy())
    policy.optimizer.zero_grad()
    (pg_loss + ent_coef * entropy_loss).backward()
    actor = policy.actor_parameters()
    grad = th.cat([p.grad.reshape(-1) for p in actor if p.grad is not None]).detach()
    grad_norm, grad_log_variance, ema = gradient_diagnostics(grad, ema)
    if max_grad_norm is not None:
        th.nn.utils.clip_grad_norm_(actor, max_grad_norm)
    policy.optimizer.step()
    return GradientStep(pg_loss.item(), entropy_loss.item(), grad_norm, grad_log_variance, ema)


def record_update(logger: Logger, plan: UpdatePlan, rollouts: RolloutValues, n_tails: int, grads: np.ndarray,
                  q_true: np.ndarray, values: np.ndarray) -> None:  # fmt: skip
    """Record what an update's plan and rollouts were (``train/no_signal_share``, ``train/value_spread``, ``rollout/``
    keys: docs/arsm.md, "Logged keys")."""
    logger.record("train/no_signal_share", float((grads == 0).all(axis=1).mean()) if len(grads) else 1.0)
    logger.record("train/value_spread", value_spread(plan, q_true, values))
    logger.record("rollout/pseudo_actions_per_step", float(plan.counts.mean()))
    logger.record("rollout/pseudo_step_share", float((plan.counts > 0).mean()))
    logger.record("rollout/pseudo_rollouts", len(plan.requests))
    logger.record("rollout/tail_rollouts", n_tails)
    rolled = len(plan.requests) + n_tails
    logger.record("rollout/worker_share", rollouts.worker_rollouts / rolled if rolled else 0.0)
    logger.record("rollout/pseudo_steps", rollouts.env_steps)
    logger.record("rollout/restore_steps", rollouts.restore_steps)
