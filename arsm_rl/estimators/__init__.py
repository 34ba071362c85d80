"""Gradient estimators: their math, what an estimator is, and the registered ones.

- :mod:`~arsm_rl.estimators.math`: the pure, shape-checked tensor functions (race, swaps, each estimator's
  formula, the exact gradient), no randomness and no env;
- :mod:`~arsm_rl.estimators.base`: the :class:`Estimator` base class, the data it reads (:class:`Draws`,
  :class:`StepBatch`) and returns (:class:`Selection`), and the registry :data:`ESTIMATORS` with
  :func:`register_estimator`;
- :mod:`~arsm_rl.estimators.builtin`: the registered estimators (``arsm``, its ablations and its peers).

Every name is importable from this package, as it was from the single module it replaces.
"""

from arsm_rl.estimators.base import ESTIMATORS, Draws, Estimator, Selection, StepBatch, register_estimator
from arsm_rl.estimators.builtin import (
    AllActionEstimator,
    AREstimator,
    ARSEstimator,
    ARSMEstimator,
    ReinforceEstimator,
    RLOOEstimator,
)
from arsm_rl.estimators.math import (
    all_action_gradient,
    ar_gradient,
    ars_gradient,
    arsm_gradient,
    distinct_pseudo_actions,
    exact_gradient,
    gather_pseudo_values,
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
    "RLOOEstimator",
    "ReinforceEstimator",
    "Selection",
    "StepBatch",
    "all_action_gradient",
    "ar_gradient",
    "ars_gradient",
    "arsm_gradient",
    "distinct_pseudo_actions",
    "exact_gradient",
    "gather_pseudo_values",
    "race_actions",
    "register_estimator",
    "reinforce_gradient",
    "rloo_gradient",
    "swap_pseudo_actions",
]
