"""envs.discretize.DiscreteBins: continuous actions as MultiDiscrete bins (issue 26, item 3)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from arsm_rl import ARSM
from arsm_rl.cloning import check_cloneable, make_cloneable
from envs.discretize import DiscreteBins


class Unbounded(gym.Env[np.ndarray, np.ndarray]):
    """An env whose actions have no bounds."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


def test_bins_span_the_box_with_both_bounds_and_the_midpoint() -> None:
    env = DiscreteBins(gym.make("LunarLanderContinuous-v3"))
    assert env.action_space == gym.spaces.MultiDiscrete([11, 11])
    assert env.values.dtype == np.float32 and env.values.shape == (2, 11)
    assert np.array_equal(env.action(np.array([0, 10])), np.array([-1.0, 1.0], dtype=np.float32))
    assert np.array_equal(env.action(np.array([5, 5])), np.zeros(2, dtype=np.float32))
    assert np.allclose(np.diff(env.values, axis=1), 0.2)
    pendulum = DiscreteBins(gym.make("Pendulum-v1"), bins=5)
    assert pendulum.values.tolist() == [[-2.0, -1.0, 0.0, 1.0, 2.0]]
    assert pendulum.action(np.array([3])).tolist() == [1.0]


def test_a_step_is_the_inner_envs_step_with_the_bins_value() -> None:
    binned, plain = DiscreteBins(gym.make("Pendulum-v1")), gym.make("Pendulum-v1")
    binned.reset(seed=3)
    plain.reset(seed=3)
    for k in (0, 4, 10, 7):
        got, want = binned.step(np.array([k])), plain.step(binned.values[0, [k]])
        assert np.array_equal(got[0], want[0]) and got[1] == want[1]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: gym.make("CartPole-v1"), "one-dimensional Box action space"),
        (lambda: Unbounded(), "finite action bounds"),
    ],
)
def test_other_spaces_and_unbounded_actions_are_one_clear_error(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DiscreteBins(make())
    for bins in (1, 2.5, True):
        with pytest.raises(ValueError, match="bins must be an integer >= 2"):
            DiscreteBins(gym.make("Pendulum-v1"), bins=bins)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"bin indices must be in \[0, 11\)"):
        DiscreteBins(gym.make("Pendulum-v1")).action(np.array([11]))


def test_arsm_and_ppo_train_on_the_same_bins() -> None:
    """The wrapped env clones exactly (checked as ARSM checks it) and both algorithms take its MultiDiscrete space."""
    check_cloneable(make_cloneable(DiscreteBins(gym.make("LunarLanderContinuous-v3"))))
    venv = make_vec_env("Pendulum-v1", 1, seed=0, wrapper_class=DiscreteBins)
    model = ARSM("MlpPolicy", venv, n_steps=32, max_pseudo_rollouts=8, pseudo_horizon=10, seed=0).learn(64)
    assert model.num_pseudo_steps > 0
    assert model.action_space == gym.spaces.MultiDiscrete([11])
    PPO("MlpPolicy", make_vec_env("Pendulum-v1", 1, seed=0, wrapper_class=DiscreteBins), n_steps=32, batch_size=32).learn(64)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5"])
def test_mujoco_envs_clone_exactly_and_train_on_bins(env_id: str) -> None:
    """Gymnasium's MuJoCo envs are the ``mujoco`` family (the simulation data copied whole): restores are exact (Ant's
    and Humanoid's steps read derived quantities, which an integration-state copy would leave stale), and ARSM trains on
    their actions cut into bins (Hopper: 3 dimensions, 11 bins each, as CARSM)."""
    pytest.importorskip("mujoco")
    from arsm_rl.cloning import family_of

    env = make_cloneable(DiscreteBins(gym.make(env_id)))
    assert family_of(env) == "mujoco"
    check_cloneable(env)
    if env_id == "Hopper-v5":
        venv = make_vec_env(env_id, 1, seed=0, wrapper_class=DiscreteBins)
        model = ARSM("MlpPolicy", venv, n_steps=32, max_pseudo_rollouts=4, pseudo_horizon=10, seed=0).learn(64)
        assert model.action_space == gym.spaces.MultiDiscrete([11, 11, 11]) and model.num_pseudo_steps > 0
