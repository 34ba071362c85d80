"""The cross-env summary of the learning-efficiency benchmark, computed from ``results/rl_<env>.csv`` and its curves.

For each env the comparison point is ARSM's: where most ARSM seeds reach the threshold, the median real steps to
it (unsolved runs counted at their budget, as in ``rl_<env>.md``); otherwise ARSM's median final return at its
budget, and for A2C and PPO the real and simulator steps of their first evaluation at or above that return (per
seed, from ``rl_<env>_curves.csv``; median and range). Ratios are the baselines' median over ARSM's; against a
baseline that leaves a seed unsolved (counted at its budget) they are bounds, marked ``>=`` or ``<=``. Wall times
are shown only when every run of the env came from one command (so they shared the machine alike).

    python benchmarks/summary.py            # writes benchmarks/results/summary.md
    python benchmarks/sync_readme.py        # then copies it into benchmarks/README.md

``tests/test_benchmarks_quick.py`` checks that the committed ``summary.md`` equals what this computes.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np
from rl import THRESHOLDS, TYPES, results_stem

HERE = Path(__file__).resolve().parent
ENVS = ("CartPole-v1", "Acrobot-v1", "LunarLander-v3")


def load(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as file:
        return [{key: TYPES.get(key, str)(value) for key, value in row.items()} for row in csv.DictReader(file)]


def steps(x: float) -> str:
    return f"{x:,.0f}"


def signed(x: float) -> str:
    return f"{x:+.0f}"


class Env:
    """One env's runs and evaluations, and ARSM's comparison point."""

    def __init__(self, env_id: str, results: Path) -> None:
        self.id, self.threshold = env_id, THRESHOLDS[env_id]
        stem = results_stem(results, env_id)
        self.runs = load(Path(f"{stem}.csv"))
        self.curves = load(Path(f"{stem}_curves.csv"))
        arsm = self.of("arsm")
        self.by_steps = 2 * sum(r["solved"] for r in arsm) > len(arsm)
        self.arsm_real = self.median(arsm, "real_steps")
        self.arsm_sim = self.median(arsm, "simulator_steps")
        self.level = self.median(arsm, "final_eval")  # used when ARSM is compared by return

    def of(self, algo: str) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["algo"] == algo]

    @staticmethod
    def median(runs: list[dict[str, Any]], key: str) -> float:
        return float(np.median([r[key] for r in runs]))

    def solved(self, algo: str) -> str:
        runs = self.of(algo)
        return f"{sum(r['solved'] for r in runs)}/{len(runs)}"

    def returns(self, algo: str) -> str:
        """Median final return and its range over seeds."""
        values = [r["final_eval"] for r in self.of(algo)]
        return f"{signed(float(np.median(values)))} ({signed(min(values))} to {signed(max(values))})"

    def reach(self, algo: str) -> tuple[list[int], list[int]]:
        """Per seed, real and simulator steps of the first evaluation at or above ARSM's return (seeds that reach it)."""
        real, sim = [], []
        for seed in sorted({r["seed"] for r in self.of(algo)}):
            first = next(
                (c for c in self.curves if c["algo"] == algo and c["seed"] == seed and c["eval_mean"] >= self.level), None
            )
            if first is not None:
                real.append(first["real_steps"])
                sim.append(first["simulator_steps"])
        return real, sim

    def baseline(self, algo: str) -> tuple[str, float, float, bool]:
        """The baseline's real-step cell, its real-step ratio to ARSM, its simulator steps at the comparison point,
        and whether the ratio is only a lower bound (some seed unsolved at its budget, which its median counts)."""
        runs = self.of(algo)
        if self.by_steps:
            real = self.median(runs, "real_steps")
            bound = not all(r["solved"] for r in runs)
            return f"{steps(real)} ({self.solved(algo)})", real / self.arsm_real, self.median(runs, "simulator_steps"), bound
        real_s, sim_s = self.reach(algo)
        if not real_s:
            return f"never reaches {signed(self.level)} (0/{len(runs)} seeds)", np.nan, np.nan, False
        real = float(np.median(real_s))
        cell = f"{steps(real)} to {signed(self.level)} ({steps(min(real_s))} to {steps(max(real_s))}"
        cell += ")" if len(real_s) == len(runs) else f"; {len(real_s)}/{len(runs)} seeds reach it)"
        return cell, real / self.arsm_real, float(np.median(sim_s)), False

    def peer(self, algo: str) -> str:
        runs = self.of(algo)
        if not runs:
            return "no preset"
        sim = steps(self.median(runs, "simulator_steps"))
        if self.by_steps and any(r["solved"] for r in runs):
            return f"{steps(self.median(runs, 'real_steps'))} ({self.solved(algo)}), {sim} sim"
        return f"{self.returns(algo)} at {steps(self.median(runs, 'real_steps'))} ({self.solved(algo)}), {sim} sim"

    def wall(self) -> str:
        commands = {r["command"] for r in self.runs}
        if len(commands) > 1:
            return f"not comparable ({len(commands)} commands)"
        return ", ".join(f"{name} {self.median(self.of(algo), 'wall_s'):.1f}" for algo, name in NAMES.items())


NAMES = {"arsm": "ARSM", "ppo": "PPO", "a2c": "A2C"}


def markdown(results: Path = HERE / "results") -> str:
    envs = [Env(env_id, results) for env_id in ENVS]
    lines = [
        "| | " + " | ".join(f"{e.id} ({e.threshold:g})" for e in envs) + " |",
        "|---|" + "---|" * len(envs),
    ]
    arsm_cells = [
        f"{steps(e.arsm_real)} ({e.solved('arsm')} solved)"
        if e.by_steps
        else f"not solved ({e.solved('arsm')}): return {e.returns('arsm')} at {steps(e.arsm_real)}"
        for e in envs
    ]
    lines.append("| ARSM real steps | " + " | ".join(arsm_cells) + " |")
    # Per baseline and env: (ratio, whether it is a bound); a bound is ">=" for real steps and "<=" for ARSM's
    # simulator steps over PPO's (PPO's median then counts an unsolved run at its budget).
    ratios: dict[str, list[tuple[float, bool]]] = {"ppo": [], "a2c": []}
    sim_ratios: list[tuple[float, bool]] = []
    for algo in ("ppo", "a2c"):
        cells = []
        for e in envs:
            cell, ratio, sim, bound = e.baseline(algo)
            ratios[algo].append((ratio, bound))
            if algo == "ppo":
                sim_ratios.append((e.arsm_sim / sim, bound))
            cells.append(cell if np.isnan(ratio) else f"{cell}: {'>= ' * bound}{ratio:.1f}x ARSM's")
        lines.append(f"| {NAMES[algo]} real steps | " + " | ".join(cells) + " |")
    lines.append(
        "| ARSM simulator steps | "
        + " | ".join(
            steps(e.arsm_sim) + ("" if np.isnan(r) else f": {'<= ' * bound}{r:.1f}x PPO's")
            for e, (r, bound) in zip(envs, sim_ratios, strict=True)
        )
        + " |"
    )
    lines.append("| wall s (medians) | " + " | ".join(e.wall() for e in envs) + " |")
    lines.append("| RLOO, same budget | " + " | ".join(e.peer("rloo") for e in envs) + " |")
    lines.append("| all-action, same budget | " + " | ".join(e.peer("all_action") for e in envs) + " |")
    for algo, name in (("arsm-critic", "ARSM"), ("all_action-critic", "all-action"), ("arsm-bootstrap", "ARSM")):
        mode = "learned critic (no rollouts)" if algo.endswith("critic") else "bootstrapped short rollouts"
        lines.append(f"| {name}, {mode} | " + " | ".join(e.peer(algo) for e in envs) + " |")

    def span(values: list[tuple[float, bool]]) -> str:  # over the envs where the ratio exists and is exact
        exact = [v for v, bound in values if not bound and not np.isnan(v)]
        return f"{min(exact):.1f}x to {max(exact):.1f}x"

    bounds = [
        f"{e.id} {NAMES[algo]}" for algo in ("ppo", "a2c") for e, (_, bound) in zip(envs, ratios[algo], strict=True) if bound
    ]
    text = (
        f"ARSM needs {span(ratios['ppo'])} fewer real steps than PPO and {span(ratios['a2c'])} fewer than A2C, and "
        f"spends {span(sim_ratios)} PPO's simulator steps"
    )
    if bounds:
        text += (
            " where the baselines solve every seed; where they do not (" + ", ".join(bounds) + "), the ratios are bounds "
            "(>=, <=), since an unsolved run counts at its budget"
        )
    text += "."
    unsolved = [e.id for e in envs if not e.by_steps]
    if unsolved:
        text += (
            " Where ARSM does not reach the threshold (" + ", ".join(unsolved) + "), the comparison is at ARSM's median "
            "return at its budget (the baselines' steps to their first evaluation at or above it, over the seeds that "
            "reach it)."
        )
    lines += ["", text]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "summary.md")
    args = parser.parse_args(argv)
    args.out.write_text(markdown())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
