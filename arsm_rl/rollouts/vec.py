"""The training ``VecEnv`` side of pseudo rollouts: making its sub-envs cloneable and taking their snapshots."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from arsm_rl.cloning import (
    Snapshot,
    clone_state,
    family,
    make_cloneable,
    preserved_global_rngs,
    sample_action,
    scratch_copy,
    time_limit,
    unverified_parts,
    verify_snapshots,
)
from arsm_rl.rollouts.obs import ObsPipeline

__all__ = ["PROBE_EPISODES", "PROBE_STEPS", "VecCloner", "enable_cloning", "verify_rollouts"]

#: Without a time limit or a horizon, each of :data:`PROBE_EPISODES` episodes of uniformly random actions must end
#: within this many steps.
PROBE_STEPS = 2_000
PROBE_EPISODES = 10


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
    Snapshots of a training ``VecEnv``'s sub-envs and scratch copies to restore them into: in process for
    ``DummyVecEnv``, through ``env_method`` for ``SubprocVecEnv``.

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


def verify_rollouts(venv: VecEnv, *, horizon: int | None, seed: int = 0) -> None:
    """
    Refuse, before training, a training env on which pseudo rollouts would be silently wrong or would not end.

    Works on a scratch copy of sub-env 0 (the training env, its RNG and its statistics are not touched; Python's
    and numpy's global random states are put back). When the env's snapshots use anything but the built-in,
    tested methods (:func:`~arsm_rl.cloning.unverified_parts`), restores are checked bit for bit
    (:func:`~arsm_rl.cloning.verify_snapshots`). Without a ``horizon``, an env with no time limit (and not
    of a family whose episodes end on their own) must end each of :data:`PROBE_EPISODES` episodes of random actions
    within :data:`PROBE_STEPS` steps, a stand-in for the untrained policy.

    :param venv: the training environment, prepared by :func:`enable_cloning`
    :param horizon: the pseudo rollouts' horizon (``None``: to the end of the episode)
    :param seed: seed of the checks' resets and random actions
    :raises NotCloneableError: when snapshots are not exact
    :raises ValueError: when episodes may not end
    """
    env = VecCloner(venv).scratch_copy()
    try:
        if unverified_parts(env):
            verify_snapshots(env, seed=seed)
        limit = time_limit(env)
        if horizon is None and not family(env).bounded and (limit is None or limit[1] == np.iinfo(np.int64).max):
            _check_episodes_end(env, seed)
    finally:
        env.close()


def _check_episodes_end(env: gym.Env[Any, Any], seed: int) -> None:
    with preserved_global_rngs():
        space = copy.deepcopy(env.action_space)
        space.seed(seed)
        env.reset(seed=seed)
        for episode in range(PROBE_EPISODES):
            if not _episode_ends(env, space):
                name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
                raise ValueError(
                    f"{name} has no time limit and episode {episode} of random actions did not end in {PROBE_STEPS} steps, "
                    "so pseudo rollouts may never end: wrap the env in gymnasium.wrappers.TimeLimit (or make it with "
                    "max_episode_steps=N), or set pseudo_horizon=N"
                )
            env.reset()


def _episode_ends(env: gym.Env[Any, Any], space: gym.Space[Any]) -> bool:
    for _ in range(PROBE_STEPS):
        _, _, terminated, truncated, _ = env.step(sample_action(env, space))
        if terminated or truncated:
            return True
    return False
