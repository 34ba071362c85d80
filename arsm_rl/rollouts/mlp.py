"""Blocks of policy rows, and the logits MLP of a policy as numpy arrays: the policy inside pseudo rollouts, without torch.

A pseudo rollout calls the policy once per step on a handful of rows. For the small MLPs of the presets, torch's
per-call overhead (module dispatch, tensor wrapping, its own ``tanh``) costs more than the arithmetic: the same
forward in numpy is 2-3x faster (benchmarks/results/throughput.md). This module imports neither torch nor SB3, so
that a process without them (a ``ForkVecEnv`` copy) can run it too.

Rows are computed one :data:`BLOCK` of rows at a time, every block by the same matrix product of ``BLOCK`` rows, so
that a row's logits depend only on its own observation and its position in its block, never on how many blocks are
stacked with it or what the other rows hold (see :func:`arsm_rl.rollouts.lockstep.block_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ACTIVATIONS", "BLOCK", "NumpyLogits", "pad_rows"]

#: Rows per matrix product; the rollouts' policy blocks (:data:`arsm_rl.rollouts.lockstep.POLICY_BLOCK`) are these.
BLOCK = 16

#: The hidden activations the numpy form computes, by name (torch's ``nn.Tanh`` and ``nn.ReLU``).
ACTIVATIONS = ("tanh", "relu")


@dataclass(frozen=True)
class NumpyLogits:
    """
    An MLP from (flattened, float32) observations to action logits: ``Linear`` layers with ``activation`` between
    them, as ``arsm_rl.policies.ARSMPolicy`` builds it with a flattening features extractor. Built from a policy by
    ``arsm_rl.rollouts.policy.numpy_logits``. Its logits equal torch's to float32 rounding (not bit for bit: another
    matrix product and ``tanh``); every pseudo rollout uses this form, in the trainer and in every worker, so
    training stays bit-identical however rollouts are shared out.

    :param weights: each layer's ``(in, out)`` float32 weights (torch's ``Linear.weight`` transposed)
    :param biases: each layer's ``(out,)`` float32 biases
    :param activation: one of :data:`ACTIVATIONS`, after every layer but the last
    :param one_hot: for a ``Discrete(n)`` observation space, ``n`` (observations are one-hot coded, as SB3's
        ``preprocess_obs`` does); ``None`` for a ``Box`` space (observations cast to float32)
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: str
    one_hot: int | None = None

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError("an MLP needs one bias per weight matrix and at least one layer")
        for w, b in zip(self.weights, self.biases, strict=True):
            if w.dtype != np.float32 or b.dtype != np.float32 or w.ndim != 2 or b.shape != (w.shape[1],):
                raise ValueError(f"layers must be float32 (in, out) weights and (out,) biases, got {w.shape}, {b.shape}")

    @property
    def n_inputs(self) -> int:
        return int(self.weights[0].shape[0])

    def features(self, obs: np.ndarray) -> np.ndarray:
        """:return: ``(B, n_inputs)`` float32 inputs of the MLP from a batch of observations"""
        if self.one_hot is not None:
            return np.eye(self.one_hot, dtype=np.float32)[np.asarray(obs, dtype=np.int64).reshape(len(obs))]
        return np.asarray(obs).reshape(len(obs), -1).astype(np.float32, copy=False)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """
        :param obs: ``(B, *obs_shape)`` observations, ``B`` a multiple of :data:`BLOCK`
        :return: ``(B, n_logits)`` float32 logits
        """
        x = self.features(obs)
        if len(x) % BLOCK or x.shape[1] != self.n_inputs:
            raise ValueError(f"expected a multiple of {BLOCK} rows of {self.n_inputs} inputs, got {x.shape}")
        x = x.reshape(-1, BLOCK, self.n_inputs)  # a stack of blocks: one matrix product per block
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = np.matmul(x, w)
            x += b
            if i < last:
                if self.activation == "tanh":
                    np.tanh(x, out=x)
                else:
                    np.maximum(x, 0, out=x)
        return x.reshape(-1, x.shape[-1])


def pad_rows(obs: Any) -> Any:
    """:return: ``obs`` with zero rows appended up to a multiple of :data:`BLOCK` rows (see ``block_rows``)"""

    def pad(x: np.ndarray) -> np.ndarray:
        missing = -len(x) % BLOCK
        return np.concatenate([x, np.zeros((missing, *x.shape[1:]), dtype=x.dtype)]) if missing else x

    return {key: pad(value) for key, value in obs.items()} if isinstance(obs, dict) else pad(obs)
