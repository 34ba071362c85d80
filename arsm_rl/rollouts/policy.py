"""The policy inside pseudo rollouts, as a picklable object that runs the same in the trainer and in rollout workers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import obs_as_tensor

from arsm_rl.actions import JointActions
from arsm_rl.rollouts.lockstep import pad_rows
from arsm_rl.rollouts.noise import RolloutNoise
from arsm_rl.rollouts.obs import Obs

__all__ = ["RacePolicy"]


class _NoOptimizer:
    """Stands in for the optimizer of a policy rebuilt to act only (see :meth:`RacePolicy.__setstate__`)."""

    def __init__(self, params: Any, lr: float, **kwargs: Any) -> None:
        pass


class RacePolicy:
    """
    ``act(obs, ids, depth)`` of pseudo rollouts (an :data:`~arsm_rl.rollouts.ActFn`): the policy's logits on whole
    blocks of rows (:func:`~arsm_rl.rollouts.pad_rows`), raced with each rollout's own noise stream
    (:class:`~arsm_rl.rollouts.noise.RolloutNoise`), or with the real trajectory's noise where ``share_noise`` applies.
    A rollout's actions depend only on its own observations, its id and its depth, so rollouts give the same
    result in the trainer or in any worker. Pickled, it carries the policy's class, constructor arguments and
    weights (not its optimizer), and rebuilds the policy on CPU in eval mode.

    :param policy: an SB3 policy returning logits (``ARSMPolicy``)
    :param joint: the action coding
    :param entropy: seed of the update's rollout noise streams
    :param n_rollouts: number of rollouts of the update
    :param real_noise: ``(n, E, K, C)`` the update's real noise
    :param branch_steps: ``(R,)`` step each rollout branches at (-1 for tails, which never share the real noise)
    :param branch_envs: ``(R,)`` its sub-env
    :param share_noise: reuse the real noise at the steps after the branch point, within the update's data
    """

    def __init__(self, policy: BasePolicy, joint: JointActions, entropy: int, n_rollouts: int, real_noise: np.ndarray,
                 branch_steps: np.ndarray, branch_envs: np.ndarray, share_noise: bool) -> None:  # fmt: skip
        self.policy = policy
        self.device = policy.device  # looked up once: ``policy.device`` walks the parameters
        self.joint = joint
        self.streams = RolloutNoise(joint, entropy, n_rollouts)
        self.real_noise = real_noise
        self.branch_steps = branch_steps
        self.branch_envs = branch_envs
        self.share_noise = share_noise

    def logits(self, obs: Obs) -> th.Tensor:
        """:return: float32 CPU logits of ``obs``, computed on whole blocks of rows"""
        n = len(next(iter(obs.values())) if isinstance(obs, dict) else obs)
        with th.no_grad():
            return self.policy(obs_as_tensor(pad_rows(obs), self.device)).float().cpu()[:n]  # type: ignore[arg-type]

    def masked_logits(self, obs: Obs, masks: np.ndarray | None) -> th.Tensor:
        """:return: :meth:`logits`, ``-inf`` where ``masks`` (as the envs return them, or ``None``) forbids an action"""
        return self.joint.apply_masks(self.logits(obs), masks, "action_masks() of a scratch env")

    def first_actions(self, obs: Obs, ids: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """:return: the ``(len(ids), K)`` first actions of rollouts that start with a fresh draw (tails)"""
        return self.joint.race(self.masked_logits(obs, masks), self.streams.draw(ids, 0))

    def __call__(self, obs: Obs, ids: np.ndarray, depth: int, masks: np.ndarray | None = None) -> np.ndarray:
        noise = self.streams.draw(ids, depth)
        if self.share_noise:
            steps = self.branch_steps[ids] + depth
            shared = (self.branch_steps[ids] >= 0) & (steps < len(self.real_noise))
            noise[shared] = self.real_noise[steps[shared], self.branch_envs[ids][shared]]
        return self.joint.env_actions(self.joint.race(self.masked_logits(obs, masks), noise))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["device"]
        policy = state.pop("policy")
        # numpy copies, not tensors: through a multiprocessing pipe, torch shares each tensor's storage by a file
        # descriptor that the receiver fetches from the sender's resource-sharer thread, a round trip of 25-40 ms
        # while the trainer is busy with its own share of the rollouts
        weights = {name: value.detach().cpu().numpy().copy() for name, value in policy.state_dict().items()}
        state["policy_spec"] = (type(policy), policy._get_constructor_parameters(), weights)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        cls, kwargs, weights = state.pop("policy_spec")
        # Rebuilt only to act: no optimizer (building torch's first one imports torch._dynamo, over a second in a fresh
        # worker) and no initialisation of weights that load_state_dict overwrites.
        lean = {"optimizer_class": _NoOptimizer, "optimizer_kwargs": {}, "ortho_init": False}
        policy = cls(**{**kwargs, **{key: value for key, value in lean.items() if key in kwargs}})
        policy.load_state_dict({name: th.from_numpy(value) for name, value in weights.items()})
        policy.set_training_mode(False)
        self.__dict__.update(state, policy=policy, device=policy.device)
