"""The policy inside pseudo rollouts built from an SB3 policy: its numpy form where it has one, its torch forward otherwise."""

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

from arsm_rl.coding import ActionCoding
from arsm_rl.rollouts.mlp import NumpyLogits
from arsm_rl.rollouts.obs import Obs
from arsm_rl.rollouts.race import RacePolicy

__all__ = ["TorchLogits", "numpy_logits", "race_policy"]

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
    """Stands in for the optimizer of a policy rebuilt to act only (see :meth:`TorchLogits.__setstate__`)."""

    def __init__(self, params: Any, lr: float, **kwargs: Any) -> None:
        pass


class TorchLogits:
    """
    A policy's logits through torch, for policies without a numpy form (CNNs, ``Dict`` observations, other layers):
    ``(B, *obs_shape) -> (B, sum(nvec))`` float32 numpy logits. Pickled, it carries the policy's class, constructor
    arguments and weights as numpy arrays (not its optimizer), and rebuilds the policy on CPU in eval mode.

    :param policy: an SB3 policy returning logits (``ARSMPolicy``)
    """

    def __init__(self, policy: BasePolicy) -> None:
        self.policy = policy
        self.device = policy.device  # looked up once: ``policy.device`` walks the parameters

    def __call__(self, obs: Obs) -> np.ndarray:
        with th.no_grad():
            return self.policy(obs_as_tensor(obs, self.device)).float().cpu().numpy()  # type: ignore[arg-type]

    def __getstate__(self) -> dict[str, Any]:
        # numpy copies, not tensors: through a multiprocessing pipe, torch shares each tensor's storage by a file
        # descriptor that the receiver fetches from the sender's resource-sharer thread, a round trip of 25-40 ms
        # while the trainer is busy with its own share of the rollouts
        weights = {name: value.detach().cpu().numpy().copy() for name, value in self.policy.state_dict().items()}
        return {"spec": (type(self.policy), self.policy._get_constructor_parameters(), weights)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        cls, kwargs, weights = state["spec"]
        # Rebuilt only to act: no optimizer (building torch's first one imports torch._dynamo, over a second in a fresh
        # worker) and no initialisation of weights that load_state_dict overwrites.
        lean = {"optimizer_class": _NoOptimizer, "optimizer_kwargs": {}, "ortho_init": False}
        policy = cls(**{**kwargs, **{key: value for key, value in lean.items() if key in kwargs}})
        policy.load_state_dict({name: th.from_numpy(value) for name, value in weights.items()})
        policy.set_training_mode(False)
        self.__init__(policy)  # type: ignore[misc]


def race_policy(policy: BasePolicy, joint: ActionCoding, entropy: int, n_rollouts: int, real_noise: np.ndarray,
                branch_steps: np.ndarray, branch_envs: np.ndarray, share_noise: bool) -> RacePolicy:  # fmt: skip
    """
    The policy of an update's pseudo rollouts (:class:`~arsm_rl.rollouts.race.RacePolicy`): ``policy``'s numpy form
    where it has one (:func:`numpy_logits`; then it runs without torch, in a ``ForkVecEnv`` copy too), its torch
    forward otherwise (:class:`TorchLogits`). The other parameters are :class:`~arsm_rl.rollouts.race.RacePolicy`'s.
    """
    logits = numpy_logits(policy)
    coding = ActionCoding(joint.nvec, joint.discrete)  # the numpy coding only: no torch in a pickled RacePolicy
    return RacePolicy(logits if logits is not None else TorchLogits(policy), coding, entropy, n_rollouts, real_noise,
                      branch_steps, branch_envs, share_noise)  # fmt: skip
