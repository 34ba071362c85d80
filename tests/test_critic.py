"""``ARSM(action_values="critic" | "bootstrap")``: the learned action-value critic (CARSM) and bootstrapped short rollouts.

Checked by numbers: with the exact action values in the critic's place, the critic path's mean update is the exact
policy gradient of the tabular MDP; a learned critic converges to the exact values; bootstrap beyond the episode is
``"rollout"`` bit for bit, and its closings are the hand-computed ones; sampled state values are unbiased.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvMultiDiscrete, SimpleMultiObsEnv
from stable_baselines3.common.torch_layers import FlattenExtractor
from test_exact_gradient import cosine_and_ratio, mean_update
from torch import nn

from arsm_rl import ARSM, UpdateData
from arsm_rl.cloning import NotCloneableError
from arsm_rl.critic import EXACT_JOINT, state_values, update_transitions
from arsm_rl.rollouts import true_values
from envs import RandomMDP

th.set_num_threads(1)

SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=32, seed=0)


class ExactQ(nn.Module):
    """A table of action values on one-hot observations, in the critic's place (``ActionValueNet``'s interface)."""

    def __init__(self, observation_space: spaces.Space, table: np.ndarray) -> None:
        super().__init__()
        self.features_extractor = FlattenExtractor(observation_space)
        self.table: th.Tensor
        self.register_buffer("table", th.as_tensor(table, dtype=th.float32))

    def forward(self, features: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return th.gather(features @ self.table, 1, actions[..., 0])


def plug_exact_values(model: ARSM, logits: np.ndarray) -> None:
    """Put the tabular MDP's exact Q of the policy ``logits`` where the critic would be."""
    model.policy.critic = ExactQ(model.observation_space, RandomMDP(n_states=3, n_actions=3).action_values(logits))  # type: ignore[assignment]


#: updates per estimator (n_calls, n_steps per env, 16 envs), as test_exact_gradient's CI_BUDGET: the estimators
#: without a baseline get four times the steps. (cosine, norm ratio) measured with these seeds: arsm (1.000, 1.00),
#: ars (0.999, 1.01), rloo (1.000, 1.00), all_action (1.000, 1.00), ar (0.997, 0.96), reinforce (0.999, 1.00).
BUDGET = {"arsm": (10, 50), "ars": (10, 50), "rloo": (10, 50), "all_action": (10, 50), "ar": (20, 100), "reinforce": (20, 100)}


@pytest.mark.parametrize("estimator", list(BUDGET))
def test_critic_path_with_exact_values_is_the_exact_gradient(estimator: str) -> None:
    """Every estimator's mean update, with the exact Q(s, a) valuing every selected action (the true one too), points
    along the exact policy gradient (cosine >= 0.99) with its size (ratio 1 +- 0.1): the critic path adds no bias of
    its own. (``critic_gradient_steps=0`` keeps the plugged values.)"""
    n_calls, n_steps = BUDGET[estimator]
    update, exact = mean_update(estimator, n_calls=n_calls, n_steps=n_steps, n_envs=16, prepare=plug_exact_values,
                                action_values="critic", critic_gradient_steps=0)  # fmt: skip
    cosine, ratio = cosine_and_ratio(update, exact)
    assert cosine >= 0.99, cosine
    assert ratio == pytest.approx(1.0, abs=0.1), ratio


def test_learned_critic_converges_to_the_exact_action_values() -> None:
    """With the policy held still (learning rate 0), the critic learned by expected SARSA from real transitions of the
    tabular MDP reaches its exact Q(s, a) (gamma 0.9) within 0.05 of the values' range at every (s, a); measured 0.021
    (seed 1: 0.019), with its learning rate a schedule decaying to 0 (a constant 3e-3 hovers at 0.02-0.05)."""
    env = make_vec_env(RandomMDP, n_envs=8, seed=0, env_kwargs=dict(n_states=3, n_actions=3))
    model = ARSM("MlpPolicy", env, action_values="critic", learning_rate=0.0, gamma=0.9, n_steps=32, seed=0,
                 critic_learning_rate=lambda progress: 3e-3 * progress, critic_gradient_steps=25)  # fmt: skip
    model.learn(32 * 8 * 60)
    states = th.eye(3)
    with th.no_grad():
        logits = model.policy(states).numpy()
        learned = model.policy.q_values(states, th.arange(3).reshape(1, 3, 1).expand(3, 3, 1)).numpy()
    exact = RandomMDP(n_states=3, n_actions=3).action_values(logits, gamma=0.9)
    error = np.abs(learned - exact).max() / np.ptp(exact)
    assert error <= 0.05, (error, learned, exact)


def test_bootstrap_beyond_the_episode_is_rollout_bit_for_bit() -> None:
    """Every CartPole episode here ends within 40 steps, so a 50-step horizon never cuts: bootstrap trains the actor
    exactly as rollout does (tails included: 2 envs, 32-step updates), with the same simulator steps."""
    models = {}
    for mode in ("rollout", "bootstrap"):
        env = make_vec_env(lambda: gym.make("CartPole-v1", max_episode_steps=40), n_envs=2, seed=0)
        models[mode] = ARSM("MlpPolicy", env, action_values=mode, pseudo_horizon=50, n_steps=32, seed=0).learn(512)
    rollout, bootstrap = (models[mode].policy.state_dict() for mode in ("rollout", "bootstrap"))
    assert set(rollout) < set(bootstrap)  # the bootstrap policy also holds its critic
    for key, value in rollout.items():
        assert th.equal(value, bootstrap[key]), key
    assert models["rollout"].num_pseudo_steps == models["bootstrap"].num_pseudo_steps > 0
    cut = ARSM("MlpPolicy", "CartPole-v1", action_values="bootstrap", pseudo_horizon=5, n_steps=32, seed=0).learn(64)
    assert not th.equal(cut.policy.logits_net[0].weight, models["rollout"].policy.logits_net[0].weight)


def test_true_values_close_cut_horizons() -> None:
    """Hand-computed: gamma 0.5, horizon 2. Env 0 runs on past the data (its tail: rewards 5, 6, cut, V 70); env 1's
    episode ends at step 1, so its first two steps are not closed."""
    rewards = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    dones = np.zeros((4, 2), dtype=bool)
    dones[1, 1] = True
    closings = np.array([[10.0, 1.0], [20.0, 2.0], [30.0, 3.0], [40.0, 4.0], [50.0, 5.0]])  # V(s_0) ... V(s_4)
    values = true_values(rewards, dones, {0: np.array([5.0, 6.0])}, 0.5, 2, closings, {0: 70.0})
    expected_0 = [1 + 1 + 0.25 * 30, 2 + 1.5 + 0.25 * 40, 3 + 2 + 0.25 * 50, 4 + 2.5 + 1.5 + 0.125 * 70]
    np.testing.assert_allclose(values[:, 0], expected_0)
    np.testing.assert_allclose(values[:3, 1], [1 + 1, 2, 3 + 2 + 0.25 * 5])
    assert np.isnan(values[3, 1])  # past the data, no tail: unknown, as without closings


def test_sampled_state_values_are_unbiased() -> None:
    """Over more than EXACT_JOINT joint actions (9 x 9 = 81), V(s) is the mean of Q over joint actions drawn from the
    policy: averaged over 4,000 draws at one state it equals the exact sum over the 81 actions (4 standard errors)."""
    model = ARSM("MlpPolicy", IdentityEnvMultiDiscrete(9), action_values="critic", **SMALL)
    assert model.policy.critic is not None and 81 > EXACT_JOINT
    with th.no_grad():
        for p in model.policy.critic.q_net.parameters():  # a critic with a clear spread of values
            p.normal_(0.0, 1.0)
        obs = np.zeros((4000, 2), dtype=np.float32)
        obs[:, 0] = 1.0
        sampled = state_values(model.policy, model.policy.joint, obs, None, np.random.default_rng(0)).numpy()
        actions = th.as_tensor(np.stack(np.meshgrid(np.arange(9), np.arange(9), indexing="ij"), -1).reshape(1, 81, 2))
        q = model.policy.q_values(th.as_tensor(obs[:1]), actions)[0]
        probs = th.softmax(model.policy(th.as_tensor(obs[:1])).reshape(2, 9), -1)
        exact = float((probs[0][actions[0, :, 0]] * probs[1][actions[0, :, 1]] * q).sum())
    assert abs(sampled.mean() - exact) <= 4 * sampled.std() / np.sqrt(len(sampled)), (sampled.mean(), exact)


def test_critic_trains_where_rollouts_are_refused() -> None:
    """SB3's SimpleMultiObsEnv draws from numpy's global stream: "rollout" refuses it, naming the critic; the critic
    clones nothing and trains on it (Dict observations), spending no simulator step."""
    with pytest.raises(NotCloneableError, match=r"action_values='critic'"):
        ARSM("MultiInputPolicy", SimpleMultiObsEnv(), **SMALL)
    model = ARSM("MultiInputPolicy", SimpleMultiObsEnv(), action_values="critic", **SMALL).learn(96)
    assert model.num_timesteps == 96 and model.num_pseudo_steps == 0
    logged = model.logger.name_to_value
    assert logged["train/critic_loss"] > 0 and logged["train/critic_td_error"] > 0 and logged["train/value_spread"] > 0


@pytest.mark.parametrize("estimator", ["arsm", "rloo", "reinforce"])
def test_critic_on_multidiscrete(estimator: str) -> None:
    """A MultiDiscrete space of several dimensions: the critic values its joint actions one by one (81 of them)."""
    model = ARSM("MlpPolicy", IdentityEnvMultiDiscrete(9), action_values="critic", estimator=estimator, **SMALL).learn(96)
    assert model.num_pseudo_steps == 0 and np.isfinite(model.logger.name_to_value["train/critic_loss"])


def test_critic_is_saved_loaded_and_set(tmp_path: Path) -> None:
    """The critic, its target and its optimizer's state go with the model (save, load, set_parameters); a rollout
    model's file holds none."""
    model = ARSM("MlpPolicy", "CartPole-v1", action_values="critic", **SMALL).learn(96)
    model.save(tmp_path / "critic")
    loaded = ARSM.load(tmp_path / "critic", env=model.get_env())
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert any(key.startswith("critic.") for key in state) and any(key.startswith("critic_target.") for key in state)
    assert state.keys() == loaded_state.keys() and all(th.equal(state[key], loaded_state[key]) for key in state)
    assert model.policy.critic_optimizer is not None and loaded.policy.critic_optimizer is not None
    moments = [s["exp_avg"] for s in model.policy.critic_optimizer.state_dict()["state"].values()]
    loaded_moments = [s["exp_avg"] for s in loaded.policy.critic_optimizer.state_dict()["state"].values()]
    assert len(moments) > 0 and all(th.equal(a, b) for a, b in zip(moments, loaded_moments, strict=True))
    fresh = ARSM("MlpPolicy", "CartPole-v1", action_values="critic", **{**SMALL, "seed": 1})
    fresh.set_parameters(str(tmp_path / "critic"))
    assert all(th.equal(state[key], fresh.policy.state_dict()[key]) for key in state)
    loaded.learn(32)  # and trains on
    ARSM("MlpPolicy", "CartPole-v1", **SMALL).save(tmp_path / "rollout")
    rollout = ARSM.load(tmp_path / "rollout")
    assert rollout.policy.critic is None and not any("critic" in key for key in rollout.policy.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(action_values="crtic"), r"action_values must be one of 'rollout', 'critic', 'bootstrap', got 'crtic'"),
        (dict(action_values="bootstrap"), r"action_values='bootstrap' cuts rollouts at pseudo_horizon steps"),
        (dict(action_values="critic", critic_tau=2.0), r"critic_tau in \[0, 1\]"),
        (dict(action_values="critic", n_rollout_workers=2), r"rollout workers would have nothing to do"),
    ],
)
def test_bad_critic_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ARSM("MlpPolicy", "CartPole-v1", **kwargs)


def test_bootstrap_refuses_action_masks() -> None:
    with pytest.raises(ValueError, match=r"does not read action masks at the states where rollouts are cut"):
        ARSM("MlpPolicy", RandomMDP(n_masked=1), action_values="bootstrap", pseudo_horizon=5)
    ARSM("MlpPolicy", RandomMDP(n_masked=1), action_values="critic", **SMALL).learn(64)  # the critic reads them


def test_update_transitions_bootstrap_from_the_right_state() -> None:
    """One sub-env, three steps: the episode is truncated by its time limit at step 0 (bootstrap from the terminal
    observation, not the reset one) and terminated at step 1 (no bootstrap); step 2 bootstraps from the observation
    after the data."""
    collected = UpdateData(
        obs=np.array([[[0.0]], [[1.0]], [[2.0]]]), logits=np.zeros((3, 1, 2), np.float32),
        noise=np.zeros((3, 1, 1, 2), np.float32), actions=np.array([[[0]], [[1]], [[0]]]),
        rewards=np.array([[1.0], [2.0], [3.0]]), dones=np.array([[True], [True], [False]]), branches=[None] * 3,
        tail_branches={}, tail_obs=np.array([[3.0]]), terminated=np.array([[False], [True], [False]]),
        final_obs={0: np.array([9.0])},
    )  # fmt: skip
    obs, actions, rewards, next_obs, terminated, masks = update_transitions(collected)
    np.testing.assert_array_equal(next_obs[:, 0], [9.0, 2.0, 3.0])  # row 1's next is the reset obs: unused, terminated
    np.testing.assert_array_equal(terminated, [False, True, False])
    np.testing.assert_array_equal(obs[:, 0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(actions[:, 0], [0, 1, 0])
    np.testing.assert_array_equal(rewards, [1.0, 2.0, 3.0])
    assert masks is None
