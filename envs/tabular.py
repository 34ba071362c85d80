"""A small random episodic MDP whose exact policy gradient is known (a linear solve)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class RandomMDP(gym.Env[np.ndarray, int]):
    """
    Random episodic MDP with one-hot observations.

    In state s, action a pays r[s, a], ends the episode with probability ``term[s, a]`` and
    otherwise moves to s' ~ P[s, a] / (1 - term[s, a]). Start states are drawn from ``mu0``.
    The MDP itself (P, r, term, mu0) is fixed by ``mdp_seed``; the episode's randomness comes
    from ``np_random``, so the env clones exactly by copying ``state`` and the RNG.

    :param n_states: number of states S
    :param n_actions: number of actions A
    :param min_termination: smallest per-step termination probability (episodes last at most
        1 / min_termination steps on average)
    :param mdp_seed: seed of the MDP's tables
    :param n_masked: invalid actions per state (drawn per state with the tables; ``action_masks()`` gives sb3-contrib's
        mask of the current state, and taking an invalid action raises ``ValueError``)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self, n_states: int = 3, n_actions: int = 3, min_termination: float = 0.2, mdp_seed: int = 0, n_masked: int = 0
    ) -> None:
        if not 0 <= n_masked < n_actions:
            raise ValueError(f"n_masked must be in [0, n_actions), got {n_masked}")
        tables = np.random.default_rng(mdp_seed)
        self.term = tables.uniform(min_termination, 2 * min_termination, size=(n_states, n_actions))
        moves = tables.dirichlet(np.ones(n_states), size=(n_states, n_actions))
        self.transitions = moves * (1.0 - self.term)[..., None]  # sub-stochastic: the rest is termination
        self.rewards = tables.normal(size=(n_states, n_actions))
        self.mu0 = tables.dirichlet(np.ones(n_states))
        #: valid[s, a]: action a may be taken in state s
        self.valid = np.ones((n_states, n_actions), dtype=bool)
        for s in range(n_states if n_masked else 0):
            self.valid[s, tables.choice(n_actions, size=n_masked, replace=False)] = False
        self.observation_space = spaces.Box(0.0, 1.0, shape=(n_states,), dtype=np.float32)
        self.action_space = spaces.Discrete(n_actions)
        self.state = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        obs[self.state] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = int(self.np_random.choice(len(self.mu0), p=self.mu0))
        return self._obs(), {}

    def action_masks(self) -> np.ndarray:
        """The valid actions in the current state (sb3-contrib's convention: ``True`` where valid)."""
        return self.valid[self.state].copy()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        s, a = self.state, int(action)
        if not self.valid[s, a]:
            raise ValueError(f"action {a} is masked in state {s}")
        reward = float(self.rewards[s, a])
        if self.np_random.random() < self.term[s, a]:
            return self._obs(), reward, True, False, {}
        self.state = int(self.np_random.choice(len(self.mu0), p=self.transitions[s, a] / (1.0 - self.term[s, a])))
        return self._obs(), reward, False, False, {}

    def clone_core_state(self) -> int:
        """Everything that changes in an episode besides ``np_random`` (``arsm_rl.cloning`` protocol)."""
        return self.state

    def restore_core_state(self, state: int) -> None:
        self.state = state

    def action_values(self, logits: np.ndarray, gamma: float = 1.0) -> np.ndarray:
        """
        Q(s, a) = r(s, a) + gamma sum_s' P(s'|s, a) V(s') of the softmax policy over each state's valid actions, with
        V = (I - gamma P_pi)^-1 r_pi (exactly, a linear solve).

        :param logits: (S, A) policy logits per state
        :param gamma: discount (1 is fine: every episode ends)
        :return: (S, A) action values
        """
        p = self._probabilities(logits)
        v = np.linalg.solve(self._system(p, gamma), (p * self.rewards).sum(1))
        return self.rewards + gamma * self.transitions @ v

    def policy_gradient(self, logits: np.ndarray, gamma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """
        Exact gradient of J = E[sum_t gamma^t r_t] with respect to tabular logits, for the softmax policy over each
        state's valid actions (masked actions have probability 0 and gradient 0).

        dJ/dlogits[s, a] = d(s) p(a|s) (Q(s, a) - V(s)), with Q from :meth:`action_values`, V(s) = sum_a p(a|s) Q(s, a)
        and the discounted visit counts d = mu0^T (I - gamma P_pi)^-1.

        :param logits: (S, A) policy logits per state
        :param gamma: discount (1 is fine: every episode ends)
        :return: the (S, A) gradient and the (S,) visit counts d (with gamma = 1, d.sum() is the
            expected episode length)
        """
        p = self._probabilities(logits)
        q = self.action_values(logits, gamma)
        v = (p * q).sum(1)
        d = np.linalg.solve(self._system(p, gamma).T, self.mu0)
        return d[:, None] * p * (q - v[:, None]), d

    def policy_value(self, logits: np.ndarray, gamma: float = 1.0) -> float:
        """:return: J = E[sum_t gamma^t r_t] of the softmax policy over the valid actions, exactly"""
        p = self._probabilities(logits)
        return float(self.mu0 @ np.linalg.solve(self._system(p, gamma), (p * self.rewards).sum(1)))

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The softmax policy over each state's valid actions, (S, A)."""
        logits = np.where(self.valid, logits, -np.inf)
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    def _system(self, p: np.ndarray, gamma: float) -> np.ndarray:
        """I - gamma P_pi, the state-to-state matrix of the policy p."""
        return np.eye(len(self.mu0)) - gamma * np.einsum("sa,sat->st", p, self.transitions)

    def optimal_value(self, gamma: float = 1.0) -> float:
        """:return: J of the best deterministic policy over the valid actions (value iteration to convergence)"""
        v = np.zeros(len(self.mu0))
        for _ in range(10_000):
            q = np.where(self.valid, self.rewards + gamma * self.transitions @ v, -np.inf)
            v, previous = q.max(1), v
            if np.abs(v - previous).max() < 1e-12:
                break
        return float(self.mu0 @ v)
