"""The :class:`Snapshot` record, the errors of :mod:`arsm_rl.cloning` and the small copy helper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

AnyEnv = gym.Env[Any, Any]


class NotCloneableError(TypeError, ValueError):
    """The env (or one of its wrappers) has no exact snapshot method, or a snapshot cannot be used here.

    It subclasses both :class:`TypeError` and :class:`ValueError`.
    """


class CloningError(AssertionError):
    """Raised by :func:`check_cloneable` when a restored env does not reproduce the reference trajectory."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Opaque, immutable, picklable state of an env and its wrappers (see :mod:`arsm_rl.cloning`).

    :ivar restore_steps: number of env steps one restore of this snapshot replays
        (0 for state-copy families, the action-prefix length for the replay family).
    """

    env_type: str
    family: str
    fingerprint: Any
    core: Any
    rng: Any
    space_rngs: tuple[Any, ...]
    layer_names: tuple[str, ...]
    layer_states: tuple[Any, ...]
    record: Any
    restore_steps: int

    def __repr__(self) -> str:
        return f"Snapshot(env_type={self.env_type!r}, family={self.family!r}, restore_steps={self.restore_steps})"


def copy_value(value: Any) -> Any:
    """Copy of a small state value: arrays and lists are copied, immutables are shared.

    :param value: an attribute value.
    :return: a copy that later in-place changes of ``value`` do not affect.
    """
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return list(value)
    return value
