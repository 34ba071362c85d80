"""An update's pseudo and tail rollouts, run and valued: discounted returns, closed by a critic where cut."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from arsm_rl.actions import JointActions
from arsm_rl.rollouts import (
    BranchPoint,
    Obs,
    RacePolicy,
    RolloutEngine,
    discounted_returns,
    select_rows,
    stack_obs,
    tail_horizon,
)
from arsm_rl.updates import RolloutValues, UpdateData, UpdatePlan

__all__ = ["tail_rollouts", "value_rollouts"]


def tail_rollouts(collected: UpdateData, plan: UpdatePlan, horizon: int | None) -> dict[int, int | None]:
    """
    The tail rollouts an update needs: the true action's value is needed at every used step, and an episode still
    running at the end of the data gets one rollout from its last state to complete its return.

    :param horizon: the ``pseudo_horizon`` the returns are cut at
    :return: sub-env -> the tail's horizon (``None``: to the episode's end), for the tails that take a step
    """
    used = plan.used.reshape(collected.rewards.shape)
    horizons = {e: tail_horizon(used[:, e], collected.dones[:, e], horizon) for e in collected.tail_branches}
    return {e: steps for e, steps in horizons.items() if steps != 0}


def value_rollouts(engine: RolloutEngine, entropy: int, policy_for: Callable[[int, np.ndarray, np.ndarray], RacePolicy],
                   joint: JointActions, collected: UpdateData, requests: list[tuple[int, int]], tails: dict[int, int | None],
                   horizon: int | None, gamma: float, close: Callable[[Obs], np.ndarray] | None,
                   estimator: str) -> RolloutValues:  # fmt: skip
    """
    Run an update's pseudo rollouts (``requests``) and tail rollouts (``tails``) in one lockstep batch on ``engine``
    (its workers claim the shares sent ahead while the update was collected), and value them.

    :param entropy: the seed of the rollouts' noise streams (the shares sent ahead count only if it is theirs)
    :param policy_for: the rollouts' policy for the first ``n`` rollouts from their branch steps and sub-envs (-1: a
        tail, which never shares the real noise)
    :param joint: the action coding
    :param collected: the update's real experience
    :param requests: ``(row, action code)`` pairs to roll out (with ``tails``, at least one rollout)
    :param tails: sub-env -> horizon (``None``: to the episode's end) of a tail rollout from the state after the last
        step, with fresh actions of the policy
    :param horizon: the pseudo rollouts' ``pseudo_horizon``
    :param gamma: discount factor
    :param close: V(s) of the observations where horizons cut rollouts, added as gamma^h V(s_h)
        (``action_values="bootstrap"``), or ``None``
    :param estimator: the estimator's name (for the error when the update was collected for one that rolls out nothing)
    :return: the requests' values, the tails' rewards and closings, and the simulator steps spent
    """
    n_envs = collected.rewards.shape[1]
    branches = [_branch(collected.branches[row], estimator) for row, _ in requests]
    branches += [collected.tail_branches[e] for e in tails]
    steps = [row // n_envs for row, _ in requests] + [-1] * len(tails)
    act = policy_for(len(branches), np.array(steps), np.array([row % n_envs for row, _ in requests] + list(tails)))
    first = joint.decode(np.array([code for _, code in requests], dtype=np.int64).reshape(-1))
    if tails:
        tail_obs = select_rows(collected.tail_obs, list(tails))
        tail_masks = None if collected.tail_masks is None else collected.tail_masks[list(tails)]
        first = np.concatenate([first, act.first_actions(tail_obs, np.arange(len(requests), len(branches)), tail_masks)])
    horizons = [horizon] * len(requests) + list(tails.values())
    sent = [] if collected.early is None else collected.early.shares_for(requests, entropy)
    batch = engine.run(branches, joint.env_actions(first), act, horizons, sent=sent)
    ends = np.arange(batch.rewards.shape[1])[None, :] == batch.lengths[:, None] - 1
    values = discounted_returns(batch.rewards.T, ends.T, gamma)[0]
    closings = np.zeros(len(branches))
    cut = [i for i, obs in enumerate(batch.cut_obs) if obs is not None]
    if close is not None and cut:  # closed with the critic's value of the state reached
        closings[cut] = close(stack_obs([batch.cut_obs[i] for i in cut]))
        values = values + gamma**batch.lengths * closings
    r = len(requests)
    tail_rewards = {e: batch.rewards[r + i, : batch.lengths[r + i]] for i, e in enumerate(tails)}
    return RolloutValues(values[:r], tail_rewards, batch.env_steps, batch.restore_steps, batch.rewards.shape[1],
                         batch.worker_rollouts, {e: float(closings[r + i]) for i, e in enumerate(tails)})  # fmt: skip


def _branch(branch: BranchPoint | None, estimator: str) -> BranchPoint:
    if branch is None:
        raise ValueError(
            f"no branch point at this step: the update was collected for estimator {estimator!r}, which rolls out nothing"
        )
    return branch
