"""arsm-rl: the ARSM policy gradient (Yin, Yue & Zhou, ICML 2019) on Stable-Baselines3."""

from arsm_rl.arsm import ARSM
from arsm_rl.cloning import check_cloneable, clone_state, make_cloneable, restore_state, scratch_copy
from arsm_rl.policies import ARSMPolicy, CnnPolicy, MlpPolicy, MultiInputPolicy
from arsm_rl.strategies import ESTIMATORS, Estimator, register_estimator
from arsm_rl.updates import RolloutValues, UpdateData, UpdatePlan, UpdateReport

__version__ = "0.1.0"

__all__ = [
    "ARSM",
    "ESTIMATORS",
    "ARSMPolicy",
    "CnnPolicy",
    "Estimator",
    "MlpPolicy",
    "MultiInputPolicy",
    "RolloutValues",
    "UpdateData",
    "UpdatePlan",
    "UpdateReport",
    "check_cloneable",
    "clone_state",
    "make_cloneable",
    "register_estimator",
    "restore_state",
    "scratch_copy",
]
