"""ARSM policy gradient: a baseline-free "try-and-see self-critic" on Stable-Baselines3."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
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

from arsm_rl.actions import JointActions
from arsm_rl.cloning import register_optional_envs, vec_masks
from arsm_rl.collection import EarlyRollouts, StepRecord, draw_update
from arsm_rl.critic import (
    TransitionReplay,
    closing_values,
    critic_values,
    state_values,
    train_critic,
    update_transitions,
)
from arsm_rl.estimators import ESTIMATORS, Draws, Estimator
from arsm_rl.policies import ARSMPolicy, CnnPolicy, MlpPolicy, MultiInputPolicy, action_dims, observation_space_problem
from arsm_rl.rollouts import (
    BranchPoint,
    Obs,
    RacePolicy,
    RolloutEngine,
    race_policy,
    true_values,
)
from arsm_rl.rollouts.workers import WorkerSettings
from arsm_rl.settings import as_schedule, check_settings, prepare_env
from arsm_rl.updates import (
    RolloutValues,
    UpdateData,
    UpdatePlan,
    UpdateReport,
    costly_warning,
    keep_probability,
    plan_update,
    policy_gradient_step,
    record_update,
    step_gradients,
)
from arsm_rl.valuation import tail_rollouts, value_rollouts

__all__ = ["ARSM"]

SelfARSM = TypeVar("SelfARSM", bound="ARSM")


class ARSM(BaseAlgorithm):
    """
    ARSM policy gradient (Augment-REINFORCE-Swap-Merge).

    Paper: Yin, Yue & Zhou, "ARSM: Augment-REINFORCE-Swap-Merge Estimator for Gradient
    Backpropagation Through Categorical Variables", ICML 2019, https://arxiv.org/abs/1905.01413.
    Authors' code (TensorFlow 1, read for reference): https://github.com/ARM-gradient/ARSM

    Actions are drawn by the exponential race a_t = argmin_i (ln varpi_{t,i} - phi_{t,i}) with flat-Dirichlet noise
    varpi_t (identical in law to sampling softmax(phi_t)). At visited steps, each distinct pseudo action a_t^{m<->j}
    (the race winner after swapping noise coordinates m and j) is tried on an exact snapshot of that step's environment
    state and rolled out with the current policy; the action values Q(s_t, .) fill the C x C matrix f of the ARSM
    estimator g_{t,c} = sum_j (f^{c<->j} - mean_m f^{m<->j}) (1/C - varpi_{t,j}) (paper sec. 4, eq. for the sequential
    ARSM policy gradient) and the loss is ``-(logits * g).sum()`` averaged over the update's real steps. There is no
    critic and no learned baseline: the spread of the pseudo actions' values is the learning signal. As in the authors'
    code, the per-step terms are not weighted by gamma^t (the usual undiscounted-state-distribution surrogate).

    The true action's value Q(s_t, a_t) is the real trajectory's discounted return from t. When that episode has not
    finished by the end of the update's data, its return is completed by one Monte-Carlo "tail" rollout of the current
    policy from an exact snapshot of the sub-env's last state: the real steps were taken with the same (not yet updated)
    policy, so the completed return is an unbiased estimate of Q(s_t, a_t), just like the pseudo actions' values.

    Pseudo rollouts run on scratch copies of the environment (never through the training ``VecEnv``), all rollouts of an
    update in lockstep with one batched policy call per step, and draw their noise from their own random stream: the
    real trajectory is the same whether they run or not, and ``num_timesteps`` counts real steps only.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or an :class:`ARSMPolicy` subclass
    :param env: env id, ``gym.Env`` or ``VecEnv`` (``DummyVecEnv``; ``SubprocVecEnv`` built with ``wrapper_class=
        make_cloneable``; ``ForkVecEnv``). Its state must be exactly cloneable (``arsm_rl.cloning``; forks clone any).
    :param learning_rate: learning rate, a float or a schedule of the progress remaining (from 1 to 0)
    :param n_steps: real steps per sub-env per update
    :param gamma: discount factor of the action values
    :param estimator: a name in :data:`~arsm_rl.estimators.ESTIMATORS`: ``"arsm"`` (default); ``"ars"`` (one random
        reference category per step); ``"ar"`` and ``"reinforce"`` (real returns only, no rollouts); the matched-budget
        self-critic peers ``"rloo"`` (K = max(nvec) i.i.d. actions per step, the real one and K-1 fresh draws,
        leave-one-out baseline; each distinct action other than the real one is rolled out once) and ``"all_action"``
        (every action rolled out, exact expectation over actions; ``Discrete`` only); or any estimator registered with
        :func:`~arsm_rl.estimators.register_estimator`. It may be set later too (``model.estimator = "rloo"``).
    :param max_pseudo_rollouts: budget of pseudo rollouts per update (tail rollouts not included); ``None`` rolls out at
        every informative step. Over budget, m informative steps are drawn uniformly at random, m = budget / (mean
        rollouts per informative step), and reweighted by (informative steps / m), which keeps the estimate unbiased
        (with one rollout per step, as for two actions, exactly ``max_pseudo_rollouts`` rollouts run).
    :param budget_sampling: when the budget's steps are drawn. ``"update"``: the fixed-size subset above, once the
        update's steps are taken. ``"step"``: each step is kept with a probability p fixed before the update and
        reweighted by 1/p (unbiased), p = budget / (the rollouts the previous update's steps asked for), so about
        ``max_pseudo_rollouts`` rollouts run on average; the draw is made when the step's actions are, so a
        :class:`~arsm_rl.ForkVecEnv` snapshots only the kept steps (a fork each) instead of every informative one
    :param pseudo_horizon: maximum steps of a pseudo rollout (pseudo action included); the true action's value is cut at
        the same horizon. ``None`` rolls out to the end of the episode.
    :param share_noise: common random numbers: the policy steps of a pseudo rollout branching at step t reuse the real
        trajectory's noise varpi_{t+1}, varpi_{t+2}, ... (fresh noise past the update's data)
    :param action_values: how the actions an estimator selects are valued (``docs/arsm.md``, "Three ways to value an
        action"). ``"rollout"`` (default): rollouts with the current policy from exact clones, to the episode's end or
        ``pseudo_horizon``; the true action by its real return. ``"critic"`` (CARSM): a learned action-value critic
        Q(s, a) (:mod:`arsm_rl.critic`) values every selected action, the true one included, so no env is cloned and
        no simulator step is spent (envs that cannot be cloned train too). ``"bootstrap"``: rollouts from exact clones
        cut at ``pseudo_horizon`` (required) and closed with gamma^h V(s_h), V(s) = sum_a pi(a|s) Q(s, a) from the
        critic, the true action's real return closed the same way. The critic is valued before it learns from the
        update's own transitions, then takes ``critic_gradient_steps`` expected-SARSA steps on its replay
    :param critic_learning_rate: learning rate of the critic's optimizer (a float or a schedule of the progress remaining)
    :param critic_buffer_size: real transitions kept in the critic's replay
    :param critic_batch_size: transitions per critic step
    :param critic_gradient_steps: critic steps per update (0 keeps the critic as it is, e.g. one you set)
    :param critic_tau: soft update coefficient of the critic's target network, per critic step
    :param ent_coef: entropy bonus coefficient
    :param max_grad_norm: gradient clipping norm, ``None`` to disable
    :param n_rollout_workers: 0 runs the rollouts in the training process; N >= 1 shares each update's rollouts out
        among N persistent worker processes and the trainer (started without waiting by the first update, kept for the
        model's life: :meth:`start_rollout_workers`, :meth:`close_rollout_workers`), with the same result bit for bit:
        each rollout draws its own noise and gets its own policy rows. Idle workers start rollouts while the update is
        still collected where each step's rollouts are known as it is taken (``"arsm"`` or ``"all_action"``, without a
        budget or with ``budget_sampling="step"``: :class:`~arsm_rl.collection.EarlyRollouts`)
    :param rollout_backend: where the workers run, a name in :data:`~arsm_rl.rollouts.BACKENDS`: ``"subproc"`` (local
        processes) or ``"ray"`` (Ray actors: the cluster of an earlier ``ray.init(address=...)`` or of ``RAY_ADDRESS``,
        else a local Ray; ``pip install ray``)
    :param verify_env: before training on an env (at construction, :meth:`set_env` and :meth:`load`), check on a scratch
        copy that its snapshots restore exactly when they use anything but the built-in, tested methods, and, without
        ``pseudo_horizon`` or a time limit, that an episode of random actions ends
        (:func:`~arsm_rl.rollouts.verify_rollouts`, a fraction of a second); ``False`` skips the checks (you vouch for
        the env)
    :param stats_window_size: episodes averaged in ``rollout/ep_rew_mean`` and ``rollout/ep_len_mean``
    :param tensorboard_log: TensorBoard log folder, ``None`` for none
    :param policy_kwargs: keyword arguments of the policy (``net_arch``, ``activation_fn``, ``optimizer_class``,
        ``optimizer_kwargs``, ``features_extractor_class``, ...)
    :param verbose: 0 silent, 1 training information, 2 debug
    :param seed: seed of every random stream (torch, numpy, the real and the pseudo noise)
    :param device: torch device; small MLPs are fastest on ``"cpu"``
    :param _init_setup_model: build the network at construction
    :ivar last_update: :class:`UpdateReport` of the last update (its plan, rollouts and seconds per part), or ``None``
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
        budget_sampling: str = "update",
        pseudo_horizon: int | None = None,
        share_noise: bool = False,
        action_values: str = "rollout",
        critic_learning_rate: float | Schedule = 1e-3,
        critic_buffer_size: int = 100_000,
        critic_batch_size: int = 256,
        critic_gradient_steps: int = 50,
        critic_tau: float = 0.01,
        ent_coef: float = 0.0,
        max_grad_norm: float | None = 0.5,
        n_rollout_workers: int = 0,
        rollout_backend: str = "subproc",
        verify_env: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if isinstance(env, str):
            register_optional_envs(env)  # ALE and MiniGrid ids, which train.py finds too
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
            supported_action_spaces=(spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        check_settings(n_steps, max_pseudo_rollouts, budget_sampling, pseudo_horizon, action_values, n_rollout_workers,
                       critic_buffer_size, critic_batch_size, critic_gradient_steps, critic_tau)  # fmt: skip
        self.n_rollout_workers = n_rollout_workers
        self.rollout_backend = rollout_backend
        self.n_steps = n_steps
        self.gamma = gamma
        self.estimator = estimator
        self.max_pseudo_rollouts = max_pseudo_rollouts
        self.budget_sampling = budget_sampling
        self._asked_rollouts: int | None = None  # rollouts the last update's steps asked for, before the budget
        self.pseudo_horizon = pseudo_horizon
        self.share_noise = share_noise
        self.action_values = action_values
        self.critic_learning_rate = critic_learning_rate
        self.critic_buffer_size = critic_buffer_size
        self.critic_batch_size = critic_batch_size
        self.critic_gradient_steps = critic_gradient_steps
        self.critic_tau = critic_tau
        self.ent_coef = ent_coef
        self.max_grad_norm = max_grad_norm
        self.verify_env = verify_env
        self.num_pseudo_steps = 0
        self.num_restore_steps = 0  # the part of num_pseudo_steps spent replaying snapshots (Box2D)
        self._engine: RolloutEngine | None = None
        self._grad_ema: tuple[th.Tensor, th.Tensor] | None = None
        self.last_update: UpdateReport | None = None
        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        # Refuse unsupported spaces before anything else (the env is made cloneable by _prepare_env, when it must be).
        try:
            action_dims(env.action_space)
        except ValueError as error:
            raise AssertionError(str(error)) from None
        problem = observation_space_problem(env.observation_space)
        if problem is not None:  # SB3's algorithms raise NotImplementedError for these spaces too
            raise NotImplementedError(f"ARSM cannot train on this env: {problem}.")
        return BaseAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    def _setup_model(self) -> None:
        # the workers' settings (checked here) go to each training env's engine, which owns the workers
        self._worker_settings = WorkerSettings(self.rollout_backend, self.n_rollout_workers)
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self._joint = JointActions(action_dims(self.action_space), discrete=isinstance(self.action_space, spaces.Discrete))
        self.estimator = self.estimator  # builds and checks its strategy: load() sets the name in __dict__, past the setter
        self._prepare_env(self.env)
        critic: dict[str, Any] = {}
        if self.action_values != "rollout":
            critic["critic_lr_schedule"] = as_schedule(self.critic_learning_rate)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs, **critic
        )
        self.policy = self.policy.to(self.device)
        self._replay = TransitionReplay(self.critic_buffer_size)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``, then the new env made cloneable and checked (``verify_env``) if pseudo rollouts need it."""
        super().set_env(env, force_reset)
        self._prepare_env(self.env)

    def _prepare_env(self, env: VecEnv | None) -> None:
        if env is not None:
            self._masked = prepare_env(env, self.action_values, self.verify_env, self.pseudo_horizon, self.seed)

    @property
    def estimator(self) -> str:
        """The gradient estimator's name, a key of :data:`~arsm_rl.estimators.ESTIMATORS`; setting it builds
        :attr:`strategy` (checked against the action space once the model is set up)."""
        name: str = self.__dict__["estimator"]
        return name

    @estimator.setter
    def estimator(self, name: str) -> None:
        if name not in ESTIMATORS:
            raise ValueError(f"Unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}.")
        strategy = ESTIMATORS[name]()
        if hasattr(self, "_joint"):  # the model is set up: the estimator must handle its action space
            strategy.check(self._joint)
        # Kept in __dict__ under its own name: SB3's save() writes __dict__ as it is (the model zip holds the name,
        # not the object) and load() restores it there, past this setter, before _setup_model sets it again.
        self.__dict__["estimator"] = name
        self._strategy = strategy

    @property
    def strategy(self) -> Estimator:
        """The :class:`~arsm_rl.estimators.Estimator` named by :attr:`estimator`, built once each time that is set."""
        return self._strategy

    def set_random_seed(self, seed: int | None = None) -> None:
        """Seed torch, numpy, the action space and ARSM's two noise streams (real and pseudo)."""
        super().set_random_seed(seed)
        self._real_rng = np.random.default_rng(seed)
        self._pseudo_rng = np.random.default_rng(None if seed is None else [seed, 1])
        self._critic_rng = np.random.default_rng(None if seed is None else [seed, 2])  # the critic's minibatches

    def _excluded_save_params(self) -> list[str]:
        derived = ["_engine", "_worker_settings", "_real_rng", "_pseudo_rng", "_critic_rng", "_grad_ema", "_joint",
                   "_strategy", "_replay", "_masked", "last_update"]  # fmt: skip
        return [*super()._excluded_save_params(), *derived]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        critic = [] if self.action_values == "rollout" else ["policy.critic_optimizer"]
        return ["policy", "policy.optimizer", *critic], []

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
        try:
            while self.num_timesteps < total_timesteps:
                collected = self._collect(self.env, callback)
                if collected is None:
                    break
                iteration += 1
                self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
                if log_interval is not None and iteration % log_interval == 0:
                    self.dump_logs(iteration)
                self.train(collected)
                del collected  # its fork snapshots are freed before the next update takes its own
        finally:  # whatever stops training (the end, an exception, Ctrl-C), fork snapshots are freed
            if self._engine is not None:
                self._engine.release()
        callback.on_training_end()
        return self

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; ``action_masks`` (sb3-contrib's convention, as MaskablePPO takes it) keeps to valid actions."""
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)

    def start_rollout_workers(self) -> None:
        """
        Start the ``n_rollout_workers`` rollout workers now, if they are not running, and wait until they are ready.
        Without it, :meth:`learn` starts them without waiting, and the trainer runs the rollouts until they are.
        They stay up across updates and :meth:`learn` calls, until :meth:`close_rollout_workers`, a new env
        (:meth:`set_env`) or the end of the model (garbage collection, or the interpreter's exit).
        """
        assert self.env is not None
        self._engine_for(self.env).workers.start(wait=True)

    def close_rollout_workers(self) -> None:
        """Stop the rollout workers, if any are running (a later update starts them again)."""
        if self._engine is not None:
            self._engine.workers.close()

    def _engine_for(self, env: VecEnv) -> RolloutEngine:
        """The rollout engine of ``env`` (one per training env: its scratch pool and workers), built at first use."""
        if self._engine is None or self._engine.venv is not env:
            if self._engine is not None:
                self._engine.close()
            self._engine = RolloutEngine(env, self._worker_settings)
            if self._engine.cloner.forks and self.max_pseudo_rollouts is not None and self.budget_sampling == "update":
                warnings.warn(
                    "ForkVecEnv with max_pseudo_rollouts and budget_sampling='update' forks every step where a rollout "
                    "may start, since the budget's steps are drawn after the update (about 8 forks per rollout with the "
                    "LunarLander preset): pass budget_sampling='step' (unbiased too) to fork only the kept steps "
                    "(LunarLander: 1.15x replay's time against 7.9x, benchmarks/results/fork_training*.md)",
                    stacklevel=4,
                )
        return self._engine

    def collect_update(self, callback: MaybeCallback = None) -> UpdateData:
        """
        Take one update's real steps (``n_steps`` per sub-env) with the current policy, as :meth:`learn` does.

        With :meth:`plan_update`, :meth:`run_rollouts` and :meth:`train` this is the public way to look inside an
        update (benchmarks do). The first call resets the env as :meth:`learn` does; later calls continue the
        trajectory. ``num_timesteps`` counts the steps.

        :param callback: called at every step, as in :meth:`learn`
        :return: the update's real experience and branch points
        :raises RuntimeError: if the callback stopped the collection
        """
        _, cb = self._setup_learn(self.n_steps * self.n_envs, callback, reset_num_timesteps=self._last_obs is None)
        assert self.env is not None
        collected = self._collect(self.env, cb)
        if collected is None:
            raise RuntimeError("the callback stopped the collection")
        return collected

    def _collect(self, env: VecEnv, callback: BaseCallback) -> UpdateData | None:
        """Take ``n_steps`` real steps in every sub-env, keeping branch points where rollouts may start."""
        assert self._last_obs is not None
        engine = None if self.action_values == "critic" else self._engine_for(env)
        if engine is not None:
            engine.workers.start()  # without waiting: they get rollouts once ready
        self.policy.set_training_mode(False)
        n, n_envs, strategy = self.n_steps, env.num_envs, self.strategy
        # Snapshots are cheap (about one env step, see docs/cloning.md); taking one at every step lets the update
        # decide which steps to roll out from, all at once (fork snapshots: only where the estimator may roll out).
        sampled = self.budget_sampling == "step" and strategy.rolls_out and engine is not None
        keep = keep_probability(self.max_pseudo_rollouts, self._asked_rollouts, n * n_envs) if sampled else None
        ahead = engine is not None and engine.workers.settings.n_workers > 0 and strategy.selects_by_step
        ahead = ahead and (self.max_pseudo_rollouts is None or sampled)  # each step's rollouts known as it is taken
        up_front = draw_update(self._joint, self._real_rng, self._pseudo_rng, n, n_envs, keep, ahead)
        early = None
        if up_front.entropy is not None and engine is not None:
            policy_for = self._rollout_policy(up_front.entropy, up_front.noise)
            early = EarlyRollouts(engine, policy_for, up_front.entropy, strategy, self._joint, self.pseudo_horizon, n_envs)
        record = StepRecord()
        callback.on_rollout_start()
        for t in range(n):
            masks = self._action_masks(env)
            with th.no_grad():
                logits = self.policy(obs_as_tensor(self._last_obs, self.device)).float().cpu()  # type: ignore[arg-type]
            logits = self._joint.masked(logits, masks)
            actions = self._joint.race(logits, up_front.noise[t])
            draws = Draws(self._joint, logits.numpy(), up_front.noise[t], self._joint.encode(actions))
            kept = None if up_front.kept is None else up_front.kept[t]
            branches: list[BranchPoint | None] = [None] * n_envs
            if engine is not None:
                branches = engine.step_branch_points(range(n_envs), strategy, draws, kept)
            if early is not None:
                early.add(draws, kept, branches)
            new_obs, rewards, dones, infos = env.step(self._joint.env_actions(actions))
            if self._vec_normalize_env is not None:
                rewards = self._vec_normalize_env.get_original_reward()
            self.num_timesteps += n_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return None
            self._update_info_buffer(infos, dones)
            record.add(self._last_obs, logits.numpy(), actions, rewards, dones, infos, masks, branches)
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
        ongoing = [e for e in range(n_envs) if not record.dones[-1][e]]
        tail_branches = {} if engine is None else dict(zip(ongoing, engine.branch_points(ongoing), strict=True))
        callback.on_rollout_end()
        return record.update_data(up_front, tail_branches, self._last_obs, self._action_masks(env),
                                  None if early is None else early.result)  # fmt: skip

    def _action_masks(self, env: VecEnv) -> np.ndarray | None:
        """The training sub-envs' current action masks, ``(n_envs, sum(nvec))`` bool, checked; ``None`` without masks."""
        if not self._masked:
            return None
        return self._joint.check_masks(vec_masks(env), env.num_envs, "action_masks() of the training env")

    # ------------------------------------------------------------------ update

    def train(self, collected: UpdateData) -> None:  # type: ignore[override]
        """
        One gradient step from an update's real experience and its pseudo rollouts (see :attr:`last_update`).

        Unlike SB3's ``OnPolicyAlgorithm.train()``, which takes no argument and reads the rollout buffer held on
        ``self``, this takes the update's data as a value (hence the ``type: ignore[override]``): the public update
        API (:meth:`collect_update`, :meth:`plan_update`, :meth:`run_rollouts`, :meth:`train`) passes each update's
        data from step to step explicitly, so one collected update can be planned, rolled out and trained on, or
        trained on again with another estimator, and nothing of it outlives the update.

        :param collected: from :meth:`collect_update`
        """
        self._update_learning_rate(self.policy.optimizer)
        start = time.perf_counter()
        n, n_envs = collected.rewards.shape
        plan = self.plan_update(collected)
        planned = time.perf_counter()

        if self.action_values == "critic":
            q_true, values = critic_values(self.policy, self._joint, collected, plan)
            rollouts, tails = RolloutValues(values, {}, 0, 0), {}
        else:
            # The true action's value is needed at every used step; an episode still running at the end of the data
            # gets one tail rollout to complete its return.
            tails = tail_rollouts(collected, plan, self.pseudo_horizon)
            rollouts = self.run_rollouts(collected, plan.requests, tails)
            closings = None
            if self.action_values == "bootstrap":
                closings = closing_values(self.policy, self._joint, collected, self._critic_rng)
            q_true = true_values(collected.rewards, collected.dones, rollouts.tail_rewards, self.gamma, self.pseudo_horizon,
                                 closings, rollouts.tail_closings).reshape(-1)  # fmt: skip
            values = rollouts.values
        rolled_out = time.perf_counter()
        costly = costly_warning(rollouts.env_steps / (n * n_envs), self.max_pseudo_rollouts, self.pseudo_horizon)
        if self._n_updates == 0 and costly is not None:
            warnings.warn(costly, stacklevel=2)

        grads = step_gradients(self.strategy, self._joint, plan, collected, q_true, values)
        step = policy_gradient_step(self.policy, self._joint, collected, plan, grads, self.ent_coef, self.max_grad_norm,
                                    self._grad_ema)  # fmt: skip
        self._grad_ema = step.ema
        if self.policy.critic is not None:  # after valuing this update's actions: their values never saw its transitions
            self._replay.add(*update_transitions(collected))
            rate = as_schedule(self.critic_learning_rate)(self._current_progress_remaining)
            steps = train_critic(self.policy, self._joint, self._replay, self._critic_rng, rate, self.critic_batch_size,
                                 self.gamma, self.critic_tau, self.critic_gradient_steps)  # fmt: skip
            if steps:
                self.logger.record("train/critic_loss", float(np.mean([loss for loss, _ in steps])))
                self.logger.record("train/critic_td_error", float(np.mean([error for _, error in steps])))
        self._n_updates += 1
        self.num_pseudo_steps += rollouts.env_steps
        self.num_restore_steps += rollouts.restore_steps
        seconds = {"plan": planned - start, "rollouts": rolled_out - planned, "gradient": time.perf_counter() - rolled_out}
        self.last_update = UpdateReport(plan, rollouts, seconds)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/policy_gradient_loss", step.pg_loss)
        self.logger.record("train/entropy_loss", step.entropy_loss)
        self.logger.record("train/grad_norm", step.grad_norm)
        self.logger.record("train/grad_log_variance", step.grad_log_variance)
        record_update(self.logger, plan, rollouts, len(tails), grads, q_true, values)
        self.logger.record("time/total_pseudo_steps", self.num_pseudo_steps)
        self.logger.record("time/total_restore_steps", self.num_restore_steps)
        self.logger.record("time/total_env_steps", self.num_timesteps + self.num_pseudo_steps)
        rollout_seconds = max(rolled_out - start, sys.float_info.epsilon)
        self.logger.record("time/pseudo_fps", int(rollouts.env_steps / rollout_seconds))

    def plan_update(self, collected: UpdateData) -> UpdatePlan:
        """
        Choose the steps that contribute to the update and the rollouts they need: the estimator selects the
        actions it values at each step, each distinct one other than the true action is requested once, and over
        ``max_pseudo_rollouts`` a uniform subset of the informative steps is kept (reweighted, so unbiased).
        Draws from the pseudo-rollout random stream, as :meth:`train` does.

        :param collected: from :meth:`collect_update`
        :return: the plan
        """
        budget = None if self.action_values == "critic" else self.max_pseudo_rollouts  # the critic's values cost no rollout
        plan = plan_update(self.strategy, self._joint, collected, budget, self._pseudo_rng)
        if plan.selection is not None:
            self._asked_rollouts = int(plan.counts.sum())
        return plan

    def run_rollouts(
        self, collected: UpdateData, requests: list[tuple[int, int]], tails: dict[int, int | None] | None = None
    ) -> RolloutValues:
        """
        Run pseudo and tail rollouts of an update in one lockstep batch with the current policy, as :meth:`train`
        does: in this process or shared out among the ready ``n_rollout_workers`` workers and this process (workers
        are started here if they are not running, and stay up: :meth:`start_rollout_workers`), with the same result.
        One draw from the pseudo-rollout random stream seeds the rollouts' own noise streams (where each step's rollouts
        are known as it is taken, the collection read it ahead: :class:`~arsm_rl.collection.EarlyRollouts`).

        :param collected: from :meth:`collect_update`
        :param requests: ``(row, action code)`` pairs to roll out, e.g. ``plan_update(collected).requests``
        :param tails: sub-env -> horizon (``None``: to the episode's end) of a tail rollout from the state after the
            last step, with fresh actions of the policy
        :return: the requests' values, the tails' rewards and the simulator steps spent
        """
        assert self._engine is not None
        self.policy.set_training_mode(False)  # the policy that took the real steps (Dropout off, BatchNorm frozen)
        if not requests and not tails:
            return RolloutValues(np.zeros(0), {}, 0, 0)
        entropy = int(self._pseudo_rng.integers(2**63))

        def close(obs: Obs) -> np.ndarray:  # the critic's V where horizons cut rollouts ("bootstrap")
            return state_values(self.policy, self._joint, obs, None, self._critic_rng).double().cpu().numpy()

        closing = close if self.action_values == "bootstrap" else None
        act_for = self._rollout_policy(entropy, collected.noise)
        return value_rollouts(self._engine, entropy, act_for, self._joint, collected, requests, tails or {},
                              self.pseudo_horizon, self.gamma, closing, self.estimator)  # fmt: skip

    def _rollout_policy(self, entropy: int, noise: np.ndarray) -> Callable[[int, np.ndarray, np.ndarray], RacePolicy]:
        """:return: the policy of an update's first ``n`` rollouts from their branch steps and sub-envs (``race_policy``)"""
        return lambda n, steps, envs: race_policy(self.policy, self._joint, entropy, n, noise, steps, envs, self.share_noise)

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
