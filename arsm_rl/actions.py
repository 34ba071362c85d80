"""The action coding with torch: joint (Multi)Discrete actions raced and swapped on torch logits.

The coding itself (integer codes, flat-Dirichlet noise, masks, the numpy race of pseudo rollouts) is
:class:`arsm_rl.coding.ActionCoding`; :class:`JointActions` adds the real steps' race and the estimators' swaps, the
pure functions of :mod:`arsm_rl.estimators.math`. This module holds no env.
"""

from __future__ import annotations

import numpy as np
import torch as th

from arsm_rl.coding import ActionCoding
from arsm_rl.estimators.math import race_actions, swap_pseudo_actions

__all__ = ["JointActions", "distinct_codes"]

class JointActions(ActionCoding):
    """
    Joint (Multi)Discrete actions (:class:`~arsm_rl.coding.ActionCoding`), with the torch part: the real steps' race
    and the swaps of the estimators.

    :param nvec: number of actions of each dimension, shape ``(K,)`` (``[n]`` for ``Discrete(n)``)
    :param discrete: the action space is ``Discrete`` (env actions are scalars), not ``MultiDiscrete``
    """

    def __init__(self, nvec: np.ndarray, discrete: bool) -> None:
        super().__init__(nvec, discrete)
        #: valid[k, c]: category c exists in dimension k (``valid_categories`` as a tensor)
        self.valid = th.as_tensor(self.valid_categories)

    def masked(self, logits: th.Tensor, masks: np.ndarray | None) -> th.Tensor:
        """
        ``(B, sum(nvec))`` logits with ``-inf`` at the actions that ``masks`` (``(B, sum(nvec))`` bool, from
        :meth:`check_masks`) forbids, unchanged when ``masks`` is ``None``. A forbidden action then never wins the
        race, nor any swapped race (its race value ``ln varpi_j - phi_j`` is ``+inf`` whatever noise it gets), nor a
        fresh draw: every real, pseudo and sampled action is valid.
        """
        if masks is None:
            return logits
        return logits.masked_fill(~th.as_tensor(masks, device=logits.device), -th.inf)

    def apply_masks(self, logits: th.Tensor, masks: np.ndarray | None, source: str) -> th.Tensor:
        """:meth:`masked` with masks as an env returns them, checked first (:meth:`check_masks`, ``source`` names them)."""
        if masks is None:
            return logits
        return self.masked(logits, self.check_masks(masks, len(logits), source))

    def padded(self, logits: th.Tensor) -> th.Tensor:
        """``(B, sum(nvec))`` logits -> ``(B, K, C)``, impossible padding categories at ``-inf``."""
        if self._unpadded:
            return logits.reshape(len(logits), *self.valid.shape)
        out = th.full((len(logits), *self.valid.shape), -th.inf, dtype=logits.dtype, device=logits.device)
        out[:, self.valid] = logits
        return out

    def race(self, logits: th.Tensor, noise: np.ndarray) -> np.ndarray:
        """Race winners per dimension, ``(B, K)`` int64, from ``(B, sum(nvec))`` CPU logits and ``(B, K, C)`` noise."""
        k, c = self.valid.shape
        return race_actions(self.padded(logits).reshape(-1, c), th.as_tensor(noise).reshape(-1, c)).reshape(-1, k).numpy()

    def swap_codes(self, logits: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Joint pseudo actions of every swap ``(m, j)``, as codes ``(B, C, C)``; the diagonal is the true action."""
        k, c = self.valid.shape
        padded = self.padded(th.as_tensor(logits)).reshape(-1, c)
        swaps = swap_pseudo_actions(padded, th.as_tensor(noise).reshape(-1, c)).reshape(-1, k, c, c).numpy()
        return np.einsum("bkmj,k->bmj", swaps, self.strides)


def distinct_codes(codes: np.ndarray, n_joint: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Distinct joint action codes of each row: the joint-action form of
    :func:`~arsm_rl.estimators.distinct_pseudo_actions` and :func:`~arsm_rl.estimators.gather_pseudo_values`,
    in index form so that its size does not grow with the number of joint actions.

    :param codes: ``(B, ...)`` codes in ``[0, n_joint)``
    :param n_joint: number of joint actions
    :return: ``(rows, codes)`` of the distinct (row, code) pairs, sorted by row then code, and the inverse index
        mapping each entry of ``codes`` (flattened row-major) to its pair
    """
    flat = codes.reshape(len(codes), int(np.prod(codes.shape[1:])))  # explicit width: B may be 0
    keys, inverse = np.unique(np.arange(len(codes))[:, None] * n_joint + flat, return_inverse=True)
    rows, distinct = np.divmod(keys, n_joint)
    return rows, distinct, inverse
