"""What an estimator is: the :class:`Estimator` base class, the data it reads, and the registry :data:`ESTIMATORS`.

ARSM's update is estimator-agnostic: real steps are collected, every used step's true action is valued by its
return, the estimator chooses the other actions it needs valued at that step (:meth:`Estimator.select`: each
distinct one is rolled out once on a snapshot of the step's state), and the estimator merges the values into a
per-step estimate of ``d E[Q(s, a)] / d logits`` (:meth:`Estimator.gradient`).

Adding an estimator is one subclass of :class:`Estimator` decorated with :func:`register_estimator`: it is then
accepted by ``ARSM(estimator=...)``, listed by ``train.py`` and documented by its ``summary``.

Actions are (Multi)Discrete, coded as by :class:`~arsm_rl.actions.JointActions`: an estimate for a joint action
gives every dimension the joint value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch as th

if TYPE_CHECKING:  # for the annotations only: arsm_rl.actions imports this package's math, so not at run time
    from arsm_rl.actions import JointActions

__all__ = ["ESTIMATORS", "Draws", "Estimator", "Selection", "StepBatch", "register_estimator"]


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
    #: :meth:`select` draws nothing from its generator and selects each step's actions from that step's draws only, so
    #: a step's rollouts are known when it is taken and may start while the update is still being collected
    selects_by_step: ClassVar[bool] = False
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
