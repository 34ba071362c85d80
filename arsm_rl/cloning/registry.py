"""The family registry: which :class:`~arsm_rl.cloning.families.Family` an env gets.

Rules are tried in order on ``env.unwrapped``; the first that matches decides, and the result is
cached per class:

1. classes registered with :func:`register_cloneable` (exact type; a new registration replaces);
2. envs with their own ``clone_core_state()``/``restore_core_state(state)`` methods (``custom``);
3. the built-in exact-type table of :mod:`arsm_rl.cloning.classic` (``classic``, ``toy_text``, Box2D ``replay``);
4. ale-py ``AtariEnv`` (``atari``), then any ``MiniGridEnv`` subclass (``minigrid``; verified for the minigrid
   package's own classes);
5. rules added with :func:`add_family_rule`;
6. refusal of :class:`gymnasium.utils.EzPickle` envs; any other env gets the ``generic`` deepcopy family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from gymnasium.utils import EzPickle

from arsm_rl.cloning.atari import ATARI, is_atari_env
from arsm_rl.cloning.classic import builtin_table
from arsm_rl.cloning.families import (
    GENERIC,
    METHODS,
    MINIGRID,
    MINIGRID_USER,
    USER_REPLAY,
    Family,
    custom,
    has_core_methods,
    is_minigrid_builtin,
    is_minigrid_env,
)
from arsm_rl.cloning.mujoco import MUJOCO, MUJOCO_USER, is_mujoco_builtin, is_mujoco_env
from arsm_rl.cloning.snapshot import AnyEnv, NotCloneableError


class Rule(ABC):
    """One entry of the registry."""

    @abstractmethod
    def match(self, env: Any) -> Family | None:
        """
        :param env: an ``env.unwrapped``.
        :return: its family, or ``None`` when this rule does not apply.
        :raises NotCloneableError: when this rule refuses the env.
        """


class When(Rule):
    """``family`` for the envs that pass ``test``.

    :param test: ``test(unwrapped) -> bool``.
    :param family: the family given.
    """

    def __init__(self, test: Callable[[Any], bool], family: Family) -> None:
        self.test = test
        self.family = family

    def match(self, env: Any) -> Family | None:
        return self.family if self.test(env) else None


class Refuse(Rule):
    """Refuses the envs that pass ``test``.

    :param test: ``test(unwrapped) -> bool``.
    :param message: ``message(cls)`` is the :class:`NotCloneableError` text.
    """

    def __init__(self, test: Callable[[Any], bool], message: Callable[[type], str]) -> None:
        self.test = test
        self.message = message

    def match(self, env: Any) -> Family | None:
        if self.test(env):
            raise NotCloneableError(self.message(type(env)))
        return None


class ByType(Rule):
    """A family per exact class (subclasses do not match: they may add state).

    :param build: builds the table on first use (lazily, so that env modules are imported only when needed).
    """

    def __init__(self, build: Callable[[], dict[type, Family]] = dict) -> None:
        self._build = build
        self._table: dict[type, Family] | None = None

    @property
    def table(self) -> dict[type, Family]:
        """The table (built on first access); changing it takes effect for classes not resolved yet."""
        if self._table is None:
            self._table = self._build()
        return self._table

    def match(self, env: Any) -> Family | None:
        return self.table.get(type(env))


def _ezpickle_refusal(cls: type) -> str:
    return (
        f"{cls.__module__}.{cls.__qualname__} has no exact snapshot method: it subclasses "
        "gymnasium.utils.EzPickle, so deepcopy/pickle build a fresh, un-reset env from its constructor "
        "arguments instead of copying its state (silently wrong). Make it cloneable with "
        "arsm_rl.cloning.register_cloneable(cls, get_state=..., set_state=...) or register_cloneable(cls, "
        "replay=True) if it is deterministic given its reset seed and actions, or define "
        "clone_core_state()/restore_core_state() on the env; then verify with check_cloneable()."
    )


_USER = ByType()
_RULES: list[Rule] = [
    _USER,
    When(has_core_methods, METHODS),
    ByType(builtin_table),
    When(is_atari_env, ATARI),
    When(is_mujoco_builtin, MUJOCO),
    When(is_mujoco_env, MUJOCO_USER),
    When(is_minigrid_builtin, MINIGRID),
    When(is_minigrid_env, MINIGRID_USER),
]
_EZPICKLE = Refuse(lambda env: isinstance(env, EzPickle), _ezpickle_refusal)
_CACHE: dict[type, Family] = {}


def resolve(unwrapped: Any) -> Family:
    """
    :param unwrapped: an ``env.unwrapped``.
    :return: its family: the first matching rule's, else the generic family (cached per class).
    :raises NotCloneableError: if no exact method exists.
    """
    cls = type(unwrapped)
    cached = _CACHE.get(cls)
    if cached is not None:
        return cached
    matches = (rule.match(unwrapped) for rule in (*_RULES, _EZPICKLE))  # lazily, in order
    found = next((f for f in matches if f is not None), GENERIC)
    _CACHE[cls] = found
    return found


def family(env: AnyEnv) -> Family:
    """The snapshot family of ``env`` (for other layers, e.g. the rollouts' batch stepper).

    :param env: any env, wrapped or not.
    :return: the family of ``env.unwrapped``.
    :raises NotCloneableError: if no exact method exists.
    """
    return resolve(env.unwrapped)


def family_of(env: AnyEnv) -> str:
    """Name of the snapshot family used for ``env`` (``classic``, ``toy_text``, ``atari``, ``minigrid``,
    ``replay``, ``custom`` or ``generic``).

    :param env: any env, wrapped or not.
    :raises NotCloneableError: if no exact method exists.
    """
    return family(env).name


def add_family_rule(rule: Rule) -> None:
    """Add a rule after the built-in ones (and earlier added ones), before the EzPickle refusal.

    Classes registered with :func:`register_cloneable` still win.  Clears the per-class cache.

    :param rule: the rule.
    """
    _RULES.append(rule)
    _CACHE.clear()


def register_cloneable(
    env_cls: type,
    *,
    get_state: Callable[[Any], Any] | None = None,
    set_state: Callable[[Any, Any], None] | None = None,
    replay: bool = False,
) -> None:
    """Register an exact snapshot method for an env class (matched by exact type of ``env.unwrapped``).

    Either give ``get_state(unwrapped) -> state`` and ``set_state(unwrapped, state)`` (the state must
    be picklable, must not be mutated by ``set_state``, and need not include ``np_random``, which is
    always captured), or ``replay=True`` for envs that are deterministic given the reset seed (or
    the ``np_random`` state before reset) and the actions.  Verify with :func:`check_cloneable`.

    :param env_cls: the class of ``env.unwrapped``.
    :param get_state: captures the core state.
    :param set_state: restores it in place.
    :param replay: use record-and-replay instead (needs :func:`make_cloneable`).
    """
    found: Family
    if replay:
        if get_state is not None or set_state is not None:
            raise ValueError("give either replay=True or get_state/set_state, not both")
        found = USER_REPLAY
    else:
        if get_state is None or set_state is None:
            raise ValueError("register_cloneable needs both get_state and set_state (or replay=True)")
        found = custom(get_state, set_state)
    _USER.table[env_cls] = found
    _CACHE.pop(env_cls, None)
