"""Gradient estimators as strategies: what each needs rolled out at a step, and how it turns values into a gradient.

ARSM's update is estimator-agnostic: real steps are collected, every used step's true action is valued by its
return, the estimator chooses the other actions it needs valued at that step (each distinct one is rolled out
once on a snapshot of the step's state), and the estimator merges the values into a per-step estimate of
``d E[Q(s, a)] / d logits``. This module holds the estimator side, one class per estimator, registered in
:data:`ESTIMATORS`; the math itself is the pure functions of :mod:`arsm_rl.estimators`.

Adding an estimator is one subclass of :class:`Estimator` decorated with :func:`register_estimator`: it is then
accepted by ``ARSM(estimator=...)``, listed by ``train.py`` and documented by its ``summary``.

Actions are (Multi)Discrete. A joint action is coded as one integer (mixed radix over ``nvec``, see
:class:`JointActions`); every dimension races over ``C = max(nvec)`` coordinates, smaller dimensions padded with
impossible categories (logit ``-inf``). An estimate for a joint action gives every dimension the joint value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch as th

from arsm_rl.estimators import (
    all_action_gradient,
    ar_gradient,
    ars_gradient,
    arsm_gradient,
    race_actions,
    reinforce_gradient,
    rloo_gradient,
    swap_pseudo_actions,
)

__all__ = [
    "ESTIMATORS",
    "AREstimator",
    "ARSEstimator",
    "ARSMEstimator",
    "AllActionEstimator",
    "Draws",
    "Estimator",
    "JointActions",
    "RLOOEstimator",
    "ReinforceEstimator",
    "RolloutNoise",
    "Selection",
    "StepBatch",
    "distinct_codes",
    "register_estimator",
]

_TINY = np.finfo(np.float32).tiny  # floor of the noise, so ln(noise) stays finite


class JointActions:
    """
    Joint (Multi)Discrete actions: integer codes, flat-Dirichlet noise and the exponential race per dimension.

    :param nvec: number of actions of each dimension, shape ``(K,)`` (``[n]`` for ``Discrete(n)``)
    :param discrete: the action space is ``Discrete`` (env actions are scalars), not ``MultiDiscrete``
    """

    def __init__(self, nvec: np.ndarray, discrete: bool) -> None:
        self.nvec = nvec
        self.discrete = discrete
        # at least two coordinates per race: a one-action dimension races against an impossible category
        self.n_categories = max(2, int(nvec.max()))
        self.n_joint = int(np.prod(nvec))
        #: valid[k, c]: category c exists in dimension k
        self.valid = th.as_tensor(np.arange(self.n_categories)[None, :] < nvec[:, None])
        self._unpadded = bool(self.valid.all())  # every dimension has C actions: padding is a reshape
        self.strides = np.concatenate([[1], np.cumprod(nvec[:-1])]).astype(np.int64)
        self._starts = np.concatenate([[0], np.cumsum(nvec[:-1])]).astype(np.int64)  # each dimension's first logit

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

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Joint actions ``(..., K)`` -> integer codes ``(...)`` (mixed radix)."""
        return (actions * self.strides).sum(-1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Integer codes ``(...)`` -> joint actions ``(..., K)``."""
        return (codes[..., None] // self.strides) % self.nvec

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """``(..., K)`` race winners as the env takes them (scalars for ``Discrete``)."""
        return actions[..., 0] if self.discrete else actions

    def swap_codes(self, logits: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Joint pseudo actions of every swap ``(m, j)``, as codes ``(B, C, C)``; the diagonal is the true action."""
        k, c = self.valid.shape
        padded = self.padded(th.as_tensor(logits)).reshape(-1, c)
        swaps = swap_pseudo_actions(padded, th.as_tensor(noise).reshape(-1, c)).reshape(-1, k, c, c).numpy()
        return np.einsum("bkmj,k->bmj", swaps, self.strides)


class RolloutNoise:
    """
    Each rollout's own noise stream: rollout ``r`` of an update draws its flat-Dirichlet noise from a generator
    seeded with ``SeedSequence([entropy, r])``, in blocks of :attr:`BLOCK` steps, so that its noise at a depth
    does not depend on which other rollouts run with it, in which order, process or batch.

    :param actions: the action coding
    :param entropy: the update's seed (one draw from the pseudo-rollout stream)
    :param n_rollouts: number of rollouts of the update
    """

    #: steps of noise drawn at a time per rollout
    BLOCK = 32

    def __init__(self, actions: JointActions, entropy: int, n_rollouts: int) -> None:
        self.actions = actions
        self.entropy = entropy
        k, c = actions.valid.shape
        self._generators: dict[int, np.random.Generator] = {}
        self._blocks = np.empty((n_rollouts, self.BLOCK, k, c), dtype=np.float32)
        self._drawn = np.full(n_rollouts, -1, dtype=np.int64)  # index of the last block drawn, per rollout

    def __setstate__(self, state: dict[str, object]) -> None:
        # writable copies: transports such as Ray's object store hand arrays over read-only
        self.__dict__.update(state)
        self._blocks = np.array(self._blocks)
        self._drawn = np.array(self._drawn)

    def draw(self, ids: np.ndarray, depth: int) -> np.ndarray:
        """
        :param ids: rollout indices
        :param depth: the step of those rollouts (0 for their first action)
        :return: ``(len(ids), K, C)`` float32 noise of each rollout at that step
        """
        block = depth // self.BLOCK
        for r in ids[self._drawn[ids] < block].tolist():
            generator = self._generators.get(r)
            if generator is None:
                generator = self._generators[r] = np.random.default_rng(np.random.SeedSequence([self.entropy, r]))
            while self._drawn[r] < block:  # blocks in order, whatever depths were asked for
                self._blocks[r] = self.actions.noise(generator, self.BLOCK)
                self._drawn[r] += 1
        return self._blocks[ids, depth % self.BLOCK]


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


@dataclass
class Selection:
    """
    The actions an estimator values at each step of an update.

    :param codes: ``(B, ...)`` joint action codes per step; the true action's value is the real return, every other
        distinct code is rolled out once
    :param extra: per-step arrays ``(B, ...)`` the estimator needs again for its gradient (e.g. ARS's references)
    """

    codes: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def rows(self, index: np.ndarray) -> Selection:
        """The selection of the steps ``index`` only."""
        return Selection(self.codes[index], {key: value[index] for key, value in self.extra.items()})


@dataclass
class Draws:
    """
    An update's steps as they were drawn, as an estimator's :meth:`Estimator.select` reads them (``B`` steps).

    :param actions: the action coding
    :param logits: ``(B, sum(nvec))`` float32 logits the actions were drawn with (``-inf`` at masked actions)
    :param noise: ``(B, K, C)`` float32 Dirichlet noise that drew them
    :param true_codes: ``(B,)`` codes of the actions taken
    """

    actions: JointActions
    logits: np.ndarray
    noise: np.ndarray
    true_codes: np.ndarray


@dataclass
class StepBatch:
    """
    The used steps of an update, as an estimator's :meth:`Estimator.gradient` reads them (``U`` steps).

    :param actions: the action coding
    :param logits: ``(U * K, C)`` float64 padded logits the actions were drawn with, one row per step and dimension
        (``-inf`` at padding and masked categories)
    :param noise: ``(U * K, C)`` float64 Dirichlet noise that drew them
    :param true_codes: ``(U,)`` codes of the actions taken
    :param q_true: ``(U,)`` values of the actions taken
    :param selection: what :meth:`Estimator.select` chose at these steps, ``None`` for rollout-free estimators
    :param values: values of ``selection.codes``, same shape, ``None`` for rollout-free estimators
    """

    actions: JointActions
    logits: th.Tensor
    noise: th.Tensor
    true_codes: np.ndarray
    q_true: np.ndarray
    selection: Selection | None
    values: np.ndarray | None

    def per_dimension(self, x: np.ndarray) -> th.Tensor:
        """Per-step ``(U, ...)`` values repeated for each action dimension: ``(U * K, ...)``."""
        return th.as_tensor(x).repeat_interleave(len(self.actions.nvec), dim=0)

    def selected(self) -> tuple[Selection, np.ndarray]:
        """The selection and its values (for estimators that select)."""
        if self.selection is None or self.values is None:
            raise RuntimeError("internal error: an estimator that selects actions got no selection")
        return self.selection, self.values


class Estimator(ABC):
    """
    One gradient estimator of ``d E_{a ~ pi(.|s)}[Q(s, a)] / d logits`` at the visited steps.

    Subclasses set :attr:`name` and :attr:`summary`, implement :meth:`gradient` and, unless they use the real
    returns only, :meth:`select`. They hold no state: randomness comes from the generator passed in.
    """

    #: the ``ARSM(estimator=...)`` value
    name: ClassVar[str]
    #: one line for the documentation
    summary: ClassVar[str]
    #: values other actions on snapshots of the visited states (``False``: the real returns only)
    rolls_out: ClassVar[bool] = True
    #: offered as an ``--algo`` of its own by ``train.py`` (the self-critic peers of ARSM)
    algo: ClassVar[bool] = False

    def check(self, actions: JointActions) -> None:
        """
        :param actions: the action coding of the training env
        :raises ValueError: if the estimator cannot handle this action space
        """
        return None

    def may_roll_out(self, draws: Draws) -> np.ndarray:
        """
        The steps where :meth:`select` may ask for a rollout, known when the actions are drawn (a superset, with no
        random draws): where fork snapshots are taken. Default: every step of an estimator that rolls out.

        :param draws: steps as they were drawn
        :return: ``(B,)`` bool
        """
        return np.full(len(draws.true_codes), self.rolls_out)

    def select(self, draws: Draws, rng: np.random.Generator) -> Selection | None:
        """
        The actions to value at each step, from the real draws (and ``rng`` for fresh ones).

        :param draws: the update's steps as they were drawn
        :param rng: the pseudo-rollout random stream
        :return: the selection, or ``None`` when only the true actions' values are needed
        """
        return None

    @abstractmethod
    def gradient(self, batch: StepBatch) -> th.Tensor:
        """
        :param batch: the used steps with their values
        :return: ``(U * K, C)`` per-step, per-dimension estimates (padding categories are dropped by the caller)
        """


#: Registered estimators, by name, in registration order.
ESTIMATORS: dict[str, type[Estimator]] = {}


def register_estimator(cls: type[Estimator]) -> type[Estimator]:
    """Class decorator: add an :class:`Estimator` to :data:`ESTIMATORS` under its ``name``."""
    ESTIMATORS[cls.name] = cls
    return cls


def _some_swap_differs(draws: Draws) -> np.ndarray:
    """``(B,)`` bool: some swap pseudo action differs from the true action (the steps ARSM and ARS may roll out)."""
    codes = draws.actions.swap_codes(draws.logits, draws.noise)
    return np.asarray((codes != draws.true_codes[:, None, None]).any(axis=(1, 2)))


@register_estimator
class ARSMEstimator(Estimator):
    """The paper's ARSM estimator: every swap pseudo action, merged over all references (sec. 4)."""

    name = "arsm"
    summary = "the distinct swap pseudo actions of every reference, merged (the paper's estimator; default)"

    def may_roll_out(self, draws: Draws) -> np.ndarray:
        return _some_swap_differs(draws)

    def select(self, draws: Draws, rng: np.random.Generator) -> Selection:
        return Selection(draws.actions.swap_codes(draws.logits, draws.noise))

    def gradient(self, batch: StepBatch) -> th.Tensor:
        _, values = batch.selected()
        return arsm_gradient(batch.noise, batch.per_dimension(values))


@register_estimator
class ARSEstimator(Estimator):
    """ARS: the swap pseudo actions of one reference category drawn uniformly per step."""

    name = "ars"
    summary = "the swap pseudo actions of one random reference category per step"

    def may_roll_out(self, draws: Draws) -> np.ndarray:
        return _some_swap_differs(draws)

    def select(self, draws: Draws, rng: np.random.Generator) -> Selection:
        n_rows = len(draws.true_codes)
        refs = rng.integers(draws.actions.n_categories, size=n_rows)
        column = draws.actions.swap_codes(draws.logits, draws.noise)[np.arange(n_rows), :, refs]  # (B, C): swaps (m, ref)
        return Selection(column, {"refs": refs})

    def gradient(self, batch: StepBatch) -> th.Tensor:
        selection, values = batch.selected()
        f = batch.per_dimension(np.repeat(values[:, :, None], values.shape[1], axis=2))  # f[m, j] = f(z^{m<->ref})
        return ars_gradient(batch.noise, f, batch.per_dimension(selection.extra["refs"]))


@register_estimator
class AREstimator(Estimator):
    """AR: REINFORCE on the race, Rao-Blackwellised over the noise; the real return only."""

    name = "ar"
    summary = "the real return only, REINFORCE on the race (no rollouts)"
    rolls_out = False

    def gradient(self, batch: StepBatch) -> th.Tensor:
        return ar_gradient(batch.noise, batch.per_dimension(batch.q_true))


@register_estimator
class ReinforceEstimator(Estimator):
    """REINFORCE without a baseline; the real return only."""

    name = "reinforce"
    summary = "the real return only, REINFORCE without a baseline (no rollouts)"
    rolls_out = False

    def gradient(self, batch: StepBatch) -> th.Tensor:
        taken = th.as_tensor(batch.actions.decode(batch.true_codes)).reshape(-1)
        return reinforce_gradient(batch.logits, taken, batch.per_dimension(batch.q_true))


@register_estimator
class RLOOEstimator(Estimator):
    """
    REINFORCE with a leave-one-out baseline over ``S = max(nvec)`` i.i.d. actions per step: the real one and
    ``S - 1`` fresh draws. Like ARSM, each distinct action is valued once (the estimate is linear in the values, so
    sharing a value between equal actions keeps it unbiased).
    """

    name = "rloo"
    summary = "leave-one-out REINFORCE over max(nvec) i.i.d. actions per step, the real one first"
    algo = True

    def select(self, draws: Draws, rng: np.random.Generator) -> Selection:
        actions, n_rows = draws.actions, len(draws.true_codes)
        extra = actions.n_categories - 1
        fresh = actions.race(th.as_tensor(np.repeat(draws.logits, extra, axis=0)), actions.noise(rng, n_rows * extra))
        return Selection(np.concatenate([draws.true_codes[:, None], actions.encode(fresh).reshape(n_rows, extra)], axis=1))

    def gradient(self, batch: StepBatch) -> th.Tensor:
        selection, values = batch.selected()
        samples = selection.codes  # (U, S) codes, the true action first
        taken = th.as_tensor(batch.actions.decode(samples)).permute(0, 2, 1).reshape(-1, samples.shape[1])
        return rloo_gradient(batch.logits, taken, batch.per_dimension(values))


@register_estimator
class AllActionEstimator(Estimator):
    """Every action valued at every step: the exact expectation over actions (``Discrete`` only)."""

    name = "all_action"
    summary = "every action rolled out at every step, the exact expectation over actions (Discrete only)"
    algo = True

    def check(self, actions: JointActions) -> None:
        if not actions.discrete:
            raise ValueError("estimator='all_action' needs a Discrete action space (MultiDiscrete has too many joint actions)")

    def select(self, draws: Draws, rng: np.random.Generator) -> Selection:
        n_rows, n_cat = len(draws.true_codes), draws.actions.n_categories
        # Impossible actions (masked, or Discrete(1)'s padding) have probability 0 and no gradient: value them with
        # the true action's value (already known) instead of rolling them out.
        possible = draws.actions.padded(th.as_tensor(draws.logits)).reshape(n_rows, n_cat).isfinite().numpy()
        return Selection(np.where(possible, np.arange(n_cat), draws.true_codes[:, None]))

    def gradient(self, batch: StepBatch) -> th.Tensor:
        _, values = batch.selected()
        return all_action_gradient(batch.logits, th.as_tensor(values))
