"""The ``mujoco`` family (Gymnasium's MuJoCo envs, subclasses of ``MujocoEnv``): the simulation data, copied whole.

MuJoCo's integration state (``mj_getState(..., mjSTATE_INTEGRATION)``) is enough to simulate on, but not to restore a
Gymnasium env exactly: ``Ant`` and ``Humanoid`` read quantities derived from it (body positions, contact forces)
before they simulate, which ``mj_setState`` leaves stale (Ant-v5's first reward off by 11.6), and recomputing them
with ``mj_forward`` changes the constraint solver's warm start (off by 4e-5). ``mj_copyData`` copies everything, and
every step after a restore is the original's bit for bit (``tests/test_discretize.py`` checks Hopper, Walker2d,
HalfCheetah, Ant and Humanoid). A snapshot allocates one ``MjData`` (about 0.3 ms for Humanoid).
"""

from __future__ import annotations

import copy
from typing import Any

from arsm_rl.cloning.access import StateAccess
from arsm_rl.cloning.families import Family

__all__ = ["MUJOCO", "MUJOCO_USER", "is_mujoco_builtin", "is_mujoco_env"]


class MujocoData(StateAccess):
    """The env's ``MjData``, copied whole (``mj_copyData``) both ways."""

    def get(self, obj: Any) -> Any:
        return copy.copy(obj.data)  # MjData's copy is mj_copyData into a new MjData

    def set(self, obj: Any, state: Any) -> None:
        import mujoco  # only envs of this family get here, and they imported it

        mujoco.mj_copyData(obj.data, obj.model, state)


def is_mujoco_env(env: Any) -> bool:
    """Whether the env is a Gymnasium ``MujocoEnv`` (matched by its class's bases, without importing mujoco)."""
    return any(cls.__name__ == "MujocoEnv" and cls.__module__.startswith("gymnasium.envs.mujoco") for cls in type(env).__mro__)


def is_mujoco_builtin(env: Any) -> bool:
    """Whether the env is one of Gymnasium's own MuJoCo envs (not a user's subclass, which may add state)."""
    return is_mujoco_env(env) and type(env).__module__.startswith("gymnasium.envs.mujoco")


#: Gymnasium's MuJoCo envs (tested exact).
MUJOCO = Family("mujoco", MujocoData(), verified=True)
#: A user's ``MujocoEnv`` subclass: the same copy, checked before training (it may hold state of its own).
MUJOCO_USER = Family("mujoco", MujocoData())
