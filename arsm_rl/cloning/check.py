"""``check_cloneable``: verify that snapshots of an env are exact, in the spirit of SB3's ``check_env``."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from arsm_rl.cloning.core import clone_state, make_cloneable, restore_state, scratch_copy
from arsm_rl.cloning.ids import register_optional_envs
from arsm_rl.cloning.layers import iter_layers, layer_rule, time_limit
from arsm_rl.cloning.masks import sample_action
from arsm_rl.cloning.registry import resolve
from arsm_rl.cloning.rng import GLOBAL_RNGS, env_spaces, global_rng_states, preserved_global_rngs
from arsm_rl.cloning.snapshot import AnyEnv, CloningError, NotCloneableError

_FIELDS = ("obs", "reward", "terminated", "truncated")


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


def _make_env(env_id: str, kwargs: dict[str, Any]) -> AnyEnv:
    register_optional_envs(env_id)
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


def _run_random(env: AnyEnv, space: gym.Space[Any], n: int) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """:func:`_run` with ``n`` random actions drawn from ``space`` as it goes (valid ones, for masked envs);
    :return: the actions, to replay, and the transitions"""
    actions: list[Any] = []
    out: list[tuple[Any, ...]] = []
    for _ in range(n):
        actions.append(sample_action(env, space))
        out += _run(env, actions[-1:])
    return actions, out


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

    Builds the env and an identically seeded twin (their spaces seeded too, as envs may draw from them), steps both
    through a random prefix of ``n_prefix`` actions (resetting unseeded when an episode ends), snapshots the env, checks
    the snapshot survives pickling, wanders off for ``n_wander`` different random steps, restores and compares the next
    ``n_compare`` transitions (obs bytes, reward, terminated, truncated; unseeded resets included) with the untouched
    twin.  The same is checked after restoring the snapshot a
    second time and after restoring it into a :func:`scratch_copy`.

    :param env_or_id: an env instance (its twin is a :func:`scratch_copy`, so both must reset
        identically from the same seed) or a registered id (ALE and MiniGrid/BabyAI ids are
        registered automatically, see :func:`~arsm_rl.cloning.ids.register_optional_envs`).
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
        twin = scratch_copy(env)
    env = make_cloneable(env)
    for i, (own, twins) in enumerate(zip(env_spaces(env), env_spaces(twin), strict=True)):  # the envs may draw from them
        own.seed(seed + i)
        twins.seed(seed + i)
    space = copy.deepcopy(env.action_space)
    space.seed(seed)
    wander_space = copy.deepcopy(env.action_space)
    wander_space.seed(seed + 1)

    obs_env, _ = env.reset(seed=seed)
    obs_twin, _ = twin.reset(seed=seed)
    if _canon(obs_env) != _canon(obs_twin):
        raise CloningError(
            "two instances reset with the same seed gave different observations: the env is not "
            "reproducible from its seed, so cloning cannot be verified"
        )
    prefix, got = _run_random(env, space, n_prefix)
    ref = _run(twin, prefix)
    for t, (g, r) in enumerate(zip(got, ref, strict=False)):
        field = _first_diff(g, r)
        if field is not None:
            raise CloningError(
                f"{field} differs at prefix step {t} between two identically seeded instances given "
                "the same actions: the env is not reproducible, so cloning cannot be verified"
            )

    snap = clone_state(env)
    try:
        snap = pickle.loads(pickle.dumps(snap))
    except Exception as exc:
        raise CloningError(f"snapshot does not survive a pickle round trip: {exc!r}") from exc
    continuation, reference = _run_random(twin, space, n_compare)

    _run_random(env, wander_space, n_wander)
    _check_restore(env, snap, continuation, reference, "after restore")
    _check_restore(env, snap, continuation, reference, "after restoring the same snapshot a second time")
    _check_scratch_restore(env, snap, continuation, reference, "in a scratch_copy after restore")


def _check_restore(env: AnyEnv, snap: Any, continuation: list[Any], reference: list[tuple[Any, ...]], where: str) -> None:
    """Restore ``snap`` into ``env``, step ``continuation`` and compare with ``reference``."""
    restore_state(env, snap)
    _compare(_run(env, continuation), reference, where)


def _check_scratch_restore(env: AnyEnv, snap: Any, continuation: list[Any], reference: list[tuple[Any, ...]],
                           where: str) -> None:  # fmt: skip
    """:func:`_check_restore` in a fresh :func:`scratch_copy` of ``env``."""
    scratch = scratch_copy(env)
    try:
        _check_restore(scratch, snap, continuation, reference, where)
    finally:
        scratch.close()


def unverified_parts(env: AnyEnv) -> list[str]:
    """
    The parts of an env's snapshots that are not built-in, tested methods: the generic deepcopy family, user
    adapters (:func:`~arsm_rl.cloning.register_cloneable`, ``clone_core_state``), MiniGrid subclasses from other
    packages, and wrapper layers under the generic or a user rule.

    :param env: any env, wrapped or not (only its types are read).
    :return: one description per part; empty when every part is verified.
    :raises NotCloneableError: if no exact method exists.
    """
    found = resolve(env.unwrapped)
    parts = [] if found.verified else [f"{type(env.unwrapped).__name__} ({found.name} family)"]
    parts += [f"wrapper {type(w).__name__}" for w in iter_layers(env) if not layer_rule(w).verified]
    return parts


def episodes_bounded(env: AnyEnv) -> bool:
    """Whether every episode of ``env`` ends within a limit: a ``TimeLimit`` with a maximum, or a family whose
    episodes end on their own (MiniGrid, ALE, Blackjack).

    :param env: any env, wrapped or not (an env without an exact snapshot method counts as its generic family).
    """
    try:
        bounded = resolve(env.unwrapped).bounded
    except NotCloneableError:
        bounded = False
    limit = time_limit(env)
    return bounded or (limit is not None and limit[1] != np.iinfo(np.int64).max)


def compare_restores(
    work: Any,
    take: Callable[[Any], Any],
    restores: Sequence[tuple[str, Callable[[Any], Any]]],
    *,
    seed: int,
    n_prefix: int,
    n_compare: int,
) -> None:
    """The exactness check behind :func:`verify_snapshots`, for any snapshot method.

    Reset ``work`` with ``seed``, take ``n_prefix`` random (valid) actions, snapshot it with ``take(work)``, take ``n_compare``
    more (the reference); then each restore ``(where, restore)`` must give an env (``restore(snapshot)``: ``work``
    itself or a new one, closed after) whose same ``n_compare`` transitions match the reference bit for bit
    (unseeded resets at episode ends included).

    :param work: an env (``reset``, ``step``, ``action_space``)
    :param take: ``work`` -> a snapshot of its current state
    :param restores: the restores to check, each named for the error message
    :param seed: seed of the reset and of the random actions
    :param n_prefix: actions before the snapshot
    :param n_compare: actions compared after each restore
    :raises CloningError: naming the field and step that diverged
    """
    space = copy.deepcopy(work.action_space)
    space.seed(seed)
    work.reset(seed=seed)
    _run_random(work, space, n_prefix)
    snap = take(work)
    continuation, reference = _run_random(work, space, n_compare)
    for where, restore in restores:
        env = restore(snap)
        try:
            _compare(_run(env, continuation), reference, where)
        finally:
            if env is not work:
                env.close()


def verify_snapshots(env: AnyEnv, *, seed: int = 0, n_prefix: int = 20, n_compare: int = 30) -> None:
    """The quick exactness check ARSM runs before training on an env with :func:`unverified_parts`.

    On a :func:`scratch_copy` of ``env`` (``env`` itself is not touched, and Python's and numpy's global random
    states are put back): reset with ``seed``, take ``n_prefix`` random actions, snapshot, take ``n_compare`` more;
    then restore the snapshot, into the same copy and into a second one, and compare the same ``n_compare``
    transitions bit for bit (:func:`compare_restores`). State the snapshot misses (a global RNG, a closure, a C
    handle) makes them differ. :func:`check_cloneable` is the thorough version (an independent twin, pickling,
    longer runs).

    :param env: a cloneable env (see :func:`~arsm_rl.cloning.make_cloneable`).
    :param seed: seed of the reset and of the random actions.
    :param n_prefix: actions before the snapshot.
    :param n_compare: actions compared after each restore.
    :raises NotCloneableError: naming the diverging field and the ways to make the env cloneable.
    """
    with preserved_global_rngs():
        work = make_cloneable(scratch_copy(env))

        def into_work(snap: Any) -> AnyEnv:
            restore_state(work, snap)
            return work

        def into_another(snap: Any) -> AnyEnv:
            scratch = scratch_copy(work)
            restore_state(scratch, snap)
            return scratch

        restores = [("after restore", into_work), ("in another copy after restore", into_another)]
        before = global_rng_states()
        try:
            try:
                compare_restores(work, clone_state, restores, seed=seed, n_prefix=n_prefix, n_compare=n_compare)
            finally:  # a draw from a process-wide stream is the cause, whether or not this short run diverged
                drawn = [name for name, now, was in zip(GLOBAL_RNGS, global_rng_states(), before, strict=True) if now != was]
                if drawn:
                    raise CloningError(f"the env draws from {' and '.join(drawn)}, which no snapshot holds")
        except CloningError as error:
            raise NotCloneableError(
                f"snapshots of {', '.join(unverified_parts(env))} are not exact: {error}. The state lives somewhere a "
                "snapshot does not reach (a global RNG such as Python's random, a closure, a C handle): register an exact "
                "adapter with arsm_rl.cloning.register_cloneable(...), or define clone_core_state()/restore_core_state() "
                "on the env, verify it with check_cloneable(), or train under arsm_rl.ForkVecEnv (fork snapshots copy "
                "the whole process)"
            ) from None
        finally:
            work.close()
