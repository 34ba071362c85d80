"""Action masks, read the way sb3-contrib's MaskablePPO reads them: the env's ``action_masks()`` method.

An env supports masking when it, or one of its wrappers (sb3-contrib's ``ActionMasker``), has a method
``action_masks()`` returning one bool per action, ``True`` where valid (``MultiDiscrete``: the dimensions' masks
concatenated). The training ``VecEnv`` is asked through ``env_method`` (``DummyVecEnv`` and ``SubprocVecEnv``, like
``sb3_contrib.common.maskable.utils.get_action_masks``); scratch envs are asked directly, after every pseudo step,
since masks depend on the state.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# the module, not the vec_env package, whose __init__ imports torch: under ForkVecEnv's bare packages
# (arsm_rl/forkvec/server.py) this import stays without torch; elsewhere SB3's own __init__ imports it anyway
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

__all__ = ["MASK_METHOD", "env_masks", "has_masks", "sample_action", "vec_masks"]

#: The method name of sb3-contrib's convention.
MASK_METHOD = "action_masks"


def has_masks(env: gym.Env[Any, Any] | VecEnv) -> bool:
    """:return: whether ``env`` (a ``gym.Env``, possibly wrapped, or a ``VecEnv``) exposes ``action_masks()``"""
    if isinstance(env, VecEnv):
        return env.has_attr(MASK_METHOD)
    try:
        env.get_wrapper_attr(MASK_METHOD)
    except AttributeError:
        return False
    return True


def vec_masks(venv: VecEnv) -> np.ndarray:
    """:return: the sub-envs' current masks, stacked, ``(n_envs, ...)`` as the envs return them"""
    return np.stack(venv.env_method(MASK_METHOD))


def env_masks(env: gym.Env[Any, Any]) -> np.ndarray:
    """:return: the current mask of one env (a scratch copy), as it returns it"""
    return np.asarray(env.get_wrapper_attr(MASK_METHOD)())


def sample_action(env: gym.Env[Any, Any], space: gym.Space[Any]) -> Any:
    """:return: ``space.sample()``, among the valid actions of ``env``'s current state when it has action masks
    :raises ValueError: for a mask of the wrong size or without a valid action"""
    if not has_masks(env) or not isinstance(space, spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):
        return space.sample()
    from arsm_rl.actions import JointActions  # here, not at the top: ForkVecEnv's workers import cloning, not torch

    source = f"action_masks() of {type(env.unwrapped).__name__}"
    if isinstance(space, spaces.Discrete):
        mask = JointActions(np.array([space.n]), True).check_masks(env_masks(env), 1, source)[0]
        return space.sample(mask=mask.astype(np.int8))
    nvec = space.nvec.reshape(-1) if isinstance(space, spaces.MultiDiscrete) else np.full(space.shape, 2)
    mask = JointActions(nvec, False).check_masks(env_masks(env), 1, source)[0]
    parts = np.split(mask.astype(np.int8), np.cumsum(nvec)[:-1])
    if isinstance(space, spaces.MultiDiscrete):
        return space.sample(mask=tuple(parts))
    # MultiBinary: a bit with one valid value takes it, the others are drawn (gymnasium's mask: 2 = draw)
    return space.sample(mask=np.array([2 if p.all() else int(p[1]) for p in parts], dtype=np.int8))
