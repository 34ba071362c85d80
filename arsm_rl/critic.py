"""The action-value critic of ``ARSM(action_values="critic" | "bootstrap")``: Q(s, a) learned from real transitions.

CARSM (Yue, Tang, Yin & Zhou, "Discrete Action On-Policy Learning with Action-Value Critic", AISTATS 2020) values
ARSM's swap pseudo actions with a learned Q(s, a) instead of rollouts from clones. Here, as there:

- the network, :class:`~arsm_rl.policies.ActionValueNet` (Q(s, a) = MLP([features(s), one-hot(a)]), one output for
  any (Multi)Discrete joint action, so valuing one joint action never enumerates the others), is part of the policy;
- :func:`critic_values` and :func:`closing_values`: what ``"critic"`` and ``"bootstrap"`` read from it;
- :class:`TransitionReplay`: the most recent real transitions (s, a, r, s', terminated), a ring buffer;
- :func:`state_values`: V(s) = sum_a pi(a|s) Q(s, a), exact over the joint actions when there are at most
  :data:`EXACT_JOINT` of them, else the mean of Q over :data:`VALUE_SAMPLES` joint actions drawn from pi;
- :func:`critic_step` (:func:`train_critic`: an update's steps): one expected-SARSA regression step on a minibatch
  of the replay, y = r + gamma (1 - terminated) V'(s') with V' from the target network and the current policy,
  followed by a soft (Polyak) update of the target.

The transitions are on-policy when collected and age in the replay; expected-SARSA targets stay targets of the
current policy's Q whatever policy took the action, since the next action is averaged under the current one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor, polyak_update, update_learning_rate
from torch.nn import functional as F

from arsm_rl.actions import JointActions
from arsm_rl.policies import ARSMPolicy
from arsm_rl.rollouts import Obs, flatten_steps, select_rows, stack_obs
from arsm_rl.updates import UpdateData, UpdatePlan

__all__ = ["ACTION_VALUES", "EXACT_JOINT", "VALUE_SAMPLES", "TransitionReplay", "closing_values", "critic_step",
           "critic_values", "state_values", "train_critic", "update_transitions"]  # fmt: skip

#: ``ARSM(action_values=...)``: rollouts to the episode's end (or ``pseudo_horizon``), a learned critic, or rollouts cut
#: at ``pseudo_horizon`` and closed with the critic's state value.
ACTION_VALUES = ("rollout", "critic", "bootstrap")

#: :func:`state_values` sums over every joint action up to this many, and samples above.
EXACT_JOINT = 64

#: joint actions drawn per state by :func:`state_values` over larger joint action spaces.
VALUE_SAMPLES = 16


def state_values(
    policy: ARSMPolicy,
    joint: JointActions,
    obs: Obs,
    masks: np.ndarray | None,
    rng: np.random.Generator,
    target: bool = False,
) -> th.Tensor:
    """
    V(s) = sum_a pi(a|s) Q(s, a) under the current policy (no gradient): exact over at most :data:`EXACT_JOINT` joint
    actions, else the mean of Q over :data:`VALUE_SAMPLES` joint actions drawn from pi with ``rng`` (unbiased).

    :param policy: the policy with its critic
    :param joint: the action coding
    :param obs: ``(B, ...)`` observations as the policy sees them
    :param masks: ``(B, sum(nvec))`` valid actions, or ``None``
    :param rng: draws the sampled joint actions
    :param target: use the target network (the critic's regression targets) instead of the critic
    :return: ``(B,)`` float32 values
    """
    with th.no_grad():
        tensor = obs_as_tensor(obs, policy.device)  # type: ignore[arg-type]
        logits = joint.masked(policy(tensor), masks)
        n = len(logits)
        if joint.n_joint <= EXACT_JOINT:
            actions = th.as_tensor(joint.decode(np.arange(joint.n_joint)), device=policy.device)  # (J, K)
            log_probs = th.log_softmax(joint.padded(logits), dim=-1)  # (B, K, C)
            joint_log_probs = log_probs[:, th.arange(actions.shape[1]), actions].sum(-1)  # (B, J)
            q = policy.q_values(tensor, actions.expand(n, *actions.shape), target)
            return (joint_log_probs.exp() * q).sum(1)
        noise = joint.noise(rng, n * VALUE_SAMPLES)
        drawn = joint.race(logits.cpu().repeat_interleave(VALUE_SAMPLES, dim=0), noise)
        actions = th.as_tensor(drawn, device=policy.device).reshape(n, VALUE_SAMPLES, -1)
        return policy.q_values(tensor, actions, target).mean(1)


def critic_values(policy: ARSMPolicy, joint: JointActions, collected: UpdateData,
                  plan: UpdatePlan) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """
    ``action_values="critic"``: the critic's Q(s, a) of every step's true action and of ``plan.requests``.

    :return: ``(B,)`` the true actions' values and the requests' values, in order, float64
    """
    n_rows = collected.rewards.size
    obs = flatten_steps(collected.obs, n_rows)
    rows = np.array([row for row, _ in plan.requests], dtype=np.int64)
    codes = np.array([code for _, code in plan.requests], dtype=np.int64)
    with th.no_grad():
        true = th.as_tensor(collected.actions.reshape(n_rows, 1, -1), device=policy.device)
        q_true = policy.q_values(obs_as_tensor(obs, policy.device), true)[:, 0]  # type: ignore[arg-type]
        asked = th.as_tensor(joint.decode(codes).reshape(len(rows), 1, len(joint.nvec)), device=policy.device)
        values = policy.q_values(obs_as_tensor(select_rows(obs, rows), policy.device), asked)[:, 0]  # type: ignore[arg-type]
    return q_true.double().cpu().numpy(), values.double().cpu().numpy()


def closing_values(policy: ARSMPolicy, joint: JointActions, collected: UpdateData, rng: np.random.Generator) -> np.ndarray:
    """
    ``action_values="bootstrap"``: V of every real state of an update and of the state after it (:func:`state_values`),
    where the true actions' values are closed (:func:`~arsm_rl.rollouts.true_values`).

    :return: ``(n + 1, E)`` float64
    """
    n, n_envs = collected.rewards.shape
    masks = None
    if collected.masks is not None and collected.tail_masks is not None:
        masks = np.concatenate([collected.masks, collected.tail_masks[None]]).reshape((n + 1) * n_envs, -1)
    obs = stack_obs([*(select_rows(collected.obs, t) for t in range(n)), collected.tail_obs])
    values = state_values(policy, joint, flatten_steps(obs, (n + 1) * n_envs), masks, rng)
    return values.double().cpu().numpy().reshape(n + 1, n_envs)


def update_transitions(collected: UpdateData) -> tuple[Obs, np.ndarray, np.ndarray, Obs, np.ndarray, np.ndarray | None]:
    """
    An update's real transitions as flat rows ``t * E + e``: (obs, actions, rewards, next obs, terminated, next masks).

    The next observation of a step is the following step's (the last step's: the observation after the data); where an
    episode ended, the env has already reset, so it is the terminal observation SB3's ``VecEnv`` reports, which a
    time limit's truncation bootstraps from (``terminated`` is ``False`` there; a terminated step's next value is 0).

    :param collected: the update's real experience
    :return: the rows; next masks are ``None`` without masks (all actions valid past a truncation: its state's masks
        are not reported)
    """
    n, n_envs = collected.rewards.shape
    total = n * n_envs
    following = _tree2(lambda obs, tail: np.concatenate([obs[1:], tail[None]]), collected.obs, collected.tail_obs)
    next_obs = flatten_steps(following, total)
    finals = list(collected.final_obs)
    if finals:
        _assign(next_obs, np.array(finals), stack_obs([collected.final_obs[row] for row in finals]))
    next_masks = None
    if collected.masks is not None:
        assert collected.tail_masks is not None
        next_masks = np.concatenate([collected.masks[1:], collected.tail_masks[None]]).reshape(total, -1)
        next_masks[finals] = True
    terminated = collected.dones if collected.terminated is None else collected.terminated
    return (
        flatten_steps(collected.obs, total),
        collected.actions.reshape(total, -1),
        collected.rewards.reshape(total),
        next_obs,
        terminated.reshape(total),
        next_masks,
    )


class TransitionReplay:
    """
    The last ``capacity`` real transitions, a ring buffer (observations as arrays, or dicts of arrays).

    :param capacity: transitions kept
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: dict[str, Any] | None = None
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, obs: Obs, actions: np.ndarray, rewards: np.ndarray, next_obs: Obs, terminated: np.ndarray,
            next_masks: np.ndarray | None) -> None:  # fmt: skip
        """Add ``B`` transitions (rows of each argument), overwriting the oldest when full."""
        parts = {"obs": obs, "actions": actions, "rewards": rewards, "next_obs": next_obs, "terminated": terminated}
        if next_masks is not None:
            parts["next_masks"] = next_masks
        if self._data is None:
            self._data = {key: _tree(lambda x: np.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype), value)
                          for key, value in parts.items()}  # fmt: skip
        index = (self._next + np.arange(len(rewards))) % self.capacity
        for key, value in parts.items():
            _assign(self._data[key], index, value)
        self._next = int(index[-1] + 1) % self.capacity if len(index) else self._next
        self._size = min(self.capacity, self._size + len(rewards))

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, Any]:
        """:return: ``batch_size`` transitions drawn uniformly with replacement, by part name"""
        assert self._data is not None and self._size > 0
        rows = rng.integers(self._size, size=batch_size)
        return {key: select_rows(value, rows) for key, value in self._data.items()}


def _tree(fn: Any, obs: Any) -> Any:
    return {key: fn(value) for key, value in obs.items()} if isinstance(obs, dict) else fn(obs)


def _tree2(fn: Any, obs: Any, other: Any) -> Any:
    return {key: fn(value, other[key]) for key, value in obs.items()} if isinstance(obs, dict) else fn(obs, other)


def _assign(store: Any, index: np.ndarray, value: Any) -> None:
    if isinstance(store, dict):
        for key in store:
            store[key][index] = value[key]
    else:
        store[index] = value


def critic_step(
    policy: ARSMPolicy,
    joint: JointActions,
    replay: TransitionReplay,
    rng: np.random.Generator,
    batch_size: int,
    gamma: float,
    tau: float,
) -> tuple[float, float]:
    """
    One expected-SARSA step of the critic on a minibatch of the replay: minimise (Q(s, a) - y)^2 with
    y = r + gamma (1 - terminated) V'(s'), V' from the target network under the current policy
    (:func:`state_values`), then move the target network by ``tau`` towards the critic.

    :return: the loss and the mean absolute TD error of the minibatch
    """
    batch = replay.sample(rng, batch_size)
    device = policy.device
    rewards = th.as_tensor(batch["rewards"], dtype=th.float32, device=device)
    alive = 1.0 - th.as_tensor(batch["terminated"], dtype=th.float32, device=device)
    next_values = state_values(policy, joint, batch["next_obs"], batch.get("next_masks"), rng, target=True)
    targets = rewards + gamma * alive * next_values
    actions = th.as_tensor(batch["actions"], device=device)[:, None, :]
    q = policy.q_values(obs_as_tensor(batch["obs"], device), actions)[:, 0]  # type: ignore[arg-type]
    loss = F.mse_loss(q, targets)
    assert policy.critic_optimizer is not None and policy.critic is not None and policy.critic_target is not None
    policy.critic_optimizer.zero_grad()
    loss.backward()
    policy.critic_optimizer.step()
    polyak_update(policy.critic.parameters(), policy.critic_target.parameters(), tau)
    return loss.item(), (q - targets).abs().mean().item()


def train_critic(policy: ARSMPolicy, joint: JointActions, replay: TransitionReplay, rng: np.random.Generator,
                 learning_rate: float, batch_size: int, gamma: float, tau: float,
                 steps: int) -> list[tuple[float, float]]:  # fmt: skip
    """
    ``steps`` :func:`critic_step` s at ``learning_rate``, with the policy in evaluation mode (the targets' forward passes
    must not update the actor's statistics).

    :return: each step's loss and mean absolute TD error
    """
    assert policy.critic_optimizer is not None
    update_learning_rate(policy.critic_optimizer, learning_rate)
    policy.set_training_mode(False)
    return [critic_step(policy, joint, replay, rng, batch_size, gamma, tau) for _ in range(steps)]
