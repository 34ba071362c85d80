"""``ForkVecEnv``: a ``VecEnv`` whose sub-envs live in light worker processes and whose snapshots are paused forks.

A snapshot of a sub-env (:meth:`ForkVecEnv.snapshot`) is a ``fork`` of its worker process, paused: every byte of
the env is in it (Box2D worlds, C extensions, Python's and numpy's global RNGs, closures), so it is exact for any
env with no adapter, and restoring it (:meth:`ForkSnapshot.restore`) forks the paused copy again, at a cost that
does not depend on how long the episode has run. The processes' side is :mod:`arsm_rl.forkvec.server`.
"""

from __future__ import annotations

import functools
import gc
import os
import pickle
import socket
import subprocess
import sys
import typing
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

import cloudpickle
import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from arsm_rl.cloning import headless_function, is_statistics
from arsm_rl.forkvec.server import call, dumps

__all__ = ["DEFAULT_MAX_SNAPSHOTS", "ForkSnapshot", "ForkStandIn", "ForkVecEnv", "ForkedEnv", "fork_problem"]

#: Default cap on the paused copies a :class:`ForkVecEnv` holds at once (each holds the pages its worker changed
#: since the fork, about 3.5 MB for LunarLander: benchmarks/results/clone_cost.md).
DEFAULT_MAX_SNAPSHOTS = 1024

_REPLAY_PATH = "DummyVecEnv, or SubprocVecEnv with wrapper_class=arsm_rl.make_cloneable (snapshots restored by replay)"


def fork_problem() -> str | None:
    """:return: why fork snapshots cannot run on this platform (a sentence naming the replay path), or ``None``"""
    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return f"ForkVecEnv needs Linux (fork snapshots of processes); on {sys.platform} use {_REPLAY_PATH}"
    return None


@dataclass(frozen=True)
class ForkSnapshot:
    """
    A paused ``fork`` copy of an env process, listening on a Unix socket of this machine. Picklable (rollout workers
    on the same machine restore it too); freed when the :class:`ForkVecEnv` it came from no longer holds a reference
    to it, or by :meth:`ForkVecEnv.free_snapshots`.

    :param address: the copy's (abstract) Unix socket address
    :param pid: the copy's process id
    """

    address: str
    pid: int
    #: env steps a restore replays: none
    restore_steps: ClassVar[int] = 0

    def restore(self, action_space: gym.Space[Any] | None = None) -> ForkedEnv:
        """:return: a new fork of the paused copy, at the snapshot's state (any number of times)"""
        return ForkedEnv(self, action_space)


class ForkedEnv:
    """
    A restored copy: a connection to a fork of a paused copy, stepped as ``gymnasium`` steps (no auto-reset,
    statistics wrappers such as ``Monitor`` spliced out). Its process exits when this connection closes.

    :param snapshot: the snapshot to restore
    :param action_space: the env's action space, for callers that sample actions
    :raises RuntimeError: when the paused copy is gone
    """

    def __init__(self, snapshot: ForkSnapshot, action_space: gym.Space[Any] | None = None) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(snapshot.address)
        except OSError:
            sock.close()
            raise RuntimeError(
                f"fork snapshot {snapshot.pid} cannot be restored: its paused process is gone (freed, killed, or on "
                "another machine: fork snapshots live in the training machine's processes)"
            ) from None
        self.conn = Connection(sock.detach())
        self.action_space = action_space

    def send_step(self, action: Any) -> None:
        """Send one action (the reply is read by :meth:`receive_step`, so that many copies step at once)."""
        self._guard(lambda: self.conn.send_bytes(dumps(("step", action))))

    def receive_step(self) -> tuple[Any, float, bool, bool]:
        """:return: ``(obs, reward, terminated, truncated)`` of the step sent last"""
        return typing.cast(tuple[Any, float, bool, bool], self.receive_call())

    def send_call(self, function: Callable[..., Any], *args: Any) -> None:
        """Send :meth:`call` without waiting for its result (read by :meth:`receive_call`, so that many copies run at once)."""
        self._guard(lambda: self.conn.send_bytes(dumps(("call", (function, args)))))

    def receive_call(self) -> Any:
        """:return: the result of the command sent last (:meth:`send_call`, :meth:`send_step`)"""
        status, value = self._guard(lambda: pickle.loads(self.conn.recv_bytes()))
        if status == "error":
            raise RuntimeError(f"a forked env raised {value[1]}")
        return value

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """``gymnasium``'s ``step`` (the info dict is not sent back: empty)."""
        self.send_step(action)
        return (*self.receive_step(), {})

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """``gymnasium``'s ``reset``, in the copy."""
        return typing.cast(tuple[Any, dict[str, Any]], self._guard(lambda: call(self.conn, "reset", (seed, options))))

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """:return: ``function(env, *args)`` run on the copy's env (a picklable function), as :meth:`ForkVecEnv.call`"""
        return self._guard(lambda: call(self.conn, "call", (function, args)))

    def snapshot(self) -> ForkSnapshot:
        """:return: a paused copy of this copy (freed when this copy's process exits)"""
        return ForkSnapshot(*self._guard(lambda: call(self.conn, "snapshot")))

    def close(self) -> None:
        """End the copy's process."""
        self.conn.close()

    def _guard(self, exchange: Callable[[], Any]) -> Any:
        try:
            return exchange()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            raise RuntimeError("a forked env process died (killed, or out of memory); its rollout is lost") from None


class ForkStandIn(gym.Env[Any, Any]):
    """
    What stands for a :class:`ForkVecEnv` sub-env where the rollouts layer expects a scratch env: it has the spaces,
    and it tells the stepper seam that snapshots are restored by forking (``ForkStepper``), never into an env.

    :param observation_space: the sub-envs' observation space
    :param action_space: the sub-envs' action space
    """

    def __init__(self, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
        self.observation_space = observation_space
        self.action_space = action_space

    def step(self, action: Any) -> Any:
        raise NotImplementedError("ForkStandIn is not an env: fork snapshots are restored with ForkSnapshot.restore()")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        raise NotImplementedError("ForkStandIn is not an env: fork snapshots are restored with ForkSnapshot.restore()")


class _Snapshots:
    """The live paused copies of each sub-env, and those whose handles were dropped (freed at the next command)."""

    def __init__(self, n_envs: int) -> None:
        self.live: list[set[int]] = [set() for _ in range(n_envs)]
        self.dropped: list[list[int]] = [[] for _ in range(n_envs)]

    def add(self, index: int, snapshot: ForkSnapshot) -> None:
        self.live[index].add(snapshot.pid)
        weakref.finalize(snapshot, functools.partial(self.drop, index, snapshot.pid))

    def drop(self, index: int, pid: int) -> None:
        self.dropped[index].append(pid)  # may run inside any allocation: only appends

    def take_dropped(self, index: int) -> list[int]:
        pids, self.dropped[index] = self.dropped[index], []
        self.live[index].difference_update(pids)
        return pids

    def count(self) -> int:
        return sum(len(live.difference(dropped)) for live, dropped in zip(self.live, self.dropped, strict=True))


def _worker_environ() -> dict[str, str]:
    """The workers' environment: this ``arsm_rl`` first on the path, one BLAS/OpenMP thread (fork after threads)."""
    environ = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [environ.get("PYTHONPATH")])])
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        environ.setdefault(name, "1")
    return environ


def _registry() -> list[bytes]:
    """This process's env ids, pickled one by one (the workers take those they can load)."""
    blobs = []
    for spec in gym.registry.values():
        try:
            blobs.append(dumps(spec))
        except Exception:  # an entry point that cannot be pickled: the workers do without it
            continue
    return blobs


def _shutdown(remotes: list[Connection], processes: list[subprocess.Popen[bytes]]) -> None:
    for remote in remotes:
        try:
            remote.send_bytes(dumps(("close", None)))
        except OSError:
            pass
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for remote in remotes:
        remote.close()


def _stack(observations: Sequence[Any]) -> VecEnvObs:
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    if isinstance(observations[0], tuple):
        return tuple(np.stack([o[k] for o in observations]) for k in range(len(observations[0])))
    return np.stack(observations)


class ForkVecEnv(VecEnv):
    """
    ``SubprocVecEnv``'s interface (``make_vec_env(env_id, n_envs, vec_env_cls=ForkVecEnv)``), with fork snapshots.

    Each sub-env lives in a worker process started as a fresh interpreter (``python -m arsm_rl.forkvec.server``),
    which imports neither torch nor SB3's package ``__init__`` (``make_vec_env``'s env functions are loaded with the
    SB3 modules they refer to only; env functions that need torch import it: :attr:`torch_in_workers`). The workers
    get this process's ``sys.path`` and gymnasium env ids, not its ``__main__``: define custom envs in importable
    modules (or register them there). :meth:`snapshot` forks paused copies of the workers; ``ARSM`` restores them
    with ``ForkStepper`` (``arsm_rl.rollouts``), never replaying a step. Linux only (:func:`fork_problem`).

    :param env_fns: functions building the sub-envs (no :func:`~arsm_rl.make_cloneable` needed)
    :param start_method: accepted for ``SubprocVecEnv``'s signature and ignored: workers are fresh interpreters
    :param max_snapshots: cap on the paused copies alive at once; :meth:`snapshot` raises past it
    :raises OSError: where fork snapshots cannot run
    :raises RuntimeError: when a sub-env cannot be built in its worker
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env[Any, Any]]],
        start_method: str | None = None,
        max_snapshots: int = DEFAULT_MAX_SNAPSHOTS,
    ) -> None:
        problem = fork_problem()
        if problem is not None:
            raise OSError(problem)
        if max_snapshots < 1:
            raise ValueError(f"max_snapshots must be >= 1, got {max_snapshots}")
        self.max_snapshots = max_snapshots
        self.waiting = False
        self.closed = False
        self.remotes: list[Connection] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _shutdown, self.remotes, self.processes)
        self._unanswered: list[int] = []  # per worker: commands sent whose reply has not been read
        self._snapshots = _Snapshots(len(env_fns))
        path, registry, environ = list(sys.path), _registry(), _worker_environ()
        try:
            for env_fn in env_fns:
                ours, theirs = socket.socketpair()
                command = [sys.executable, "-m", "arsm_rl.forkvec.server", str(theirs.fileno())]
                process = subprocess.Popen(command, pass_fds=[theirs.fileno()], env=environ, stdin=subprocess.DEVNULL)
                theirs.close()
                self.remotes.append(Connection(ours.detach()))
                self.processes.append(process)
                self.remotes[-1].send_bytes(dumps((path, registry, cloudpickle.dumps(env_fn))))  # the setup
                self._unanswered.append(1)
            #: whether each worker imported torch (only env functions that need it make it)
            self.torch_in_workers: list[bool] = [self._receive(i)["torch"] for i in range(len(env_fns))]
            self._send(0, "spaces")
            observation_space, action_space = self._receive(0)
            super().__init__(len(env_fns), observation_space, action_space)
            self._send(0, "layer_types")
            statistics = [depth for depth, cls in enumerate(self._receive(0)) if is_statistics(cls)]
            self._broadcast("configure", (statistics, dumps(headless_function)))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ exchanges with the workers

    def _send(self, index: int, command: str, data: Any = None) -> None:
        """Send a command to a worker, after the frees of its dropped snapshots."""
        remote = self.remotes[index]
        try:
            pids = self._snapshots.take_dropped(index)
            if pids:
                remote.send_bytes(dumps(("free", pids)))
            remote.send_bytes(dumps((command, data)))
        except OSError:
            self._died(index)
        self._unanswered[index] += 1

    def _receive(self, index: int) -> Any:
        """:return: the reply to the last command sent to a worker (replies to interrupted ones are skipped)"""
        try:
            while True:
                status, value = pickle.loads(self.remotes[index].recv_bytes())
                self._unanswered[index] -= 1
                if self._unanswered[index] == 0:
                    break
        except (EOFError, OSError):
            self._died(index)
        if status == "error":
            name, text = value
            raise (AttributeError if name == "AttributeError" else RuntimeError)(f"ForkVecEnv sub-env {index}: {text}")
        return value

    def _broadcast(self, command: str, data: Any = None, indices: VecEnvIndices = None) -> list[Any]:
        targets = list(self._get_indices(indices))
        for i in targets:
            self._send(i, command, data)
        return [self._receive(i) for i in targets]

    def _died(self, index: int) -> typing.NoReturn:
        process = self.processes[index]
        try:
            code = process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            code = None
        self.close()
        raise RuntimeError(
            f"ForkVecEnv: the worker of sub-env {index} died (exit code {code}: killed, or out of memory); the env is closed"
        ) from None

    # ------------------------------------------------------------------ VecEnv

    def step_async(self, actions: np.ndarray) -> None:
        for i, action in enumerate(actions):
            self._send(i, "step", action)
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        results = [self._receive(i) for i in range(self.num_envs)]
        self.waiting = False
        obs, rewards, dones, infos, self.reset_infos = zip(*results, strict=True)  # type: ignore[assignment]
        return _stack(obs), np.stack(rewards), np.stack(dones), list(infos)

    def reset(self) -> VecEnvObs:
        for i in range(self.num_envs):
            self._send(i, "reset", (self._seeds[i], self._options[i]))
        results = [self._receive(i) for i in range(self.num_envs)]
        obs, self.reset_infos = zip(*results, strict=True)  # type: ignore[assignment]
        self._reset_seeds()
        self._reset_options()
        return _stack(obs)

    def close(self) -> None:
        """Stop the workers; their paused copies and rollouts end with them."""
        if self.closed:
            return
        self.closed = True
        self._finalizer()

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return self._broadcast("render")

    def has_attr(self, attr_name: str) -> bool:
        return all(self._broadcast("has_attr", attr_name))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._broadcast("get_attr", attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._broadcast("set_attr", (attr_name, value), indices)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return self._broadcast("env_method", (method_name, method_args, method_kwargs), indices)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        return self._broadcast("is_wrapped", wrapper_class, indices)

    # ------------------------------------------------------------------ fork snapshots

    def call(self, function: Callable[..., Any], *args: Any, indices: VecEnvIndices = None) -> list[Any]:
        """
        :param function: a picklable function, run as ``function(env, *args)`` in the worker of each sub-env
        :return: its results, one per sub-env of ``indices``
        """
        return self._broadcast("call", (function, args), indices)

    def snapshot(self, indices: Sequence[int]) -> list[ForkSnapshot]:
        """
        Fork a paused copy of each sub-env of ``indices`` (their workers fork at the same time).

        :return: one snapshot per index, of the sub-env's current state
        :raises RuntimeError: past :attr:`max_snapshots` live snapshots
        """
        if self._snapshots.count() + len(indices) > self.max_snapshots:
            gc.collect()  # handles in reference cycles
        live = self._snapshots.count()
        if live + len(indices) > self.max_snapshots:
            raise RuntimeError(
                f"ForkVecEnv holds {live} live fork snapshots, its cap max_snapshots={self.max_snapshots}: raise it "
                "(make_vec_env(..., vec_env_kwargs=dict(max_snapshots=N)); a paused LunarLander copy holds about 3.5 MB) "
                "or take fewer real steps per update (n_steps * n_envs)"
            )
        snapshots = [ForkSnapshot(*reply) for reply in self._broadcast("snapshot", None, list(indices))]
        for i, snapshot in zip(indices, snapshots, strict=True):
            self._snapshots.add(i, snapshot)
        return snapshots

    def free_snapshots(self) -> None:
        """Free every live paused copy now (their handles can no longer be restored)."""
        if self.closed:
            return
        for i in range(self.num_envs):
            self._snapshots.dropped[i].extend(self._snapshots.live[i])
        self._broadcast("sync")  # the frees go ahead of it: its reply means they are done

    @property
    def live_snapshots(self) -> int:
        """Paused copies alive (or about to be freed at the next command)."""
        return self._snapshots.count()

    def preload(self, module: str) -> None:
        """
        Import ``module`` in every worker now, so that the paused copies forked later, and their forks, have it
        imported (the code their commands will run, imported once rather than in every fork).

        :raises RuntimeError: when a worker cannot import it
        """
        self._broadcast("preload", module)

    def stand_in(self) -> ForkStandIn:
        """:return: what stands for a sub-env in the stepper seam (see :class:`ForkStandIn`)"""
        return ForkStandIn(self.observation_space, self.action_space)
