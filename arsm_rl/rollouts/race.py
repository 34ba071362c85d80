"""The policy inside pseudo rollouts: logits on whole blocks of rows, raced with each rollout's own noise.

This module imports neither torch nor SB3 (its logits come from a callable: the policy's numpy form, or torch's
through :class:`arsm_rl.rollouts.policy.TorchLogits`), so that a ``ForkVecEnv`` copy runs a whole rollout with it
(:meth:`RacePolicy.roll_out`, :func:`roll_out_pickled`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from arsm_rl.coding import ActionCoding
from arsm_rl.rollouts.mlp import BLOCK, NumpyLogits, pad_rows
from arsm_rl.rollouts.noise import RolloutNoise
from arsm_rl.rollouts.returns import float32_rewards

__all__ = ["RacePolicy", "endless_rollout", "env_action", "roll_out_pickled"]


def env_action(action: np.ndarray) -> Any:
    """One rollout's action as an env takes it: a Python scalar for a ``Discrete`` space, the array otherwise."""
    return action.item() if action.ndim == 0 else action


def endless_rollout(depth: int) -> RuntimeError:
    """:return: the error of a rollout without horizon whose episode did not end in ``depth`` steps"""
    return RuntimeError(
        f"a pseudo rollout ran {depth} steps without its episode ending: the env seems to have no time limit; "
        "set ARSM(pseudo_horizon=...) or wrap the env in gymnasium.wrappers.TimeLimit"
    )


class RacePolicy:
    """
    ``act(obs, ids, depth, masks)`` of pseudo rollouts (an :data:`~arsm_rl.rollouts.ActFn`): ``logits`` on whole
    blocks of rows (:func:`~arsm_rl.rollouts.pad_rows`), raced (:meth:`~arsm_rl.coding.ActionCoding.race_numpy`) with
    each rollout's own noise stream (:class:`~arsm_rl.rollouts.noise.RolloutNoise`), or with the real trajectory's
    noise where ``share_noise`` applies. A rollout's actions depend only on its own observations, its id and its
    depth, so rollouts give the same result in the trainer, in any worker, or alone in a ``ForkVecEnv`` copy
    (:meth:`roll_out`). Built from an SB3 policy by :func:`arsm_rl.rollouts.race_policy`.

    :param logits: ``(B, *obs_shape) -> (B, sum(nvec))`` float32 logits, ``B`` a multiple of
        :data:`~arsm_rl.rollouts.POLICY_BLOCK`, a row's logits depending on its own observation and its place in its
        block only (:class:`~arsm_rl.rollouts.NumpyLogits`, or torch's: ``TorchLogits``)
    :param coding: the action coding
    :param entropy: seed of the update's rollout noise streams
    :param n_rollouts: number of rollouts of the update
    :param real_noise: ``(n, E, K, C)`` the update's real noise
    :param branch_steps: ``(R,)`` step each rollout branches at (-1 for tails, which never share the real noise)
    :param branch_envs: ``(R,)`` its sub-env
    :param share_noise: reuse the real noise at the steps after the branch point, within the update's data
    """

    def __init__(self, logits: Callable[[Any], np.ndarray], coding: ActionCoding, entropy: int, n_rollouts: int,
                 real_noise: np.ndarray, branch_steps: np.ndarray, branch_envs: np.ndarray,
                 share_noise: bool) -> None:  # fmt: skip
        self.logits_of = logits
        self.coding = coding
        self.streams = RolloutNoise(coding, entropy, n_rollouts)
        self.real_noise = real_noise
        self.branch_steps = branch_steps
        self.branch_envs = branch_envs
        self.share_noise = share_noise

    @property
    def portable(self) -> bool:
        """Whether it runs without torch (its logits are a :class:`~arsm_rl.rollouts.NumpyLogits`)."""
        return isinstance(self.logits_of, NumpyLogits)

    def logits(self, obs: Any) -> np.ndarray:
        """:return: ``(B, sum(nvec))`` float32 logits of ``obs``, computed on whole blocks of rows"""
        n = len(next(iter(obs.values())) if isinstance(obs, dict) else obs)
        return self.logits_of(pad_rows(obs))[:n]

    def noise(self, ids: np.ndarray, depth: int) -> np.ndarray:
        """:return: ``(len(ids), K, C)`` the noise of rollouts ``ids`` at ``depth``: their own, or the real one shared"""
        noise = self.streams.draw(ids, depth)
        if self.share_noise:
            steps = self.branch_steps[ids] + depth
            shared = (self.branch_steps[ids] >= 0) & (steps < len(self.real_noise))
            noise[shared] = self.real_noise[steps[shared], self.branch_envs[ids][shared]]
        return noise

    def race(self, logits: np.ndarray, noise: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        """:return: the ``(B, K)`` race winners, ``masks`` (as the envs return them, or ``None``) checked and applied"""
        checked = None if masks is None else self.coding.check_masks(masks, len(logits), "action_masks() of a scratch env")
        return self.coding.race_numpy(logits, noise, checked)

    def first_actions(self, obs: Any, ids: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """:return: the ``(len(ids), K)`` first actions of rollouts that start with a fresh draw (tails)"""
        return self.race(self.logits(obs), self.streams.draw(ids, 0), masks)

    def __call__(self, obs: Any, ids: np.ndarray, depth: int, masks: np.ndarray | None = None) -> np.ndarray:
        return self.coding.env_actions(self.race(self.logits(obs), self.noise(ids, depth), masks))

    def roll_out(self, env: Any, rollout: int, first_action: Any, horizon: int | None,
                 max_episode_steps: int) -> tuple[np.ndarray, int, Any]:  # fmt: skip
        """
        Rollout ``rollout`` alone on ``env`` (a gymnasium env at its branch point, without action masks), as
        :func:`~arsm_rl.rollouts.run_lockstep` runs it among others, bit for bit: the same steps, horizon and checks;
        its observation takes its place in a block whose other rows are zeros (a row's logits do not depend on them).

        :return: its rewards (float32-rounded, as float64), its length and the observation where its horizon cut it
            (``None`` if its episode ended)
        :raises RuntimeError: when it runs ``max_episode_steps`` without horizon and without its episode ending
        """
        rewards, depth, action, ids = [], 0, first_action, np.array([rollout])
        while True:
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            depth += 1
            if terminated or truncated:
                return float32_rewards(rewards), depth, None
            if horizon is not None and depth >= horizon:
                return float32_rewards(rewards), depth, obs
            if horizon is None and depth >= max_episode_steps:
                raise endless_rollout(depth)
            obs = np.asarray(obs)
            block = np.zeros((BLOCK, *obs.shape), dtype=obs.dtype)
            block[rollout % BLOCK] = obs
            logits = self.logits_of(block)[rollout % BLOCK : rollout % BLOCK + 1]
            action = env_action(self.coding.env_actions(self.race(logits, self.noise(ids, depth), None))[0])


def roll_out_pickled(env: Any, policy: bytes, rollout: int, first_action: Any, horizon: int | None,
                     max_episode_steps: int) -> tuple[np.ndarray, int, Any]:  # fmt: skip
    """:meth:`RacePolicy.roll_out` of a pickled :class:`RacePolicy` (pickled once, sent to each of an update's forks)"""
    race_policy: RacePolicy = pickle.loads(policy)
    return race_policy.roll_out(env, rollout, first_action, horizon, max_episode_steps)
