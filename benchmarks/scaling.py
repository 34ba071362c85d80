"""Scaling with rollout workers: where an ARSM run's time goes with 0, 1 and 2 workers, and what that projects for more.

For each env, three models of its ARSM preset (``agents/arsm.yml``, built as ``train.py`` builds them) with the same
seed and 0, 1 and 2 ``subproc`` rollout workers each run one ``learn()`` of the same length, as a user runs it (the
workers start during the first update), one after the other in one invocation; they must end bit-identical
(checked). Each run is split, from the public ``last_update`` report, into the trainer's serial parts (real-step
collection, the plan, the gradient) and the rollouts, which the ready workers share with the trainer.

The projection: with N workers an update's rollouts are split into N + 1 shares (of any size: the presets' MLP policies
run in numpy, whose rows do not depend on the rest of their 16-row block), so at most B shares, B the median number of
rollouts per update. The rollouts' seconds without workers, b, is the parallel part;
the serial part a = T(1) - b / 2 is read from the 1-worker run (2 processes on this machine's 2 cores; the 2-worker
run oversubscribes them and is shown, not fitted), and includes what workers add (messages, waiting for the slowest
share). Projected: T(N) = a + b / min(N + 1, B), speed-up T(0) / T(N), for N workers on N + 1 cores.

Where each step's rollouts are known as it is taken (no budget, or ``budget_sampling="step"``), idle workers get
rollouts while the update is still being collected (:class:`arsm_rl.collection.EarlyRollouts`): those rollouts'
seconds fall inside the collection, outside ``rollouts``. The LunarLander preset draws its budget once the update's
steps are taken; a second LunarLander run draws it per step, which lets its rollouts start early.

A last table times a short run (three LunarLander updates) from a new model with 0 and 2 workers, start-up included.

    python benchmarks/scaling.py           # LunarLander-v3 (20k real steps; also with budget_sampling='step') and
                                           # Acrobot-v1 (5k): results/scaling.{md,png}
    python benchmarks/scaling.py --quick   # a smoke run (768 real steps), into a fresh temporary folder
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from outputs import add_output, resolve_outputs
from paired import parameters, preset_model
from stable_baselines3.common.callbacks import BaseCallback

WORKERS = (0, 1, 2)
PROJECTED = (8, 32, 128)
PARTS = ("collect", "plan", "rollouts", "gradient")
#: a run's title -> its env, real steps and settings beside the preset's. With its budget drawn per step, the
#: LunarLander preset's rollouts are known as its steps are taken, and idle workers start them during the collection.
RUNS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "LunarLander-v3": ("LunarLander-v3", 20_000, {}),
    "LunarLander-v3, budget_sampling='step'": ("LunarLander-v3", 20_000, {"budget_sampling": "step"}),
    "Acrobot-v1": ("Acrobot-v1", 5_000, {}),
}
#: the short run: three updates of the LunarLander preset
SHORT_ENV, SHORT_STEPS = "LunarLander-v3", 768


class UpdateSeconds(BaseCallback):
    """Adds up the seconds of each update's plan, rollouts and gradient (``model.last_update.seconds``), the rollouts
    and those of them run on workers, and keeps each update's number of rollouts."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = dict.fromkeys(PARTS[1:], 0.0)
        self.rollouts = 0
        self.on_workers = 0
        self.counts: list[int] = []
        self._seen: Any = None

    def _take(self) -> None:
        report = self.model.last_update
        if report is not None and report is not self._seen:
            self._seen = report
            for part in self.seconds:
                self.seconds[part] += report.seconds[part]
            rollouts = len(report.rollouts.values) + len(report.rollouts.tail_rewards)
            self.rollouts += rollouts
            self.on_workers += report.rollouts.worker_rollouts
            self.counts.append(rollouts)

    def _on_rollout_start(self) -> None:
        self._take()

    def _on_training_end(self) -> None:
        self._take()

    def _on_step(self) -> bool:
        return True


def measure(env_id: str, steps: int, seed: int, settings: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Seconds per part for each number of workers over one ``learn(steps)`` of the preset with ``settings``."""
    models = {n: preset_model(env_id, env_id, seed, n_rollout_workers=n, **settings) for n in WORKERS}
    watches = {n: UpdateSeconds() for n in WORKERS}
    walls = {}
    for n, model in models.items():
        start = time.perf_counter()
        model.learn(steps, callback=watches[n])
        walls[n] = time.perf_counter() - start
        print(env_id, n, "workers:", round(walls[n], 1), "s", flush=True)
    reference = parameters(models[0])
    if not all(th.equal(reference, parameters(model)) for model in models.values()):
        raise SystemExit(f"error: {env_id}: training with workers differs from training without them")
    out = {}
    for n, model in models.items():
        watch = watches[n]
        seconds = watch.seconds
        out[n] = {"wall": walls[n], "collect": walls[n] - sum(seconds.values()), **seconds,
                  "worker_share": watch.on_workers / max(1, watch.rollouts), "shares": float(np.median(watch.counts)),
                  "pseudo": float(model.num_pseudo_steps)}  # fmt: skip
        model.close_rollout_workers()
        model.env.close()
    return out


def short_runs(env_id: str, steps: int, seed: int, repeats: int) -> list[str]:
    """A short ``learn(steps)`` from a new model with 0 and 2 workers, their start-up included: a table's lines."""
    walls: dict[int, list[float]] = {0: [], 2: []}
    for _ in range(repeats):
        for n in walls:
            model = preset_model(env_id, env_id, seed, n_rollout_workers=n)
            start = time.perf_counter()
            model.learn(steps)
            walls[n].append(time.perf_counter() - start)
            model.close_rollout_workers()
            model.env.close()
    none, two = (float(np.median(walls[n])) for n in walls)
    return [
        f"#### Short run: {env_id}, `learn({steps:,})` from a new model, the workers' start-up included",
        "",
        "| workers | wall s | speed-up |",
        "|---|---|---|",
        f"| 0 | {none:.2f} | 1.00x |",
        f"| 2 | {two:.2f} | {none / two:.2f}x |",
        "",
    ]


def median(runs: list[dict[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    """Each cell's median over repeated runs."""
    return {n: {key: float(np.median([run[n][key] for run in runs])) for key in runs[0][n]} for n in runs[0]}


def split(times: dict[int, dict[str, float]]) -> tuple[float, float, float]:
    """``(a, b, B)``: serial seconds, parallel seconds and shares at most (see the module's docstring)."""
    b = times[0]["rollouts"]
    return times[1]["wall"] - b / 2, b, times[0]["shares"]


def projected(times: dict[int, dict[str, float]], workers: np.ndarray | int) -> np.ndarray:
    """Projected speed-up over no workers with ``workers`` workers on as many cores plus one."""
    a, b, shares = split(times)
    return np.asarray(times[0]["wall"] / np.maximum(a + b / np.minimum(np.asarray(workers) + 1, shares), 1e-9))


def table(title: str, steps: int, times: dict[int, dict[str, float]]) -> list[str]:
    t0 = times[0]["wall"]
    a, b, shares = split(times)
    lines = [
        f"#### {title}: ARSM preset, {steps:,} real steps, {times[0]['pseudo']:,.0f} pseudo steps", "",
        "| workers | wall s | speed-up | collection s | plan s | rollouts s | gradient s | rollouts on workers |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for n, t in times.items():
        lines.append(
            f"| {n} | {t['wall']:.1f} | {t0 / t['wall']:.2f}x | {t['collect']:.1f} | {t['plan']:.2f} | {t['rollouts']:.1f} "
            f"| {t['gradient']:.1f} | {t['worker_share']:.0%} |"
        )
    projection = ", ".join(f"{n}: {float(projected(times, n)):.2f}x" for n in PROJECTED)
    trainer = times[1]["collect"] + times[1]["plan"] + times[1]["gradient"]
    limit = t0 / max(a + b / shares, 1e-9)
    first = (
        "the rollouts per update (workers beyond rollouts - 1 wait), then the trainer's serial part"
        if shares < 9
        else "the trainer's serial part (collection, plan, gradient)"
    )
    lines += [
        "",
        f"Serial a = {a:.1f} s (the trainer's collection, plan and gradient: {trainer:.1f} s with 1 worker; the rest, "
        f"{a - trainer:+.1f} s, is what the workers add, messages, start-up and waiting for the slower share, less what "
        "they run while the trainer collects), parallel "
        f"b = {b:.1f} s (the rollouts without workers), serial fraction {a / (a + b):.0%}; a median update has "
        f"{shares:.0f} rollouts, so at most {shares:.0f} shares. Projected speed-up over no workers: "
        f"{projection} (limit {limit:.2f}x, reached at {max(0, int(shares) - 1)} workers). What limits it first: "
        f"{first}.",
        "",
    ]
    return lines


def plot(results: dict[str, dict[int, dict[str, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.array([1, 2, 4, 8, 16, 32, 64, 128])
    for env_id, times in results.items():
        t0 = times[0]["wall"]
        line = ax.plot(grid, projected(times, grid), "--", label=f"{env_id} (projected)")
        ax.plot(list(times)[1:], [t0 / times[n]["wall"] for n in list(times)[1:]], "o", color=line[0].get_color(),
                label=f"{env_id} (measured)")  # fmt: skip
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xscale="log", xlabel="rollout workers", ylabel="speed-up over no workers", xticks=grid, xticklabels=grid)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per env; each cell is their median (1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="768 real steps per env (three updates of LunarLander)")
    add_output(parser, "--out", "", "folder to write scaling.md and scaling.png into")
    args = parser.parse_args(argv)
    resolve_outputs(parser, args)
    th.set_num_threads(1)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    runs = {title: (env, 768 if args.quick else steps, settings) for title, (env, steps, settings) in RUNS.items()}
    repeats = 1 if args.quick else args.repeats
    results = {title: median([measure(env, steps, args.seed, settings) for _ in range(repeats)])
               for title, (env, steps, settings) in runs.items()}
    lines = [
        f"`python benchmarks/scaling.py{' --quick' if args.quick else ''} --seed {args.seed} --repeats {repeats}`: medians "
        f"of {repeats} runs; in each, for each env, three models of its preset with 0, 1 and 2 `subproc` workers, one "
        "`learn()` each, one after the other, bit-identical at the end (checked). Collection is `learn()`'s time "
        "outside the updates; plan, rollouts and gradient come from `last_update.seconds`; the workers start during "
        "the first update (the trainer rolls out until they are ready) and the trainer runs a share of every update "
        "beside them. This machine: 2 cores, so 1 worker and the trainer fill them and 2 workers oversubscribe them.",
        "",
    ]
    for title, times in results.items():
        lines += table(title, runs[title][1], times)
    lines += short_runs(SHORT_ENV, 256 if args.quick else SHORT_STEPS, args.seed, repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.md").write_text("\n".join(lines))
    plot(results, args.out / "scaling.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
