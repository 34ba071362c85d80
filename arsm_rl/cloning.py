"""Exact snapshot / restore of Gymnasium environments for ARSM pseudo-action rollouts.

ARSM evaluates "pseudo actions" by rolling them out on copies of the environment at visited
states.  A copy that is only approximately right silently biases the gradient estimate, so this
module only offers methods that were verified to be **bit-exact** (same observation bytes, reward,
``terminated`` and ``truncated`` at every step) and refuses everything else with a clear error.

Design
------
A :class:`Snapshot` has three parts:

* the **core** state of ``env.unwrapped``, chosen by dispatching on ``type(env.unwrapped)``
  (see :func:`family_of`):

  - ``classic`` (CartPole, Acrobot, MountainCar, MountainCarContinuous, Pendulum) and
    ``toy_text`` (FrozenLake, Taxi, CliffWalking, Blackjack): copies of the few attributes that
    change during an episode (``state``, ``s``, ``lastaction``, Taxi's ``fickle_step`` ...);
  - ``atari`` (ale-py ``AtariEnv``): ``ale.cloneState(include_rng=True)``, which also carries the
    sticky-action RNG and the previous action;
  - ``minigrid``: one ``deepcopy`` of the mutable instance dictionary (grid, agent, extras such as
    DynamicObstacles' ``obstacles`` copied *together* so their aliasing survives);
  - ``replay`` (Box2D: LunarLander, BipedalWalker, CarRacing): no state at all.  pybox2d cannot
    read or write joint/contact impulses, so a Box2D world cannot be restored exactly.  Instead
    the :class:`CloneableWrapper` records the episode's reset condition (the seed passed to
    ``reset`` or the ``np_random`` bit-generator state just *before* an unseeded reset) and the
    action prefix; restoring replays them.  ``Snapshot.restore_steps`` tells the caller how many
    simulator steps a restore costs;
  - ``custom``: adapters registered with :func:`register_cloneable` or provided by the env itself
    (methods ``clone_core_state()`` / ``restore_core_state(state)``);
  - ``generic``: ``deepcopy`` of the instance dictionary of any other env, **refused** for classes
    that pickle by constructor arguments (:class:`gymnasium.utils.EzPickle`), because their copies
    are fresh, un-reset environments (this is why ``deepcopy`` is silently wrong for LunarLander
    and Atari).

* the **RNG** state: ``unwrapped.np_random``'s bit-generator state (and ``_np_random_seed``),
  plus the bit-generator state of the action space(s), when they have been seeded;

* the state of every **wrapper layer** from the given env inwards: TimeLimit ``_elapsed_steps``,
  OrderEnforcing ``_has_reset``, FrameStackObservation's queue, SB3's Atari wrappers
  (EpisodicLifeEnv lives, MaxAndSkipEnv frame buffer, StickyActionEnv), and a generic rule for
  unknown wrappers (``deepcopy`` of the wrapper's own attributes except the inner env and
  spaces).  Statistics wrappers (SB3 ``Monitor``, Gymnasium ``RecordEpisodeStatistics``) are
  **not** part of a snapshot and restoring never touches them.

Snapshots are immutable, picklable (they cross SubprocVecEnv pipes) and can be restored any
number of times, into the env they came from or into another instance built the same way, e.g.
a :func:`scratch_copy`.  :func:`check_cloneable` verifies exactness on a user's env.
"""

from __future__ import annotations

import copy
import pickle
import random
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

__all__ = [
    "CloneableWrapper",
    "CloningError",
    "NotCloneableError",
    "Snapshot",
    "check_cloneable",
    "clone_state",
    "family_of",
    "make_cloneable",
    "register_cloneable",
    "register_wrapper_state",
    "restore_state",
    "scratch_copy",
]

AnyEnv = gym.Env[Any, Any]
AnyWrapper = gym.Wrapper[Any, Any, Any, Any]


class NotCloneableError(TypeError, ValueError):
    """The env (or one of its wrappers) has no exact snapshot method, or a snapshot cannot be used here.

    It subclasses both :class:`TypeError` and :class:`ValueError`.
    """


class CloningError(AssertionError):
    """Raised by :func:`check_cloneable` when a restored env does not reproduce the reference trajectory."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Opaque, immutable, picklable state of an env and its wrappers (see the module docstring).

    :ivar restore_steps: number of env steps one restore of this snapshot replays
        (0 for state-copy families, the action-prefix length for the replay family).
    """

    env_type: str
    family: str
    fingerprint: Any
    core: Any
    rng: Any
    action_rngs: tuple[Any, ...]
    layer_names: tuple[str, ...]
    layer_states: tuple[Any, ...]
    record: Any
    restore_steps: int

    def __repr__(self) -> str:
        return f"Snapshot(env_type={self.env_type!r}, family={self.family!r}, restore_steps={self.restore_steps})"


# ---------------------------------------------------------------------------------------------
# Core adapters (state of env.unwrapped)
# ---------------------------------------------------------------------------------------------


def _copy_value(value: Any) -> Any:
    """Copy of a small state value: arrays and lists are copied, immutables are shared."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return list(value)
    return value


class _Adapter:
    """How the core state of one env class is captured and restored."""

    family = "?"
    replay = False
    shared_attrs: tuple[str, ...] = ()

    def get(self, env: Any) -> Any:
        raise NotImplementedError

    def set(self, env: Any, state: Any) -> None:
        raise NotImplementedError

    def fingerprint(self, env: Any) -> Any:
        return None

    def prepare(self, env: Any) -> None:
        """Called by :func:`make_cloneable` on ``env.unwrapped`` (e.g. to install trackers)."""


class _FieldsAdapter(_Adapter):
    """Copies a fixed list of attributes (classic control, toy text)."""

    def __init__(self, family: str, fields: tuple[str, ...], shared_attrs: tuple[str, ...] = ()) -> None:
        self.family = family
        self.fields = fields
        self.shared_attrs = shared_attrs

    def get(self, env: Any) -> Any:
        return tuple(_copy_value(getattr(env, f, None)) for f in self.fields)

    def set(self, env: Any, state: Any) -> None:
        for f, v in zip(self.fields, state, strict=True):
            setattr(env, f, _copy_value(v))


_ENV_BASE_KEYS = frozenset({"action_space", "observation_space", "_np_random", "_np_random_seed", "spec", "metadata"})
_RENDER_KEYS = frozenset({"window", "clock", "screen", "surf", "window_surface", "viewer", "render_mode"})


class _DictAdapter(_Adapter):
    """One ``deepcopy`` of the instance dictionary (MiniGrid, generic fallback).

    The copy is made on capture *and* on restore, so one snapshot can be restored many times.
    """

    def __init__(self, family: str, exclude: frozenset[str]) -> None:
        self.family = family
        self.exclude = exclude

    def get(self, env: Any) -> Any:
        ex = self.exclude
        state = {k: v for k, v in vars(env).items() if k not in ex}
        try:
            return copy.deepcopy(state)
        except Exception as exc:  # pragma: no cover - depends on user envs
            raise NotCloneableError(
                f"{type(env).__name__}: deepcopy of its attributes failed ({exc!r}). Register an exact adapter with "
                "arsm_rl.cloning.register_cloneable(...) or define clone_core_state()/restore_core_state(); "
                "then verify it with check_cloneable()."
            ) from exc

    def set(self, env: Any, state: Any) -> None:
        vars(env).update(copy.deepcopy(state))


class _GenericAdapter(_DictAdapter):
    """Deepcopy fallback for unknown envs; checks once per class that no EzPickle object hides inside."""

    def __init__(self) -> None:
        super().__init__("generic", _ENV_BASE_KEYS | _RENDER_KEYS)
        self._verified: set[type] = set()

    def get(self, env: Any) -> Any:
        cls = type(env)
        if cls in self._verified:
            return super().get(env)
        memo: dict[int, Any] = {}
        state = {k: v for k, v in vars(env).items() if k not in self.exclude}
        try:
            out = copy.deepcopy(state, memo)
        except Exception as exc:
            raise NotCloneableError(
                f"{cls.__name__}: the generic deepcopy snapshot failed ({exc!r}). Register an exact adapter with "
                "register_cloneable() or define clone_core_state()/restore_core_state(), then run check_cloneable()."
            ) from exc
        for obj in memo.values():
            if isinstance(obj, EzPickle):
                raise NotCloneableError(
                    f"{cls.__name__} holds a {type(obj).__name__} object, which copies by constructor arguments "
                    "(gymnasium.utils.EzPickle), so a deepcopy snapshot would silently be a fresh object. Register an "
                    "exact adapter with register_cloneable() and verify it with check_cloneable()."
                )
        self._verified.add(cls)
        return out


_MT_STATE = re.compile(rb"(\d+(?: \d+){624})")


def _ale_rng_state(ale: Any) -> tuple[int, ...]:
    """Mersenne-Twister state of ALE's environment RNG (624 words and the position), as used by
    :meth:`random.Random.setstate`, read from a serialized ``cloneState(include_rng=True)``.

    ALE serializes its ``std::mt19937`` as 624 words and the position; it is the last such group.
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


class _StickyALE:
    """Proxy for ``ale_py.ALEInterface`` that tracks the sticky-action memory ALE does not serialize.

    With ``repeat_action_probability`` p > 0, ALE keeps the *last applied* action (and paddle
    strength) in ``StellaEnvironment`` and, on every frame, applies it again with probability p
    (two RNG draws per frame, player A first, accepted when ``u32 / 2**32 >= p``).
    ``cloneState(include_rng=True)`` saves the emulator and the RNG but not this memory, so a
    restored copy would repeat *its own* last action instead.  The proxy mirrors ALE's
    Mersenne-Twister (Python's :class:`random.Random` is the same generator) to know the memory
    exactly; :class:`_AtariAdapter` sets it in a restored copy by acting the remembered action
    until the first accepted draw and then restoring the state again.
    """

    def __init__(self, ale: Any, threshold: float, continuous: bool) -> None:
        self._ale = ale
        self._thr = int(np.ceil(threshold * 2.0**32))
        self._frame_skip = max(1, int(ale.getInt("frame_skip")))
        self._r = _mt(_ale_rng_state(ale))
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
        self._r = _mt(_ale_rng_state(self._ale))

    def restoreState(self, state: Any) -> None:
        self._ale.restoreState(state)  # restores the RNG but keeps the sticky memory
        self._r = _mt(_ale_rng_state(self._ale))

    def restoreSystemState(self, state: Any) -> None:
        self._ale.restoreSystemState(state)
        self._r = _mt(_ale_rng_state(self._ale))

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
    raw = ale._ale if isinstance(ale, _StickyALE) else ale
    return float(raw.getFloat("repeat_action_probability"))


def _install_sticky_tracker(env: Any) -> _StickyALE | None:
    """Install the :class:`_StickyALE` proxy on an AtariEnv with sticky actions (idempotent)."""
    if isinstance(env.ale, _StickyALE):
        return env.ale
    p = _sticky_p(env)
    if p <= 0.0:
        return None
    env.ale = _StickyALE(env.ale, float(np.float32(p)), bool(getattr(env, "continuous", False)))
    return env.ale


class _AtariAdapter(_Adapter):
    family = "atari"

    def get(self, env: Any) -> Any:
        ale = env.ale
        if not isinstance(ale, _StickyALE):
            if _sticky_p(env) > 0.0:
                raise NotCloneableError(
                    f"{type(env).__name__} uses sticky actions (repeat_action_probability > 0): ALE's cloneState does "
                    "not save the previously applied action, which must be tracked. Build the env with "
                    "arsm_rl.cloning.make_cloneable(env) (before reset) or use repeat_action_probability=0."
                )
            return (ale.cloneState(include_rng=True), None, None, None)
        if ale.action is None or ale.strength is None:
            raise NotCloneableError(
                f"{type(env).__name__}: the sticky previously-applied action is not known yet (the env was wrapped "
                "with make_cloneable() mid-episode); call reset() first."
            )
        return (ale._ale.cloneState(include_rng=True), ale.rng_state(), ale.action, ale.strength)

    def set(self, env: Any, state: Any) -> None:
        ale_state, words, action, strength = state
        if words is None:
            raw = env.ale._ale if isinstance(env.ale, _StickyALE) else env.ale
            raw.restoreState(ale_state)
            return
        proxy = _install_sticky_tracker(env)
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

    def fingerprint(self, env: Any) -> Any:
        return (
            env._game,
            env._game_mode,
            env._game_difficulty,
            repr(env._frameskip),
            env._obs_type,
            _sticky_p(env),
            len(env._action_set),
        )

    def prepare(self, env: Any) -> None:
        _install_sticky_tracker(env)


class _ReplayAdapter(_Adapter):
    family = "replay"
    replay = True


class _CallbackAdapter(_Adapter):
    family = "custom"

    def __init__(self, get_state: Callable[[Any], Any], set_state: Callable[[Any, Any], None]) -> None:
        self._get = get_state
        self._set = set_state

    def get(self, env: Any) -> Any:
        return self._get(env)

    def set(self, env: Any, state: Any) -> None:
        self._set(env, state)


class _MethodAdapter(_Adapter):
    """Env provides ``clone_core_state()`` and ``restore_core_state(state)`` itself."""

    family = "custom"

    def get(self, env: Any) -> Any:
        return env.clone_core_state()

    def set(self, env: Any, state: Any) -> None:
        env.restore_core_state(state)


_BUILTIN_ADAPTERS: dict[type, _Adapter] | None = None
_USER_ADAPTERS: dict[type, _Adapter] = {}
_ADAPTER_CACHE: dict[type, _Adapter] = {}
_GENERIC = _GenericAdapter()
_MINIGRID = _DictAdapter("minigrid", _ENV_BASE_KEYS | _RENDER_KEYS | {"actions"})


def _builtin_adapters() -> dict[type, _Adapter]:
    global _BUILTIN_ADAPTERS
    if _BUILTIN_ADAPTERS is None:
        from gymnasium.envs import classic_control as cc
        from gymnasium.envs import toy_text as tt

        table: dict[type, _Adapter] = {
            cc.CartPoleEnv: _FieldsAdapter("classic", ("state", "steps_beyond_terminated")),
            cc.AcrobotEnv: _FieldsAdapter("classic", ("state",)),
            cc.MountainCarEnv: _FieldsAdapter("classic", ("state",)),
            cc.Continuous_MountainCarEnv: _FieldsAdapter("classic", ("state",)),
            cc.PendulumEnv: _FieldsAdapter("classic", ("state", "last_u")),
        }
        tables = ("P", "desc", "initial_state_distrib", "_cliff", "locs", "locs_colors")
        table[tt.FrozenLakeEnv] = _FieldsAdapter("toy_text", ("s", "lastaction"), tables)
        table[tt.CliffWalkingEnv] = _FieldsAdapter("toy_text", ("s", "lastaction"), tables)
        table[tt.TaxiEnv] = _FieldsAdapter("toy_text", ("s", "lastaction", "fickle_step", "taxi_orientation"), tables)
        table[tt.BlackjackEnv] = _FieldsAdapter(
            "toy_text", ("player", "dealer", "dealer_top_card_suit", "dealer_top_card_value_str")
        )
        try:  # Box2D is optional
            from gymnasium.envs import box2d

            for cls in (box2d.LunarLander, box2d.BipedalWalker, box2d.CarRacing):
                table[cls] = _ReplayAdapter()
        except Exception:  # pragma: no cover - box2d not installed
            pass
        _BUILTIN_ADAPTERS = table
    return _BUILTIN_ADAPTERS


def _is_atari(cls: type) -> bool:
    return cls.__name__ == "AtariEnv" and cls.__module__.startswith("ale_py")


def _is_minigrid(cls: type) -> bool:
    return any(c.__name__ == "MiniGridEnv" and c.__module__.startswith("minigrid") for c in cls.__mro__)


def _resolve_adapter(env: Any) -> _Adapter:
    cls = type(env)
    cached = _ADAPTER_CACHE.get(cls)
    if cached is not None:
        return cached
    adapter: _Adapter | None = _USER_ADAPTERS.get(cls)
    if adapter is None and callable(getattr(env, "clone_core_state", None)) and callable(
        getattr(env, "restore_core_state", None)
    ):
        adapter = _MethodAdapter()
    if adapter is None:
        adapter = _builtin_adapters().get(cls)
    if adapter is None and _is_atari(cls):
        adapter = _AtariAdapter()
    if adapter is None and _is_minigrid(cls):
        adapter = _MINIGRID
    if adapter is None:
        if isinstance(env, EzPickle):
            raise NotCloneableError(
                f"{cls.__module__}.{cls.__qualname__} has no exact snapshot method: it subclasses "
                "gymnasium.utils.EzPickle, so deepcopy/pickle build a fresh, un-reset env from its constructor "
                "arguments instead of copying its state (silently wrong). Make it cloneable with "
                "arsm_rl.cloning.register_cloneable(cls, get_state=..., set_state=...) or register_cloneable(cls, "
                "replay=True) if it is deterministic given its reset seed and actions, or define "
                "clone_core_state()/restore_core_state() on the env; then verify with check_cloneable()."
            )
        adapter = _GENERIC
    _ADAPTER_CACHE[cls] = adapter
    return adapter


def family_of(env: AnyEnv) -> str:
    """Name of the snapshot family used for ``env`` (``classic``, ``toy_text``, ``atari``, ``minigrid``,
    ``replay``, ``custom`` or ``generic``).

    :param env: any env, wrapped or not.
    :raises NotCloneableError: if no exact method exists.
    """
    return _resolve_adapter(env.unwrapped).family


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
    adapter: _Adapter
    if replay:
        if get_state is not None or set_state is not None:
            raise ValueError("give either replay=True or get_state/set_state, not both")
        adapter = _ReplayAdapter()
    else:
        if get_state is None or set_state is None:
            raise ValueError("register_cloneable needs both get_state and set_state (or replay=True)")
        adapter = _CallbackAdapter(get_state, set_state)
    _USER_ADAPTERS[env_cls] = adapter
    _ADAPTER_CACHE.pop(env_cls, None)


# ---------------------------------------------------------------------------------------------
# Wrapper layers
# ---------------------------------------------------------------------------------------------

_STATELESS = "stateless"
_STATISTICS = "statistics"
_WRAPPER_BASE_KEYS = frozenset(
    {"env", "_action_space", "_observation_space", "_metadata", "_cached_spec", "_reward_range", "_saved_kwargs"}
)


class _LayerHandler:
    kind = "state"

    def get(self, w: Any) -> Any:
        raise NotImplementedError

    def set(self, w: Any, state: Any) -> None:
        raise NotImplementedError


class _MarkerHandler(_LayerHandler):
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def get(self, w: Any) -> Any:
        return None

    def set(self, w: Any, state: Any) -> None:
        return None


class _AttrsHandler(_LayerHandler):
    def __init__(self, attrs: tuple[str, ...]) -> None:
        self.attrs = attrs

    def get(self, w: Any) -> Any:
        return tuple(_copy_value(getattr(w, a, None)) for a in self.attrs)

    def set(self, w: Any, state: Any) -> None:
        for a, v in zip(self.attrs, state, strict=True):
            setattr(w, a, _copy_value(v))


class _BufferHandler(_LayerHandler):
    """SB3 MaxAndSkipEnv: copy the frame buffer in place."""

    def get(self, w: Any) -> Any:
        return w._obs_buffer.copy()

    def set(self, w: Any, state: Any) -> None:
        w._obs_buffer[...] = state


class _FrameStackHandler(_LayerHandler):
    def get(self, w: Any) -> Any:
        return (tuple(w.obs_queue), w.padding_value)

    def set(self, w: Any, state: Any) -> None:
        items, padding = state
        w.obs_queue = deque(items, maxlen=w.stack_size)
        w.padding_value = padding


class _CheckerHandler(_LayerHandler):
    """PassiveEnvChecker: its one-off checks are not dynamics; mark them done so a restored fresh
    copy (never reset or stepped itself) steps without running the reset-dependent checks."""

    def get(self, w: Any) -> Any:
        return True

    def set(self, w: Any, state: Any) -> None:
        w.checked_reset = w.checked_step = w.checked_data_reuse = True
        w._previous_data = None


class _GenericWrapperHandler(_LayerHandler):
    def get(self, w: Any) -> Any:
        state = {k: v for k, v in vars(w).items() if k not in _WRAPPER_BASE_KEYS}
        if not state:
            return None
        try:
            return copy.deepcopy(state)
        except Exception as exc:
            raise NotCloneableError(
                f"wrapper {type(w).__name__}: deepcopy of its attributes failed ({exc!r}). Register its state with "
                "arsm_rl.cloning.register_wrapper_state(...) and verify with check_cloneable()."
            ) from exc

    def set(self, w: Any, state: Any) -> None:
        if state is not None:
            vars(w).update(copy.deepcopy(state))


class _CallbackHandler(_LayerHandler):
    def __init__(self, get_state: Callable[[Any], Any], set_state: Callable[[Any, Any], None]) -> None:
        self._get = get_state
        self._set = set_state

    def get(self, w: Any) -> Any:
        return self._get(w)

    def set(self, w: Any, state: Any) -> None:
        self._set(w, state)


_HANDLERS: dict[type, _LayerHandler] | None = None
_GENERIC_WRAPPER = _GenericWrapperHandler()
_STATELESS_HANDLER = _MarkerHandler(_STATELESS)
_STATISTICS_HANDLER = _MarkerHandler(_STATISTICS)
_RECORDER_HANDLER = _MarkerHandler("recorder")


def _handlers() -> dict[type, _LayerHandler]:
    global _HANDLERS
    if _HANDLERS is None:
        from gymnasium import wrappers as gw

        table: dict[type, _LayerHandler] = {
            gw.TimeLimit: _AttrsHandler(("_elapsed_steps",)),
            gw.OrderEnforcing: _AttrsHandler(("_has_reset",)),
            gw.PassiveEnvChecker: _CheckerHandler(),
            gw.RecordEpisodeStatistics: _STATISTICS_HANDLER,
            gw.FrameStackObservation: _FrameStackHandler(),
            CloneableWrapper: _RECORDER_HANDLER,
        }
        for name in ("ClipAction", "RescaleAction", "FlattenObservation", "TransformObservation", "TransformReward"):
            cls = getattr(gw, name, None)
            if cls is not None:
                table[cls] = _STATELESS_HANDLER
        try:
            from stable_baselines3.common import atari_wrappers as aw
            from stable_baselines3.common.monitor import Monitor

            table[Monitor] = _STATISTICS_HANDLER
            for cls in (aw.AtariWrapper, aw.NoopResetEnv, aw.FireResetEnv, aw.WarpFrame, aw.ClipRewardEnv):
                table[cls] = _STATELESS_HANDLER
            table[aw.EpisodicLifeEnv] = _AttrsHandler(("lives", "was_real_done"))
            table[aw.MaxAndSkipEnv] = _BufferHandler()
            table[aw.StickyActionEnv] = _AttrsHandler(("_sticky_action",))
        except Exception:  # pragma: no cover - SB3 is a dependency
            pass
        _HANDLERS = table
    return _HANDLERS


def _handler(w: Any) -> _LayerHandler:
    return _handlers().get(type(w), _GENERIC_WRAPPER)


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
    handler: _LayerHandler
    if statistics:
        handler = _STATISTICS_HANDLER
    elif get_state is None and set_state is None:
        handler = _STATELESS_HANDLER
    elif get_state is not None and set_state is not None:
        handler = _CallbackHandler(get_state, set_state)
    else:
        raise ValueError("give both get_state and set_state, or neither (stateless)")
    _handlers()[wrapper_cls] = handler


def _layers(env: AnyEnv) -> Iterator[Any]:
    e: Any = env
    while isinstance(e, gym.Wrapper):
        yield e
        e = e.env


# ---------------------------------------------------------------------------------------------
# RNG helpers
# ---------------------------------------------------------------------------------------------


def _rng_get(holder: Any) -> Any:
    g = getattr(holder, "_np_random", None)
    if g is None:
        return None
    return (g.bit_generator.state, getattr(holder, "_np_random_seed", None))


def _generator_from_state(state: dict[str, Any]) -> np.random.Generator:
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


def _rng_set(holder: Any, rng: Any, *, with_seed: bool) -> None:
    if rng is None:
        holder._np_random = None
        return
    state, seed = rng
    g = getattr(holder, "_np_random", None)
    if g is not None and type(g.bit_generator).__name__ == state["bit_generator"]:
        g.bit_generator.state = state
    else:
        holder._np_random = _generator_from_state(state)
    if with_seed:
        holder._np_random_seed = seed


def _action_spaces(env: AnyEnv) -> tuple[Any, ...]:
    outer = env.action_space
    inner = env.unwrapped.action_space
    return (outer,) if inner is outer else (outer, inner)


# ---------------------------------------------------------------------------------------------
# The recording wrapper
# ---------------------------------------------------------------------------------------------


def _freeze_action(action: Any) -> Any:
    if isinstance(action, np.ndarray):
        a = action.copy()
        a.flags.writeable = False
        return a
    return action


class CloneableWrapper(gym.Wrapper[Any, Any, Any, Any]):
    """Outermost thin wrapper added by :func:`make_cloneable`.

    It records, for replay-based families, the episode's reset condition and the action prefix
    since that reset, and it exposes :meth:`clone_state`, :meth:`restore_state` and
    :meth:`scratch_copy` as methods so that ``VecEnv.env_method("clone_state", indices=[i])``
    works on DummyVecEnv and SubprocVecEnv.  Steps and resets are passed through unchanged.

    :param env: the env to wrap.
    :param record: record reset conditions and actions (needed only by the replay family).
    """

    def __init__(self, env: AnyEnv, *, record: bool = False) -> None:
        super().__init__(env)
        self._record = record
        self._reset_cond: tuple[str, Any, Any] | None = None
        self._actions: list[Any] = []

    @property
    def records(self) -> bool:
        """Whether this wrapper records reset conditions and actions for replay."""
        return self._record

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if not self._record:
            return self.env.reset(seed=seed, options=options)
        opts = copy.deepcopy(options)
        cond: tuple[str, Any, Any]
        if seed is not None:
            cond = ("seed", int(seed), opts)
        else:
            cond = ("rng", self.env.unwrapped.np_random.bit_generator.state, opts)
        result = self.env.reset(seed=seed, options=options)
        self._reset_cond = cond
        self._actions = []
        return result

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        if self._record:
            self._actions.append(_freeze_action(action))
        return self.env.step(action)

    def _get_record(self) -> Any:
        if self._reset_cond is None:
            return None
        return (self._reset_cond, tuple(self._actions))

    def _set_record(self, record: Any) -> None:
        if record is None:
            self._reset_cond, self._actions = None, []
        else:
            self._reset_cond, self._actions = record[0], list(record[1])

    def clone_state(self) -> Snapshot:
        """Snapshot of this env (see :func:`arsm_rl.cloning.clone_state`)."""
        return _clone(self)

    def restore_state(self, snapshot: Snapshot) -> None:
        """Restore a snapshot into this env (see :func:`arsm_rl.cloning.restore_state`)."""
        _restore(self, snapshot)

    def scratch_copy(self) -> AnyEnv:
        """Independent copy without statistics wrappers (see :func:`arsm_rl.cloning.scratch_copy`)."""
        return _scratch(self)


def _recorder(env: AnyEnv) -> CloneableWrapper | None:
    for w in _layers(env):
        if isinstance(w, CloneableWrapper) and w._record:
            return w
    return None


def make_cloneable(env: AnyEnv) -> AnyEnv:
    """Return ``env`` wrapped by an outermost :class:`CloneableWrapper` (idempotent).

    Wrap **before the first reset** (replay families need to see it), and keep the wrapper
    outermost: ``VecEnv.env_method`` finds the outermost ``clone_state`` and a snapshot covers the
    layers from that wrapper inwards.  With SB3 use ``make_vec_env(..., wrapper_class=make_cloneable)``.

    :param env: any env.
    :return: ``env`` itself if it already is a :class:`CloneableWrapper`, else a new wrapper.
    :raises NotCloneableError: if no exact snapshot method exists for ``type(env.unwrapped)``.
    """
    if isinstance(env, CloneableWrapper):
        return env
    adapter = _resolve_adapter(env.unwrapped)
    adapter.prepare(env.unwrapped)
    return CloneableWrapper(env, record=adapter.replay and _recorder(env) is None)


# ---------------------------------------------------------------------------------------------
# clone / restore / scratch copy
# ---------------------------------------------------------------------------------------------


_TYPE_NAMES: dict[type, str] = {}


def _type_name(env: Any) -> str:
    cls = type(env)
    name = _TYPE_NAMES.get(cls)
    if name is None:
        name = _TYPE_NAMES[cls] = f"{cls.__module__}.{cls.__qualname__}"
    return name


def _clone(env: AnyEnv) -> Snapshot:
    u = env.unwrapped
    adapter = _resolve_adapter(u)
    names: list[str] = []
    states: list[Any] = []
    record: Any = None
    have_recorder = False
    for w in _layers(env):
        h = _handler(w)
        kind = h.kind
        if kind == "state":
            names.append(type(w).__qualname__)
            states.append(h.get(w))
        elif kind == _STATELESS:
            names.append(type(w).__qualname__)
            states.append(None)
        elif kind == "recorder" and not have_recorder and w._record:
            have_recorder = True
            record = w._get_record()
    if adapter.replay:
        if not have_recorder:
            raise NotCloneableError(
                f"{type(u).__name__} can only be cloned exactly by replaying its episode (a Box2D world cannot be "
                "restored exactly), which needs the recording wrapper: build the env with "
                "arsm_rl.cloning.make_cloneable(env) before its first reset."
            )
        if record is None:
            raise NotCloneableError(
                f"{type(u).__name__}: no reset was recorded since make_cloneable(); call reset() on the wrapped env first."
            )
        core = None
        steps = len(record[1])
    else:
        core = adapter.get(u)
        steps = 0
    return Snapshot(
        env_type=_type_name(u),
        family=adapter.family,
        fingerprint=adapter.fingerprint(u),
        core=core,
        rng=_rng_get(u),
        action_rngs=tuple(_rng_get(s) for s in _action_spaces(env)),
        layer_names=tuple(names),
        layer_states=tuple(states),
        record=record,
        restore_steps=steps,
    )


def clone_state(env: AnyEnv) -> Snapshot:
    """Capture the exact state of ``env`` and of its wrappers (statistics wrappers excluded).

    :param env: any env, wrapped or not; the whole wrapper chain from ``env`` inwards is captured.
    :return: an immutable, picklable :class:`Snapshot`.
    :raises NotCloneableError: if no exact method exists (e.g. an EzPickle env without adapter, or
        a replay-family env such as LunarLander not wrapped with :func:`make_cloneable`).
    """
    return _clone(env)


def _replay(recorder: CloneableWrapper, record: Any) -> None:
    """Reset the chain below ``recorder`` (statistics layers spliced out) and replay the actions."""
    spliced: list[tuple[Any, Any]] = []
    parent: Any = recorder
    while isinstance(parent, gym.Wrapper):
        child = parent.env
        while isinstance(child, gym.Wrapper) and _handler(child).kind == _STATISTICS:
            child = child.env
        if child is not parent.env:
            spliced.append((parent, parent.env))
            parent.env = child
        parent = child
    try:
        (kind, value, options), actions = record
        inner = recorder.env
        opts = copy.deepcopy(options)
        if kind == "seed":
            inner.reset(seed=value, options=opts)
        else:
            _rng_set(inner.unwrapped, (value, None), with_seed=False)
            inner.reset(options=opts)
        for a in actions:
            inner.step(a)
    finally:
        for p, original in reversed(spliced):
            p.env = original


def _restore(env: AnyEnv, snap: Snapshot) -> None:
    if not isinstance(snap, Snapshot):
        raise TypeError(f"restore_state expects a Snapshot, got {type(snap).__name__}")
    u = env.unwrapped
    if _type_name(u) != snap.env_type:
        raise ValueError(f"snapshot of {snap.env_type} cannot be restored into {_type_name(u)}")
    adapter = _resolve_adapter(u)
    if adapter.fingerprint(u) != snap.fingerprint:
        raise ValueError(
            f"snapshot settings {snap.fingerprint!r} differ from the target env's {adapter.fingerprint(u)!r}"
        )
    targets: list[tuple[Any, _LayerHandler]] = []
    recorder: CloneableWrapper | None = None
    for w in _layers(env):
        h = _handler(w)
        if h.kind in ("state", _STATELESS):
            targets.append((w, h))
        elif h.kind == "recorder" and recorder is None and w._record:
            recorder = w
    names = tuple(type(w).__qualname__ for w, _ in targets)
    if names != snap.layer_names:
        raise ValueError(
            f"wrapper layers differ: snapshot has {list(snap.layer_names)}, target has {list(names)} "
            "(statistics wrappers and CloneableWrapper are ignored)"
        )
    if adapter.replay:
        if recorder is None:
            raise NotCloneableError(
                f"{type(u).__name__} snapshots are restored by replay, which needs the target env to be wrapped "
                "with arsm_rl.cloning.make_cloneable(env)."
            )
        _replay(recorder, snap.record)
    else:
        adapter.set(u, snap.core)
    if recorder is not None:
        recorder._set_record(snap.record)
    for (w, h), state in zip(targets, snap.layer_states, strict=True):
        if state is not None:
            h.set(w, state)
    _rng_set(u, snap.rng, with_seed=True)
    for space, rng in zip(_action_spaces(env), snap.action_rngs, strict=False):
        if rng is not None or getattr(space, "_np_random", None) is not None:
            _rng_set(space, rng, with_seed=False)


def restore_state(env: AnyEnv, snapshot: Snapshot) -> None:
    """Put ``env`` (and its wrappers) into the state captured by ``snapshot``; no reset is needed.

    Statistics wrappers (SB3 ``Monitor``, ``RecordEpisodeStatistics``) are never touched.  The
    target must be the env the snapshot came from or another instance built the same way (same
    class, settings and non-statistics wrapper layers), e.g. a :func:`scratch_copy`.  For the
    replay family this performs ``snapshot.restore_steps`` env steps.

    :param env: the target env.
    :param snapshot: a snapshot from :func:`clone_state`; it is not modified and can be reused.
    :raises ValueError: if the snapshot does not fit the target env.
    """
    _restore(env, snapshot)


def _scratch(env: AnyEnv) -> AnyEnv:
    u = env.unwrapped
    adapter = _resolve_adapter(u)
    memo: dict[int, Any] = {}
    for name in adapter.shared_attrs:
        value = vars(u).get(name)
        if value is not None:
            memo[id(value)] = value
    layers = list(_layers(env))
    for w in reversed(layers):
        if _handler(w).kind == _STATISTICS:
            memo[id(w)] = copy.deepcopy(w.env, memo)
    result: AnyEnv = copy.deepcopy(env, memo)
    return result


def scratch_copy(env: AnyEnv) -> AnyEnv:
    """An independent env built like ``env`` but without statistics wrappers, ready for :func:`restore_state`.

    Made by ``copy.deepcopy`` (constant tables such as Taxi's ``P`` are shared).  For EzPickle envs
    (Atari, LunarLander) this builds a fresh instance from the constructor arguments, which is fine
    because :func:`restore_state` then sets (or replays) the state; for Atari this loads the ROM
    (~0.1-0.3 s), so build a pool of scratch copies once and reuse it.  Its state is unspecified
    until a snapshot is restored into it.

    :param env: any cloneable env.
    :return: the copy.
    """
    return _scratch(env)


# ---------------------------------------------------------------------------------------------
# check_cloneable
# ---------------------------------------------------------------------------------------------


def _canon(x: Any) -> Any:
    """Hashable, bit-exact representation of an observation or reward."""
    if isinstance(x, np.ndarray | np.generic):
        a = np.asarray(x)
        return ("a", a.dtype.str, a.shape, a.tobytes())
    if isinstance(x, dict):
        return ("d", tuple((k, _canon(v)) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))))
    if isinstance(x, tuple | list):
        return ("t", tuple(_canon(v) for v in x))
    return ("o", type(x).__name__, repr(x))


_FIELDS = ("obs", "reward", "terminated", "truncated")


def _make_env(env_id: str, kwargs: dict[str, Any]) -> AnyEnv:
    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
    elif env_id.startswith("MiniGrid") or env_id.startswith("BabyAI"):
        import minigrid  # noqa: F401  (registers the envs)
    return gym.make(env_id, **kwargs)


def _first_diff(a: tuple[Any, ...], b: tuple[Any, ...]) -> str | None:
    for name, x, y in zip(_FIELDS, a, b, strict=True):
        if x != y:
            return name
    return None


def _run(env: AnyEnv, actions: list[Any]) -> list[tuple[Any, ...]]:
    """Step ``actions``, resetting (unseeded) when an episode ends; returns canonical transitions."""
    out: list[tuple[Any, ...]] = []
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        out.append((_canon(obs), _canon(float(r)), bool(term), bool(trunc)))
        if term or trunc:
            obs, _ = env.reset()
            out.append((_canon(obs), "reset", False, False))
    return out


def _compare(got: list[tuple[Any, ...]], ref: list[tuple[Any, ...]], where: str) -> None:
    step = 0
    for g, r in zip(got, ref, strict=False):
        field = _first_diff(g, r)
        if field is not None:
            after = " (observation returned by the reset after the episode ended)" if r[1] == "reset" else ""
            raise CloningError(
                f"{field} diverged at continuation step {step}{after} {where}: got {_short(g, field)}, "
                f"reference {_short(r, field)}"
            )
        if r[1] != "reset":
            step += 1


def _short(t: tuple[Any, ...], field: str) -> str:
    value = t[_FIELDS.index(field)]
    if isinstance(value, tuple) and value and value[0] == "a":
        return f"array{value[2]} {value[1]} (bytes differ)"
    s = repr(value)
    return s if len(s) < 120 else s[:117] + "..."


def check_cloneable(
    env_or_id: AnyEnv | str,
    *,
    seed: int = 0,
    n_prefix: int = 50,
    n_wander: int = 40,
    n_compare: int = 200,
    env_kwargs: dict[str, Any] | None = None,
) -> None:
    """Check that snapshots of an env are exact, in the spirit of SB3's ``check_env``.

    Builds the env and an identically seeded twin, steps both through a random prefix of
    ``n_prefix`` actions (resetting unseeded when an episode ends), snapshots the env, checks the
    snapshot survives pickling, wanders off for ``n_wander`` different random steps, restores and
    compares the next ``n_compare`` transitions (obs bytes, reward, terminated, truncated; unseeded
    resets included) with the untouched twin.  The same is checked after restoring the snapshot a
    second time and after restoring it into a :func:`scratch_copy`.

    :param env_or_id: an env instance (its twin is a :func:`scratch_copy`, so both must reset
        identically from the same seed) or a registered id (``ALE/`` and ``MiniGrid`` ids are
        registered automatically).
    :param seed: seed for the reset and the random actions.
    :param n_prefix: actions before the snapshot.
    :param n_wander: perturbation actions between snapshot and restore.
    :param n_compare: continuation actions compared with the twin.
    :param env_kwargs: keyword arguments for ``gym.make`` when an id is given.
    :raises NotCloneableError: if no exact method exists for the env.
    :raises CloningError: naming the field and step that diverged.
    """
    if isinstance(env_or_id, str):
        env = _make_env(env_or_id, dict(env_kwargs or {}))
        twin = _make_env(env_or_id, dict(env_kwargs or {}))
    else:
        env = env_or_id
        twin = _scratch(env)
    env = make_cloneable(env)
    space = copy.deepcopy(env.action_space)
    space.seed(seed)
    wander_space = copy.deepcopy(env.action_space)
    wander_space.seed(seed + 1)

    obs_env, _ = env.reset(seed=seed)
    obs_twin, _ = twin.reset(seed=seed)
    if _canon(obs_env) != _canon(obs_twin):
        raise CloningError("two instances reset with the same seed gave different observations: the env is not "
                           "reproducible from its seed, so cloning cannot be verified")
    prefix = [space.sample() for _ in range(n_prefix)]
    got, ref = _run(env, prefix), _run(twin, prefix)
    for t, (g, r) in enumerate(zip(got, ref, strict=False)):
        field = _first_diff(g, r)
        if field is not None:
            raise CloningError(f"{field} differs at prefix step {t} between two identically seeded instances given "
                               "the same actions: the env is not reproducible, so cloning cannot be verified")

    snap = clone_state(env)
    try:
        snap = pickle.loads(pickle.dumps(snap))
    except Exception as exc:
        raise CloningError(f"snapshot does not survive a pickle round trip: {exc!r}") from exc
    continuation = [space.sample() for _ in range(n_compare)]
    reference = _run(twin, continuation)

    _run(env, [wander_space.sample() for _ in range(n_wander)])
    restore_state(env, snap)
    _compare(_run(env, continuation), reference, "after restore")
    restore_state(env, snap)
    _compare(_run(env, continuation), reference, "after restoring the same snapshot a second time")
    scratch = _scratch(env)
    restore_state(scratch, snap)
    _compare(_run(scratch, continuation), reference, "in a scratch_copy after restore")
    scratch.close()
