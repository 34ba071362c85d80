"""The training ``VecEnv`` side of pseudo rollouts: making its sub-envs cloneable and taking their snapshots.

``DummyVecEnv`` and ``SubprocVecEnv`` snapshots are :class:`~arsm_rl.cloning.Snapshot` records (state copies, or
replays for Box2D); :class:`~arsm_rl.forkvec.vec_env.ForkVecEnv` snapshots are paused process copies, taken only
where rollouts may start (they cost a ``fork`` each) and restored by the ``ForkStepper``.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from arsm_rl.cloning import (
    MASK_METHOD,
    CloningError,
    NotCloneableError,
    Snapshot,
    clone_state,
    compare_restores,
    episodes_bounded,
    make_cloneable,
    preserved_global_rngs,
    sample_action,
    scratch_copy,
    unverified_parts,
    verify_snapshots,
)
from arsm_rl.forkvec.vec_env import ForkSnapshot, ForkVecEnv
from arsm_rl.rollouts.obs import ObsPipeline

__all__ = ["PROBE_EPISODES", "PROBE_STEPS", "VecCloner", "enable_cloning", "verify_fork_snapshots", "verify_rollouts"]

#: Without a time limit or a horizon, each of :data:`PROBE_EPISODES` episodes of uniformly random actions must end
#: within this many steps.
PROBE_STEPS = 2_000
PROBE_EPISODES = 10


def enable_cloning(venv: VecEnv) -> None:
    """
    Make the sub-environments of a training ``VecEnv`` cloneable, or explain how to.

    ``DummyVecEnv`` sub-envs are wrapped in place with :func:`~arsm_rl.cloning.make_cloneable`
    (idempotent). ``SubprocVecEnv`` sub-envs live in worker processes, so they must have been
    built cloneable, e.g. ``make_vec_env(env_id, n, vec_env_cls=SubprocVecEnv, wrapper_class=make_cloneable)``.
    ``ForkVecEnv`` sub-envs need nothing: any process can be forked.

    :param venv: the training environment (possibly wrapped in ``VecEnvWrapper`` layers)
    :raises TypeError: for other ``VecEnv`` classes, ``SubprocVecEnv`` sub-envs without the wrapper, or a ``ForkVecEnv``
        of an env with action masks
    """
    base = venv.unwrapped
    if isinstance(base, ForkVecEnv):
        if base.has_attr(MASK_METHOD):
            raise TypeError(
                "ForkVecEnv does not read action masks inside its forked pseudo rollouts yet: train an env with "
                "action_masks() in a DummyVecEnv or a SubprocVecEnv (wrapper_class=arsm_rl.make_cloneable)."
            )
    elif isinstance(base, DummyVecEnv):
        base.envs = [make_cloneable(env) for env in base.envs]
    elif isinstance(base, SubprocVecEnv):
        if not base.has_attr("clone_state"):
            raise TypeError(
                "ARSM needs cloneable sub-envs in a SubprocVecEnv: build it with "
                "make_vec_env(env_id, n_envs, vec_env_cls=SubprocVecEnv, wrapper_class=arsm_rl.make_cloneable)."
            )
    else:
        raise TypeError(f"ARSM supports DummyVecEnv, SubprocVecEnv and ForkVecEnv, got {type(base).__name__}.")
    ObsPipeline(venv)  # fail now, not mid-training, on VecEnv wrappers pseudo rollouts cannot mirror


class VecCloner:
    """
    Snapshots of a training ``VecEnv``'s sub-envs and scratch copies to restore them into: in process for
    ``DummyVecEnv``, through ``env_method`` for ``SubprocVecEnv``, paused forks for ``ForkVecEnv``.

    :param venv: the training environment, prepared by :func:`enable_cloning`
    """

    def __init__(self, venv: VecEnv) -> None:
        self.base = venv.unwrapped
        self._in_process = isinstance(self.base, DummyVecEnv)
        #: the sub-envs are a ``ForkVecEnv``'s (snapshots only where asked, restored by forking)
        self.forks = isinstance(self.base, ForkVecEnv)

    def clone(self, indices: Sequence[int], wanted: np.ndarray | None = None) -> list[Snapshot | ForkSnapshot | None]:
        """
        :param indices: sub-env indices
        :param wanted: (len(indices),) bool, where rollouts may start; ``None``: everywhere. Only fork snapshots,
            which cost a ``fork`` each, honour it: cheap snapshots are taken everywhere, so that any step can be
            rolled out from
        :return: one snapshot per index, of the sub-env's current (pre-step) state (``None`` where not wanted)
        """
        if self.forks:
            chosen = [i for k, i in enumerate(indices) if wanted is None or wanted[k]]
            taken = dict(zip(chosen, self.base.snapshot(chosen), strict=True)) if chosen else {}  # type: ignore[attr-defined]
            return [taken.get(i) for i in indices]
        if self._in_process:
            envs = self.base.envs  # type: ignore[attr-defined]
            return [clone_state(envs[i]) for i in indices]
        return [self.base.env_method("clone_state", indices=[i])[0] for i in indices]

    def scratch_copy(self) -> gym.Env:
        """
        :return: a new env built like sub-env 0, without ``Monitor``, for restoring snapshots into (for a
            ``ForkVecEnv``, its stand-in: fork snapshots are not restored into an env)
        """
        if self.forks:
            return self.base.stand_in()  # type: ignore[attr-defined]
        if self._in_process:
            return scratch_copy(self.base.envs[0])  # type: ignore[attr-defined]
        return self.base.env_method("scratch_copy", indices=[0])[0]

    def release(self) -> None:
        """Free the live fork snapshots now (the end of training: no update needs them)."""
        if self.forks:
            self.base.free_snapshots()  # type: ignore[attr-defined]


def verify_rollouts(venv: VecEnv, *, horizon: int | None, seed: int = 0) -> None:
    """
    Refuse, before training, a training env on which pseudo rollouts would be silently wrong or would not end.

    Works on a scratch copy of sub-env 0 (the training env, its RNG and its statistics are not touched; Python's
    and numpy's global random states are put back). When the env's snapshots use anything but the built-in,
    tested methods (:func:`~arsm_rl.cloning.unverified_parts`), restores are checked bit for bit
    (:func:`~arsm_rl.cloning.verify_snapshots`). Without a ``horizon``, an env with no time limit (and not
    of a family whose episodes end on their own) must end each of :data:`PROBE_EPISODES` episodes of random actions
    within :data:`PROBE_STEPS` steps, a stand-in for the untrained policy.

    :param venv: the training environment, prepared by :func:`enable_cloning`
    :param horizon: the pseudo rollouts' horizon (``None``: to the end of the episode)
    :param seed: seed of the checks' resets and random actions
    :raises NotCloneableError: when snapshots are not exact
    :raises ValueError: when episodes may not end
    """
    base = venv.unwrapped
    if isinstance(base, ForkVecEnv):
        verify_fork_snapshots(base, seed=seed)
        if horizon is None and not base.call(episodes_bounded, indices=[0])[0]:
            (snapshot,) = base.snapshot([0])
            copy_env = snapshot.restore(base.action_space)
            try:
                class_name = base.call(operator.attrgetter("unwrapped.__class__.__name__"), indices=[0])[0]
                _check_episodes_end(copy_env, seed, _name(base.get_attr("spec", [0])[0], class_name))
            finally:
                copy_env.close()
        return
    env = VecCloner(venv).scratch_copy()
    try:
        if unverified_parts(env):
            verify_snapshots(env, seed=seed)
        if horizon is None and not episodes_bounded(env):
            _check_episodes_end(env, seed, _name(env.spec, type(env.unwrapped).__name__))
    finally:
        env.close()


def verify_fork_snapshots(venv: ForkVecEnv, *, seed: int = 0, n_prefix: int = 20, n_compare: int = 30) -> None:
    """
    Check that fork snapshots of a ``ForkVecEnv``'s sub-env 0 restore bit for bit (:func:`~arsm_rl.cloning.compare_restores`
    on a forked copy of it, restored twice; the training env is not touched). A fork copies the whole process, so
    this fails only for envs that read the world outside it (the clock, ``os.urandom``, files, other processes).

    :param venv: the training env
    :param seed: seed of the reset and of the random actions
    :param n_prefix: actions before the snapshot
    :param n_compare: actions compared after each restore
    :raises NotCloneableError: naming the diverging field
    """
    (snapshot,) = venv.snapshot([0])
    work = snapshot.restore(venv.action_space)
    try:
        compare_restores(work, lambda env: env.snapshot(), [("after a fork restore", ForkSnapshot.restore)] * 2,
                         seed=seed, n_prefix=n_prefix, n_compare=n_compare)  # fmt: skip
    except CloningError as error:
        raise NotCloneableError(
            f"fork snapshots of this env are not exact: {error}. A fork copies the whole process, so the env reads "
            "state from outside it (the clock, os.urandom, files, another process): make it deterministic given its seed"
        ) from None
    finally:
        work.close()


def _name(spec: Any, default: str) -> str:
    return spec.id if spec is not None else default


def _check_episodes_end(env: Any, seed: int, name: str) -> None:
    with preserved_global_rngs():
        space = copy.deepcopy(env.action_space)
        space.seed(seed)
        env.reset(seed=seed)
        for episode in range(PROBE_EPISODES):
            if not _episode_ends(env, space):
                raise ValueError(
                    f"{name} has no time limit and episode {episode} of random actions did not end in {PROBE_STEPS} steps, "
                    "so pseudo rollouts may never end: wrap the env in gymnasium.wrappers.TimeLimit (or make it with "
                    "max_episode_steps=N), or set pseudo_horizon=N"
                )
            env.reset()


def _episode_ends(env: Any, space: gym.Space[Any]) -> bool:
    for _ in range(PROBE_STEPS):
        _, _, terminated, truncated, _ = env.step(sample_action(env, space))
        if terminated or truncated:
            return True
    return False
