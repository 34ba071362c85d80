"""Pseudo-rollout engine: exact continuations, observation pipeline, return arithmetic, budgets, horizons."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecNormalize

from arsm_rl import ARSM
from arsm_rl.actions import JointActions
from arsm_rl.cloning import make_cloneable, scratch_copy
from arsm_rl.rollouts import (
    POLICY_BLOCK,
    BatchStepper,
    EnvStepper,
    RolloutEngine,
    ScratchPool,
    discounted_returns,
    enable_cloning,
    numpy_logits,
    run_lockstep,
    select_stepper,
)
from envs import RandomMDP


def test_discounted_returns_pinned() -> None:
    rewards = np.array([1.0, 2.0, 3.0, 4.0])
    dones = np.array([False, True, False, False])
    # Episode 1: [1, 2] -> 1 + 0.5 * 2 = 2, 2. Episode 2 (open): [3, 4] -> 3 + 0.5 * 4 = 5, 4.
    assert np.array_equal(discounted_returns(rewards, dones, 0.5), [2.0, 2.0, 5.0, 4.0])
    # Horizon 1: the immediate reward.
    assert np.array_equal(discounted_returns(rewards, dones, 0.5, horizon=1), rewards)
    # Time-major batches: columns are independent sequences.
    batch = discounted_returns(np.stack([rewards, rewards[::-1]], 1), np.zeros((4, 2), dtype=bool), 1.0)
    assert np.array_equal(batch[0], [10.0, 10.0])


@pytest.mark.parametrize("horizon", [1, 3, 7, 50])
def test_horizon_values_are_bit_equal_to_cut_sequences(horizon: int) -> None:
    """Q_h[t] equals the full recursion on the sequence cut after h rewards, bit for bit."""
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=40)
    dones = rng.random(40) < 0.1
    values = discounted_returns(rewards, dones, 0.97, horizon=horizon)
    for t in range(40):
        end = t + horizon
        stops = np.flatnonzero(dones[t:end])
        end = t + stops[0] + 1 if len(stops) else min(end, 40)
        cut_dones = np.zeros(end - t, dtype=bool)
        cut_dones[-1] = True
        assert values[t] == discounted_returns(rewards[t:end], cut_dones, 0.97)[0]


def _replay_check(venv: VecEnv, n_real: int = 60, branch_at: int = 10) -> None:
    """A rollout from a branch point, fed the real actions, reproduces the real rewards and observations."""
    enable_cloning(venv)
    engine = RolloutEngine(venv)
    rng = np.random.default_rng(0)
    venv.seed(3)
    obs = venv.reset()
    actions = rng.integers(2, size=(n_real, venv.num_envs))
    real_obs, real_rewards, real_dones, branch = [], [], [], None
    for t in range(n_real):
        if t == branch_at:
            branch = engine.branch_points([1])
        obs, rewards, dones, _ = venv.step(actions[t])
        real_obs.append(obs[1].copy())
        real_rewards.append(rewards[1])
        real_dones.append(dones[1])
    end = branch_at + int(np.argmax(real_dones[branch_at:])) if any(real_dones[branch_at:]) else n_real - 1
    seen = []

    def act(batch_obs: np.ndarray, ids: np.ndarray, depth: int, masks: np.ndarray | None) -> np.ndarray:
        seen.append(batch_obs[0].copy())
        return actions[branch_at + depth, 1][None]

    assert branch is not None
    batch = engine.run(branch, actions[branch_at, 1][None], act, horizons=[end - branch_at + 1])
    assert batch.lengths[0] == end - branch_at + 1
    assert np.array_equal(batch.rewards[0], np.asarray(real_rewards[branch_at : end + 1], dtype=np.float64))
    for k, observed in enumerate(seen):
        assert np.array_equal(observed, real_obs[branch_at + k])


def test_rollout_reproduces_the_real_continuation() -> None:
    _replay_check(make_vec_env("CartPole-v1", n_envs=2))


def test_rollout_mirrors_vec_frame_stack() -> None:
    _replay_check(VecFrameStack(make_vec_env("CartPole-v1", n_envs=2), n_stack=4))


def test_rollout_mirrors_frozen_vec_normalize() -> None:
    venv = VecNormalize(VecFrameStack(make_vec_env("CartPole-v1", n_envs=2), n_stack=2), training=False)
    venv.obs_rms.mean[:] = 0.1  # non-trivial frozen statistics
    venv.obs_rms.var[:] = 4.0
    _replay_check(venv)


def test_rollouts_never_touch_the_training_env() -> None:
    venv = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    monitor = venv.envs[0]
    enable_cloning(venv)
    engine = RolloutEngine(venv)
    venv.reset()
    rng_before = monitor.unwrapped.np_random.bit_generator.state
    branch = engine.branch_points([0])
    engine.run(branch * 5, np.zeros(5, dtype=np.int64), lambda obs, ids, depth, masks: np.ones(len(ids), dtype=np.int64))
    assert monitor.unwrapped.np_random.bit_generator.state == rng_before
    assert monitor.get_total_steps() == 0 and monitor.get_episode_rewards() == []


def test_budget_caps_rollouts_for_two_actions() -> None:
    """With two actions every informative step needs exactly one rollout, so the budget is exact."""
    model = ARSM("MlpPolicy", "CartPole-v1", n_steps=64, max_pseudo_rollouts=5, seed=0, policy_kwargs=dict(net_arch=[8]))
    model.learn(64)
    assert model.logger.name_to_value["rollout/pseudo_rollouts"] == 5


def test_pseudo_horizon_reduces_to_the_myopic_gradient() -> None:
    """pseudo_horizon=1 values every action by its immediate reward: the mean update becomes the exact
    gradient of the one-step reward, d(s) p(a|s) (r(s, a) - sum_b p(b|s) r(s, b)), over the expected length."""
    env = RandomMDP()
    model = ARSM(
        "MlpPolicy",
        env,
        n_steps=200,
        gamma=1.0,
        pseudo_horizon=1,
        learning_rate=1.0,
        max_grad_norm=None,
        policy_kwargs=dict(net_arch=[], optimizer_class=th.optim.SGD, optimizer_kwargs={}),
        seed=0,
    )
    linear = model.policy.logits_net[0]
    with th.no_grad():
        linear.weight.copy_(th.as_tensor(np.random.default_rng(1).normal(size=(3, 3))))
        linear.bias.zero_()
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    deltas = []
    for _ in range(20):
        model.learn(200, reset_num_timesteps=False)
        deltas.append((linear.weight.detach() - start["logits_net.0.weight"]).numpy().copy())
        model.policy.load_state_dict(start)
    table = start["logits_net.0.weight"].numpy().T
    p = np.exp(table) / np.exp(table).sum(1, keepdims=True)
    _, visits = env.policy_gradient(table)
    myopic = (visits[:, None] * p * (env.rewards - (p * env.rewards).sum(1, keepdims=True))).T / visits.sum()
    update = np.mean(deltas, axis=0)
    cosine = (update * myopic).sum() / np.linalg.norm(update) / np.linalg.norm(myopic)
    assert cosine >= 0.99, cosine
    assert np.linalg.norm(update) / np.linalg.norm(myopic) == pytest.approx(1.0, abs=0.1)


def test_share_noise_rollout_of_the_true_action_is_the_real_return() -> None:
    """Common random numbers: a rollout that starts with the true action and reuses the real noise
    replays the real trajectory, so its value equals the real return exactly (paper check H)."""
    model = ARSM("MlpPolicy", "CartPole-v1", n_steps=300, share_noise=True, seed=2, policy_kwargs=dict(net_arch=[8]))
    collected = model.collect_update()
    t = 0
    end = t + int(np.argmax(collected.dones[t:, 0]))
    assert collected.dones[end, 0], "pick a seed whose episode ends inside the window"
    rollouts = model.run_rollouts(collected, [(t, int(collected.actions[t, 0, 0]))])
    real = discounted_returns(collected.rewards[:, 0], collected.dones[:, 0], model.gamma)[t]
    assert rollouts.values[0] == real


@pytest.mark.parametrize(("env_id", "limit"), [("CartPole-v1", 60), ("Acrobot-v1", 60), ("MountainCar-v0", 60)])
def test_batched_rollouts_are_bit_identical_to_stepping_envs(env_id: str, limit: int) -> None:
    """The numpy batch gives the same rewards, ends and observations as the envs stepped one by one."""
    venv = make_vec_env(env_id, n_envs=4, seed=0, env_kwargs=dict(max_episode_steps=limit))
    enable_cloning(venv)
    engine = RolloutEngine(venv)
    assert engine.stepper is BatchStepper
    n_actions = int(venv.action_space.n)
    venv.reset()
    rng = np.random.default_rng(0)
    branches = []
    for _ in range(30):  # branch points along random real trajectories, some near the time limit
        branches += engine.branch_points(range(4))
        venv.step(rng.integers(n_actions, size=4))
    first = rng.integers(n_actions, size=len(branches))
    results = {}
    for vectorised in (False, True):
        engine.stepper = BatchStepper if vectorised else EnvStepper
        seen = []
        policy = np.random.default_rng(1)

        def act(obs: np.ndarray, ids: np.ndarray, depth: int, masks: None, seen: list = seen, policy=policy) -> np.ndarray:
            seen.append(obs.copy())
            return policy.integers(n_actions, size=len(ids))

        batch = engine.run(branches, first, act, horizons=[None] * (len(branches) - 5) + [3] * 5)
        results[vectorised] = (batch.rewards, batch.lengths, seen)
    assert np.array_equal(results[False][0], results[True][0])
    assert np.array_equal(results[False][1], results[True][1])
    assert all(np.array_equal(a, b) for a, b in zip(results[False][2], results[True][2], strict=True))
    assert results[True][1].max() > 3


def _random_states(env_id: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """States over the whole state space (goal regions, angle wrapping and velocity bounds included)."""
    if env_id == "Acrobot-v1":
        return np.stack([rng.uniform(-np.pi, np.pi, n), rng.uniform(-np.pi, np.pi, n), rng.uniform(-4 * np.pi, 4 * np.pi, n),
                         rng.uniform(-9 * np.pi, 9 * np.pi, n)], axis=1)  # fmt: skip
    return np.stack([rng.uniform(-1.2, 0.6, n), rng.uniform(-0.07, 0.07, n)], axis=1)


@pytest.mark.parametrize("env_id", ["Acrobot-v1", "MountainCar-v0"])
def test_batched_dynamics_reproduce_the_env_everywhere(env_id: str) -> None:
    """From 2,000 states spread over the state space, 20 random steps each: observations, rewards, terminations
    and the internal state are bit-identical to Gymnasium's env (every row with at least one termination counted)."""
    from arsm_rl.cloning import family

    rng = np.random.default_rng(0)
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    states = _random_states(env_id, rng, 2000)
    dynamics = family(env).dynamics(env, [(state,) for state in states])
    live, ended = np.ones(len(states), dtype=bool), 0
    for _ in range(20):
        rows = np.flatnonzero(live)
        actions = rng.integers(3, size=len(rows))
        obs, rewards, terminated = dynamics.step(rows, actions)
        for j, r in enumerate(rows):
            env.state = dynamics_state = states[r].copy()
            o, reward, term, _, _ = env.step(int(actions[j]))
            assert np.array_equal(o, obs[j]) and reward == rewards[j] and term == terminated[j], (r, dynamics_state)
            states[r] = np.asarray(env.state, dtype=np.float64)
            assert np.array_equal(states[r], dynamics.state[r])
        live[rows[terminated]] = False
        ended += int(terminated.sum())
    assert ended > 20  # terminations are part of what is compared


def test_endless_rollouts_are_refused() -> None:
    """An env with no time limit would make a rollout of a poor policy run for ever: refused with advice."""
    venv = make_vec_env("CliffWalking-v1", n_envs=1, seed=0)  # no TimeLimit in gymnasium's registration
    enable_cloning(venv)
    engine = RolloutEngine(venv)
    venv.reset()
    branch = engine.branch_points([0])
    stand_still = np.zeros(1, dtype=np.int64)  # "up" from the start: the episode never ends
    with pytest.raises(RuntimeError, match="pseudo_horizon"):
        run_lockstep(
            engine.pool,
            branch,
            stand_still,
            engine.pipeline,
            lambda obs, ids, depth, masks: stand_still[: len(ids)],
            max_episode_steps=500,
        )
    batch = engine.run(branch, stand_still, lambda obs, ids, depth, masks: stand_still[: len(ids)], horizons=[50])
    assert batch.lengths[0] == 50


def test_stepper_registry_chooses_the_batch_only_where_it_is_exact() -> None:
    """A numpy batch is chosen only where it reproduces the env: plain gym.make CartPole, Acrobot, MountainCar; not
    under a wrapper that changes observations, not with two time limits, not for Acrobot's torque noise, and never
    for a family without dynamics."""
    assert select_stepper(make_cloneable(gym.make("CartPole-v1"))) is BatchStepper
    shifted = gym.wrappers.TransformObservation(gym.make("CartPole-v1"), lambda obs: obs + 1.0, None)
    assert select_stepper(make_cloneable(shifted)) is EnvStepper
    twice = gym.wrappers.TimeLimit(gym.make("CartPole-v1"), max_episode_steps=20)
    assert select_stepper(make_cloneable(twice)) is EnvStepper
    assert select_stepper(make_cloneable(gym.make("Acrobot-v1"))) is BatchStepper
    noisy = gym.make("Acrobot-v1")
    noisy.unwrapped.torque_noise_max = 0.1  # draws from the env's RNG at every step: no batch for that
    assert select_stepper(make_cloneable(noisy)) is EnvStepper
    assert select_stepper(make_cloneable(gym.make("MountainCarContinuous-v0"))) is EnvStepper
    assert select_stepper(make_cloneable(gym.make("Pendulum-v1"))) is EnvStepper


def test_scratch_envs_are_headless_and_the_training_env_still_renders() -> None:
    """Pseudo rollouts on LunarLander skip its flame particles (render-only); the training env keeps them."""
    env = make_cloneable(gym.make("LunarLander-v3", render_mode="rgb_array"))
    env.reset(seed=0)
    for _ in range(5):
        env.step(2)  # the main engine: particles
    pool = ScratchPool(lambda: scratch_copy(env))
    assert [scratch.unwrapped.render_mode for scratch in pool.take(2)] == [None, None]
    assert env.unwrapped.render_mode == "rgb_array" and len(env.unwrapped.particles) == 5


@pytest.mark.parametrize(
    ("env_id", "policy_kwargs"),
    [
        ("LunarLander-v3", {}),
        ("Acrobot-v1", dict(net_arch=[10, 10], activation_fn=th.nn.ReLU)),
        ("CartPole-v1", dict(net_arch=[])),  # a linear policy
        ("FrozenLake-v1", {}),  # Discrete observations, one-hot coded
    ],
)
def test_numpy_logits_are_the_policy_to_float32_rounding(env_id: str, policy_kwargs: dict) -> None:
    """The rollouts' numpy form of an MLP policy: torch's logits to within float32 rounding, on observations as the
    env gives them."""
    model = ARSM("MlpPolicy", env_id, policy_kwargs=policy_kwargs, seed=0)
    mlp = numpy_logits(model.policy)
    assert mlp is not None
    env = gym.make(env_id)
    obs = np.stack([env.observation_space.sample() for _ in range(3 * POLICY_BLOCK)])
    with th.no_grad():
        expected = model.policy(model.policy.obs_to_tensor(obs)[0]).numpy()
    got = mlp(obs)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert not np.array_equal(got, 0 * got)


@pytest.mark.parametrize(
    ("env_id", "policy_kwargs"),
    [
        ("CartPole-v1", dict(activation_fn=th.nn.ELU)),  # an activation it does not compute
        ("ALE/Pong-v5", {}),  # images, rescaled by SB3
    ],
)
def test_policies_without_a_numpy_form_keep_torch(env_id: str, policy_kwargs: dict) -> None:
    if env_id.startswith("ALE/"):
        pytest.importorskip("ale_py")
        import ale_py

        gym.register_envs(ale_py)
        policy = "CnnPolicy"
    else:
        policy = "MlpPolicy"
    model = ARSM(policy, env_id, policy_kwargs=policy_kwargs, seed=0, n_steps=8)
    assert numpy_logits(model.policy) is None


def test_the_numpy_race_is_the_race() -> None:
    """JointActions.race_numpy, the rollouts' race, against the real steps' race (torch): the same winners but for the
    last bit of a logarithm on a near-tie, and never a masked action."""
    joint = JointActions(np.array([3, 5]), discrete=False)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20_000, 8)).astype(np.float32)
    noise = joint.noise(rng, 20_000)
    agree = (joint.race_numpy(logits, noise) == joint.race(th.as_tensor(logits), noise)).all(axis=1)
    assert agree.mean() > 0.9999
    masks = rng.random((20_000, 8)) < 0.6
    masks[:, [0, 3]] = True  # one valid action per dimension at least
    winners = joint.race_numpy(logits, noise, masks)
    assert masks[np.arange(20_000), winners[:, 0]].all() and masks[np.arange(20_000), 3 + winners[:, 1]].all()
    assert (winners == joint.race(joint.masked(th.as_tensor(logits), masks), noise)).all(axis=1).mean() > 0.9999
