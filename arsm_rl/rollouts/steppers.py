"""The stepper seam: restore a batch of snapshots, step them with given actions, return observations, rewards, ends.

A pseudo-rollout batch is stepped by one :class:`Stepper`. :data:`STEPPERS` lists the implementations in order of
preference and :func:`select_stepper` takes the first that supports the training env:

- :class:`BatchStepper`: the env family's batched numpy dynamics (``Family.dynamics`` in :mod:`arsm_rl.cloning`,
  e.g. CartPole), bit-identical to stepping the envs one by one, for envs whose wrappers it can emulate;
- :class:`EnvStepper`: one scratch env per rollout, stepped one by one (any cloneable env, with action masks);
- :class:`ForkStepper`: the sub-envs of a :class:`~arsm_rl.forkvec.vec_env.ForkVecEnv`, whose snapshots are paused
  process copies: each rollout is a new fork of its snapshot, stepped over a socket (all rollouts' actions are
  sent before any reply is read, so the forks step in parallel).

A new backend is one more :class:`Stepper` in :data:`STEPPERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from arsm_rl.cloning import Snapshot, env_masks, family, has_masks, is_transparent, make_headless, restore_state, time_limit
from arsm_rl.forkvec.vec_env import ForkedEnv, ForkSnapshot, ForkStandIn
from arsm_rl.rollouts.obs import Obs, stack_obs
from arsm_rl.rollouts.race import env_action

__all__ = ["STEPPERS", "BatchStepper", "EnvStepper", "ForkStepper", "ScratchPool", "Stepper", "select_stepper"]


class ScratchPool:
    """
    A growing pool of scratch envs, reused across updates; each is made headless
    (:func:`~arsm_rl.cloning.make_headless`: no render-only work, which changes no step's result).

    :param make: factory for one more scratch env
    """

    def __init__(self, make: Callable[[], gym.Env]) -> None:
        self._make = make
        self._envs: list[gym.Env] = []

    def take(self, n: int) -> list[gym.Env]:
        """:return: ``n`` scratch envs (restore a snapshot into each before stepping it)"""
        while len(self._envs) < n:
            self._envs.append(make_headless(self._make()))
        return self._envs[:n]

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []


class Stepper(ABC):
    """
    A batch of rollouts restored from snapshots, stepped together.

    :param pool: scratch envs to restore the snapshots into
    :param snapshots: (R,) the states the rollouts start from
    """

    @classmethod
    @abstractmethod
    def supports(cls, env: gym.Env) -> bool:
        """Whether this stepper can run rollouts of ``env`` (a scratch copy of a training sub-env)."""

    @abstractmethod
    def __init__(self, pool: ScratchPool, snapshots: Sequence[Snapshot | ForkSnapshot]) -> None: ...

    @abstractmethod
    def step(self, actions: np.ndarray, live: np.ndarray) -> tuple[Obs, np.ndarray, np.ndarray]:
        """
        Step the live rollouts once.

        :param actions: (R, *action_shape) one action per rollout (rows that are not live are ignored)
        :param live: (R,) bool, the rollouts to step
        :return: the latest observations of all R rollouts (rows that are not live keep their last one), and the
            rewards (R,) and episode ends (R,) of this step, zero and ``False`` where not live
        """

    def masks(self) -> np.ndarray | None:
        """
        :return: the action masks of the rollouts' current states, ``(R, ...)`` as the envs return them (rows that
            are not live keep their last one), or ``None`` for envs without masks (:mod:`~arsm_rl.cloning.masks`)
        """
        return None


class EnvStepper(Stepper):
    """Rollouts on a list of scratch envs: restore each, step the live ones one by one (reading their masks)."""

    @classmethod
    def supports(cls, env: gym.Env) -> bool:
        return True

    def __init__(self, pool: ScratchPool, snapshots: Sequence[Snapshot]) -> None:
        self.envs = pool.take(len(snapshots))
        for env, snapshot in zip(self.envs, snapshots, strict=True):
            restore_state(env, snapshot)
        self.raw: list[Any] = [None] * len(snapshots)
        # the branch states' masks stand in for rollouts that end before their first mask is read
        self._masks = [env_masks(env) for env in self.envs] if self.envs and has_masks(self.envs[0]) else None

    def step(self, actions: np.ndarray, live: np.ndarray) -> tuple[Obs, np.ndarray, np.ndarray]:
        rewards, ended = np.zeros(len(live)), np.zeros(len(live), dtype=bool)
        for r in np.flatnonzero(live):
            env = self.envs[r]
            self.raw[r], rewards[r], terminated, truncated, _ = env.step(env_action(actions[r]))
            ended[r] = terminated or truncated
            if self._masks is not None and not ended[r]:  # a final state's mask is never used
                self._masks[r] = env_masks(env)
        return stack_obs(self.raw), rewards, ended

    def masks(self) -> np.ndarray | None:
        return None if self._masks is None else np.stack(self._masks)


class BatchStepper(Stepper):
    """
    Rollouts as one numpy batch of the env family's dynamics (``Family.dynamics``), with gymnasium's ``TimeLimit``
    emulated. Supported: an env of a family with dynamics under wrappers that change nothing
    (:func:`~arsm_rl.cloning.is_transparent`) and at most one ``TimeLimit``.
    """

    @classmethod
    def supports(cls, env: gym.Env) -> bool:
        dynamics = family(env).dynamics
        if dynamics is None or not dynamics.supports(env.unwrapped) or has_masks(env):
            return False
        limits = 0
        layer: Any = env
        while isinstance(layer, gym.Wrapper):
            if isinstance(layer, gym.wrappers.TimeLimit):
                limits += 1
            elif not is_transparent(layer):
                return False
            layer = layer.env
        return limits <= 1

    def __init__(self, pool: ScratchPool, snapshots: Sequence[Snapshot]) -> None:
        scratch = pool.take(1)[0]
        kind = family(scratch)
        assert kind.state is not None and kind.dynamics is not None
        cores, elapsed, clock = [], [], None
        for snapshot in snapshots:
            restore_state(scratch, snapshot)
            cores.append(kind.state.get(scratch.unwrapped))
            clock = time_limit(scratch)
            elapsed.append(0 if clock is None else clock[0])
        self.max_steps = np.iinfo(np.int64).max if clock is None else clock[1]
        self.elapsed = np.array(elapsed, dtype=np.int64)
        self.dynamics = kind.dynamics(scratch.unwrapped, cores)
        self.obs = self.dynamics.observations()

    def step(self, actions: np.ndarray, live: np.ndarray) -> tuple[Obs, np.ndarray, np.ndarray]:
        rows = np.flatnonzero(live)
        obs, step_rewards, terminated = self.dynamics.step(rows, actions[rows])
        self.obs[rows] = obs
        rewards, ended = np.zeros(len(live)), np.zeros(len(live), dtype=bool)
        rewards[rows] = step_rewards
        self.elapsed[rows] += 1
        ended[rows] = terminated | (self.elapsed[rows] >= self.max_steps)
        return self.obs, rewards, ended


class ForkStepper(Stepper):
    """
    Rollouts as forks of :class:`~arsm_rl.forkvec.vec_env.ForkSnapshot` paused copies, one process each (the pool is
    not used). A rollout's process ends as soon as the rollout does. Supported: the stand-in of a ``ForkVecEnv``
    sub-env (:meth:`~arsm_rl.forkvec.vec_env.ForkVecEnv.stand_in`), in the trainer or in a rollout worker on the same
    machine.
    """

    @classmethod
    def supports(cls, env: gym.Env) -> bool:
        return isinstance(env, ForkStandIn)

    def __init__(self, pool: ScratchPool, snapshots: Sequence[Snapshot | ForkSnapshot]) -> None:
        if not all(isinstance(snapshot, ForkSnapshot) for snapshot in snapshots):
            raise TypeError("ForkStepper restores ForkVecEnv snapshots only")
        self.envs: list[ForkedEnv | None] = [ForkedEnv(snapshot) for snapshot in snapshots]  # type: ignore[arg-type]
        self.raw: list[Any] = [None] * len(snapshots)

    def step(self, actions: np.ndarray, live: np.ndarray) -> tuple[Obs, np.ndarray, np.ndarray]:
        rewards, ended = np.zeros(len(live)), np.zeros(len(live), dtype=bool)
        for r in np.flatnonzero(~live):  # ended, or cut at their horizon: their processes can go
            env = self.envs[r]
            if env is not None:
                env.close()
                self.envs[r] = None
        rows = np.flatnonzero(live)
        for r in rows:
            self._env(int(r)).send_step(env_action(actions[r]))
        for r in rows:
            self.raw[r], rewards[r], terminated, truncated = self._env(int(r)).receive_step()
            ended[r] = terminated or truncated
        return stack_obs(self.raw), rewards, ended

    def _env(self, r: int) -> ForkedEnv:
        env = self.envs[r]
        assert env is not None, "a rollout stepped after it ended"
        return env


#: Steppers in order of preference; :func:`select_stepper` takes the first that supports the env.
STEPPERS: list[type[Stepper]] = [ForkStepper, BatchStepper, EnvStepper]


def select_stepper(env: gym.Env) -> type[Stepper]:
    """:return: the first stepper of :data:`STEPPERS` that supports ``env`` (a scratch copy of a training sub-env)"""
    return next(stepper for stepper in STEPPERS if stepper.supports(env))

