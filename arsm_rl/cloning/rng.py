"""RNG capture and restore: ``np_random`` bit-generator states of the env and of its spaces."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from arsm_rl.cloning.snapshot import AnyEnv


def rng_get(holder: Any) -> Any:
    """
    :param holder: an env (``unwrapped``) or a space.
    :return: ``(bit-generator state, _np_random_seed)``, or ``None`` while it has no generator.
    """
    g = getattr(holder, "_np_random", None)
    if g is None:
        return None
    return (g.bit_generator.state, getattr(holder, "_np_random_seed", None))


def held_spaces(env: AnyEnv, *, tested: bool) -> tuple[Any, ...]:
    """The spaces whose generators a snapshot of ``env`` holds.

    :param env: any env.
    :param tested: every part of ``env`` is a built-in, tested snapshot method (its family and wrapper layers
        ``verified``): those envs and wrappers draw from no space, so only the action spaces are held (as for code
        that samples ``env.action_space``), at no extra cost; otherwise every space of :func:`env_spaces`.
    """
    return action_spaces(env) if tested else env_spaces(env)


def space_rngs(env: AnyEnv, *, tested: bool) -> tuple[Any, ...]:
    """The :func:`rng_get` states of :func:`held_spaces`. Untested envs' spaces are given a generator first if they have
    none yet (from fresh entropy, as their first ``sample()`` would), so that a snapshot taken before a space's first
    draw still restores its draws.
    """
    held = held_spaces(env, tested=tested)
    if not tested:
        for space in held:
            if getattr(space, "_np_random", None) is None:
                space.np_random  # noqa: B018 (the property makes the generator)
    return tuple(rng_get(s) for s in held)


def restore_space_rngs(env: AnyEnv, states: tuple[Any, ...], *, tested: bool) -> None:
    """Put the states of :func:`space_rngs` back into ``env``'s spaces (a space that had no generator then gets none)."""
    for space, rng in zip(held_spaces(env, tested=tested), states, strict=False):
        if rng is not None or getattr(space, "_np_random", None) is not None:
            rng_set(space, rng, with_seed=False)


def action_spaces(env: AnyEnv) -> tuple[Any, ...]:
    """
    :param env: any env.
    :return: ``env.action_space``, and ``env.unwrapped.action_space`` when it is another object.
    """
    outer = env.action_space
    inner = env.unwrapped.action_space
    return (outer,) if inner is outer else (outer, inner)


def _generator_from_state(state: dict[str, Any]) -> np.random.Generator:
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


def rng_set(holder: Any, rng: Any, *, with_seed: bool) -> None:
    """Put a generator state back, in place when the bit generator has the same type.

    :param holder: an env (``unwrapped``) or a space.
    :param rng: a value of :func:`rng_get`; ``None`` removes the generator.
    :param with_seed: also set ``_np_random_seed``.
    """
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


def _subspaces(space: Any) -> tuple[Any, ...]:
    """The spaces a composite space samples from (its own generator draws only lengths and choices)."""
    if isinstance(space, spaces.Dict):
        return tuple(space.spaces.values())
    if isinstance(space, spaces.Tuple | spaces.OneOf):
        return tuple(space.spaces)
    if isinstance(space, spaces.Sequence):
        return (space.feature_space,)
    if isinstance(space, spaces.Graph):
        return tuple(s for s in (space.node_space, space.edge_space) if s is not None)
    return ()


def env_spaces(env: AnyEnv) -> tuple[Any, ...]:
    """Every space an env or its wrappers can sample from, each once: the action and observation spaces that a
    wrapper layer sets for itself, those of ``env.unwrapped``, and their subspaces (``Dict``, ``Tuple``, ``OneOf``,
    ``Sequence``, ``Graph``), outermost first.

    Envs that draw from their own spaces (``self.observation_space.sample()``, common in users' and SB3's test envs)
    keep state in these spaces' generators, so snapshots capture them.

    :param env: any env.
    :return: the distinct space objects.
    """
    found: dict[int, Any] = {}
    layer: Any = env
    while True:
        own = vars(layer)
        for name in ("_action_space", "_observation_space", "action_space", "observation_space"):
            space = own.get(name)
            stack = [] if space is None else [space]
            while stack:
                s = stack.pop()
                if id(s) not in found:
                    found[id(s)] = s
                    stack += reversed(_subspaces(s))
        if not isinstance(layer, gym.Wrapper):
            return tuple(found.values())
        layer = layer.env


#: The process-wide random streams an env may draw from, as :func:`global_rng_states` names them.
GLOBAL_RNGS = ("Python's random", "numpy's global np.random")


def global_rng_states() -> tuple[Any, Any]:
    """The states of :data:`GLOBAL_RNGS`, comparable with ``==``."""
    kind, keys, pos, gauss, cached = np.random.get_state(legacy=True)
    return random.getstate(), (kind, np.asarray(keys).tobytes(), pos, gauss, cached)


@contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """Put Python's and numpy's global random states back afterwards (for checks that step an env that may use them)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
