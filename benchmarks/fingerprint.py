"""Training fingerprints: what a short ``learn`` leaves behind, per configuration, to catch changes in how training runs.

Each configuration (CartPole-v1 defaults, Acrobot-v1 and LunarLander-v3 presets for 4096 real steps on seeds 0-2,
every estimator, a budget, a horizon, two sub-envs with common random numbers, MultiDiscrete actions) records:

- ``digest``: a hash of the policy's parameters, bit for bit. It holds on one CPU only: another CPU's float kernels
  (MKL, oneDNN, numpy's SIMD paths) round differently, so its bits differ from the first update on.
- the signature, which holds on any x86-64 CPU: the real and simulator steps taken (whole numbers: any change to
  a random stream, a plan or a rollout changes them) and the parameters seen through ``PROBES`` fixed random
  +-1 directions and their norm, equal within ``RTOL`` of the norm (kernels that round differently move them by
  about 1e-6 of it after 16 updates; a changed gradient moves them by orders of magnitude more).

``--compare`` reports a configuration as changed when its signature differs; with ``--exact`` also when only its
digest does (for a developer checking a refactor on the CPU the reference file was recorded on: the file names it).
``results/fingerprints.json`` holds the values of the commit that made it (see benchmarks/README.md):

    python benchmarks/fingerprint.py --compare benchmarks/results/fingerprints.json           # any CPU; exit 1 on a change
    python benchmarks/fingerprint.py --out /tmp/before.json                                   # this CPU's values, before
    python benchmarks/fingerprint.py --compare /tmp/before.json --exact                       # ... and after a refactor
    python benchmarks/fingerprint.py --quick --compare benchmarks/results/fingerprints.json   # a 10 s subset (CI runs it)
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import platform
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from rl import build
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvMultiDiscrete

from arsm_rl import ARSM, ESTIMATORS
from arsm_rl.actions import JointActions
from arsm_rl.policies import action_dims

Config = Callable[[], tuple[ARSM, int]]
#: ARSM's default estimator, which the default configurations run
DEFAULT_ESTIMATOR = inspect.signature(ARSM).parameters["estimator"].default
#: registered estimators without a MultiDiscrete configuration, and why (every other one that takes MultiDiscrete has one)
MULTIDISCRETE_LEFT_OUT = {"ar": "rollout-free like reinforce, reading each dimension's noise as arsm does: both run"}
#: Random directions the parameters are projected on.
PROBES = 8
#: Tolerance of the parameter signature, relative to the parameters' norm.
RTOL = 1e-4


def digest(model: ARSM) -> str:
    """First 16 hex digits of the SHA-256 of the policy's parameters and their names."""
    h = hashlib.sha256()
    for name, value in model.policy.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def signature(model: ARSM) -> dict[str, Any]:
    """The CPU-independent part of a fingerprint: steps taken, and the parameters' norm and projections."""
    theta = np.concatenate(
        [v.detach().cpu().double().numpy().reshape(-1) for v in model.policy.state_dict().values() if v.is_floating_point()]
    )
    directions = np.random.default_rng(0).choice([-1.0, 1.0], size=(PROBES, theta.size)) / np.sqrt(theta.size)
    return {
        "real_steps": int(model.num_timesteps),
        "pseudo_steps": int(model.num_pseudo_steps),
        "norm": float(np.linalg.norm(theta)),
        "projections": [float(p) for p in directions @ theta],
    }


def moved(now: dict[str, Any], reference: dict[str, Any]) -> float:
    """How far the parameters moved between two signatures, relative to their norm (the largest probe's change)."""
    pairs = zip([now["norm"], *now["projections"]], [reference["norm"], *reference["projections"]], strict=True)
    return max(abs(a - b) for a, b in pairs) / reference["norm"]


def differences(now: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints' signatures (empty: the same within rounding)."""
    out = [f"{key} {now[key]} (was {reference[key]})" for key in ("real_steps", "pseudo_steps") if now[key] != reference[key]]
    if moved(now, reference) > RTOL:
        out.append(f"parameters moved {moved(now, reference):.1e} of their norm (tolerance {RTOL:.0e})")
    return out


def machine() -> dict[str, str]:
    """The CPU and library versions a fingerprint file was recorded with."""
    cpu = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "cpu family", "model", "stepping") and key.strip() not in cpu:
                cpu[key.strip()] = value.strip()
    except OSError:
        cpu["model name"] = platform.processor() or platform.machine()
    name = f"{cpu.get('model name', '?')} (family {cpu.get('cpu family', '?')}, model {cpu.get('model', '?')}, " \
           f"stepping {cpu.get('stepping', '?')}), torch capability {th.backends.cpu.get_cpu_capability()}"  # fmt: skip
    return {"cpu": name, **{package: version(package) for package in ("torch", "numpy", "gymnasium", "stable_baselines3")}}


def multidiscrete_estimators(space: spaces.MultiDiscrete) -> list[str]:
    """The registered estimators that take actions of ``space``, but :data:`MULTIDISCRETE_LEFT_OUT`."""
    actions = JointActions(action_dims(space), discrete=False)
    out = []
    for name, estimator in ESTIMATORS.items():
        try:
            estimator().check(actions)
        except ValueError:
            continue
        if name not in MULTIDISCRETE_LEFT_OUT:
            out.append(name)
    return out


def configs(quick: bool) -> dict[str, Config]:
    """Name -> a function building ``(model, real steps)``; ``quick`` keeps the CartPole and MultiDiscrete ones."""
    out: dict[str, Config] = {}
    for s in (0, 1, 2):
        out[f"CartPole-v1/default/seed{s}"] = lambda s=s: (ARSM("MlpPolicy", "CartPole-v1", seed=s), 4096)
        out[f"Acrobot-v1/preset/seed{s}"] = lambda s=s: (build("arsm", "Acrobot-v1", s)[0], 4096)
        out[f"LunarLander-v3/preset/seed{s}"] = lambda s=s: (build("arsm", "LunarLander-v3", s)[0], 4096)
    for est in ESTIMATORS:
        if est != DEFAULT_ESTIMATOR:
            out[f"CartPole-v1/{est}"] = lambda est=est: (ARSM("MlpPolicy", "CartPole-v1", estimator=est, seed=0), 2048)
    out["Acrobot-v1/rloo/budget"] = lambda: (
        ARSM("MlpPolicy", "Acrobot-v1", estimator="rloo", max_pseudo_rollouts=48, n_steps=128, seed=1), 1024)
    out["Acrobot-v1/ars/horizon"] = lambda: (
        ARSM("MlpPolicy", "Acrobot-v1", estimator="ars", pseudo_horizon=20, n_steps=128, seed=1), 1024)
    out["CartPole-v1/n_envs2/share"] = lambda: (
        ARSM("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=3), n_steps=64, share_noise=True,
             pseudo_horizon=30, max_pseudo_rollouts=40, seed=3), 2048)
    for est in multidiscrete_estimators(IdentityEnvMultiDiscrete(3, ep_length=20).action_space):
        out[f"MultiDiscrete/{est}"] = lambda est=est: (
            ARSM("MlpPolicy", IdentityEnvMultiDiscrete(3, ep_length=20), estimator=est, n_steps=64, seed=0), 1024)
    if quick:
        out = {name: config for name, config in out.items() if name.startswith(("CartPole-v1/", "MultiDiscrete/"))}
        del out["CartPole-v1/default/seed1"], out["CartPole-v1/default/seed2"]
    return out


def read_reference(path: Path) -> dict[str, Any]:
    """A fingerprint file written by ``--out``; ``SystemExit`` with one line if it is not one."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("configs"), dict) or "machine" not in data:
            raise ValueError("no 'machine' and 'configs'")
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {path} is not a fingerprint file of this script ({exc}); record one with --out") from None
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the fingerprints to this JSON file")
    parser.add_argument("--compare", type=Path, help="fingerprint file (from --out) to compare with")
    parser.add_argument("--exact", action="store_true", help="with --compare: a digest that differs is a change too")
    parser.add_argument("--quick", action="store_true", help="the CartPole and MultiDiscrete configurations only")
    parser.add_argument("--only", help="the configurations whose name contains this text")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.exact and not args.compare:
        parser.error("--exact needs --compare")
    reference = read_reference(args.compare) if args.compare else {"configs": {}}
    here = machine()
    chosen = {name: config for name, config in configs(args.quick).items() if args.only is None or args.only in name}
    if not chosen:
        parser.error(f"no configuration matches --only {args.only!r}")
    result: dict[str, dict[str, Any]] = {}
    changed = rounded = 0
    for name, thunk in chosen.items():
        start = time.perf_counter()
        model, steps = thunk()
        model.learn(steps)
        result[name] = {"digest": digest(model), **signature(model)}
        status = ""
        if name in reference["configs"]:
            was = reference["configs"][name]
            problems = differences(result[name], was)
            exact = was["digest"] == result[name]["digest"]
            if args.exact and not exact:
                problems.append(f"digest was {was['digest']}")
            rounded += not problems and not exact
            changed += bool(problems)
            status = "CHANGED: " + "; ".join(problems) if problems else "same" if exact else \
                f"same within rounding ({moved(result[name], was):.0e})"
        print(f"{name:32s} {result[name]['digest']} {result[name]['pseudo_steps']:9d} {time.perf_counter() - start:6.1f}s "
              f"{status}", flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"machine": here, "configs": result}, indent=1) + "\n")
    if args.compare:
        if reference["machine"] != here:
            print(f"recorded with {reference['machine']}\nthis machine: {here}")
        if rounded:
            print(f"{rounded} of {len(result)} differ in their last bits only (another CPU's or library's rounding); "
                  "compare with --exact against a file recorded here to check bit for bit")  # fmt: skip
        print(f"{changed} of {len(result)} changed")
        raise SystemExit(1 if changed else 0)


if __name__ == "__main__":
    main()
