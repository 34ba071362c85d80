"""Rollout workers: an update's pseudo and tail rollouts run in persistent worker processes (``subproc``) or Ray
actors (``ray``).

Each worker owns its scratch envs (built once from a scratch copy of the training env) and receives, once per
update, its share of the rollouts: whole blocks of :data:`~arsm_rl.rollouts.POLICY_BLOCK` consecutive rollouts
with their snapshots, first actions and horizons, and the policy (a :class:`~arsm_rl.rollouts.RacePolicy`,
whose weights travel with it). It runs them in lockstep, one batched policy call per step, and sends back their
rewards: one message each way per update, never one per step. Because each rollout's noise and policy rows do not
depend on the other rollouts (:class:`~arsm_rl.rollouts.noise.RolloutNoise`, :func:`~arsm_rl.rollouts.block_rows`),
the result is bit-identical to running every rollout in the training process.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper

from arsm_rl.cloning import scratch_copy
from arsm_rl.rollouts.lockstep import POLICY_BLOCK, ActFn, BranchPoint, RolloutBatch, run_lockstep
from arsm_rl.rollouts.obs import ObsPipeline
from arsm_rl.rollouts.steppers import ScratchPool, Stepper

__all__ = ["BACKENDS", "RayWorkers", "RolloutWorkers", "SubprocWorkers", "WorkerPool", "WorkerSettings", "register_backend",
           "shares"]


def shares(n_rollouts: int, n_workers: int) -> list[tuple[int, int]]:
    """
    Contiguous ranges of whole :data:`POLICY_BLOCK` blocks, one per worker (some may be empty).

    :return: ``(start, stop)`` rollout indices per worker; every ``start`` is a multiple of the block
    """
    n_blocks = -(-n_rollouts // POLICY_BLOCK)
    bounds = [min(n_rollouts, (w * n_blocks // n_workers) * POLICY_BLOCK) for w in range(n_workers + 1)]
    return list(itertools.pairwise(bounds))


def merge(batches: Sequence[RolloutBatch]) -> RolloutBatch:
    """The workers' batches, in order, as one (rewards padded to the longest)."""
    depth = max((batch.rewards.shape[1] for batch in batches), default=0)
    rewards = [np.pad(batch.rewards, ((0, 0), (0, depth - batch.rewards.shape[1]))) for batch in batches]
    return RolloutBatch(
        np.concatenate(rewards) if rewards else np.zeros((0, 0)),
        np.concatenate([batch.lengths for batch in batches]) if batches else np.zeros(0, dtype=np.int64),
        sum(batch.restore_steps for batch in batches),
    )


class RolloutWorkers(ABC):
    """A backend of persistent rollout workers (one per ``rollout_backend`` name, in :data:`BACKENDS`)."""

    name: ClassVar[str]

    @classmethod
    def missing(cls) -> str | None:
        """:return: why this backend cannot run here (a package to install), or ``None``"""
        return None

    @abstractmethod
    def __init__(self, n_workers: int, scratch: gym.Env, pipeline: ObsPipeline, stepper: type[Stepper]) -> None: ...

    n_workers: int

    def run(self, branches: Sequence[BranchPoint], first_actions: np.ndarray, act: ActFn, horizons: Sequence[int | None],
            max_episode_steps: int, statistics: list[Any]) -> RolloutBatch:  # fmt: skip
        """
        The rollouts of :func:`~arsm_rl.rollouts.run_lockstep`, shared out among the workers (:func:`shares`).

        :param statistics: the training env's current observation statistics (:meth:`ObsPipeline.statistics`)
        """
        tasks = {}
        for worker, (start, stop) in enumerate(shares(len(branches), self.n_workers)):
            if stop > start:
                share = (branches[start:stop], first_actions[start:stop], act, horizons[start:stop])
                tasks[worker] = (*share, max_episode_steps, start, statistics)
        return merge(self._execute(tasks))

    @abstractmethod
    def _execute(self, tasks: dict[int, tuple[Any, ...]]) -> list[RolloutBatch]:
        """
        :param tasks: worker index -> the arguments of :func:`~arsm_rl.rollouts.run_lockstep` after the pool,
            pipeline and stepper, which the worker holds, and the observation statistics: ``(branches,
            first_actions, act, horizons, max_episode_steps, id_offset, statistics)``
        :return: the workers' batches, in the order of ``tasks``
        :raises RuntimeError: when a worker died or failed
        """

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (idempotent)."""


#: Rollout backends by ``rollout_backend`` name (:func:`register_backend`).
BACKENDS: dict[str, type[RolloutWorkers]] = {}


def register_backend(cls: type[RolloutWorkers]) -> type[RolloutWorkers]:
    """Class decorator: make a :class:`RolloutWorkers` backend available as ``rollout_backend=cls.name``."""
    BACKENDS[cls.name] = cls
    return cls


def _died() -> typing.NoReturn:
    raise RuntimeError("a rollout worker died (killed, or out of memory); its rollouts are lost") from None


def _worker(remote: Connection, parent: Connection, payload: CloudpickleWrapper) -> None:
    parent.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it then closes the pipe
    th.set_num_threads(1)
    scratch, pipeline, stepper = payload.var
    pool = ScratchPool(lambda: scratch_copy(scratch))
    try:
        while True:
            command, data = remote.recv()
            if command == "close":
                break
            branches, first_actions, act, horizons, max_steps, id_offset, statistics = data
            pipeline.set_statistics(statistics)
            try:
                batch = run_lockstep(pool, branches, first_actions, pipeline, act, horizons, stepper, max_steps, id_offset)
                remote.send(("ok", batch))
            except Exception as error:  # reported to the trainer, which raises it
                remote.send(("error", f"{type(error).__name__}: {error}"))
    except EOFError:  # the trainer went away
        pass
    finally:
        pool.close()
        remote.close()


@register_backend
class SubprocWorkers(RolloutWorkers):
    """
    Local worker processes (like ``SubprocVecEnv``: ``forkserver`` where available, else ``spawn``).

    :param n_workers: number of processes
    :param scratch: a scratch copy of a training sub-env (each worker builds its scratch envs from it)
    :param pipeline: the training env's observation pipeline (:meth:`ObsPipeline.portable`)
    :param stepper: how the workers step their rollouts
    """

    name = "subproc"

    def __init__(self, n_workers: int, scratch: gym.Env, pipeline: ObsPipeline, stepper: type[Stepper]) -> None:
        methods = mp.get_all_start_methods()
        context = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        payload = CloudpickleWrapper((scratch, pipeline.portable(), stepper))
        self.n_workers = n_workers
        self.remotes: list[Connection] = []
        self.processes: list[Any] = []
        for _ in range(n_workers):
            remote, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, remote, payload), daemon=True)  # type: ignore[attr-defined]
            process.start()
            child.close()
            self.remotes.append(remote)
            self.processes.append(process)

    def _execute(self, tasks: dict[int, tuple[Any, ...]]) -> list[RolloutBatch]:
        try:
            for worker, task in tasks.items():
                self.remotes[worker].send(("run", task))
            replies = [self.remotes[worker].recv() for worker in tasks]
        except (BrokenPipeError, ConnectionResetError, EOFError):
            self.close()
            _died()
        errors = [message for status, message in replies if status == "error"]
        if errors:
            raise RuntimeError(f"a rollout worker failed: {errors[0]}")
        return [batch for _, batch in replies]

    def close(self) -> None:
        for remote in self.remotes:
            try:
                remote.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
        for remote in self.remotes:
            remote.close()
        self.remotes, self.processes = [], []


class _RayActor:
    """One Ray rollout worker: its scratch envs, the observation pipeline and the stepper."""

    def __init__(self, payload: CloudpickleWrapper) -> None:
        th.set_num_threads(1)
        scratch, self.pipeline, self.stepper = payload.var
        self.pool = ScratchPool(lambda: scratch_copy(scratch))

    def run(self, *task: Any) -> RolloutBatch:
        """:param task: ``(branches, first_actions, act, horizons, max_episode_steps, id_offset, statistics)``"""
        branches, first_actions, act, horizons, max_steps, id_offset, statistics = task
        pool, pipeline, stepper = self.pool, self.pipeline, self.stepper
        pipeline.set_statistics(statistics)
        return run_lockstep(pool, branches, first_actions, pipeline, act, horizons, stepper, max_steps, id_offset)


@register_backend
class RayWorkers(RolloutWorkers):
    """
    Ray actors (``pip install ray``, imported only here). Joins the cluster of an earlier ``ray.init(address=...)``
    or of ``RAY_ADDRESS``; otherwise starts a local Ray with one CPU per worker, and shuts it down on :meth:`close`.
    On a cluster, ``arsm_rl`` (and the env's packages) must be importable on every node.

    :param n_workers: number of actors (one CPU each)
    :param scratch: a scratch copy of a training sub-env (each actor builds its scratch envs from it)
    :param pipeline: the training env's observation pipeline (:meth:`ObsPipeline.portable`)
    :param stepper: how the actors step their rollouts
    """

    name = "ray"

    @classmethod
    def missing(cls) -> str | None:
        try:
            import ray  # noqa: F401
        except ImportError:
            return "rollout_backend='ray' needs Ray: pip install -e '.[ray]' (or pip install ray)"
        return None

    def __init__(self, n_workers: int, scratch: gym.Env, pipeline: ObsPipeline, stepper: type[Stepper]) -> None:
        import ray

        self.ray = ray
        self.started = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
        if not ray.is_initialized():
            ray.init(num_cpus=n_workers if self.started else None, include_dashboard=False, log_to_driver=False)
        payload = ray.put(CloudpickleWrapper((scratch, pipeline.portable(), stepper)))
        actor = ray.remote(num_cpus=1)(_RayActor)
        self.n_workers = n_workers
        self.actors: list[Any] = [actor.remote(payload) for _ in range(n_workers)]

    def _execute(self, tasks: dict[int, tuple[Any, ...]]) -> list[RolloutBatch]:
        futures = [self.actors[worker].run.remote(*task) for worker, task in tasks.items()]
        try:
            return list(self.ray.get(futures))
        except self.ray.exceptions.RayActorError:
            self.close()
            _died()
        except self.ray.exceptions.RayTaskError as error:
            cause = error.cause if getattr(error, "cause", None) is not None else error
            raise RuntimeError(f"a rollout worker failed: {type(cause).__name__}: {cause}") from None

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            self.ray.kill(actor)
        self.actors = []
        if getattr(self, "started", False):
            self.ray.shutdown()
            self.started = False


@dataclass(frozen=True)
class WorkerSettings:
    """Where an update's rollouts run: ``n_workers`` workers of the ``backend`` (0: in the training process).

    :param backend: a name in :data:`BACKENDS`
    :param n_workers: number of workers, a whole number >= 0
    :raises ValueError: for an unknown backend or a bad number
    :raises ImportError: when the backend's package is missing (only checked when ``n_workers > 0``)
    """

    backend: str = "subproc"
    n_workers: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n_workers, int) or isinstance(self.n_workers, bool) or self.n_workers < 0:
            raise ValueError(f"n_rollout_workers must be a whole number >= 0, got {self.n_workers!r}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"Unknown rollout_backend {self.backend!r}; choose one of {', '.join(BACKENDS)}.")
        missing = BACKENDS[self.backend].missing() if self.n_workers > 0 else None
        if missing is not None:
            raise ImportError(missing)


class WorkerPool:
    """The one owner of a rollout engine's workers: started from the engine's parts on the first :meth:`run`, kept
    across updates, stopped by :meth:`close` (and started again by a later :meth:`run`).

    :param settings: the backend and the number of workers
    :param parts: gives, when the workers start, a scratch copy of a training sub-env (each worker builds its scratch
        envs from it), the training env's observation pipeline and the stepper
    """

    def __init__(self, settings: WorkerSettings, parts: Callable[[], tuple[gym.Env, ObsPipeline, type[Stepper]]]) -> None:
        self.settings = settings
        self._parts = parts
        self._workers: RolloutWorkers | None = None

    @property
    def running(self) -> bool:
        """Whether the worker processes or actors are running."""
        return self._workers is not None

    def run(self, branches: Sequence[BranchPoint], first_actions: np.ndarray, act: ActFn, horizons: Sequence[int | None],
            max_episode_steps: int, statistics: list[Any]) -> RolloutBatch:  # fmt: skip
        """:meth:`RolloutWorkers.run` on the workers, started first if they are not running."""
        if self._workers is None:
            self._workers = BACKENDS[self.settings.backend](self.settings.n_workers, *self._parts())
        return self._workers.run(branches, first_actions, act, horizons, max_episode_steps, statistics)

    def close(self) -> None:
        """Stop the workers, if they are running (idempotent)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None
