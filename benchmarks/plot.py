"""Learning curves of several runs: mean and spread over seeds, from Monitor CSVs or TensorBoard logs.

Each LOGDIR is one curve (e.g. ``logs/arsm`` holding the seeds ``CartPole-v1_1``, ``CartPole-v1_2``,
... written by ``train.py``, or a ``-tb`` folder); every run found below it is one seed. A run is
a folder with ``*.monitor.csv`` files (episode returns, x = cumulative real steps) or a TensorBoard
event file (``rollout/ep_rew_mean`` against real steps). With ``--x env-steps`` the x-axis is every
simulator step, pseudo rollouts included (ARSM's ``time/total_env_steps``; equal to the real steps
for algorithms without rollouts), which needs TensorBoard logs. A curve is drawn over the x range
that all of its runs cover (if they share one).

    python benchmarks/plot.py logs/arsm logs/ppo --out curves.png
    python benchmarks/plot.py runs/arsm-tb runs/ppo-tb --x env-steps --log-x --out curves.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

Curve = tuple[np.ndarray, np.ndarray]  # (x, y), x increasing


def monitor_runs(root: Path) -> list[Path]:
    """Folders below (or equal to) ``root`` holding Monitor CSVs, evaluation monitors excluded."""
    folders = {p.parent for p in root.rglob("*.monitor.csv")}
    return sorted(f for f in folders if "eval" not in f.name)


def tensorboard_runs(root: Path) -> list[Path]:
    """Folders below (or equal to) ``root`` holding TensorBoard event files."""
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")})


def monitor_curve(run: Path, window: int) -> Curve:
    """
    Episode returns of a run against cumulative real steps (all sub-envs' Monitor files merged by time).

    :param window: episodes in the moving average
    """
    frames = [pd.read_csv(f, skiprows=1) for f in sorted(run.glob("*.monitor.csv"))]
    episodes = pd.concat(frames).sort_values("t")
    if episodes.empty:
        raise ValueError(f"{run}: the Monitor files hold no finished episode")
    x = episodes["l"].cumsum().to_numpy(dtype=float)
    y = episodes["r"].rolling(window, min_periods=1).mean().to_numpy(dtype=float)
    return x, y


def tensorboard_curve(run: Path, x_axis: str, tag: str = "rollout/ep_rew_mean") -> Curve:
    """
    ``tag`` of a TensorBoard run against real steps, or against ``time/total_env_steps`` (``x_axis="env-steps"``).

    Algorithms that do not log ``time/total_env_steps`` take no simulator steps besides the real ones.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    if tag not in tags:
        raise ValueError(f"{run}: no {tag!r} scalar (logged tags: {', '.join(tags) or 'none'})")
    scalars = events.Scalars(tag)
    steps = np.array([s.step for s in scalars], dtype=float)
    y = np.array([s.value for s in scalars], dtype=float)
    if x_axis == "env-steps" and "time/total_env_steps" in tags:
        total = events.Scalars("time/total_env_steps")
        # total_env_steps is logged after the update that follows a dump: interpolate it at each step.
        x = np.interp(steps, [s.step for s in total], [s.value for s in total])
        return x, y
    return steps, y


def read_group(root: Path, source: str, x_axis: str, window: int) -> list[Curve]:
    """Every run below ``root`` as one curve."""
    if not root.exists():
        raise ValueError(f"{root} does not exist")
    use_tb = source == "tensorboard" or x_axis == "env-steps" or (source == "auto" and not monitor_runs(root))
    if use_tb:
        runs = tensorboard_runs(root)
        curves = [tensorboard_curve(r, x_axis) for r in runs]
    else:
        runs = monitor_runs(root)
        curves = [monitor_curve(r, window) for r in runs]
    if not curves:
        kind = "TensorBoard event files" if use_tb else "Monitor CSVs (*.monitor.csv)"
        raise ValueError(f"no {kind} below {root}")
    return curves


def mean_and_spread(curves: list[Curve], points: int = 300, log: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Curves interpolated onto a common grid: over the x range every run covers, or, when the runs
    share none (e.g. a run continued from another), over their union, averaging the runs present.

    :param log: space the grid logarithmically (for a logarithmic x-axis)
    :return: grid, mean and standard deviation over the runs
    """
    low, high = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if high <= low:
        low, high = min(x[0] for x, _ in curves), max(x[-1] for x, _ in curves)
    grid = np.geomspace(max(low, 1.0), max(high, 2.0), points) if log else np.linspace(low, high, points)
    values = np.full((len(curves), points), np.nan)
    for i, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        values[i, inside] = np.interp(grid[inside], x, y)
    keep = ~np.isnan(values).all(axis=0)
    return grid[keep], np.nanmean(values[:, keep], axis=0), np.nanstd(values[:, keep], axis=0)


def plot(
    groups: Sequence[Path],
    out: Path,
    *,
    labels: Sequence[str] | None = None,
    source: str = "auto",
    x_axis: str = "steps",
    window: int = 20,
    title: str | None = None,
    log_x: bool = False,
) -> None:
    """Draw one mean curve with a +-1 std band per group into ``out``."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for i, root in enumerate(groups):
        curves = read_group(root, source, x_axis, window)
        grid, mean, std = mean_and_spread(curves, log=log_x)
        label = labels[i] if labels else (root.name or str(root))
        line = ax.plot(grid, mean, label=f"{label} ({len(curves)} run{'s' * (len(curves) > 1)})")[0]
        if len(curves) > 1:
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("simulator steps (real + pseudo rollouts)" if x_axis == "env-steps" else "real environment steps")
    ax.set_ylabel("episode return (mean over seeds, band: ±1 std)")
    if log_x:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("logdirs", nargs="+", type=Path, help="one folder per curve; each run below it is a seed")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write")
    parser.add_argument("--labels", nargs="+", default=None, help="legend labels, one per LOGDIR")
    parser.add_argument("--source", choices=["auto", "monitor", "tensorboard"], default="auto", help="log type to read")
    parser.add_argument("--x", dest="x_axis", choices=["steps", "env-steps"], default="steps", help="x-axis")
    parser.add_argument("--window", type=int, default=20, help="moving-average window (episodes) for Monitor CSVs")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--log-x", action="store_true", help="logarithmic x-axis")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.logdirs):
        parser.error("give one label per LOGDIR")
    try:
        plot(
            args.logdirs,
            args.out,
            labels=args.labels,
            source=args.source,
            x_axis=args.x_axis,
            window=args.window,
            title=args.title,
            log_x=args.log_x,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
