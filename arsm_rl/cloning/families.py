"""Snapshot families: how the core state of one kind of ``env.unwrapped`` is captured.

The built-in families are defined here (``minigrid``, ``custom``, ``replay``, ``generic``), in
:mod:`arsm_rl.cloning.classic` (``classic``, ``toy_text`` and the Box2D ``replay`` entries) and in
:mod:`arsm_rl.cloning.atari`; :mod:`arsm_rl.cloning.registry` decides which one an env gets.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gymnasium.utils import EzPickle

from arsm_rl.cloning.access import Callbacks, InstanceDict, Methods, StateAccess
from arsm_rl.cloning.dynamics import Dynamics
from arsm_rl.cloning.snapshot import NotCloneableError

#: Attributes of ``gymnasium.Env`` that are not episode state (the RNG is captured separately).
ENV_BASE_KEYS = frozenset({"action_space", "observation_space", "_np_random", "_np_random_seed", "spec", "metadata"})
#: Render handles, never part of a snapshot.
RENDER_KEYS = frozenset({"window", "clock", "screen", "surf", "window_surface", "viewer", "render_mode"})


def _is_pygame(value: Any) -> bool:
    return type(value).__module__.startswith("pygame")


def render_handles(obj: Any) -> list[Any]:
    """The render state an env or wrapper holds: the objects under :data:`RENDER_KEYS` (not ``render_mode``, a setting)
    and pygame objects (windows, surfaces, clocks, loaded images), alone or in a list, tuple or dict. Snapshots leave
    them out and copies do not share them: an env builds them again when it renders (``if self.screen is None``).

    :param obj: an ``env.unwrapped`` or a wrapper layer.
    :return: the objects (not copied).
    """
    out = []
    for name, value in vars(obj).items():
        if value is None or isinstance(value, str):
            continue
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else (value,)
        if name in RENDER_KEYS or (items and all(_is_pygame(item) for item in items)):
            out.append(value)
    return out
#: What to do when the deepcopy of an env's attributes fails.
CORE_HINT = (
    "Register an exact adapter with arsm_rl.cloning.register_cloneable(...) or define "
    "clone_core_state()/restore_core_state(); then verify it with check_cloneable()."
)


def _no_fingerprint(env: Any) -> Any:
    return None


def _no_prepare(env: Any) -> None:
    return None


@dataclass(frozen=True)
class Family:
    """How the core state of one kind of env (``env.unwrapped``) is captured and restored.

    :ivar name: the family name reported by :func:`~arsm_rl.cloning.family_of` and stored in
        snapshots (``classic``, ``toy_text``, ``atari``, ``mujoco``, ``minigrid``, ``replay``, ``custom``, ``generic``).
    :ivar state: reads and writes the core state; ``None`` for the replay family, whose snapshots
        are restored by resetting and replaying the recorded actions.
    :ivar fingerprint: ``fingerprint(unwrapped)`` gives the settings a snapshot is only valid for
        (compared on restore); ``None`` by default.
    :ivar prepare: ``prepare(unwrapped)`` is called by :func:`~arsm_rl.cloning.make_cloneable`
        (e.g. to install trackers).
    :ivar shared_attrs: constant attributes (tables) that a :func:`~arsm_rl.cloning.scratch_copy`
        shares instead of copying.
    :ivar dynamics: batched numpy dynamics of this family (a :class:`~arsm_rl.cloning.dynamics.Dynamics`
        subclass), used by the rollouts layer's batch stepper where its ``supports`` says so; ``None`` when the
        family has none.
    :ivar verified: the method is one of the library's built-ins, tested bit-exact on these envs; other
        envs (the generic deepcopy, user adapters) are checked before ARSM trains on them
        (:func:`~arsm_rl.cloning.verify_snapshots`).
    :ivar bounded: every episode of these envs ends within a limit of the env itself (MiniGrid's
        ``max_steps``, ALE's frame cap, Blackjack's deck), with or without a ``TimeLimit`` wrapper.
    :ivar headless: ``headless(unwrapped)`` stops work that only rendering uses and that changes nothing a step
        returns (tested bit-identical observations, rewards and ends); :func:`~arsm_rl.cloning.make_headless`
        applies it to the envs pseudo rollouts run on, never to a training env. ``None``: nothing to stop.
    """

    name: str
    state: StateAccess | None
    fingerprint: Callable[[Any], Any] = _no_fingerprint
    prepare: Callable[[Any], None] = _no_prepare
    shared_attrs: tuple[str, ...] = ()
    dynamics: type[Dynamics] | None = None
    verified: bool = False
    bounded: bool = False
    headless: Callable[[Any], None] | None = None

    @property
    def replay(self) -> bool:
        """Whether snapshots of this family are restored by replaying the episode."""
        return self.state is None


class _CheckedInstanceDict(InstanceDict):
    """The generic family's deepcopy; checks once per class that no EzPickle object hides inside."""

    def __init__(self) -> None:
        super().__init__(ENV_BASE_KEYS | RENDER_KEYS, CORE_HINT, none_if_empty=False)
        self._verified: set[type] = set()

    def attributes(self, obj: Any) -> dict[str, Any]:
        handles = {id(value) for value in render_handles(obj)}
        return {k: v for k, v in super().attributes(obj).items() if id(v) not in handles}

    def get(self, obj: Any) -> Any:
        cls = type(obj)
        if cls in self._verified:
            return super().get(obj)
        memo: dict[int, Any] = {}
        state = self.attributes(obj)
        try:
            out = copy.deepcopy(state, memo)
        except Exception as exc:
            raise NotCloneableError(
                f"{cls.__name__}: the generic deepcopy snapshot failed ({exc!r}). Register an exact adapter with "
                "register_cloneable() or define clone_core_state()/restore_core_state(), then run check_cloneable()."
            ) from exc
        for value in memo.values():
            if isinstance(value, EzPickle):
                raise NotCloneableError(
                    f"{cls.__name__} holds a {type(value).__name__} object, which copies by constructor arguments "
                    "(gymnasium.utils.EzPickle), so a deepcopy snapshot would silently be a fresh object. Register an "
                    "exact adapter with register_cloneable() and verify it with check_cloneable()."
                )
        self._verified.add(cls)
        return out


#: Box2D: no state, replay.
REPLAY = Family("replay", None, verified=True)
#: Envs registered with ``register_cloneable(cls, replay=True)``.
USER_REPLAY = Family("replay", None)
#: Envs with their own ``clone_core_state()``/``restore_core_state(state)``.
METHODS = Family("custom", Methods())
#: The ``MiniGridEnv`` classes of the minigrid package: one deepcopy of the mutable instance dictionary.
MINIGRID = Family(
    "minigrid",
    InstanceDict(ENV_BASE_KEYS | RENDER_KEYS | {"actions"}, CORE_HINT, none_if_empty=False),
    verified=True,
    bounded=True,
)
#: ``MiniGridEnv`` subclasses defined elsewhere: the same copy, not verified (they may add state it misses).
MINIGRID_USER = replace(MINIGRID, verified=False)
#: Any other env that does not subclass EzPickle.
GENERIC = Family("generic", _CheckedInstanceDict())


def custom(get_state: Callable[[Any], Any], set_state: Callable[[Any, Any], None]) -> Family:
    """
    :param get_state: ``get_state(unwrapped) -> state``.
    :param set_state: ``set_state(unwrapped, state)``.
    :return: the ``custom`` family with these callbacks.
    """
    return Family("custom", Callbacks(get_state, set_state))


def has_core_methods(env: Any) -> bool:
    """Whether the env defines ``clone_core_state()`` and ``restore_core_state(state)``."""
    return callable(getattr(env, "clone_core_state", None)) and callable(getattr(env, "restore_core_state", None))


def is_minigrid_env(env: Any) -> bool:
    """Whether the env is a ``minigrid`` ``MiniGridEnv`` (matched by name, without importing minigrid)."""
    return any(c.__name__ == "MiniGridEnv" and c.__module__.startswith("minigrid") for c in type(env).__mro__)


def is_minigrid_builtin(env: Any) -> bool:
    """Whether the env is one of the minigrid package's own ``MiniGridEnv`` classes."""
    return is_minigrid_env(env) and type(env).__module__.split(".")[0] == "minigrid"
