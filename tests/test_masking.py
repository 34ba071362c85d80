"""Action masks (sb3-contrib's convention): never an invalid real, pseudo or evaluated action, unbiased estimates over
the valid actions, the exact gradient of a masked MDP, and clear errors for bad masks."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv
from test_estimators import bonferroni_z
from test_exact_gradient import cosine_and_ratio, mean_update

from arsm_rl import ARSM, make_cloneable
from arsm_rl.actions import JointActions
from arsm_rl.cloning import check_cloneable, unverified_parts
from arsm_rl.estimators import ESTIMATORS, Draws, StepBatch
from envs import RandomMDP

th.set_num_threads(1)

MASKED_MDP = dict(n_states=4, n_actions=6, n_masked=3)


def parameters(model: ARSM) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.policy.parameters()]


def strategy_estimates(name: str, logits: np.ndarray, f: np.ndarray, n_draws: int, seed: int) -> tuple[np.ndarray, Any]:
    """``n_draws`` estimates of d E[f(z)] / d logits by an estimator's select-and-gradient path, the way an ARSM
    update runs it, with masked categories at ``-inf``; and its selection."""
    rng = np.random.default_rng(seed)
    joint = JointActions(np.array([len(logits)]), discrete=True)
    rows = np.repeat(logits[None].astype(np.float32), n_draws, axis=0)
    noise = joint.noise(rng, n_draws)
    true = joint.encode(joint.race(th.as_tensor(rows), noise))
    estimator = ESTIMATORS[name]()
    selection = estimator.select(Draws(joint, rows, noise, true), rng)
    batch = StepBatch(
        actions=joint,
        logits=th.as_tensor(rows, dtype=th.float64),
        noise=th.as_tensor(noise, dtype=th.float64).reshape(n_draws, -1),
        true_codes=true,
        q_true=f[true],
        selection=selection,
        values=None if selection is None else f[selection.codes],
    )
    return np.where(np.isfinite(logits), estimator.gradient(batch).numpy(), 0.0), selection


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_masked_categorical_is_unbiased_over_the_valid_actions(name: str) -> None:
    """C = 6 with categories 1 and 4 masked: every estimator's mean matches the softmax gradient over the valid
    actions (z-test; all-action exactly), the masked coordinates get exactly zero, and nothing masked is ever
    selected for a rollout."""
    gen = np.random.default_rng(6)
    logits, f = 0.7 * gen.normal(size=6), gen.normal(size=6)
    logits[[1, 4]] = -np.inf
    p = np.exp(logits - logits[np.isfinite(logits)].max())
    p /= p.sum()
    exact = p * (f - p @ f)
    n_draws = 40_000
    estimates, selection = strategy_estimates(name, logits, f, n_draws, seed=7)
    if selection is not None:
        assert np.isfinite(logits)[selection.codes].all()
    if name == "all_action":
        np.testing.assert_allclose(estimates, np.broadcast_to(exact, estimates.shape), atol=1e-6)
        return
    valid = np.isfinite(logits)
    error = np.abs(estimates.mean(0) - exact)[valid]
    standard_error = estimates.std(0)[valid] / math.sqrt(n_draws)
    assert (error <= bonferroni_z(4) * standard_error + 1e-12).all(), (error / standard_error).max()
    assert (estimates[:, ~valid] == 0).all()


@pytest.mark.parametrize("estimator", ["arsm", "rloo", "all_action"])
def test_mean_update_is_the_exact_gradient_of_a_masked_mdp(estimator: str) -> None:
    """With state-dependent masks (one of three actions masked per state), the mean update is the exact gradient
    of the softmax policy over each state's valid actions (tests/test_exact_gradient.py's check)."""
    update, exact = mean_update(estimator, n_calls=10, n_steps=50, n_envs=16, env_kwargs=dict(n_masked=1))
    assert (exact[~RandomMDP(n_masked=1).valid.T] == 0).all()
    cosine, ratio = cosine_and_ratio(update, exact)
    assert cosine >= 0.95, cosine
    assert ratio == pytest.approx(1.0, abs=0.15), ratio


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_no_invalid_action_in_real_or_pseudo_steps(estimator: str) -> None:
    """RandomMDP raises on a masked action, so training at all means every real, pseudo and tail action was valid."""
    env = make_vec_env(RandomMDP, n_envs=2, seed=0, env_kwargs=MASKED_MDP)
    model = ARSM("MlpPolicy", env, estimator=estimator, n_steps=32, ent_coef=0.01, seed=0)
    model.learn(128)
    assert all(np.isfinite(p).all() for p in parameters(model))
    if ESTIMATORS[estimator].rolls_out:
        assert model.num_pseudo_steps > 0


def test_masked_mdp_is_learned_to_its_optimum() -> None:
    """A linear policy reaches 95 % of the way from the uniform policy's value to the optimal one over the valid
    actions in 8k real steps (measured: 98.8 %)."""
    env = make_vec_env(RandomMDP, n_envs=4, seed=0, env_kwargs=MASKED_MDP)
    model = ARSM("MlpPolicy", env, n_steps=64, learning_rate=0.1, gamma=1.0, policy_kwargs=dict(net_arch=[]), seed=0)
    model.learn(8192)
    linear = model.policy.logits_net[0]
    table = (linear.weight.detach().numpy() + linear.bias.detach().numpy()[:, None]).T
    mdp = RandomMDP(**MASKED_MDP)
    uniform, best = mdp.policy_value(np.zeros_like(table)), mdp.optimal_value()
    assert (mdp.policy_value(table) - uniform) / (best - uniform) >= 0.95


def test_predict_and_maskable_evaluation_honour_masks() -> None:
    """``predict(obs, action_masks=...)`` never returns a masked action (deterministic or not), and sb3-contrib's
    maskable ``evaluate_policy`` and ``MaskableEvalCallback`` run ARSM models on the masked env."""
    env = make_vec_env(RandomMDP, n_envs=4, seed=0, env_kwargs=MASKED_MDP)
    model = ARSM("MlpPolicy", env, n_steps=16, seed=0)
    obs = env.reset()
    masks = np.stack(env.env_method("action_masks"))
    for deterministic in (True, False):
        for _ in range(20):
            actions, _ = model.predict(obs, deterministic=deterministic, action_masks=masks)
            assert masks[np.arange(4), actions].all()
    single, _ = model.predict(obs[0], deterministic=True, action_masks=masks[0])
    assert masks[0, int(single)]
    mean, _ = maskable_evaluate_policy(model, env, n_eval_episodes=5)
    assert np.isfinite(mean)
    eval_env = make_vec_env(RandomMDP, n_envs=1, seed=1, env_kwargs=MASKED_MDP)
    callback = MaskableEvalCallback(eval_env, eval_freq=16, n_eval_episodes=2)
    model.learn(64, callback=callback)
    assert callback.last_mean_reward != -np.inf


class MultiMasked(gym.Env[np.ndarray, np.ndarray]):
    """A MultiDiscrete([3, 4]) env whose masks depend on the state; raises on a masked action."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0, 1, shape=(4,), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete([3, 4])
        self.t = 0

    def _masks(self) -> np.ndarray:
        first = np.arange(3) != self.t % 3
        second = np.arange(4) >= self.t % 3
        return np.concatenate([first, second])

    def action_masks(self) -> np.ndarray:
        return self._masks()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = int(self.np_random.integers(3))
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.eye(4, dtype=np.float32)[self.t % 4]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        masks = self._masks()
        if not (masks[action[0]] and masks[3 + action[1]]):
            raise ValueError(f"masked action {action} at t={self.t}")
        self.t += 1
        return self._obs(), float(action[1] - action[0]), self.t >= 12, False, {}

    def clone_core_state(self) -> int:
        return self.t

    def restore_core_state(self, state: int) -> None:
        self.t = state


@pytest.mark.parametrize("estimator", ["arsm", "ars", "rloo", "reinforce"])
def test_multidiscrete_masks(estimator: str) -> None:
    """Per-dimension masks, concatenated: no masked action in any dimension, real or pseudo."""
    model = ARSM("MlpPolicy", make_vec_env(MultiMasked, n_envs=2, seed=0), estimator=estimator, n_steps=24, seed=0)
    model.learn(96)
    assert all(np.isfinite(p).all() for p in parameters(model))


def test_action_masker_on_taxi() -> None:
    """sb3-contrib's ActionMasker is a built-in, verified layer: Taxi-v4 under it clones exactly, and training never
    takes an action its mask forbids (counted by a wrapper below it)."""

    class Audit(gym.Wrapper):
        invalid = 0

        def step(self, action: Any) -> Any:
            base = self.env.unwrapped
            Audit.invalid += int(not base.action_mask(base.s)[action])
            return self.env.step(action)

    def make() -> gym.Env:
        env = Audit(gym.make("Taxi-v4"))
        return ActionMasker(env, lambda e: e.unwrapped.action_mask(e.unwrapped.s).astype(bool))

    assert unverified_parts(make_cloneable(ActionMasker(gym.make("Taxi-v4"), lambda e: np.ones(6, bool)))) == []
    check_cloneable(ActionMasker(gym.make("Taxi-v4"), lambda e: e.unwrapped.action_mask(e.unwrapped.s).astype(bool)))
    from arsm_rl.cloning import register_wrapper_state

    register_wrapper_state(Audit)  # stateless
    model = ARSM("MlpPolicy", make_vec_env(make, n_envs=2, seed=0), n_steps=64, pseudo_horizon=20, seed=0)
    model.learn(128)
    assert model.num_pseudo_steps > 0 and Audit.invalid == 0


def test_masked_training_is_the_same_with_subproc_envs_and_rollout_workers() -> None:
    """Masks read through SubprocVecEnv's env_method and inside a rollout worker give the same training."""

    def train(**kwargs: Any) -> list[np.ndarray]:
        vec_cls = kwargs.pop("vec_env_cls", None)
        extra = dict(vec_env_cls=vec_cls, wrapper_class=make_cloneable) if vec_cls else {}
        env = make_vec_env(RandomMDP, n_envs=2, seed=0, env_kwargs=MASKED_MDP, **extra)
        model = ARSM("MlpPolicy", env, n_steps=16, seed=0, **kwargs)
        model.learn(64)
        env.close()
        return parameters(model)

    reference = train()
    for got in (train(vec_env_cls=SubprocVecEnv), train(n_rollout_workers=1)):
        assert all((a == b).all() for a, b in zip(reference, got, strict=True))


class BadMasks(RandomMDP):
    """A masked RandomMDP whose masks are wrong: the wrong size, or empty."""

    def __init__(self, size: int = 6, empty: bool = False) -> None:
        super().__init__(**MASKED_MDP)
        self.size, self.empty = size, empty

    def action_masks(self) -> np.ndarray:
        return np.zeros(self.size, bool) if self.empty else np.ones(self.size, bool)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(size=4), r"action_masks\(\) of the training env gave an action mask of shape \(2, 4\): expected 6"),
        (dict(empty=True), r"allows no action \(state 0 of the batch\): every state needs at least one valid action"),
    ],
)
def test_bad_masks_give_one_clear_error(kwargs: dict[str, Any], message: str) -> None:
    """At training's first step (and at construction, when the env's snapshots are checked with random valid
    actions); and from ``predict``."""
    env = make_vec_env(BadMasks, n_envs=2, seed=0, env_kwargs=kwargs)
    at_construction = message.replace("of the training env", "of BadMasks").replace(r"\(2, 4\)", r"\(4,\)")
    with pytest.raises(ValueError, match=at_construction):
        ARSM("MlpPolicy", env, seed=0)
    model = ARSM("MlpPolicy", env, n_steps=8, seed=0, verify_env=False)
    with pytest.raises(ValueError, match=message):
        model.learn(16)
    with pytest.raises(ValueError, match=r"predict\(action_masks=...\) gave an action mask of shape \(3,\)"):
        model.predict(np.zeros(4, np.float32), action_masks=np.ones(3, bool))


def test_fork_vec_env_with_masks_is_refused() -> None:
    """ForkVecEnv's forked rollouts do not read masks yet: one clear error, not rollouts that ignore them."""
    from arsm_rl import ForkVecEnv

    env = make_vec_env(RandomMDP, n_envs=1, seed=0, env_kwargs=MASKED_MDP, vec_env_cls=ForkVecEnv)
    try:
        with pytest.raises(TypeError, match="ForkVecEnv does not read action masks inside its forked pseudo rollouts"):
            ARSM("MlpPolicy", env, seed=0)
    finally:
        env.close()
