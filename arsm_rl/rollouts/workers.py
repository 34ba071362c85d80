"""Rollout workers: an update's pseudo and tail rollouts run in persistent worker processes (``subproc``) or Ray
actors (``ray``), and in the training process.

The workers start without the trainer waiting for them and live as long as their engine (across updates and
``learn`` calls). Each worker owns its scratch envs (built once from a scratch copy of the training env) and, once it
is ready, receives shares of an update's rollouts: consecutive rollouts with their snapshots, first actions and
horizons, and the policy (a :class:`~arsm_rl.rollouts.RacePolicy`, whose weights travel with it), sent while the
update is still collected where its rollouts are known then (:meth:`WorkerPool.send`), and the rest shared out at
the update's end, the trainer running the fullest share itself. A worker runs a share in lockstep, one batched
policy call per step, and sends back the rewards: one message each way per share, never one per step. Because each
rollout's noise and policy rows do not depend on the other rollouts (:class:`~arsm_rl.rollouts.noise.RolloutNoise`,
:func:`~arsm_rl.rollouts.block_rows`), the result is bit-identical to running every rollout in the training process,
however the rollouts are shared out. Shares are whole blocks of :data:`~arsm_rl.rollouts.POLICY_BLOCK` rollouts,
or any size for a policy whose rows do not depend on the rest of their block (:func:`~arsm_rl.rollouts.rows_independent`).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing as mp
import os
import signal
import sys
import threading
import typing
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import cloudpickle
import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper

from arsm_rl.cloning import scratch_copy
from arsm_rl.rollouts.lockstep import POLICY_BLOCK, ActFn, BranchPoint, RolloutBatch, rows_independent, run_lockstep
from arsm_rl.rollouts.obs import ObsPipeline
from arsm_rl.rollouts.processes import exit_reason, unguarded_main_line, yield_to_trainer
from arsm_rl.rollouts.steppers import ScratchPool, Stepper

__all__ = ["BACKENDS", "LocalRun", "RayWorkers", "RolloutWorkers", "SentShare", "SubprocWorkers", "WorkerPool",
           "WorkerSettings", "register_backend", "shares"]


def shares(n_rollouts: int, n_workers: int, grain: int = POLICY_BLOCK) -> list[tuple[int, int]]:
    """
    Contiguous ranges of whole grains of rollouts, as even as they can be, one per worker (some may be empty).

    :param grain: rollouts that run together: :data:`POLICY_BLOCK`, or 1 for a policy whose rows do not depend on the
        rest of their block (:func:`~arsm_rl.rollouts.lockstep.rows_independent`)
    :return: ``(start, stop)`` rollout indices per worker; every ``start`` is a multiple of ``grain``
    """
    n_grains = -(-n_rollouts // grain)
    bounds = [min(n_rollouts, (w * n_grains // n_workers) * grain) for w in range(n_workers + 1)]
    return list(itertools.pairwise(bounds))


def merge(batches: Sequence[RolloutBatch], worker_rollouts: int = 0) -> RolloutBatch:
    """The batches of consecutive shares, in order, as one (rewards padded to the longest)."""
    depth = max((batch.rewards.shape[1] for batch in batches), default=0)
    rewards = [np.pad(batch.rewards, ((0, 0), (0, depth - batch.rewards.shape[1]))) for batch in batches]
    return RolloutBatch(
        np.concatenate(rewards) if rewards else np.zeros((0, 0)),
        np.concatenate([batch.lengths for batch in batches]) if batches else np.zeros(0, dtype=np.int64),
        sum(batch.restore_steps for batch in batches),
        worker_rollouts,
        [obs for batch in batches for obs in batch.cut_obs],
    )


#: ``local(start, stop)``: rollouts ``start:stop`` of an update run in the training process (the trainer's share).
LocalRun = Callable[[int, int], RolloutBatch]


class RolloutWorkers(ABC):
    """
    A backend of persistent rollout workers (one per ``rollout_backend`` name, in :data:`BACKENDS`).

    Building one starts its workers without waiting for them: a worker takes rollouts once it reports ready
    (:meth:`ready`), and until then the trainer runs them. The result is the same either way, bit for bit.
    """

    name: ClassVar[str]

    @classmethod
    def missing(cls) -> str | None:
        """:return: why this backend cannot run here (a package to install), or ``None``"""
        return None

    @abstractmethod
    def __init__(self, n_workers: int, scratch: gym.Env, pipeline: ObsPipeline, stepper: type[Stepper]) -> None: ...

    n_workers: int

    @abstractmethod
    def ready(self, wait: bool = False) -> list[int]:
        """
        :param wait: block until every worker is ready
        :return: the indices of the workers that are ready to take rollouts
        :raises RuntimeError: when a worker died while starting
        """

    @abstractmethod
    def _send(self, worker: int, task: tuple[Any, ...]) -> None:
        """
        Queue a task on a worker (each worker runs its tasks in the order they were sent).

        :param task: the arguments of :func:`~arsm_rl.rollouts.run_lockstep` after the pool, pipeline and stepper,
            which the worker holds, and the observation statistics: ``(branches, first_actions, act, horizons,
            max_episode_steps, id_offset, statistics)``
        :raises RuntimeError: when the worker died
        """

    @abstractmethod
    def _poll(self, worker: int) -> bool:
        """:return: whether the reply to the oldest task sent to ``worker`` and not yet received is in"""

    @abstractmethod
    def _receive(self, worker: int) -> RolloutBatch:
        """
        :return: the batch of the oldest task sent to ``worker`` and not yet received
        :raises RuntimeError: when the worker died or its task failed
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


def _worker(remote: Connection, parent: Connection, payload: bytes) -> None:
    parent.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it then closes the pipe
    th.set_num_threads(1)
    scratch, pipeline, stepper = cloudpickle.loads(payload)
    pool = ScratchPool(lambda: scratch_copy(scratch))
    try:
        remote.send(("ready", None))
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
    except (EOFError, BrokenPipeError):  # the trainer went away
        pass
    finally:
        pool.close()
        remote.close()


@register_backend
class SubprocWorkers(RolloutWorkers):
    """
    Local worker processes (like ``SubprocVecEnv``: ``forkserver`` where available, else ``spawn``), started by a
    thread: a process start waits until the forkserver has forked it (about 25 ms each here), which the trainer does
    not wait for.

    :param n_workers: number of processes
    :param scratch: a scratch copy of a training sub-env (each worker builds its scratch envs from it)
    :param pipeline: the training env's observation pipeline (:meth:`ObsPipeline.portable`)
    :param stepper: how the workers step their rollouts
    :raises RuntimeError: when started from a script's top level outside ``if __name__ == "__main__":``
    """

    name = "subproc"

    def __init__(self, n_workers: int, scratch: gym.Env, pipeline: ObsPipeline, stepper: type[Stepper]) -> None:
        line = unguarded_main_line()
        if line is not None:
            raise RuntimeError(
                f"rollout workers start processes that run your script again, so line {line} of "
                f"{sys.modules['__main__'].__file__} must be under 'if __name__ == \"__main__\":' "
                "(as with SubprocVecEnv), or use n_rollout_workers=0"
            )
        methods = mp.get_all_start_methods()
        context = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        # pickled here, not in the thread: the trainer goes on stepping this scratch env
        payload = cloudpickle.dumps((scratch, pipeline.portable(), stepper))
        self.n_workers = n_workers
        self.remotes: list[Connection] = []
        self.processes: list[Any] = []
        self.started: list[bool] = []
        self._failure: BaseException | None = None
        self._starting = threading.Thread(target=self._start, args=(context, payload), name="rollout workers", daemon=True)
        self._starting.start()

    def _start(self, context: Any, payload: bytes) -> None:
        """Start the processes (in :attr:`_starting`), keeping what stops them for the trainer to raise."""
        try:
            for _ in range(self.n_workers):
                remote, child = context.Pipe()
                process = context.Process(target=_worker, args=(child, remote, payload), daemon=True)
                process.start()
                yield_to_trainer(process.pid)
                child.close()
                self.remotes.append(remote)
                self.processes.append(process)
                self.started.append(False)
        except BaseException as error:  # raised in the trainer by ready()
            self._failure = error

    def _launched(self, wait: bool) -> bool:
        """
        :param wait: wait until every process is started
        :return: whether every process is started
        :raises RuntimeError: when one could not be
        """
        if wait:
            self._starting.join()
        if self._starting.is_alive():
            return False
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RuntimeError(f"rollout workers could not start ({type(failure).__name__}: {failure}); "
                               "n_rollout_workers=0 runs the rollouts in the training process") from failure  # fmt: skip
        return True

    def _died(self, worker: int) -> typing.NoReturn:
        process = self.processes[worker]
        process.join(timeout=1)
        reason = exit_reason(process.exitcode)
        self.close()
        raise RuntimeError(f"rollout worker {worker} died ({reason}); its rollouts are lost") from None

    def _recv(self, worker: int) -> tuple[str, Any]:
        try:
            reply: tuple[str, Any] = self.remotes[worker].recv()
        except (EOFError, ConnectionResetError, OSError):
            self._died(worker)
        return reply

    def ready(self, wait: bool = False) -> list[int]:
        if not self._launched(wait):
            return []
        for worker, remote in enumerate(self.remotes):
            if not self.started[worker] and (wait or remote.poll()):
                self._recv(worker)  # ("ready", None)
                self.started[worker] = True
        return [worker for worker, started in enumerate(self.started) if started]

    def _send(self, worker: int, task: tuple[Any, ...]) -> None:
        try:
            self.remotes[worker].send(("run", task))
        except (BrokenPipeError, ConnectionResetError, OSError):
            self._died(worker)

    def _poll(self, worker: int) -> bool:
        return self.remotes[worker].poll()

    def _receive(self, worker: int) -> RolloutBatch:
        status, reply = self._recv(worker)
        if status == "error":
            raise RuntimeError(f"a rollout worker failed: {reply}")
        batch: RolloutBatch = reply
        return batch

    def close(self) -> None:
        self._starting.join()  # then every process started is closed
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
        self.remotes, self.processes, self.started = [], [], []


class _RayActor:
    """One Ray rollout worker: its scratch envs, the observation pipeline and the stepper."""

    def __init__(self, payload: CloudpickleWrapper) -> None:
        th.set_num_threads(1)
        scratch, self.pipeline, self.stepper = payload.var
        self.pool = ScratchPool(lambda: scratch_copy(scratch))

    def ready(self) -> bool:
        """Answered once the actor is built."""
        return True

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
        self.starting = {worker: actor.ready.remote() for worker, actor in enumerate(self.actors)}
        self.futures: dict[int, collections.deque[Any]] = {}  # per worker, its tasks' results in order

    def _get(self, futures: list[Any]) -> list[Any]:
        try:
            return list(self.ray.get(futures))
        except self.ray.exceptions.RayActorError as error:
            self.close()
            raise RuntimeError(f"a rollout worker (Ray actor) died; its rollouts are lost: {error}") from None
        except self.ray.exceptions.RayTaskError as error:
            cause = error.cause if getattr(error, "cause", None) is not None else error
            raise RuntimeError(f"a rollout worker failed: {type(cause).__name__}: {cause}") from None

    def ready(self, wait: bool = False) -> list[int]:
        if self.starting:
            pending = list(self.starting.values())
            done, _ = self.ray.wait(pending, num_returns=len(pending), timeout=None if wait else 0)
            self._get(done)  # raises for an actor that died while starting
            self.starting = {worker: ref for worker, ref in self.starting.items() if ref not in done}
        return [worker for worker in range(len(self.actors)) if worker not in self.starting]

    def _send(self, worker: int, task: tuple[Any, ...]) -> None:
        self.futures.setdefault(worker, collections.deque()).append(self.actors[worker].run.remote(*task))

    def _poll(self, worker: int) -> bool:
        done, _ = self.ray.wait([self.futures[worker][0]], timeout=0)
        return bool(done)

    def _receive(self, worker: int) -> RolloutBatch:
        batch: RolloutBatch = self._get([self.futures[worker].popleft()])[0]
        return batch

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            try:
                self.ray.kill(actor)
            except Exception:  # the actor's Ray session already ended (ray.shutdown): nothing to stop
                pass
        self.actors, self.starting, self.futures = [], {}, {}
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


@dataclass(eq=False)
class SentShare:
    """
    Rollouts ``start:stop`` of an update sent to a worker ahead of the update's other rollouts (:meth:`WorkerPool.send`),
    claimed by :meth:`WorkerPool.run`.

    :param worker: the worker running them
    :param start: id of the first rollout
    :param stop: one past the id of the last
    :param backend: the workers it was sent to (a share of workers since stopped is lost, and run again)
    :param batch: its rollouts, once received
    """

    worker: int
    start: int
    stop: int
    backend: RolloutWorkers
    batch: RolloutBatch | None = None


class WorkerPool:
    """The one owner of a rollout engine's workers: started from the engine's parts by :meth:`start` (or the first
    :meth:`run`) without waiting for them, kept for the engine's life (across updates and ``learn`` calls), stopped
    by :meth:`close`, or when the pool is garbage-collected or the interpreter exits.

    Each worker runs its shares in the order they were sent, and the pool receives their replies in that order
    (:class:`SentShare`), so a share sent ahead (:meth:`send`) and never claimed does not stand in another's place.

    :param settings: the backend and the number of workers
    :param parts: gives, when the workers start, a scratch copy of a training sub-env (each worker builds its scratch
        envs from it), the training env's observation pipeline and the stepper
    """

    def __init__(self, settings: WorkerSettings, parts: Callable[[], tuple[gym.Env, ObsPipeline, type[Stepper]]]) -> None:
        self.settings = settings
        self._parts = parts
        self._workers: RolloutWorkers | None = None
        self._stop: weakref.finalize | None = None
        self._queued: dict[int, collections.deque[SentShare]] = collections.defaultdict(collections.deque)

    @property
    def running(self) -> bool:
        """Whether the worker processes or actors are running."""
        return self._workers is not None

    def start(self, wait: bool = False) -> list[int]:
        """
        Start the workers if they are not running (nothing to do without workers).

        :param wait: block until every worker is ready to take rollouts
        :return: the indices of the ready workers
        """
        if self.settings.n_workers == 0:
            return []
        if self._workers is None:
            self._workers = BACKENDS[self.settings.backend](self.settings.n_workers, *self._parts())
            self._stop = weakref.finalize(self, self._workers.close)
        with self._closing_on_error():  # workers that could not start are started afresh at the next run
            return self._workers.ready(wait)

    def idle(self) -> list[int]:
        """:return: the ready workers with no share left to run (the replies already in are received; started if
        they are not running, without waiting)"""
        ready = self.start()
        with self._closing_on_error():
            assert self._workers is not None or not ready
            for worker in ready:
                queue = self._queued[worker]
                while queue and self._workers is not None and self._workers._poll(worker):
                    queue.popleft().batch = self._workers._receive(worker)
        return [worker for worker in ready if not self._queued[worker]]

    def send(self, worker: int, branches: Sequence[BranchPoint], first_actions: np.ndarray, act: ActFn,
             horizons: Sequence[int | None], max_episode_steps: int, id_offset: int,
             statistics: list[Any]) -> SentShare:  # fmt: skip
        """
        Send rollouts ``id_offset:id_offset + len(branches)`` of an update to a ready worker now, ahead of the others
        (:meth:`run` claims them). The parameters are :meth:`run`'s.
        """
        assert self._workers is not None
        share = SentShare(worker, id_offset, id_offset + len(branches), self._workers)
        with self._closing_on_error():
            self._workers._send(worker, (branches, first_actions, act, horizons, max_episode_steps, id_offset, statistics))
        self._queued[worker].append(share)
        return share

    def run(self, branches: Sequence[BranchPoint], first_actions: np.ndarray, act: ActFn, horizons: Sequence[int | None],
            max_episode_steps: int, statistics: list[Any], local: LocalRun,
            sent: Sequence[SentShare] = ()) -> RolloutBatch:  # fmt: skip
        """
        The rollouts of :func:`~arsm_rl.rollouts.run_lockstep`, shared out (:func:`shares`) among the ready workers and
        the trainer, which runs the last share (``local``) while the workers run theirs; the workers are started first
        if they are not running.

        :param statistics: the training env's current observation statistics (:meth:`ObsPipeline.statistics`)
        :param local: runs a share in the training process
        :param sent: shares of the first rollouts already sent (:meth:`send`), in order; the rest is shared out
        :return: the rollouts' batch (:attr:`~arsm_rl.rollouts.RolloutBatch.worker_rollouts`: the workers' shares)
        """
        with self._closing_on_error():
            claimed: list[SentShare] = []
            for share in sent:  # the longest run of shares from rollout 0 that these workers ran
                if share.backend is not self._workers or share.start != (claimed[-1].stop if claimed else 0):
                    break
                claimed.append(share)
            done = claimed[-1].stop if claimed else 0
            ready = self.start()  # a worker still busy with a share sent ahead runs its new one after it
            grain = 1 if rows_independent(act) else POLICY_BLOCK
            ranges = [(done + a, done + b) for a, b in shares(len(branches) - done, len(ready) + 1, grain)]
            start, stop = max(ranges, key=lambda bounds: bounds[1] - bounds[0])  # the fullest share runs here
            remote = [bounds for bounds in ranges if bounds != (start, stop) and bounds[1] > bounds[0]]
            tasks = [self.send(worker, branches[a:b], first_actions[a:b], act, horizons[a:b], max_episode_steps, a, statistics)
                     for worker, (a, b) in zip(ready, remote, strict=False)]  # fmt: skip
            own = local(start, stop)  # while the workers run theirs
            batches = sorted([(share.start, self._claim(share)) for share in [*claimed, *tasks]] + [(start, own)],
                             key=lambda item: item[0])  # fmt: skip
            return merge([batch for _, batch in batches], worker_rollouts=len(branches) - (stop - start))

    def _claim(self, share: SentShare) -> RolloutBatch:
        """:return: the batch of a share, received (with the replies its worker sent before it) if it is not yet"""
        queue = self._queued[share.worker]
        while share.batch is None:
            assert self._workers is not None
            queue.popleft().batch = self._workers._receive(share.worker)
        return share.batch

    @contextlib.contextmanager
    def _closing_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:  # a worker died or failed, the trainer's share raised, Ctrl-C: replies may be in flight
            self.close()  # so start afresh at the next run
            raise

    def close(self) -> None:
        """Stop the workers, if they are running (idempotent)."""
        if self._stop is not None:
            self._stop()  # closes them, once
        self._workers, self._stop = None, None
        self._queued.clear()
