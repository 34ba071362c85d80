"""Headless pseudo rollouts: what LunarLander's render-only flame particles cost, in steps and in ARSM training.

SB3's ``make_vec_env`` builds envs with ``render_mode="rgb_array"``, and a rendering LunarLander adds a Box2D body (a
"particle") at every engine firing. Particles collide with the ground only, never with the lander, so pseudo
rollouts skip them (``arsm_rl.cloning.make_headless``). Two measurements, each in one invocation:

- **steps**: the same episodes (a heuristic pilot with random actions mixed in) stepped in lockstep on a rendering
  env and on one made headless after ``--switch`` steps; checked bit-identical, and timed;
- **training**: the ARSM LunarLander preset (``agents/arsm.yml``) on ``DummyVecEnv`` twice, in alternating chunks
  of real steps: on ``LunarLander-v3`` (headless rollouts) and on ``RenderedLunarLander-v3``, a subclass registered
  with ``register_cloneable(replay=True)`` whose family has no headless function (its rollouts simulate the
  particles, as before headless rollouts). Both must end bit-identical.

    python benchmarks/headless.py           # writes results/headless.md
    python benchmarks/headless.py --quick   # a smoke run, into a fresh temporary folder (never into results/)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import gymnasium as gym
import numpy as np
import torch as th
from outputs import add_output, resolve_outputs
from paired import check_chunks, finish, preset_model, timing_rows, train_in_chunks

from arsm_rl.cloning import make_headless, register_cloneable

try:
    from gymnasium.envs.box2d.lunar_lander import LunarLander, heuristic
except ImportError:  # gymnasium's DependencyNotInstalled is an ImportError
    raise SystemExit("headless.py needs Box2D: pip install -e '.[box2d]'") from None

RENDERED_ID = "RenderedLunarLander-v3"


class RenderedLunarLander(LunarLander):
    """LunarLander under a class of its own: replayed like LunarLander, but with no headless function."""


def register_rendered() -> None:
    """Register :data:`RENDERED_ID` (LunarLander-v3's time limit) and its snapshot family (replay, not headless)."""
    if RENDERED_ID not in gym.registry:
        gym.register(RENDERED_ID, entry_point=RenderedLunarLander, max_episode_steps=1000)
    register_cloneable(RenderedLunarLander, replay=True)


def steps_table(episodes: int, switch: int) -> list[str]:
    """Time the same episodes on a rendering env and on its twin made headless after ``switch`` steps."""
    seconds, counts, identical = [0.0, 0.0], 0, True
    for seed in range(episodes):
        envs = [gym.make("LunarLander-v3", render_mode="rgb_array") for _ in range(2)]
        obs = [env.reset(seed=seed)[0] for env in envs]
        rng = np.random.default_rng(seed)
        for t in range(1000):
            if t == switch:
                make_headless(envs[1])
            action = heuristic(envs[0].unwrapped, obs[0]) if rng.random() < 0.85 else int(rng.integers(4))
            results = []
            for k, env in enumerate(envs):
                start = time.perf_counter()
                results.append(env.step(action))
                seconds[k] += time.perf_counter() - start
            obs = [result[0] for result in results]
            counts += 1
            identical &= bool(np.array_equal(obs[0], obs[1]) and results[0][1:4] == results[1][1:4])
            if results[0][2] or results[0][3]:
                break
    per_step = [1e6 * s / counts for s in seconds]
    return [
        f"| {episodes} | {counts:,} | {per_step[0]:.1f} | {per_step[1]:.1f} | {per_step[1] / per_step[0]:.2f} | "
        f"{'yes' if identical else 'NO'} |"
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12_000, help="real steps of each training run")
    parser.add_argument("--chunk", type=int, default=4_000, help="real steps per timed chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20, help="episodes of the step timing")
    parser.add_argument("--switch", type=int, default=40, help="step at which the twin is made headless")
    parser.add_argument("--quick", action="store_true", help="2 episodes; 512 real steps in 256-step chunks")
    add_output(parser, "--out", "headless.md", "file to write")
    args = parser.parse_args(argv)
    resolve_outputs(parser, args)
    if args.quick:
        args.steps, args.chunk, args.episodes = 512, 256, 2
    check_chunks(parser, args.steps, args.chunk)
    if args.episodes < 1 or args.switch < 0:
        parser.error(f"--episodes must be >= 1 and --switch >= 0, got {args.episodes} and {args.switch}")
    th.set_num_threads(1)
    register_rendered()
    steps = steps_table(args.episodes, args.switch)
    print("\n".join(steps), flush=True)
    models = {
        name: preset_model("LunarLander-v3", env_id, args.seed)
        for name, env_id in (("rendered", RENDERED_ID), ("headless", "LunarLander-v3"))
    }
    rows, totals = train_in_chunks(models, args.steps, args.chunk)
    command = shlex.join(["python", "benchmarks/headless.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Headless pseudo rollouts: LunarLander-v3 with and without its render-only flame particles",
        "",
        f"`{command}` (steps {args.steps:,}, chunks {args.chunk:,}, seed {args.seed}); both parts in one invocation.",
        "",
        f"Steps: the same episodes (a heuristic pilot, random actions 15% of the time; seeds 0-{args.episodes - 1}) "
        f"on a rendering env and on a twin made headless at step {args.switch}, stepped alternately.",
        "",
        "| episodes | steps | rendering µs per step | headless µs per step | headless / rendering | bit-identical |",
        "|---|---|---|---|---|---|",
        *steps,
        "",
        f"Training: the ARSM preset, seed {args.seed}, `DummyVecEnv` (replay), alternating chunks; seconds of "
        "`learn()` per chunk. Rollouts with particles run on `RenderedLunarLander-v3` (a LunarLander subclass with no "
        "headless function).",
        "",
        "| real steps | particles s | headless s | headless / particles | pseudo steps (each) |",
        "|---|---|---|---|---|",
    ]
    lines += timing_rows(rows, totals, "rendered", "headless", lambda row: [f"{row['headless_pseudo']:,}"])
    finish(models, lines, args.out, "training with and without particles differs")


if __name__ == "__main__":
    main()
