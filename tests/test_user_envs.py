"""Envs as SB3 users write them (and as SB3's own tests do) train, with exact snapshots: envs that draw from their own
spaces, wrappers that do, MultiBinary actions, rendering envs under a video recorder, the actor-critic ``net_arch``."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecVideoRecorder

from arsm_rl import ARSM, ForkVecEnv
from arsm_rl.cloning import NotCloneableError, check_cloneable, clone_state, family_of, register_cloneable, restore_state

SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=32, seed=0)


class Grid(gym.Env[int, int]):
    """A user's toy env: a 4x4 grid whose start is drawn with ``self.observation_space.sample()``; the goal is cell 15."""

    def __init__(self) -> None:
        self.observation_space = spaces.Discrete(16)
        self.action_space = spaces.Discrete(4)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.cell = int(self.observation_space.sample())
        return self.cell, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        row, col = divmod(self.cell, 4)
        d_row, d_col = [(0, 1), (1, 0), (0, -1), (-1, 0)][int(action)]
        self.cell = min(max(row + d_row, 0), 3) * 4 + min(max(col + d_col, 0), 3)
        return self.cell, float(self.cell == 15), self.cell == 15, False, {}


class ReplayGrid(Grid):
    """The same, restored by replaying its episode (``register_cloneable(..., replay=True)``)."""


class DummyDictEnv(gym.Env[dict, int]):
    """SB3's test_dict_env pattern: Dict observations (image, vector, discrete) drawn from the observation space."""

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {"img": spaces.Box(0, 255, (36, 36, 1), np.uint8), "vec": spaces.Box(-1, 1, (3,)), "disc": spaces.Discrete(4)}
        )
        self.action_space = spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        self.t += 1
        obs = self.observation_space.sample()
        return obs, float(action == obs["disc"] % 3), self.t >= 20, False, {}


class DummySuccessEnv(gym.Env[int, int]):
    """SB3's test_logger pattern: observations from the space's RNG, ``is_success`` in the last info."""

    def __init__(self) -> None:
        self.observation_space = spaces.Discrete(5)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.t = 0
        return int(self.observation_space.sample()), {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        self.t += 1
        done = self.t >= 10
        return int(self.observation_space.sample()), float(action), done, False, {"is_success": done}


class TimeDelayEnv(gym.Env[np.ndarray, int]):
    """SB3's test_vec_monitor pattern: each step sleeps and returns a sample of the observation space."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-20.0, 20.0, (4,))
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        time.sleep(1e-5)
        self.t += 1
        return self.observation_space.sample(), float(action), self.t >= 5, False, {}


class LateDraw(Grid):
    """Draws from its action space for the first time on its fifth step (a wind gust), after any snapshot of step 0."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.cell, self.t = 0, 0
        return self.cell, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        self.t += 1
        return super().step(int(self.action_space.sample()) if self.t >= 5 else action)


class NestedObservations(gym.Env[dict, int]):
    """Draws observations from a nested Dict/Tuple space (each subspace has its own generator), flattened for SB3."""

    def __init__(self) -> None:
        self.observation_space = spaces.Dict({"a": spaces.Tuple([spaces.Discrete(4), spaces.Dict({"b": spaces.Box(0, 1)})])})
        self.action_space = spaces.Discrete(4)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.obs = self.observation_space.sample()
        return self.obs, {}

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        reward = float(action == self.obs["a"][0])
        self.t += 1
        self.obs = self.observation_space.sample()
        return self.obs, reward, self.t >= 20, False, {}


class NoisyObservation(gym.ObservationWrapper[Any, int, Any]):
    """A wrapper with its own observation space that it draws noise from."""

    def __init__(self, env: gym.Env[Any, int]) -> None:
        super().__init__(env)
        self.observation_space = spaces.Box(-1.0, 1.0, (2,))

    def observation(self, observation: Any) -> np.ndarray:
        return self.observation_space.sample() * 0.1 + np.float32(observation) / 16


# SB3's test envs and users' habits: every one of these was refused ("obs diverged ... after restore") or failed
SAMPLING_ENVS = {
    "FakeImageEnv": lambda: gym.wrappers.TimeLimit(FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), 20),
    "DummyDictEnv": DummyDictEnv,
    "IdentityEnv": lambda: IdentityEnv(4, ep_length=20),
    "IdentityEnvMultiBinary": lambda: IdentityEnvMultiBinary(3, ep_length=20),
    "IdentityEnvMultiDiscrete": lambda: IdentityEnvMultiDiscrete(3, ep_length=20),
    "DummySuccessEnv": DummySuccessEnv,
    "TimeDelayEnv": TimeDelayEnv,
    "Grid": lambda: gym.wrappers.TimeLimit(Grid(), 50),
    "LateDraw": lambda: gym.wrappers.TimeLimit(LateDraw(), 50),
    "NestedObservations": lambda: gym.wrappers.FlattenObservation(NestedObservations()),
    "NoisyObservation": lambda: NoisyObservation(gym.wrappers.TimeLimit(Grid(), 50)),
}


@pytest.mark.parametrize("name", list(SAMPLING_ENVS))
def test_envs_that_draw_from_their_spaces_clone_exactly_and_train(name: str) -> None:
    """check_cloneable's thorough test (a twin, pickling, 200 compared steps with resets) passes, and ARSM trains."""
    check_cloneable(SAMPLING_ENVS[name]())
    policy = {"FakeImageEnv": "CnnPolicy", "DummyDictEnv": "MultiInputPolicy"}.get(name, "MlpPolicy")
    kwargs: dict[str, Any] = dict(SMALL)
    if name == "FakeImageEnv":
        kwargs["policy_kwargs"] = dict(net_arch=[16], features_extractor_kwargs=dict(features_dim=16))
    model = ARSM(policy, SAMPLING_ENVS[name](), pseudo_horizon=10, max_pseudo_rollouts=16, **kwargs).learn(64)
    assert model.num_pseudo_steps > 0


def test_env_that_draws_from_a_global_rng_is_refused_and_trains_in_forks() -> None:
    """SB3's SimpleMultiObsEnv starts from ``np.random.randint``: the process's stream, which no snapshot holds (a short
    check may not see its restores diverge, so the check also looks whether the env drew from it); forks copy it."""
    with pytest.raises(NotCloneableError, match=r"draws from numpy's global np\.random.*ForkVecEnv"):
        ARSM("MultiInputPolicy", SimpleMultiObsEnv(), **SMALL)
    env = make_vec_env(lambda: gym.wrappers.TimeLimit(SimpleMultiObsEnv(), 50), vec_env_cls=ForkVecEnv)
    model = ARSM("MultiInputPolicy", env, pseudo_horizon=10, max_pseudo_rollouts=8, **SMALL).learn(32)
    assert model.num_pseudo_steps > 0
    env.close()


def test_snapshot_before_the_first_draw_restores_the_draws() -> None:
    """A space that has drawn nothing when the snapshot is taken gets its generator then, so restores replay its draws."""
    env = gym.wrappers.TimeLimit(LateDraw(), 50)
    env.reset(seed=0)
    assert env.unwrapped.action_space._np_random is None  # nothing drawn yet: the generator would come from entropy
    snapshot = clone_state(env)
    runs = []
    for _ in range(3):
        restore_state(env, snapshot)
        runs.append([env.step(0)[0] for _ in range(12)])
    assert runs[0] == runs[1] == runs[2] and len(set(runs[0][4:])) > 1


def test_replayed_env_that_draws_at_reset() -> None:
    """The replay family records the spaces' generators at each reset, so a replayed reset draws the same start."""
    register_cloneable(ReplayGrid, replay=True)
    assert family_of(ReplayGrid()) == "replay"
    check_cloneable(gym.wrappers.TimeLimit(ReplayGrid(), 50))


def test_user_grid_trains_the_same_with_rollout_workers() -> None:
    """Snapshots with the spaces' generators go to worker processes: the same parameters as without workers."""

    def params(workers: int) -> list[np.ndarray]:
        env = gym.wrappers.TimeLimit(Grid(), 50)
        env.observation_space.seed(1)  # the starts depend on it, not on the env's seed
        model = ARSM("MlpPolicy", env, n_rollout_workers=workers, **SMALL).learn(96)
        return [p.detach().numpy().copy() for p in model.policy.parameters()]

    for a, b in zip(params(0), params(1), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("env_class", [IdentityEnv, IdentityEnvMultiDiscrete, IdentityEnvMultiBinary])
def test_identity(env_class: type) -> None:
    """SB3's test_identity, as its algorithms pass it: every step's action is the observation (MultiBinary included)."""
    env = DummyVecEnv([lambda: env_class(3, ep_length=20)])
    model = ARSM("MlpPolicy", env, n_steps=64, learning_rate=0.02, gamma=0.4, pseudo_horizon=3, seed=3).learn(1500)
    evaluate_policy(model, env, n_eval_episodes=20, reward_threshold=19.0, warn=False)


def test_video_recorder_on_a_rendering_env(tmp_path: Any) -> None:
    """SB3's test_video_recorder: pygame's render state (Clock, Surface) is neither copied into scratch envs nor sent to
    workers, and the recorder writes its videos."""
    env = make_vec_env("CartPole-v1", n_envs=2, env_kwargs={"render_mode": "rgb_array"})
    env = VecVideoRecorder(env, str(tmp_path), record_video_trigger=lambda step: step % 50 == 0, video_length=10)
    model = ARSM("MlpPolicy", env, n_rollout_workers=1, pseudo_horizon=20, max_pseudo_rollouts=16, **SMALL).learn(128)
    env.close()
    assert model.num_pseudo_steps > 0 and sorted(p.suffix for p in tmp_path.iterdir()) == [".mp4"] * 2


def test_rendered_toy_text_env_trains() -> None:
    """FrozenLake keeps its pygame images in attributes of other names: they are left out of copies too."""
    env = gym.make("FrozenLake-v1", render_mode="rgb_array")
    env.reset(seed=0)
    env.render()
    model = ARSM("MlpPolicy", env, n_rollout_workers=1, **SMALL).learn(64)
    assert model.num_pseudo_steps > 0 and env.unwrapped.window_surface is not None


def test_subproc_vec_env_without_make_cloneable_names_it() -> None:
    env = make_vec_env("LunarLander-v3", n_envs=2, vec_env_cls=SubprocVecEnv)
    try:
        with pytest.raises(TypeError, match=r"wrapper_class=(arsm_rl\.)?make_cloneable"):
            ARSM("MlpPolicy", env, **SMALL)
    finally:
        env.close()


def test_actor_critic_net_arch() -> None:
    """The PPO/A2C habit ``net_arch=dict(pi=..., vf=...)`` builds the ``pi`` network; other keys get one line."""
    model = ARSM("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=dict(pi=[32, 32], vf=[8])), n_steps=32)
    assert [m.out_features for m in model.policy.logits_net if hasattr(m, "out_features")] == [32, 32, 2]
    assert model.policy.net_arch == [32, 32]
    with pytest.raises(ValueError, match=r"there is no value network"):
        ARSM("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=dict(qf=[32])))


def test_costly_defaults_are_announced_once() -> None:
    """Taxi with the unbounded defaults spends hundreds of simulator steps per real step: the first update says so and
    names the knobs; bounded settings and cheap envs (CartPole) train silently."""
    model = ARSM("MlpPolicy", "Taxi-v4", n_steps=32, seed=0)
    with pytest.warns(UserWarning, match=r"first update spent \d+ simulator steps per real step.*max_pseudo_rollouts"):
        model.learn(32)
    assert model.num_pseudo_steps > 100 * 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.learn(32, reset_num_timesteps=False)  # once per model
        ARSM("MlpPolicy", "Taxi-v4", n_steps=32, max_pseudo_rollouts=8, seed=0).learn(32)
        ARSM("MlpPolicy", "CartPole-v1", n_steps=32, seed=0).learn(32)


def test_ale_ids_from_python() -> None:
    """``ARSM("CnnPolicy", "ALE/Breakout-v5")`` finds the id without ``import ale_py``, as train.py does (in a fresh
    interpreter: here other tests may have registered ALE already)."""
    code = (
        "import sys; from arsm_rl import ARSM; assert 'ale_py' not in sys.modules; "
        "print(ARSM('CnnPolicy', 'ALE/Breakout-v5', n_steps=4, verify_env=False).observation_space.shape)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "(3, 210, 160)", result.stderr
