"""Kept for old imports: the names this module used to define, re-exported from their homes.

- :mod:`arsm_rl.estimators`: :class:`Estimator`, :data:`ESTIMATORS`, :func:`register_estimator`, :class:`Draws`,
  :class:`Selection`, :class:`StepBatch` and the registered estimator classes;
- :mod:`arsm_rl.actions`: :class:`JointActions` (the action coding) and :func:`distinct_codes`;
- :mod:`arsm_rl.rollouts.noise`: :class:`RolloutNoise`.

New code imports them from there.
"""

from arsm_rl.actions import JointActions, distinct_codes
from arsm_rl.estimators import (
    ESTIMATORS,
    AllActionEstimator,
    AREstimator,
    ARSEstimator,
    ARSMEstimator,
    Draws,
    Estimator,
    ReinforceEstimator,
    RLOOEstimator,
    Selection,
    StepBatch,
    register_estimator,
)
from arsm_rl.rollouts.noise import RolloutNoise

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
