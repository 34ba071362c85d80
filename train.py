"""Train (or evaluate) an agent with a preset from ``agents/``: the RL Baselines3 Zoo command line for ARSM.

    python train.py --algo arsm --env CartPole-v1
    python train.py --algo ppo --env Acrobot-v1 -tb runs --seed 1
    python train.py --algo arsm --env CartPole-v1 -params learning_rate:0.02 estimator:"rloo"
    python train.py --algo arsm --env CartPole-v1 --preset paper
    python train.py --algo arsm --env CartPole-v1 --eval-only -i logs/arsm/CartPole-v1_1/CartPole-v1.zip
    python train.py --list

A run writes ``<log-folder>/<algo>/<env>_<k>/``: ``<env>.zip`` (the final model), ``config.yml`` (the
resolved settings and every constructor argument, defaults included), Monitor CSVs
(``<i>.monitor.csv``), ``vecnormalize.pkl`` when the preset normalises, ``rl_model_<steps>_steps.zip``
checkpoints with ``--save-freq``, and ``best_model.zip``/``evaluations.npz`` with evaluation on. Training stops
when an evaluation reaches the env's ``spec.reward_threshold`` (``--no-stop-at-threshold``: the whole budget).
See ``docs/train.md``.
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import importlib
import importlib.util
import inspect
import json
import pickle
import re
import shutil
import signal
import sys
import time
import types
import typing
import uuid
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import HParam
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecFrameStack,
    VecNormalize,
    sync_envs_normalization,
)

import envs  # noqa: F401  (registers the arsm/ env ids)
from agents import ALGOS, ARSM_FAMILY, load_preset, preset_envs
from arsm_rl.cloning import NotCloneableError, clone_state, has_masks, make_cloneable, register_optional_envs
from arsm_rl.forkvec.vec_env import ForkVecEnv, fork_problem
from arsm_rl.policies import action_dims, observation_space_problem

#: Preset keys that configure the environment or the run rather than the algorithm's constructor.
ENV_KEYS = ("n_timesteps", "n_envs", "normalize", "env_wrapper", "frame_stack", "env_kwargs")
#: Preset keys whose string values are Python expressions (RL Zoo convention), evaluated with ``nn``/``th``.
CODE_KEYS = ("policy_kwargs", "normalize", "env_kwargs")
_BARE_WORD = re.compile(r"^[A-Za-z_][\w.\-/]*$")
#: ``--vec-env`` choices: ForkVecEnv's sub-envs need no cloneable wrapper (their snapshots are process forks)
VEC_ENVS: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv, "fork": ForkVecEnv}


class UsageError(Exception):
    """Bad input: printed as one ``error: ...`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see python train.py --help)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default once: as the help text says it, else argparse's ``(default: ...)``; none for flags and
    empty defaults (``None``, ``''``, ``[]``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default in (None, "", []) or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


#: RL Zoo's hyperparameter-search flags: the search runs through RL Zoo itself (``python -m agents.zoo``).
OPTIMIZE_FLAGS = ("-optimize", "--optimize-hyperparameters", "--n-trials", "--max-total-trials", "--n-jobs", "--sampler",
                  "--pruner", "--n-startup-trials", "--n-evaluations", "--storage", "--study-name", "--no-optim-plots",
                  "-optimize-params", "--optimization-log-path")  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags, named as in RL Baselines3 Zoo's ``train.py``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    optimize = [a for a in args_list if a.split("=", 1)[0] in OPTIMIZE_FLAGS]
    if optimize:
        rest = " ".join(args_list if "--algo" in args_list else ["--algo", "arsm", *args_list])
        raise UsageError(
            f"{optimize[0]}: hyperparameter search runs through RL Zoo itself, with ARSM registered: "
            f"python -m agents.zoo train {rest} (needs pip install -e '.[zoo]')"
        )
    p = _Parser(description=__doc__.split("\n")[0], formatter_class=_HelpFormatter)
    p.add_argument("--algo", default="arsm", help=f"algorithm: {', '.join(ALGOS)}")
    p.add_argument("--env", default="CartPole-v1", help="Gymnasium id (also arsm/... and module:EnvId)")
    p.add_argument("-n", "--n-timesteps", type=_positive, default=None, help="real env steps (default: the preset's)")
    p.add_argument("--seed", type=_at_least(-1), default=-1, help="random seed (-1: draw one)")
    p.add_argument("--n-envs", type=_positive, default=None, help="parallel envs (default: the preset's)")
    p.add_argument("--vec-env", default="dummy", choices=list(VEC_ENVS), help="VecEnv type (fork: arsm_rl.ForkVecEnv)")
    p.add_argument("--rollout-workers", type=_at_least(0), default=None,
                   help="ARSM family: processes for pseudo rollouts (default: the preset's, else 0: in process)")  # fmt: skip
    p.add_argument("--rollout-backend", default=None,
                   help="ARSM family: where rollout workers run (subproc, ray; default: preset's, else subproc)")  # fmt: skip
    p.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY:VALUE",
                   help="keyword arguments of gym.make (default: the preset's env_kwargs)")  # fmt: skip
    p.add_argument("-tb", "--tensorboard-log", default="", help="TensorBoard folder (default: none)")
    p.add_argument("-f", "--log-folder", default="logs", help="where run folders are created")
    p.add_argument("-uuid", "--uuid", action="store_true", help="append a unique id to the run folder's name")
    p.add_argument("--eval-freq", type=int, default=None,
                   help="evaluate every N real steps (<= 0 disables; default: about 20 times a run, <= 25000)")  # fmt: skip
    p.add_argument("--no-stop-at-threshold", dest="stop_at_threshold", action="store_false",
                   help="train the whole budget (default: stop once an evaluation reaches spec.reward_threshold)")  # fmt: skip
    p.add_argument("--eval-episodes", type=_positive, default=5, help="episodes per evaluation")
    p.add_argument("--n-eval-envs", type=_positive, default=1, help="envs of the evaluation VecEnv")
    p.add_argument("--eval-env-kwargs", nargs="+", default=[], metavar="KEY:VALUE",
                   help="keyword arguments of gym.make for the evaluation env (default: --env-kwargs)")  # fmt: skip
    p.add_argument("--stochastic", action="store_true", help="evaluate the stochastic policy (default: deterministic)")
    p.add_argument("--save-freq", type=int, default=-1, help="checkpoint every N real steps (<= 0 disables)")
    p.add_argument("--log-interval", type=_at_least(-2), default=-1,
                   help="updates between progress tables (-1: about 20 per run, -2: none)")  # fmt: skip
    p.add_argument(
        "-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE", help="override preset values (Python literals)"
    )
    p.add_argument("-conf", "--conf-file", default=None, help="preset YAML to read instead of agents/<algo>.yml")
    p.add_argument("--preset", default=None, help="named variant: reads the key <env>-<preset> (e.g. paper)")
    p.add_argument("-i", "--trained-agent", default="", help="model zip to continue training (or to evaluate)")
    p.add_argument("--weights-only", action="store_true",
                   help="with -i: build the model from the preset and read only the zip's weights (no pickle)")  # fmt: skip
    p.add_argument("--eval-only", action="store_true", help="evaluate --trained-agent and exit")
    p.add_argument("--gym-packages", nargs="+", default=[], help="modules to import (they register envs)")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--num-threads", type=int, default=1,
                   help="torch CPU threads (default 1: small MLPs run fastest on one; -1: torch's default, for CNNs)")
    p.add_argument("-P", "--progress", action="store_true", help="show a progress bar (default: on an interactive terminal)")
    p.add_argument("--verbose", type=int, default=1, help="0 silent, 1 progress table, 2 debug (tracebacks)")
    p.add_argument("--list", action="store_true", help="print the envs each algorithm has presets for")
    args = p.parse_args(args_list)
    if args.log_interval == 0:
        raise UsageError("--log-interval must be >= 1, -1 (about 20 tables per run) or -2 (none)")
    return args


# ---------------------------------------------------------------------------------------------- hyperparameters


def parse_overrides(items: Sequence[str], what: str = "-params") -> dict[str, Any]:
    """
    ``key:value`` pairs to a dict; values are Python literals (``0.01``, ``None``, ``[64, 64]``, ``"rloo"``).

    A value that is not a literal is kept as a string when it is a bare word (the shell strips quotes,
    so ``estimator:"rloo"`` arrives as ``estimator:rloo``) or when the key holds code (``policy_kwargs``).

    :raises UsageError: on a missing ``:`` or an unparsable value
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition(":")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"malformed {what} entry {item!r}: write key:value, e.g. learning_rate:0.01")
        try:
            value: Any = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if key in CODE_KEYS or _BARE_WORD.match(text):
                value = text
            else:
                raise UsageError(
                    f"malformed {what} value {item!r}: use a Python literal, e.g. n_steps:128, gamma:0.98 or estimator:rloo"
                ) from None
        out[key] = value
    return out


def _eval_code(key: str, text: str) -> Any:
    """Evaluate a preset's code string (``dict(net_arch=[64], activation_fn=nn.ReLU)``) with ``nn`` and ``th`` in scope."""
    try:
        return eval(text, {"__builtins__": {}, "dict": dict, "list": list, "nn": th.nn, "th": th, "True": True})
    except Exception as error:
        raise UsageError(f"cannot evaluate {key} {text!r} ({error}); write e.g. dict(net_arch=[64, 64])") from None


def _schedule(value: Any) -> Any:
    """RL Zoo's ``lin_X``: a linear schedule from X to 0 over training."""
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            return LinearSchedule(float(value[4:]), 0.0, 1.0)
        except ValueError:
            raise UsageError(f"malformed schedule {value!r}: write lin_<start>, e.g. lin_0.001") from None
    return value


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``cls.__init__``, following ``**kwargs`` up the class hierarchy."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(klass.__init__)
        for name, param in signature.parameters.items():
            if name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                params.setdefault(name, param)
        if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return params


def split_preset(algo: str, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Split a raw preset into run/env settings and constructor keyword arguments (still raw strings).

    :raises UsageError: on keys the algorithm's constructor does not take
    """
    settings = {key: raw.pop(key) for key in ENV_KEYS if key in raw}
    raw.setdefault("policy", "MlpPolicy")
    accepted = constructor_parameters(ALGOS[algo])
    unknown = sorted(set(raw) - set(accepted) - {"policy"})
    if unknown:
        raise UsageError(f"{algo} takes no hyperparameter {', '.join(unknown)}; check -params or the preset")
    return settings, raw


def build_kwargs(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs from raw preset values: ``policy_kwargs`` strings evaluated, ``lin_X`` schedules built."""
    kwargs = {key: _schedule(value) for key, value in hyperparams.items()}
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = _eval_code("policy_kwargs", kwargs["policy_kwargs"])
    return kwargs


def constructor_hints(cls: type) -> dict[str, Any]:
    """Type annotations of the keyword parameters of ``cls.__init__``, following ``**kwargs`` up the class hierarchy."""
    hints: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        try:
            found = typing.get_type_hints(klass.__init__)
        except (NameError, TypeError):  # an annotation that cannot be resolved: no check for that class
            found = {}
        for name, hint in found.items():
            hints.setdefault(name, hint)
        if not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(klass.__init__).parameters.values()):
            break
    return hints


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is allowed by the annotation ``hint`` (unknown kinds of annotation allow everything)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is collections.abc.Callable:
        return callable(value)
    if origin is type:
        return isinstance(value, type)
    if isinstance(origin, type):
        return isinstance(value, origin)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def check_types(algo: str, kwargs: dict[str, Any]) -> None:
    """
    Refuse constructor arguments whose type the constructor's annotations do not allow (``gamma:high``,
    ``learning_rate:[1, 2]``), before anything is built. Values are checked by the constructor afterwards.

    :raises UsageError: naming the key, the value and the expected type
    """
    hints = constructor_hints(ALGOS[algo])
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            expected = str(hint).replace("collections.abc.", "").replace("typing.", "").replace("<class '", "")
            expected = expected.replace("'>", "")
            raise UsageError(f"{key}:{value!r} is not a valid {key} for {algo} (expected {expected}); check -params or preset")


def _plain(value: Any) -> Any:
    """A YAML/TensorBoard friendly form of a hyperparameter value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def resolved_hyperparams(algo: str, hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Every constructor argument with its value: the preset's, else the constructor default."""
    out: dict[str, Any] = {}
    for name, param in constructor_parameters(ALGOS[algo]).items():
        if name in ("env", "tensorboard_log", "verbose", "seed", "device", "_init_setup_model"):
            continue
        if name in hyperparams:
            out[name] = _plain(hyperparams[name])
        elif param.default is not inspect.Parameter.empty:
            out[name] = _plain(param.default)
    return out


# ---------------------------------------------------------------------------------------------- environments


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
        setting = _eval_code("normalize", setting)
    if not setting:
        return None
    kwargs = dict(setting) if isinstance(setting, dict) else {}
    if isinstance(gamma, float | int) and "gamma" not in kwargs:
        kwargs["gamma"] = float(gamma)
    return kwargs


def probe_preset_env(env_id: str, algo: str, settings: dict[str, Any], forks: bool = False) -> None:
    """:func:`probe_env` with the ``env_kwargs`` and ``env_wrapper`` of a preset's env settings (see :func:`split_preset`)."""
    env_kwargs = settings.get("env_kwargs") or {}
    env_kwargs = _eval_code("env_kwargs", env_kwargs) if isinstance(env_kwargs, str) else env_kwargs
    probe_env(env_id, algo, env_kwargs, _wrapper_from_spec(settings.get("env_wrapper")), forks)


def probe_env(env_id: str, algo: str, env_kwargs: dict[str, Any], wrapper: Callable[[gym.Env], gym.Env] | None = None,
              forks: bool = False) -> None:  # fmt: skip
    """
    Make one env to turn bad ids, observation and action spaces and uncloneable envs into one-line errors early.

    :param forks: the env will run under ``ForkVecEnv``, whose fork snapshots clone any env (no clone probe)
    :raises UsageError: with what to do about it
    """
    if forks and fork_problem() is not None:
        raise UsageError(str(fork_problem()))
    try:
        register_optional_envs(env_id)
    except ImportError as error:  # e.g. "ALE/Pong-v5 needs ale-py: pip install -e '.[atari]'"
        raise UsageError(str(error)) from None
    try:
        env = gym.make(env_id, **env_kwargs)
    except (gym.error.UnregisteredEnv, ModuleNotFoundError) as error:
        raise UsageError(f"unknown env id {env_id!r} ({error}); see gymnasium.pprint_registry() or use module:EnvId") from None
    except Exception as error:  # the env's constructor failed (any exception): a bad keyword or value, a missing dependency
        with_kwargs = f" with env_kwargs {env_kwargs}" if env_kwargs else ""
        advice = "; check env_kwargs (--env-kwargs or the preset's)" if env_kwargs else ""
        raise UsageError(f"cannot make {env_id}{with_kwargs} ({type(error).__name__}: {error}){advice}") from None
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
                    "or MultiBinary actions (use --algo ppo or a2c for continuous control)"
                ) from None
            if forks:  # fork snapshots clone any env
                return
            try:
                cloneable = make_cloneable(env)
                cloneable.reset(seed=0)
                clone_state(cloneable)
            except NotCloneableError as error:
                reason = str(error).split(". ")[0]
                raise UsageError(
                    f"{env_id} cannot be cloned exactly ({reason}); make it cloneable (see docs/cloning.md) and verify it "
                    "with arsm_rl.cloning.check_cloneable"
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
        env_kwargs = _eval_code("env_kwargs", env_kwargs)
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


# ---------------------------------------------------------------------------------------------- run


class HParamCallback(BaseCallback):
    """Log the resolved hyperparameters to TensorBoard's HPARAMS tab at the start of training."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__()
        self.hparams = {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in hparams.items()}

    def _on_training_start(self) -> None:
        metrics = {"rollout/ep_rew_mean": 0.0, "rollout/ep_len_mean": 0.0}
        self.logger.record("hparams", HParam(self.hparams, metrics), exclude=("stdout", "log", "json", "csv"))

    def _on_step(self) -> bool:
        return True


def next_run_dir(log_folder: str, algo: str, env_id: str, suffix: str = "") -> Path:
    """``<log_folder>/<algo>/<env>_<k><suffix>`` with k one more than the largest existing run (``-uuid``: a suffix)."""
    root = Path(log_folder) / algo
    pattern = re.compile(rf"^{re.escape(env_name(env_id))}_(\d+)(_[0-9a-f-]{{36}})?$")
    runs = [int(m.group(1)) for p in root.glob("*") if (m := pattern.match(p.name))] if root.exists() else []
    path = root / f"{env_name(env_id)}_{max(runs, default=0) + 1}{suffix}"
    path.mkdir(parents=True)
    return path


#: What SB3's ``load`` raises on a file that is not a model zip (of this algorithm).
_LOAD_ERRORS = (
    zipfile.BadZipFile,
    KeyError,
    ValueError,
    EOFError,
    RuntimeError,
    pickle.UnpicklingError,
    AttributeError,
    AssertionError,
    TypeError,
)


def model_file(path: str) -> Path:
    """
    The model zip ``path`` names (``.zip`` may be left out).

    :raises UsageError: if there is no such file
    """
    file = Path(path)
    if not file.is_file() and file.with_suffix(".zip").is_file():
        file = file.with_suffix(".zip")
    if not file.is_file():
        raise UsageError(
            f"model file not found: {path} (pass the .zip written by train.py, e.g. logs/arsm/CartPole-v1_1/CartPole-v1.zip)"
        )
    return file


def model_algo(file: Path) -> str | None:
    """
    The ``--algo`` a model zip belongs to, read from its JSON ``data`` (nothing is unpickled): among the algorithms
    whose policies come from the saved policy class's module, the one whose constructor parameters best match the
    saved attributes (ARSM-family zips give ``arsm``).

    :return: the algorithm, or ``None`` if the file is not a Stable-Baselines3 model zip
    """
    try:
        with zipfile.ZipFile(file) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return None
    if not isinstance(data, dict) or "policy_class" not in data:
        return None
    saved = set(data)
    policy_module = data["policy_class"].get("__module__") if isinstance(data["policy_class"], dict) else None

    def score(algo: str) -> tuple[bool, int]:
        # first the policy's module (MaskablePPO's and PPO's parameters nearly coincide), then the parameters
        own_policy = any(cls.__module__ == policy_module for cls in ALGOS[algo].policy_aliases.values())
        params = set(constructor_parameters(ALGOS[algo]))
        return own_policy, len(params & saved) - len(params - saved)

    return max(ALGOS, key=score)


def check_model_algo(algo: str, file: Path) -> None:
    """
    :raises UsageError: if ``file`` is not a model zip, or holds a model of another algorithm than ``algo``
    """
    found = model_algo(file)
    if found is None:
        raise UsageError(f"{file} is not a Stable-Baselines3 model zip (pass the .zip written by train.py)")
    if found != algo and not (found in ARSM_FAMILY and algo in ARSM_FAMILY):
        raise UsageError(f"{file} holds a model of --algo {found}, not --algo {algo}: pass --algo {found}")


def load_model(algo: str, path: str, **kwargs: Any) -> BaseAlgorithm:
    """
    Load a model zip with friendly errors. SB3's ``load`` unpickles parts of the zip, which can run code: load only
    files you trust (see :func:`load_weights` for the others).

    :raises UsageError: if the file is missing or not a model of ``algo``
    """
    file = model_file(path)
    check_model_algo(algo, file)
    try:
        return ALGOS[algo].load(file, **kwargs)
    except _LOAD_ERRORS as error:
        raise UsageError(
            f"cannot load {file} as an {algo} model ({type(error).__name__}: {error}); is it a model zip of --algo {algo}?"
        ) from None


def load_weights(model: BaseAlgorithm, algo: str, path: str) -> None:
    """
    ``--weights-only``: put the zip's network weights into ``model`` (built from the preset) without reading its
    pickled parts (SB3's ``set_parameters``: the ``.pth`` files are read with ``torch.load(weights_only=True)``).

    :raises UsageError: if the file is missing, of another algorithm, or its weights do not fit the network
    """
    file = model_file(path)
    check_model_algo(algo, file)
    try:
        model.set_parameters(str(file), exact_match=True, device=model.device)
    except _LOAD_ERRORS as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(
            f"the weights in {file} do not fit the preset's network ({reason}); pass the -params it was trained with"
        ) from None


def _vecnormalize_path(model_path: str) -> Path:
    return Path(model_path).resolve().parent / "vecnormalize.pkl"


def _refuse_pickled_statistics(args: argparse.Namespace) -> None:
    if args.weights_only and _vecnormalize_path(args.trained_agent).is_file():
        raise UsageError(
            f"--weights-only does not read {_vecnormalize_path(args.trained_agent)} (VecNormalize statistics are a "
            "pickle, which can run code); use a model you trust without --weights-only"
        )


def make_eval_env(args: argparse.Namespace, settings: dict[str, Any], seed: int, vec_env: str = "dummy") -> VecEnv:
    """The evaluation env: ``--n-eval-envs`` envs, ``--eval-env-kwargs`` (default: the training env's kwargs).

    :param vec_env: a key of :data:`VEC_ENVS`
    """
    eval_settings = dict(settings)
    if args.eval_env_kwargs:
        eval_settings["env_kwargs"] = parse_overrides(args.eval_env_kwargs, what="--eval-env-kwargs")
    return make_env(args.env, eval_settings, args.n_eval_envs, seed, cloneable=False, vec_env=vec_env)


def takes_masks(algo: type[BaseAlgorithm], env: VecEnv) -> bool:
    """Whether evaluation passes action masks: the env has them and the algorithm's ``predict`` takes ``action_masks``
    (ARSM, MaskablePPO)."""
    return has_masks(env) and "action_masks" in inspect.signature(algo.predict).parameters


def evaluate(model: BaseAlgorithm, env: VecEnv, n_eval_episodes: int, deterministic: bool) -> tuple[float, float]:
    """SB3's ``evaluate_policy``, or sb3-contrib's maskable one (each state's masks go to ``predict``) when
    :func:`takes_masks`."""
    evaluator = maskable_evaluate_policy if takes_masks(type(model), env) else evaluate_policy
    mean, std = evaluator(model, env, n_eval_episodes=n_eval_episodes, deterministic=deterministic)  # type: ignore[arg-type]
    return float(mean), float(std)


def evaluate_only(args: argparse.Namespace, settings: dict[str, Any], kwargs: dict[str, Any]) -> int:
    """``--eval-only``: print mean +- std of the return of ``--trained-agent`` over ``--eval-episodes``."""
    seed = max(args.seed, 0)
    venv = make_eval_env(args, settings, seed)
    if args.weights_only:
        _refuse_pickled_statistics(args)
        model = ALGOS[args.algo](env=venv, device=args.device, **kwargs)
        load_weights(model, args.algo, args.trained_agent)
    else:
        model = load_model(args.algo, args.trained_agent, device=args.device)
        stats = _vecnormalize_path(args.trained_agent)
        if stats.is_file():
            venv = VecNormalize.load(str(stats), venv)
            venv.training, venv.norm_reward = False, False
    mean, std = evaluate(model, venv, args.eval_episodes, deterministic=not args.stochastic)
    policy = "stochastic" if args.stochastic else "deterministic"
    print(f"{args.algo} {args.env}: {mean:.2f} +- {std:.2f} over {args.eval_episodes} episodes ({policy} policy)")
    venv.close()
    return 0


def list_presets() -> int:
    """``--list``: the env ids with a preset, per algorithm (variants as ``--preset`` names)."""
    for algo in ALGOS:
        if algo in ARSM_FAMILY and algo != "arsm":
            continue
        keys = [k for k in preset_envs(algo) if k not in ("default", "atari")]
        plain = [k for k in keys if not any(k.startswith(f"{other}-") for other in keys if other != k)]
        variants = [f"{k} (--env {base} --preset {k[len(base) + 1 :]})" for k in keys if k not in plain for base in plain
                    if k.startswith(f"{base}-")]  # fmt: skip
        print(f"{algo}: {', '.join(plain + variants)}")
    peers = ", ".join(algo for algo in ALGOS if algo in ARSM_FAMILY and algo != "arsm")
    print(f"{peers}: the arsm presets; other env ids fall back to each file's 'default' entry")
    return 0


def read_preset(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    try:
        key, raw = load_preset(args.algo, args.env, args.conf_file, args.preset)
    except FileNotFoundError as error:
        raise UsageError(f"preset file not found: {error.filename}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"malformed preset YAML ({str(error).splitlines()[0]})") from None
    except (KeyError, ValueError) as error:
        raise UsageError(str(error).strip("'\"") + "; see python train.py --list") from None
    raw.update(parse_overrides(args.hyperparams))
    for flag, key_name, value in (("--rollout-workers", "n_rollout_workers", args.rollout_workers),
                                  ("--rollout-backend", "rollout_backend", args.rollout_backend)):  # fmt: skip
        if value is not None:
            if args.algo not in ARSM_FAMILY:
                raise UsageError(f"{flag} is for the ARSM family (--algo {', '.join(ARSM_FAMILY)}), not {args.algo}")
            raw[key_name] = value
    return key, raw


def _check_setup(args: argparse.Namespace) -> None:
    """Algo name, extra env packages, torch threads, the model file of ``-i``."""
    if args.algo not in ALGOS:
        raise UsageError(f"unknown algo {args.algo!r}; choose one of {', '.join(ALGOS)}")
    for module in args.gym_packages:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UsageError(f"cannot import --gym-packages module {module!r} ({error})") from None
    if args.num_threads > 0:
        th.set_num_threads(args.num_threads)
    if args.eval_only and not args.trained_agent:
        raise UsageError("--eval-only needs -i/--trained-agent PATH")
    if args.weights_only and not args.trained_agent:
        raise UsageError("--weights-only needs -i/--trained-agent PATH")
    if args.progress and not all(importlib.util.find_spec(name) for name in ("tqdm", "rich")):
        raise UsageError("-P/--progress needs tqdm and rich: pip install tqdm rich")


def build_model(
    args: argparse.Namespace,
    venv: VecEnv,
    kwargs: dict[str, Any],
    normalize: dict[str, Any] | None,
    seed: int,
) -> BaseAlgorithm:
    """A new model from the preset, or the ``-i`` model (with its VecNormalize statistics) on ``venv``."""
    tensorboard_log = args.tensorboard_log or None
    if args.trained_agent and not args.weights_only:
        stats = _vecnormalize_path(args.trained_agent)
        if normalize is not None:
            venv = VecNormalize.load(str(stats), venv) if stats.is_file() else VecNormalize(venv, **normalize)
        model = load_model(
            args.algo, args.trained_agent, env=venv, device=args.device, tensorboard_log=tensorboard_log, verbose=args.verbose
        )
        model.set_random_seed(seed)
        return model
    if normalize is not None:
        venv = VecNormalize(venv, **normalize)
    try:
        model = ALGOS[args.algo](
            env=venv,
            seed=seed,
            device=args.device,
            verbose=args.verbose,
            tensorboard_log=tensorboard_log,
            **kwargs,
        )
    except NotCloneableError as error:
        raise UsageError(f"{args.env} cannot be cloned exactly: {error}") from None
    except (ValueError, TypeError, ImportError) as error:
        raise UsageError(f"cannot build {args.algo} on {args.env}: {error}") from None
    if args.weights_only:
        load_weights(model, args.algo, args.trained_agent)
    return model


def eval_freq(args: argparse.Namespace, n_timesteps: int) -> int:
    """Real steps between evaluations: ``--eval-freq``, else about 20 evaluations per run (as the progress tables), at
    most RL Zoo's 25,000, so that training stops soon after it reaches the env's reward threshold."""
    return int(args.eval_freq) if args.eval_freq is not None else min(25_000, max(n_timesteps // 20, 1))


def reward_threshold(env: VecEnv) -> float | None:
    """The env's ``spec.reward_threshold`` (Gymnasium's score for "solved", e.g. 475 on CartPole-v1), if it has one."""
    threshold = getattr(env.get_attr("spec", [0])[0], "reward_threshold", None)
    return None if threshold is None else float(threshold)


def make_callbacks(
    args: argparse.Namespace,
    settings: dict[str, Any],
    normalize: dict[str, Any] | None,
    hparams: dict[str, Any],
    run_dir: Path,
    n_envs: int,
    seed: int,
    n_timesteps: int,
) -> list[BaseCallback]:
    """
    HParams for TensorBoard, checkpoints (``--save-freq``) and evaluation (:func:`eval_freq`), which stops training
    when its mean reaches the env's reward threshold (SB3's ``StopTrainingOnRewardThreshold``; not with
    ``--no-stop-at-threshold``).
    """
    callbacks: list[BaseCallback] = []
    if args.tensorboard_log:
        callbacks.append(HParamCallback(hparams))
    if args.save_freq > 0:
        callbacks.append(
            CheckpointCallback(max(args.save_freq // n_envs, 1), str(run_dir), name_prefix="rl_model", save_vecnormalize=True)
        )
    freq = eval_freq(args, n_timesteps)
    if freq > 0:
        # the training env's VecEnv class: SB3's EvalCallback expects it (and warns otherwise), as RL Zoo builds it
        eval_env = _normalized_eval_env(make_eval_env(args, settings, seed + 10_000, args.vec_env), normalize)
        threshold = reward_threshold(eval_env) if args.stop_at_threshold else None
        callbacks.append(
            (MaskableEvalCallback if takes_masks(ALGOS[args.algo], eval_env) else EvalCallback)(
                eval_env,
                callback_on_new_best=None if threshold is None else StopTrainingOnRewardThreshold(threshold, args.verbose),
                eval_freq=max(freq // n_envs, 1),
                n_eval_episodes=args.eval_episodes,
                deterministic=not args.stochastic,
                best_model_save_path=str(run_dir),
                log_path=str(run_dir),
                verbose=args.verbose,
            )
        )
    return callbacks


def _normalized_eval_env(env: VecEnv, normalize: dict[str, Any] | None) -> VecEnv:
    """The evaluation env, with frozen VecNormalize statistics (synced from the training env) when it normalises."""
    return env if normalize is None else VecNormalize(env, training=False, norm_reward=False, **normalize)


class Terminated(Exception):
    """SIGTERM arrived (``timeout``, a scheduler, a container stop): stop and save, as on Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def log_interval(args: argparse.Namespace, model: BaseAlgorithm, n_timesteps: int) -> int | None:
    """Updates between progress tables: ``--log-interval``, none for -2, else about 20 tables per run."""
    if args.log_interval == -2:
        return None
    if args.log_interval > 0:
        return int(args.log_interval)
    per_update = getattr(model, "n_steps", 0) * model.n_envs
    return max(1, round(n_timesteps / per_update / 20)) if per_update else 1


def show_progress(args: argparse.Namespace) -> bool:
    """``-P``, or by default an interactive terminal (with the verbose table on)."""
    return bool(args.progress or (args.verbose > 0 and sys.stderr.isatty()))


def stopped_at_threshold(callbacks: list[BaseCallback]) -> str | None:
    """That an evaluation reached the env's reward threshold, which stopped training (:func:`make_callbacks`), or None."""
    for callback in callbacks:
        stop = getattr(callback, "callback_on_new_best", None)
        if isinstance(stop, StopTrainingOnRewardThreshold) and stop.parent.best_mean_reward >= stop.reward_threshold:
            return f"stopped at the reward threshold {stop.reward_threshold:g} (evaluation {stop.parent.best_mean_reward:.2f})"
    return None


def summary_line(args: argparse.Namespace, model: BaseAlgorithm, model_path: Path, seconds: float,
                 evaluation: tuple[float, float] | None, seed: int, stopped: str | None = None) -> str:  # fmt: skip
    """The run's outcome in one line: final evaluation, real and simulator steps (and ``stopped``: why training stopped
    early), wall time, model, TensorBoard."""
    parts = [f"{args.algo} {args.env} seed {seed}"]
    if evaluation is not None:
        parts.append(f"final evaluation {evaluation[0]:.2f} +- {evaluation[1]:.2f} over {args.eval_episodes} episodes")
    pseudo = int(getattr(model, "num_pseudo_steps", 0))
    steps = f"{model.num_timesteps:,} real steps"
    parts.append(steps + (f" + {pseudo:,} pseudo steps" if pseudo else ""))
    if stopped is not None:
        parts.append(stopped)
    minutes, secs = divmod(round(seconds), 60)
    parts.append(f"{minutes}m{secs:02d}s")
    parts.append(f"model {model_path}")
    if args.tensorboard_log:
        parts.append(f"tensorboard --logdir {args.tensorboard_log}")
    return "; ".join(parts)


def learn_and_save(args: argparse.Namespace, model: BaseAlgorithm, n_timesteps: int, callbacks: list[BaseCallback],
                   run_dir: Path, seed: int, final_eval_env: VecEnv) -> int:  # fmt: skip
    """
    Train; on Ctrl-C or SIGTERM stop early. Either way save the model (and VecNormalize statistics), then print the
    summary line (with a final evaluation when training was not interrupted). Returns the exit status.
    """
    learn_kwargs: dict[str, Any] = {"tb_log_name": f"{env_name(args.env)}__{args.algo}__{seed}"}
    model_path = run_dir / f"{env_name(args.env)}.zip"
    status = 0
    start = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        model.learn(
            n_timesteps,
            callback=callbacks,
            log_interval=log_interval(args, model, n_timesteps),  # type: ignore[arg-type]
            progress_bar=show_progress(args),
            reset_num_timesteps=not args.trained_agent,
            **learn_kwargs,
        )
    except (KeyboardInterrupt, Terminated) as stop:
        status = 130 if isinstance(stop, KeyboardInterrupt) else 143
        print(f"\ninterrupted at {model.num_timesteps} steps; saving. Continue with: -i {model_path}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - start
    model.save(model_path)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_normalize.save(str(run_dir / "vecnormalize.pkl"))
    evaluation = None
    if status == 0:
        if vec_normalize is not None:
            sync_envs_normalization(vec_normalize, final_eval_env)
        deterministic = not args.stochastic
        evaluation = evaluate(model, final_eval_env, args.eval_episodes, deterministic)
    final_eval_env.close()
    for callback in callbacks:
        if isinstance(callback, EvalCallback):
            callback.eval_env.close()
    if args.verbose > 0:
        stopped = stopped_at_threshold(callbacks) if status == 0 else None
        print(summary_line(args, model, model_path, seconds, evaluation, seed, stopped))
    assert model.env is not None
    model.env.close()
    return status


def train(args: argparse.Namespace) -> int:
    """Read the preset, build env and model, train, save. Returns the exit status."""
    if args.list:
        return list_presets()
    _check_setup(args)
    key, raw = read_preset(args)
    settings, hyperparams = split_preset(args.algo, raw)
    if args.env_kwargs:
        settings["env_kwargs"] = parse_overrides(args.env_kwargs, what="--env-kwargs")
    probe_preset_env(args.env, args.algo, settings, forks=args.vec_env == "fork")
    normalize = normalize_kwargs(settings.get("normalize"), hyperparams.get("gamma"))
    kwargs = build_kwargs(hyperparams)
    check_types(args.algo, kwargs)
    if args.eval_only:
        return evaluate_only(args, settings, kwargs)

    seed = args.seed if args.seed >= 0 else int(np.random.default_rng().integers(2**31 - 1))
    n_envs = args.n_envs or int(settings.get("n_envs", 1))
    if args.n_timesteps is None and "n_timesteps" not in settings:
        raise UsageError(f"preset {key!r} has no n_timesteps; pass -n N")
    n_timesteps = args.n_timesteps or int(float(settings["n_timesteps"]))
    if args.trained_agent:  # a bad -i file fails before a run folder is made
        if args.weights_only:
            _refuse_pickled_statistics(args)
            check_model_algo(args.algo, model_file(args.trained_agent))
        else:
            load_model(args.algo, args.trained_agent)

    run_dir = next_run_dir(args.log_folder, args.algo, args.env, f"_{uuid.uuid4()}" if args.uuid else "")
    venv = make_env(
        args.env, settings, n_envs, seed, cloneable=args.algo in ARSM_FAMILY, vec_env=args.vec_env, monitor_dir=str(run_dir)
    )
    try:
        model = build_model(args, venv, kwargs, normalize, seed)
    except UsageError:
        venv.close()
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing was trained: leave no half-made run folder behind
        for parent in (run_dir.parent, run_dir.parent.parent):
            if parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    resolved = resolved_hyperparams(args.algo, hyperparams)
    config = {
        "algo": args.algo,
        "env": args.env,
        "preset": key,
        "conf_file": args.conf_file,
        "seed": seed,
        "n_timesteps": n_timesteps,
        "n_envs": n_envs,
        "vec_env": args.vec_env,
        **{k: _plain(v) for k, v in settings.items() if k not in ("n_timesteps", "n_envs")},
        "trained_agent": args.trained_agent or None,
        "hyperparams": resolved,
    }
    with open(run_dir / "config.yml", "w") as file:
        yaml.safe_dump(config, file, sort_keys=False)
    hparams = {"algo": args.algo, "env": args.env, "seed": seed, "n_envs": n_envs, **resolved}
    callbacks = make_callbacks(args, settings, normalize, hparams, run_dir, n_envs, seed, n_timesteps)
    final_eval_env = _normalized_eval_env(make_eval_env(args, settings, seed + 20_000), normalize)
    return learn_and_save(args, model, n_timesteps, callbacks, run_dir, seed, final_eval_env)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: bad input becomes one ``error: ...`` line on stderr and exit status 2."""
    args = None
    try:
        args = parse_args(argv)
        return train(args)
    except UsageError as error:
        if args is not None and args.verbose >= 2:
            raise
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
