"""Fork snapshots against replay over a LunarLander ARSM training run: wall time per chunk of real steps.

Two models of the ARSM preset (``agents/arsm.yml``, built as ``train.py`` builds them) with the same seed: one on
``DummyVecEnv`` (Box2D snapshots restored by replaying the episode from its reset), one on ``ForkVecEnv`` (paused
process copies, restored by forking them). They train in alternating chunks of ``--chunk`` real steps in one
invocation, so both see the same machine load, and must end bit-identical (checked; the fork run replays nothing).

    python benchmarks/fork_training.py           # 20k real steps in 5k chunks, into results/fork_training.md
    python benchmarks/fork_training.py --quick   # a smoke run, into a fresh temporary folder (never into results/)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch as th
from outputs import RESULTS, add_output, resolve_outputs
from paired import check_chunks, finish, preset_model, timing_rows, train_in_chunks


def out_option(out: Path) -> str:
    """`` --out PATH`` (relative to the repository) as the recorded command needs it, or nothing for the default."""
    if out.resolve() == (RESULTS / "fork_training.md").resolve():
        return ""
    root = RESULTS.parents[1]
    return f" --out {out.resolve().relative_to(root) if out.resolve().is_relative_to(root) else out}"


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
    add_output(parser, "--out", "fork_training.md", "file to write")
    args = parser.parse_args(argv)
    resolve_outputs(parser, args)
    if args.quick:
        args.steps, args.chunk = 512, 256
    check_chunks(parser, args.steps, args.chunk)
    th.set_num_threads(1)
    models = {
        name: preset_model(args.env, args.env, args.seed, name, budget_sampling=args.budget_sampling)
        for name in ("dummy", "fork")
    }
    rows, totals = train_in_chunks(models, args.steps, args.chunk)
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
    lines += timing_rows(
        rows, totals, "dummy", "fork",
        lambda row: [f"{row[f'{name}_pseudo']:,} ({row[f'{name}_replayed']:,})" for name in ("dummy", "fork")],
    )  # fmt: skip
    finish(models, lines, args.out, "fork and replay runs differ")


if __name__ == "__main__":
    main()
