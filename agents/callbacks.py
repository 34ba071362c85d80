"""Callbacks of a training run: TensorBoard's HPARAMS, checkpoints, periodic evaluation, stopping at the threshold.

:func:`make_callbacks` builds them from the flags; the periodic evaluation (every :func:`eval_freq` real steps)
stops training once its mean reaches the env's :func:`reward_threshold`, and :func:`stopped_at_threshold` tells
afterwards whether it did.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.logger import HParam
from stable_baselines3.common.vec_env import VecEnv

from agents import ALGOS
from agents.evaluation import make_eval_env, normalized_eval_env, takes_masks

__all__ = ["HParamCallback", "eval_freq", "make_callbacks", "reward_threshold", "stopped_at_threshold"]


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
        eval_env = normalized_eval_env(make_eval_env(args, settings, seed + 10_000, args.vec_env), normalize)
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


def stopped_at_threshold(callbacks: list[BaseCallback]) -> str | None:
    """That an evaluation reached the env's reward threshold, which stopped training (:func:`make_callbacks`), or None."""
    for callback in callbacks:
        stop = getattr(callback, "callback_on_new_best", None)
        if isinstance(stop, StopTrainingOnRewardThreshold) and stop.parent.best_mean_reward >= stop.reward_threshold:
            return f"stopped at the reward threshold {stop.reward_threshold:g} (evaluation {stop.parent.best_mean_reward:.2f})"
    return None
