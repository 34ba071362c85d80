"""What a new user hits first: inexact clones, train-mode rollouts, one-action spaces, VecEnv wrappers, envs
whose reset takes no options, envs without a time limit (issue 12, items 1-5 and 18)."""

from __future__ import annotations

import random
import re
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, VecVideoRecorder

from arsm_rl import ARSM
from arsm_rl.cloning import NotCloneableError, register_cloneable, unverified_parts, verify_snapshots
from envs import RandomMDP

SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=32)


class Walk(gym.Env[np.ndarray, int]):
    """A 1-D walk whose reward noise comes from ``noise()``; ends after 20 steps."""

    observation_space = spaces.Box(-100, 100, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def noise(self) -> float:
        return float(self.np_random.random())

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x, self.t = 0, 0
        return np.array([self.x], dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x += 2 * int(action) - 1
        self.t += 1
        return np.array([self.x], dtype=np.float32), self.x + self.noise(), False, self.t >= 20, {}


class GlobalRandomWalk(Walk):
    """The reward noise comes from Python's global ``random``, which no snapshot captures."""

    def noise(self) -> float:
        return random.random()


# ------------------------------------------------------------------ 1. inexact clones are refused before training


def test_env_with_global_random_state_is_refused() -> None:
    assert unverified_parts(GlobalRandomWalk()) == ["GlobalRandomWalk (generic family)"]
    match = r"not exact: the env draws from Python's random, which no snapshot holds.*register_cloneable.*clone_core_state"
    with pytest.raises(NotCloneableError, match=match):
        ARSM("MlpPolicy", GlobalRandomWalk(), **SMALL)


def test_the_check_leaves_the_training_env_and_global_rngs_alone() -> None:
    env = Walk()
    env.reset(seed=5)
    env_rng = env.np_random.bit_generator.state
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    ARSM("MlpPolicy", env, **SMALL)  # generic family: verified on a scratch copy
    assert env.np_random.bit_generator.state == env_rng and env.x == 0
    assert random.getstate() == python_state and np.array_equal(np.random.get_state()[1], numpy_state)
    with pytest.raises(NotCloneableError):
        verify_snapshots(GlobalRandomWalk())
    assert random.getstate() == python_state


def test_exact_generic_env_trains_and_the_check_can_be_skipped() -> None:
    model = ARSM("MlpPolicy", Walk(), seed=0, **SMALL).learn(64)
    assert model.num_pseudo_steps > 0
    ARSM("MlpPolicy", GlobalRandomWalk(), verify_env=False, **SMALL).learn(64)  # the user vouches for it
    assert unverified_parts(gym.make("CartPole-v1")) == []  # built-ins are not re-checked


def test_user_adapter_is_verified() -> None:
    class Adapted(GlobalRandomWalk):
        pass

    def set_state(env: Adapted, state: tuple[int, int]) -> None:
        env.x, env.t = state

    register_cloneable(Adapted, get_state=lambda env: (env.x, env.t), set_state=set_state)
    with pytest.raises(NotCloneableError, match=r"Adapted \(custom family\)"):
        ARSM("MlpPolicy", Adapted(), **SMALL)


def test_set_env_runs_the_check() -> None:
    model = ARSM("MlpPolicy", Walk(), **SMALL)
    with pytest.raises(NotCloneableError):
        model.set_env(GlobalRandomWalk())


# ------------------------------------------------------------------ 2. every no-grad forward runs in eval mode


class NormExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space: spaces.Box, layer: str) -> None:
        super().__init__(observation_space, features_dim=8)
        extra = th.nn.Dropout(0.5) if layer == "dropout" else th.nn.BatchNorm1d(8)
        self.net = th.nn.Sequential(th.nn.Linear(int(np.prod(observation_space.shape)), 8), extra)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.net(obs)


@pytest.mark.parametrize("layer", ["dropout", "batchnorm"])
def test_collection_and_rollouts_run_in_eval_mode(layer: str) -> None:
    kwargs = dict(features_extractor_class=NormExtractor, features_extractor_kwargs=dict(layer=layer), net_arch=[8])
    model = ARSM("MlpPolicy", "CartPole-v1", seed=0, n_steps=32, policy_kwargs=kwargs)
    modes: list[tuple[bool, bool]] = []  # (grad enabled, training mode) of every forward
    model.policy.features_extractor.register_forward_hook(lambda m, i, o: modes.append((th.is_grad_enabled(), m.training)))
    model.learn(64)  # BatchNorm in training mode crashed on a one-row rollout batch
    no_grad = [training for grad, training in modes if not grad]
    assert model.num_pseudo_steps > 0 and len(no_grad) > 64
    assert not any(no_grad), "a no-grad forward (collection or rollout) ran in training mode"
    assert [training for grad, training in modes if grad] == [True, True]  # the gradient's forward, once per update


# ------------------------------------------------------------------ 3. one-action spaces


@pytest.mark.parametrize("space", [spaces.Discrete(1), spaces.MultiDiscrete([1]), spaces.MultiDiscrete([1, 1])])
def test_one_action_space_has_zero_gradient_and_no_rollouts(space: spaces.Space) -> None:
    class OneAction(Walk):
        action_space = space

        def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
            return super().step(0)

    model = ARSM("MlpPolicy", OneAction(), seed=0, **SMALL)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(64)
    assert model.num_pseudo_steps == model.logger.name_to_value["rollout/pseudo_rollouts"] == 0
    assert all(th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    action, _ = model.predict(np.zeros(1, dtype=np.float32))
    assert space.contains(action)


# ------------------------------------------------------------------ 4. observation-preserving VecEnv wrappers


def test_vec_video_recorder_passes_through(tmp_path: Any) -> None:
    venv = DummyVecEnv([lambda: gym.make("CartPole-v1", render_mode="rgb_array")])
    recorder = VecVideoRecorder(venv, str(tmp_path), record_video_trigger=lambda step: False, video_length=5)
    model = ARSM("MlpPolicy", recorder, seed=0, **SMALL).learn(64)
    assert model.num_pseudo_steps > 0
    recorder.close()


# ------------------------------------------------------------------ 5. envs whose reset takes no options


class NoOptionsWalk(Walk):
    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict]:  # type: ignore[override]
        return super().reset(seed=seed)


class NoOptionsReplayWalk(NoOptionsWalk):
    pass


def test_reset_without_options() -> None:
    register_cloneable(NoOptionsReplayWalk, replay=True)  # restores reset the env: replay must not pass options
    for env in (NoOptionsWalk(), NoOptionsReplayWalk()):
        model = ARSM("MlpPolicy", env, seed=0, **SMALL).learn(64)
        assert model.num_pseudo_steps > 0


# ------------------------------------------------------------------ 18. envs without a time limit


def test_env_without_time_limit_is_refused_unless_its_episodes_end() -> None:
    env = gym.make("CliffWalking-v1")  # no max_episode_steps: a random walk takes thousands of steps
    with pytest.raises(ValueError, match=r"CliffWalking-v1 has no time limit .*TimeLimit.*pseudo_horizon"):
        ARSM("MlpPolicy", env, **SMALL)
    ARSM("MlpPolicy", gym.make("CliffWalking-v1", max_episode_steps=100), **SMALL)
    ARSM("MlpPolicy", gym.make("CliffWalking-v1"), pseudo_horizon=20, **SMALL)
    ARSM("MlpPolicy", RandomMDP(), **SMALL)  # no time limit, but its episodes end on their own


# ------------------------------------------------------------------ 17. observation spaces SB3 cannot encode


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        (
            spaces.Tuple([spaces.Discrete(3), spaces.Discrete(2)]),
            "Tuple observations: wrap the env in gymnasium.wrappers.FlattenObservation",
        ),
        (spaces.Dict({"image": spaces.Box(0, 1, (2,)), "mission": spaces.Text(10)}), "text part 'mission'"),
        (spaces.Dict({"a": spaces.Dict({"b": spaces.Discrete(2)})}), "nested"),
    ],
)
def test_unsupported_observation_space_is_refused(space: spaces.Space, fragment: str) -> None:
    """With SB3's exception type (what users and SB3's tests catch) and a message that names the fix."""

    class Odd(Walk):
        observation_space = space

    if "text" not in fragment:  # SB3 itself fails on a Text part with an unrelated TypeError
        with pytest.raises(NotImplementedError):
            PPO("MlpPolicy", Odd())
    with pytest.raises(NotImplementedError, match=re.escape(fragment)):
        ARSM("MlpPolicy", Odd(), **SMALL)
    flat = gym.wrappers.FlattenObservation(gym.make("Blackjack-v1"))  # the wrapper the message names
    assert ARSM("MlpPolicy", flat, **SMALL).observation_space.shape == (45,)
