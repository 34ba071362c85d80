"""Discounted returns, with the same floating-point operations for real and pseudo trajectories."""

from __future__ import annotations

import numpy as np

__all__ = ["discounted_returns", "float32_rewards", "tail_horizon", "trailing_start", "true_values"]


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


def trailing_start(dones: np.ndarray) -> int:
    """:return: the first step of the episode still running at the end of ``dones`` (0 if none ended)"""
    ended = np.flatnonzero(dones)
    return int(ended[-1]) + 1 if len(ended) else 0


def tail_horizon(used: np.ndarray, dones: np.ndarray, horizon: int | None) -> int | None:
    """
    Steps a tail rollout must run, after one sub-env's data, to complete the values of its used steps in the episode
    still running at the end of the data.

    :param used: (n,) bool, the steps that need their true action's value
    :param dones: (n,) episode ends
    :param horizon: the values' horizon (``None``: to the episode's end)
    :return: ``None`` for the whole episode, 0 when no tail is needed
    """
    start = trailing_start(dones)
    needed = np.flatnonzero(used[start:])
    if dones[-1] or len(needed) == 0:
        return 0
    if horizon is None:
        return None
    # the last used step reaches furthest past the data: h - (n - t_last) rewards are missing
    return max(0, horizon - (len(used) - (start + int(needed[-1]))))


def true_values(
    rewards: np.ndarray,
    dones: np.ndarray,
    tail_rewards: dict[int, np.ndarray],
    gamma: float,
    horizon: int | None,
    closings: np.ndarray | None = None,
    tail_closings: dict[int, float] | None = None,
) -> np.ndarray:
    """
    Q(s_t, a_t) of an update's real steps: the real rewards' discounted returns, completed by tail rollouts.

    With ``closings`` (``action_values="bootstrap"``), values are closed where the horizon cuts an episode that goes
    on: a step whose ``horizon`` steps lie inside the data gets gamma^h V(s_{t+h}); a step of the episode still running
    at the end whose horizon reaches past the data takes the whole tail rollout (at least ``horizon`` steps, an
    estimate as unbiased) and, where the tail was cut, gamma^k times its closing value, k the steps to the tail's
    end. Where nothing is cut (every episode shorter than the horizon) this adds nothing: the values are bit for bit
    those without ``closings``.

    :param rewards: (n, E) real rewards
    :param dones: (n, E) episode ends
    :param tail_rewards: sub-env -> rewards of the tail rollout from the state after its last step
    :param gamma: discount factor
    :param horizon: the values' horizon (``None``: to the episode's end)
    :param closings: (n + 1, E) V of each real state and of the state after the data, or ``None`` not to close
    :param tail_closings: sub-env -> V of the state where its tail rollout was cut (absent or 0: the episode ended)
    :return: (n, E) values, NaN where unknown (a still-running episode without a tail, past the horizon's reach)
    """
    n, n_envs = rewards.shape
    values = np.full((n, n_envs), np.nan)
    for e in range(n_envs):
        env_rewards, env_dones = rewards[:, e], dones[:, e]
        # Without a tail, values in the still-running episode are known only where their horizon fits.
        if e in tail_rewards or env_dones[-1]:
            unknown_from = n
        elif horizon is None:
            unknown_from = trailing_start(env_dones)
        else:
            unknown_from = max(trailing_start(env_dones), n - horizon + 1)
        if e in tail_rewards:
            tail = tail_rewards[e]
            env_rewards = np.concatenate([env_rewards, tail])
            env_dones = np.concatenate([env_dones, np.arange(len(tail)) == len(tail) - 1])
        values[:unknown_from, e] = discounted_returns(env_rewards, env_dones, gamma, horizon)[:unknown_from]
        if closings is not None and horizon is not None:
            _close(values[:, e], dones[:, e], env_rewards, env_dones, closings[:, e], (tail_closings or {}).get(e),
                   gamma, horizon)  # fmt: skip
    return values


def _close(values: np.ndarray, dones: np.ndarray, rewards: np.ndarray, ends: np.ndarray, closings: np.ndarray,
           tail_closing: float | None, gamma: float, horizon: int) -> None:  # fmt: skip
    """:func:`true_values`' closings of one sub-env, in place (``rewards`` and ``ends`` include its tail, if any)."""
    n = len(dones)
    for t in range(n - horizon + 1):  # cut inside the data, the episode going on
        if not dones[t : t + horizon].any():
            values[t] += gamma**horizon * closings[t + horizon]
    if dones[-1] or tail_closing is None:
        return
    whole = discounted_returns(rewards, ends, gamma)
    for t in range(max(trailing_start(dones), n - horizon + 1), n):  # past the data: the whole tail
        values[t] = whole[t] + gamma ** (len(rewards) - t) * tail_closing
