"""Observations of pseudo rollouts: batching, row selection and the ``VecEnv`` wrappers' transforms."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import (
    VecCheckNan,
    VecEnv,
    VecEnvWrapper,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
    VecTransposeImage,
    VecVideoRecorder,
)
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations

__all__ = ["Obs", "ObsPipeline", "flatten_steps", "select_rows", "stack_obs"]

Obs = np.ndarray | dict[str, np.ndarray]

#: Wrappers that leave observations as they are (statistics, videos, NaN checks): pseudo rollouts skip them.
_PASS_THROUGH_WRAPPERS = (VecMonitor, VecVideoRecorder, VecCheckNan)


def stack_obs(observations: Sequence[Any]) -> Obs:
    """One batch from a sequence of observations (arrays, or dicts of arrays), stacked along a new first axis."""
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)


def flatten_steps(obs: Obs, total: int) -> Obs:
    """Time-major ``(n, E, ...)`` observations (arrays, or dicts of arrays) to ``(n * E, ...)`` rows, ``total = n * E``."""
    if isinstance(obs, dict):
        return {key: value.reshape(total, *value.shape[2:]) for key, value in obs.items()}
    return obs.reshape(total, *obs.shape[2:])


def select_rows(obs: Obs, rows: Any) -> Obs:
    """The rows ``rows`` (an index array or list) of a batch of observations."""
    if isinstance(obs, dict):
        return {key: value[rows] for key, value in obs.items()}
    return obs[rows]


class ObsPipeline:
    """
    The observation transforms of a ``VecEnv``'s wrapper layers, frozen, for pseudo rollouts.

    Supported layers: ``VecTransposeImage``, ``VecFrameStack`` (each rollout keeps its own stack,
    started from the real stack at the branch point), ``VecNormalize`` (observations normalised
    with the current statistics, which are not updated), and ``VecMonitor``, ``VecVideoRecorder`` and
    ``VecCheckNan``, which leave observations unchanged (skipped). Any other ``VecEnvWrapper`` is refused,
    since its effect on pseudo observations is unknown.

    :param venv: the training environment
    :raises TypeError: for an unsupported ``VecEnvWrapper``
    """

    def __init__(self, venv: VecEnv) -> None:
        layers: list[VecEnvWrapper] = []
        while isinstance(venv, VecEnvWrapper):
            if not isinstance(venv, (VecTransposeImage, VecFrameStack, VecNormalize, *_PASS_THROUGH_WRAPPERS)):
                raise TypeError(
                    f"ARSM pseudo rollouts cannot mirror the VecEnv wrapper {type(venv).__name__}; supported wrappers: "
                    "VecNormalize, VecFrameStack, VecTransposeImage, and VecMonitor, VecVideoRecorder, VecCheckNan."
                )
            layers.append(venv)
            venv = venv.venv
        #: innermost first, the order observations go through them (frozen stand-ins in a :meth:`portable` copy)
        self.layers: list[Any] = layers[::-1]

    @property
    def transforms(self) -> bool:
        """Whether any layer changes observations (``False``: pseudo observations are the envs' own)."""
        return any(isinstance(layer, VecTransposeImage | VecFrameStack | VecNormalize) for layer in self.layers)

    def portable(self) -> ObsPipeline:
        """
        A picklable copy for rollout workers in other processes, with frozen stand-ins of the transforming layers:
        ``VecTransposeImage`` (stateless), ``VecFrameStack`` (its stack layout; each rollout's stack comes with its
        branch point) and ``VecNormalize`` (its settings; its statistics, which change at every update, are sent
        with each update's rollouts: :meth:`statistics`, :meth:`set_statistics`).
        """
        stand_ins: list[Any] = []
        for layer in self.layers:
            if isinstance(layer, VecTransposeImage):
                stand_ins.append(_Transpose(layer.skip, getattr(layer, "image_space_keys", [])))
            elif isinstance(layer, VecFrameStack):
                stand_ins.append(_FrameStack(copy.deepcopy(layer.stacked_obs)))
            elif isinstance(layer, VecNormalize):
                settings = (layer.norm_obs, layer.norm_obs_keys, layer.clip_obs, layer.epsilon)
                stand_ins.append(_Normalize(*settings, copy.deepcopy(layer.obs_rms)))
        portable = copy.copy(self)
        portable.layers = stand_ins
        return portable

    def statistics(self) -> list[Any]:
        """:return: copies of the current observation statistics of the ``VecNormalize`` layers, innermost first"""
        return [copy.deepcopy(layer.obs_rms) for layer in self.layers if isinstance(layer, VecNormalize | _Normalize)]

    def set_statistics(self, statistics: list[Any]) -> None:
        """Put :meth:`statistics` of the training env into the ``VecNormalize`` stand-ins of a :meth:`portable` copy."""
        normalizers = [layer for layer in self.layers if isinstance(layer, _Normalize)]
        for layer, obs_rms in zip(normalizers, statistics, strict=True):
            layer.obs_rms = obs_rms

    def capture(self, index: int) -> list[Any]:
        """
        :param index: sub-env index
        :return: the per-layer state of sub-env ``index`` now (its frame stacks), for a rollout branching here
        """
        return [_stack_slice(layer.stacked_obs, index) for layer in self.layers if isinstance(layer, VecFrameStack)]

    def start(self, states: Sequence[list[Any]]) -> list[StackedObservations]:
        """
        :param states: one :meth:`capture` result per rollout
        :return: batched frame stacks, one per ``VecFrameStack`` layer
        """
        stacks = []
        frame_stack_layers = [layer for layer in self.layers if isinstance(layer, VecFrameStack | _FrameStack)]
        for k, layer in enumerate(frame_stack_layers):
            stacks.append(_stack_batch(layer.stacked_obs, [state[k] for state in states]))
        return stacks

    def transform(self, raw_obs: Obs, stacks: list[StackedObservations]) -> Obs:
        """
        :param raw_obs: batched observations as the scratch envs return them (one row per rollout in ``stacks``)
        :param stacks: frame stacks from :meth:`start`, updated in place
        :return: the observations as the policy sees them in the real trajectory
        """
        obs = raw_obs
        stack_iter = iter(stacks)
        n = len(next(iter(raw_obs.values())) if isinstance(raw_obs, dict) else raw_obs)
        for layer in self.layers:
            if isinstance(layer, VecTransposeImage | _Transpose):
                obs = VecTransposeImage.transpose_observations(layer, obs)  # type: ignore[arg-type]
            elif isinstance(layer, VecFrameStack | _FrameStack):
                obs, _ = next(stack_iter).update(obs, np.zeros(n, dtype=bool), [{} for _ in range(n)])
                obs = copy.deepcopy(obs)
            elif isinstance(layer, VecNormalize | _Normalize):
                obs = layer.normalize_obs(obs)  # type: ignore[misc]
        return obs


@dataclass
class _Transpose:
    """``VecTransposeImage``'s settings, for :meth:`ObsPipeline.portable` (its transform is called on this)."""

    skip: bool
    image_space_keys: list[str]
    transpose_image = staticmethod(VecTransposeImage.transpose_image)


@dataclass
class _Normalize:
    """``VecNormalize``'s settings and statistics, for :meth:`ObsPipeline.portable` (its own methods run on this)."""

    norm_obs: bool
    norm_obs_keys: list[str] | None
    clip_obs: float
    epsilon: float
    obs_rms: Any
    # VecNormalize's own methods, run on these attributes
    normalize_obs = VecNormalize.normalize_obs
    _normalize_obs = VecNormalize._normalize_obs


@dataclass
class _FrameStack:
    """``VecFrameStack``'s stack layout, for :meth:`ObsPipeline.portable`."""

    stacked_obs: StackedObservations


def _stack_slice(stacked: StackedObservations, index: int) -> Any:
    if hasattr(stacked, "sub_stacked_observations"):
        return {key: sub.stacked_obs[index].copy() for key, sub in stacked.sub_stacked_observations.items()}
    return stacked.stacked_obs[index].copy()


def _stack_batch(template: StackedObservations, slices: list[Any]) -> StackedObservations:
    batch = copy.copy(template)
    if hasattr(template, "sub_stacked_observations"):
        batch.sub_stacked_observations = {
            key: _stack_batch(sub, [s[key] for s in slices]) for key, sub in template.sub_stacked_observations.items()
        }
    else:
        batch.stacked_obs = np.stack(slices)
    return batch
