"""Where in the number of actions C the self-critic estimators win: variance per simulator step and learning at a
matched simulator budget, on a controlled MDP with a known exact gradient; and which form of the masked race to use.

Three tables (``--out`` folder, default ``benchmarks/results``; a fresh temporary folder with ``--quick``):

``mask_form.md``: ARSM on one categorical with C = 6 and 2 masked categories, the race run over all C coordinates
with the masked logits at ``-inf`` (the "full-C" form that ``arsm_rl`` uses) against the race over the 4 valid
coordinates only. 20 random problems (logits ~ N(0, 0.7^2), f ~ N(0, 1)), 100,000 draws each: the variance summed
over the valid coordinates, the distinct pseudo actions per draw (the rollouts a step costs) and their product,
medians over the problems. Both forms are unbiased; the table says which is cheaper per unit of variance.

``many_actions_variance.md``: ``envs.RandomMDP`` with 5 states and C actions (C in ``--sizes``; episodes of about
3 steps), one linear policy (logits table ~ N(0, 1), fixed). Per estimator, ``--updates`` independent update
gradients (16 envs x 32 real steps each, gamma 1, read from the loss gradient after one ``train()``), compared with
the exact gradient (``RandomMDP.policy_gradient``): the normalised mean squared error of one update
(E|g - g*|^2 / |g*|^2), the simulator steps one update costs (real + pseudo + tail), and their product divided by
10^5: the normalised error of an average of updates worth 100,000 simulator steps (lower is better; variance
falls as 1 / budget).

``many_actions_learning.md``: the same MDPs learned from a uniform linear policy (Adam, learning rate 0.1, 4 envs
x 32 real steps per update) until ``--budget`` simulator steps are spent, seeds ``--seeds``: the fraction of the
way from the uniform policy's value to the optimal one, (J - J_uniform) / (J* - J_uniform), exactly computed,
median over seeds. PPO (SB3 defaults, 4 envs, the same MLP-free linear policy is not available there: its default
64-64 MLP) gets the same budget as real steps, the non-self-critic anchor. Masked rows (``n_masked`` = C / 2 per
state) add sb3-contrib's MaskablePPO.

    python benchmarks/many_actions.py           # about 20 minutes of one core
    python benchmarks/many_actions.py --quick   # a smoke run, into a fresh temporary folder
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from outputs import add_output, resolve_outputs
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's envs/ package

from arsm_rl import ARSM
from arsm_rl import ESTIMATORS as REGISTRY
from arsm_rl.estimators import arsm_gradient, distinct_pseudo_actions, gather_pseudo_values, swap_pseudo_actions
from envs import RandomMDP

#: registered estimators this benchmark leaves out, and why (it compares every other one)
LEFT_OUT = {"ar": "REINFORCE on the race: reinforce, of lower variance (benchmarks/toy.py), is the rollout-free anchor"}
#: the estimators compared: the self-critic ones (they roll out) first, then the rollout-free anchors
ESTIMATORS = tuple(sorted((name for name in REGISTRY if name not in LEFT_OUT), key=lambda name: not REGISTRY[name].rolls_out))
N_STATES = 5


def mask_form(n_problems: int, n_draws: int, seed: int = 0) -> list[str]:
    """The full-C against the valid-subset race for ARSM on C = 6 with 2 masked categories."""
    gen = th.Generator().manual_seed(seed)
    valid = th.tensor([True, False, True, True, False, True])
    rows: dict[str, list[tuple[float, float]]] = {"full C = 6, masked logits -inf": [], "valid subset, C = 4": []}
    for _ in range(n_problems):
        logits, f = 0.7 * th.randn(6, generator=gen, dtype=th.float64), th.randn(6, generator=gen, dtype=th.float64)
        for name, keep in (("full C = 6, masked logits -inf", th.ones(6, dtype=th.bool)), ("valid subset, C = 4", valid)):
            lg = th.where(valid, logits, -th.inf)[keep].expand(n_draws, int(keep.sum()))
            expo = -th.log(th.rand(n_draws, int(keep.sum()), generator=gen, dtype=th.float64))
            pi = expo / expo.sum(1, keepdim=True)
            swaps = swap_pseudo_actions(lg, pi)
            g = arsm_gradient(pi, gather_pseudo_values(swaps, f[keep].expand(n_draws, -1)))
            g_valid = g[:, valid[keep]]
            n_distinct = distinct_pseudo_actions(swaps).sum(1).double() - 1  # rollouts: the true action is the real one
            rows[name].append((float(g_valid.var(0).sum()), float(n_distinct.mean())))
    lines = ["| form | variance (sum over valid) | rollouts per step | variance x rollouts |", "|---|---|---|---|"]
    for name, values in rows.items():
        variance = statistics.median(v for v, _ in values)
        rollouts = statistics.median(r for _, r in values)
        product = statistics.median(v * r for v, r in values)
        lines.append(f"| {name} | {variance:.4f} | {rollouts:.2f} | {product:.4f} |")
    return lines


def _linear_arsm(env: Any, estimator: str, **kwargs: Any) -> ARSM:
    """ARSM with a linear policy on the one-hot states (a logits table), gamma 1 and no clipping."""
    kwargs.setdefault("policy_kwargs", dict(net_arch=[]))
    return ARSM("MlpPolicy", env, estimator=estimator, gamma=1.0, max_grad_norm=None, **kwargs)


def _table(model: ARSM) -> np.ndarray:
    linear = model.policy.logits_net[0]
    return (linear.weight.detach().numpy() + linear.bias.detach().numpy()[:, None]).T  # (S, C) logits per state


def update_errors(n_actions: int, n_masked: int, estimator: str, n_updates: int, seed: int) -> tuple[float, float]:
    """Normalised MSE of one update's gradient and the simulator steps of one update, at a fixed policy."""
    env_kwargs = dict(n_states=N_STATES, n_actions=n_actions, n_masked=n_masked)
    env = make_vec_env(RandomMDP, n_envs=16, seed=seed, env_kwargs=env_kwargs)
    model = _linear_arsm(env, estimator, n_steps=32, learning_rate=0.0, seed=seed,
                         policy_kwargs=dict(net_arch=[], optimizer_class=th.optim.SGD, optimizer_kwargs={}))  # fmt: skip
    linear = model.policy.logits_net[0]
    with th.no_grad():
        linear.weight.copy_(th.as_tensor(np.random.default_rng(100 + n_actions).normal(size=(n_actions, N_STATES))))
        linear.bias.zero_()
    exact, visits = RandomMDP(**env_kwargs).policy_gradient(_table(model), gamma=1.0)
    exact = exact / visits.sum()
    errors, spent = [], []
    for _ in range(n_updates):
        before = model.num_timesteps + model.num_pseudo_steps
        model.train(model.collect_update())
        assert linear.weight.grad is not None
        errors.append(float(np.square(-linear.weight.grad.numpy().T - exact).sum() / np.square(exact).sum()))
        spent.append(model.num_timesteps + model.num_pseudo_steps - before)
    return float(np.mean(errors)), float(np.mean(spent))


def learned_fraction(algo: str, n_actions: int, n_masked: int, budget: int, seed: int) -> float:
    """(J - J_uniform) / (J* - J_uniform) after ``budget`` simulator steps."""
    env_kwargs = dict(n_states=N_STATES, n_actions=n_actions, n_masked=n_masked)
    env = make_vec_env(RandomMDP, n_envs=4, seed=seed, env_kwargs=env_kwargs)
    mdp = RandomMDP(**env_kwargs)
    uniform, best = mdp.policy_value(np.zeros((N_STATES, n_actions))), mdp.optimal_value()
    if algo in ("ppo", "maskable_ppo"):
        model = (PPO if algo == "ppo" else MaskablePPO)("MlpPolicy", env, n_steps=128, gamma=1.0, seed=seed)
        model.learn(budget)
        obs = np.eye(N_STATES, dtype=np.float32)
        with th.no_grad():
            dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0])
        logits = dist.distribution.logits.numpy()  # type: ignore[union-attr]
    else:
        model = _linear_arsm(env, algo, n_steps=32, learning_rate=0.1, seed=seed)
        while model.num_timesteps + model.num_pseudo_steps < budget:
            model.learn(model.n_steps * model.n_envs, reset_num_timesteps=False)
        logits = _table(model)
    return (mdp.policy_value(logits) - uniform) / (best - uniform)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2,4,8,16,32", help="numbers of actions C")
    parser.add_argument("--masked-sizes", default="8,32", help="C of the masked rows (C / 2 masked per state)")
    parser.add_argument("--updates", type=int, default=40, help="update gradients per variance cell")
    parser.add_argument("--budget", type=int, default=50_000, help="simulator steps per learning run")
    parser.add_argument("--seeds", default="0,1,2")
    add_output(parser, "--out", "", "folder of the tables")
    parser.add_argument("--quick", action="store_true", help="smoke run: C = 2 and 4, few updates, small budget")
    args = parser.parse_args()
    resolve_outputs(parser, args)
    th.set_num_threads(1)
    mask_problems, mask_draws = 20, 100_000
    if args.quick:
        args.sizes, args.masked_sizes, args.updates, args.budget, args.seeds = "2,4", "4", 3, 3000, "0"
        mask_problems, mask_draws = 2, 2000
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/many_actions.py" + (" --quick" if args.quick else "")
    lines = mask_form(mask_problems, mask_draws)
    (args.out / "mask_form.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)

    cases = [(int(c), 0) for c in args.sizes.split(",")] + [(int(c), int(c) // 2) for c in args.masked_sizes.split(",")]
    variance = ["| C | masked | estimator | simulator steps per real step | error of one update | simulator steps per "
                "update | error at 10^5 simulator steps |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for n_actions, n_masked in cases:
        for estimator in ESTIMATORS:
            error, spent = update_errors(n_actions, n_masked, estimator, args.updates, seed=0)
            variance.append(f"| {n_actions} | {n_masked} | {estimator} | {spent / 512:.2f} | {error:.4f} | {spent:,.0f} "
                            f"| {error * spent / 1e5:.5f} |")  # fmt: skip
            print(variance[-1], flush=True)
    (args.out / "many_actions_variance.md").write_text("\n".join(variance) + f"\n\nCommand: `{command}`\n")

    seeds = [int(s) for s in args.seeds.split(",")]
    learning = ["| C | masked | algo | fraction of the way to the optimum (median) | per seed |", "|---|---|---|---|---|"]
    for n_actions, n_masked in cases:
        for algo in (*ESTIMATORS, "ppo", *(("maskable_ppo",) if n_masked else ())):
            if algo == "ppo" and n_masked:
                continue  # PPO would take masked actions, which RandomMDP refuses
            fractions = [learned_fraction(algo, n_actions, n_masked, args.budget, seed) for seed in seeds]
            cells = ", ".join(f"{f:.3f}" for f in fractions)
            learning.append(f"| {n_actions} | {n_masked} | {algo} | {statistics.median(fractions):.3f} | {cells} |")
            print(learning[-1], flush=True)
    (args.out / "many_actions_learning.md").write_text(
        "\n".join(learning) + f"\n\nBudget: {args.budget:,} simulator steps per run. Command: `{command}`\n"
    )


if __name__ == "__main__":
    main()
