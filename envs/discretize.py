"""Continuous actions as bins: a ``Box`` action space as ``MultiDiscrete``, as CARSM discretises MuJoCo's actions.

Yue, Tang, Yin & Zhou (AISTATS 2020) train discrete-action policies on continuous control by cutting each action
dimension into evenly spaced values (11 per dimension). :class:`DiscreteBins` does that for any env with a bounded
one-dimensional ``Box`` action space, so ARSM (and PPO, on the same ``MultiDiscrete`` space) can train on it; presets
name it in RL Zoo's ``env_wrapper`` form:

    env_wrapper:
      - envs.discretize.DiscreteBins: {bins: 11}
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["DiscreteBins"]


class DiscreteBins(gym.ActionWrapper[Any, np.ndarray, np.ndarray]):
    """
    A bounded one-dimensional ``Box`` action space as ``MultiDiscrete([bins] * dims)``: action ``k`` of dimension ``d``
    is ``low[d] + k * (high[d] - low[d]) / (bins - 1)`` (both bounds included, as ``np.linspace``), in the ``Box``'s
    dtype. With an odd number of bins a symmetric range has its midpoint (0) among the values.

    :param env: an env with a bounded one-dimensional ``Box`` action space
    :param bins: values per dimension (>= 2; CARSM uses 11)
    :raises ValueError: for another action space, unbounded actions, or fewer than 2 bins
    """

    def __init__(self, env: gym.Env[Any, Any], bins: int = 11) -> None:
        super().__init__(env)
        box = env.action_space
        if not isinstance(box, spaces.Box) or len(box.shape) != 1:
            raise ValueError(
                f"DiscreteBins discretises a one-dimensional Box action space; this env has {box}, which "
                "ARSM takes as it is (Discrete, MultiDiscrete, MultiBinary) or needs flattening first"
            )
        if not (np.isfinite(box.low).all() and np.isfinite(box.high).all()):
            raise ValueError(f"DiscreteBins needs finite action bounds, got low={box.low}, high={box.high}: "
                             "wrap the env in gymnasium.wrappers.RescaleAction (or ClipAction with bounds) first")  # fmt: skip
        if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        self.bins = int(bins)
        #: ``(dims, bins)`` the action values of each dimension
        self.values = np.linspace(box.low, box.high, self.bins, axis=1).astype(box.dtype)
        self.action_space = spaces.MultiDiscrete(np.full(box.shape[0], self.bins))

    def action(self, action: np.ndarray) -> np.ndarray:
        """:return: the ``Box`` action of bin indices ``action`` (one per dimension)"""
        indices = np.asarray(action, dtype=np.int64).reshape(len(self.values))
        if ((indices < 0) | (indices >= self.bins)).any():
            raise ValueError(f"bin indices must be in [0, {self.bins}), got {indices}")
        return self.values[np.arange(len(self.values)), indices]
