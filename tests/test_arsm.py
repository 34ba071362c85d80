"""The ARSM algorithm: SB3's contract (run, save/load, predict, callbacks, logger, spaces) and numbers."""

from __future__ import annotations

import multiprocessing

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvMultiDiscrete
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnvWrapper,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
)

from arsm_rl import ARSM, ESTIMATORS, make_cloneable, restore_state, scratch_copy
from arsm_rl.rollouts import RolloutEngine

SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=32)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_run_every_estimator(estimator: str) -> None:
    model = ARSM("MlpPolicy", "CartPole-v1", estimator=estimator, seed=0, **SMALL).learn(128)
    assert model.num_timesteps == 128
    assert model.num_pseudo_steps > 0 or estimator in ("ar", "reinforce")


def test_run_multidiscrete_unequal_sizes() -> None:
    class Unequal(IdentityEnvMultiDiscrete):
        def __init__(self) -> None:
            super().__init__(dim=3, ep_length=10)
            self.action_space = gym.spaces.MultiDiscrete([3, 2])
            self.observation_space = gym.spaces.MultiDiscrete([3, 2])

    model = ARSM("MlpPolicy", Unequal(), seed=0, **SMALL).learn(64)
    assert model.num_pseudo_steps > 0
    action, _ = model.predict(model.env.observation_space.sample())
    assert model.action_space.contains(action)


@pytest.mark.parametrize("env_id", ["Pendulum-v1"])
def test_unsupported_action_space(env_id: str) -> None:
    with pytest.raises(AssertionError, match="Discrete and one-dimensional MultiDiscrete"):
        ARSM("MlpPolicy", env_id)


def test_two_dimensional_multibinary_refused() -> None:
    """One-dimensional MultiBinary actions are binary categoricals (tests/test_user_envs.py); a grid of bits is not."""
    env = IdentityEnv(space=gym.spaces.MultiBinary([2, 2]))
    with pytest.raises(AssertionError, match="supports Discrete and one-dimensional MultiDiscrete and MultiBinary"):
        ARSM("MlpPolicy", env)


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="Unknown estimator"):
        ARSM("MlpPolicy", "CartPole-v1", estimator="ppo")
    with pytest.raises(ValueError, match="max_pseudo_rollouts"):
        ARSM("MlpPolicy", "CartPole-v1", max_pseudo_rollouts=0)
    with pytest.raises(ValueError, match="budget_sampling must be 'update' or 'step', got 'steps'"):
        ARSM("MlpPolicy", "CartPole-v1", budget_sampling="steps")
    with pytest.raises(ValueError, match="all_action"):
        ARSM("MlpPolicy", IdentityEnvMultiDiscrete(2), estimator="all_action")


def test_uncloneable_env_refused() -> None:
    class Opaque(IdentityEnv, gym.utils.EzPickle):
        def __init__(self) -> None:
            IdentityEnv.__init__(self, dim=2)
            gym.utils.EzPickle.__init__(self)

    with pytest.raises((TypeError, ValueError), match="check_cloneable"):
        ARSM("MlpPolicy", Opaque())


def test_replayed_restore_steps_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Box2D snapshots restore by replay: every replayed step is a simulator step, and is reported apart."""
    prefixes: list[int] = []
    run = RolloutEngine.run

    def spy(self, branches, *args, **kwargs):
        prefixes.extend(branch.snapshot.restore_steps for branch in branches)
        return run(self, branches, *args, **kwargs)

    monkeypatch.setattr(RolloutEngine, "run", spy)
    env = make_vec_env("LunarLander-v3", n_envs=1, seed=0, wrapper_class=make_cloneable)
    model = ARSM("MlpPolicy", env, seed=0, pseudo_horizon=3, max_pseudo_rollouts=4, **SMALL).learn(96)
    assert model.num_restore_steps == sum(prefixes) > 0
    assert model.num_pseudo_steps >= model.num_restore_steps + len(prefixes)  # each rollout takes at least one step
    prefixes.clear()
    cartpole = ARSM("MlpPolicy", "CartPole-v1", seed=0, **SMALL).learn(64)
    assert cartpole.num_restore_steps == sum(prefixes) == 0 < cartpole.num_pseudo_steps


def test_subproc_needs_cloneable_wrapper() -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, vec_env_cls=SubprocVecEnv)
    try:
        with pytest.raises(TypeError, match="wrapper_class"):
            ARSM("MlpPolicy", env)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "LunarLander-v3"])
def test_subproc_and_dummy_give_the_same_training(env_id: str) -> None:
    """Bit-identical training whichever VecEnv runs the real steps, also with non-integer rewards (LunarLander's):
    DummyVecEnv stores rewards as float32, SubprocVecEnv passes float64, and ARSM rounds every reward the same way."""
    kwargs = dict(seed=3, **SMALL)
    dummy = ARSM("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=3, wrapper_class=make_cloneable), **kwargs).learn(128)
    subproc_env = make_vec_env(env_id, n_envs=2, seed=3, vec_env_cls=SubprocVecEnv, wrapper_class=make_cloneable)
    try:
        subproc = ARSM("MlpPolicy", subproc_env, **kwargs).learn(128)
    finally:
        subproc_env.close()
    assert dummy.num_pseudo_steps == subproc.num_pseudo_steps > 0
    for a, b in zip(dummy.policy.parameters(), subproc.policy.parameters(), strict=True):
        assert th.equal(a, b)


def test_subproc_lunar_lander_replays_snapshots_across_the_pipe() -> None:
    """The SubprocVecEnv + LunarLander example of docs/arsm.md, in small: Box2D envs restore by replay, and their
    snapshots, taken in the worker processes, give the pseudo rollouts of the same envs run in-process, bit for bit.
    A snapshot of one worker's env also restores into another worker and continues exactly as a local copy."""
    kwargs = dict(seed=0, n_steps=50, max_pseudo_rollouts=8, pseudo_horizon=10, **{"policy_kwargs": dict(net_arch=[16])})
    local = ARSM("MlpPolicy", make_vec_env("LunarLander-v3", n_envs=2, seed=0, wrapper_class=make_cloneable), **kwargs)
    start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None  # fork: no interpreter start-up
    venv = make_vec_env(
        "LunarLander-v3", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv, wrapper_class=make_cloneable,
        vec_env_kwargs={"start_method": start_method},
    )  # fmt: skip
    try:
        model = ARSM("MlpPolicy", venv, **kwargs)
        expected, collected = local.collect_update(), model.collect_update()
        assert np.array_equal(collected.obs, expected.obs)
        # SB3's DummyVecEnv buffers rewards as float32, SubprocVecEnv passes the env's float64 through
        assert np.array_equal(collected.rewards.astype(np.float32), expected.rewards.astype(np.float32))
        plan = model.plan_update(collected)
        assert plan.requests == local.plan_update(expected).requests and len(plan.requests) > 0
        values = model.run_rollouts(collected, plan.requests)
        reference = local.run_rollouts(expected, plan.requests)
        assert values.restore_steps == reference.restore_steps > 0  # replayed, not state-copied
        assert np.array_equal(values.values, reference.values)
        model.train(collected)
        model.learn(100, reset_num_timesteps=False)  # the rest of a couple of hundred steps, training on
        assert model.num_timesteps == 200 and model.num_restore_steps > values.restore_steps

        snapshot = venv.env_method("clone_state", indices=[0])[0]
        assert snapshot.restore_steps > 0
        twin = scratch_copy(make_cloneable(Monitor(gym.make("LunarLander-v3"))))
        restore_state(twin, snapshot)
        venv.env_method("restore_state", snapshot, indices=[1])  # env 0's snapshot restored into env 1
        for action in [2, 0, 3, 1, 2]:
            obs, rewards, *_ = venv.step(np.array([0, action]))
            twin_obs, twin_reward, *_ = twin.step(action)
            assert np.array_equal(obs[1], twin_obs) and rewards[1] == twin_reward
    finally:
        venv.close()


class DoubledObs(VecEnvWrapper):
    """A VecEnv wrapper that changes observations: pseudo rollouts, run on scratch envs, could not reproduce it."""

    def reset(self) -> np.ndarray:
        return 2 * self.venv.reset()

    def step_wait(self):  # type: ignore[no-untyped-def]
        obs, rewards, dones, infos = self.venv.step_wait()
        return 2 * obs, rewards, dones, infos


def test_vec_monitor_passes_through_and_observation_wrappers_are_refused() -> None:
    """VecMonitor is statistics only: training under it is bit for bit training without it, and its episode
    statistics are those of the real steps (the same as per-env Monitors). A wrapper that changes observations
    is refused at construction."""
    plain = ARSM("MlpPolicy", DummyVecEnv([lambda: Monitor(gym.make("CartPole-v1"))] * 2), seed=3, **SMALL).learn(256)
    venv = VecMonitor(DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2))
    monitored = ARSM("MlpPolicy", venv, seed=3, **SMALL).learn(256)
    assert monitored.num_pseudo_steps == plain.num_pseudo_steps > 0
    assert all(th.equal(a, b) for a, b in zip(monitored.policy.parameters(), plain.policy.parameters(), strict=True))
    episodes = [(info["r"], info["l"]) for info in monitored.ep_info_buffer]
    assert len(episodes) > 5 and episodes == [(info["r"], info["l"]) for info in plain.ep_info_buffer]
    assert sum(length for _, length in episodes) <= monitored.num_timesteps  # real steps only

    with pytest.raises(TypeError, match="cannot mirror the VecEnv wrapper DoubledObs"):
        ARSM("MlpPolicy", DoubledObs(DummyVecEnv([lambda: gym.make("CartPole-v1")])), **SMALL)
    with pytest.raises(TypeError, match="DoubledObs"):  # also under a supported layer
        ARSM("MlpPolicy", VecMonitor(DoubledObs(DummyVecEnv([lambda: gym.make("CartPole-v1")]))), **SMALL)


def test_deterministic_training() -> None:
    """Same seed, same parameters after training, bit for bit (CPU)."""
    params = []
    for _ in range(2):
        model = ARSM("MlpPolicy", "CartPole-v1", seed=1, device="cpu", **SMALL).learn(160)
        params.append(th.cat([p.detach().reshape(-1) for p in model.policy.parameters()]))
    assert th.equal(params[0], params[1])


def test_pseudo_rollouts_leave_the_real_trajectory_alone() -> None:
    """With the policy frozen (lr 0), the real episodes are identical whether pseudo rollouts run or not."""
    episodes = {}
    for estimator in ("arsm", "reinforce"):  # reinforce runs no rollout at all
        monitor = Monitor(gym.make("CartPole-v1"))
        model = ARSM("MlpPolicy", monitor, estimator=estimator, learning_rate=0.0, seed=4, **SMALL).learn(320)
        assert model.num_pseudo_steps > 0 or estimator == "reinforce"
        rewards, lengths = list(monitor.get_episode_rewards()), list(monitor.get_episode_lengths())
        next_obs = model.collect_update().obs[0]  # where the real trajectory stands: the next update starts there
        episodes[estimator] = (rewards, lengths, next_obs)
    assert episodes["arsm"][0] == episodes["reinforce"][0]
    assert episodes["arsm"][1] == episodes["reinforce"][1]
    assert np.array_equal(episodes["arsm"][2], episodes["reinforce"][2])
    assert sum(episodes["arsm"][1]) <= 320  # Monitor saw real steps only


def test_vecnormalize_statistics_see_real_steps_only() -> None:
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    model = ARSM("MlpPolicy", env, seed=0, **SMALL).learn(128)
    assert model.num_pseudo_steps > 0
    assert env.obs_rms.count == pytest.approx(128 + 2 + 1e-4)  # 64 steps x 2 envs + the reset + epsilon


def test_vec_frame_stack() -> None:
    env = VecFrameStack(make_vec_env("CartPole-v1", n_envs=2, seed=0), n_stack=3)
    model = ARSM("MlpPolicy", env, seed=0, **SMALL).learn(64)
    assert model.num_pseudo_steps > 0
    assert model.observation_space.shape == (12,)


def test_save_load(tmp_path) -> None:
    model = ARSM("MlpPolicy", "CartPole-v1", seed=0, **SMALL).learn(64)
    obs = model.env.observation_space.sample()[None].repeat(5, 0)
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "arsm")
    loaded = ARSM.load(tmp_path / "arsm", env=make_vec_env("CartPole-v1", n_envs=3))
    after, _ = loaded.predict(obs, deterministic=True)
    assert np.array_equal(before, after)
    assert loaded.n_envs == 3 and loaded.n_steps == 32 and loaded.estimator == "arsm"
    for a, b in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert th.equal(a, b)
    loaded.learn(96, reset_num_timesteps=False)
    assert loaded.num_timesteps > model.num_timesteps
    params = loaded.get_parameters()
    assert set(params) == {"policy", "policy.optimizer"}
    loaded.set_parameters(model.get_parameters())
    with pytest.raises(AssertionError):
        model.set_env(make_vec_env("CartPole-v1", n_envs=2))


def test_predict_and_evaluate() -> None:
    model = ARSM("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    action, state = model.predict(np.zeros(4, dtype=np.float32))
    assert state is None and model.action_space.contains(action)
    actions, _ = model.predict(np.zeros((7, 4), dtype=np.float32))
    assert actions.shape == (7,)
    # deterministic actions are the argmax of the policy's logits
    observations = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with th.no_grad():
        greedy = model.policy(th.as_tensor(observations)).argmax(dim=1).numpy()
    assert np.array_equal(model.predict(observations, deterministic=True)[0], greedy)
    assert 0 < greedy.sum() < len(greedy)  # the observations reach both actions, so the check can tell them apart
    # stochastic actions follow softmax(logits): z-test of the frequency of action 1 over 4,000 draws, |z| <= 4
    with th.no_grad():
        p_one = float(th.softmax(model.policy(th.as_tensor(observations[:1])), dim=1)[0, 1])
    sampled, _ = model.predict(np.repeat(observations[:1], 4000, axis=0), deterministic=False)
    assert abs(sampled.mean() - p_one) <= 4 * np.sqrt(p_one * (1 - p_one) / 4000), (sampled.mean(), p_one)
    # evaluate_policy reports the episodes of an independent loop over the same seeded env, step for step
    venv = DummyVecEnv([lambda: Monitor(gym.make("CartPole-v1"))])
    venv.seed(3)
    rewards, lengths = evaluate_policy(model, venv, n_eval_episodes=2, return_episode_rewards=True)
    env = gym.make("CartPole-v1")
    expected = []
    obs, _ = env.reset(seed=3)
    for _ in range(2):
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(model.predict(obs, deterministic=True)[0]))
            total, done = total + float(reward), terminated or truncated
        expected.append(total)
        obs, _ = env.reset()
    assert rewards == expected and lengths == [int(r) for r in expected]  # CartPole pays 1 per step


def test_callbacks(tmp_path) -> None:
    eval_env = gym.make("CartPole-v1")
    checkpoint = CheckpointCallback(save_freq=64, save_path=str(tmp_path))
    evaluation = EvalCallback(eval_env, eval_freq=64, n_eval_episodes=2, log_path=str(tmp_path))
    model = ARSM("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    model.learn(128, callback=[checkpoint, evaluation], progress_bar=True)
    assert checkpoint.n_calls == model.num_timesteps  # one call per real step (1 env)
    assert sorted(p.name for p in tmp_path.glob("rl_model_*.zip")) == ["rl_model_128_steps.zip", "rl_model_64_steps.zip"]
    assert (tmp_path / "evaluations.npz").exists()

    calls = []

    def stop(_locals, _globals) -> bool:
        calls.append(1)
        return False

    model.learn(128, callback=stop)
    assert len(calls) == 1


def test_logger_keys(tmp_path) -> None:
    model = ARSM("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(128)
    import pandas as pd

    frame = pd.read_csv(tmp_path / "progress.csv")
    for key in (
        "rollout/ep_rew_mean",
        "time/fps",
        "time/total_timesteps",
        "train/learning_rate",
        "train/entropy_loss",
        "train/policy_gradient_loss",
        "train/n_updates",
        "train/grad_log_variance",
        "rollout/pseudo_actions_per_step",
        "rollout/pseudo_step_share",
        "rollout/pseudo_steps",
        "rollout/restore_steps",
        "time/total_pseudo_steps",
        "time/total_restore_steps",
        "time/pseudo_fps",
    ):
        assert key in frame.columns, key
    # train/ keys of an update are dumped with the next iteration's rollout/ and time/ keys (as in SB3)
    previous, last = frame.iloc[-2], frame.iloc[-1]
    assert last["time/total_env_steps"] == previous["time/total_timesteps"] + last["time/total_pseudo_steps"]
    assert 0 < last["rollout/pseudo_step_share"] <= 1


def test_tensorboard_run_names(tmp_path) -> None:
    model = ARSM("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), seed=0, **SMALL)
    model.learn(64)
    model.learn(64, reset_num_timesteps=False)
    model.learn(64, tb_log_name="custom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ARSM_1", "custom_1"]


def test_identity_env_learns() -> None:
    env = DummyVecEnv([lambda: IdentityEnv(4)])
    # gamma 0.4: rewards beyond 10 steps weigh < 1e-4, so a 10-step horizon keeps the test fast
    model = ARSM("MlpPolicy", env, gamma=0.4, learning_rate=0.01, pseudo_horizon=10, seed=3, **SMALL).learn(1500)
    evaluate_policy(model, env, n_eval_episodes=20, reward_threshold=90, warn=False)


def test_identity_multidiscrete_learns() -> None:
    env = DummyVecEnv([lambda: IdentityEnvMultiDiscrete(2)])
    model = ARSM("MlpPolicy", env, gamma=0.4, learning_rate=0.01, pseudo_horizon=10, seed=3, **SMALL).learn(1500)
    evaluate_policy(model, env, n_eval_episodes=20, reward_threshold=90, warn=False)


class TinyImageEnv(gym.Env):
    """A random walk on 0..4 seen as a 36x36 grey image (big enough for NatureCNN); reward for reaching 4."""

    observation_space = gym.spaces.Box(0, 255, shape=(36, 36, 1), dtype=np.uint8)
    action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        return np.full((36, 36, 1), 50 * self.position, dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position, self.steps = 2, 0
        return self._obs(), {}

    def step(self, action):
        self.position = int(np.clip(self.position + (1 if action == 1 else -1) + self.np_random.integers(-1, 2), 0, 4))
        self.steps += 1
        return self._obs(), float(self.position == 4), False, self.steps >= 10, {}


def test_cnn_policy_on_images() -> None:
    model = ARSM("CnnPolicy", TinyImageEnv(), seed=0, n_steps=16).learn(32)
    assert model.num_pseudo_steps > 0
    assert model.env.observation_space.shape == (1, 36, 36)  # SB3's VecTransposeImage, mirrored in rollouts


def test_multi_input_policy_on_dict_observations() -> None:
    from stable_baselines3.common.envs import SimpleMultiObsEnv

    env = SimpleMultiObsEnv(random_start=False)
    model = ARSM("MultiInputPolicy", env, pseudo_horizon=5, seed=0, policy_kwargs=dict(net_arch=[16]), n_steps=16).learn(32)
    assert model.num_pseudo_steps > 0
    with pytest.raises(ValueError, match="MultiInputPolicy"):
        ARSM("MlpPolicy", SimpleMultiObsEnv())


@pytest.mark.parametrize("estimator", ["arsm", "ars", "rloo"])
def test_update_without_pseudo_actions(estimator: str) -> None:
    """A near-deterministic policy has no pseudo action at any step: the update is exactly zero, not a crash."""
    model = ARSM("MlpPolicy", "CartPole-v1", estimator=estimator, seed=0, **SMALL)
    with th.no_grad():
        model.policy.logits_net[-1].bias.copy_(th.tensor([60.0, -60.0]))
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(64)
    assert model.num_pseudo_steps == 0
    assert model.logger.name_to_value["rollout/pseudo_step_share"] == 0.0
    for a, b in zip(before, model.policy.parameters(), strict=True):
        assert th.equal(a, b)


def test_no_signal_share_is_logged() -> None:
    """``train/no_signal_share``: 1 on MountainCar's untrained policy (every rollout reaches the time limit with the
    same return, so every step's estimate is exactly zero), below 1 on CartPole."""
    shares = {}
    for env_id in ("MountainCar-v0", "CartPole-v1"):
        model = ARSM("MlpPolicy", env_id, n_steps=64, max_pseudo_rollouts=8, seed=0)
        model.train(model.collect_update())
        shares[env_id] = model.logger.name_to_value["train/no_signal_share"]
    assert shares["MountainCar-v0"] == 1.0 and shares["CartPole-v1"] < 1.0


@pytest.mark.parametrize("activation", [th.nn.Tanh, th.nn.ReLU, th.nn.ELU])
def test_forward_is_the_modules_bit_for_bit(activation: type[th.nn.Module]) -> None:
    """ARSMPolicy.forward runs Linear, Tanh and ReLU as functions (no module dispatch) and other layers as modules:
    the logits and their gradients are those of the logits network called as a module."""
    policy = ARSM("MlpPolicy", "LunarLander-v3", policy_kwargs=dict(activation_fn=activation), seed=0).policy
    obs = th.as_tensor(np.random.default_rng(0).normal(size=(37, 8)).astype(np.float32))
    fast = policy(obs)
    fast.square().sum().backward()
    fast_grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    modules = policy.logits_net(policy.extract_features(obs, policy.features_extractor))
    modules.square().sum().backward()
    assert th.equal(fast, modules)
    assert all(th.equal(a, p.grad) for a, p in zip(fast_grads, policy.parameters(), strict=True))
