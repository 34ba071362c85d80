"""Gradient quality at fixed CartPole-v1 policy snapshots: variance and cosine to a reference, per estimator.

ARSM with its defaults (seed 0) is trained on CartPole-v1 and its policy is saved at fixed real-step counts
(``--snapshots``, default 0, 2048 and 3328: the initial near-uniform policy, a policy with a stochastic
return of about 100, and one of about 400 that still fails now and then; from 4352 steps on this run's
policy plays 500-step episodes, where every rollout reaches the time limit and the gradient all but
vanishes). At each snapshot, with the parameters frozen, every estimator draws ``--repeats`` independent
per-update gradient estimates, each from its own fresh batch of real data (the sub-envs keep running
between draws, after a burn-in, so batches come from the policy's on-policy stream as in training) and
its own pseudo rollouts. Estimators: ARSM's ``arsm``, ``ar``, ``reinforce``, ``rloo`` and ``all_action``,
and A2C's advantage estimator (see ``a2c`` below). The reference gradient is the mean of
``--ref-repeats`` further, independent ``all_action`` estimates. ARSM draws ``--arsm-repeats`` estimates
(more than the others) so that its bias check below can tell a 10 % bias from noise.

All estimators estimate the same vector: the gradient of the undiscounted-state-weighting surrogate
(1/N) sum_t sum_a pi(a|s_t) Q(s_t, a) over the on-policy stream, Q discounted with gamma = 0.99 and no
gamma^t weight on the steps (as in the authors' code and in A2C/PPO code).

``a2c``: SB3 A2C's policy-gradient term -(A_t log pi(a_t|s_t)).mean() evaluated on the same policy network,
with A_t = the Monte-Carlo return (the real discounted return, completed by a tail rollout exactly like
REINFORCE's) minus a value baseline V(s_t). V is a 64-64 tanh MLP fitted, before the draws, to discounted
returns of separate episodes of the snapshot policy, then frozen: a converged critic and no bootstrapping
(A2C with gae_lambda = 1 and an exact return), i.e. the best case of A2C's estimator; its fitting cost is
not charged. REINFORCE, AR and A2C draws share their real batches (each pays its own tail rollouts).

Two settings per snapshot:

- ``natural``: every estimator with n_steps = 256 real steps, one env, no rollout budget.
- ``matched``: every estimator gets about ARSM's simulator steps per estimate S (real + pseudo, measured
  in the natural setting): ``rloo`` and ``all_action`` keep 256 real steps with ``max_pseudo_rollouts`` =
  ARSM's mean number of pseudo rollouts (their natural draws are reused when that cap does not bind);
  ``reinforce``, ``ar`` and ``a2c`` get a real batch of about S minus their tail rollouts (n_envs x n_steps,
  up to 8 envs).

Per estimator: total variance (trace of the covariance of the R draws), noise-to-signal ratio (total
variance / |g|^2, |g|^2 estimated without bias from the reference draws), mean cosine of single draws to
the reference, cosine of the draws' mean to the reference, and simulator steps per estimate.

Bias check: the projection of the draws' mean on the reference, mean_draws . r / |g|^2, has expectation 1 for
an unbiased estimator (r is independent of the draws). Its error has two parts: the draws' own (``projection_se``,
from the spread of the per-draw projections) and the reference's, which every row of a snapshot shares: to first
order the projection moves by -(r - g) . g / |g|^2, whose standard error is the reference row's own
``projection_se``. ``projection_se_total`` combines the two (independent) parts and ``projection_z`` =
(projection - 1) / ``projection_se_total``; |z| > 3 would be evidence of bias.
The per-update gradient is read from the parameters' ``.grad`` after one ``train()`` with plain SGD and no
clipping (the loss gradient; the first draw checks that the SGD step with learning rate 1 moved the
parameters by exactly minus it).

    python benchmarks/gradient_quality.py           # about 15 min of one core
    python benchmarks/gradient_quality.py --quick   # about 20 s, for tests; into a fresh temporary folder
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch as th
from outputs import add_output, resolve_outputs
from stable_baselines3.common.env_util import make_vec_env

from arsm_rl import ARSM
from arsm_rl import ESTIMATORS as REGISTRY

ENV_ID = "CartPole-v1"
GAMMA = 0.99
#: registered estimators this benchmark leaves out, and why (it measures every other one)
LEFT_OUT = {"ars": "ARSM with one reference column instead of all: ARSM's rows stand for the swap estimators"}
#: the estimators measured: the registered ones, and A2C's advantage estimator ("a2c": REINFORCE's draw minus the
#: gradient of a fitted value baseline, see sample_gradients)
ESTIMATORS = (*(name for name in REGISTRY if name not in LEFT_OUT), "a2c")
#: those that use the real returns only: they share each real batch
ROLLOUT_FREE = tuple(name for name in ESTIMATORS if name == "a2c" or not REGISTRY[name].rolls_out)
#: those that roll out, each sampled on its own (ARSM first: its simulator steps set the matched budget)
ROLLING = tuple(name for name in ESTIMATORS if name not in ROLLOUT_FREE)
#: display names (an estimator without one shows its name)
LABELS = {
    "arsm": "ARSM",
    "ar": "AR",
    "reinforce": "REINFORCE",
    "rloo": "RLOO",
    "all_action": "all-action",
    "a2c": "A2C (value baseline)",
}
#: the summary's row order, as benchmarks/README.md discusses them; estimators not named here follow, as measured
SUMMARY_ORDER = ("arsm", "all_action", "rloo", "a2c", "reinforce", "ar")


def label(name: str) -> str:
    """The display name of an estimator."""
    return LABELS.get(name, name)


@dataclass
class Config:
    snapshots: tuple[int, ...] = (0, 2048, 3328)
    repeats: int = 48
    arsm_repeats: int = 768
    ref_repeats: int = 1024
    n_steps: int = 256
    burn_in: int = 512  # real steps per sub-env before the first draw
    max_envs: int = 8  # sub-envs of the large rollout-free batches
    critic_envs: int = 32
    critic_steps: int = 600
    critic_epochs: int = 400
    seed: int = 0


QUICK = Config(
    snapshots=(0, 256),
    repeats=3,
    arsm_repeats=4,
    ref_repeats=3,
    n_steps=64,
    burn_in=64,
    critic_envs=8,
    critic_steps=100,
    critic_epochs=30,
)


@dataclass
class Samples:
    """Gradient draws of one estimator in one setting."""

    grads: list[np.ndarray] = field(default_factory=list)  # (P,) float64 ascent directions
    sim_steps: list[int] = field(default_factory=list)  # real + pseudo simulator steps per draw
    rollouts: list[int] = field(default_factory=list)  # pseudo rollouts per draw (tails excluded)
    seconds: list[float] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)  # completed real episodes of the stream
    n_steps: int = 0
    n_envs: int = 1
    budget: int | None = None


# ---------------------------------------------------------------------------------------- snapshots


def train_snapshots(steps: tuple[int, ...], seed: int) -> dict[int, dict[str, th.Tensor]]:
    """Train ARSM with its defaults and keep the policy's parameters at each real-step count in ``steps``."""
    model = ARSM("MlpPolicy", ENV_ID, seed=seed)
    states = {}
    for target in sorted(steps):
        if target > model.num_timesteps:
            model.learn(target - model.num_timesteps, reset_num_timesteps=False)
        states[target] = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
        print(f"snapshot at {model.num_timesteps} real steps", flush=True)
    return states


def fit_value_baseline(state: dict[str, th.Tensor], cfg: Config, seed: int) -> tuple[th.nn.Module, float]:
    """
    Fit V(s) to discounted returns of complete episodes of the snapshot policy, on envs of its own.

    :return: the frozen critic and its explained variance on the fitting data
    """
    policy = ARSM("MlpPolicy", ENV_ID, seed=seed).policy
    policy.load_state_dict(state)
    venv = make_vec_env(ENV_ID, n_envs=cfg.critic_envs, seed=seed)
    rng = np.random.default_rng(seed)
    obs = venv.reset()
    trajectories: list[list[tuple[np.ndarray, float]]] = [[] for _ in range(cfg.critic_envs)]
    states, targets = [], []
    for _ in range(cfg.critic_steps):
        with th.no_grad():
            probs = th.softmax(policy(th.as_tensor(obs)), -1).numpy().astype(np.float64)
        actions = (rng.random((len(probs), 1)) > np.cumsum(probs, 1)[:, :-1]).sum(1)
        next_obs, rewards, dones, _ = venv.step(actions)
        for e in range(cfg.critic_envs):
            trajectories[e].append((obs[e], float(rewards[e])))
            if dones[e]:  # termination or time limit: no bootstrap, like every Q in ARSM
                ret = 0.0
                for o, r in reversed(trajectories[e]):
                    ret = r + GAMMA * ret
                    states.append(o)
                    targets.append(ret)
                trajectories[e] = []
        obs = next_obs
    venv.close()
    x = th.as_tensor(np.array(states), dtype=th.float32)
    y = th.as_tensor(np.array(targets), dtype=th.float32)
    scale = float(y.abs().max().clamp(min=1.0))
    th.manual_seed(seed)
    critic = th.nn.Sequential(
        th.nn.Linear(x.shape[1], 64), th.nn.Tanh(), th.nn.Linear(64, 64), th.nn.Tanh(), th.nn.Linear(64, 1)
    )
    optimizer = th.optim.Adam(critic.parameters(), lr=3e-3)
    for _ in range(cfg.critic_epochs):
        loss = (critic(x).squeeze(1) - y / scale).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = critic[-1]
    with th.no_grad():  # undo the target scaling in the output layer
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        explained = 1.0 - float((critic(x).squeeze(1) - y).var() / y.var().clamp(min=1e-12))
    critic.requires_grad_(False)
    return critic, explained


# ---------------------------------------------------------------------------------------- sampling


def sample_gradients(
    state: dict[str, th.Tensor],
    estimators: tuple[str, ...],
    cfg: Config,
    *,
    seed: int,
    repeats: int,
    n_steps: int,
    n_envs: int = 1,
    budget: int | None = None,
    critic: th.nn.Module | None = None,
) -> dict[str, Samples]:
    """
    Independent per-update gradient estimates at frozen parameters ``state`` (through ARSM's public update API).

    ``estimators`` is one estimator of :data:`ROLLING` or any of :data:`ROLLOUT_FREE`, which then share each real
    batch. The model uses plain SGD, learning rate 1 and no clipping,
    so after ``train()`` the parameters' ``.grad`` is minus the update's gradient estimate; the parameters are
    restored after every ``train()``.
    """
    shared = all(name in ROLLOUT_FREE for name in estimators)
    assert shared or len(estimators) == 1, estimators
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=seed)
    model = ARSM(
        "MlpPolicy",
        env,
        estimator="reinforce" if shared else estimators[0],
        n_steps=n_steps,
        gamma=GAMMA,
        max_pseudo_rollouts=budget,
        learning_rate=1.0,
        max_grad_norm=None,
        policy_kwargs=dict(optimizer_class=th.optim.SGD, optimizer_kwargs={}),
        seed=seed,
    )
    model.policy.load_state_dict(state)
    params = list(model.policy.parameters())
    start_flat = th.cat([p.detach().reshape(-1) for p in params]).double()
    for _ in range(math.ceil(cfg.burn_in / n_steps)):
        model.collect_update()
    model.ep_info_buffer.clear()
    out = {name: Samples(n_steps=n_steps, n_envs=n_envs, budget=budget) for name in estimators}
    real = n_steps * n_envs
    for draw in range(repeats):
        tick = time.perf_counter()
        collected = model.collect_update()
        collect_s = time.perf_counter() - tick
        for name in dict.fromkeys("reinforce" if est == "a2c" else est for est in estimators):
            model.estimator = name
            pseudo_before, tick = model.num_pseudo_steps, time.perf_counter()
            model.train(collected)
            grad = -th.cat([p.grad.reshape(-1) for p in params]).double()
            if draw == 0:  # the SGD step (lr 1) moved the parameters by exactly -.grad
                moved = th.cat([p.detach().reshape(-1) for p in params]).double() - start_flat
                assert th.allclose(moved, grad, atol=1e-5 + 1e-4 * float(grad.abs().max())), "SGD readout mismatch"
            model.policy.load_state_dict(state)
            cost = real + model.num_pseudo_steps - pseudo_before
            rollouts = int(model.logger.name_to_value["rollout/pseudo_rollouts"])
            seconds = collect_s + time.perf_counter() - tick
            targets = [name] if name != "reinforce" else [n for n in ("reinforce", "a2c") if n in estimators]
            for target in targets:
                g = grad
                if target == "a2c":
                    assert critic is not None
                    obs = th.as_tensor(collected.obs.reshape(real, -1))
                    actions = th.as_tensor(collected.actions.reshape(real, 1))
                    log_prob = th.log_softmax(model.policy(obs), -1).gather(1, actions).squeeze(1)
                    baseline = th.autograd.grad((critic(obs).squeeze(1) * log_prob).mean(), params)
                    g = grad - th.cat([b.reshape(-1) for b in baseline]).double()
                out[target].grads.append(g.numpy().copy())
                out[target].sim_steps.append(cost)
                out[target].rollouts.append(rollouts)
                out[target].seconds.append(seconds)
    returns = [float(info["r"]) for info in model.ep_info_buffer]
    for samples in out.values():
        samples.episode_returns = returns
    model.env.close()
    return out


# ---------------------------------------------------------------------------------------- statistics


def reference_stats(ref: Samples) -> tuple[np.ndarray, float, float]:
    """Reference mean, an unbiased estimate of |g|^2, and the estimated cosine of the reference to the true gradient."""
    draws = np.array(ref.grads)
    mean = draws.mean(0)
    total_var = float(draws.var(0, ddof=1).sum()) if len(draws) > 1 else 0.0
    signal = max(float(mean @ mean) - total_var / len(draws), 1e-30)
    return mean, signal, math.sqrt(min(1.0, signal / max(float(mean @ mean), 1e-30)))


def summarise(
    samples: Samples, ref_mean: np.ndarray, signal: float, ref_projection_se: float | None, seed: int = 0
) -> dict[str, Any]:
    """
    Variance, noise-to-signal ratio (with a bootstrap interval), cosines and the bias check of one set of draws.

    :param ref_projection_se: the reference's own share of the projection's standard error (the reference row's
        ``projection_se``); ``None`` for the reference row itself, whose bias check is not defined
    """
    draws = np.array(samples.grads)
    variances = draws.var(0, ddof=1)
    norms = np.linalg.norm(draws, axis=1)
    ref_norm = float(np.linalg.norm(ref_mean))
    cosines = draws @ ref_mean / np.maximum(norms * ref_norm, 1e-30)
    projections = draws @ ref_mean / signal  # E = 1 for an unbiased estimator (the reference is independent)
    mean = draws.mean(0)
    sim_steps = float(np.mean(samples.sim_steps))
    total_variance = float(variances.sum())
    projection_se = float(projections.std(ddof=1) / math.sqrt(len(projections)))
    se_total: float | str = ""
    z: float | str = ""
    if ref_projection_se is not None:
        se_total = math.hypot(projection_se, ref_projection_se)
        z = (float(projections.mean()) - 1.0) / se_total
    rng = np.random.default_rng(seed)
    boot = [draws[rng.integers(len(draws), size=len(draws))].var(0, ddof=1).sum() / signal for _ in range(200)]
    return {
        "n_steps": samples.n_steps,
        "n_envs": samples.n_envs,
        "max_pseudo_rollouts": samples.budget if samples.budget is not None else "",
        "repeats": len(draws),
        "real_steps": samples.n_steps * samples.n_envs,
        "sim_steps": round(sim_steps, 1),
        "pseudo_rollouts": round(float(np.mean(samples.rollouts)), 1),
        "total_variance": total_variance,
        "mean_param_variance": float(variances.mean()),
        "noise_to_signal": total_variance / signal,
        "nsr_boot_lo": float(np.quantile(boot, 0.05)),
        "nsr_boot_hi": float(np.quantile(boot, 0.95)),
        "nsr_x_ksteps": total_variance / signal * sim_steps / 1000.0,
        "cosine_mean": float(cosines.mean()),
        "cosine_se": float(cosines.std(ddof=1) / math.sqrt(len(cosines))),
        "cosine_of_mean": float(mean @ ref_mean / max(np.linalg.norm(mean) * ref_norm, 1e-30)),
        "projection_mean": float(projections.mean()),
        "projection_se": projection_se,
        "projection_se_total": se_total,
        "projection_z": z,
        "projection_median": float(np.median(projections)),
        "grad_norm_mean": float(norms.mean()),
        "seconds_per_estimate": round(float(np.mean(samples.seconds)), 4),
        "zero_estimates": int((norms == 0).sum()),
    }


# ---------------------------------------------------------------------------------------- one snapshot


def run_snapshot(index: int, step: int, state: dict[str, th.Tensor], cfg: Config) -> list[dict[str, Any]]:
    seed = cfg.seed + 1000 * (index + 1)
    tick = time.perf_counter()
    n = cfg.n_steps
    ref = sample_gradients(state, ("all_action",), cfg, seed=seed, repeats=cfg.ref_repeats, n_steps=n)["all_action"]
    ref_mean, signal, ref_cos = reference_stats(ref)
    critic, explained = fit_value_baseline(state, cfg, seed + 7)
    natural: dict[str, Samples] = {}
    for k, name in enumerate(ROLLING):
        repeats = cfg.arsm_repeats if name == "arsm" else cfg.repeats
        natural.update(sample_gradients(state, (name,), cfg, seed=seed + 10 + k, repeats=repeats, n_steps=n))
    natural.update(sample_gradients(state, ROLLOUT_FREE, cfg, seed=seed + 20, repeats=cfg.repeats, n_steps=n, critic=critic))
    budget_steps = float(np.mean(natural["arsm"].sim_steps))
    budget_rollouts = max(1, round(float(np.mean(natural["arsm"].rollouts))))
    matched = {"arsm": natural["arsm"]}
    for k, name in enumerate(name for name in ROLLING if name != "arsm"):
        if budget_rollouts >= max(natural[name].rollouts):  # the cap would not bind: same law, reuse the draws
            matched[name] = natural[name]
        else:
            matched.update(
                sample_gradients(
                    state, (name,), cfg, seed=seed + 30 + k, repeats=cfg.repeats, n_steps=n, budget=budget_rollouts
                )
            )
    tail = float(np.mean(natural["reinforce"].sim_steps)) - n  # one sub-env's tail rollout
    n_envs = int(min(cfg.max_envs, max(1, budget_steps // (4 * n))))
    n_big = max(1, round((budget_steps - n_envs * tail) / n_envs))
    matched.update(
        sample_gradients(
            state, ROLLOUT_FREE, cfg, seed=seed + 40, repeats=cfg.repeats, n_steps=n_big, n_envs=n_envs, critic=critic
        )
    )
    rows = []
    returns = ref.episode_returns
    common = {
        "snapshot_steps": step,
        "policy_return": round(float(np.mean(returns)), 1) if returns else float("nan"),
        "reference_cosine_to_truth": round(ref_cos, 4),
        "reference_repeats": len(ref.grads),
        "reference_norm": float(np.sqrt(signal)),
        "critic_explained_variance": round(explained, 3),
    }
    reference = summarise(ref, ref_mean, signal, None)
    rows.append({**common, "setting": "reference", "estimator": "all_action", **reference})
    for setting, group in (("natural", natural), ("matched", matched)):
        for name in ESTIMATORS:
            summary = summarise(group[name], ref_mean, signal, reference["projection_se"])
            rows.append({**common, "setting": setting, "estimator": name, **summary})
    print(f"snapshot {step}: {time.perf_counter() - tick:.0f} s, reference cosine to truth ~{ref_cos:.3f}", flush=True)
    for row in rows:
        print(
            f"  {row['setting']:9s} {row['estimator']:10s} sim {row['sim_steps']:>9} var {row['total_variance']:.3e} "
            f"nsr {row['noise_to_signal']:.3g} [{row['nsr_boot_lo']:.3g}, {row['nsr_boot_hi']:.3g}] "
            f"cos {row['cosine_mean']:.3f} proj {row['projection_mean']:.3f}+-{row['projection_se']:.3f} "
            + (
                f" (with reference {row['projection_se_total']:.3f}, z {row['projection_z']:+.1f})"
                if row["projection_z"] != ""
                else ""
            ),
            flush=True,
        )
    return rows


# ---------------------------------------------------------------------------------------- outputs


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows ``write_csv`` wrote, with their numbers read back as the same ints and floats."""

    def value(text: str) -> Any:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="") as file:
        return [{key: value(text) for key, text in row.items()} for row in csv.DictReader(file)]


def plot(rows: list[dict[str, Any]], path: Path, n_steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snapshots = sorted({r["snapshot_steps"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for i, setting in enumerate(("natural", "matched")):
        for name in ESTIMATORS:
            sub = sorted(
                (r for r in rows if r["setting"] == setting and r["estimator"] == name), key=lambda r: r["snapshot_steps"]
            )
            x = [snapshots.index(r["snapshot_steps"]) for r in sub]
            nsr = np.array([r["noise_to_signal"] for r in sub])
            interval = np.array([[r["nsr_boot_lo"] for r in sub], [r["nsr_boot_hi"] for r in sub]])
            spread = np.clip(np.abs(interval - nsr), 0.0, None)
            axes[i, 0].errorbar(x, nsr, yerr=spread, marker="o", capsize=3, label=label(name))
            axes[i, 1].errorbar(
                x, [r["cosine_mean"] for r in sub], yerr=[2 * r["cosine_se"] for r in sub], marker="o", capsize=3
            )
        title = f"natural: n_steps {n_steps}, no budget" if setting == "natural" else "matched: about ARSM's simulator steps"
        axes[i, 0].set(yscale="log", ylabel="total variance / |g|^2 (90% bootstrap)", title=title)
        axes[i, 1].set(ylabel="mean cosine to reference (±2 se)", title=title)
        axes[i, 1].axhline(0.0, color="grey", lw=0.5)
    labels = [
        f"{s} steps\n(return {next(r['policy_return'] for r in rows if r['snapshot_steps'] == s):.0f})" for s in snapshots
    ]
    for ax in axes[1]:
        ax.set_xticks(range(len(snapshots)), labels)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("CartPole-v1 gradient quality at ARSM policy snapshots (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def markdown(rows: list[dict[str, Any]], cfg: Config, command: str, seconds: float) -> str:
    lines = [
        f"CartPole-v1, ARSM defaults seed {cfg.seed} trained to the snapshot; per-update gradient estimates at frozen "
        f"parameters, {cfg.repeats} draws per estimator ({cfg.arsm_repeats} for ARSM), reference = mean of "
        f"{cfg.ref_repeats} independent all-action draws (n_steps {cfg.n_steps}). Surrogate: undiscounted state "
        f"weighting, gamma = {GAMMA} in Q. Projection on g: mean ± the draws' standard error, then the standard error "
        "with the reference's own error added and z = (projection - 1) / that.",
        "",
        "| snapshot (real steps) | policy mean return | reference draws | est. cosine(reference, true gradient) | ‖g‖ "
        "| A2C critic explained variance |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["setting"] == "reference":
            lines.append(
                f"| {r['snapshot_steps']} | {r['policy_return']} | {r['reference_repeats']} "
                f"| {r['reference_cosine_to_truth']:.3f} | {fmt(r['reference_norm'])} | {r['critic_explained_variance']} |"
            )
    header = (
        "| snapshot | estimator | real steps | rollout cap | sim steps / estimate | total variance "
        "| variance / ‖g‖² [90% bootstrap] | NSR x ksteps | mean cosine | projection on g (1 = unbiased) "
        "| se with reference, z |"
    )
    for setting in ("natural", "matched"):
        lines += ["", f"**{setting}**", "", header, "|---|---|---|---|---:|---:|---|---:|---|---|---|"]
        for r in rows:
            if r["setting"] != setting:
                continue
            real = f"{r['n_envs']}x{r['n_steps']}" if r["n_envs"] > 1 else str(r["n_steps"])
            lines.append(
                f"| {r['snapshot_steps']} | {label(r['estimator'])} | {real} | {r['max_pseudo_rollouts'] or '-'} "
                f"| {r['sim_steps']:.0f} | {fmt(r['total_variance'])} "
                f"| {fmt(r['noise_to_signal'])} [{fmt(r['nsr_boot_lo'])}, {fmt(r['nsr_boot_hi'])}] "
                f"| {fmt(r['nsr_x_ksteps'])} | {r['cosine_mean']:.3f} ± {r['cosine_se']:.3f} "
                f"| {r['projection_mean']:.3f} ± {r['projection_se']:.3f} "
                f"| {r['projection_se_total']:.3f}, z {r['projection_z']:+.1f} |"
            )
    lines += [
        "",
        f"Command: `{command}` ({seconds / 60:.1f} min). python {platform.python_version()}, torch {th.__version__}, "
        f"stable-baselines3 {stable_baselines3.__version__}, gymnasium {gym.__version__}, numpy {np.__version__}; "
        "1 torch thread, 2 shared cores, no GPU.",
    ]
    return "\n".join(lines) + "\n"


EN_DASH = "\u2013"


def short(x: float) -> str:
    """Two significant digits, whole numbers from 100 on (the README's condensed cells)."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.2g}"


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """The README's condensed tables: noise-to-signal, cosine and cost per cell, and the bias check per cell."""
    snapshots = sorted({r["snapshot_steps"] for r in rows})
    cell = {(r["setting"], r["estimator"], r["snapshot_steps"]): r for r in rows}
    header = "| estimator | " + " | ".join(
        f"{s} steps (return {cell['reference', 'all_action', s]['policy_return']:.0f})" for s in snapshots
    )
    rule = "|---|" + "---|" * len(snapshots)
    measured = dict.fromkeys(r["estimator"] for r in rows if r["setting"] == "natural")
    order = sorted(measured, key=lambda name: SUMMARY_ORDER.index(name) if name in SUMMARY_ORDER else len(SUMMARY_ORDER))

    def reused(r: dict[str, Any]) -> bool:
        """A matched cell whose draws are the natural ones (no cap, one env)."""
        return r["max_pseudo_rollouts"] == "" and r["n_envs"] == 1

    # matched rows with draws of their own at some snapshot, the larger real batches (the rollout-free ones) first
    own = [name for name in order if not all(reused(cell["matched", name, s]) for s in snapshots)]
    own.sort(key=lambda name: all(cell["matched", name, s]["n_envs"] == 1 for s in snapshots))
    lines: list[str] = []
    for setting in ("natural", "matched"):
        lines += [f"**{setting}**", "", header + " |", rule]
        for name in order:
            cells = []
            for s in snapshots:
                r = cell[setting, name, s]
                text = (
                    f"{short(r['noise_to_signal'])} [{short(r['nsr_boot_lo'])}{EN_DASH}{short(r['nsr_boot_hi'])}] "
                    f"· cos {r['cosine_mean']:.2f} · {r['sim_steps'] / 1000:.1f}k"
                )
                if setting == "matched" and r["max_pseudo_rollouts"] != "":
                    text += f", cap {r['max_pseudo_rollouts']}"
                elif setting == "matched" and r["n_envs"] > 1:
                    text += f", {r['n_envs']}x{r['n_steps']} real"
                elif setting == "matched" and name in ROLLING and name != "arsm":
                    text += " (no cap: under ARSM's budget)"
                cells.append(text)
            lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "**bias check**: projection of the draws' mean on g (1 = unbiased) ± its standard error with the reference's "
        "own error included, and z = (projection - 1) / that error; draws per estimate in brackets",
        "",
        header + " |",
        rule,
    ]
    for setting, names in (("natural", order), ("matched", own)):
        for name in names:
            cells = []
            for s in snapshots:
                r = cell[setting, name, s]
                cells.append(
                    "= natural"
                    if setting == "matched" and reused(r)
                    else f"{r['projection_mean']:.2f} ± {r['projection_se_total']:.2f}, z {r['projection_z']:+.1f} "
                    f"({r['repeats']})"
                )
            title = label(name) + (", matched" if setting == "matched" else "")
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run (2 snapshots, 3 draws, n_steps 64) for tests")
    parser.add_argument("--snapshots", type=str, default=None, help="comma-separated real-step counts, e.g. 0,2048,3328")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--arsm-repeats", type=int, default=None)
    parser.add_argument("--ref-repeats", type=int, default=None)
    add_output(parser, "--out", "", "folder of the results")
    args = parser.parse_args()
    resolve_outputs(parser, args)
    th.set_num_threads(1)
    cfg = QUICK if args.quick else Config()
    if args.snapshots:
        cfg.snapshots = tuple(int(s) for s in args.snapshots.split(","))
    cfg.repeats = args.repeats or cfg.repeats
    cfg.arsm_repeats = args.arsm_repeats or cfg.arsm_repeats
    cfg.ref_repeats = args.ref_repeats or cfg.ref_repeats
    start = time.perf_counter()
    states = train_snapshots(cfg.snapshots, cfg.seed)
    rows: list[dict[str, Any]] = []
    for index, step in enumerate(sorted(states)):
        rows += run_snapshot(index, step, states[step], cfg)
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "gradient_quality.csv")
    plot(rows, args.out / "gradient_quality.png", cfg.n_steps)
    command = "python benchmarks/gradient_quality.py" + (" --quick" if args.quick else "")
    (args.out / "gradient_quality.md").write_text(markdown(rows, cfg, command, seconds))
    (args.out / "gradient_quality_summary.md").write_text(summary_markdown(rows))
    print(f"done in {seconds:.0f} s; wrote {args.out}/gradient_quality{{.csv,.md,.png,_summary.md}}")


if __name__ == "__main__":
    main()
