"""Rollout workers: an update's pseudo and tail rollouts run in persistent worker processes.

Each worker owns its scratch envs (built once from a scratch copy of the training env) and receives, once per
update, its share of the rollouts: whole blocks of :data:`~arsm_rl.rollouts.POLICY_BLOCK` consecutive rollouts
with their snapshots, first actions and horizons, and the policy (a :class:`~arsm_rl.rollouts.RacePolicy`,
whose weights travel with it). It runs them in lockstep, one batched policy call per step, and sends back their
rewards: one message each way per update, never one per step. Because each rollout's noise and policy rows do not
depend on the other rollouts (:class:`~arsm_rl.strategies.RolloutNoise`, :func:`~arsm_rl.rollouts.block_rows`),
the result is bit-identical to running every rollout in the training process.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import signal
import typing
from abc import ABC, abstractmethod
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper

from arsm_rl.cloning import scratch_copy
from arsm_rl.rollouts.engine import POLICY_BLOCK, ActFn, BranchPoint, RolloutBatch, run_lockstep
from arsm_rl.rollouts.obs import ObsPipeline
from arsm_rl.rollouts.steppers import ScratchPool, Stepper

__all__ = ["BACKENDS", "RolloutWorkers", "SubprocWorkers", "make_workers", "shares"]


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

    @abstractmethod
    def __init__(self, n_workers: int, scratch: gym.Env, pipeline: ObsPipeline, stepper: type[Stepper]) -> None: ...

    @abstractmethod
    def run(self, branches: Sequence[BranchPoint], first_actions: np.ndarray, act: ActFn,
            horizons: Sequence[int | None], max_episode_steps: int) -> RolloutBatch:  # fmt: skip
        """The rollouts of :func:`~arsm_rl.rollouts.run_lockstep`, shared out among the workers."""

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (idempotent)."""


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
            branches, first_actions, act, horizons, max_steps, id_offset = data
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
        self.remotes: list[Connection] = []
        self.processes: list[Any] = []
        for _ in range(n_workers):
            remote, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, remote, payload), daemon=True)  # type: ignore[attr-defined]
            process.start()
            child.close()
            self.remotes.append(remote)
            self.processes.append(process)

    def run(self, branches: Sequence[BranchPoint], first_actions: np.ndarray, act: ActFn,
            horizons: Sequence[int | None], max_episode_steps: int) -> RolloutBatch:  # fmt: skip
        busy = []
        for remote, (start, stop) in zip(self.remotes, shares(len(branches), len(self.remotes)), strict=True):
            if stop > start:
                task = (branches[start:stop], first_actions[start:stop], act, horizons[start:stop])
                try:
                    remote.send(("run", (*task, max_episode_steps, start)))
                except (BrokenPipeError, ConnectionResetError):
                    self._died()
                busy.append(remote)
        replies = [self._reply(remote) for remote in busy]
        errors = [message for status, message in replies if status == "error"]
        if errors:
            raise RuntimeError(f"a rollout worker failed: {errors[0]}")
        return merge([batch for _, batch in replies])

    def _reply(self, remote: Connection) -> tuple[str, Any]:
        try:
            return remote.recv()
        except (EOFError, ConnectionResetError):
            self._died()

    def _died(self) -> typing.NoReturn:
        self.close()
        raise RuntimeError("a rollout worker died (killed, or out of memory); its rollouts are lost") from None

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


#: Rollout backends by ``rollout_backend`` name.
BACKENDS: dict[str, type[RolloutWorkers]] = {SubprocWorkers.name: SubprocWorkers}


def make_workers(
    backend: str, n_workers: int, scratch: gym.Env, pipeline: ObsPipeline, stepper: type[Stepper]
) -> RolloutWorkers:
    """:raises ValueError: for an unknown backend"""
    if backend not in BACKENDS:
        raise ValueError(f"unknown rollout_backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[backend](n_workers, scratch, pipeline, stepper)
