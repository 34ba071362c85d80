"""Pseudo-rollout throughput, batched (lockstep) vs one rollout at a time, and where an update's time goes.

For each env: an ARSM model with its defaults collects one update of real data (n_steps=256, uniform
initial policy), then the same pseudo rollouts run (a) all together in lockstep, one batched policy call
per step, and (b) one at a time. Then a few full updates are timed and split into real collection,
pseudo rollouts and the rest of the update, with the cost of one real step and of one lockstep iteration, and
the cost of a real step of RL Zoo's PPO preset collecting its rollouts (``--ppo-steps`` real steps), and of ARSM's
with as many sub-envs as that preset (its ``n_envs``; ``n_steps`` divided by them, the same real steps per update):
the defaults step one env, whose policy forward a vectorised env shares out over its sub-envs. The
limit is measured in the same run: the same number of rows stepped by the bare dynamics (the family's numpy
batch where it has one, else bare envs one at a time, no wrappers) plus one bare policy forward on the batch (the
policy's numpy form, as the rollouts use it).
Medians over ``--repeats``; ratios come from the same run.

A second table (``--workers-out``) runs the same rollouts of one update (``--max-rollouts``, same seed) with 0, 1
and 2 rollout workers, ``subproc`` and ``ray`` (when Ray is installed), the trainer running its own share beside
them: simulator steps/s once the workers are ready, and the ratio to no workers; every configuration must spend the
same simulator steps.

    python benchmarks/throughput.py
    python benchmarks/throughput.py --quick   # a smoke run, into a fresh temporary folder (never into results/)
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import gymnasium as gym
import numpy as np
import torch as th
from outputs import add_output, resolve_outputs
from rl import build, make_env  # agents/ is importable once rl has set the path
from stable_baselines3.common.callbacks import BaseCallback

from arsm_rl import ARSM, UpdateData
from arsm_rl.cloning import family
from arsm_rl.rollouts import numpy_logits, pad_rows

ENVS = ("CartPole-v1", "Acrobot-v1", "LunarLander-v3")


def rollout_rates(model: ARSM, collected: UpdateData, max_rollouts: int) -> tuple[float, float, int]:
    """Simulator steps/s of the update's pseudo rollouts, batched and one at a time."""
    requests = model.plan_update(collected).requests[:max_rollouts]
    start = time.perf_counter()
    steps = model.run_rollouts(collected, requests).env_steps
    batched = steps / (time.perf_counter() - start)
    start = time.perf_counter()
    single_steps = sum(model.run_rollouts(collected, [request]).env_steps for request in requests)
    single = single_steps / (time.perf_counter() - start)
    return batched, single, len(requests)


def worker_rates(
    env_id: str, configs: list[tuple[int, str]], max_rollouts: int, repeats: int
) -> list[tuple[int, str, float]]:
    """Simulator steps/s of one update's rollouts for each (workers, backend), the same rollouts every time (a model per
    configuration, seeded alike: the same update and requests)."""
    rates, spent = [], set()
    for workers, backend in configs:
        model = ARSM("MlpPolicy", env_id, seed=0, n_rollout_workers=workers, rollout_backend=backend)
        collected = model.collect_update()
        model.set_random_seed(0)
        requests = model.plan_update(collected).requests[:max_rollouts]
        model.start_rollout_workers()  # and waits until they are ready
        model.set_random_seed(1)
        model.run_rollouts(collected, requests)  # warms them up
        seconds, steps = [], 0
        for _ in range(repeats):
            model.set_random_seed(1)
            start = time.perf_counter()
            steps = model.run_rollouts(collected, requests).env_steps
            seconds.append(time.perf_counter() - start)
        model.close_rollout_workers()
        spent.add(steps)
        rates.append((workers, backend, steps / statistics.median(seconds)))
    if len(spent) != 1:
        raise RuntimeError(f"{env_id}: the worker configurations spent different simulator steps {sorted(spent)}")
    return rates


def limit_rate(model: ARSM, env_id: str, rows: int, iterations: int = 200) -> float:
    """Simulator steps/s of the bare loop: ``rows`` rows of bare dynamics plus one policy forward per iteration (the
    numpy form the rollouts use where the policy has one, torch's otherwise)."""
    envs = [gym.make(env_id).unwrapped for _ in range(rows)]
    for r, env in enumerate(envs):
        env.reset(seed=r)
    kind = family(envs[0])
    rng = np.random.default_rng(0)
    actions = rng.integers(model.action_space.n, size=(iterations, rows))  # type: ignore[attr-defined]
    mlp = numpy_logits(model.policy)

    def forward(obs: np.ndarray) -> None:
        if mlp is not None:
            mlp(pad_rows(obs))
        else:
            with th.no_grad():
                model.policy(th.as_tensor(obs))

    if kind.dynamics is not None and kind.state is not None:
        dynamics = kind.dynamics(envs[0], [kind.state.get(env) for env in envs])
        all_rows = np.arange(rows)
        start = time.perf_counter()
        for i in range(iterations):
            obs, _, _ = dynamics.step(all_rows, actions[i])
            forward(obs)
    else:
        obs = np.stack([env.reset(seed=r)[0] for r, env in enumerate(envs)])
        start = time.perf_counter()
        for i in range(iterations):
            for r, env in enumerate(envs):
                obs[r], _, terminated, truncated, _ = env.step(int(actions[i, r]))
                if terminated or truncated:
                    obs[r] = env.reset()[0]
            forward(obs)
    return rows * iterations / (time.perf_counter() - start)


class RolloutTimer(BaseCallback):
    """Seconds a model spends collecting its rollouts (between SB3's ``on_rollout_start`` and ``on_rollout_end``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self.started = 0.0

    def _on_rollout_start(self) -> None:
        self.started = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self.started

    def _on_step(self) -> bool:
        return True


def ppo_collection(env_id: str, steps: int) -> tuple[float, int]:
    """µs per real step of RL Zoo's PPO preset collecting its rollouts (its ``n_envs`` envs stepped together), and
    its ``n_envs``."""
    model, _, _ = build("ppo", env_id, 0)
    timer = RolloutTimer()
    model.learn(steps, callback=timer)
    return 1e6 * timer.seconds / model.num_timesteps, model.n_envs


def vectorised_collection_us(env_id: str, n_envs: int, seed: int, updates: int) -> float:
    """µs per real step of ARSM's defaults collecting ``updates`` updates with ``n_envs`` sub-envs, ``n_steps`` divided
    by them (the same real steps per update; the policy as it starts: collection costs the same whatever it is)."""
    n_steps = max(1, ARSM("MlpPolicy", env_id).n_steps // n_envs)
    model = ARSM("MlpPolicy", make_env(env_id, {}, n_envs, seed, cloneable=True), seed=seed, n_steps=n_steps)
    model.collect_update()  # the first reset
    start = time.perf_counter()
    for _ in range(updates):
        model.collect_update()
    return 1e6 * (time.perf_counter() - start) / (updates * n_steps * n_envs)


def time_split(model: ARSM, updates: int) -> dict[str, float]:
    """
    Seconds spent in real collection, pseudo rollouts and the rest of the update over ``updates`` updates, and the
    real steps and lockstep iterations they took.
    """
    spent = {"collect": 0.0, "rollouts": 0.0, "update": 0.0, "real steps": 0, "iterations": 0}
    for _ in range(updates):
        start = time.perf_counter()
        collected = model.collect_update()
        spent["collect"] += time.perf_counter() - start
        model.train(collected)
        assert model.last_update is not None
        seconds = model.last_update.seconds
        spent["rollouts"] += seconds["rollouts"]
        spent["update"] += seconds["plan"] + seconds["gradient"]
        spent["real steps"] += collected.rewards.size
        spent["iterations"] += model.last_update.rollouts.lockstep_steps
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-rollouts", type=int, default=64, help="rollouts per throughput measurement")
    parser.add_argument("--updates", type=int, default=3, help="updates per time-split measurement")
    parser.add_argument("--ppo-steps", type=int, default=20_000, help="real steps of each PPO collection measurement")
    add_output(parser, "--out", "throughput.md", "file of the throughput table")
    add_output(parser, "--workers-out", "throughput_workers.md", "file of the worker table")
    parser.add_argument("--worker-rollouts", type=int, default=128, help="rollouts per worker measurement")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: CartPole, one repeat, 8 rollouts, 1 update; 0 and 1 subproc workers")  # fmt: skip
    args = parser.parse_args()
    resolve_outputs(parser, args)
    configs = [(0, "subproc"), (1, "subproc"), (2, "subproc")]
    if importlib.util.find_spec("ray") is not None:
        configs += [(1, "ray"), (2, "ray")]
    if args.quick:
        args.envs, args.repeats, args.max_rollouts, args.updates, args.ppo_steps = "CartPole-v1", 1, 8, 1, 512
        args.worker_rollouts, configs = 32, [(0, "subproc"), (1, "subproc")]
    th.set_num_threads(1)
    lines = [
        "| env | rollouts | batched steps/s | one-at-a-time steps/s | speed-up | limit steps/s | batched / limit "
        "| real collection | pseudo rollouts | rest of update | µs per real step | PPO's µs per real step "
        "| µs per real step with PPO's n_envs | µs per lockstep iteration |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for env_id in args.envs.split(","):
        batched, single, limits, splits, n = [], [], [], [], 0
        for repeat in range(args.repeats):
            model = ARSM("MlpPolicy", env_id, seed=repeat)
            collected = model.collect_update()
            rate_batched, rate_single, n = rollout_rates(model, collected, args.max_rollouts)
            batched.append(rate_batched)
            single.append(rate_single)
            limits.append(limit_rate(model, env_id, n))
            splits.append(time_split(model, args.updates))
        parts = ("collect", "rollouts", "update")
        share = {k: statistics.median(s[k] / sum(s[p] for p in parts) for s in splits) for k in parts}
        ratio = statistics.median(b / s for b, s in zip(batched, single, strict=True))
        of_limit = statistics.median(b / m for b, m in zip(batched, limits, strict=True))
        real_us = statistics.median(1e6 * s["collect"] / s["real steps"] for s in splits)
        iteration_us = statistics.median(1e6 * s["rollouts"] / max(1, s["iterations"]) for s in splits)
        ppo = [ppo_collection(env_id, args.ppo_steps) for _ in range(args.repeats)]
        ppo_us, ppo_envs = statistics.median(us for us, _ in ppo), ppo[0][1]
        vectorised_us = statistics.median(
            vectorised_collection_us(env_id, ppo_envs, repeat, args.updates) for repeat in range(args.repeats)
        )
        lines.append(
            f"| {env_id} | {n} | {statistics.median(batched):,.0f} | {statistics.median(single):,.0f} | {ratio:.1f}x "
            f"| {statistics.median(limits):,.0f} | {of_limit:.0%} | {share['collect']:.0%} | {share['rollouts']:.0%} "
            f"| {share['update']:.0%} | {real_us:.0f} | {ppo_us:.0f} | {vectorised_us:.0f} ({ppo_envs} envs) "
            f"| {iteration_us:.0f} |"
        )
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    rows = ["| env | rollouts | workers | backend | steps/s | vs no workers |", "|---|---|---|---|---|---|"]
    for env_id in args.envs.split(","):
        rates = worker_rates(env_id, configs, args.worker_rollouts, args.repeats)
        for workers, backend, rate in rates:
            backend_name = backend if workers else "in process"
            ratio = rate / rates[0][2]
            rows.append(f"| {env_id} | {args.worker_rollouts} | {workers} | {backend_name} | {rate:,.0f} | {ratio:.2f}x |")
            print(rows[-1], flush=True)
    args.workers_out.parent.mkdir(parents=True, exist_ok=True)
    args.workers_out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
