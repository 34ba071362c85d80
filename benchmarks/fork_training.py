"""Fork snapshots against replay over a LunarLander ARSM training run: wall time per chunk of real steps.

Two models of the ARSM preset (``agents/arsm.yml``, built as ``train.py`` builds them) with the same seed: one on
``DummyVecEnv`` (Box2D snapshots restored by replaying the episode from its reset), one on ``ForkVecEnv`` (paused
process copies, restored by forking them). They train in alternating chunks of ``--chunk`` real steps in one
invocation, so both see the same machine load, and must end bit-identical (checked; the fork run replays nothing).

    python benchmarks/fork_training.py                                     # 20k real steps in 5k chunks
    python benchmarks/fork_training.py --quick --out /tmp/fork_training.md  # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiment layer: agents/, train.py

from agents import ALGOS, load_preset
from train import build_kwargs, make_env, split_preset

RESULTS = Path(__file__).resolve().parent / "results"


def build(env_id: str, seed: int, vec_env: str, budget_sampling: str) -> Any:
    """The preset's ARSM model on a ``vec_env`` training env (``dummy``: replay, ``fork``: ForkVecEnv)."""
    settings, hyperparams = split_preset("arsm", load_preset("arsm", env_id)[1])
    venv = make_env(env_id, settings, int(settings.get("n_envs", 1)), seed, cloneable=True, vec_env=vec_env)
    return ALGOS["arsm"](env=venv, seed=seed, **build_kwargs(hyperparams), budget_sampling=budget_sampling)


def out_option(out: Path) -> str:
    """`` --out PATH`` (relative to the repository) as the recorded command needs it, or nothing for the default."""
    if out.resolve() == (RESULTS / "fork_training.md").resolve():
        return ""
    root = RESULTS.parents[1]
    return f" --out {out.resolve().relative_to(root) if out.resolve().is_relative_to(root) else out}"


def parameters(model: Any) -> th.Tensor:
    return th.cat([p.detach().reshape(-1) for p in model.policy.parameters()])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LunarLander-v3")
    parser.add_argument("--steps", type=int, default=20_000, help="real steps of each run")
    parser.add_argument("--chunk", type=int, default=5_000, help="real steps per timed chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget-sampling", choices=("update", "step"), default="update",
        help="ARSM's budget_sampling for both runs (step: fork snapshots only the steps the budget keeps)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="512 real steps in 256-step chunks (one update each)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fork_training.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.chunk = 512, 256
    th.set_num_threads(1)
    models = {name: build(args.env, args.seed, name, args.budget_sampling) for name in ("dummy", "fork")}
    rows, totals = [], {name: 0.0 for name in models}
    done = 0
    while done < args.steps:
        done = min(args.steps, done + args.chunk)
        row: dict[str, Any] = {"steps": done}
        for name, model in models.items():
            pseudo, replayed = model.num_pseudo_steps, model.num_restore_steps
            start = time.perf_counter()
            model.learn(done, reset_num_timesteps=False)
            row[name] = time.perf_counter() - start
            row[f"{name}_pseudo"] = model.num_pseudo_steps - pseudo
            row[f"{name}_replayed"] = model.num_restore_steps - replayed
            totals[name] += row[name]
        rows.append(row)
        print(row, flush=True)
    identical = th.equal(parameters(models["dummy"]), parameters(models["fork"]))
    lines = [
        f"# Fork snapshots vs replay: {args.env} ARSM preset, seed {args.seed}, {args.steps} real steps, "
        f"budget_sampling {args.budget_sampling!r}",
        "",
        f"`python benchmarks/fork_training.py --steps {args.steps} --chunk {args.chunk} --seed {args.seed} "
        f"--budget-sampling {args.budget_sampling}{out_option(args.out)}`; both runs in one "
        "invocation, alternating chunks. Seconds of `learn()` per chunk (real steps, pseudo rollouts and updates); "
        "pseudo steps include the replayed ones.",
        "",
        "| real steps | replay s | fork s | fork / replay | replay pseudo steps (replayed) | fork pseudo steps (replayed) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['steps']:,} | {row['dummy']:.1f} | {row['fork']:.1f} | {row['fork'] / row['dummy']:.2f} | "
            f"{row['dummy_pseudo']:,} ({row['dummy_replayed']:,}) | {row['fork_pseudo']:,} ({row['fork_replayed']:,}) |"
        )
    lines += [
        f"| **total** | **{totals['dummy']:.1f}** | **{totals['fork']:.1f}** | "
        f"**{totals['fork'] / totals['dummy']:.2f}** | | |",
        "",
        f"Parameters after training bit-identical: {'yes' if identical else 'NO'}.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for model in models.values():
        model.env.close()
    if not identical:
        raise SystemExit("fork and replay runs differ")


if __name__ == "__main__":
    main()
