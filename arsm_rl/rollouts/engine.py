"""The rollout engine of one training env: its snapshots, scratch envs, observation transforms, stepper and workers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from arsm_rl.cloning import has_masks
from arsm_rl.estimators import Draws, Estimator
from arsm_rl.forkvec.vec_env import ForkVecEnv
from arsm_rl.rollouts.lockstep import ActFn, BranchPoint, RolloutBatch, run_in_forks, run_lockstep
from arsm_rl.rollouts.obs import ObsPipeline
from arsm_rl.rollouts.race import RacePolicy
from arsm_rl.rollouts.steppers import ForkStepper, ScratchPool, select_stepper
from arsm_rl.rollouts.vec import VecCloner
from arsm_rl.rollouts.workers import SentShare, WorkerPool, WorkerSettings

__all__ = ["RolloutEngine"]


class RolloutEngine:
    """
    Everything pseudo rollouts need from one training ``VecEnv``: snapshots, scratch envs, observation transforms,
    the stepper and the rollout workers. Build one per training env (it keeps its scratch pool and its workers across
    updates and ``learn`` calls); :meth:`release` at the end of training, :meth:`close` when done with it.

    :param venv: the training environment, prepared by :func:`~arsm_rl.rollouts.enable_cloning`
    :param workers: where :meth:`run` runs the rollouts (default: in this process)
    :ivar workers: the :class:`~arsm_rl.rollouts.workers.WorkerPool` that owns the workers
    :ivar stepper: the :class:`~arsm_rl.rollouts.steppers.Stepper` chosen for the env by
        :func:`~arsm_rl.rollouts.steppers.select_stepper` (may be replaced by another that supports it)
    """

    def __init__(self, venv: VecEnv, workers: WorkerSettings | None = None) -> None:
        self.venv = venv
        self.cloner = VecCloner(venv)
        if isinstance(self.cloner.base, ForkVecEnv):  # each fork runs whole rollouts (run_in_forks): import their code
            self.cloner.base.preload(RacePolicy.__module__)  # once per worker, not in every fork
        self.pipeline = ObsPipeline(venv)
        self.pool = ScratchPool(self.cloner.scratch_copy)
        self.stepper = select_stepper(self.pool.take(1)[0])
        #: the env has action masks (:mod:`~arsm_rl.cloning.masks`)
        self.masked = has_masks(venv)
        #: rollouts depend on the training env's observation statistics (``VecNormalize``), which every real step moves
        self.normalized = bool(self.pipeline.statistics())
        self.workers = WorkerPool(workers or WorkerSettings(), lambda: (self.pool.take(1)[0], self.pipeline, self.stepper))

    def branch_points(self, indices: Sequence[int]) -> list[BranchPoint]:
        """
        :param indices: sub-env indices
        :return: for each, its snapshot and observation-pipeline state now (before the next real step)
        """
        return [branch for branch in self._branch_points(indices, None) if branch is not None]

    def step_branch_points(
        self, indices: Sequence[int], strategy: Estimator, draws: Draws, kept: np.ndarray | None = None
    ) -> list[BranchPoint | None]:
        """
        The branch points of a real step about to be taken: none for an estimator that rolls nothing out; fork
        snapshots only where the estimator may roll out (:meth:`~arsm_rl.estimators.Estimator.may_roll_out`, asked
        only then), cheap snapshots everywhere (:meth:`~arsm_rl.rollouts.vec.VecCloner.clone`).

        :param indices: sub-env indices
        :param strategy: the update's estimator
        :param draws: the step's draws, one row per index
        :param kept: ``(len(indices),)`` bool, the steps a budget sampled per step keeps (``None``: all); fork
            snapshots only there
        :return: one branch point per index, or ``None`` where no rollout can start
        """
        if not strategy.rolls_out:
            return [None] * len(indices)
        if not self.cloner.forks:
            return self._branch_points(indices, None)
        if kept is not None and not kept.any():  # nothing kept: no need to ask the estimator (a swap per step)
            return self._branch_points(indices, kept)
        wanted = strategy.may_roll_out(draws)
        return self._branch_points(indices, wanted if kept is None else wanted & kept)

    def _branch_points(self, indices: Sequence[int], wanted: np.ndarray | None) -> list[BranchPoint | None]:
        snapshots = self.cloner.clone(indices, wanted)
        return [
            None if snapshot is None else BranchPoint(snapshot, self.pipeline.capture(i))
            for snapshot, i in zip(snapshots, indices, strict=True)
        ]

    def run(
        self,
        branches: Sequence[BranchPoint],
        first_actions: np.ndarray,
        act: ActFn,
        horizons: Sequence[int | None] | None = None,
        max_episode_steps: int = 100_000,
        sent: Sequence[SentShare] = (),
    ) -> RolloutBatch:
        """
        Run one rollout per branch point in lockstep with :attr:`stepper`, in this process or shared out among the
        ready :attr:`workers` and this process (the same result either way); see :func:`run_lockstep`. With
        ``ForkVecEnv`` snapshots, a portable ``act`` (numpy logits), no observation transforms and no action masks,
        this process's share runs each rollout whole inside its fork (:func:`run_in_forks`; the same result).

        :param sent: the shares of the first rollouts that :meth:`send` sent ahead, in order (run again if their
            workers have stopped since)
        """
        horizon_list = list(horizons or [None] * len(branches))
        in_forks = self.stepper is ForkStepper and isinstance(act, RacePolicy) and act.portable
        in_forks = in_forks and not self.pipeline.transforms and not self.masked

        def local(start: int, stop: int) -> RolloutBatch:
            if in_forks:
                assert isinstance(act, RacePolicy)
                return run_in_forks(branches[start:stop], first_actions[start:stop], act, horizon_list[start:stop],
                                    max_episode_steps, id_offset=start)  # fmt: skip
            return run_lockstep(self.pool, branches[start:stop], first_actions[start:stop], self.pipeline, act,
                                horizon_list[start:stop], self.stepper, max_episode_steps, id_offset=start)  # fmt: skip

        if self.workers.settings.n_workers > 0 and len(branches) > 0:
            return self.workers.run(branches, first_actions, act, horizon_list, max_episode_steps, self.pipeline.statistics(),
                                    local, sent)  # fmt: skip
        return local(0, len(branches))

    def send(self, worker: int, branches: Sequence[BranchPoint], first_actions: np.ndarray, act: ActFn,
             horizons: Sequence[int | None], id_offset: int, max_episode_steps: int = 100_000) -> SentShare:  # fmt: skip
        """
        Send rollouts ``id_offset:id_offset + len(branches)`` of an update to an idle worker now, while the update's
        real steps are still being taken, so that they run beside the collection; :meth:`run` claims them with the
        update's other rollouts (``sent``), with the same result as without. The other parameters are :meth:`run`'s.

        :param worker: one of :meth:`idle_workers`
        :return: the share sent
        """
        return self.workers.send(worker, branches, first_actions, act, list(horizons), max_episode_steps, id_offset, [])

    def idle_workers(self) -> list[int]:
        """:return: the workers that :meth:`send` may send rollouts to now (none while the rollouts depend on observation
        statistics, ``VecNormalize``'s, that change until the update's last real step)"""
        return [] if self.workers.settings.n_workers == 0 or self.normalized else self.workers.idle()

    def release(self) -> None:
        """The end of training: free the live fork snapshots (the workers stay up for the next ``learn``)."""
        self.cloner.release()

    def close(self) -> None:
        """Close the scratch envs and stop the workers."""
        self.pool.close()
        self.workers.close()
