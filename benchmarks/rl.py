"""Learning efficiency: real steps, simulator steps and wall time to a return threshold, per algorithm and seed.

Every algorithm is built from its preset in ``agents/`` exactly as ``train.py`` builds it. Every
``--eval-freq`` real steps the stochastic policy plays ``--eval-episodes`` episodes on a separate env (with
the training VecNormalize statistics, when the preset normalises); a run stops at the first evaluation
whose mean reaches the threshold, or at the preset's ``n_timesteps`` (or ``--max-steps``). "Simulator
steps" are real steps plus ARSM's pseudo and tail rollout steps (``time/total_env_steps``). Wall time
excludes the evaluations, whose env is headless (``arsm_rl.cloning.make_headless``: LunarLander without its
render-only flame particles, the same returns sooner). ``<algo>-<variant>`` is the algo with its preset variant
(``train.py --preset <variant>``): ``arsm-paper`` the authors' configuration, ``arsm-critic`` and
``all_action-critic`` the learned critic, ``arsm-bootstrap`` and ``all_action-bootstrap`` bootstrapped short
rollouts (``action_values``, docs/arsm.md).

    python benchmarks/rl.py --env CartPole-v1 --algos arsm,ppo --seeds 0-4

writes ``benchmarks/results/rl_<env>.csv`` (one row per run), ``rl_<env>_curves.csv`` (every evaluation),
``rl_<env>.md`` (medians and interquartile ranges) and ``rl_<env>.png`` (the paper's figure: return against real
episodes and simulator steps, the gradient's log-variance against episodes, median and IQR over seeds).
Results are saved after every run and merge across invocations: a run replaces the stored rows of the same
(algo, seed) and keeps the rest, and every row records the command that produced it, so one env's table can
be built up algorithm by algorithm (and an interrupted invocation keeps the runs it finished); invocations may
run in parallel. ``python benchmarks/sync_readme.py`` then copies the tables into ``benchmarks/README.md``.
``--algos`` defaults to every algorithm that applies to the env (``maskable_ppo`` needs action masks, a variant
its preset, the ARSM family a cloneable env with discrete actions); the ones left out are printed. ``--quick``
is a smoke run of the same code path (used by ``tests/test_benchmarks_quick.py``); without ``--out`` it writes into
a fresh temporary folder, never into ``benchmarks/results``.
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
from outputs import add_output, resolve_outputs
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

from arsm_rl.cloning import has_masks, make_headless

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiment layer: agents/, train.py

from agents import ALGOS, ARSM_FAMILY, load_preset
from agents.envs import VEC_ENVS, make_env, normalize_kwargs, probe_preset_env
from agents.errors import UsageError
from agents.evaluation import evaluate
from agents.hyperparams import build_kwargs, parse_overrides, split_preset

ALGO_ORDER = ("arsm", "arsm-paper", "rloo", "all_action", "arsm-critic", "all_action-critic", "arsm-bootstrap",
              "all_action-bootstrap", "a2c", "ppo", "maskable_ppo")  # fmt: skip
THRESHOLDS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "LunarLander-v3": 200.0, "arsm/MaskedTaxi-v0": 7.0,
              "MiniGrid-Empty-5x5-v0": 0.9}  # fmt: skip
PLOT_TITLE = "{env}: median and interquartile range over seeds"


def _optional_float(text: str) -> float:
    return float(text) if text else np.nan  # empty: a field that rows made before it existed lack


TYPES: dict[str, Any] = {  # how stored CSV fields are read back when results merge
    "seed": int, "real_steps": int, "simulator_steps": int, "episodes": int, "final_eval": float, "eval_mean": float,
    "solved": lambda text: text == "True", "wall_s": _optional_float, "grad_log_variance": _optional_float,
    "no_signal_share": _optional_float,
}


class GradientVariance:
    """
    The paper's gradient-variance diagnostic, for any algorithm: exponential moving averages (weight 0.01) of the
    policy's gradient g and of g² over every backward pass, and the mean over parameters of
    log(E[g²] - E[g]² + 1e-20), as ARSM logs it (``train/grad_log_variance``).

    It reads each backward pass's gradient of the policy's own parameters (the value network's are left out)
    through tensor hooks, so before any clipping: one estimate per ARSM or A2C update, one per minibatch for PPO.
    """

    def __init__(self, policy: th.nn.Module) -> None:
        params = [p for name, p in policy.named_parameters() if "value_net" not in name and p.requires_grad]
        self._pending: dict[int, th.Tensor] = {}
        self._moments: tuple[th.Tensor, th.Tensor] | None = None
        for i, param in enumerate(params):
            param.register_hook(lambda grad, i=i: self.add(i, grad))
        self._n = len(params)

    def add(self, index: int, grad: th.Tensor) -> None:
        """One parameter's gradient of a backward pass (the hooks call it); the EMAs move once all have come."""
        self._pending[index] = grad.detach().reshape(-1)
        if len(self._pending) < self._n:
            return
        g = th.cat([self._pending[i] for i in range(self._n)])
        self._pending.clear()
        if self._moments is None:
            self._moments = (g.clone(), g.square())
        else:
            mean, square = self._moments
            self._moments = (0.99 * mean + 0.01 * g, 0.99 * square + 0.01 * g.square())

    @property
    def log_variance(self) -> float:
        """The diagnostic now (NaN before the first backward pass)."""
        if self._moments is None:
            return float("nan")
        mean, square = self._moments
        return th.log((square - mean.square()).clamp(min=0.0) + 1e-20).mean().item()


class ThresholdCallback(BaseCallback):
    """Evaluate every ``eval_freq`` real steps, record the curve, stop when the mean reaches ``threshold``."""

    def __init__(self, eval_env: Any, eval_freq: int, n_episodes: int, threshold: float) -> None:
        super().__init__()
        self.eval_env, self.eval_freq, self.n_episodes, self.threshold = eval_env, eval_freq, n_episodes, threshold
        self.next_eval = eval_freq
        self.eval_seconds = 0.0
        self.episodes = 0
        self.curve: list[dict[str, Any]] = []  # one point per evaluation (CURVE_FIELDS)
        self.solved = False
        self.variance: GradientVariance | None = None
        self.no_signal: list[float] = []  # ARSM's train/no_signal_share of each update since the last evaluation

    def _on_training_start(self) -> None:
        self.variance = GradientVariance(self.model.policy)
        self.started = time.perf_counter()

    def _on_rollout_start(self) -> None:
        # The last update's train/ keys are still recorded (dumped with the next update's): the ARSM family only.
        share = self.model.logger.name_to_value.get("train/no_signal_share")
        if share is not None:
            self.no_signal.append(float(share))

    def _on_step(self) -> bool:
        self.episodes += int(np.sum(self.locals["dones"]))
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += self.eval_freq
        start = time.perf_counter()
        wall = start - self.started - self.eval_seconds
        if isinstance(self.eval_env, VecNormalize):
            sync_envs_normalization(self.training_env, self.eval_env)
        mean, _ = evaluate(self.model, self.eval_env, self.n_episodes, deterministic=False)  # with masks if the env has them
        self.eval_seconds += time.perf_counter() - start
        simulator = self.num_timesteps + getattr(self.model, "num_pseudo_steps", 0)
        assert self.variance is not None
        no_signal = float(np.mean(self.no_signal)) if self.no_signal else np.nan
        self.no_signal = []
        self.curve.append({
            "real_steps": self.num_timesteps, "simulator_steps": simulator, "episodes": self.episodes,
            "eval_mean": float(mean), "wall_s": round(wall, 2), "grad_log_variance": self.variance.log_variance,
            "no_signal_share": no_signal,
        })  # fmt: skip
        print(f"  {self.num_timesteps} real steps, {simulator} simulator steps: eval {mean:.2f}", flush=True)
        self.solved = bool(mean >= self.threshold)
        return not self.solved


def preset(algo: str, env_id: str, overrides: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The algorithm behind a benchmark row and its raw preset (``<algo>-<variant>`` is the algo's preset variant, as
    ``train.py --preset <variant>`` reads it: ``arsm-paper``, ``all_action-critic``), with ``overrides``
    (``--hyperparams``) applied as ``train.py -params`` applies them."""
    name, _, variant = algo.partition("-")
    return name, {**load_preset(name, env_id, variant=variant or None)[1], **(overrides or {})}


def label(algo: str, overrides: dict[str, Any]) -> str:
    """A row's name: the algo, followed by its ``--hyperparams`` overrides (``arsm gamma=0.999``)."""
    return " ".join([algo, *(f"{key}={value}" for key, value in overrides.items())])


def problem(algo: str, env_id: str, overrides: dict[str, Any] | None = None) -> str | None:
    """Why ``algo`` cannot run on ``env_id``, in one line that says what to do, or ``None``: no preset for the env,
    an env that ``train.py`` would refuse (unknown id, unsupported action space, not cloneable), or a MaskablePPO
    on an env without action masks."""
    try:
        name, raw = preset(algo, env_id, overrides)
        settings = split_preset(name, raw)[0]
        probe_preset_env(env_id, name, settings)
    except KeyError as error:
        return str(error).strip("'\"") + "; add one to agents/ or drop the algo"
    except UsageError as error:
        return str(error)
    if issubclass(ALGOS[name], MaskablePPO):
        env = make_env(env_id, settings, 1, 0, cloneable=False)
        masked = has_masks(env)
        env.close()
        if not masked:
            return (f"{algo} needs an env with action masks (action_masks()) and {env_id} has none; drop it from "
                    "--algos (by default it runs only on envs with masks), or use ppo")  # fmt: skip
    return None


def check_inputs(
    parser: argparse.ArgumentParser, algos: list[str], env_id: str, overrides: dict[str, Any] | None = None
) -> None:
    """Exit with a one-line usage error, before any run, on an algorithm that cannot run on ``env_id`` (:func:`problem`)."""
    for algo in algos:
        reason = problem(algo, env_id, overrides)
        if reason is not None:
            parser.error(reason)


def default_algos(parser: argparse.ArgumentParser, env_id: str, overrides: dict[str, Any] | None = None) -> list[str]:
    """Every algorithm of :data:`ALGO_ORDER` that can run on ``env_id``; the others are printed, and none is a usage
    error (the first algorithm's reason: an unknown env id, say)."""
    reasons = {algo: problem(algo, env_id, overrides) for algo in ALGO_ORDER}
    algos = [algo for algo, reason in reasons.items() if reason is None]
    if not algos:
        parser.error(str(reasons[ALGO_ORDER[0]]))
    for algo, reason in reasons.items():
        if reason is not None:
            print(f"left out {algo}: {reason.split(';')[0]}", flush=True)
    return algos


def build(
    algo: str, env_id: str, seed: int, overrides: dict[str, Any] | None = None, vec_env: str = "dummy"
) -> tuple[Any, Any, int]:
    """Model, evaluation env and step budget from the preset, as ``train.py`` builds them (``vec_env`` as its
    ``--vec-env``: the training env's class)."""
    name, raw = preset(algo, env_id, overrides)
    settings, hyperparams = split_preset(name, raw)
    kwargs = build_kwargs(hyperparams)
    cloneable = name in ARSM_FAMILY
    venv = make_env(env_id, settings, int(settings.get("n_envs", 1)), seed, cloneable=cloneable, vec_env=vec_env)
    eval_env = make_env(env_id, settings, 1, 10_000 + seed, cloneable=False)
    for env in eval_env.unwrapped.envs:  # no render-only work (LunarLander's particles): the same returns, sooner
        make_headless(env)
    normalize = normalize_kwargs(settings.get("normalize"), kwargs.get("gamma"))
    if normalize is not None:
        venv = VecNormalize(venv, **normalize)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    model = ALGOS[name](env=venv, seed=seed, **kwargs)
    return model, eval_env, int(float(settings.get("n_timesteps", 1e5)))


def run(algo: str, env_id: str, seed: int, args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    model, eval_env, budget = build(algo, env_id, seed, args.overrides, args.vec_env)
    budget = args.max_steps or budget
    callback = ThresholdCallback(eval_env, args.eval_freq, args.eval_episodes, args.threshold)
    start = time.perf_counter()
    model.learn(budget, callback=callback)
    wall = time.perf_counter() - start - callback.eval_seconds
    name = label(algo, args.overrides)
    steps = {"real_steps": model.num_timesteps, "simulator_steps": model.num_timesteps, "episodes": callback.episodes}
    last = callback.curve[-1] if callback.curve else {**steps, "eval_mean": np.nan}
    row = {
        "env": env_id,
        "algo": name,
        "seed": seed,
        "solved": callback.solved,
        "real_steps": last["real_steps"],
        "episodes": last["episodes"],
        "simulator_steps": last["simulator_steps"],
        "wall_s": round(wall, 2),
        "final_eval": last["eval_mean"],
        "command": args.command,
    }
    curve = [{"algo": name, "seed": seed, **point} for point in callback.curve]
    return row, curve


def summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Median [interquartile range] per algorithm; unsolved runs count at their budget and are flagged."""
    lines = [
        f"{args.env}, threshold {args.threshold:g}: stochastic evaluations (episodes and frequency as in each command; "
        "defaults 10 episodes every 2000 real steps). Median [IQR] over seeds; unsolved runs count at their budget; "
        "the last evaluation of each seed.",
        "",
        "| algo | solved | real steps | episodes | simulator steps | wall s | last evaluation |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(values: list[float]) -> str:
        q1, med, q3 = np.percentile(values, [25, 50, 75])
        return f"{med:,.0f} [{q1:,.0f} to {q3:,.0f}]"

    for algo in dict.fromkeys(r["algo"] for r in rows):
        sub = [r for r in rows if r["algo"] == algo]
        solved = sum(r["solved"] for r in sub)
        wall = np.percentile([r["wall_s"] for r in sub], [25, 50, 75])
        finals = ", ".join(f"{r['final_eval']:.0f}" for r in sub)  # one per seed, in seed order
        lines.append(
            f"| {algo} | {solved}/{len(sub)} | {cell([r['real_steps'] for r in sub])} | {cell([r['episodes'] for r in sub])} "
            f"| {cell([r['simulator_steps'] for r in sub])} | {wall[1]:.1f} [{wall[0]:.1f} to {wall[2]:.1f}] "
            f"| {finals} |"
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


def seed_band(runs: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> tuple[np.ndarray, ...]:
    """Median and interquartile range over seeds on a common ``grid``: each seed's curve interpolated between its
    points and held at its last value after it (a run stops once it reaches the threshold); NaN before its first."""
    values = np.full((len(runs), len(grid)), np.nan)
    for row, (x, y) in zip(values, runs, strict=True):
        keep = np.isfinite(y)
        if keep.any():
            row[:] = np.where(grid >= x[keep][0], np.interp(grid, x[keep], y[keep]), np.nan)
    enough = np.sum(np.isfinite(values), axis=0) > 0
    q1, med, q3 = np.full((3, len(grid)), np.nan)
    if enough.any():
        q1[enough], med[enough], q3[enough] = np.nanpercentile(values[:, enough], [25, 50, 75], axis=0)
    return med, q1, q3


def plot(curves: list[dict[str, Any]], path: Path, title: str) -> None:
    """The paper's figure: evaluation return against real episodes and against simulator steps, and the gradient's
    log-variance against real episodes; median over seeds with the interquartile range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("episodes", "eval_mean"), ("simulator_steps", "eval_mean"), ("episodes", "grad_log_variance"))
    algos = list(dict.fromkeys(c["algo"] for c in curves))
    legend_inches = 0.2 * -(-len(algos) // 3) + 0.15  # under the panels, three entries a row
    fig, axes = plt.subplots(1, 3, figsize=(15, 4 + legend_inches))
    palette = plt.get_cmap("tab10" if len(algos) <= 10 else "tab20")
    for index, algo in enumerate(algos):
        seeds = list(dict.fromkeys(c["seed"] for c in curves if c["algo"] == algo))
        points = [[c for c in curves if c["algo"] == algo and c["seed"] == seed] for seed in seeds]
        colour = palette(index)
        for ax, (x_key, y_key) in zip(axes, panels, strict=True):
            runs = [(np.array([p[x_key] for p in run], float), np.array([p.get(y_key, np.nan) for p in run], float))
                    for run in points]
            low, high = min(x[0] for x, _ in runs), max(x[-1] for x, _ in runs)
            grid = np.geomspace(max(low, 1), max(high, low + 1), 200)
            med, q1, q3 = seed_band(runs, grid)
            if np.isnan(med).all():  # e.g. no gradient recorded (rows from before rl.py recorded it)
                continue
            ax.plot(grid, med, color=colour, lw=1.5, label=f"{algo} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
            ax.fill_between(grid, q1, q3, color=colour, alpha=0.2, lw=0)
    labels = ("real episodes", "simulator steps (real + pseudo)", "real episodes")
    for ax, label_x, (_, y_key) in zip(axes, labels, panels, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(label_x)
        ax.set_ylabel("evaluation mean return (stochastic policy)" if y_key == "eval_mean" else "gradient log-variance (EMA)")
        ax.grid(alpha=0.3)
    handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, legend_inches / (4 + legend_inches), 1, 1))
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
    parser.add_argument(
        "--algos", default=None,
        help=f"comma-separated, from {','.join(ALGO_ORDER)} (default: every one that applies to --env; maskable_ppo only "
        "on envs with action masks)",
    )  # fmt: skip
    parser.add_argument("--seeds", default=None, help="e.g. 0-4 or 0,2 (default 0-4; 0 with --quick)")
    parser.add_argument("--threshold", type=float, default=None, help="default: 475 CartPole, -100 Acrobot, 200 LunarLander")
    parser.add_argument("--max-steps", type=int, default=None, help="real-step budget (default: the preset's n_timesteps)")
    parser.add_argument("--eval-freq", type=int, default=None, help="real steps between evaluations (default 2000)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default 10)")
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: seed 0; unless given, 2k steps, evaluations of 2 episodes every 1k; without --out, into a fresh "
        "temporary folder",
    )  # fmt: skip
    parser.add_argument(
        "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE",
        help="override preset values of every algo, as train.py -params (rows are named after them: ablations)",
    )  # fmt: skip
    parser.add_argument(
        "--vec-env", choices=sorted(VEC_ENVS), default="dummy",
        help="the training envs' VecEnv, as train.py --vec-env (fork: ForkVecEnv snapshots for Box2D)",
    )  # fmt: skip
    add_output(parser, "--out", "", "folder of the results")
    parser.add_argument(
        "--plot-only", action="store_true", help="only redraw rl_<env>.png in --out from its stored curves; run nothing"
    )
    args = parser.parse_args(argv)
    if args.plot_only:
        resolve_outputs(parser, args)
        stem = results_stem(args.out, args.env)
        curves = merge(Path(f"{stem}_curves.csv"), [])
        if not curves:
            parser.error(f"no curves in {stem}_curves.csv to plot; run the benchmark first")
        plot(curves, stem.with_suffix(".png"), PLOT_TITLE.format(env=args.env))
        return
    algos = None if args.algos is None else args.algos.split(",")
    unknown = [a for a in algos or [] if a not in ALGO_ORDER]
    if unknown:
        parser.error(f"unknown algos {', '.join(unknown)}; choose from {', '.join(ALGO_ORDER)}")
    try:
        args.overrides = parse_overrides(args.hyperparams, "--hyperparams")
    except UsageError as error:
        parser.error(str(error))
    if algos is None:
        algos = default_algos(parser, args.env, args.overrides)
    else:
        check_inputs(parser, algos, args.env, args.overrides)
    resolve_outputs(parser, args)
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
    for algo in algos:
        for seed in parse_seeds(args.seeds):
            row, curve = run(algo, args.env, seed, args)
            print(row, flush=True)
            text = save(row, curve, args)  # after every run, so an interrupted invocation keeps what it finished
    print(text)


def results_stem(out: Path, env_id: str) -> Path:
    """``out/rl_<env>``: the stem of an env's table, CSVs, figure and lock."""
    return out / f"rl_{env_id.replace('/', '-')}"


def save(row: dict[str, Any], curve: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Merge one run into the env's CSVs, rewrite its table and plot; return the table.

    An exclusive lock on ``rl_<env>.lock`` makes the read-merge-write atomic, so invocations that run in
    parallel on the same env (say, one per seed) never drop each other's rows.
    """
    stem = results_stem(args.out, args.env)
    with open(stem.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _save_locked(stem, row, curve, args)


def _save_locked(stem: Path, row: dict[str, Any], curve: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows, curves = merge(stem.with_suffix(".csv"), [row]), merge(Path(f"{stem}_curves.csv"), curve)
    for path, table in ((stem.with_suffix(".csv"), rows), (Path(f"{stem}_curves.csv"), curves)):
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(dict.fromkeys(key for r in table for key in r)))
            writer.writeheader()
            writer.writerows(table)
    text = summary(rows, args)
    stem.with_suffix(".md").write_text(text)
    plot(curves, stem.with_suffix(".png"), PLOT_TITLE.format(env=args.env))
    return text


if __name__ == "__main__":
    main()
