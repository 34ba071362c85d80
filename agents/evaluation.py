"""Evaluation: the evaluation env, scoring a model on it (with action masks when the env has them), ``--eval-only``.

:func:`make_eval_env` builds the evaluation env (``--n-eval-envs``, ``--eval-env-kwargs``) and
:func:`normalized_eval_env` adds frozen ``VecNormalize`` statistics; :func:`evaluate` is SB3's ``evaluate_policy``,
or sb3-contrib's maskable one when :func:`takes_masks`. :func:`evaluate_only` is the ``--eval-only`` run.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents import ALGOS
from agents.envs import make_env
from agents.hyperparams import parse_overrides
from agents.models import load_model, load_weights, refuse_pickled_statistics, vecnormalize_path
from arsm_rl.cloning import has_masks

__all__ = ["evaluate", "evaluate_only", "make_eval_env", "normalized_eval_env", "takes_masks"]


def make_eval_env(args: argparse.Namespace, settings: dict[str, Any], seed: int, vec_env: str = "dummy") -> VecEnv:
    """The evaluation env: ``--n-eval-envs`` envs, ``--eval-env-kwargs`` (default: the training env's kwargs).

    :param vec_env: a key of :data:`agents.envs.VEC_ENVS`
    """
    eval_settings = dict(settings)
    if args.eval_env_kwargs:
        eval_settings["env_kwargs"] = parse_overrides(args.eval_env_kwargs, what="--eval-env-kwargs")
    return make_env(args.env, eval_settings, args.n_eval_envs, seed, cloneable=False, vec_env=vec_env)


def normalized_eval_env(env: VecEnv, normalize: dict[str, Any] | None) -> VecEnv:
    """The evaluation env, with frozen VecNormalize statistics (synced from the training env) when it normalises."""
    return env if normalize is None else VecNormalize(env, training=False, norm_reward=False, **normalize)


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
        refuse_pickled_statistics(args)
        model = ALGOS[args.algo](env=venv, device=args.device, **kwargs)
        load_weights(model, args.algo, args.trained_agent)
    else:
        model = load_model(args.algo, args.trained_agent, device=args.device)
        stats = vecnormalize_path(args.trained_agent)
        if stats.is_file():
            venv = VecNormalize.load(str(stats), venv)
            venv.training, venv.norm_reward = False, False
    mean, std = evaluate(model, venv, args.eval_episodes, deterministic=not args.stochastic)
    policy = "stochastic" if args.stochastic else "deterministic"
    print(f"{args.algo} {args.env}: {mean:.2f} +- {std:.2f} over {args.eval_episodes} episodes ({policy} policy)")
    venv.close()
    return 0
