"""Learning efficiency: real steps, simulator steps and wall time to a return threshold, per algorithm and seed.

Every algorithm is built from its preset in ``agents/`` exactly as ``train.py`` builds it. Every
``--eval-freq`` real steps the stochastic policy plays ``--eval-episodes`` episodes on a separate env (with
the training VecNormalize statistics, when the preset normalises); a run stops at the first evaluation
whose mean reaches the threshold, or at the preset's ``n_timesteps`` (or ``--max-steps``). "Simulator
steps" are real steps plus ARSM's pseudo and tail rollout steps (``time/total_env_steps``). Wall time
excludes the evaluations. ``arsm-paper`` is ARSM with the authors' configuration (``--preset paper``).

    python benchmarks/rl.py --env CartPole-v1 --algos arsm,ppo --seeds 0-4

writes ``benchmarks/results/rl_<env>.csv`` (one row per run), ``rl_<env>_curves.csv`` (every evaluation),
``rl_<env>.md`` (medians and interquartile ranges) and ``rl_<env>.png`` (curves against real and simulator steps).
Results are saved after every run and merge across invocations: a run replaces the stored rows of the same
(algo, seed) and keeps the rest, and every row records the command that produced it, so one env's table can
be built up algorithm by algorithm (and an interrupted invocation keeps the runs it finished); invocations may
run in parallel. ``python benchmarks/sync_readme.py`` then copies the tables into ``benchmarks/README.md``.
``--quick`` is a one-minute smoke run of the same code path (used by ``tests/test_benchmarks_quick.py``).
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiment layer: agents/, train.py

from agents import ALGOS, ARSM_FAMILY, load_preset
from train import UsageError, build_kwargs, evaluate, make_env, normalize_kwargs, probe_preset_env, split_preset

ALGO_ORDER = ("arsm", "arsm-paper", "rloo", "all_action", "a2c", "ppo", "maskable_ppo")
THRESHOLDS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "LunarLander-v3": 200.0, "arsm/MaskedTaxi-v0": 7.0,
              "MiniGrid-Empty-5x5-v0": 0.9}  # fmt: skip
TYPES: dict[str, Any] = {  # how stored CSV fields are read back when results merge
    "seed": int, "real_steps": int, "simulator_steps": int, "episodes": int,
    "wall_s": float, "final_eval": float, "eval_mean": float, "solved": lambda text: text == "True",
}


class ThresholdCallback(BaseCallback):
    """Evaluate every ``eval_freq`` real steps, record the curve, stop when the mean reaches ``threshold``."""

    def __init__(self, eval_env: Any, eval_freq: int, n_episodes: int, threshold: float) -> None:
        super().__init__()
        self.eval_env, self.eval_freq, self.n_episodes, self.threshold = eval_env, eval_freq, n_episodes, threshold
        self.next_eval = eval_freq
        self.eval_seconds = 0.0
        self.episodes = 0
        self.curve: list[tuple[int, int, int, float]] = []  # (real steps, simulator steps, episodes, mean return)
        self.solved = False

    def _on_step(self) -> bool:
        self.episodes += int(np.sum(self.locals["dones"]))
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += self.eval_freq
        start = time.perf_counter()
        if isinstance(self.eval_env, VecNormalize):
            sync_envs_normalization(self.training_env, self.eval_env)
        mean, _ = evaluate(self.model, self.eval_env, self.n_episodes, deterministic=False)  # with masks if the env has them
        self.eval_seconds += time.perf_counter() - start
        simulator = self.num_timesteps + getattr(self.model, "num_pseudo_steps", 0)
        self.curve.append((self.num_timesteps, simulator, self.episodes, float(mean)))
        print(f"  {self.num_timesteps} real steps, {simulator} simulator steps: eval {mean:.2f}", flush=True)
        self.solved = bool(mean >= self.threshold)
        return not self.solved


def preset(algo: str, env_id: str) -> tuple[str, dict[str, Any]]:
    """The algorithm behind a benchmark row and its raw preset (``arsm-paper`` is arsm's ``paper`` variant)."""
    name, variant = ("arsm", "paper") if algo == "arsm-paper" else (algo, None)
    return name, load_preset(name, env_id, variant=variant)[1]


def check_inputs(parser: argparse.ArgumentParser, algos: list[str], env_id: str) -> None:
    """Exit with a one-line usage error, before any run, on an algorithm without a preset for ``env_id`` or an
    env that ``train.py`` would refuse (unknown id, unsupported action space, not cloneable)."""
    for algo in algos:
        try:
            name, raw = preset(algo, env_id)
            probe_preset_env(env_id, name, split_preset(name, raw)[0])
        except KeyError as error:
            parser.error(str(error).strip("'\"") + "; add one to agents/ or drop the algo")
        except UsageError as error:
            parser.error(str(error))


def build(algo: str, env_id: str, seed: int) -> tuple[Any, Any, int]:
    """Model, evaluation env and step budget from the preset, as ``train.py`` builds them."""
    name, raw = preset(algo, env_id)
    settings, hyperparams = split_preset(name, raw)
    kwargs = build_kwargs(hyperparams)
    cloneable = name in ARSM_FAMILY
    venv = make_env(env_id, settings, int(settings.get("n_envs", 1)), seed, cloneable=cloneable)
    eval_env = make_env(env_id, settings, 1, 10_000 + seed, cloneable=False)
    normalize = normalize_kwargs(settings.get("normalize"), kwargs.get("gamma"))
    if normalize is not None:
        venv = VecNormalize(venv, **normalize)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    model = ALGOS[name](env=venv, seed=seed, **kwargs)
    return model, eval_env, int(float(settings.get("n_timesteps", 1e5)))


def run(algo: str, env_id: str, seed: int, args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    model, eval_env, budget = build(algo, env_id, seed)
    budget = args.max_steps or budget
    callback = ThresholdCallback(eval_env, args.eval_freq, args.eval_episodes, args.threshold)
    start = time.perf_counter()
    model.learn(budget, callback=callback)
    wall = time.perf_counter() - start - callback.eval_seconds
    last = callback.curve[-1] if callback.curve else (model.num_timesteps, model.num_timesteps, callback.episodes, np.nan)
    row = {
        "env": env_id,
        "algo": algo,
        "seed": seed,
        "solved": callback.solved,
        "real_steps": last[0],
        "episodes": last[2],
        "simulator_steps": last[1],
        "wall_s": round(wall, 2),
        "final_eval": last[3],
        "command": args.command,
    }
    curve = [
        {"algo": algo, "seed": seed, "real_steps": r, "simulator_steps": s, "episodes": e, "eval_mean": m}
        for r, s, e, m in callback.curve
    ]
    return row, curve


def summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Median [interquartile range] per algorithm; unsolved runs count at their budget and are flagged."""
    lines = [
        f"{args.env}, threshold {args.threshold:g}: stochastic evaluations (episodes and frequency as in each command; "
        "defaults 10 episodes every 2000 real steps). Median [IQR] over seeds; unsolved runs count at their budget.",
        "",
        "| algo | solved | real steps | episodes | simulator steps | wall s |",
        "|---|---|---|---|---|---|",
    ]

    def cell(values: list[float]) -> str:
        q1, med, q3 = np.percentile(values, [25, 50, 75])
        return f"{med:,.0f} [{q1:,.0f} to {q3:,.0f}]"

    for algo in dict.fromkeys(r["algo"] for r in rows):
        sub = [r for r in rows if r["algo"] == algo]
        solved = sum(r["solved"] for r in sub)
        wall = np.percentile([r["wall_s"] for r in sub], [25, 50, 75])
        lines.append(
            f"| {algo} | {solved}/{len(sub)} | {cell([r['real_steps'] for r in sub])} | {cell([r['episodes'] for r in sub])} "
            f"| {cell([r['simulator_steps'] for r in sub])} | {wall[1]:.1f} [{wall[0]:.1f} to {wall[2]:.1f}] |"
        )
    commands = "\n".join(f"- `{c}`" for c in dict.fromkeys(r["command"] for r in rows))
    return "\n".join(lines) + "\n\nCommands:\n" + commands + "\n"


def merge(path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored rows of ``path`` minus the (algo, seed) pairs in ``new``, plus ``new``, sorted by algo and seed."""
    kept = []
    if path.exists():
        replaced = {(str(r["algo"]), str(r["seed"])) for r in new}
        with open(path, newline="") as file:
            kept = [r for r in csv.DictReader(file) if (r["algo"], r["seed"]) not in replaced]
    rows = [{key: TYPES.get(key, str)(value) for key, value in row.items()} for row in kept] + new
    order = {algo: i for i, algo in enumerate(ALGO_ORDER)}
    return sorted(rows, key=lambda r: (order.get(r["algo"], len(order)), r["algo"], r["seed"]))


def plot(curves: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for algo in dict.fromkeys(c["algo"] for c in curves):
        colour = None
        for seed in dict.fromkeys(c["seed"] for c in curves if c["algo"] == algo):
            points = [c for c in curves if c["algo"] == algo and c["seed"] == seed]
            for ax, x in zip(axes, ("real_steps", "simulator_steps"), strict=True):
                (line,) = ax.plot(
                    [p[x] for p in points], [p["eval_mean"] for p in points], color=colour, alpha=0.7, lw=1,
                    label=algo if seed == points[0]["seed"] and ax is axes[0] and colour is None else None,
                )
            colour = line.get_color()
    for ax, label in zip(axes, ("real environment steps", "simulator steps (real + pseudo)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("evaluation mean return (stochastic policy)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--algos", default=",".join(ALGO_ORDER))
    parser.add_argument("--seeds", default=None, help="e.g. 0-4 or 0,2 (default 0-4; 0 with --quick)")
    parser.add_argument("--threshold", type=float, default=None, help="default: 475 CartPole, -100 Acrobot, 200 LunarLander")
    parser.add_argument("--max-steps", type=int, default=None, help="real-step budget (default: the preset's n_timesteps)")
    parser.add_argument("--eval-freq", type=int, default=None, help="real steps between evaluations (default 2000)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default 10)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: seed 0; unless given, 2k steps, evaluations of 2 episodes every 1k"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    unknown = [a for a in args.algos.split(",") if a not in ALGO_ORDER]
    if unknown:
        parser.error(f"unknown algos {', '.join(unknown)}; choose from {', '.join(ALGO_ORDER)}")
    check_inputs(parser, args.algos.split(","), args.env)
    args.command = shlex.join(["python", "benchmarks/rl.py", *(sys.argv[1:] if argv is None else argv)])
    if args.threshold is None:
        args.threshold = THRESHOLDS.get(args.env, np.inf)
    quick = args.quick
    args.seeds = args.seeds or ("0" if quick else "0-4")
    args.max_steps = args.max_steps or (2_000 if quick else None)
    args.eval_freq = args.eval_freq or (1_000 if quick else 2_000)
    args.eval_episodes = args.eval_episodes or (2 if quick else 10)
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for algo in args.algos.split(","):
        for seed in parse_seeds(args.seeds):
            row, curve = run(algo, args.env, seed, args)
            print(row, flush=True)
            text = save(row, curve, args)  # after every run, so an interrupted invocation keeps what it finished
    print(text)


def save(row: dict[str, Any], curve: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Merge one run into the env's CSVs, rewrite its table and plot; return the table.

    An exclusive lock on ``rl_<env>.lock`` makes the read-merge-write atomic, so invocations that run in
    parallel on the same env (say, one per seed) never drop each other's rows.
    """
    stem = args.out / f"rl_{args.env.replace('/', '-')}"
    with open(stem.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _save_locked(stem, row, curve, args)


def _save_locked(stem: Path, row: dict[str, Any], curve: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows, curves = merge(stem.with_suffix(".csv"), [row]), merge(Path(f"{stem}_curves.csv"), curve)
    for path, table in ((stem.with_suffix(".csv"), rows), (Path(f"{stem}_curves.csv"), curves)):
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    text = summary(rows, args)
    stem.with_suffix(".md").write_text(text)
    plot(curves, stem.with_suffix(".png"), f"{args.env}: evaluation return vs real and simulator steps")
    return text


if __name__ == "__main__":
    main()
