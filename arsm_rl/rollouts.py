"""Batched pseudo-action rollouts on scratch copies of the training environments.

ARSM values each distinct pseudo action at a visited state by trying it on a copy of the
environment restored to that state and following the current policy from there. This module
does the environment side of that, and nothing touches the training ``VecEnv``'s episode
statistics, auto-reset, RNG or ``VecNormalize`` statistics:

- :class:`VecCloner` takes exact snapshots of the training sub-envs (in process for
  ``DummyVecEnv``, through ``env_method`` for ``SubprocVecEnv``) and hands out scratch copies
  built the same way, minus ``Monitor``.
- :class:`ObsPipeline` replays the observation transforms of the ``VecEnv`` wrappers
  (``VecTransposeImage``, ``VecFrameStack``, frozen ``VecNormalize``) so pseudo rollouts see
  observations exactly as the real trajectory does.
- :func:`run_lockstep` runs all rollouts of an update in lockstep: each step restores nothing,
  steps every live scratch env once and makes one batched policy call for all of them.
- :func:`discounted_returns` turns reward sequences into action values, with the same floating
  point operations for real and pseudo trajectories (equal rewards give bit-equal values).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
    VecTransposeImage,
)
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations

from arsm_rl.cloning import Snapshot, clone_state, make_cloneable, restore_state, scratch_copy

__all__ = [
    "ActFn",
    "ObsPipeline",
    "RolloutBatch",
    "RolloutEngine",
    "ScratchPool",
    "VecCloner",
    "discounted_returns",
    "enable_cloning",
    "run_lockstep",
]

Obs = np.ndarray | dict[str, np.ndarray]
#: ``act(obs_batch, rollout_ids, depth) -> actions``: the policy used inside pseudo rollouts.
#: ``obs_batch`` holds the live rollouts' observations, ``rollout_ids`` their indices in the
#: request list and ``depth`` the number of steps they have already taken.
ActFn = Callable[[Obs, np.ndarray, int], np.ndarray]

_PASS_THROUGH_WRAPPERS = (VecMonitor,)


def enable_cloning(venv: VecEnv) -> None:
    """
    Make the sub-environments of a training ``VecEnv`` cloneable, or explain how to.

    ``DummyVecEnv`` sub-envs are wrapped in place with :func:`~arsm_rl.cloning.make_cloneable`
    (idempotent). ``SubprocVecEnv`` sub-envs live in worker processes, so they must have been
    built cloneable, e.g. ``make_vec_env(env_id, n, vec_env_cls=SubprocVecEnv, wrapper_class=make_cloneable)``.

    :param venv: the training environment (possibly wrapped in ``VecEnvWrapper`` layers)
    :raises TypeError: for other ``VecEnv`` classes, or ``SubprocVecEnv`` sub-envs without the wrapper
    """
    base = venv.unwrapped
    if isinstance(base, DummyVecEnv):
        base.envs = [make_cloneable(env) for env in base.envs]
    elif isinstance(base, SubprocVecEnv):
        if not base.has_attr("clone_state"):
            raise TypeError(
                "ARSM needs cloneable sub-envs in a SubprocVecEnv: build it with "
                "make_vec_env(env_id, n_envs, vec_env_cls=SubprocVecEnv, wrapper_class=arsm_rl.make_cloneable)."
            )
    else:
        raise TypeError(f"ARSM supports DummyVecEnv and SubprocVecEnv, got {type(base).__name__}.")
    ObsPipeline(venv)  # fail now, not mid-training, on VecEnv wrappers pseudo rollouts cannot mirror


class VecCloner:
    """
    Snapshots of a training ``VecEnv``'s sub-envs and scratch copies to restore them into.

    :param venv: the training environment, prepared by :func:`enable_cloning`
    """

    def __init__(self, venv: VecEnv) -> None:
        self.base = venv.unwrapped
        self._in_process = isinstance(self.base, DummyVecEnv)

    def clone(self, indices: Sequence[int]) -> list[Snapshot]:
        """
        :param indices: sub-env indices
        :return: one snapshot per index, of the sub-env's current (pre-step) state
        """
        if self._in_process:
            envs = self.base.envs  # type: ignore[attr-defined]
            return [clone_state(envs[i]) for i in indices]
        return [self.base.env_method("clone_state", indices=[i])[0] for i in indices]

    def scratch_copy(self) -> gym.Env:
        """:return: a new env built like sub-env 0, without ``Monitor``, for restoring snapshots into"""
        if self._in_process:
            return scratch_copy(self.base.envs[0])  # type: ignore[attr-defined]
        return self.base.env_method("scratch_copy", indices=[0])[0]


class ScratchPool:
    """
    A growing pool of scratch envs, reused across updates.

    :param make: factory for one more scratch env
    """

    def __init__(self, make: Callable[[], gym.Env]) -> None:
        self._make = make
        self._envs: list[gym.Env] = []

    def take(self, n: int) -> list[gym.Env]:
        """:return: ``n`` scratch envs (restore a snapshot into each before stepping it)"""
        while len(self._envs) < n:
            self._envs.append(self._make())
        return self._envs[:n]

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []


class ObsPipeline:
    """
    The observation transforms of a ``VecEnv``'s wrapper layers, frozen, for pseudo rollouts.

    Supported layers: ``VecTransposeImage``, ``VecFrameStack`` (each rollout keeps its own stack,
    started from the real stack at the branch point), ``VecNormalize`` (observations normalised
    with the current statistics, which are not updated) and ``VecMonitor`` (statistics only,
    skipped). Any other ``VecEnvWrapper`` is refused, since its effect on pseudo observations is unknown.

    :param venv: the training environment
    :raises TypeError: for an unsupported ``VecEnvWrapper``
    """

    def __init__(self, venv: VecEnv) -> None:
        layers: list[VecEnvWrapper] = []
        while isinstance(venv, VecEnvWrapper):
            if not isinstance(venv, (VecTransposeImage, VecFrameStack, VecNormalize, *_PASS_THROUGH_WRAPPERS)):
                raise TypeError(
                    f"ARSM pseudo rollouts cannot mirror the VecEnv wrapper {type(venv).__name__}; supported wrappers: "
                    "VecNormalize, VecFrameStack, VecTransposeImage, VecMonitor."
                )
            layers.append(venv)
            venv = venv.venv
        self.layers = layers[::-1]  # innermost first, the order observations go through them

    def capture(self, index: int) -> list[Any]:
        """
        :param index: sub-env index
        :return: the per-layer state of sub-env ``index`` now (its frame stacks), for a rollout branching here
        """
        return [_stack_slice(layer.stacked_obs, index) for layer in self.layers if isinstance(layer, VecFrameStack)]

    def start(self, states: Sequence[list[Any]]) -> list[StackedObservations]:
        """
        :param states: one :meth:`capture` result per rollout
        :return: batched frame stacks, one per ``VecFrameStack`` layer
        """
        stacks = []
        frame_stack_layers = [layer for layer in self.layers if isinstance(layer, VecFrameStack)]
        for k, layer in enumerate(frame_stack_layers):
            stacks.append(_stack_batch(layer.stacked_obs, [state[k] for state in states]))
        return stacks

    def transform(self, raw_obs: Obs, stacks: list[StackedObservations]) -> Obs:
        """
        :param raw_obs: batched observations as the scratch envs return them (one row per rollout in ``stacks``)
        :param stacks: frame stacks from :meth:`start`, updated in place
        :return: the observations as the policy sees them in the real trajectory
        """
        obs = raw_obs
        stack_iter = iter(stacks)
        n = len(next(iter(raw_obs.values())) if isinstance(raw_obs, dict) else raw_obs)
        for layer in self.layers:
            if isinstance(layer, VecTransposeImage):
                obs = layer.transpose_observations(obs)
            elif isinstance(layer, VecFrameStack):
                obs, _ = next(stack_iter).update(obs, np.zeros(n, dtype=bool), [{} for _ in range(n)])
                obs = copy.deepcopy(obs)
            elif isinstance(layer, VecNormalize):
                obs = layer.normalize_obs(obs)
        return obs


def _stack_slice(stacked: StackedObservations, index: int) -> Any:
    if hasattr(stacked, "sub_stacked_observations"):
        return {key: sub.stacked_obs[index].copy() for key, sub in stacked.sub_stacked_observations.items()}
    return stacked.stacked_obs[index].copy()


def _stack_batch(template: StackedObservations, slices: list[Any]) -> StackedObservations:
    batch = copy.copy(template)
    if hasattr(template, "sub_stacked_observations"):
        batch.sub_stacked_observations = {
            key: _stack_batch(sub, [s[key] for s in slices]) for key, sub in template.sub_stacked_observations.items()
        }
    else:
        batch.stacked_obs = np.stack(slices)
    return batch


@dataclass
class RolloutBatch:
    """
    Rewards of a batch of rollouts, padded to a rectangle.

    :param rewards: (R, D) float64 rewards, zero after a rollout ended
    :param lengths: (R,) number of steps each rollout took (the first, pseudo, action included)
    :param restore_steps: env steps spent restoring snapshots (replay-based families)
    """

    rewards: np.ndarray
    lengths: np.ndarray
    restore_steps: int

    @property
    def env_steps(self) -> int:
        """Simulator steps this batch cost: rollout steps plus restore replays."""
        return int(self.lengths.sum()) + self.restore_steps


class _EnvSteppers:
    """Rollouts on a list of scratch envs: restore each, step the live ones one by one."""

    def __init__(self, pool: ScratchPool, snapshots: Sequence[Snapshot]) -> None:
        self.envs = pool.take(len(snapshots))
        for env, snapshot in zip(self.envs, snapshots, strict=True):
            restore_state(env, snapshot)
        self.raw: list[Any] = [None] * len(snapshots)

    def step(self, actions: np.ndarray, live: np.ndarray) -> tuple[Obs, np.ndarray, np.ndarray]:
        """:return: the latest raw observations (R rows), and rewards and episode ends of the live rows"""
        rewards, ended = np.zeros(len(live)), np.zeros(len(live), dtype=bool)
        for r in np.flatnonzero(live):
            self.raw[r], rewards[r], terminated, truncated, _ = self.envs[r].step(_env_action(actions[r]))
            ended[r] = terminated or truncated
        return _stack_obs(self.raw), rewards, ended


class _CartPoleSteppers:
    """
    Rollouts of ``gym.make("CartPole-v1")``-style envs as one numpy batch: the dynamics of gymnasium's
    ``CartPoleEnv.step`` and ``TimeLimit``, operation for operation, so results are bit-identical to
    stepping the envs one by one (``tests/test_rollouts.py`` checks this against :class:`_EnvSteppers`).
    """

    _LAYERS = ("TimeLimit", "OrderEnforcing", "PassiveEnvChecker", "CloneableWrapper")

    @classmethod
    def supports(cls, env: gym.Env) -> bool:
        """Exactly a CartPoleEnv under stateless layers and a TimeLimit (the layers ``gym.make`` adds)."""
        from gymnasium.envs.classic_control.cartpole import CartPoleEnv

        layers = []
        while isinstance(env, gym.Wrapper):
            layers.append(type(env).__name__)
            env = env.env
        return type(env) is CartPoleEnv and set(layers) <= set(cls._LAYERS) and layers.count("TimeLimit") <= 1

    def __init__(self, pool: ScratchPool, snapshots: Sequence[Snapshot]) -> None:
        scratch = pool.take(1)[0]
        cartpole: Any = scratch.unwrapped
        self.cartpole = cartpole
        n = len(snapshots)
        self.state = np.empty((n, 4))
        self.elapsed = np.zeros(n, dtype=np.int64)
        for r, snapshot in enumerate(snapshots):
            restore_state(scratch, snapshot)
            if cartpole.steps_beyond_terminated is not None:
                raise ValueError("internal error: CartPole snapshot taken after termination")
            self.state[r] = cartpole.state
            self.elapsed[r] = _elapsed_steps(scratch)
        self.max_steps = _max_episode_steps(scratch)
        self.obs = self.state.astype(np.float32)

    def step(self, actions: np.ndarray, live: np.ndarray) -> tuple[Obs, np.ndarray, np.ndarray]:
        c = self.cartpole
        rows = np.flatnonzero(live)
        x, x_dot, theta, theta_dot = self.state[rows].T
        force = np.where(actions[rows] == 1, c.force_mag, -c.force_mag)
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        temp = (force + c.polemass_length * np.square(theta_dot) * sintheta) / c.total_mass
        thetaacc = (c.gravity * sintheta - costheta * temp) / (
            c.length * (4.0 / 3.0 - c.masspole * np.square(costheta) / c.total_mass)
        )
        xacc = temp - c.polemass_length * thetaacc * costheta / c.total_mass
        if c.kinematics_integrator == "euler":
            x = x + c.tau * x_dot
            x_dot = x_dot + c.tau * xacc
            theta = theta + c.tau * theta_dot
            theta_dot = theta_dot + c.tau * thetaacc
        else:
            x_dot = x_dot + c.tau * xacc
            x = x + c.tau * x_dot
            theta_dot = theta_dot + c.tau * thetaacc
            theta = theta + c.tau * theta_dot
        self.state[rows] = np.stack([x, x_dot, theta, theta_dot], axis=1)
        self.obs[rows] = self.state[rows].astype(np.float32)
        terminated = (x < -c.x_threshold) | (x > c.x_threshold) | (theta < -c.theta_threshold_radians)
        terminated |= theta > c.theta_threshold_radians
        alive_reward, fall_reward = (0.0, -1.0) if c._sutton_barto_reward else (1.0, 1.0)
        rewards, ended = np.zeros(len(live)), np.zeros(len(live), dtype=bool)
        rewards[rows] = np.where(terminated, fall_reward, alive_reward)
        self.elapsed[rows] += 1
        ended[rows] = terminated | (self.elapsed[rows] >= self.max_steps)
        return self.obs, rewards, ended


def _elapsed_steps(env: gym.Env) -> int:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return int(env._elapsed_steps or 0)
        env = env.env
    return 0


def _max_episode_steps(env: gym.Env) -> int:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return int(env._max_episode_steps or np.iinfo(np.int64).max)
        env = env.env
    return np.iinfo(np.int64).max


def run_lockstep(
    pool: ScratchPool,
    snapshots: Sequence[Snapshot],
    first_actions: np.ndarray,
    obs_states: Sequence[list[Any]],
    pipeline: ObsPipeline,
    act: ActFn,
    horizons: Sequence[int | None] | None = None,
    vectorised: bool = False,
    max_episode_steps: int = 100_000,
) -> RolloutBatch:
    """
    Run one rollout per snapshot, all in lockstep, until each episode ends or reaches its horizon.

    Rollout ``r`` restores ``snapshots[r]`` into a scratch env, takes ``first_actions[r]``, then
    follows ``act``. Each lockstep iteration steps every live rollout once and calls ``act`` once
    on the batch of live rollouts.

    :param pool: scratch envs
    :param snapshots: (R,) states to branch from
    :param first_actions: (R, *action_shape) the action tried first in each rollout
    :param obs_states: (R,) :meth:`ObsPipeline.capture` results taken with the snapshots
    :param pipeline: observation transforms of the training ``VecEnv``
    :param act: policy for the steps after the first
    :param horizons: (R,) maximum steps of each rollout (``None``: the whole episode); ``None`` for no limits
    :param vectorised: step CartPole rollouts as one numpy batch (only where ``_CartPoleSteppers.supports``)
    :param max_episode_steps: a rollout without horizon that runs this long is taken for an env with no time
        limit, and refused (rather than looping for ever)
    :return: the rollouts' rewards
    :raises RuntimeError: when a rollout without horizon exceeds ``max_episode_steps``
    """
    n = len(snapshots)
    if n == 0:
        return RolloutBatch(np.zeros((0, 0)), np.zeros(0, dtype=np.int64), 0)
    limits = np.array([np.iinfo(np.int64).max if h is None else h for h in (horizons or [None] * n)], dtype=np.int64)
    steppers = _CartPoleSteppers(pool, snapshots) if vectorised else _EnvSteppers(pool, snapshots)
    stacks = pipeline.start(obs_states)
    live = np.ones(n, dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    rewards: list[np.ndarray] = []
    actions = first_actions
    depth = 0  # steps taken by every live rollout
    while True:  # one lockstep iteration: every live rollout takes one step
        raw, step_rewards, ended = steppers.step(actions, live)
        rewards.append(step_rewards)
        lengths += live
        live &= ~ended & (lengths < limits)
        depth += 1
        if not live.any():
            break
        if depth >= max_episode_steps and (live & (limits == np.iinfo(np.int64).max)).any():
            raise RuntimeError(
                f"a pseudo rollout ran {depth} steps without its episode ending: the env seems to have no time limit; "
                "set ARSM(pseudo_horizon=...) or wrap the env in gymnasium.wrappers.TimeLimit"
            )
        batch_obs = pipeline.transform(raw, stacks)
        ids = np.flatnonzero(live)
        actions = np.array(actions, copy=True)
        actions[ids] = act(_select(batch_obs, ids), ids, depth)
    restore_steps = sum(snapshot.restore_steps for snapshot in snapshots)
    return RolloutBatch(np.stack(rewards, axis=1), lengths, restore_steps)


class RolloutEngine:
    """
    Everything pseudo rollouts need from one training ``VecEnv``: snapshots, scratch envs and
    observation transforms. Build one per training env (it keeps its scratch pool across updates).

    :param venv: the training environment, prepared by :func:`enable_cloning`
    """

    def __init__(self, venv: VecEnv) -> None:
        self.venv = venv
        self.cloner = VecCloner(venv)
        self.pipeline = ObsPipeline(venv)
        self.pool = ScratchPool(self.cloner.scratch_copy)
        self.vectorised = _CartPoleSteppers.supports(self.pool.take(1)[0])

    def branch_points(self, indices: Sequence[int]) -> list[tuple[Snapshot, list[Any]]]:
        """
        :param indices: sub-env indices
        :return: for each, its snapshot and observation-pipeline state now (before the next real step)
        """
        snapshots = self.cloner.clone(indices)
        return [(snapshot, self.pipeline.capture(i)) for snapshot, i in zip(snapshots, indices, strict=True)]

    def run(
        self,
        branches: Sequence[tuple[Snapshot, list[Any]]],
        first_actions: np.ndarray,
        act: ActFn,
        horizons: Sequence[int | None] | None = None,
    ) -> RolloutBatch:
        """Run one rollout per branch point in lockstep; see :func:`run_lockstep`."""
        snapshots = [snapshot for snapshot, _ in branches]
        obs_states = [state for _, state in branches]
        return run_lockstep(self.pool, snapshots, first_actions, obs_states, self.pipeline, act, horizons, self.vectorised)

    def close(self) -> None:
        self.pool.close()


def _env_action(action: np.ndarray) -> Any:
    return action.item() if action.ndim == 0 else action


def _stack_obs(raw: list[Any]) -> Obs:
    # Rollouts that already ended keep their last observation: their rows are computed and ignored,
    # so the frame stacks keep one row per rollout.
    if isinstance(raw[0], dict):
        return {key: np.stack([o[key] for o in raw]) for key in raw[0]}
    return np.stack(raw)


def _select(obs: Obs, ids: np.ndarray) -> Obs:
    if isinstance(obs, dict):
        return {key: value[ids] for key, value in obs.items()}
    return obs[ids]


def discounted_returns(rewards: np.ndarray, dones: np.ndarray, gamma: float, horizon: int | None = None) -> np.ndarray:
    """
    Discounted reward-to-go Q[t] = sum_{k < h} gamma^k r[t+k], stopping at episode ends.

    Computed by the backward recursion ``q = r + gamma * q`` (cut where ``dones``), so a
    pseudo rollout and a real trajectory with equal rewards give bit-equal values.

    :param rewards: (T, ...) rewards, time first
    :param dones: (T, ...) True where the episode ended with that step
    :param gamma: discount factor
    :param horizon: at most this many rewards per value, ``None`` for the whole episode
    :return: (T, ...) float64 values
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    alive = 1.0 - np.asarray(dones, dtype=np.float64)
    n = len(rewards)
    if horizon is None or horizon >= n:
        values = np.empty_like(rewards)
        acc = np.zeros_like(rewards[0])
        for t in range(n - 1, -1, -1):
            acc = rewards[t] + gamma * (alive[t] * acc)
            values[t] = acc
        return values
    # The same recursion, vectorised over the start t: level j adds r[t+j] (zero past the end).
    acc = np.zeros_like(rewards)
    for j in range(horizon - 1, -1, -1):
        reward_j = np.zeros_like(rewards)
        reward_j[: n - j] = rewards[j:]
        alive_j = np.zeros_like(alive)
        alive_j[: n - j] = alive[j:]
        acc = reward_j + gamma * (alive_j * acc)
    return acc
