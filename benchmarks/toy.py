"""The ARSM paper's univariate toy problem, and a timing of the swap matrix.

Maximise E_{z ~ Cat(softmax(logits))}[f(z)] with f(z) = 0.5 + (z + 1) / (C R), C = R = 30, z counted from 0.
As in the authors' toy scripts, every estimator does plain gradient ascent on the logits (step size 1, one
draw per iteration, logits start at 0). Each iteration also records the exact expected reward and the
gradient variance at the current logits (every ``--var-every`` iterations, from ``--var-draws`` independent
draws, averaged over the C coordinates). RLOO gets the same number of function evaluations as ARSM at the
same iteration (at least 2).

Run from the repository root::

    python benchmarks/toy.py
    python benchmarks/toy.py --quick   # a smoke run, into a fresh temporary folder (never into results/)

It writes ``toy.png`` (reward and variance curves) and ``toy.md`` (summary table and swap-matrix timings).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch as th
from outputs import add_output, resolve_outputs

from arsm_rl.estimators import (
    ar_gradient,
    ars_gradient,
    arsm_gradient,
    distinct_pseudo_actions,
    exact_gradient,
    gather_pseudo_values,
    race_actions,
    reinforce_gradient,
    rloo_gradient,
    swap_pseudo_actions,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt

N_CAT = 30
RATIO = 30.0
STEP_SIZE = 1.0
ESTIMATORS = ["true", "arsm", "ars", "ar", "reinforce", "rloo"]
LABELS = {"true": "true gradient", "arsm": "ARSM", "ars": "ARS", "ar": "AR", "reinforce": "REINFORCE", "rloo": "RLOO"}
SWAP_TIMING_C = [2, 10, 100, 1000]


def dirichlet(n_draws: int, n_cat: int, gen: th.Generator) -> th.Tensor:
    """Flat Dirichlet draws as normalised Exp(1) variables, float64, shape (n_draws, n_cat)."""
    exp = th.empty(n_draws, n_cat, dtype=th.float64).exponential_(generator=gen)
    return exp / exp.sum(dim=1, keepdim=True)


def estimate(
    name: str, logits: th.Tensor, f: th.Tensor, n_draws: int, n_rloo: int, gen: th.Generator
) -> tuple[th.Tensor, int]:
    """Draw ``n_draws`` independent estimates at ``logits`` (shape (C,)).

    :return: the estimates, shape (n_draws, C), and the number of distinct function evaluations of the first draw.
    """
    logits = logits.expand(n_draws, N_CAT)
    q = f.expand(n_draws, N_CAT)
    if name == "true":
        return exact_gradient(logits, q), N_CAT
    if name == "rloo":
        pis = dirichlet(n_draws * n_rloo, N_CAT, gen).reshape(n_draws, n_rloo, N_CAT)
        actions = th.stack([race_actions(logits, pis[:, k]) for k in range(n_rloo)], dim=1)
        return rloo_gradient(logits, actions, f[actions]), n_rloo
    pi = dirichlet(n_draws, N_CAT, gen)
    if name in ("ar", "reinforce"):
        actions = race_actions(logits, pi)
        if name == "ar":
            return ar_gradient(pi, f[actions]), 1
        return reinforce_gradient(logits, actions, f[actions]), 1
    swaps = swap_pseudo_actions(logits, pi)
    values = gather_pseudo_values(swaps, q)
    if name == "arsm":
        return arsm_gradient(pi, values), int(distinct_pseudo_actions(swaps)[0].sum())
    ref = th.randint(0, N_CAT, (n_draws,), generator=gen)
    return ars_gradient(pi, values, ref), len(set(swaps[0, :, ref[0]].tolist()))


def optimise(iters: int, var_every: int, var_draws: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Run gradient ascent for every estimator; return per-iteration reward, variance and evaluations.

    The variance is NaN at iterations where it is not measured.
    """
    f = 0.5 + (th.arange(N_CAT, dtype=th.float64) + 1) / (N_CAT * RATIO)
    logits = {name: th.zeros(N_CAT, dtype=th.float64) for name in ESTIMATORS}
    gens = {name: th.Generator().manual_seed(seed * 100 + i) for i, name in enumerate(ESTIMATORS)}
    curves = {name: {key: np.zeros(iters) for key in ("reward", "variance", "evaluations")} for name in ESTIMATORS}
    for it in range(iters):
        n_rloo = 2
        for name in ESTIMATORS:  # ARSM runs before RLOO, which borrows its evaluation count
            curve, gen = curves[name], gens[name]
            curve["reward"][it] = float(th.softmax(logits[name], dim=0) @ f)
            if it % var_every == 0:
                draws, _ = estimate(name, logits[name], f, var_draws, n_rloo, gen)
                curve["variance"][it] = float(draws.var(dim=0).mean())
            else:
                curve["variance"][it] = np.nan
            step, evaluations = estimate(name, logits[name], f, 1, n_rloo, gen)
            curve["evaluations"][it] = evaluations
            if name == "arsm":
                n_rloo = max(2, evaluations)
            logits[name] = logits[name] + STEP_SIZE * step[0]
    return curves


def time_swaps(seed: int) -> dict[int, float]:
    """Median wall time in milliseconds of ``swap_pseudo_actions`` at B = 8 for each C in ``SWAP_TIMING_C``."""
    gen = th.Generator().manual_seed(seed)
    timings = {}
    for n_cat in SWAP_TIMING_C:
        logits = th.randn(8, n_cat, generator=gen)
        exp = th.empty(8, n_cat).exponential_(generator=gen)
        pi = exp / exp.sum(dim=1, keepdim=True)
        swap_pseudo_actions(logits, pi)  # warm-up
        samples = []
        for _ in range(10 if n_cat >= 1000 else 50):
            start = time.perf_counter()
            swap_pseudo_actions(logits, pi)
            samples.append(time.perf_counter() - start)
        timings[n_cat] = 1e3 * statistics.median(samples)
    return timings


def plot(curves: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """Two panels: exact expected reward, and gradient variance on a log scale."""
    fig, (ax_reward, ax_var) = plt.subplots(1, 2, figsize=(11, 4.4))
    for color, name in enumerate(ESTIMATORS):
        ax_reward.plot(curves[name]["reward"], label=LABELS[name], color=f"C{color}", lw=1)
        if name != "true":  # its variance is 0
            variance = curves[name]["variance"]
            measured = np.flatnonzero(~np.isnan(variance))
            positive = np.where(variance[measured] > 0, variance[measured], np.nan)  # gaps where the estimate is exactly 0
            ax_var.plot(measured, positive, label=LABELS[name], color=f"C{color}", lw=0.7)
    ax_reward.axhline(0.5 + 1 / RATIO, color="k", ls=":", lw=1, label="optimum")
    ax_reward.set(xlabel="iteration", ylabel="E[f(z)] (exact)", title=f"Toy, C = {N_CAT}, R = {RATIO:g}")
    ax_var.set(xlabel="iteration", ylabel="gradient variance (mean over C)", yscale="log")
    ax_var.set_title("Gradient variance (gaps: exactly 0)")
    fig.legend(*ax_reward.get_legend_handles_labels(), loc="lower center", ncol=len(ESTIMATORS) + 1, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(curves: dict[str, dict[str, np.ndarray]], timings: dict[int, float], args: argparse.Namespace) -> str:
    """Markdown summary of the run."""
    lines = [
        f"Toy: C = {N_CAT}, R = {RATIO:g}, step size {STEP_SIZE:g}, {args.iters} iterations, seed {args.seed}, "
        f"variance from {args.var_draws} draws every {args.var_every} iterations.",
        "",
        "| estimator | final E[f] | variance at start | median variance | mean evaluations / iteration |",
        "|---|---|---|---|---|",
    ]
    for name in ESTIMATORS:
        curve = curves[name]
        lines.append(
            f"| {LABELS[name]} | {curve['reward'][-1]:.4f} | {curve['variance'][0]:.2e} | "
            f"{np.nanmedian(curve['variance']):.2e} | {curve['evaluations'].mean():.2f} |"
        )
    lines += [f"\nOptimum 0.5 + 1/R = {0.5 + 1 / RATIO:.4f}; uniform start {curves['true']['reward'][0]:.4f}.", ""]
    lines += ["| swap_pseudo_actions, B = 8 | " + " | ".join(f"C = {c}" for c in timings) + " |"]
    lines += ["|---" * (len(timings) + 1) + "|"]
    lines += ["| median ms | " + " | ".join(f"{ms:.3f}" for ms in timings.values()) + " |"]
    lines += [
        "",
        f"python {platform.python_version()}, torch {th.__version__}, numpy {np.__version__}, "
        f"matplotlib {matplotlib.__version__}; {th.get_num_threads()} torch threads, CPU only.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5000, help="gradient-ascent iterations")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--var-every", type=int, default=10, help="iterations between variance measurements")
    parser.add_argument("--var-draws", type=int, default=100, help="draws per variance estimate")
    add_output(parser, "--out", "", "output directory")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 iterations, variance every 50 from 20 draws")
    args = parser.parse_args()
    resolve_outputs(parser, args)
    if args.quick:
        args.iters, args.var_every, args.var_draws = 200, 50, 20
    args.out.mkdir(parents=True, exist_ok=True)
    curves = optimise(args.iters, args.var_every, args.var_draws, args.seed)
    timings = time_swaps(args.seed)
    plot(curves, args.out / "toy.png")
    text = table(curves, timings, args)
    (args.out / "toy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
