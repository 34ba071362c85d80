"""Pseudo-action statistics over training: distinct pseudo actions per step and pseudo-to-real step ratio.

ARSM, built from its preset in ``agents/arsm.yml`` exactly as ``benchmarks/rl.py`` builds it (on CartPole
the constructor defaults), trains on an env for a few seeds; after every update the logged
``rollout/pseudo_actions_per_step``, ``rollout/pseudo_step_share``, ``rollout/pseudo_steps`` and
``rollout/restore_steps`` (the part of the pseudo steps spent replaying Box2D snapshots) are read back from
the CSV logger, together with the training episodes' mean return. Writes
``benchmarks/results/pseudo_stats_<env>.csv`` and ``.png`` (with ``--quick``, a fresh temporary folder).

    python benchmarks/pseudo_stats.py --env CartPole-v1 --seeds 0-2 --steps 10000
    python benchmarks/pseudo_stats.py --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch as th
from outputs import add_output, resolve_outputs
from rl import build, check_inputs, parse_seeds
from stable_baselines3.common.logger import configure


def trace(env_id: str, seed: int, steps: int) -> pd.DataFrame:
    """One training run's per-update statistics."""
    model, _, _ = build("arsm", env_id, seed)
    with tempfile.TemporaryDirectory() as folder:
        model.set_logger(configure(folder, ["csv"]))
        model.learn(steps)
        frame = pd.read_csv(Path(folder) / "progress.csv")
    frame = frame.dropna(subset=["rollout/pseudo_steps"])
    n = model.n_steps * model.n_envs
    # train/ and rollout/pseudo_* keys of an update are dumped with the next iteration, whose
    # time/total_timesteps is one update later: the update itself ended n real steps earlier.
    return pd.DataFrame(
        {
            "seed": seed,
            "real_steps": frame["time/total_timesteps"] - n,
            "pseudo_actions_per_step": frame["rollout/pseudo_actions_per_step"],
            "pseudo_step_share": frame["rollout/pseudo_step_share"],
            "pseudo_to_real": frame["rollout/pseudo_steps"] / n,
            "restore_to_real": frame["rollout/restore_steps"] / n,
            "ep_rew_mean": frame["rollout/ep_rew_mean"],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--steps", type=int, default=10_000)
    add_output(parser, "--out", "", "folder of the results")
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0, 512 real steps")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps = "0", 512
    check_inputs(parser, ["arsm"], args.env)
    resolve_outputs(parser, args)
    th.set_num_threads(1)
    frame = pd.concat([trace(args.env, seed, args.steps) for seed in parse_seeds(args.seeds)], ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"pseudo_stats_{args.env.replace('/', '-')}"
    frame.to_csv(stem.with_suffix(".csv"), index=False, quoting=csv.QUOTE_MINIMAL)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("pseudo_actions_per_step", "distinct pseudo actions per real step"),
        ("pseudo_to_real", "pseudo steps per real step"),
        ("ep_rew_mean", "training episode return (mean of 100)"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for seed, group in frame.groupby("seed"):
            (line,) = ax.plot(group["real_steps"], group[key], label=f"seed {seed}", lw=1.2)
            if key == "pseudo_to_real" and group["restore_to_real"].any():  # replay families: the restore part
                ax.plot(group["real_steps"], group["restore_to_real"], color=line.get_color(), ls="--", lw=1)
        ax.set_xlabel("real environment steps")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    dashed = ", dashed: of which replayed restore steps" if frame["restore_to_real"].any() else ""
    fig.suptitle(f"ARSM (preset) on {args.env}: pseudo actions as the policy sharpens{dashed}")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    for seed, group in frame.groupby("seed"):
        first, last = group.iloc[0], group.iloc[-1]
        actions = f"{first['pseudo_actions_per_step']:.2f} -> {last['pseudo_actions_per_step']:.2f}"
        ratio = f"{first['pseudo_to_real']:.1f} -> {last['pseudo_to_real']:.1f} (peak {group['pseudo_to_real'].max():.1f})"
        returns = f"{np.nan_to_num(first['ep_rew_mean']):.0f} -> {last['ep_rew_mean']:.0f}"
        restore = group["restore_to_real"].sum() / group["pseudo_to_real"].sum()
        print(
            f"seed {seed}: pseudo actions/step {actions}, pseudo/real {ratio}, replayed share {restore:.0%}, "
            f"return {returns}"
        )


if __name__ == "__main__":
    main()
