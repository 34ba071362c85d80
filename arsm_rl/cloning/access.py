"""One get/set protocol for everything a snapshot captures: the core state of ``env.unwrapped``
(a family's :attr:`~arsm_rl.cloning.families.Family.state`) and the state of a wrapper layer
(a layer rule's ``state``, see :mod:`arsm_rl.cloning.layers`).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from arsm_rl.cloning.snapshot import NotCloneableError, copy_value


class StateAccess(ABC):
    """How the state of one kind of object (an env's ``unwrapped`` or a wrapper layer) is read and written.

    :meth:`get` must return a picklable value that later changes of the object do not affect, and
    :meth:`set` must not modify the value it is given, so that one snapshot can be restored any
    number of times.
    """

    @abstractmethod
    def get(self, obj: Any) -> Any:
        """
        :param obj: the env core or wrapper layer.
        :return: its state.
        """

    @abstractmethod
    def set(self, obj: Any, state: Any) -> None:
        """
        :param obj: the env core or wrapper layer, changed in place.
        :param state: a value returned by :meth:`get` (on this object or on one built the same way).
        """


class Stateless(StateAccess):
    """Nothing to capture: ``get`` gives ``None`` and ``set`` does nothing."""

    def get(self, obj: Any) -> Any:
        return None

    def set(self, obj: Any, state: Any) -> None:
        return None


class Fields(StateAccess):
    """Copies of a fixed list of attributes (a missing one reads as ``None``); arrays and lists are copied.

    :param names: the attribute names.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def get(self, obj: Any) -> Any:
        return tuple(copy_value(getattr(obj, name, None)) for name in self.names)

    def set(self, obj: Any, state: Any) -> None:
        for name, value in zip(self.names, state, strict=True):
            setattr(obj, name, copy_value(value))


class InstanceDict(StateAccess):
    """One ``deepcopy`` of the instance dictionary without the ``exclude`` keys.

    The copy is made on capture *and* on restore, so one state can be restored many times, and
    attributes that alias each other are copied together (their aliasing survives).

    :param exclude: attribute names left out (spaces, the inner env, render handles ...).
    :param hint: what to do when the deepcopy fails, appended to the error message.
    :param what: prefix of the object's class name in the error message (e.g. ``"wrapper "``).
    :param none_if_empty: ``get`` gives ``None`` (and ``set(None)`` does nothing) when no attribute is
        left, rather than an empty dict.
    """

    def __init__(self, exclude: frozenset[str], hint: str, *, what: str = "", none_if_empty: bool = True) -> None:
        self.exclude = exclude
        self.hint = hint
        self.what = what
        self.none_if_empty = none_if_empty

    def attributes(self, obj: Any) -> dict[str, Any]:
        """
        :param obj: the object.
        :return: its instance attributes without the excluded ones (not copied).
        """
        exclude = self.exclude
        return {k: v for k, v in vars(obj).items() if k not in exclude}

    def get(self, obj: Any) -> Any:
        state = self.attributes(obj)
        if not state and self.none_if_empty:
            return None
        try:
            return copy.deepcopy(state)
        except Exception as exc:
            raise NotCloneableError(
                f"{self.what}{type(obj).__name__}: deepcopy of its attributes failed ({exc!r}). {self.hint}"
            ) from exc

    def set(self, obj: Any, state: Any) -> None:
        if state is not None:
            vars(obj).update(copy.deepcopy(state))


class Callbacks(StateAccess):
    """User callbacks (:func:`~arsm_rl.cloning.register_cloneable`, :func:`~arsm_rl.cloning.register_wrapper_state`).

    :param get_state: ``get_state(obj) -> state``.
    :param set_state: ``set_state(obj, state)``, in place.
    """

    def __init__(self, get_state: Callable[[Any], Any], set_state: Callable[[Any, Any], None]) -> None:
        self._get = get_state
        self._set = set_state

    def get(self, obj: Any) -> Any:
        return self._get(obj)

    def set(self, obj: Any, state: Any) -> None:
        self._set(obj, state)


class Methods(StateAccess):
    """The object's own ``clone_core_state()`` and ``restore_core_state(state)`` methods."""

    def get(self, obj: Any) -> Any:
        return obj.clone_core_state()

    def set(self, obj: Any, state: Any) -> None:
        obj.restore_core_state(state)
