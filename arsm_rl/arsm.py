"""ARSM policy gradient: a baseline-free "try-and-see self-critic" on Stable-Baselines3."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor, safe_mean
from stable_baselines3.common.vec_env import VecEnv

from arsm_rl.estimators import (
    all_action_gradient,
    ar_gradient,
    ars_gradient,
    arsm_gradient,
    race_actions,
    reinforce_gradient,
    rloo_gradient,
    swap_pseudo_actions,
)
from arsm_rl.policies import ARSMPolicy, CnnPolicy, MlpPolicy, MultiInputPolicy, action_dims
from arsm_rl.rollouts import ActFn, RolloutEngine, discounted_returns, enable_cloning

__all__ = ["ARSM", "ESTIMATORS"]

SelfARSM = TypeVar("SelfARSM", bound="ARSM")

#: Gradient estimators ``ARSM(estimator=...)`` accepts. ``arsm`` and ``ars`` roll out the distinct
#: swap pseudo actions; ``rloo`` and ``all_action`` are the self-critic peers (same rollout engine);
#: ``ar`` and ``reinforce`` use the real returns only.
ESTIMATORS = ("arsm", "ars", "ar", "reinforce", "rloo", "all_action")
_SWAP_ESTIMATORS = ("arsm", "ars")
_TINY = np.finfo(np.float32).tiny  # floor of the noise, so ln(noise) stays finite


@dataclass
class _Collected:
    """One update's real experience, time-major: index ``[t, e]`` is step t of sub-env e."""

    obs: Any  # (n, E, *obs_shape) array, or dict of such arrays
    logits: np.ndarray  # (n, E, sum(nvec)) float32, the logits the actions were drawn with
    noise: np.ndarray  # (n, E, K, C) float32 flat-Dirichlet draws (C = max(nvec))
    actions: np.ndarray  # (n, E, K) int64
    rewards: np.ndarray  # (n, E) float64, original (un-normalised) rewards
    dones: np.ndarray  # (n, E) bool, the episode ended with this step
    branches: list[list[Any]]  # [t][e] branch point before step t (empty lists when no rollouts are needed)
    tail_branches: dict[int, Any]  # e -> branch point after the last step (ongoing episode)
    tail_obs: Any  # (E, *obs_shape) observations after the last step


@dataclass
class _Plan:
    """Which real steps contribute to an update and which rollouts they need (rows are ``t * E + e``)."""

    true_codes: np.ndarray  # (B,) codes of the actions taken
    counts: np.ndarray  # (B,) rollouts each step would need
    used: np.ndarray = None  # type: ignore[assignment]  # (B,) bool, steps contributing to the gradient
    weight: float = 1.0  # Horvitz-Thompson weight of the used steps (1 unless the budget sub-samples)
    requests: list[tuple[int, int]] = field(default_factory=list)  # (row, action code) to roll out
    codes: np.ndarray | None = None  # (B, C, C) swap-matrix cells read by the swap estimators
    refs: np.ndarray | None = None  # (B,) ARS reference categories
    samples: np.ndarray | None = None  # (B, S) RLOO action codes, the true action first

    def __post_init__(self) -> None:
        if self.used is None:
            self.used = np.zeros(len(self.true_codes), dtype=bool)


class ARSM(BaseAlgorithm):
    """
    ARSM policy gradient (Augment-REINFORCE-Swap-Merge).

    Paper: Yin, Yue & Zhou, "ARSM: Augment-REINFORCE-Swap-Merge Estimator for Gradient
    Backpropagation Through Categorical Variables", ICML 2019, https://arxiv.org/abs/1905.01413.
    Authors' code (TensorFlow 1, read for reference): https://github.com/ARM-gradient/ARSM

    Actions are drawn by the exponential race a_t = argmin_i (ln varpi_{t,i} - phi_{t,i}) with
    flat-Dirichlet noise varpi_t (identical in law to sampling softmax(phi_t)). At visited steps,
    each distinct pseudo action a_t^{m<->j} (the race winner after swapping noise coordinates m
    and j) is tried on an exact snapshot of that step's environment state and rolled out with the
    current policy; the action values Q(s_t, .) fill the C x C matrix f of the ARSM estimator
    g_{t,c} = sum_j (f^{c<->j} - mean_m f^{m<->j}) (1/C - varpi_{t,j}) (paper sec. 4, eq. for the
    sequential ARSM policy gradient) and the loss is ``-(logits * g).sum()`` averaged over the
    update's real steps. There is no critic and no learned baseline: the spread of the pseudo
    actions' values is the learning signal. As in the authors' code, the per-step terms are not
    weighted by gamma^t (the usual undiscounted-state-distribution surrogate).

    The true action's value Q(s_t, a_t) is the real trajectory's discounted return from t. When
    that episode has not finished by the end of the update's data, its return is completed by one
    Monte-Carlo "tail" rollout of the current policy from an exact snapshot of the sub-env's last
    state: the real steps were taken with the same (not yet updated) policy, so the completed
    return is an unbiased estimate of Q(s_t, a_t), just like the pseudo actions' values.

    Pseudo rollouts run on scratch copies of the environment (never through the training
    ``VecEnv``), all rollouts of an update in lockstep with one batched policy call per step, and
    draw their noise from their own random stream: the real trajectory is the same whether they
    run or not, and ``num_timesteps`` counts real steps only.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or an :class:`ARSMPolicy` subclass
    :param env: env id, ``gym.Env`` or ``VecEnv`` (``DummyVecEnv``; ``SubprocVecEnv`` built with
        ``wrapper_class=make_cloneable``). Its state must be exactly cloneable (see ``arsm_rl.cloning``).
    :param learning_rate: learning rate, a float or a schedule of the progress remaining (from 1 to 0)
    :param n_steps: real steps per sub-env per update
    :param gamma: discount factor of the action values
    :param estimator: one of :data:`ESTIMATORS`: ``"arsm"`` (default); ``"ars"`` (one random
        reference category per step); ``"ar"`` and ``"reinforce"`` (real returns only, no
        rollouts); the matched-budget self-critic peers ``"rloo"`` (K = max(nvec) i.i.d. actions per
        step, the real one and K-1 fresh draws, leave-one-out baseline; each distinct action other
        than the real one is rolled out once) and ``"all_action"`` (every action rolled out, exact
        expectation over actions; ``Discrete`` only)
    :param max_pseudo_rollouts: budget of pseudo rollouts per update (tail rollouts not included);
        ``None`` rolls out at every informative step. Over budget, m informative steps are drawn
        uniformly at random, m = budget / (mean rollouts per informative step), and reweighted by
        (informative steps / m), which keeps the estimate unbiased (with one rollout per step, as
        for two actions, exactly ``max_pseudo_rollouts`` rollouts run).
    :param pseudo_horizon: maximum steps of a pseudo rollout (pseudo action included); the true
        action's value is cut at the same horizon. ``None`` rolls out to the end of the episode.
    :param share_noise: common random numbers: the policy steps of a pseudo rollout branching at
        step t reuse the real trajectory's noise varpi_{t+1}, varpi_{t+2}, ... (fresh noise past
        the update's data)
    :param ent_coef: entropy bonus coefficient
    :param max_grad_norm: gradient clipping norm, ``None`` to disable
    :param stats_window_size: episodes averaged in ``rollout/ep_rew_mean`` and ``rollout/ep_len_mean``
    :param tensorboard_log: TensorBoard log folder, ``None`` for none
    :param policy_kwargs: keyword arguments of the policy (``net_arch``, ``activation_fn``,
        ``optimizer_class``, ``optimizer_kwargs``, ``features_extractor_class``, ...)
    :param verbose: 0 silent, 1 training information, 2 debug
    :param seed: seed of every random stream (torch, numpy, the real and the pseudo noise)
    :param device: torch device; small MLPs are fastest on ``"cpu"``
    :param _init_setup_model: build the network at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: ARSMPolicy

    def __init__(
        self,
        policy: str | type[ARSMPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 0.01,
        n_steps: int = 256,
        gamma: float = 0.99,
        estimator: str = "arsm",
        max_pseudo_rollouts: int | None = None,
        pseudo_horizon: int | None = None,
        share_noise: bool = False,
        ent_coef: float = 0.0,
        max_grad_norm: float | None = 0.5,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
            supported_action_spaces=(spaces.Discrete, spaces.MultiDiscrete),
        )
        if estimator not in ESTIMATORS:
            raise ValueError(f"Unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}.")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}.")
        if max_pseudo_rollouts is not None and max_pseudo_rollouts < 1:
            raise ValueError(f"max_pseudo_rollouts must be None or >= 1, got {max_pseudo_rollouts}.")
        if pseudo_horizon is not None and pseudo_horizon < 1:
            raise ValueError(f"pseudo_horizon must be None or >= 1, got {pseudo_horizon}.")
        self.n_steps = n_steps
        self.gamma = gamma
        self.estimator = estimator
        self.max_pseudo_rollouts = max_pseudo_rollouts
        self.pseudo_horizon = pseudo_horizon
        self.share_noise = share_noise
        self.ent_coef = ent_coef
        self.max_grad_norm = max_grad_norm
        self.num_pseudo_steps = 0
        self.num_restore_steps = 0  # the part of num_pseudo_steps spent replaying snapshots (Box2D)
        self._engine: RolloutEngine | None = None
        self._grad_ema: tuple[th.Tensor, th.Tensor] | None = None
        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        # Refuse unsupported action spaces before anything else, then make the sub-envs cloneable.
        try:
            action_dims(env.action_space)
        except ValueError as error:
            raise AssertionError(str(error)) from None
        venv = BaseAlgorithm._wrap_env(env, verbose, monitor_wrapper)
        enable_cloning(venv)
        return venv

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.estimator == "all_action" and not isinstance(self.action_space, spaces.Discrete):
            raise ValueError("estimator='all_action' needs a Discrete action space (MultiDiscrete has too many joint actions)")
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        nvec = action_dims(self.action_space)
        self._n_categories = int(nvec.max())
        # valid[k, c]: category c exists in dimension k (smaller dimensions are padded with
        # impossible categories, logit -inf, so every dimension races over max(nvec) coordinates).
        self._valid = th.as_tensor(np.arange(self._n_categories)[None, :] < nvec[:, None])
        self._strides = np.concatenate([[1], np.cumprod(nvec[:-1])]).astype(np.int64)
        self._nvec = nvec

    def set_random_seed(self, seed: int | None = None) -> None:
        """Seed torch, numpy, the action space and ARSM's two noise streams (real and pseudo)."""
        super().set_random_seed(seed)
        self._real_rng = np.random.default_rng(seed)
        self._pseudo_rng = np.random.default_rng(None if seed is None else [seed, 1])

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_engine", "_real_rng", "_pseudo_rng", "_grad_ema", "_valid"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    # ------------------------------------------------------------------ sampling helpers

    def _noise(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """Flat-Dirichlet draws, (batch, K, C) float32: normalised Exp(1) variables."""
        expo = rng.standard_exponential((batch, len(self._nvec), self._n_categories))
        noise = (expo / expo.sum(-1, keepdims=True)).astype(np.float32)
        return np.maximum(noise, _TINY)

    def _padded(self, logits: th.Tensor) -> th.Tensor:
        """(B, sum(nvec)) logits -> (B, K, C), impossible padding categories at -inf."""
        out = th.full((len(logits), *self._valid.shape), -th.inf, dtype=logits.dtype, device=logits.device)
        out[:, self._valid] = logits
        return out

    def _race(self, logits: th.Tensor, noise: np.ndarray) -> np.ndarray:
        """Race winners per dimension, (B, K) int64."""
        padded = self._padded(logits).cpu()
        k, c = self._valid.shape
        return race_actions(padded.reshape(-1, c), th.as_tensor(noise).reshape(-1, c)).reshape(-1, k).numpy()

    def _codes(self, actions: np.ndarray) -> np.ndarray:
        """Joint actions (..., K) -> integer codes (...) (mixed radix)."""
        return (actions * self._strides).sum(-1)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        """Integer codes (...) -> joint actions (..., K)."""
        return (codes[..., None] // self._strides) % self._nvec

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        return actions[..., 0] if isinstance(self.action_space, spaces.Discrete) else actions

    def _swap_codes(self, logits: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Joint pseudo actions of every swap (m, j), as codes (B, C, C); the diagonal is the true action."""
        k, c = self._valid.shape
        padded = self._padded(th.as_tensor(logits)).reshape(-1, c)
        swaps = swap_pseudo_actions(padded, th.as_tensor(noise).reshape(-1, c)).reshape(-1, k, c, c).numpy()
        return np.einsum("bkmj,k->bmj", swaps, self._strides)

    # ------------------------------------------------------------------ learning loop

    def learn(
        self: SelfARSM,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "ARSM",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfARSM:
        iteration = 0
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        while self.num_timesteps < total_timesteps:
            collected = self._collect(self.env, callback)
            if collected is None:
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if log_interval is not None and iteration % log_interval == 0:
                self.dump_logs(iteration)
            self.train(collected)
        callback.on_training_end()
        return self

    def _collect(self, env: VecEnv, callback: BaseCallback) -> _Collected | None:
        """Take ``n_steps`` real steps in every sub-env, keeping branch points where rollouts may start."""
        assert self._last_obs is not None
        if self._engine is None or self._engine.venv is not env:  # one engine (and scratch pool) per training env
            self._engine = RolloutEngine(env)
        self.policy.set_training_mode(False)
        n, n_envs = self.n_steps, env.num_envs
        obs_list: list[Any] = []
        logits_list, noise_list, action_list, reward_list, done_list = [], [], [], [], []
        branches: list[list[Any]] = []
        # Snapshots are cheap (about one env step, see docs/cloning.md); taking one at every step lets
        # the update decide which steps to roll out from, all at once.
        rollout_envs = [] if self.estimator in ("ar", "reinforce") else list(range(n_envs))
        callback.on_rollout_start()
        for _ in range(n):
            with th.no_grad():
                logits = self.policy(obs_as_tensor(self._last_obs, self.device)).float().cpu()  # type: ignore[arg-type]
            noise = self._noise(self._real_rng, n_envs)
            actions = self._race(logits, noise)
            branches.append(self._engine.branch_points(rollout_envs))
            new_obs, rewards, dones, infos = env.step(self._env_actions(actions))
            if self._vec_normalize_env is not None:
                rewards = self._vec_normalize_env.get_original_reward()
            self.num_timesteps += n_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return None
            self._update_info_buffer(infos, dones)
            obs_list.append(self._last_obs)
            logits_list.append(logits.numpy())
            noise_list.append(noise)
            action_list.append(actions)
            reward_list.append(np.asarray(rewards, dtype=np.float64))
            done_list.append(np.asarray(dones, dtype=bool))
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
        ongoing = [e for e in range(n_envs) if not done_list[-1][e]]
        tail_branches = dict(zip(ongoing, self._engine.branch_points(ongoing), strict=True))
        callback.on_rollout_end()
        obs: Any
        if isinstance(obs_list[0], dict):
            obs = {key: np.stack([o[key] for o in obs_list]) for key in obs_list[0]}
        else:
            obs = np.stack(obs_list)
        return _Collected(
            obs=obs,
            logits=np.stack(logits_list),
            noise=np.stack(noise_list),
            actions=np.stack(action_list),
            rewards=np.stack(reward_list),
            dones=np.stack(done_list),
            branches=branches,
            tail_branches=tail_branches,
            tail_obs=self._last_obs,
        )

    @staticmethod
    def _read_codes(codes: np.ndarray, refs: np.ndarray | None) -> np.ndarray:
        """The cells of the swap matrix the estimator reads: all of them, or (ARS) the reference column."""
        if refs is None:
            return codes
        column = codes[np.arange(len(codes)), :, refs]  # (B, C): swaps (m, ref)
        return np.broadcast_to(column[:, :, None], codes.shape)

    def _distinct_pseudo(self, codes: np.ndarray, true_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """
        :param codes: (B, ...) joint action codes per step
        :param true_codes: (B,) the true actions' codes
        :return: (rows, codes) of every distinct pseudo action other than the true one, sorted by row
        """
        rows, distinct, _ = _distinct_per_row(codes, int(np.prod(self._nvec)))
        keep = distinct != true_codes[rows]
        return rows[keep], distinct[keep]

    # ------------------------------------------------------------------ update

    def train(self, collected: _Collected) -> None:  # type: ignore[override]
        """One gradient step from an update's real experience and its pseudo rollouts."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        start = time.perf_counter()
        n, n_envs = collected.rewards.shape
        plan = self._plan(collected)

        # The true action's value is needed at every used step; an episode still running at the end
        # of the data gets one tail rollout to complete its return.
        used = plan.used.reshape(n, n_envs)
        horizon_of = {e: self._tail_horizon(used[:, e], collected.dones[:, e]) for e in collected.tail_branches}
        tails = [e for e, horizon in horizon_of.items() if horizon != 0]
        tail_horizons = [horizon_of[e] for e in tails]
        values, tail_rewards, pseudo_steps, restore_steps = self._rollout_values(
            collected, plan.requests, tails, tail_horizons
        )
        q_true = self._true_values(collected, tails, tail_rewards).reshape(-1)
        rollout_seconds = time.perf_counter() - start

        grads = self._step_gradients(plan, collected, q_true, values)
        obs = obs_as_tensor(_flatten_obs(collected.obs, n * n_envs), self.device)
        logits = self.policy(obs)
        distribution = self.policy.action_dist.proba_distribution(action_logits=logits)
        rows = th.as_tensor(np.flatnonzero(plan.used), device=self.device)
        weighted = th.as_tensor(plan.weight * grads, dtype=logits.dtype, device=self.device)
        pg_loss = -(logits[rows] * weighted).sum() / (n * n_envs)
        entropy = distribution.entropy()
        assert entropy is not None
        entropy_loss = -th.mean(entropy)
        loss = pg_loss + self.ent_coef * entropy_loss
        self.policy.optimizer.zero_grad()
        loss.backward()
        grad_norm, grad_log_variance = self._gradient_diagnostics()
        if self.max_grad_norm is not None:
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        self._n_updates += 1
        self.num_pseudo_steps += pseudo_steps
        self.num_restore_steps += restore_steps

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/policy_gradient_loss", pg_loss.item())
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/grad_norm", grad_norm)
        self.logger.record("train/grad_log_variance", grad_log_variance)
        self.logger.record("rollout/pseudo_actions_per_step", float(plan.counts.mean()))
        self.logger.record("rollout/pseudo_step_share", float((plan.counts > 0).mean()))
        self.logger.record("rollout/pseudo_rollouts", len(plan.requests))
        self.logger.record("rollout/tail_rollouts", len(tails))
        self.logger.record("rollout/pseudo_steps", pseudo_steps)
        self.logger.record("rollout/restore_steps", restore_steps)
        self.logger.record("time/total_pseudo_steps", self.num_pseudo_steps)
        self.logger.record("time/total_restore_steps", self.num_restore_steps)
        self.logger.record("time/total_env_steps", self.num_timesteps + self.num_pseudo_steps)
        self.logger.record("time/pseudo_fps", int(pseudo_steps / max(rollout_seconds, sys.float_info.epsilon)))

    def _plan(self, collected: _Collected) -> _Plan:
        """Choose the steps that contribute to the update and the rollouts they need."""
        n_rows = collected.rewards.size
        logits = collected.logits.reshape(n_rows, -1)
        true_codes = self._codes(collected.actions.reshape(n_rows, -1))
        plan = _Plan(true_codes=true_codes, counts=np.zeros(n_rows, dtype=np.int64))
        if self.estimator in ("ar", "reinforce"):
            plan.used = np.ones(n_rows, dtype=bool)
            return plan
        if self.estimator in _SWAP_ESTIMATORS:
            noise = collected.noise.reshape(n_rows, *collected.noise.shape[2:])
            plan.refs = self._pseudo_rng.integers(self._n_categories, size=n_rows) if self.estimator == "ars" else None
            plan.codes = self._read_codes(self._swap_codes(logits, noise), plan.refs)
            rows, codes = self._distinct_pseudo(plan.codes, true_codes)
        elif self.estimator == "rloo":
            k = self._n_categories
            extra = self._race(th.as_tensor(np.repeat(logits, k - 1, axis=0)), self._noise(self._pseudo_rng, n_rows * (k - 1)))
            plan.samples = np.concatenate([true_codes[:, None], self._codes(extra).reshape(n_rows, k - 1)], axis=1)
            # Like ARSM, each distinct action is valued once and the real action by the real return: the
            # estimate is linear in the values, so sharing a value between equal actions keeps it unbiased.
            rows, codes = self._distinct_pseudo(plan.samples, true_codes)
        else:  # all_action
            every = np.tile(np.arange(self._n_categories), n_rows)
            rows = np.repeat(np.arange(n_rows), self._n_categories)
            rows, codes = rows[every != true_codes[rows]], every[every != true_codes[rows]]
        plan.counts = np.bincount(rows, minlength=n_rows)
        informative = np.flatnonzero(plan.counts > 0)
        budget = self.max_pseudo_rollouts
        if budget is not None and plan.counts.sum() > budget:
            m = max(1, int(budget * len(informative) / plan.counts.sum()))
            informative = self._pseudo_rng.choice(informative, size=m, replace=False)
            plan.weight = plan.counts.astype(bool).sum() / m
        plan.used[informative] = True
        keep = plan.used[rows]
        plan.requests = list(zip(rows[keep].tolist(), codes[keep].tolist(), strict=True))
        return plan

    def _tail_horizon(self, used: np.ndarray, dones: np.ndarray) -> int | None:
        """
        Steps a tail rollout must run for the used steps of the episode still running at the end of
        the data: ``None`` for the whole episode, 0 when no tail is needed.
        """
        start = _trailing_start(dones)
        needed = np.flatnonzero(used[start:])
        if dones[-1] or len(needed) == 0:
            return 0
        if self.pseudo_horizon is None:
            return None
        # the last used step reaches furthest past the data: h - (n - t_last) rewards are missing
        return max(0, self.pseudo_horizon - (len(used) - (start + int(needed[-1]))))

    def _act_fn(self, branch_steps: np.ndarray, branch_envs: np.ndarray, real_noise: np.ndarray) -> ActFn:
        """Policy of pseudo rollouts: race with pseudo noise (or the real noise, with ``share_noise``)."""
        n = len(real_noise)

        def act(obs: Any, ids: np.ndarray, depth: int) -> np.ndarray:
            with th.no_grad():
                logits = self.policy(obs_as_tensor(obs, self.device)).float().cpu()
            noise = self._noise(self._pseudo_rng, len(ids))
            if self.share_noise:
                steps = branch_steps[ids] + depth
                shared = (branch_steps[ids] >= 0) & (steps < n)
                noise[shared] = real_noise[steps[shared], branch_envs[ids][shared]]
            return self._env_actions(self._race(logits, noise))

        return act

    def _rollout_values(
        self, collected: _Collected, requests: list[tuple[int, int]], tails: list[int], tail_horizons: list[int | None]
    ) -> tuple[np.ndarray, list[np.ndarray], int, int]:
        """
        Run every pseudo and tail rollout of the update in one lockstep batch.

        :return: pseudo values (R,), tail reward sequences, simulator steps spent, and the part of them spent
            replaying snapshots
        """
        assert self._engine is not None
        n_envs = collected.rewards.shape[1]
        branches = [collected.branches[row // n_envs][row % n_envs] for row, _ in requests]
        branches += [collected.tail_branches[e] for e in tails]
        steps = [row // n_envs for row, _ in requests] + [-1] * len(tails)  # tails never share the real noise
        envs = [row % n_envs for row, _ in requests] + tails
        first = self._decode(np.array([code for _, code in requests], dtype=np.int64).reshape(-1))
        if tails:
            with th.no_grad():
                tail_logits = self.policy(obs_as_tensor(_select_rows(collected.tail_obs, tails), self.device)).float().cpu()
            first = np.concatenate([first, self._race(tail_logits, self._noise(self._pseudo_rng, len(tails)))])
        if not branches:
            return np.zeros(0), [], 0, 0
        act = self._act_fn(np.array(steps), np.array(envs), collected.noise)
        horizons = [self.pseudo_horizon] * len(requests) + tail_horizons
        batch = self._engine.run(branches, self._env_actions(first), act, horizons)
        ends = np.arange(batch.rewards.shape[1])[None, :] == batch.lengths[:, None] - 1
        values = discounted_returns(batch.rewards.T, ends.T, self.gamma)[0]
        tail_rewards = [batch.rewards[len(requests) + i, : batch.lengths[len(requests) + i]] for i in range(len(tails))]
        return values[: len(requests)], tail_rewards, batch.env_steps, batch.restore_steps

    def _true_values(self, collected: _Collected, tails: list[int], tail_rewards: list[np.ndarray]) -> np.ndarray:
        """Q(s_t, a_t), (n, E), from the real rewards completed by tail rollouts; NaN where unknown."""
        n, n_envs = collected.rewards.shape
        values = np.full((n, n_envs), np.nan)
        tail_of = dict(zip(tails, tail_rewards, strict=True))
        for e in range(n_envs):
            rewards, dones = collected.rewards[:, e], collected.dones[:, e]
            # Without a tail, values in the still-running episode are known only where their horizon fits.
            if e in tail_of or dones[-1]:
                unknown_from = n
            elif self.pseudo_horizon is None:
                unknown_from = _trailing_start(dones)
            else:
                unknown_from = max(_trailing_start(dones), n - self.pseudo_horizon + 1)
            if e in tail_of:
                tail = tail_of[e]
                rewards = np.concatenate([rewards, tail])
                dones = np.concatenate([dones, np.arange(len(tail)) == len(tail) - 1])
            values[:unknown_from, e] = discounted_returns(rewards, dones, self.gamma, self.pseudo_horizon)[:unknown_from]
        return values

    def _step_gradients(self, plan: _Plan, collected: _Collected, q_true: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per-step estimates of d E[Q] / d logits at the used steps, (U, sum(nvec))."""
        used = np.flatnonzero(plan.used)
        k, c = self._valid.shape
        q = q_true[used]
        if np.isnan(q).any():
            raise RuntimeError("internal error: a used step has no value for its true action")
        value_of = dict(zip(plan.requests, values.tolist(), strict=True))
        true_codes = plan.true_codes[used]

        def lookup(codes: np.ndarray) -> np.ndarray:
            """Values of per-step action codes (U, ...): the true action's or a rollout's."""
            rows, distinct, inverse = _distinct_per_row(codes, int(np.prod(self._nvec)))
            found = [
                q[r] if a == true_codes[r] else value_of[(int(used[r]), int(a))] for r, a in zip(rows, distinct, strict=True)
            ]
            return np.asarray(found)[inverse].reshape(codes.shape)

        n_rows = len(collected.logits.reshape(-1, collected.logits.shape[-1]))
        logits = self._padded(th.as_tensor(collected.logits.reshape(n_rows, -1)[used], dtype=th.float64)).reshape(-1, c)
        noise = th.as_tensor(collected.noise.reshape(n_rows, k, c)[used], dtype=th.float64).reshape(-1, c)
        if self.estimator == "arsm":
            assert plan.codes is not None
            g = arsm_gradient(noise, th.as_tensor(lookup(plan.codes[used])).repeat_interleave(k, dim=0))
        elif self.estimator == "ars":
            assert plan.codes is not None and plan.refs is not None
            f = th.as_tensor(lookup(plan.codes[used])).repeat_interleave(k, dim=0)
            g = ars_gradient(noise, f, th.as_tensor(plan.refs[used]).repeat_interleave(k))
        elif self.estimator == "ar":
            g = ar_gradient(noise, th.as_tensor(q).repeat_interleave(k))
        elif self.estimator == "reinforce":
            actions = th.as_tensor(self._decode(true_codes)).reshape(-1)
            g = reinforce_gradient(logits, actions, th.as_tensor(q).repeat_interleave(k))
        elif self.estimator == "rloo":
            assert plan.samples is not None
            samples = plan.samples[used]  # (U, S) codes, the true action first
            actions = th.as_tensor(self._decode(samples)).permute(0, 2, 1).reshape(-1, samples.shape[1])
            g = rloo_gradient(logits, actions, th.as_tensor(lookup(samples)).repeat_interleave(k, dim=0))
        else:  # all_action: one dimension
            every = np.broadcast_to(np.arange(c), (len(used), c))
            g = all_action_gradient(logits, th.as_tensor(lookup(every)))
        return g.reshape(len(used), k, c)[:, self._valid].numpy()

    def _gradient_diagnostics(self) -> tuple[float, float]:
        """Gradient norm and the paper's variance diagnostic: mean over parameters of log Var[grad] (EMA, weight 0.01)."""
        grad = th.cat([p.grad.reshape(-1) for p in self.policy.parameters() if p.grad is not None]).detach()
        if self._grad_ema is None:
            self._grad_ema = (grad.clone(), grad.square())
        else:
            mean, square = self._grad_ema
            self._grad_ema = (0.99 * mean + 0.01 * grad, 0.99 * square + 0.01 * grad.square())
        mean, square = self._grad_ema
        variance = (square - mean.square()).clamp(min=0.0)
        return grad.norm().item(), th.log(variance + 1e-20).mean().item()

    def dump_logs(self, iteration: int = 0) -> None:
        """Write SB3's ``rollout/`` and ``time/`` keys, then dump everything recorded."""
        assert self.ep_info_buffer is not None and self.ep_success_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        if iteration > 0:
            self.logger.record("time/iterations", iteration, exclude="tensorboard")
        if len(self.ep_info_buffer) > 0 and len(self.ep_info_buffer[0]) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep_info["r"] for ep_info in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep_info["l"] for ep_info in self.ep_info_buffer]))
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        if len(self.ep_success_buffer) > 0:
            self.logger.record("rollout/success_rate", safe_mean(self.ep_success_buffer))
        self.logger.dump(step=self.num_timesteps)


def _distinct_per_row(codes: np.ndarray, n_joint: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Distinct codes of each row of ``codes`` (B, ...), codes in [0, n_joint).

    :return: (rows, codes) of the distinct (row, code) pairs, sorted, and the inverse index mapping
        each entry of ``codes`` to its pair
    """
    flat = codes.reshape(len(codes), int(np.prod(codes.shape[1:])))  # explicit width: B may be 0
    keys, inverse = np.unique(np.arange(len(codes))[:, None] * n_joint + flat, return_inverse=True)
    rows, distinct = np.divmod(keys, n_joint)
    return rows, distinct, inverse


def _flatten_obs(obs: Any, total: int) -> Any:
    """Time-major (n, E, ...) observations to (n * E, ...) rows."""
    if isinstance(obs, dict):
        return {key: value.reshape(total, *value.shape[2:]) for key, value in obs.items()}
    return obs.reshape(total, *obs.shape[2:])


def _select_rows(obs: Any, rows: list[int]) -> Any:
    return {key: value[rows] for key, value in obs.items()} if isinstance(obs, dict) else obs[rows]


def _trailing_start(dones: np.ndarray) -> int:
    """First step of the episode still running at the end of ``dones`` (0 if none ended)."""
    ended = np.flatnonzero(dones)
    return int(ended[-1]) + 1 if len(ended) else 0


