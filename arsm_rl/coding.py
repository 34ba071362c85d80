"""The action coding's numpy part: joint (Multi)Discrete actions as integer codes, flat-Dirichlet noise and the race.

A joint action is coded as one integer (mixed radix over ``nvec``); every dimension races over ``C = max(nvec)``
coordinates, smaller dimensions padded with impossible categories (logit ``-inf``), and action masks put ``-inf``
at the forbidden actions, so one code path serves ``Discrete``, ``MultiDiscrete``, ``MultiBinary`` and masks.

This module imports neither torch nor SB3: pseudo rollouts race with it, also inside a ``ForkVecEnv`` copy.
:class:`arsm_rl.actions.JointActions` adds the torch part (the real steps' race and the swaps).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ActionCoding"]

_TINY = np.finfo(np.float32).tiny  # floor of the noise, so ln(noise) stays finite


class ActionCoding:
    """
    Joint (Multi)Discrete actions: integer codes, flat-Dirichlet noise and the exponential race per dimension, in numpy.

    :param nvec: number of actions of each dimension, shape ``(K,)`` (``[n]`` for ``Discrete(n)``)
    :param discrete: the action space is ``Discrete`` (env actions are scalars), not ``MultiDiscrete``
    """

    def __init__(self, nvec: np.ndarray, discrete: bool) -> None:
        self.nvec = nvec
        self.discrete = discrete
        # at least two coordinates per race: a one-action dimension races against an impossible category
        self.n_categories = max(2, int(nvec.max()))
        self.n_joint = int(np.prod(nvec))
        #: valid_categories[k, c]: category c exists in dimension k
        self.valid_categories = np.arange(self.n_categories)[None, :] < nvec[:, None]
        self._unpadded = bool(self.valid_categories.all())  # every dimension has C actions: padding is a reshape
        self.strides = np.concatenate([[1], np.cumprod(nvec[:-1])]).astype(np.int64)
        self._starts = np.concatenate([[0], np.cumsum(nvec[:-1])]).astype(np.int64)  # each dimension's first logit

    def __getstate__(self) -> dict[str, Any]:
        # rebuilt from nvec: a tensor sent through a multiprocessing pipe is shared by a file descriptor that the
        # receiver fetches from the sender, a round trip per message (see arsm_rl.rollouts.policy.TorchLogits)
        return {"nvec": self.nvec, "discrete": self.discrete}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["nvec"], state["discrete"])  # type: ignore[misc]

    def noise(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """Flat-Dirichlet draws, ``(batch, K, C)`` float32: normalised Exp(1) variables."""
        expo = rng.standard_exponential((batch, len(self.nvec), self.n_categories))
        noise = (expo / expo.sum(-1, keepdims=True)).astype(np.float32)
        return np.maximum(noise, _TINY)

    def check_masks(self, masks: np.ndarray, batch: int, source: str) -> np.ndarray:
        """
        Action masks as sb3-contrib defines them: one bool per action, ``True`` where valid (``MultiDiscrete``: the
        dimensions' masks concatenated).

        :param masks: the masks of ``batch`` states, as the env returned them
        :param batch: number of states
        :param source: what returned them, for the error messages
        :return: ``(batch, sum(nvec))`` bool
        :raises ValueError: for a wrong size, or a state where a dimension has no valid action
        """
        width = int(self.nvec.sum())
        masks = np.asarray(masks)
        if masks.size != batch * width:
            layout = "one bool per action" + ("" if self.discrete else ", the dimensions' masks concatenated")
            raise ValueError(f"{source} gave an action mask of shape {masks.shape}: expected {width} entries per state "
                             f"({layout})")  # fmt: skip
        masks = masks.reshape(batch, width).astype(bool)
        allowed = np.logical_or.reduceat(masks, self._starts, axis=1)
        if not allowed.all():
            row, dim = (int(i) for i in np.argwhere(~allowed)[0])
            where = "" if self.discrete else f" in action dimension {dim}"
            raise ValueError(f"{source} gave an action mask that allows no action{where} (state {row} of the batch): "
                             "every state needs at least one valid action")  # fmt: skip
        return masks

    def race_numpy(self, logits: np.ndarray, noise: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """
        :meth:`race` in numpy, for pseudo rollouts (which run without torch where they can): the winners of
        ``argmin_i (ln pi_i - logits_i)`` per dimension (:func:`~arsm_rl.estimators.math.race_actions`), ties to the
        lowest index. numpy's ``log`` may round the last bit otherwise than torch's, so a near-tie can go the other
        way than :meth:`race` would take it: a rollout races only with this form, the real steps only with :meth:`race`.

        :param logits: ``(B, sum(nvec))`` float32 logits
        :param noise: ``(B, K, C)`` float32 noise
        :param masks: ``(B, sum(nvec))`` bool, ``False`` where an action is forbidden (from :meth:`check_masks`), or
            ``None``
        :return: ``(B, K)`` int64 winners
        """
        if masks is not None:
            logits = np.where(masks, logits, np.float32(-np.inf))
        if self._unpadded:
            padded = logits.reshape(len(logits), *self.valid_categories.shape)
        else:
            padded = np.full((len(logits), *self.valid_categories.shape), -np.inf, dtype=logits.dtype)
            padded[:, self.valid_categories] = logits
        return np.argmin(np.log(noise) - padded, axis=-1)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Joint actions ``(..., K)`` -> integer codes ``(...)`` (mixed radix)."""
        return (actions * self.strides).sum(-1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Integer codes ``(...)`` -> joint actions ``(..., K)``."""
        return (codes[..., None] // self.strides) % self.nvec

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """``(..., K)`` race winners as the env takes them (scalars for ``Discrete``)."""
        return actions[..., 0] if self.discrete else actions
