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
checkpoints with ``--save-freq``, and ``best_model.zip``/``evaluations.npz`` with evaluation on.
See ``docs/train.md``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import pickle
import re
import shutil
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import HParam
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack, VecNormalize

import envs  # noqa: F401  (registers the arsm/ env ids)
from agents import ALGOS, ARSM_FAMILY, load_preset, preset_envs
from arsm_rl.cloning import NotCloneableError, clone_state, make_cloneable, register_optional_envs

#: Preset keys that configure the environment or the run rather than the algorithm's constructor.
ENV_KEYS = ("n_timesteps", "n_envs", "normalize", "env_wrapper", "frame_stack", "env_kwargs")
#: Preset keys whose string values are Python expressions (RL Zoo convention), evaluated with ``nn``/``th``.
CODE_KEYS = ("policy_kwargs", "normalize", "env_kwargs")
_BARE_WORD = re.compile(r"^[A-Za-z_][\w.\-/]*$")


class UsageError(Exception):
    """Bad input: printed as one ``error: ...`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see python train.py --help)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags, named as in RL Baselines3 Zoo's ``train.py``."""
    p = _Parser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--algo", default="arsm", help=f"algorithm: {', '.join(ALGOS)}")
    p.add_argument("--env", default="CartPole-v1", help="Gymnasium id (also arsm/... and module:EnvId)")
    p.add_argument("-n", "--n-timesteps", type=int, default=-1, help="real env steps (-1: the preset's)")
    p.add_argument("--seed", type=int, default=-1, help="random seed (-1: draw one)")
    p.add_argument("--n-envs", type=int, default=-1, help="parallel envs (-1: the preset's)")
    p.add_argument("--vec-env", default="dummy", choices=["dummy", "subproc"], help="VecEnv type")
    p.add_argument("-tb", "--tensorboard-log", default="", help="TensorBoard folder ('' for none)")
    p.add_argument("-f", "--log-folder", default="logs", help="where run folders are created")
    p.add_argument("--eval-freq", type=int, default=25_000, help="evaluate every N real steps (<= 0 disables)")
    p.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    p.add_argument("--stochastic", action="store_true", help="evaluate the stochastic policy (default: deterministic)")
    p.add_argument("--save-freq", type=int, default=-1, help="checkpoint every N real steps (<= 0 disables)")
    p.add_argument("--log-interval", type=int, default=-1, help="updates between log dumps (-1: the algorithm's)")
    p.add_argument(
        "-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE", help="override preset values (Python literals)"
    )
    p.add_argument("-conf", "--conf-file", default=None, help="preset YAML to read instead of agents/<algo>.yml")
    p.add_argument("--preset", default=None, help="named variant: reads the key <env>-<preset> (e.g. paper)")
    p.add_argument("-i", "--trained-agent", default="", help="model zip to continue training (or to evaluate)")
    p.add_argument("--eval-only", action="store_true", help="evaluate --trained-agent and exit")
    p.add_argument("--gym-packages", nargs="+", default=[], help="modules to import (they register envs)")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--num-threads", type=int, default=-1, help="torch threads (-1: torch's default)")
    p.add_argument("-P", "--progress", action="store_true", help="show a progress bar (needs tqdm and rich)")
    p.add_argument("--verbose", type=int, default=1, help="0 silent, 1 progress table, 2 debug (tracebacks)")
    p.add_argument("--list", action="store_true", help="print the envs each algorithm has presets for")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- hyperparameters


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
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
            raise UsageError(f"malformed -params entry {item!r}: write key:value, e.g. learning_rate:0.01")
        try:
            value: Any = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if key in CODE_KEYS or _BARE_WORD.match(text):
                value = text
            else:
                raise UsageError(
                    f"malformed -params value {item!r}: use a Python literal, e.g. n_steps:128, gamma:0.98 or estimator:rloo"
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


def probe_preset_env(env_id: str, algo: str, settings: dict[str, Any]) -> None:
    """:func:`probe_env` with the ``env_kwargs`` of a preset's env settings (see :func:`split_preset`)."""
    env_kwargs = settings.get("env_kwargs") or {}
    probe_env(env_id, algo, _eval_code("env_kwargs", env_kwargs) if isinstance(env_kwargs, str) else env_kwargs)


def probe_env(env_id: str, algo: str, env_kwargs: dict[str, Any]) -> None:
    """
    Make one env to turn bad ids, action spaces and uncloneable envs into one-line errors early.

    :raises UsageError: with what to do about it
    """
    try:
        register_optional_envs(env_id)
    except ImportError as error:  # e.g. "ALE/Pong-v5 needs ale-py: pip install -e '.[atari]'"
        raise UsageError(str(error)) from None
    try:
        env = gym.make(env_id, **env_kwargs)
    except (gym.error.Error, ModuleNotFoundError) as error:
        raise UsageError(f"unknown env id {env_id!r} ({error}); see gymnasium.pprint_registry() or use module:EnvId") from None
    except TypeError as error:
        raise UsageError(f"cannot make {env_id} with env_kwargs {env_kwargs} ({error}); check env_kwargs") from None
    try:
        if algo in ARSM_FAMILY:
            if not isinstance(env.action_space, spaces.Discrete | spaces.MultiDiscrete):
                raise UsageError(
                    f"{env_id} has a {type(env.action_space).__name__} action space; ARSM needs Discrete or "
                    "MultiDiscrete actions (use --algo ppo or a2c for continuous control)"
                )
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
    """The (vectorised, optionally frame-stacked) env of a preset; VecNormalize is added by the caller."""
    extra = _wrapper_from_spec(settings.get("env_wrapper"))

    def wrapper(env: gym.Env) -> gym.Env:
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
        vec_env_cls=SubprocVecEnv if vec_env == "subproc" else DummyVecEnv,
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


def next_run_dir(log_folder: str, algo: str, env_id: str) -> Path:
    """``<log_folder>/<algo>/<env>_<k>`` with k one more than the largest existing run."""
    root = Path(log_folder) / algo
    pattern = re.compile(rf"^{re.escape(env_name(env_id))}_(\d+)$")
    runs = [int(m.group(1)) for p in root.glob("*") if (m := pattern.match(p.name))] if root.exists() else []
    path = root / f"{env_name(env_id)}_{max(runs, default=0) + 1}"
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
)


def load_model(algo: str, path: str, **kwargs: Any) -> BaseAlgorithm:
    """
    Load a model zip with friendly errors.

    :raises UsageError: if the file is missing or not a model of ``algo``
    """
    file = Path(path)
    if not file.is_file() and file.with_suffix(".zip").is_file():
        file = file.with_suffix(".zip")
    if not file.is_file():
        raise UsageError(
            f"model file not found: {path} (pass the .zip written by train.py, e.g. logs/arsm/CartPole-v1_1/CartPole-v1.zip)"
        )
    try:
        return ALGOS[algo].load(file, **kwargs)
    except _LOAD_ERRORS as error:
        raise UsageError(
            f"cannot load {file} as an {algo} model ({type(error).__name__}: {error}); is it a model zip of --algo {algo}?"
        ) from None


def _vecnormalize_path(model_path: str) -> Path:
    return Path(model_path).resolve().parent / "vecnormalize.pkl"


def evaluate_only(args: argparse.Namespace, settings: dict[str, Any], gamma: Any) -> int:
    """``--eval-only``: print mean +- std of the return of ``--trained-agent`` over ``--eval-episodes``."""
    model = load_model(args.algo, args.trained_agent, device=args.device)
    seed = max(args.seed, 0)
    venv = make_env(args.env, settings, 1, seed, cloneable=False)
    stats = _vecnormalize_path(args.trained_agent)
    if stats.is_file():
        venv = VecNormalize.load(str(stats), venv)
        venv.training, venv.norm_reward = False, False
    mean, std = evaluate_policy(model, venv, n_eval_episodes=args.eval_episodes, deterministic=not args.stochastic)
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
    if args.progress and not all(importlib.util.find_spec(name) for name in ("tqdm", "rich")):
        raise UsageError("-P/--progress needs tqdm and rich: pip install -e '.[extra]'")


def build_model(
    args: argparse.Namespace,
    venv: VecEnv,
    kwargs: dict[str, Any],
    normalize: dict[str, Any] | None,
    seed: int,
) -> BaseAlgorithm:
    """A new model from the preset, or the ``-i`` model (with its VecNormalize statistics) on ``venv``."""
    tensorboard_log = args.tensorboard_log or None
    if args.trained_agent:
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
        return ALGOS[args.algo](
            env=venv,
            seed=seed,
            device=args.device,
            verbose=args.verbose,
            tensorboard_log=tensorboard_log,
            **kwargs,
        )
    except (ValueError, TypeError) as error:
        raise UsageError(f"invalid hyperparameters for {args.algo} ({error})") from None


def make_callbacks(
    args: argparse.Namespace,
    settings: dict[str, Any],
    normalize: dict[str, Any] | None,
    hparams: dict[str, Any],
    run_dir: Path,
    n_envs: int,
    seed: int,
) -> list[BaseCallback]:
    """HParams for TensorBoard, checkpoints (``--save-freq``) and evaluation (``--eval-freq``)."""
    callbacks: list[BaseCallback] = []
    if args.tensorboard_log:
        callbacks.append(HParamCallback(hparams))
    if args.save_freq > 0:
        callbacks.append(
            CheckpointCallback(max(args.save_freq // n_envs, 1), str(run_dir), name_prefix="rl_model", save_vecnormalize=True)
        )
    if args.eval_freq > 0:
        eval_env = make_env(args.env, settings, 1, seed + 10_000, cloneable=False)
        if normalize is not None:
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False, **normalize)  # synced from the training env
        callbacks.append(
            EvalCallback(
                eval_env,
                eval_freq=max(args.eval_freq // n_envs, 1),
                n_eval_episodes=args.eval_episodes,
                deterministic=not args.stochastic,
                best_model_save_path=str(run_dir),
                log_path=str(run_dir),
                verbose=args.verbose,
            )
        )
    return callbacks


def learn_and_save(args: argparse.Namespace, model: BaseAlgorithm, n_timesteps: int, callbacks: list[BaseCallback],
                   run_dir: Path, seed: int) -> int:  # fmt: skip
    """Train; on Ctrl-C stop early. Either way save the model (and VecNormalize statistics). Returns the exit status."""
    learn_kwargs: dict[str, Any] = {"tb_log_name": f"{env_name(args.env)}__{args.algo}__{seed}"}
    if args.log_interval > 0:
        learn_kwargs["log_interval"] = args.log_interval
    model_path = run_dir / f"{env_name(args.env)}.zip"
    status = 0
    try:
        model.learn(
            n_timesteps,
            callback=callbacks,
            progress_bar=args.progress,
            reset_num_timesteps=not args.trained_agent,
            **learn_kwargs,
        )
    except KeyboardInterrupt:
        status = 130
        print(f"\ninterrupted at {model.num_timesteps} steps; saving. Continue with: -i {model_path}", file=sys.stderr)
    model.save(model_path)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_normalize.save(str(run_dir / "vecnormalize.pkl"))
    if args.verbose > 0:
        print(f"saved {model_path}")
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
    probe_preset_env(args.env, args.algo, settings)
    normalize = normalize_kwargs(settings.get("normalize"), hyperparams.get("gamma"))
    if args.eval_only:
        return evaluate_only(args, settings, hyperparams.get("gamma"))

    seed = args.seed if args.seed >= 0 else int(np.random.default_rng().integers(2**31 - 1))
    n_envs = args.n_envs if args.n_envs > 0 else int(settings.get("n_envs", 1))
    if args.n_timesteps <= 0 and "n_timesteps" not in settings:
        raise UsageError(f"preset {key!r} has no n_timesteps; pass -n N")
    n_timesteps = args.n_timesteps if args.n_timesteps > 0 else int(float(settings["n_timesteps"]))
    kwargs = build_kwargs(hyperparams)
    if args.trained_agent:
        load_model(args.algo, args.trained_agent)  # a bad -i file fails before a run folder is made

    run_dir = next_run_dir(args.log_folder, args.algo, args.env)
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
    callbacks = make_callbacks(args, settings, normalize, hparams, run_dir, n_envs, seed)
    return learn_and_save(args, model, n_timesteps, callbacks, run_dir, seed)


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
