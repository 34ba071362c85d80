"""Cost of exact env snapshots (arsm_rl.cloning) per env family.

For each env: the µs of one env step, of ``clone_state`` (on the real env) + ``restore_state``
(into a scratch copy, as the ARSM rollout engine does), their ratio in "env-step equivalents",
and the one-off cost of ``scratch_copy``.  For LunarLander (replay family) also the restore cost
as a function of the prefix length, by replay and by fork snapshot (``ForkVecEnv``), with the memory a
paused fork copy holds.  Every number is the median of several repeats.

Run from the repository root::

    python benchmarks/clone_cost.py           # writes benchmarks/results/clone_cost.md
    python benchmarks/clone_cost.py --quick   # seconds: CartPole, FrozenLake, LunarLander, one repeat

``--quick`` is a smoke run of the same code path (used by ``tests/test_clone_cost_quick.py``); without ``--out``
it writes into a fresh temporary folder (printed), never into ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from outputs import add_output, resolve_outputs

from arsm_rl.cloning import clone_state, family_of, make_cloneable, register_optional_envs, restore_state, scratch_copy
from arsm_rl.forkvec.vec_env import ForkVecEnv

#: Cases measured by ``--quick``: one per always-available family.
QUICK_CASES = ("CartPole-v1", "FrozenLake-v1 slippery", "LunarLander-v3 wind (replay)")


def _available(env_id: str) -> bool:
    try:
        register_optional_envs(env_id)
    except ImportError:
        return False
    return True


def _register_optional() -> dict[str, bool]:
    have = {"ale": _available("ALE/Pong-v5"), "minigrid": _available("MiniGrid-DoorKey-8x8-v0")}
    try:
        from stable_baselines3.common import atari_wrappers

        have["cv2"] = atari_wrappers.cv2 is not None
        if not have["cv2"]:  # numpy stand-in so that SB3's WarpFrame runs (marked in the table)
            atari_wrappers.cv2 = types.SimpleNamespace(  # type: ignore[assignment]
                COLOR_RGB2GRAY=7,
                INTER_AREA=3,
                cvtColor=lambda f, c: (f @ np.array([0.299, 0.587, 0.114])).astype(np.uint8),
                resize=lambda f, size, interpolation=0: f[np.linspace(0, f.shape[0] - 1, size[1]).astype(int)][
                    :, np.linspace(0, f.shape[1] - 1, size[0]).astype(int)
                ],
            )
    except ImportError:
        have["cv2"] = False
    return have


def _sb3_atari() -> gym.Env[Any, Any]:
    from gymnasium.wrappers import FrameStackObservation
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    return FrameStackObservation(AtariWrapper(gym.make("ALE/Breakout-v5", frameskip=1)), 4)


def _cases(have: dict[str, bool]) -> list[tuple[str, Callable[[], gym.Env[Any, Any]], int]]:
    cases: list[tuple[str, Callable[[], gym.Env[Any, Any]], int]] = [
        ("CartPole-v1", lambda: gym.make("CartPole-v1"), 10),
        ("Acrobot-v1", lambda: gym.make("Acrobot-v1"), 50),
        ("MountainCar-v0", lambda: gym.make("MountainCar-v0"), 50),
        ("FrozenLake-v1 slippery", lambda: gym.make("FrozenLake-v1", is_slippery=True), 3),
        ("Taxi-v4 rainy+fickle", lambda: gym.make("Taxi-v4", is_rainy=True, fickle_passenger=True), 50),
        ("CliffWalking-v1 slippery", lambda: gym.make("CliffWalking-v1", is_slippery=True), 50),
        ("LunarLander-v3 wind (replay)", lambda: gym.make("LunarLander-v3", enable_wind=True), 100),
    ]
    if have["ale"]:
        cases += [
            ("ALE/Pong-v5 (sticky p=0.25)", lambda: gym.make("ALE/Pong-v5"), 100),
            ("ALE/Pong-v5 (p=0)", lambda: gym.make("ALE/Pong-v5", repeat_action_probability=0.0), 100),
            ("ALE/Breakout-v5 (sticky p=0.25)", lambda: gym.make("ALE/Breakout-v5"), 100),
            ("Breakout SB3 AtariWrapper+FrameStack(4)" + ("" if have["cv2"] else " *"), _sb3_atari, 100),
        ]
    if have["minigrid"]:
        cases += [
            ("MiniGrid-DoorKey-8x8", lambda: gym.make("MiniGrid-DoorKey-8x8-v0"), 20),
            ("MiniGrid-Dynamic-Obstacles-8x8", lambda: gym.make("MiniGrid-Dynamic-Obstacles-8x8-v0"), 5),
        ]
    return cases


def _median_us(fn: Callable[[], object], repeats: int, min_time: float) -> float:
    """Median over ``repeats`` of the mean µs per call, each repeat running at least ``min_time`` s."""
    out = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        out.append(elapsed / n * 1e6)
    return statistics.median(out)


def _step_us(env: gym.Env[Any, Any], repeats: int, min_time: float) -> float:
    rng = np.random.default_rng(0)
    n_act = int(env.action_space.n)  # type: ignore[attr-defined]
    per_repeat = []
    for _ in range(repeats):
        total, n = 0.0, 0
        while total < min_time:
            a = int(rng.integers(n_act))
            t0 = time.perf_counter()
            _, _, term, trunc, _ = env.step(a)
            total += time.perf_counter() - t0
            n += 1
            if term or trunc:
                env.reset()
        per_repeat.append(total / n * 1e6)
    return statistics.median(per_repeat)


def _to_mid_episode(env: gym.Env[Any, Any], prefix: int, seed: int = 0) -> None:
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n_act = int(env.action_space.n)  # type: ignore[attr-defined]
    for _ in range(prefix):
        _, _, term, trunc, _ = env.step(int(rng.integers(n_act)))
        if term or trunc:
            env.reset()


def measure_family(name: str, make: Callable[[], gym.Env[Any, Any]], prefix: int, repeats: int, min_time: float) -> dict:
    step_env = make_cloneable(make())
    step_env.reset(seed=1)
    step = _step_us(step_env, repeats, min_time)
    real = make_cloneable(make())
    _to_mid_episode(real, prefix)
    t0 = time.perf_counter()
    sim = scratch_copy(real)
    scratch_ms = (time.perf_counter() - t0) * 1e3
    snap = clone_state(real)
    restore_state(sim, snap)  # warm-up (installs trackers, first-call checks)
    clone = _median_us(lambda: clone_state(real), repeats, min_time)
    restore = _median_us(lambda: restore_state(sim, snap), repeats, min_time)
    both = _median_us(lambda: restore_state(sim, clone_state(real)), repeats, min_time)
    return {
        "name": name,
        "family": family_of(real),
        "step": step,
        "clone": clone,
        "restore": restore,
        "both": both,
        "ratio": both / step,
        "scratch_ms": scratch_ms,
        "restore_steps": snap.restore_steps,
    }


def _heuristic_actions(n: int, seed: int = 0) -> list[int]:
    """Actions of gymnasium's LunarLander heuristic for ``n`` steps (continuing past the episode end)."""
    from gymnasium.envs.box2d.lunar_lander import heuristic

    env = gym.make("LunarLander-v3", enable_wind=True)
    obs, _ = env.reset(seed=seed)
    acts = []
    for _ in range(n):
        a = int(heuristic(env.unwrapped, obs))
        acts.append(a)
        obs, *_ = env.step(a)
    return acts


def measure_replay(prefixes: list[int], repeats: int, min_time: float) -> list[dict]:
    acts = _heuristic_actions(max(prefixes))
    rows = []
    step_env = make_cloneable(gym.make("LunarLander-v3", enable_wind=True))
    step_env.reset(seed=0)
    step = _step_us(step_env, repeats, min_time)
    for L in prefixes:
        real = make_cloneable(gym.make("LunarLander-v3", enable_wind=True))
        real.reset(seed=0)
        for a in acts[:L]:
            real.step(a)
        sim = scratch_copy(real)
        snap = clone_state(real)
        restore_state(sim, snap)
        restore = _median_us(lambda: restore_state(sim, snap), repeats, min_time)  # noqa: B023
        rows.append({"prefix": L, "restore": restore, "ratio": restore / step, "step": step})
    base = rows[0]["restore"] if rows and rows[0]["prefix"] == 0 else 0.0
    for r in rows:
        r["per_step"] = (r["restore"] - base) / r["prefix"] if r["prefix"] else float("nan")
    return rows


def _private_kb(pid: int) -> int:
    """Memory only process ``pid`` holds (its private pages, from /proc/PID/smaps_rollup), in kB."""
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.startswith(("Private_Clean", "Private_Dirty")))


def measure_fork(prefixes: list[int], repeats: int, min_time: float) -> list[dict]:
    """Fork snapshots of a ``ForkVecEnv`` LunarLander (wind) worker after each prefix of heuristic actions."""
    from stable_baselines3.common.env_util import make_vec_env

    acts = _heuristic_actions(max(prefixes))
    rows = []
    for L in prefixes:
        venv = make_vec_env("LunarLander-v3", 1, seed=0, env_kwargs={"enable_wind": True}, vec_env_cls=ForkVecEnv)
        venv.reset()
        for a in acts[:L]:
            venv.step(np.array([a]))
        (snapshot,) = venv.snapshot([0])
        snap = _median_us(lambda: venv.snapshot([0]), repeats, min_time)  # noqa: B023  (each frees the one before)

        def restore() -> None:
            env = snapshot.restore()  # noqa: B023
            env.step(0)  # the fork has served its first step
            env.close()

        restored = _median_us(restore, repeats, min_time)
        env = snapshot.restore()
        step = _median_us(lambda: env.step(0), repeats, min_time)  # noqa: B023
        env.close()
        for _ in range(100):
            venv.step(np.array([0]))
        rows.append({"prefix": L, "restore": restored, "snapshot": snap, "step": step, "kb": _private_kb(snapshot.pid)})
        venv.close()
    return rows


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def render(rows: list[dict], replay: list[dict], fork: list[dict], have: dict[str, bool], args: argparse.Namespace,
           wall: float) -> str:  # fmt: skip
    lines = [
        f"Command: `python benchmarks/clone_cost.py{' --quick' if args.quick else ''}` "
        f"(median of {args.repeats} repeats, each ≥ {args.min_time} s; total {wall:.0f} s).",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, gymnasium {gym.__version__}"
        + (f", ale-py {__import__('ale_py').__version__}" if have["ale"] else "")
        + ". Shared 2-core VM: expect ±30 % noise.",
        "",
        "*step* = one `env.step` of the `gym.make` env with its wrappers (and `CloneableWrapper`); "
        "*clone + restore* = `clone_state(real)` then `restore_state(scratch, snap)` (what one pseudo-action "
        "rollout pays); *env-steps* = (clone + restore) / step; *restore_steps* = steps a restore replays "
        "(snapshot taken after a 100-step random prefix, through episode ends); *scratch_copy* = one-off cost of a pool env.",
        "",
        "| env | family | step µs | clone µs | restore µs | clone+restore µs | env-steps | restore_steps | scratch_copy ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['family']} | {_fmt(r['step'])} | {_fmt(r['clone'])} | {_fmt(r['restore'])} | "
            f"{_fmt(r['both'])} | {r['ratio']:.2f} | {r['restore_steps']} | {r['scratch_ms']:.1f} |"
        )
    if not have["cv2"]:
        lines += ["", "\\* OpenCV is not installed: SB3's WarpFrame ran on a numpy stand-in (step time not representative)."]
    lines += [
        "",
        "## LunarLander-v3 (wind) replay: restore cost vs prefix length",
        "",
        "A restore resets the scratch env with the recorded seed / RNG state and replays the prefix "
        "(actions of gymnasium's heuristic lander, continued past the episode end where needed).",
        "",
        "| prefix (steps since reset) | restore µs | env-steps | µs per replayed step |",
        "|---:|---:|---:|---:|",
    ]
    for r in replay:
        per = "-" if r["prefix"] == 0 else _fmt(r["per_step"])
        lines.append(f"| {r['prefix']} | {_fmt(r['restore'])} | {r['ratio']:.1f} | {per} |")
    if replay:
        lines += [
            "",
            f"env-steps are relative to one random-policy LunarLander step ({_fmt(replay[0]['step'])} µs), measured "
            "in the same run. Prefix 0 is the reset alone; µs per replayed step = (restore - reset) / prefix.",
        ]
    replayed = {r["prefix"]: r["restore"] for r in replay}
    lines += [
        "",
        "## LunarLander-v3 (wind): fork snapshots (`ForkVecEnv`) vs replay, against prefix length",
        "",
        "*fork restore* = connect to the paused copy, which forks a copy for the connection, until that copy's first "
        "step comes back; *fork snapshot* = the worker forks a paused copy (and frees the one before), a round trip "
        "from the trainer; *fork step* = one step of a restored copy over its socket; *paused copy kB* = memory the "
        "paused copy holds alone (its private pages) once its worker has gone 100 steps further.",
        "",
        "| prefix (steps since reset) | replay restore µs | fork restore µs | fork snapshot µs | fork step µs "
        "| paused copy kB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in fork:
        lines.append(
            f"| {r['prefix']} | {_fmt(replayed[r['prefix']])} | {_fmt(r['restore'])} | {_fmt(r['snapshot'])} | "
            f"{_fmt(r['step'])} | {r['kb']:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (1 with --quick)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per repeat (default 0.15; 0.01 with --quick)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: only {', '.join(QUICK_CASES)}, replay prefixes 0/10, fork prefix 10; unless given, 1 repeat "
        "of 0.01 s",
    )
    add_output(parser, "--out", "", "folder for clone_cost.md")
    args = parser.parse_args()
    resolve_outputs(parser, args)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.min_time = args.min_time or (0.01 if args.quick else 0.15)
    start = time.perf_counter()
    have = _register_optional()
    cases = [case for case in _cases(have) if case[0] in QUICK_CASES or not args.quick]
    rows = []
    for name, make, prefix in cases:
        row = measure_family(name, make, prefix, args.repeats, args.min_time)
        print(
            f"{name:48s} step {row['step']:9.1f} µs  clone+restore {row['both']:9.1f} µs  "
            f"= {row['ratio']:6.2f} steps  scratch_copy {row['scratch_ms']:7.1f} ms",
            flush=True,
        )
        rows.append(row)
    replay = measure_replay([0, 10] if args.quick else [0, 10, 100, 500], args.repeats, args.min_time)
    for r in replay:
        print(f"LunarLander replay prefix {r['prefix']:4d}: restore {r['restore']:9.1f} µs = {r['ratio']:6.1f} steps")
    fork = measure_fork([10] if args.quick else [10, 100, 500], args.repeats, args.min_time)
    for r in fork:
        print(f"LunarLander fork prefix {r['prefix']:4d}: restore {r['restore']:9.1f} µs, snapshot {r['snapshot']:9.1f} µs")
    text = render(rows, replay, fork, have, args, time.perf_counter() - start)
    output = args.out / "clone_cost.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
