"""Policies for ARSM: an action-logits network with no value head.

ARSM's self-critic replaces the learned critic, so the policy is only a features extractor
followed by an MLP that outputs action logits. It follows SB3's ``BasePolicy`` contract
(``predict``, ``save``/``load``, ``get_distribution``) so evaluation helpers, callbacks and
RL Zoo tooling work unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    MultiCategoricalDistribution,
    make_proba_distribution,
)
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
    create_mlp,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F

from arsm_rl.actions import JointActions

__all__ = [
    "ARSMPolicy",
    "ActionValueNet",
    "CnnPolicy",
    "MlpPolicy",
    "MultiInputPolicy",
    "action_dims",
    "observation_space_problem",
]

#: Observation spaces SB3's policies (and so ARSM's) take, alone or as the values of a ``Dict``.
_FLAT_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def _is_text(space: spaces.Space) -> bool:
    """A text space: gymnasium's ``Text`` or MiniGrid's ``MissionSpace`` (matched by name)."""
    return isinstance(space, spaces.Text) or type(space).__name__ == "MissionSpace"


def observation_space_problem(space: spaces.Space) -> str | None:
    """
    Why SB3's policies cannot take an observation space, with the wrapper that fixes it.

    :param space: an env's observation space
    :return: one sentence, or ``None`` when the space is supported (``Box``, ``Discrete``, ``MultiDiscrete``,
        ``MultiBinary``, or a ``Dict`` of those)
    """
    if isinstance(space, _FLAT_SPACES):
        return None
    if isinstance(space, spaces.Dict):
        text = [key for key, sub in space.spaces.items() if _is_text(sub)]
        keep = [key for key in space.spaces if key not in text]
        if text:
            return (
                f"its Dict observations have a text part {text[0]!r}, which SB3's policies cannot encode: for MiniGrid wrap "
                "the env in minigrid.wrappers.ImgObsWrapper (image only) or FlatObsWrapper (image and mission, flattened), "
                f"otherwise drop the text with gymnasium.wrappers.FilterObservation(env, {keep})"
            )
        if all(isinstance(sub, _FLAT_SPACES) for sub in space.spaces.values()):
            return None
        return (
            "its Dict observations are nested, which SB3's policies cannot encode: wrap the env in "
            "gymnasium.wrappers.FlattenObservation"
        )
    return (
        f"SB3's policies cannot encode {type(space).__name__} observations: wrap the env in "
        "gymnasium.wrappers.FlattenObservation (or an observation wrapper that returns a Box)"
    )


def action_dims(action_space: spaces.Space) -> np.ndarray:
    """
    Number of categories of each action dimension.

    :param action_space: a ``Discrete``, ``MultiDiscrete`` or ``MultiBinary`` space (one-dimensional)
    :return: int64 array of shape (K,): ``[n]`` for ``Discrete(n)``, ``nvec`` for ``MultiDiscrete``, ``[2] * n`` for
        ``MultiBinary(n)`` (n binary categoricals)
    """
    if isinstance(action_space, spaces.Discrete):
        return np.array([int(action_space.n)], dtype=np.int64)
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
        return action_space.nvec.astype(np.int64)
    if isinstance(action_space, spaces.MultiBinary) and len(action_space.shape) == 1:
        return np.full(action_space.shape, 2, dtype=np.int64)
    raise ValueError(
        f"ARSM supports Discrete and one-dimensional MultiDiscrete and MultiBinary action spaces, got {action_space}; "
        "use an algorithm for continuous actions (e.g. PPO or SAC)."
    )


def pi_arch(net_arch: list[int] | dict[str, list[int]] | None) -> list[int]:
    """
    The hidden layers of the logits MLP from a ``net_arch`` as SB3's algorithms take it.

    :param net_arch: a list of sizes, or the actor-critic form ``dict(pi=[...], vf=[...])``, whose ``pi`` part is taken
        (ARSM has no value network, so ``vf`` is ignored); ``None``: ``[64, 64]``
    :return: the sizes
    :raises ValueError: for a dict without ``pi`` or with keys other than ``pi`` and ``vf``
    """
    if net_arch is None:
        return [64, 64]
    if not isinstance(net_arch, dict):
        return list(net_arch)
    if "pi" not in net_arch or set(net_arch) - {"pi", "vf"}:
        raise ValueError(
            f"net_arch={net_arch!r}: ARSM's policy has one network, the logits MLP; give its hidden sizes as a list "
            "(net_arch=[64, 64]) or as dict(pi=[64, 64]) (a 'vf' part is ignored: there is no value network)"
        )
    return list(net_arch["pi"])


class ActionValueNet(nn.Module):
    """
    Q(s, a) for (Multi)Discrete actions: an MLP on the observation's features and the joint action's one-hot code
    (one block of ``nvec[k]`` per dimension).

    :param features_extractor: the critic's own features extractor (not shared with the actor)
    :param nvec: number of actions of each dimension
    :param net_arch: hidden layer sizes
    :param activation_fn: activation between hidden layers
    """

    def __init__(
        self, features_extractor: BaseFeaturesExtractor, nvec: np.ndarray, net_arch: list[int], activation_fn: type[nn.Module]
    ) -> None:
        super().__init__()
        self.features_extractor = features_extractor
        self.width = int(nvec.sum())
        self.starts: th.Tensor
        starts = th.as_tensor(np.concatenate([[0], np.cumsum(nvec[:-1])]), dtype=th.long)
        self.register_buffer("starts", starts, persistent=False)  # each dimension's first one-hot column
        self.q_net = nn.Sequential(*create_mlp(features_extractor.features_dim + self.width, 1, net_arch, activation_fn))

    def forward(self, features: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        :param features: ``(B, F)`` features of the states
        :param actions: ``(B, J, K)`` int64, J joint actions per state
        :return: ``(B, J)`` Q values
        """
        b, j, k = actions.shape
        onehot = th.zeros(b * j, self.width, dtype=features.dtype, device=features.device)
        onehot.scatter_(1, actions.reshape(b * j, k) + self.starts, 1.0)
        inputs = th.cat([features.repeat_interleave(j, dim=0), onehot], dim=1)
        return self.q_net(inputs).reshape(b, j)


class ARSMPolicy(BasePolicy):
    """
    Categorical policy with no value head: features extractor, MLP, action logits.

    :param observation_space: observation space
    :param action_space: ``Discrete``, ``MultiDiscrete`` or ``MultiBinary`` action space
    :param lr_schedule: learning-rate schedule (its value at progress 1 sets the optimizer's initial lr)
    :param net_arch: hidden layer sizes of the logits MLP; ``[]`` gives a linear policy on the features; SB3's
        actor-critic form ``dict(pi=[...], vf=[...])`` gives its ``pi`` part (there is no value network)
    :param activation_fn: activation between hidden layers
    :param ortho_init: orthogonal initialisation as in SB3 (gain sqrt(2) for hidden layers, 0.01 for
        the logits layer, so the initial policy is close to uniform)
    :param features_extractor_class: SB3 features extractor class
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: divide image observations by 255
    :param optimizer_class: optimizer class
    :param optimizer_kwargs: optimizer keyword arguments, excluding the learning rate
        (default ``{"eps": 1e-5}`` for Adam, as SB3's actor-critic policies)
    :param critic_lr_schedule: learning-rate schedule of an action-value critic Q(s, a)
        (:class:`ActionValueNet`, with its own features extractor, a target copy and its own optimizer
        of ``optimizer_class``); ``None`` (the default) builds none. ``ARSM(action_values="critic" | "bootstrap")`` passes it
    :param critic_net_arch: hidden layer sizes of the critic's MLP (``None``: the actor's)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        critic_lr_schedule: Schedule | None = None,
        critic_net_arch: list[int] | None = None,
    ) -> None:
        if optimizer_kwargs is None:
            optimizer_kwargs = {"eps": 1e-5} if optimizer_class == th.optim.Adam else {}
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.net_arch = pi_arch(net_arch)
        self.activation_fn = activation_fn
        self.ortho_init = ortho_init
        self.nvec = action_dims(action_space)
        self.joint = JointActions(self.nvec, discrete=isinstance(action_space, spaces.Discrete))
        self._masks: np.ndarray | None = None  # the action masks of the current predict() call

        self.features_extractor = self.make_features_extractor()
        self.features_dim = self.features_extractor.features_dim
        layers = create_mlp(self.features_dim, int(self.nvec.sum()), self.net_arch, activation_fn)
        self.logits_net = nn.Sequential(*layers)
        # MultiBinary actions are n binary categoricals, with two logits each (SB3's Bernoulli takes one)
        binary = isinstance(action_space, spaces.MultiBinary)
        self.action_dist = MultiCategoricalDistribution(list(self.nvec)) if binary else make_proba_distribution(action_space)

        if ortho_init:
            linears = [m for m in self.logits_net if isinstance(m, nn.Linear)]
            for linear in linears[:-1]:
                self.init_weights(linear, gain=float(np.sqrt(2)))
            self.init_weights(linears[-1], gain=0.01)
            if not isinstance(self.features_extractor, FlattenExtractor):
                self.features_extractor.apply(lambda m: self.init_weights(m, gain=float(np.sqrt(2))))

        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

        # The critic comes after the actor and its optimizer: the actor's initialisation and parameters are the same
        # with or without it.
        self.critic_net_arch = critic_net_arch
        self.critic: ActionValueNet | None = None
        self.critic_target: ActionValueNet | None = None
        self.critic_optimizer: th.optim.Optimizer | None = None
        if critic_lr_schedule is not None:
            arch = self.net_arch if critic_net_arch is None else list(critic_net_arch)
            self.critic = ActionValueNet(self.make_features_extractor(), self.nvec, arch, activation_fn)
            self.critic_target = ActionValueNet(self.make_features_extractor(), self.nvec, arch, activation_fn)
            self.critic_target.load_state_dict(self.critic.state_dict())
            self.critic_target.requires_grad_(False)
            self.critic_optimizer = self.optimizer_class(  # type: ignore[call-arg]
                self.critic.parameters(), lr=critic_lr_schedule(1), **self.optimizer_kwargs
            )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                ortho_init=self.ortho_init,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                lr_schedule=self._dummy_schedule,
                critic_lr_schedule=None if self.critic is None else self._dummy_schedule,
                critic_net_arch=self.critic_net_arch,
            )
        )
        return data

    def actor_parameters(self) -> list[nn.Parameter]:
        """The parameters of the logits network and its features extractor (what :attr:`optimizer` steps)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def q_values(self, obs: PyTorchObs, actions: th.Tensor, target: bool = False) -> th.Tensor:
        """
        :param obs: batch of ``B`` observations (tensors, as :meth:`forward` takes them)
        :param actions: ``(B, J, K)`` int64 joint actions, J per observation
        :param target: use the target network
        :return: ``(B, J)`` action values Q(s, a) of the critic
        :raises RuntimeError: for a policy built without a critic
        """
        net = self.critic_target if target else self.critic
        if net is None:
            raise RuntimeError("this policy has no critic: build the model with action_values='critic' or 'bootstrap'")
        return net(self.extract_features(obs, net.features_extractor), actions)

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        """
        The logits MLP's ``Linear``, ``Tanh`` and ``ReLU`` layers run as the functions their modules call, without
        torch's module dispatch, which costs more than the arithmetic on the one-row batches of real steps (the same
        operations: bit-identical, gradients included); other layers are called as modules.

        :param obs: batch of (preprocessed by ``obs_to_tensor``) observations
        :return: action logits of shape (B, sum(nvec)), the dimensions' logits concatenated
        """
        x = self.extract_features(obs, self.features_extractor)
        for layer in self.logits_net:
            kind = type(layer)
            if isinstance(layer, nn.Linear) and kind is nn.Linear:
                x = F.linear(x, layer.weight, layer.bias)
            elif kind is nn.Tanh:
                x = th.tanh(x)
            elif kind is nn.ReLU and not layer.inplace:
                x = F.relu(x)
            else:
                x = layer(x)
        return x

    def get_distribution(self, obs: PyTorchObs) -> CategoricalDistribution | MultiCategoricalDistribution:
        """
        :param obs: batch of observations
        :return: SB3's categorical (or multi-categorical) distribution of the actions
        """
        return self.action_dist.proba_distribution(action_logits=self.forward(obs))  # type: ignore[return-value]

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        SB3's ``predict``, with sb3-contrib's ``action_masks``: one bool per action and observation, ``True`` where
        valid (``MultiDiscrete``: the dimensions' masks concatenated); masked actions are never returned.
        """
        self._masks = None if action_masks is None else np.asarray(action_masks)
        try:
            return super().predict(observation, state, episode_start, deterministic)
        finally:
            self._masks = None

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        logits = self.joint.apply_masks(self.forward(observation), self._masks, "predict(action_masks=...)")
        return self.action_dist.proba_distribution(action_logits=logits).get_actions(deterministic=deterministic)


MlpPolicy = ARSMPolicy


class CnnPolicy(ARSMPolicy):
    """:class:`ARSMPolicy` with SB3's ``NatureCNN`` features extractor (image observations)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )


class MultiInputPolicy(ARSMPolicy):
    """:class:`ARSMPolicy` with SB3's ``CombinedExtractor`` (``Dict`` observations)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )
