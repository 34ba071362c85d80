"""Wall time to a return, for two runs made side by side: the first evaluation of each at or above each level.

Two ``benchmarks/rl.py`` runs started together, one per core, share the machine alike, so their wall times
(``wall_s`` of each evaluation in ``rl_<env>_curves.csv``, evaluations excluded) compare as a ratio. Levels that a
run never reaches are shown as such. For example, ARSM (the main table's seed 0) against PPO (its own folder):

    python benchmarks/side_by_side.py --env LunarLander-v3 \\
        --run arsm:0:benchmarks/results --run ppo:0:benchmarks/results/side_by_side \\
        --levels=-100,0,50,100,200 --out benchmarks/results/side_by_side/LunarLander-v3.md
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rl import TYPES, results_stem


def first_at(points: list[dict[str, Any]], level: float) -> dict[str, Any] | None:
    """The first evaluation whose mean reaches ``level``, or ``None``."""
    return next((p for p in points if p["eval_mean"] >= level), None)


def curve(env_id: str, algo: str, seed: int, folder: Path) -> list[dict[str, Any]]:
    path = Path(f"{results_stem(folder, env_id)}_curves.csv")
    if not path.is_file():
        raise SystemExit(f"side_by_side.py: error: no {path}; run benchmarks/rl.py --out {folder} first")
    with open(path, newline="") as file:
        rows = [{k: TYPES.get(k, str)(v) for k, v in row.items()} for row in csv.DictReader(file)]
    points = [r for r in rows if r["algo"] == algo and r["seed"] == seed]
    if not points or any(np.isnan(p.get("wall_s", np.nan)) for p in points):
        raise SystemExit(f"side_by_side.py: error: {path} has no {algo} seed {seed} run with wall times per evaluation")
    return points


def table(env_id: str, runs: list[tuple[str, list[dict[str, Any]]]], levels: list[float], command: str) -> str:
    names = [name for name, _ in runs]
    lines = [
        f"{env_id}: the first evaluation at or above each return (real steps, simulator steps, wall s without the "
        "evaluations).",
        "",
        "| return | " + " | ".join(names) + f" | wall {names[0]} / {names[1]} |",
        "|---" * (len(names) + 2) + "|",
    ]
    for level in levels:
        found = [first_at(points, level) for _, points in runs]
        cells = [
            "not reached" if p is None else f"{p['real_steps']:,} real, {p['simulator_steps']:,} sim, {p['wall_s']:.1f} s"
            for p in found
        ]
        ratio = "" if None in found else f"{found[0]['wall_s'] / found[1]['wall_s']:.2f}x"  # type: ignore[index]
        lines.append(f"| {level:g} | " + " | ".join(cells) + f" | {ratio} |")
    ends = [f"{name}: {points[-1]['real_steps']:,} real steps, {points[-1]['wall_s']:.1f} s" for name, points in runs]
    return "\n".join(lines) + "\n\nLast evaluations: " + "; ".join(ends) + f".\n\nCommand: `{command}`\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True)
    parser.add_argument("--run", action="append", required=True, metavar="ALGO:SEED:FOLDER", help="two runs")
    parser.add_argument(
        "--levels", required=True, help="comma-separated returns, e.g. --levels=-100,0,100,200 (= when the first is negative)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if len(args.run) != 2:
        parser.error("give exactly two --run ALGO:SEED:FOLDER")
    runs = []
    for spec in args.run:
        algo, _, rest = spec.partition(":")
        seed, _, folder = rest.partition(":")
        if not (algo and seed.isdigit() and folder):
            parser.error(f"malformed --run {spec!r}: write ALGO:SEED:FOLDER, e.g. arsm:0:benchmarks/results")
        runs.append((f"{algo} seed {seed}", curve(args.env, algo, int(seed), Path(folder))))
    try:
        levels = [float(x) for x in args.levels.split(",")]
    except ValueError:
        parser.error(f"malformed --levels {args.levels!r}: write numbers separated by commas, e.g. -100,0,100")
    command = shlex.join(["python", "benchmarks/side_by_side.py", *(sys.argv[1:] if argv is None else argv)])
    text = table(args.env, runs, levels, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
