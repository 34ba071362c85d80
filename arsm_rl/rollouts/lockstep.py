"""Lockstep pseudo rollouts: all rollouts of an update stepped together, one batched policy call per step."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arsm_rl.cloning import Snapshot
from arsm_rl.forkvec.vec_env import ForkedEnv, ForkSnapshot
from arsm_rl.rollouts.mlp import BLOCK
from arsm_rl.rollouts.obs import Obs, ObsPipeline, select_rows
from arsm_rl.rollouts.race import RacePolicy, endless_rollout, env_action, roll_out_pickled
from arsm_rl.rollouts.returns import float32_rewards
from arsm_rl.rollouts.steppers import EnvStepper, ScratchPool, Stepper

__all__ = ["MAX_FORKS", "POLICY_BLOCK", "ActFn", "BranchPoint", "RolloutBatch", "block_rows", "rows_independent",
           "run_in_forks", "run_lockstep"]

#: ``act(obs_batch, rollout_ids, depth, masks) -> actions``: the policy used inside pseudo rollouts.
#: ``obs_batch`` holds the observations of the rollouts ``rollout_ids`` (indices in the request list),
#: ``depth`` the number of steps they have already taken, ``masks`` their states' action masks as the envs return
#: them (``None`` for envs without masks); one action per row is returned. The rows are
#: every rollout of each block of :data:`POLICY_BLOCK` consecutive rollouts that has a live one (finished
#: rollouts included; their actions are not used), so that a rollout's policy call always sees the same
#: batch layout, whichever other rollouts run with it (see :func:`block_rows`).
ActFn = Callable[[Obs, np.ndarray, int, np.ndarray | None], np.ndarray]

#: Rollouts are handed to the policy in blocks of this many rows (the numpy policy's block,
#: :data:`arsm_rl.rollouts.mlp.BLOCK`).
POLICY_BLOCK = BLOCK

#: Rollouts that :func:`run_in_forks` runs at once (each a process that copies the env's pages it writes).
MAX_FORKS = 64

_ENDLESS = np.iinfo(np.int64).max


@dataclass(frozen=True)
class BranchPoint:
    """
    Where rollouts may start: a sub-env's state before a real step.

    :param snapshot: the sub-env's exact state (a paused process copy for a ``ForkVecEnv``)
    :param obs_state: the observation pipeline's state (frame stacks) at that point, from :meth:`ObsPipeline.capture`
    """

    snapshot: Snapshot | ForkSnapshot
    obs_state: list[Any]


@dataclass
class RolloutBatch:
    """
    Rewards of a batch of rollouts, padded to a rectangle.

    :param rewards: (R, D) float64 rewards, zero after a rollout ended
    :param lengths: (R,) number of steps each rollout took (the first, pseudo, action included)
    :param restore_steps: env steps spent restoring snapshots (replay-based families)
    :param worker_rollouts: how many of the rollouts ran on rollout workers (the rest in the training process)
    :param cut_obs: (R,) the observation where each rollout stopped at its horizon with its episode still running, as the
        policy would see it (``None`` where the episode ended): where ``action_values="bootstrap"`` closes the value
    """

    rewards: np.ndarray
    lengths: np.ndarray
    restore_steps: int
    worker_rollouts: int = 0
    cut_obs: list[Any] = field(default_factory=list)

    @property
    def env_steps(self) -> int:
        """Simulator steps this batch cost: rollout steps plus restore replays."""
        return int(self.lengths.sum()) + self.restore_steps


def run_lockstep(
    pool: ScratchPool,
    branches: Sequence[BranchPoint],
    first_actions: np.ndarray,
    pipeline: ObsPipeline,
    act: ActFn,
    horizons: Sequence[int | None] | None = None,
    stepper: type[Stepper] = EnvStepper,
    max_episode_steps: int = 100_000,
    id_offset: int = 0,
) -> RolloutBatch:
    """
    Run one rollout per branch point, all in lockstep, until each episode ends or reaches its horizon.

    Rollout ``r`` restores ``branches[r]`` into a scratch env, takes ``first_actions[r]``, then
    follows ``act``. Each lockstep iteration steps every live rollout once and calls ``act`` once
    on the batch of live rollouts.

    :param pool: scratch envs
    :param branches: (R,) states to branch from
    :param first_actions: (R, *action_shape) the action tried first in each rollout
    :param pipeline: observation transforms of the training ``VecEnv``
    :param act: policy for the steps after the first
    :param horizons: (R,) maximum steps of each rollout (``None``: the whole episode); ``None`` for no limits
    :param stepper: how the rollouts are stepped (a :class:`~arsm_rl.rollouts.steppers.Stepper` that supports the env)
    :param max_episode_steps: a rollout without horizon that runs this long is taken for an env with no time
        limit, and refused (rather than looping for ever)
    :param id_offset: id of the first rollout: ``act`` sees ids ``id_offset + r``, so a share of an update's rollouts run
        elsewhere gets the ids and blocks it has in the whole. A multiple of :data:`POLICY_BLOCK`, unless ``act``'s
        rows do not depend on the rest of their block (:func:`rows_independent`): then a first block that starts
        before the share gets zero rows (and all-valid masks) in the places of the rollouts before it
    :return: the rollouts' rewards
    :raises RuntimeError: when a rollout without horizon exceeds ``max_episode_steps``
    """
    shift = id_offset % POLICY_BLOCK  # places of the first block taken by rollouts before this share
    if shift and not rows_independent(act):
        raise ValueError(f"id_offset must be a multiple of {POLICY_BLOCK} for this policy, got {id_offset}")
    n = len(branches)
    if n == 0:
        return RolloutBatch(np.zeros((0, 0)), np.zeros(0, dtype=np.int64), 0)
    limits = np.array([_ENDLESS if h is None else h for h in (horizons or [None] * n)], dtype=np.int64)
    snapshots = [branch.snapshot for branch in branches]
    steppers = stepper(pool, snapshots)
    stacks = pipeline.start([branch.obs_state for branch in branches])
    live = np.ones(n, dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    rewards: list[np.ndarray] = []
    cut_obs: list[Any] = [None] * n
    actions = first_actions
    depth = 0  # steps taken by every live rollout
    while True:  # one lockstep iteration: every live rollout takes one step
        raw, step_rewards, ended = steppers.step(actions, live)
        rewards.append(float32_rewards(step_rewards))
        lengths += live
        cut = live & ~ended & (lengths >= limits)
        live &= ~ended & (lengths < limits)
        depth += 1
        if not (live.any() or cut.any()):
            break
        if depth >= max_episode_steps and (live & (limits == _ENDLESS)).any():
            raise endless_rollout(depth)
        batch_obs = pipeline.transform(raw, stacks)
        for r in np.flatnonzero(cut):
            cut_obs[r] = select_rows(batch_obs, r)
        if not live.any():
            break
        ids = np.flatnonzero(live)
        rows = block_rows(ids + shift, n + shift) - shift  # negative: places of rollouts before this share
        actions = np.array(actions, copy=True)
        masks = steppers.masks()
        before = int(np.searchsorted(rows, 0))
        obs = _after_rows(select_rows(batch_obs, rows[before:]), before, 0)
        masks = None if masks is None else _after_rows(masks[rows[before:]], before, True)
        chosen = act(obs, rows + id_offset, depth, masks)
        actions[ids] = chosen[np.searchsorted(rows, ids)]
    restore_steps = sum(snapshot.restore_steps for snapshot in snapshots)
    return RolloutBatch(np.stack(rewards, axis=1), lengths, restore_steps, cut_obs=cut_obs)


def run_in_forks(
    branches: Sequence[BranchPoint],
    first_actions: np.ndarray,
    act: RacePolicy,
    horizons: Sequence[int | None] | None = None,
    max_episode_steps: int = 100_000,
    id_offset: int = 0,
) -> RolloutBatch:
    """
    :func:`run_lockstep`'s rollouts of ``ForkVecEnv`` snapshots, each run whole inside its own fork of its snapshot
    (:meth:`~arsm_rl.rollouts.race.RacePolicy.roll_out`): one fork and one message each way per rollout instead of
    one socket round trip per step, and the forks run in parallel on every core (at most :data:`MAX_FORKS` at once).
    The same rewards and lengths as :func:`run_lockstep` with ``ForkStepper``, bit for bit, for a portable ``act``
    (numpy logits: :attr:`~arsm_rl.rollouts.race.RacePolicy.portable`), an observation pipeline without transforms and
    an env without action masks (``ForkVecEnv`` refuses those); parameters as :func:`run_lockstep`'s.
    """
    if not act.portable:
        raise ValueError("run_in_forks needs a RacePolicy with numpy logits (a forked env process runs without torch)")
    n = len(branches)
    limits = list(horizons or [None] * n)
    policy = pickle.dumps(act, protocol=pickle.HIGHEST_PROTOCOL)  # once, for every fork
    forks: list[ForkedEnv] = []
    results: list[tuple[np.ndarray, int, Any]] = []
    try:
        for r, branch in enumerate(branches):
            if not isinstance(branch.snapshot, ForkSnapshot):
                raise TypeError("run_in_forks restores ForkVecEnv snapshots only")
            if r >= MAX_FORKS:  # the oldest in flight first: its process ends and frees a slot
                results.append(forks[r - MAX_FORKS].receive_call())
                forks[r - MAX_FORKS].close()
            forks.append(branch.snapshot.restore())
            forks[r].send_call(roll_out_pickled, policy, id_offset + r, env_action(first_actions[r]), limits[r],
                               max_episode_steps)  # fmt: skip
        for fork in forks[len(results) :]:
            results.append(fork.receive_call())
    finally:
        for fork in forks:
            fork.close()
    lengths = np.array([length for _, length, _ in results], dtype=np.int64)
    rewards = np.zeros((n, int(lengths.max(initial=0))))
    for r, (row, length, _) in enumerate(results):
        rewards[r, :length] = row
    return RolloutBatch(rewards, lengths, 0, cut_obs=[cut for _, _, cut in results])


def rows_independent(act: ActFn) -> bool:
    """Whether ``act``'s row for a rollout depends only on its own observation and place in its block, not on the
    rest of the block (:attr:`~arsm_rl.rollouts.race.RacePolicy.portable`: numpy logits), so that an update's rollouts
    can be shared out one by one instead of in whole blocks."""
    return isinstance(act, RacePolicy) and act.portable


def _after_rows(x: Any, count: int, fill: Any) -> Any:
    """``x`` (an array, or a dict of arrays) with ``count`` rows of ``fill`` before its first row."""
    if count == 0:
        return x
    if isinstance(x, dict):
        return {key: _after_rows(value, count, fill) for key, value in x.items()}
    return np.concatenate([np.full((count, *x.shape[1:]), fill, dtype=x.dtype), x])


def block_rows(ids: np.ndarray, n: int) -> np.ndarray:
    """
    The rows of the policy call for the live rollouts ``ids``: every rollout of each block of :data:`POLICY_BLOCK`
    that holds one of them. A CPU matrix product's rows depend on the batch's shape (one row alone, or among 40,
    can differ in the last bits); padded to whole blocks (see :func:`pad_rows`), a rollout's row is computed the
    same way whichever blocks are stacked with it, which keeps training bit-identical however rollouts are split.

    :param ids: sorted indices of the live rollouts
    :param n: number of rollouts
    :return: sorted row indices (a superset of ``ids``)
    """
    blocks = ids // POLICY_BLOCK
    blocks = blocks[np.concatenate([[True], blocks[1:] != blocks[:-1]])]  # ids are sorted: the distinct blocks
    rows = (blocks[:, None] * POLICY_BLOCK + np.arange(POLICY_BLOCK)).reshape(-1)
    return rows[rows < n]
