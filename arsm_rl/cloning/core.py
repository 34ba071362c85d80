"""The recording wrapper and the snapshot operations: clone, restore (by state copy or replay) and scratch copy."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from arsm_rl.cloning.access import StateAccess, Stateless
from arsm_rl.cloning.families import render_handles
from arsm_rl.cloning.layers import LayerKind, LayerRule, iter_layers, layer_rule, set_layer_rule
from arsm_rl.cloning.registry import resolve
from arsm_rl.cloning.rng import restore_space_rngs, rng_get, rng_set, space_rngs
from arsm_rl.cloning.snapshot import AnyEnv, NotCloneableError, Snapshot


def _freeze_action(action: Any) -> Any:
    if isinstance(action, np.ndarray):
        a = action.copy()
        a.flags.writeable = False
        return a
    return action


def _options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``reset`` keyword arguments that pass ``options`` on only when there are some."""
    return {} if options is None else {"options": options}


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
        self._reset_cond: tuple[str, Any, Any, tuple[Any, ...]] | None = None
        self._actions: list[Any] = []

    @property
    def records(self) -> bool:
        """Whether this wrapper records reset conditions and actions for replay."""
        return self._record

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        # ``options`` is passed on only when given: SB3 trains envs whose reset takes no options.
        if not self._record:
            return self.env.reset(seed=seed, **_options(options))
        opts = copy.deepcopy(options)
        space_states = space_rngs(self.env, tested=_tested(self.env))  # a reset may draw from them
        cond: tuple[str, Any, Any, tuple[Any, ...]]
        if seed is not None:
            cond = ("seed", int(seed), opts, space_states)
        else:
            cond = ("rng", self.env.unwrapped.np_random.bit_generator.state, opts, space_states)
        result = self.env.reset(seed=seed, **_options(options))
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
        return clone_state(self)

    def restore_state(self, snapshot: Snapshot) -> None:
        """Restore a snapshot into this env (see :func:`arsm_rl.cloning.restore_state`)."""
        restore_state(self, snapshot)

    def scratch_copy(self) -> AnyEnv:
        """Independent copy without statistics wrappers (see :func:`arsm_rl.cloning.scratch_copy`)."""
        return scratch_copy(self)


set_layer_rule(CloneableWrapper, LayerRule(LayerKind.RECORDER, Stateless(), verified=True))


def _recorder(env: AnyEnv) -> CloneableWrapper | None:
    for w in iter_layers(env):
        if isinstance(w, CloneableWrapper) and w._record:
            return w
    return None


def _tested(env: AnyEnv) -> bool:
    """Whether every part of ``env``'s snapshots is a built-in, tested method (its family and wrapper layers)."""
    return resolve(env.unwrapped).verified and all(layer_rule(w).verified for w in iter_layers(env))


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
    found = resolve(env.unwrapped)
    found.prepare(env.unwrapped)
    return CloneableWrapper(env, record=found.replay and _recorder(env) is None)


_TYPE_NAMES: dict[type, str] = {}


def _type_name(env: Any) -> str:
    cls = type(env)
    name = _TYPE_NAMES.get(cls)
    if name is None:
        name = _TYPE_NAMES[cls] = f"{cls.__module__}.{cls.__qualname__}"
    return name


def clone_state(env: AnyEnv) -> Snapshot:
    """Capture the exact state of ``env`` and of its wrappers (statistics wrappers excluded).

    :param env: any env, wrapped or not; the whole wrapper chain from ``env`` inwards is captured.
    :return: an immutable, picklable :class:`Snapshot`.
    :raises NotCloneableError: if no exact method exists (e.g. an EzPickle env without adapter, or
        a replay-family env such as LunarLander not wrapped with :func:`make_cloneable`).
    """
    u = env.unwrapped
    found = resolve(u)
    names: list[str] = []
    states: list[Any] = []
    record: Any = None
    have_recorder = False
    tested = found.verified
    for w in iter_layers(env):
        rule = layer_rule(w)
        tested = tested and rule.verified
        if rule.kind in (LayerKind.STATE, LayerKind.STATELESS):
            names.append(type(w).__qualname__)
            states.append(rule.state.get(w))
        elif rule.kind is LayerKind.RECORDER and not have_recorder and w._record:
            have_recorder = True
            record = w._get_record()
    if found.state is None:
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
        core = found.state.get(u)
        steps = 0
    return Snapshot(
        env_type=_type_name(u),
        family=found.name,
        fingerprint=found.fingerprint(u),
        core=core,
        rng=rng_get(u),
        space_rngs=space_rngs(env, tested=tested),
        layer_names=tuple(names),
        layer_states=tuple(states),
        record=record,
        restore_steps=steps,
    )


def _replay(recorder: CloneableWrapper, record: Any) -> None:
    """Reset the chain below ``recorder`` (statistics layers spliced out) and replay the actions."""
    spliced: list[tuple[Any, Any]] = []
    parent: Any = recorder
    while isinstance(parent, gym.Wrapper):
        child = parent.env
        while isinstance(child, gym.Wrapper) and layer_rule(child).kind is LayerKind.STATISTICS:
            child = child.env
        if child is not parent.env:
            spliced.append((parent, parent.env))
            parent.env = child
        parent = child
    try:
        (kind, value, options, space_states), actions = record
        inner = recorder.env
        opts = _options(copy.deepcopy(options))
        restore_space_rngs(inner, space_states, tested=_tested(inner))
        if kind == "seed":
            inner.reset(seed=value, **opts)
        else:
            rng_set(inner.unwrapped, (value, None), with_seed=False)
            inner.reset(**opts)
        for a in actions:
            inner.step(a)
    finally:
        for p, original in reversed(spliced):
            p.env = original


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
    if not isinstance(snapshot, Snapshot):
        raise TypeError(f"restore_state expects a Snapshot, got {type(snapshot).__name__}")
    u = env.unwrapped
    if _type_name(u) != snapshot.env_type:
        raise ValueError(f"snapshot of {snapshot.env_type} cannot be restored into {_type_name(u)}")
    found = resolve(u)
    if found.fingerprint(u) != snapshot.fingerprint:
        raise ValueError(f"snapshot settings {snapshot.fingerprint!r} differ from the target env's {found.fingerprint(u)!r}")
    targets: list[tuple[Any, StateAccess]] = []
    recorder: CloneableWrapper | None = None
    tested = found.verified
    for w in iter_layers(env):
        rule = layer_rule(w)
        tested = tested and rule.verified
        if rule.kind in (LayerKind.STATE, LayerKind.STATELESS):
            targets.append((w, rule.state))
        elif rule.kind is LayerKind.RECORDER and recorder is None and w._record:
            recorder = w
    names = tuple(type(w).__qualname__ for w, _ in targets)
    if names != snapshot.layer_names:
        raise ValueError(
            f"wrapper layers differ: snapshot has {list(snapshot.layer_names)}, target has {list(names)} "
            "(statistics wrappers and CloneableWrapper are ignored)"
        )
    if found.state is None:
        if recorder is None:
            raise NotCloneableError(
                f"{type(u).__name__} snapshots are restored by replay, which needs the target env to be wrapped "
                "with arsm_rl.cloning.make_cloneable(env)."
            )
        _replay(recorder, snapshot.record)
    else:
        found.state.set(u, snapshot.core)
    if recorder is not None:
        recorder._set_record(snapshot.record)
    for (w, access), state in zip(targets, snapshot.layer_states, strict=True):
        if state is not None:
            access.set(w, state)
    rng_set(u, snapshot.rng, with_seed=True)
    restore_space_rngs(env, snapshot.space_rngs, tested=tested)


def headless_function(env: AnyEnv) -> Callable[[Any], None] | None:
    """The function that stops the render-only work of envs like ``env`` (``Family.headless``, e.g. LunarLander's
    flame particles), which changes nothing a step returns.

    :param env: any env, wrapped or not.
    :return: ``headless(unwrapped)``, or ``None`` when its family has none or no exact snapshot method.
    """
    try:
        return resolve(env.unwrapped).headless
    except NotCloneableError:
        return None


def make_headless(env: AnyEnv) -> AnyEnv:
    """Stop the render-only work of ``env`` (:func:`headless_function`). For the copies pseudo rollouts run on
    (scratch envs, fork rollouts), never for a training env, whose renders it would change.

    :param env: any env, wrapped or not.
    :return: ``env``, changed in place.
    """
    headless = headless_function(env)
    if headless is not None:
        headless(env.unwrapped)
    return env


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
    u = env.unwrapped
    found = resolve(u)
    memo: dict[int, Any] = {}
    for name in found.shared_attrs:
        value = vars(u).get(name)
        if value is not None:
            memo[id(value)] = value
    for layer in (u, *iter_layers(env)):  # a copy renders afresh (pygame objects cannot be copied)
        for handle in render_handles(layer):
            memo[id(handle)] = None
    for w in reversed(list(iter_layers(env))):
        if layer_rule(w).kind is LayerKind.STATISTICS:
            memo[id(w)] = copy.deepcopy(w.env, memo)
    result: AnyEnv = copy.deepcopy(env, memo)
    return result
