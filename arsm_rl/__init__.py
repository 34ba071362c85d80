"""arsm-rl: the ARSM policy gradient (Yin, Yue & Zhou, ICML 2019) on Stable-Baselines3.

The public names are imported on first use (PEP 562), so that importing a light submodule (``arsm_rl.cloning``,
the :class:`ForkVecEnv` worker) does not import torch: ``from arsm_rl import ARSM`` works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arsm_rl.lazy import lazy_attributes

if TYPE_CHECKING:
    from arsm_rl.arsm import ARSM
    from arsm_rl.cloning import check_cloneable, clone_state, make_cloneable, restore_state, scratch_copy
    from arsm_rl.estimators import ESTIMATORS, Estimator, register_estimator
    from arsm_rl.forkvec.vec_env import ForkVecEnv
    from arsm_rl.policies import ARSMPolicy, CnnPolicy, MlpPolicy, MultiInputPolicy
    from arsm_rl.updates import RolloutValues, UpdateData, UpdatePlan, UpdateReport

__version__ = "0.1.0"

#: public name -> the module that defines it
_HOMES = {
    "ARSM": "arsm_rl.arsm",
    "ESTIMATORS": "arsm_rl.estimators",
    "ARSMPolicy": "arsm_rl.policies",
    "CnnPolicy": "arsm_rl.policies",
    "Estimator": "arsm_rl.estimators",
    "ForkVecEnv": "arsm_rl.forkvec.vec_env",
    "MlpPolicy": "arsm_rl.policies",
    "MultiInputPolicy": "arsm_rl.policies",
    "RolloutValues": "arsm_rl.updates",
    "UpdateData": "arsm_rl.updates",
    "UpdatePlan": "arsm_rl.updates",
    "UpdateReport": "arsm_rl.updates",
    "check_cloneable": "arsm_rl.cloning",
    "clone_state": "arsm_rl.cloning",
    "make_cloneable": "arsm_rl.cloning",
    "register_estimator": "arsm_rl.estimators",
    "restore_state": "arsm_rl.cloning",
    "scratch_copy": "arsm_rl.cloning",
}

__all__ = [
    "ARSM",
    "ESTIMATORS",
    "ARSMPolicy",
    "CnnPolicy",
    "Estimator",
    "ForkVecEnv",
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


#: subpackages and modules, reachable as attributes as when this package imported them all
_SUBMODULES = (
    "actions", "arsm", "cloning", "coding", "estimators", "forkvec", "lazy", "policies", "rollouts", "strategies", "updates",
)  # fmt: skip


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _HOMES, _SUBMODULES)
