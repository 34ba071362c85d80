"""RNG capture and restore: ``np_random`` bit-generator states of the env and of its action spaces."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

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


def action_spaces(env: AnyEnv) -> tuple[Any, ...]:
    """
    :param env: any env.
    :return: ``env.action_space``, and ``env.unwrapped.action_space`` when it is another object.
    """
    outer = env.action_space
    inner = env.unwrapped.action_space
    return (outer,) if inner is outer else (outer, inner)


@contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """Put Python's and numpy's global random states back afterwards (for checks that step an env that may use them)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
