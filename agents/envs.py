"""Environments of a run: probing, building, normalisation settings.

:func:`probe_env` (:func:`probe_preset_env` with a preset's settings) makes one env first, so that a bad id, an
observation or action space the algorithm cannot handle or an env that cannot be cloned exactly is one error line
before anything is built. :func:`make_env` builds the vectorised training (and evaluation) env of a preset:
``env_kwargs``, RL Zoo's ``env_wrapper`` and ``frame_stack``, the cloneable wrapper for the ARSM family, a
``--vec-env`` class of :data:`VEC_ENVS`. :func:`normalize_kwargs` reads a preset's ``normalize`` (the caller adds
``VecNormalize``). Importing this module registers the project's ``arsm/`` env ids (the ``envs`` package).
"""

from __future__ import annotations

import importlib
import signal
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack

import envs  # noqa: F401  (registers the arsm/ env ids)
from agents import ARSM_FAMILY
from agents.errors import UsageError
from agents.hyperparams import eval_code
from arsm_rl.cloning import NotCloneableError, clone_state, make_cloneable, register_optional_envs
from arsm_rl.forkvec.vec_env import ForkVecEnv, fork_problem
from arsm_rl.policies import action_dims, observation_space_problem

__all__ = ["VEC_ENVS", "env_name", "make_env", "make_or_explain", "normalize_kwargs", "probe_env", "probe_preset_env"]

#: ``--vec-env`` choices: ForkVecEnv's sub-envs need no cloneable wrapper (their snapshots are process forks)
VEC_ENVS: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv, "fork": ForkVecEnv}


def env_name(env_id: str) -> str:
    """File-system friendly env id (``ALE/Pong-v5`` -> ``ALE-Pong-v5``)."""
    return env_id.replace("/", "-").replace(":", "-")


def _wrapper_from_spec(spec: Any) -> Callable[[gym.Env], gym.Env] | None:
    """RL Zoo's ``env_wrapper``: ``"module.Class"``, ``{"module.Class": kwargs}`` or a list of those."""
    if spec is None:
        return None
    items = spec if isinstance(spec, list) else [spec]
    wrappers: list[tuple[type, dict[str, Any]]] = []
    for item in items:
        name, kwargs = next(iter(item.items())) if isinstance(item, dict) else (item, None)
        module, _, cls_name = str(name).rpartition(".")
        try:
            wrapper = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError, ValueError):
            raise UsageError(f"cannot import env_wrapper {name!r}; write module.Class") from None
        wrappers.append((wrapper, dict(kwargs or {})))

    def wrap(env: gym.Env) -> gym.Env:
        for wrapper, kwargs in wrappers:
            env = wrapper(env, **kwargs)
        return env

    return wrap


def normalize_kwargs(setting: Any, gamma: Any) -> dict[str, Any] | None:
    """``VecNormalize`` keyword arguments of a preset's ``normalize`` value (``gamma`` forwarded), or ``None``."""
    if isinstance(setting, str):
        setting = eval_code("normalize", setting)
    if not setting:
        return None
    kwargs = dict(setting) if isinstance(setting, dict) else {}
    if isinstance(gamma, float | int) and "gamma" not in kwargs:
        kwargs["gamma"] = float(gamma)
    return kwargs


def probe_preset_env(env_id: str, algo: str, settings: dict[str, Any], forks: bool = False, clones: bool = True) -> None:
    """:func:`probe_env` with the ``env_kwargs`` and ``env_wrapper`` of a preset's env settings (see
    :func:`agents.hyperparams.split_preset`)."""
    env_kwargs = settings.get("env_kwargs") or {}
    env_kwargs = eval_code("env_kwargs", env_kwargs) if isinstance(env_kwargs, str) else env_kwargs
    probe_env(env_id, algo, env_kwargs, _wrapper_from_spec(settings.get("env_wrapper")), forks, clones)


def make_or_explain(env_id: str, env_kwargs: dict[str, Any], source: str = "--env-kwargs or the preset's") -> gym.Env:
    """``gym.make(env_id, **env_kwargs)``, with an unknown id or a failing constructor as one :class:`UsageError` line.

    :param source: where the kwargs came from, for the advice
    """
    try:
        return gym.make(env_id, **env_kwargs)
    except (gym.error.UnregisteredEnv, ModuleNotFoundError) as error:
        raise UsageError(f"unknown env id {env_id!r} ({error}); see gymnasium.pprint_registry() or use module:EnvId") from None
    except Exception as error:  # the env's constructor failed (any exception): a bad keyword or value, a missing dependency
        with_kwargs = f" with env_kwargs {env_kwargs}" if env_kwargs else ""
        advice = f"; check env_kwargs ({source})" if env_kwargs else ""
        raise UsageError(f"cannot make {env_id}{with_kwargs} ({type(error).__name__}: {error}){advice}") from None


def probe_env(env_id: str, algo: str, env_kwargs: dict[str, Any], wrapper: Callable[[gym.Env], gym.Env] | None = None,
              forks: bool = False, clones: bool = True) -> None:  # fmt: skip
    """
    Make one env to turn bad ids, observation and action spaces and uncloneable envs into one-line errors early.

    :param forks: the env will run under ``ForkVecEnv``, whose fork snapshots clone any env (no clone probe)
    :param clones: the run clones the env (``False``: ARSM with ``action_values="critic"``, no clone probe)
    :raises UsageError: with what to do about it
    """
    if forks and fork_problem() is not None:
        raise UsageError(str(fork_problem()))
    try:
        register_optional_envs(env_id)
    except ImportError as error:  # e.g. "ALE/Pong-v5 needs ale-py: pip install -e '.[atari]'"
        raise UsageError(str(error)) from None
    env = make_or_explain(env_id, env_kwargs)
    try:
        if wrapper is not None:
            try:
                env = wrapper(env)
            except Exception as error:
                raise UsageError(
                    f"cannot wrap {env_id} with the preset's env_wrapper ({type(error).__name__}: {error}); check env_wrapper"
                ) from None
        problem = observation_space_problem(env.observation_space)
        if problem is not None:
            raise UsageError(f"cannot train on {env_id}: {problem} (a preset names it in env_wrapper, as RL Zoo's do)")
        if algo in ARSM_FAMILY:
            try:
                action_dims(env.action_space)
            except ValueError:
                raise UsageError(
                    f"{env_id} has a {type(env.action_space).__name__} action space; ARSM needs Discrete, MultiDiscrete "
                    "or MultiBinary actions (use --algo ppo or a2c for continuous control, or cut its actions into bins with "
                    "env_wrapper envs.discretize.DiscreteBins, as the Pendulum-v1 preset does)"
                ) from None
            if forks or not clones:  # fork snapshots clone any env; the critic clones none
                return
            try:
                cloneable = make_cloneable(env)
                cloneable.reset(seed=0)
                clone_state(cloneable)
            except NotCloneableError as error:
                reason = str(error).split(". ")[0]
                raise UsageError(
                    f"{env_id} cannot be cloned exactly ({reason}); make it cloneable (see docs/cloning.md) and verify it "
                    "with arsm_rl.cloning.check_cloneable, or train with -params action_values:'critic' (no clones)"
                ) from None
    finally:
        env.close()


def make_env(
    env_id: str,
    settings: dict[str, Any],
    n_envs: int,
    seed: int,
    *,
    cloneable: bool,
    vec_env: str = "dummy",
    monitor_dir: str | None = None,
) -> VecEnv:
    """The (vectorised, optionally frame-stacked) env of a preset; VecNormalize is added by the caller.

    :param vec_env: a key of :data:`VEC_ENVS` (``fork``: no cloneable wrapper, fork snapshots clone any env)
    """
    extra = _wrapper_from_spec(settings.get("env_wrapper"))

    cloneable = cloneable and vec_env != "fork"

    def wrapper(env: gym.Env) -> gym.Env:
        if vec_env == "subproc":  # in the sub-env's process: Ctrl-C is the trainer's to handle (it saves, then closes us)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # as ForkVecEnv's and the rollout workers' processes do
        env = extra(env) if extra is not None else env
        return make_cloneable(env) if cloneable else env

    env_kwargs = settings.get("env_kwargs") or {}
    if isinstance(env_kwargs, str):
        env_kwargs = eval_code("env_kwargs", env_kwargs)
    venv = make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        monitor_dir=monitor_dir,
        wrapper_class=wrapper,
        env_kwargs=env_kwargs,
        vec_env_cls=VEC_ENVS[vec_env],
    )
    if settings.get("frame_stack"):
        venv = VecFrameStack(venv, n_stack=int(settings["frame_stack"]))
    return venv
