"""Training fingerprints: a hash of the policy parameters after a short ``learn``, per configuration.

A change that must keep training exactly (same random streams, same floating-point operations) keeps every
fingerprint: CartPole-v1 (defaults), Acrobot-v1 and LunarLander-v3 (their presets) for 4096 real steps on seeds
0-2, every estimator, a budget, a horizon, two sub-envs with common random numbers, and MultiDiscrete actions.
``results/fingerprints.json`` holds the values of the commit that made it (see benchmarks/README.md). Compare:

    python benchmarks/fingerprint.py --compare benchmarks/results/fingerprints.json   # lists any change, exit 1
    python benchmarks/fingerprint.py --out /tmp/now.json                              # record the current ones
    python benchmarks/fingerprint.py --quick --compare benchmarks/results/fingerprints.json   # a 10 s subset
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch as th
from rl import build
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvMultiDiscrete

from arsm_rl import ARSM

Config = Callable[[], tuple[ARSM, int]]


def digest(model: ARSM) -> str:
    """First 16 hex digits of the SHA-256 of the policy's parameters and their names."""
    h = hashlib.sha256()
    for name, value in model.policy.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def configs(quick: bool) -> dict[str, Config]:
    """Name -> a function building ``(model, real steps)``; ``quick`` keeps the CartPole and MultiDiscrete ones."""
    out: dict[str, Config] = {}
    for s in (0, 1, 2):
        out[f"CartPole-v1/default/seed{s}"] = lambda s=s: (ARSM("MlpPolicy", "CartPole-v1", seed=s), 4096)
        out[f"Acrobot-v1/preset/seed{s}"] = lambda s=s: (build("arsm", "Acrobot-v1", s)[0], 4096)
        out[f"LunarLander-v3/preset/seed{s}"] = lambda s=s: (build("arsm", "LunarLander-v3", s)[0], 4096)
    for est in ("ars", "ar", "reinforce", "rloo", "all_action"):
        out[f"CartPole-v1/{est}"] = lambda est=est: (ARSM("MlpPolicy", "CartPole-v1", estimator=est, seed=0), 2048)
    out["Acrobot-v1/rloo/budget"] = lambda: (
        ARSM("MlpPolicy", "Acrobot-v1", estimator="rloo", max_pseudo_rollouts=48, n_steps=128, seed=1), 1024)
    out["Acrobot-v1/ars/horizon"] = lambda: (
        ARSM("MlpPolicy", "Acrobot-v1", estimator="ars", pseudo_horizon=20, n_steps=128, seed=1), 1024)
    out["CartPole-v1/n_envs2/share"] = lambda: (
        ARSM("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=3), n_steps=64, share_noise=True,
             pseudo_horizon=30, max_pseudo_rollouts=40, seed=3), 2048)
    for est in ("arsm", "ars", "rloo", "reinforce"):
        out[f"MultiDiscrete/{est}"] = lambda est=est: (
            ARSM("MlpPolicy", IdentityEnvMultiDiscrete(3, ep_length=20), estimator=est, n_steps=64, seed=0), 1024)
    if quick:
        out = {name: config for name, config in out.items() if name.startswith(("CartPole-v1/", "MultiDiscrete/"))}
        del out["CartPole-v1/default/seed1"], out["CartPole-v1/default/seed2"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the fingerprints to this JSON file")
    parser.add_argument("--compare", type=Path, help="JSON file of fingerprints to compare with")
    parser.add_argument("--quick", action="store_true", help="the CartPole and MultiDiscrete configurations only")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.compare and not args.compare.is_file():
        parser.error(f"no fingerprint file at {args.compare}")
    reference = json.loads(args.compare.read_text()) if args.compare else {}
    result: dict[str, str] = {}
    changed = 0
    for name, thunk in configs(args.quick).items():
        start = time.perf_counter()
        model, steps = thunk()
        model.learn(steps)
        result[name] = digest(model)
        status = ""
        if name in reference:
            same = reference[name] == result[name]
            changed += not same
            status = "same" if same else f"CHANGED (was {reference[name]})"
        print(f"{name:40s} {result[name]} {time.perf_counter() - start:6.1f}s {status}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if reference:
        print(f"{changed} of {len(result)} changed")
        raise SystemExit(1 if changed else 0)


if __name__ == "__main__":
    main()
