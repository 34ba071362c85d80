"""The training ``VecEnv`` side of pseudo rollouts: making its sub-envs cloneable and taking their snapshots."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from arsm_rl.cloning import Snapshot, clone_state, make_cloneable, scratch_copy
from arsm_rl.rollouts.obs import ObsPipeline

__all__ = ["VecCloner", "enable_cloning"]


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
