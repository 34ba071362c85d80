"""The ``atari`` family (ale-py ``AtariEnv``): ``ale.cloneState(include_rng=True)`` plus the sticky-action memory.

With ``repeat_action_probability`` p > 0, ALE keeps the *last applied* action, which its
serialized state does not contain; :class:`StickyALE` mirrors ALE's RNG to know it exactly, and
:class:`AtariState` sets it in a restored copy.
"""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np

from arsm_rl.cloning.access import StateAccess
from arsm_rl.cloning.families import Family
from arsm_rl.cloning.snapshot import NotCloneableError

_MT_STATE = re.compile(rb"(\d+(?: \d+){624})")


def ale_rng_state(ale: Any) -> tuple[int, ...]:
    """Mersenne-Twister state of ALE's environment RNG (624 words and the position), as used by
    :meth:`random.Random.setstate`, read from a serialized ``cloneState(include_rng=True)``.

    ALE serializes its ``std::mt19937`` as 624 words and the position; it is the last such group.

    :param ale: an ``ale_py.ALEInterface``.
    :return: the RNG state.
    """
    groups = _MT_STATE.findall(ale.cloneState(include_rng=True).serialize())
    if not groups:  # pragma: no cover - depends on the ale-py serialization format
        raise NotCloneableError("cannot read ALE's RNG state from its serialized state (unsupported ale-py version?)")
    return tuple(int(w) for w in groups[-1].split())


def _mt(words: tuple[int, ...]) -> random.Random:
    """A Python Mersenne-Twister (same generator as ALE's ``std::mt19937``) in the given state."""
    r = random.Random()
    r.setstate((3, words, None))
    return r


class StickyALE:
    """Proxy for ``ale_py.ALEInterface`` that tracks the sticky-action memory ALE does not serialize.

    With ``repeat_action_probability`` p > 0, ALE keeps the *last applied* action (and paddle
    strength) in ``StellaEnvironment`` and, on every frame, applies it again with probability p
    (two RNG draws per frame, player A first, accepted when ``u32 / 2**32 >= p``).
    ``cloneState(include_rng=True)`` saves the emulator and the RNG but not this memory, so a
    restored copy would repeat *its own* last action instead.  The proxy mirrors ALE's
    Mersenne-Twister (Python's :class:`random.Random` is the same generator) to know the memory
    exactly; :class:`AtariState` sets it in a restored copy by acting the remembered action
    until the first accepted draw and then restoring the state again.

    :param ale: the ALE interface to wrap.
    :param threshold: the sticky probability p.
    :param continuous: whether the env uses continuous actions (paddle strength unknown until applied).
    """

    def __init__(self, ale: Any, threshold: float, continuous: bool) -> None:
        self._ale = ale
        self._thr = int(np.ceil(threshold * 2.0**32))
        self._frame_skip = max(1, int(ale.getInt("frame_skip")))
        self._r = _mt(ale_rng_state(ale))
        # (action, paddle strength) last applied by ALE; None while unknown (after wrapping mid-episode)
        self.action: Any = None
        self.strength: Any = None if continuous else 1.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ale, name)

    def act(self, action: Any, paddle_strength: float = 1.0) -> Any:
        bits, thr = self._r.getrandbits, self._thr
        accepted = False
        for _ in range(self._frame_skip):
            accepted |= bits(32) >= thr  # player A
            bits(32)  # player B
        if accepted:
            self.action, self.strength = action, paddle_strength
        return self._ale.act(action, paddle_strength)

    def reset_game(self) -> None:
        self._ale.reset_game()
        self.action = _ale_noop()  # ALE's soft reset forgets the previous action

    def loadROM(self, path: Any) -> None:
        self._ale.loadROM(path)
        self.action = _ale_noop()
        self.strength = 1.0 if self.strength is not None else None
        self._r = _mt(ale_rng_state(self._ale))

    def restoreState(self, state: Any) -> None:
        self._ale.restoreState(state)  # restores the RNG but keeps the sticky memory
        self._r = _mt(ale_rng_state(self._ale))

    def restoreSystemState(self, state: Any) -> None:
        self._ale.restoreSystemState(state)
        self._r = _mt(ale_rng_state(self._ale))

    def rng_state(self) -> tuple[int, ...]:
        """The mirrored RNG state (624 words and the position)."""
        state: tuple[int, ...] = self._r.getstate()[1]
        return state

    def set_rng_state(self, words: tuple[int, ...]) -> None:
        self._r.setstate((3, words, None))

    def calls_until_accepted(self, words: tuple[int, ...]) -> int:
        """Number of ``act`` calls, from RNG state ``words``, until one applies the requested action."""
        r = _mt(words)
        calls = 0
        while True:
            calls += 1
            accepted = False
            for _ in range(self._frame_skip):
                accepted |= r.getrandbits(32) >= self._thr
                r.getrandbits(32)
            if accepted:
                return calls


def _ale_noop() -> Any:
    import ale_py

    return ale_py.Action.NOOP


def _sticky_p(env: Any) -> float:
    ale = env.ale
    raw = ale._ale if isinstance(ale, StickyALE) else ale
    return float(raw.getFloat("repeat_action_probability"))


def _install_sticky_tracker(env: Any) -> StickyALE | None:
    """Install the :class:`StickyALE` proxy on an AtariEnv with sticky actions (idempotent)."""
    if isinstance(env.ale, StickyALE):
        return env.ale
    p = _sticky_p(env)
    if p <= 0.0:
        return None
    env.ale = StickyALE(env.ale, float(np.float32(p)), bool(getattr(env, "continuous", False)))
    return env.ale


class AtariState(StateAccess):
    """``(ALE state, mirrored RNG words, sticky action, paddle strength)``; the last three are ``None``
    without sticky actions."""

    def get(self, obj: Any) -> Any:
        ale = obj.ale
        if not isinstance(ale, StickyALE):
            if _sticky_p(obj) > 0.0:
                raise NotCloneableError(
                    f"{type(obj).__name__} uses sticky actions (repeat_action_probability > 0): ALE's cloneState does "
                    "not save the previously applied action, which must be tracked. Build the env with "
                    "arsm_rl.cloning.make_cloneable(env) (before reset) or use repeat_action_probability=0."
                )
            return (ale.cloneState(include_rng=True), None, None, None)
        if ale.action is None or ale.strength is None:
            raise NotCloneableError(
                f"{type(obj).__name__}: the sticky previously-applied action is not known yet (the env was wrapped "
                "with make_cloneable() mid-episode); call reset() first."
            )
        return (ale._ale.cloneState(include_rng=True), ale.rng_state(), ale.action, ale.strength)

    def set(self, obj: Any, state: Any) -> None:
        ale_state, words, action, strength = state
        if words is None:
            raw = obj.ale._ale if isinstance(obj.ale, StickyALE) else obj.ale
            raw.restoreState(ale_state)
            return
        proxy = _install_sticky_tracker(obj)
        if proxy is None:  # pragma: no cover - guarded by the fingerprint check
            raise ValueError("snapshot has sticky actions but the target env does not")
        raw = proxy._ale
        raw.restoreState(ale_state)
        if (proxy.action, proxy.strength) != (action, strength):
            for _ in range(proxy.calls_until_accepted(words)):
                raw.act(action, strength)
            raw.restoreState(ale_state)  # back to the snapshot; the sticky memory now holds `action`
        proxy.action, proxy.strength = action, strength
        proxy.set_rng_state(words)


def _fingerprint(env: Any) -> Any:
    return (
        env._game,
        env._game_mode,
        env._game_difficulty,
        repr(env._frameskip),
        env._obs_type,
        _sticky_p(env),
        len(env._action_set),
    )


def _prepare(env: Any) -> None:
    _install_sticky_tracker(env)


ATARI = Family("atari", AtariState(), fingerprint=_fingerprint, prepare=_prepare, verified=True, bounded=True)


def is_atari_env(env: Any) -> bool:
    """Whether the env is an ale-py ``AtariEnv`` (matched by name, without importing ale-py)."""
    cls = type(env)
    return cls.__name__ == "AtariEnv" and cls.__module__.startswith("ale_py")
