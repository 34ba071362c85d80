"""An update's real steps as they are taken: their random draws, made up front; what each step records; and the
rollouts that idle workers start while the steps are taken."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from arsm_rl.actions import JointActions
from arsm_rl.estimators import Draws, Estimator
from arsm_rl.rollouts import POLICY_BLOCK, ActFn, BranchPoint, RolloutEngine, float32_rewards, rows_independent, stack_obs
from arsm_rl.updates import SentRollouts, UpdateData, other_actions

__all__ = ["EarlyRollouts", "StepRecord", "UpdateDraws", "draw_update"]


@dataclass(frozen=True)
class UpdateDraws:
    """
    The random draws of an update's real steps, made before its first step in the order the steps would make them.

    :param noise: ``(n, E, K, C)`` the steps' flat-Dirichlet noise, from the real stream
    :param kept: ``(n, E)`` bool, the steps a budget sampled per step keeps (``None``: no such budget)
    :param keep: their probability p
    :param entropy: where rollouts go ahead to workers, the seed their noise streams will have: the
        pseudo stream's next draw, read from a copy of it (``run_rollouts`` makes that draw, and only when the update
        has rollouts), or ``None``
    """

    noise: np.ndarray
    kept: np.ndarray | None
    keep: float | None
    entropy: int | None


def draw_update(joint: JointActions, real_rng: np.random.Generator, pseudo_rng: np.random.Generator, n_steps: int,
                n_envs: int, keep: float | None, ahead: bool) -> UpdateDraws:  # fmt: skip
    """
    An update's draws up front: the same values as the steps drawing them one after the other (each generator's
    draws come in one sequence). Where rollouts go ahead to workers (``ahead``), the seed of the rollouts' noise is
    read ahead from a copy of the pseudo stream: the draw the rollouts make when they run, since
    nothing is drawn in between, while the stream itself is left as it is for an update without rollouts.

    :param joint: the action coding
    :param real_rng: the real noise stream
    :param pseudo_rng: the pseudo-rollout stream (the kept draws, then the seed)
    :param keep: ``budget_sampling="step"``'s probability of keeping a step (``None``: no draw)
    :param ahead: rollouts go ahead to workers (there are workers, and each step's rollouts are known as it is taken:
        an estimator that selects by step, without a budget drawn after the steps)
    """
    noise = joint.noise(real_rng, n_steps * n_envs)
    kept = None if keep is None else pseudo_rng.random((n_steps, n_envs)) < keep
    entropy = int(copy.deepcopy(pseudo_rng).integers(2**63)) if ahead else None
    return UpdateDraws(noise.reshape(n_steps, n_envs, *noise.shape[1:]), kept, keep, entropy)


class StepRecord:
    """What an update's real steps leave, step by step, for :class:`~arsm_rl.updates.UpdateData`."""

    def __init__(self) -> None:
        self.obs: list[Any] = []
        self.logits: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []
        self.dones: list[np.ndarray] = []
        self.terminated: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.branches: list[BranchPoint | None] = []
        self.final_obs: dict[int, Any] = {}

    def add(self, obs: Any, logits: np.ndarray, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray,
            infos: list[dict[str, Any]], masks: np.ndarray | None, branches: list[BranchPoint | None]) -> None:  # fmt: skip
        """
        One real step of every sub-env.

        :param obs: the observations it was taken from
        :param logits: ``(E, sum(nvec))`` the logits its actions were drawn with
        :param actions: ``(E, K)`` its actions
        :param rewards: its original (un-normalised) rewards
        :param dones: whether it ended the episodes
        :param infos: its infos (a time limit's truncation keeps its terminal observation, which the critic values)
        :param masks: the action masks it was taken with (``None``: no masks)
        :param branches: the branch points before it
        """
        row = len(self.dones) * len(dones)
        cut = [bool(done and info.get("TimeLimit.truncated", False)) for done, info in zip(dones, infos, strict=True)]
        self.terminated.append(np.asarray(dones, dtype=bool) & ~np.array(cut))
        self.final_obs.update({row + e: infos[e]["terminal_observation"] for e in range(len(dones)) if cut[e]})
        self.obs.append(obs)
        self.logits.append(logits)
        self.actions.append(actions)
        self.rewards.append(float32_rewards(rewards))
        self.dones.append(np.asarray(dones, dtype=bool))
        self.masks += [] if masks is None else [masks]
        self.branches += branches

    def update_data(self, draws: UpdateDraws, tail_branches: dict[int, BranchPoint], tail_obs: Any,
                    tail_masks: np.ndarray | None, early: SentRollouts | None) -> UpdateData:  # fmt: skip
        """:return: the update's data, from its steps, its draws and the state after its last step"""
        return UpdateData(
            obs=stack_obs(self.obs),
            logits=np.stack(self.logits),
            noise=draws.noise,
            actions=np.stack(self.actions),
            rewards=np.stack(self.rewards),
            dones=np.stack(self.dones),
            branches=self.branches,
            tail_branches=tail_branches,
            tail_obs=tail_obs,
            masks=np.stack(self.masks) if self.masks else None,
            tail_masks=tail_masks,
            kept=None if draws.kept is None or draws.keep is None else (draws.kept, draws.keep),
            terminated=np.stack(self.terminated),
            final_obs=self.final_obs,
            early=early,
        )


class EarlyRollouts:
    """
    An update's rollouts sent to idle rollout workers while its real steps are still being taken, :attr:`SHARE`
    consecutive requests at a time (whole blocks of :data:`~arsm_rl.rollouts.POLICY_BLOCK` for a policy whose rows
    depend on their block), so that they run beside the collection instead of after it. Only where each step's
    rollouts are known when it is taken: an estimator that selects by step
    (:attr:`~arsm_rl.estimators.Estimator.selects_by_step`) without a budget or with one sampled per step, and the
    rollouts' noise seed read ahead (:attr:`UpdateDraws.entropy`). The requests are
    the ones :func:`~arsm_rl.updates.plan_update` makes, in its order, and each rollout keeps its id and its place in
    its policy block, so the update is the same bit for bit (:meth:`~arsm_rl.updates.SentRollouts.shares_for` checks
    the requests before they are used). It lives for one collection; what it sent (:attr:`result`) goes with the
    update's data.

    :param engine: the training env's rollout engine (it sends only to idle workers)
    :param policy_for: the rollouts' policy for the first ``n`` requests, from their branch steps and sub-envs
    :param entropy: the seed of the rollouts' noise streams it was built with
    :param strategy: the update's estimator (selecting by step)
    :param joint: the action coding
    :param horizon: the rollouts' ``pseudo_horizon``
    :param n_envs: sub-envs of the training env
    """

    #: steps whose selection is computed at once (one estimator call per this many rows)
    CHUNK = 16
    #: requests per share sent ahead, for a policy whose rows do not depend on the rest of their block
    #: (:func:`~arsm_rl.rollouts.rows_independent`); whole blocks of :data:`~arsm_rl.rollouts.POLICY_BLOCK` otherwise
    SHARE = 4

    def __init__(self, engine: RolloutEngine, policy_for: Callable[[int, np.ndarray, np.ndarray], ActFn], entropy: int,
                 strategy: Estimator, joint: JointActions, horizon: int | None, n_envs: int) -> None:  # fmt: skip
        if not strategy.selects_by_step:
            raise ValueError(f"estimator {strategy.name!r} does not select by step: its rollouts are known after the update")
        self.engine, self.policy_for, self.strategy, self.joint = engine, policy_for, strategy, joint
        self.horizon, self.n_envs = horizon, n_envs
        self.result = SentRollouts(entropy)
        self._branches: list[BranchPoint | None] = []
        self._pending: list[tuple[Draws, np.ndarray | None]] = []  # steps not yet selected, with the ones kept

    def add(self, draws: Draws, kept: np.ndarray | None, branches: list[BranchPoint | None]) -> None:
        """
        One real step about to be taken in every sub-env: once :attr:`CHUNK` rows wait, select their actions, then
        send every whole block of requests that an idle worker takes.

        :param draws: the step's draws, one row per sub-env
        :param kept: ``(n_envs,)`` bool, the sub-envs' steps a budget sampled per step keeps (``None``: all)
        :param branches: the step's branch points
        """
        self._branches += branches
        self._pending.append((draws, kept))
        if len(self._pending) * self.n_envs < self.CHUNK:
            return
        first_row = len(self._branches) - len(self._pending) * self.n_envs
        draws = Draws(self.joint, *(np.concatenate([getattr(d, name) for d, _ in self._pending])
                                    for name in ("logits", "noise", "true_codes")))  # fmt: skip
        selection = self.strategy.select(draws, np.random.default_rng(0))  # draws nothing (selects_by_step)
        assert selection is not None
        rows, codes = other_actions(self.joint, selection, draws.true_codes)
        if self._pending[0][1] is not None:
            keep = np.concatenate([kept for _, kept in self._pending if kept is not None])
            rows, codes = rows[keep[rows]], codes[keep[rows]]
        self.result.requests += zip((rows + first_row).tolist(), codes.tolist(), strict=True)
        self._pending = []
        self._send()

    def _send(self) -> None:
        requests, sent = self.result.requests, self.result.sent
        start = sent[-1].stop if sent else 0
        idle = self.engine.idle_workers() if len(requests) - start >= self.SHARE else []
        while idle and len(requests) - start >= self.SHARE:
            rows = np.array([row for row, _ in requests[: start + POLICY_BLOCK]], dtype=np.int64)
            act = self.policy_for(len(rows), rows // self.n_envs, rows % self.n_envs)
            stop = start + (self.SHARE if rows_independent(act) else POLICY_BLOCK)
            if len(requests) < stop:  # a whole block for a policy whose rows depend on it: the block waits
                return
            codes = np.array([code for _, code in requests[start:stop]], dtype=np.int64)
            branches = [self._branches[row] for row in rows[start:stop]]
            first = self.joint.env_actions(self.joint.decode(codes))
            sent.append(self.engine.send(idle.pop(0), branches, first, act, [self.horizon] * (stop - start), start))
            start = stop
