"""Pseudo-rollout throughput, batched (lockstep) vs one rollout at a time, and where an update's time goes.

For each env: an ARSM model with its defaults collects one update of real data (n_steps=256, uniform
initial policy), then the same pseudo rollouts run (a) all together in lockstep, one batched policy call
per step, and (b) one at a time. Then a few full updates are timed and split into real collection,
pseudo rollouts and the rest of the update. Medians over ``--repeats``; ratios come from the same run.

    python benchmarks/throughput.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch as th

from arsm_rl import ARSM

ENVS = ("CartPole-v1", "Acrobot-v1", "LunarLander-v3")


def one_update(model: ARSM) -> Any:
    """Collect one update of real data with the model's current policy."""
    _, callback = model._setup_learn(model.n_steps * model.n_envs, None)
    return model._collect(model.env, callback)


def rollout_rates(model: ARSM, collected: Any, max_rollouts: int) -> tuple[float, float, int]:
    """Simulator steps/s of the update's pseudo rollouts, batched and one at a time."""
    requests = model._plan(collected).requests[:max_rollouts]
    start = time.perf_counter()
    _, _, steps = model._rollout_values(collected, requests, [], [])
    batched = steps / (time.perf_counter() - start)
    start = time.perf_counter()
    single_steps = sum(model._rollout_values(collected, [request], [], [])[2] for request in requests)
    single = single_steps / (time.perf_counter() - start)
    return batched, single, len(requests)


def time_split(model: ARSM, updates: int) -> dict[str, float]:
    """Seconds spent in real collection, pseudo rollouts and the rest of the update, over ``updates`` updates."""
    assert model._engine is not None
    engine_run = model._engine.run
    spent = {"collect": 0.0, "rollouts": 0.0, "update": 0.0}

    def timed_run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = engine_run(*args, **kwargs)
        spent["rollouts"] += time.perf_counter() - start
        return out

    model._engine.run = timed_run  # type: ignore[method-assign]
    _, callback = model._setup_learn(updates * model.n_steps, None, reset_num_timesteps=False)
    for _ in range(updates):
        start = time.perf_counter()
        collected = model._collect(model.env, callback)
        spent["collect"] += time.perf_counter() - start
        start = time.perf_counter()
        model.train(collected)
        spent["update"] += time.perf_counter() - start
    spent["update"] -= spent["rollouts"]
    model._engine.run = engine_run  # type: ignore[method-assign]
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-rollouts", type=int, default=64, help="rollouts per throughput measurement")
    parser.add_argument("--updates", type=int, default=3, help="updates per time-split measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "throughput.md")
    args = parser.parse_args()
    th.set_num_threads(1)
    lines = [
        "| env | rollouts | batched steps/s | one-at-a-time steps/s | speed-up "
        "| real collection | pseudo rollouts | rest of update |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id in args.envs.split(","):
        batched, single, splits, n = [], [], [], 0
        for repeat in range(args.repeats):
            model = ARSM("MlpPolicy", env_id, seed=repeat)
            collected = one_update(model)
            rate_batched, rate_single, n = rollout_rates(model, collected, args.max_rollouts)
            batched.append(rate_batched)
            single.append(rate_single)
            splits.append(time_split(model, args.updates))
        total = [sum(s.values()) for s in splits]
        share = {k: statistics.median(s[k] / t for s, t in zip(splits, total, strict=True)) for k in splits[0]}
        ratio = statistics.median(b / s for b, s in zip(batched, single, strict=True))
        lines.append(
            f"| {env_id} | {n} | {statistics.median(batched):,.0f} | {statistics.median(single):,.0f} | {ratio:.1f}x "
            f"| {share['collect']:.0%} | {share['rollouts']:.0%} | {share['update']:.0%} |"
        )
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
