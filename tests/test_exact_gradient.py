"""The mean ARSM update equals the exact policy gradient of a small random MDP (direction and size).

With gamma = 1, plain SGD with learning rate 1 and a linear policy on one-hot states, one update
moves the logits table by (1 / N) sum_t g_t over its N real steps. Its expectation over a long
stream of episodes is the exact gradient dJ/dlogits divided by the expected episode length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th

from arsm_rl import ARSM
from envs import RandomMDP


def mean_update(estimator: str, n_calls: int, n_steps: int, seed: int = 0, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """
    Average change of the logits table over ``n_calls`` updates from the same parameters (the env
    runs on across calls), and the exact gradient there divided by the expected episode length.
    """
    env = RandomMDP(n_states=3, n_actions=3)
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
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    deltas = []
    for _ in range(n_calls):
        model.learn(n_steps, reset_num_timesteps=False)
        deltas.append((linear.weight.detach() - start["logits_net.0.weight"]).numpy().copy())
        model.policy.load_state_dict(start)
    table = start["logits_net.0.weight"].numpy().T  # (S, A) logits per state
    gradient, visits = env.policy_gradient(table, gamma=1.0)
    return np.mean(deltas, axis=0), gradient.T / visits.sum()  # (A, S), like W


@pytest.mark.parametrize("estimator", ["arsm", "rloo", "all_action"])
def test_mean_update_is_the_exact_gradient(estimator: str) -> None:
    update, exact = mean_update(estimator, n_calls=20, n_steps=200)
    cosine = (update * exact).sum() / np.linalg.norm(update) / np.linalg.norm(exact)
    assert cosine >= 0.99, cosine
    assert np.linalg.norm(update) / np.linalg.norm(exact) == pytest.approx(1.0, abs=0.1)


def test_budgeted_update_stays_unbiased() -> None:
    """Over budget, sub-sampled steps are reweighted (Horvitz-Thompson): still the exact gradient on average."""
    update, exact = mean_update("arsm", n_calls=30, n_steps=200, max_pseudo_rollouts=20)
    cosine = (update * exact).sum() / np.linalg.norm(update) / np.linalg.norm(exact)
    assert cosine >= 0.9, cosine
    # Without the reweighting the update would shrink to about budget / informative steps (~0.15).
    assert np.linalg.norm(update) / np.linalg.norm(exact) == pytest.approx(1.0, abs=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["ars", "ar", "reinforce"])
def test_mean_update_is_the_exact_gradient_high_variance_estimators(estimator: str) -> None:
    update, exact = mean_update(estimator, n_calls=100, n_steps=400)
    cosine = (update * exact).sum() / np.linalg.norm(update) / np.linalg.norm(exact)
    assert cosine >= 0.95, cosine
