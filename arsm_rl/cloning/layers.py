"""Wrapper layers: what a snapshot keeps of each wrapper between the given env and ``env.unwrapped``.

Each wrapper class (exact type) has a :class:`LayerRule`: its :class:`LayerKind` and the
:class:`~arsm_rl.cloning.access.StateAccess` of its state.  Unknown wrappers get the generic rule
(a deepcopy of the wrapper's own attributes except the inner env and spaces);
:func:`register_wrapper_state` changes the rule of a class.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np

from arsm_rl.cloning.access import Callbacks, Fields, InstanceDict, StateAccess, Stateless
from arsm_rl.cloning.snapshot import AnyEnv


class LayerKind(enum.Enum):
    """How a wrapper layer takes part in snapshots."""

    #: its state (read with the rule's ``state``) is part of the snapshot
    STATE = "state"
    #: part of the snapshot's layer list, without state
    STATELESS = "stateless"
    #: only records statistics: left out of snapshots, never restored, dropped by ``scratch_copy``
    STATISTICS = "statistics"
    #: the :class:`~arsm_rl.cloning.CloneableWrapper` (records what the replay family needs)
    RECORDER = "recorder"


@dataclass(frozen=True)
class LayerRule:
    """The handling of one wrapper class.

    :ivar kind: how the layer takes part in snapshots.
    :ivar state: reads and writes its state (used for the ``STATE`` kind).
    :ivar verified: a built-in rule, tested bit-exact; layers with other rules (the generic one, users')
        are checked before ARSM trains (:func:`~arsm_rl.cloning.verify_snapshots`).
    """

    kind: LayerKind
    state: StateAccess
    verified: bool = False


class _FrameBuffer(StateAccess):
    """SB3 MaxAndSkipEnv: copy the frame buffer in place."""

    def get(self, obj: Any) -> Any:
        return obj._obs_buffer.copy()

    def set(self, obj: Any, state: Any) -> None:
        obj._obs_buffer[...] = state


class _FrameStack(StateAccess):
    """FrameStackObservation: the frame queue and the padding value."""

    def get(self, obj: Any) -> Any:
        return (tuple(obj.obs_queue), obj.padding_value)

    def set(self, obj: Any, state: Any) -> None:
        items, padding = state
        obj.obs_queue = deque(items, maxlen=obj.stack_size)
        obj.padding_value = padding


class _CheckerDone(StateAccess):
    """PassiveEnvChecker: its one-off checks are not dynamics; mark them done so a restored fresh
    copy (never reset or stepped itself) steps without running the reset-dependent checks."""

    def get(self, obj: Any) -> Any:
        return True

    def set(self, obj: Any, state: Any) -> None:
        obj.checked_reset = obj.checked_step = obj.checked_data_reuse = True
        obj._previous_data = None


#: Attributes of ``gymnasium.Wrapper`` that are not episode state.
WRAPPER_BASE_KEYS = frozenset(
    {"env", "_action_space", "_observation_space", "_metadata", "_cached_spec", "_reward_range", "_saved_kwargs"}
)
_STATELESS = LayerRule(LayerKind.STATELESS, Stateless())
_STATISTICS = LayerRule(LayerKind.STATISTICS, Stateless())
_BUILTIN_STATELESS = replace(_STATELESS, verified=True)
_BUILTIN_STATISTICS = replace(_STATISTICS, verified=True)
_GENERIC = LayerRule(
    LayerKind.STATE,
    InstanceDict(
        WRAPPER_BASE_KEYS,
        "Register its state with arsm_rl.cloning.register_wrapper_state(...) and verify with check_cloneable().",
        what="wrapper ",
    ),
)
_TABLE: dict[type, LayerRule] | None = None
#: Rules set with :func:`set_layer_rule` (the recording wrapper's, users'); they win over the built-in table.
_RULES: dict[type, LayerRule] = {}


def _builtin(state: StateAccess) -> LayerRule:
    return LayerRule(LayerKind.STATE, state, verified=True)


def _table() -> dict[type, LayerRule]:
    global _TABLE
    if _TABLE is None:
        from gymnasium import wrappers as gw

        table: dict[type, LayerRule] = {
            gw.TimeLimit: _builtin(Fields(("_elapsed_steps",))),
            gw.OrderEnforcing: _builtin(Fields(("_has_reset",))),
            gw.PassiveEnvChecker: _builtin(_CheckerDone()),
            gw.RecordEpisodeStatistics: _BUILTIN_STATISTICS,
            gw.FrameStackObservation: _builtin(_FrameStack()),
        }
        for name in ("ClipAction", "RescaleAction", "FlattenObservation", "TransformObservation", "TransformReward"):
            cls = getattr(gw, name, None)
            if cls is not None:
                table[cls] = _BUILTIN_STATELESS
        try:
            from stable_baselines3.common import atari_wrappers as aw
            from stable_baselines3.common.monitor import Monitor

            table[Monitor] = _BUILTIN_STATISTICS
            for cls in (aw.AtariWrapper, aw.NoopResetEnv, aw.FireResetEnv, aw.WarpFrame, aw.ClipRewardEnv):
                table[cls] = _BUILTIN_STATELESS
            table[aw.EpisodicLifeEnv] = _builtin(Fields(("lives", "was_real_done")))
            table[aw.MaxAndSkipEnv] = _builtin(_FrameBuffer())
            table[aw.StickyActionEnv] = _builtin(Fields(("_sticky_action",)))
        except Exception:  # pragma: no cover - SB3 is a dependency
            pass
        _TABLE = table
    return _TABLE


def layer_rule(wrapper: Any) -> LayerRule:
    """
    :param wrapper: a wrapper layer.
    :return: the rule of its exact class, else the generic rule.
    """
    return _class_rule(type(wrapper))


#: Built-in rules of classes from optional packages, by qualified name (importing sb3-contrib would import torch,
#: which ForkVecEnv's workers avoid): sb3-contrib's ActionMasker holds only the mask function of the env it wraps.
_BY_NAME = {"sb3_contrib.common.wrappers.action_masker.ActionMasker": _BUILTIN_STATELESS}


def _class_rule(cls: type) -> LayerRule:
    rule = _RULES.get(cls) or _table().get(cls)
    return rule if rule is not None else _BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}", _GENERIC)


def is_statistics(wrapper_cls: type) -> bool:
    """Whether layers of this wrapper class only record statistics (SB3 ``Monitor``, ``RecordEpisodeStatistics``,
    classes registered with ``statistics=True``): snapshots and pseudo rollouts leave them out.

    :param wrapper_cls: a wrapper class (exact type).
    """
    return _class_rule(wrapper_cls).kind is LayerKind.STATISTICS


def set_layer_rule(wrapper_cls: type, rule: LayerRule) -> None:
    """
    :param wrapper_cls: a wrapper class (exact type).
    :param rule: how its layers are captured and restored from now on.
    """
    _RULES[wrapper_cls] = rule


def register_wrapper_state(
    wrapper_cls: type,
    get_state: Callable[[Any], Any] | None = None,
    set_state: Callable[[Any, Any], None] | None = None,
    *,
    statistics: bool = False,
) -> None:
    """Tell the cloner how to handle a wrapper class (instead of the generic deepcopy rule).

    :param wrapper_cls: the wrapper class (exact type).
    :param get_state: returns the wrapper's state (picklable); omit both callbacks for a stateless wrapper.
    :param set_state: restores it in place.
    :param statistics: the wrapper only records statistics (like SB3 ``Monitor``): it is left out of
        snapshots, never touched by restores and dropped by :func:`scratch_copy`.
    """
    rule: LayerRule
    if statistics:
        rule = _STATISTICS
    elif get_state is None and set_state is None:
        rule = _STATELESS
    elif get_state is not None and set_state is not None:
        rule = LayerRule(LayerKind.STATE, Callbacks(get_state, set_state))
    else:
        raise ValueError("give both get_state and set_state, or neither (stateless)")
    set_layer_rule(wrapper_cls, rule)


def iter_layers(env: AnyEnv) -> Iterator[Any]:
    """
    :param env: any env.
    :return: its wrapper layers, outermost first (``env`` itself if it is a wrapper).
    """
    e: Any = env
    while isinstance(e, gym.Wrapper):
        yield e
        e = e.env


def time_limit(env: AnyEnv) -> tuple[int, int] | None:
    """Progress of the outermost gymnasium ``TimeLimit`` layer of ``env``.

    :param env: any env.
    :return: ``(elapsed steps, max episode steps)`` (0 before the first reset; ``np.iinfo(np.int64).max``
        without a maximum), or ``None`` without a ``TimeLimit`` layer.
    """
    for w in iter_layers(env):
        if isinstance(w, gym.wrappers.TimeLimit):
            return int(w._elapsed_steps or 0), int(w._max_episode_steps or np.iinfo(np.int64).max)
    return None


def is_transparent(wrapper: Any) -> bool:
    """Whether a wrapper layer changes neither observations, rewards, actions nor dynamics, so that a
    batched stepper may ignore it: ``OrderEnforcing``, ``PassiveEnvChecker`` and a
    :class:`~arsm_rl.cloning.CloneableWrapper` that does not record (exact types).

    :param wrapper: a wrapper layer.
    """
    if type(wrapper) in (gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker):
        return True
    return layer_rule(wrapper).kind is LayerKind.RECORDER and not wrapper.records
