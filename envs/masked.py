"""Masked versions of existing envs, for the many-action benchmarks and examples (sb3-contrib's ``ActionMasker``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.toy_text.taxi import TaxiEnv
from sb3_contrib.common.wrappers import ActionMasker


def taxi_mask(env: gym.Env[Any, Any]) -> np.ndarray:
    """Taxi's own action mask of its current state (``TaxiEnv.action_mask``), as bools."""
    base: Any = env.unwrapped
    return base.action_mask(base.s).astype(bool)


def masked_taxi(**kwargs: Any) -> gym.Env[Any, Any]:
    """Taxi (``TaxiEnv``'s keyword arguments) under ``ActionMasker``: moves into walls and pickups or drop-offs that
    would be illegal are masked (Taxi's ``action_mask``). Registered as ``arsm/MaskedTaxi-v0`` with Taxi-v4's
    200-step time limit."""
    return ActionMasker(TaxiEnv(**kwargs), taxi_mask)
