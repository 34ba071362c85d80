"""The mean ARSM update equals the exact policy gradient of a small random MDP (direction and size).

With gamma = 1, plain SGD with learning rate 1 and a linear policy on one-hot states, one update
moves the logits table by (1 / N) sum_t g_t over its N real steps. Its expectation over a long
stream of episodes is the exact gradient dJ/dlogits divided by the expected episode length.

Every estimator is checked in CI, direction (cosine) and size (norm ratio), with the budgets of
``CI_BUDGET``. Measured with these seeds, the standard error of the mean update's component along
the exact gradient is 0.01-0.03 of the exact norm, so the ratio bounds 0.85 and 1.15 are at least
5 standard errors from 1 and from a halved (0.5) or doubled (2) update; the noise across it (0.03-0.10
of the norm) keeps the cosine above 0.99, far from the bound 0.95 and from a reversed update (-1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from arsm_rl import ARSM, ESTIMATORS
from envs import RandomMDP

th.set_num_threads(1)


def mean_update(
    estimator: str,
    n_calls: int,
    n_steps: int,
    seed: int = 0,
    n_envs: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    prepare: Callable[[ARSM, np.ndarray], None] | None = None,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Average change of the logits table over ``n_calls`` updates from the same parameters (the env
    runs on across calls), and the exact gradient there divided by the expected episode length.
    With ``n_envs > 1`` an update averages ``n_steps * n_envs`` steps of a ``DummyVecEnv``.
    ``env_kwargs`` go to the 3-state, 3-action :class:`RandomMDP` (e.g. ``n_masked``). ``prepare(model, table)`` is
    called with the policy's (S, A) logits table once it is set, before the starting parameters are taken.
    """
    env_kwargs = dict(n_states=3, n_actions=3, **(env_kwargs or {}))
    env = RandomMDP(**env_kwargs) if n_envs == 1 else make_vec_env(RandomMDP, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    model = ARSM(
        "MlpPolicy",
        env,
        estimator=estimator,
        n_steps=n_steps,
        gamma=1.0,
        learning_rate=1.0,
        max_grad_norm=None,
        policy_kwargs=dict(net_arch=[], optimizer_class=th.optim.SGD, optimizer_kwargs={}),
        seed=seed,
        **kwargs,
    )
    linear = model.policy.logits_net[0]
    with th.no_grad():  # a clearly non-uniform policy, logits[s] = W[:, s] + b
        linear.weight.copy_(th.as_tensor(np.random.default_rng(1).normal(size=(3, 3))))
        linear.bias.zero_()
    if prepare is not None:
        prepare(model, linear.weight.detach().numpy().T.copy())
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    deltas = []
    for _ in range(n_calls):
        model.learn(n_steps * n_envs, reset_num_timesteps=False)
        deltas.append((linear.weight.detach() - start["logits_net.0.weight"]).numpy().copy())
        model.policy.load_state_dict(start)
    table = start["logits_net.0.weight"].numpy().T  # (S, A) logits per state
    gradient, visits = RandomMDP(**env_kwargs).policy_gradient(table, gamma=1.0)
    return np.mean(deltas, axis=0), gradient.T / visits.sum()  # (A, S), like W


def cosine_and_ratio(update: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """Cosine between the mean update and the exact gradient, and the ratio of their norms."""
    norm_update, norm_exact = float(np.linalg.norm(update)), float(np.linalg.norm(exact))
    return float((update * exact).sum()) / norm_update / norm_exact, norm_update / norm_exact


#: updates per estimator in CI: (n_calls, n_steps per env) with 16 envs, 8,000 or 32,000 real steps in all. Standard
#: error of the component along the exact gradient, over its norm: arsm 0.025, ars 0.031, rloo 0.022, all_action
#: 0.008, ar 0.028, reinforce 0.021 (the estimators without a baseline get four times the steps).
CI_BUDGET = {
    "arsm": (10, 50),
    "ars": (10, 50),
    "rloo": (10, 50),
    "all_action": (10, 50),
    "ar": (20, 100),
    "reinforce": (20, 100),
}


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_mean_update_is_the_exact_gradient(estimator: str) -> None:
    """Every registered estimator's mean update points along the exact gradient (cosine >= 0.95) with its size
    (ratio 1 +- 0.15); one registered without a CI_BUDGET entry fails here."""
    n_calls, n_steps = CI_BUDGET[estimator]
    update, exact = mean_update(estimator, n_calls=n_calls, n_steps=n_steps, n_envs=16)
    cosine, ratio = cosine_and_ratio(update, exact)
    assert cosine >= 0.95, cosine
    assert ratio == pytest.approx(1.0, abs=0.15), ratio


@pytest.mark.parametrize("budget_sampling", ["update", "step"])
def test_budgeted_update_stays_unbiased(budget_sampling: str) -> None:
    """Over budget, sub-sampled steps are reweighted (Horvitz-Thompson): still the exact gradient on average, whether
    a fixed-size subset is drawn after the update's steps or each step is kept with a probability fixed before it."""
    update, exact = mean_update("arsm", n_calls=30, n_steps=200, max_pseudo_rollouts=20, budget_sampling=budget_sampling)
    cosine, ratio = cosine_and_ratio(update, exact)
    assert cosine >= 0.9, cosine
    # Without the reweighting the update would shrink to about budget / informative steps (~0.15).
    assert ratio == pytest.approx(1.0, abs=0.15), ratio


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["ars", "ar", "reinforce"])
def test_mean_update_is_the_exact_gradient_high_variance_estimators(estimator: str) -> None:
    """The one-env, long-run version of the CI check for the estimators without a baseline."""
    update, exact = mean_update(estimator, n_calls=100, n_steps=400)
    cosine, ratio = cosine_and_ratio(update, exact)
    assert cosine >= 0.95, cosine
    assert ratio == pytest.approx(1.0, abs=0.15), ratio
