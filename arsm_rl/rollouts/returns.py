"""Discounted returns, with the same floating-point operations for real and pseudo trajectories."""

from __future__ import annotations

import numpy as np

__all__ = ["discounted_returns", "float32_rewards"]


def float32_rewards(rewards: np.ndarray | list[float]) -> np.ndarray:
    """
    Rewards rounded to float32, as SB3's ``DummyVecEnv`` stores them, returned as float64.

    Real rewards arrive rounded through a ``DummyVecEnv`` and unrounded through a ``SubprocVecEnv``, and pseudo
    rollouts see the env's own float64 rewards. Rounding every reward, real and pseudo, the same way makes training
    identical whichever ``VecEnv`` runs the real steps, and a pseudo rollout that repeats the real actions gives the
    real return bit for bit. (Integer rewards, like CartPole's and Acrobot's, are unchanged.)

    :param rewards: rewards of any shape
    :return: the same rewards, rounded to float32, as float64
    """
    return np.asarray(rewards, dtype=np.float32).astype(np.float64)


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
