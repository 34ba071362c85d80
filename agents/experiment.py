"""One training run, from parsed ``train.py`` flags to the saved model (RL Zoo's ``exp_manager``).

:func:`run` checks the setup, reads the preset, probes the env, then either evaluates (``--eval-only``) or makes the
run folder (:func:`next_run_dir`) with its ``config.yml``, builds env, model and callbacks, and hands over to
:func:`learn_and_save`: it trains, stops early on Ctrl-C or SIGTERM (:class:`Terminated`), saves, evaluates and
prints the :func:`summary_line`. Bad input raises :class:`agents.errors.UsageError`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from agents import ALGOS, ARSM_FAMILY
from agents.callbacks import make_callbacks, stopped_at_threshold
from agents.envs import env_name, make_env, make_or_explain, normalize_kwargs, probe_preset_env
from agents.errors import UsageError
from agents.evaluation import evaluate, evaluate_only, make_eval_env, normalized_eval_env
from agents.hyperparams import (
    build_kwargs,
    check_types,
    parse_overrides,
    plain_value,
    read_preset,
    resolved_hyperparams,
    split_preset,
)
from agents.models import build_model, check_model_algo, load_model, model_file, refuse_pickled_statistics

__all__ = ["Terminated", "check_setup", "learn_and_save", "log_interval", "next_run_dir", "run", "show_progress",
           "summary_line"]  # fmt: skip


def check_setup(args: argparse.Namespace) -> None:
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


def run(args: argparse.Namespace) -> int:
    """Read the preset, build env and model, train, save (``--eval-only``: evaluate). Returns the exit status.

    :raises UsageError: on bad input, before a run folder is made (or after removing it again)
    """
    check_setup(args)
    key, raw = read_preset(args)
    settings, hyperparams = split_preset(args.algo, raw)
    if args.env_kwargs:
        settings["env_kwargs"] = parse_overrides(args.env_kwargs, what="--env-kwargs")
    clones = args.algo in ARSM_FAMILY and hyperparams.get("action_values", "rollout") != "critic"
    probe_preset_env(args.env, args.algo, settings, forks=args.vec_env == "fork", clones=clones)
    if args.eval_env_kwargs:
        make_or_explain(args.env, parse_overrides(args.eval_env_kwargs, what="--eval-env-kwargs"), "--eval-env-kwargs").close()
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
            refuse_pickled_statistics(args)
            check_model_algo(args.algo, model_file(args.trained_agent))
        else:
            load_model(args.algo, args.trained_agent)

    run_dir = next_run_dir(args.log_folder, args.algo, args.env, f"_{uuid.uuid4()}" if args.uuid else "")
    venv = make_env(
        args.env, settings, n_envs, seed, cloneable=clones, vec_env=args.vec_env, monitor_dir=str(run_dir)
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
        **{k: plain_value(v) for k, v in settings.items() if k not in ("n_timesteps", "n_envs")},
        "trained_agent": args.trained_agent or None,
        "hyperparams": resolved,
    }
    with open(run_dir / "config.yml", "w") as file:
        yaml.safe_dump(config, file, sort_keys=False)
    hparams = {"algo": args.algo, "env": args.env, "seed": seed, "n_envs": n_envs, **resolved}
    callbacks = make_callbacks(args, settings, normalize, hparams, run_dir, n_envs, seed, n_timesteps)
    final_eval_env = normalized_eval_env(make_eval_env(args, settings, seed + 20_000), normalize)
    return learn_and_save(args, model, n_timesteps, callbacks, run_dir, seed, final_eval_env)


def next_run_dir(log_folder: str, algo: str, env_id: str, suffix: str = "") -> Path:
    """``<log_folder>/<algo>/<env>_<k><suffix>`` with k one more than the largest existing run (``-uuid``: a suffix)."""
    root = Path(log_folder) / algo
    pattern = re.compile(rf"^{re.escape(env_name(env_id))}_(\d+)(_[0-9a-f-]{{36}})?$")
    runs = [int(m.group(1)) for p in root.glob("*") if (m := pattern.match(p.name))] if root.exists() else []
    path = root / f"{env_name(env_id)}_{max(runs, default=0) + 1}{suffix}"
    path.mkdir(parents=True)
    return path


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
