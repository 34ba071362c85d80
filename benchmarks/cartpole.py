"""Steps and wall time to solve CartPole-v1: ARSM with its defaults beside SB3's PPO (RL Zoo's tuned values).

Every ``--eval-freq`` real steps the stochastic policy plays 10 evaluation episodes on a separate env;
a run stops at the first evaluation whose mean return reaches the threshold (475), or at ``--max-steps``.
Wall time excludes the evaluations. Writes ``benchmarks/results/cartpole.csv`` and ``cartpole.md``.

    python benchmarks/cartpole.py --algos arsm,ppo --seeds 0-4
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import gymnasium as gym
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import LinearSchedule

from arsm_rl import ARSM

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0


class SolvedCallback(BaseCallback):
    """Evaluate every ``eval_freq`` real steps; stop when the 10-episode mean reaches ``threshold``."""

    def __init__(self, eval_freq: int, threshold: float, seed: int) -> None:
        super().__init__()
        self.eval_freq, self.threshold = eval_freq, threshold
        self.eval_env = gym.make(ENV_ID)
        self.eval_env.reset(seed=10_000 + seed)
        self.next_eval = eval_freq
        self.eval_seconds = 0.0
        self.solved_at: int | None = None
        self.episodes = 0

    def _on_step(self) -> bool:
        self.episodes += int(sum(self.locals["dones"]))
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += self.eval_freq
        start = time.perf_counter()
        mean, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=10, deterministic=False)
        self.eval_seconds += time.perf_counter() - start
        if mean >= self.threshold:
            self.solved_at = self.num_timesteps
            return False
        return True


def make_model(algo: str, seed: int) -> ARSM | PPO:
    if algo == "arsm":
        return ARSM("MlpPolicy", ENV_ID, seed=seed)
    if algo == "ppo":  # RL Zoo hyperparams/ppo.yml, CartPole-v1 (marked "Tuned")
        env = make_vec_env(ENV_ID, n_envs=8, seed=seed)
        return PPO(
            "MlpPolicy",
            env,
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=LinearSchedule(1e-3, 0.0, 1.0),
            clip_range=LinearSchedule(0.2, 0.0, 1.0),
            seed=seed,
        )
    raise ValueError(f"unknown algo {algo!r}; choose arsm or ppo")


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default="arsm,ppo")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--eval-freq", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    th.set_num_threads(1)
    rows = []
    for algo in args.algos.split(","):
        for seed in parse_seeds(args.seeds):
            model = make_model(algo, seed)
            callback = SolvedCallback(args.eval_freq, THRESHOLD, seed)
            start = time.perf_counter()
            model.learn(args.max_steps, callback=callback)
            wall = time.perf_counter() - start - callback.eval_seconds
            row = {
                "algo": algo,
                "seed": seed,
                "solved": callback.solved_at is not None,
                "real_steps": callback.solved_at if callback.solved_at is not None else model.num_timesteps,
                "episodes": callback.episodes,
                "pseudo_steps": getattr(model, "num_pseudo_steps", 0),
                "wall_s": round(wall, 1),
            }
            print(row, flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "cartpole.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"CartPole-v1, threshold {THRESHOLD:g} (10 stochastic evaluation episodes every {args.eval_freq} real steps), "
        f"at most {args.max_steps} real steps.",
        "",
        "| algo | seed | solved | real steps | episodes | pseudo steps | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['algo']} | {r['seed']} | {'yes' if r['solved'] else 'no'} | {r['real_steps']} | {r['episodes']} "
        f"| {r['pseudo_steps']} | {r['wall_s']} |"
        for r in rows
    ]
    lines += ["", "| algo | median real steps | median pseudo steps | median wall s |", "|---|---|---|---|"]
    for algo in args.algos.split(","):
        sub = [r for r in rows if r["algo"] == algo]
        lines.append(
            f"| {algo} | {statistics.median(r['real_steps'] for r in sub):.0f} "
            f"| {statistics.median(r['pseudo_steps'] for r in sub):.0f} | {statistics.median(r['wall_s'] for r in sub):.1f} |"
        )
    (args.out / "cartpole.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
