"""The policy inside pseudo rollouts, as a picklable object that runs the same in the trainer and in rollout workers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.utils import obs_as_tensor
from torch import nn

from arsm_rl.actions import JointActions
from arsm_rl.rollouts.lockstep import pad_rows
from arsm_rl.rollouts.mlp import NumpyLogits
from arsm_rl.rollouts.noise import RolloutNoise
from arsm_rl.rollouts.obs import Obs

__all__ = ["RacePolicy", "numpy_logits"]

_ACTIVATIONS: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def numpy_logits(policy: BasePolicy) -> NumpyLogits | None:
    """
    The numpy form of a policy's logits (:class:`~arsm_rl.rollouts.mlp.NumpyLogits`), where it has one: an
    ``ARSMPolicy`` (a ``logits_net`` of ``Linear`` layers with ``Tanh`` or ``ReLU`` between them) on a flattening
    features extractor, with a ``Box`` observation space that is not an image SB3 would rescale, or a ``Discrete``
    one, in float32 on CPU. Other policies (CNNs, dict observations, other activations) keep torch.

    :return: the MLP's weights as numpy arrays, or ``None``
    """
    net = getattr(policy, "logits_net", None)
    space = policy.observation_space
    if not isinstance(net, nn.Sequential) or not isinstance(getattr(policy, "features_extractor", None), FlattenExtractor):
        return None
    if isinstance(space, spaces.Box):
        if is_image_space(space) and policy.normalize_images:
            return None
        one_hot = None
    elif isinstance(space, spaces.Discrete) and space.start == 0:
        one_hot = int(space.n)
    else:
        return None
    linears = [layer for layer in list(net)[::2] if isinstance(layer, nn.Linear) and layer.bias is not None]
    names = [_ACTIVATIONS.get(type(layer)) for layer in list(net)[1::2]]
    activation = names[0] if names else "tanh"  # a single layer has none
    if len(linears) != (len(net) + 1) // 2 or len(net) % 2 == 0 or any(name != activation for name in names):
        return None
    if activation is None or policy.device.type != "cpu" or any(layer.weight.dtype != th.float32 for layer in linears):
        return None
    weights = tuple(layer.weight.detach().numpy().T.copy() for layer in linears)
    biases = tuple(layer.bias.detach().numpy().copy() for layer in linears if layer.bias is not None)
    return NumpyLogits(weights, biases, activation, one_hot)


class _NoOptimizer:
    """Stands in for the optimizer of a policy rebuilt to act only (see :meth:`RacePolicy.__setstate__`)."""

    def __init__(self, params: Any, lr: float, **kwargs: Any) -> None:
        pass


class RacePolicy:
    """
    ``act(obs, ids, depth)`` of pseudo rollouts (an :data:`~arsm_rl.rollouts.ActFn`): the policy's logits on whole
    blocks of rows (:func:`~arsm_rl.rollouts.pad_rows`), raced (:meth:`~arsm_rl.actions.JointActions.race_numpy`)
    with each rollout's own noise stream (:class:`~arsm_rl.rollouts.noise.RolloutNoise`), or with the real
    trajectory's noise where ``share_noise`` applies. The logits come from the policy's numpy form where it has one
    (:func:`numpy_logits`: the MLP policies), from torch otherwise. A rollout's actions depend only on its own
    observations, its id and its depth, so rollouts give the same result in the trainer or in any worker. Pickled, it
    carries the numpy form, or else the policy's class, constructor arguments and weights (not its optimizer), and
    then rebuilds the policy on CPU in eval mode.

    :param policy: an SB3 policy returning logits (``ARSMPolicy``)
    :param joint: the action coding
    :param entropy: seed of the update's rollout noise streams
    :param n_rollouts: number of rollouts of the update
    :param real_noise: ``(n, E, K, C)`` the update's real noise
    :param branch_steps: ``(R,)`` step each rollout branches at (-1 for tails, which never share the real noise)
    :param branch_envs: ``(R,)`` its sub-env
    :param share_noise: reuse the real noise at the steps after the branch point, within the update's data
    :ivar mlp: the policy's numpy form, or ``None`` (torch computes the logits)
    """

    def __init__(self, policy: BasePolicy, joint: JointActions, entropy: int, n_rollouts: int, real_noise: np.ndarray,
                 branch_steps: np.ndarray, branch_envs: np.ndarray, share_noise: bool) -> None:  # fmt: skip
        self.mlp = numpy_logits(policy)
        self.policy: BasePolicy | None = None if self.mlp is not None else policy
        self.device = policy.device  # looked up once: ``policy.device`` walks the parameters
        self.joint = joint
        self.streams = RolloutNoise(joint, entropy, n_rollouts)
        self.real_noise = real_noise
        self.branch_steps = branch_steps
        self.branch_envs = branch_envs
        self.share_noise = share_noise

    def logits(self, obs: Obs) -> np.ndarray:
        """:return: ``(B, sum(nvec))`` float32 logits of ``obs``, computed on whole blocks of rows"""
        n = len(next(iter(obs.values())) if isinstance(obs, dict) else obs)
        if self.mlp is not None:
            return self.mlp(pad_rows(obs))[:n]  # type: ignore[arg-type]
        assert self.policy is not None
        with th.no_grad():
            return self.policy(obs_as_tensor(pad_rows(obs), self.device)).float().cpu().numpy()[:n]  # type: ignore[arg-type]

    def _race(self, obs: Obs, noise: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        logits = self.logits(obs)
        checked = None if masks is None else self.joint.check_masks(masks, len(logits), "action_masks() of a scratch env")
        return self.joint.race_numpy(logits, noise, checked)

    def first_actions(self, obs: Obs, ids: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """:return: the ``(len(ids), K)`` first actions of rollouts that start with a fresh draw (tails)"""
        return self._race(obs, self.streams.draw(ids, 0), masks)

    def __call__(self, obs: Obs, ids: np.ndarray, depth: int, masks: np.ndarray | None = None) -> np.ndarray:
        noise = self.streams.draw(ids, depth)
        if self.share_noise:
            steps = self.branch_steps[ids] + depth
            shared = (self.branch_steps[ids] >= 0) & (steps < len(self.real_noise))
            noise[shared] = self.real_noise[steps[shared], self.branch_envs[ids][shared]]
        return self.joint.env_actions(self._race(obs, noise, masks))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["device"]
        policy = state.pop("policy")
        if policy is not None:
            # numpy copies, not tensors: through a multiprocessing pipe, torch shares each tensor's storage by a file
            # descriptor that the receiver fetches from the sender's resource-sharer thread, a round trip of 25-40 ms
            # while the trainer is busy with its own share of the rollouts
            weights = {name: value.detach().cpu().numpy().copy() for name, value in policy.state_dict().items()}
            state["policy_spec"] = (type(policy), policy._get_constructor_parameters(), weights)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        spec = state.pop("policy_spec", None)
        self.__dict__.update(state, policy=None, device=th.device("cpu"))
        if spec is None:
            return
        cls, kwargs, weights = spec
        # Rebuilt only to act: no optimizer (building torch's first one imports torch._dynamo, over a second in a fresh
        # worker) and no initialisation of weights that load_state_dict overwrites.
        lean = {"optimizer_class": _NoOptimizer, "optimizer_kwargs": {}, "ortho_init": False}
        policy = cls(**{**kwargs, **{key: value for key, value in lean.items() if key in kwargs}})
        policy.load_state_dict({name: th.from_numpy(value) for name, value in weights.items()})
        policy.set_training_mode(False)
        self.__dict__.update(policy=policy, device=policy.device)
