"""The processes behind :class:`~arsm_rl.forkvec.vec_env.ForkVecEnv`. This module imports neither torch nor SB3.

Three kinds of process serve an env, all running this module's code:

- a **worker** (one per sub-env) is a fresh interpreter started by the trainer (``python -m
  arsm_rl.forkvec.server``); it builds its env from the pickled env function and steps it as ``SubprocVecEnv``'s
  workers do (auto-reset, ``terminal_observation``);
- a **paused copy** is a ``fork`` of a worker (or of a rollout) taken as a snapshot: it does nothing but wait on a
  listening Unix socket; each connection to it is served by a new ``fork`` of it, so a snapshot restores any
  number of times;
- a **rollout** is such a fork: it serves one connection, stepping its copy of the env as ``gymnasium`` does (no
  auto-reset), with the statistics wrappers (``Monitor``) spliced out so that pseudo rollouts never touch the
  training statistics or their files. A paused copy makes its env headless first (no render-only work, which changes no
  step's result: :func:`~arsm_rl.cloning.headless_function`, which the trainer sends).

Lifetimes nest: a paused copy dies with the process that forked it (``PR_SET_PDEATHSIG``), a rollout with its
paused copy; a worker exits when its trainer connection closes, a rollout when its connection closes. Every
process reaps its children, and a worker adopts and reaps the orphans of its tree (``PR_SET_CHILD_SUBREAPER``), so
that none is left as a zombie. Ctrl-C (``SIGINT``) is the trainer's to handle: these processes ignore it.

Messages are pickled; commands are ``(name, data)`` pairs, replies ``("ok", value)`` or ``("error", (exception
type name, text))``.
Connections to paused copies are accepted only from processes of the same user (``SO_PEERCRED``).
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import itertools
import os
import pickle
import random
import secrets
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle
import gymnasium as gym

#: SB3 packages whose ``__init__`` imports torch (every algorithm, the ``VecEnv`` utilities) while the modules that
#: ``make_vec_env``'s env functions refer to (``Monitor``, ``patch_gym``) do not: a worker imports those modules
#: without running these package initialisers.
_BARE_PACKAGES = ("stable_baselines3", "stable_baselines3.common.vec_env")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def dumps(value: Any) -> bytes:
    """Pickle ``value``, with cloudpickle for what plain pickle cannot (classes defined in ``__main__``, lambdas)."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def call(conn: Connection, command: str, data: Any = None) -> Any:
    """Send a command, wait for its reply. :raises RuntimeError: when the command raised in the served process"""
    conn.send_bytes(dumps((command, data)))
    status, value = pickle.loads(conn.recv_bytes())
    if status == "error":
        raise RuntimeError(value[1])
    return value


def without_layers(env: gym.Env[Any, Any], positions: list[int]) -> gym.Env[Any, Any]:
    """:return: ``env`` with its wrapper layers at ``positions`` (0: ``env`` itself, outermost) spliced out"""
    chain: list[Any] = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    kept = [layer for depth, layer in enumerate(chain) if depth not in positions or depth == len(chain) - 1]
    for outer, inner in itertools.pairwise(kept):
        outer.env = inner
    return kept[0]


def _fork() -> int:
    """``os.fork``, with Python's global ``random`` state kept in the child (CPython reseeds it after a fork)."""
    state = random.getstate()
    pid = os.fork()
    if pid == 0:
        random.setstate(state)
    return pid


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this just forked process when its parent (pid ``parent``, read before the fork) exits."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent exited before the request took effect
        os._exit(0)


def _reap_children(*_: Any) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _reap_orphans(seconds: float) -> None:
    """Wait (up to ``seconds``) for the adopted orphans of this worker's tree, all killed already, to exit."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.005)
    except ChildProcessError:  # none left
        pass


def _same_user(conn: socket.socket) -> bool:
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return bool(uid == os.getuid())


class EnvServer:
    """
    Serves one env over one connection: a worker (``vec=True``: SB3 steps with auto-reset) or a rollout.

    :param conn: the connection it serves
    :param env: its env
    :param vec: step as a ``VecEnv`` worker (auto-reset, ``terminal_observation``)
    :param statistics: depths of the statistics layers to splice out of the env of rollouts forked from here
    :param headless: ``headless(env.unwrapped)``, run in each paused copy forked from here (``None``: nothing)
    """

    def __init__(
        self,
        conn: Connection,
        env: gym.Env[Any, Any],
        vec: bool,
        statistics: list[int],
        headless: Callable[[Any], Any] | None = None,
    ) -> None:
        self.conn = conn
        self.env = env
        self.vec = vec
        self.statistics = statistics
        self.headless = headless
        self.paused: set[int] = set()  # pids of this process's paused copies
        self.dying: set[int] = set()  # freed copies not yet reaped

    def serve(self) -> None:
        """Answer commands until the connection closes or ``close`` arrives, then free the paused copies."""
        handlers: dict[str, Callable[[Any], Any]] = {
            "step": self._step,
            "reset": self._reset,
            "snapshot": lambda _: self._snapshot(),
            "env_method": lambda data: self.env.get_wrapper_attr(data[0])(*data[1], **data[2]),
            "get_attr": self.env.get_wrapper_attr,
            "has_attr": self._has_attr,
            "set_attr": lambda data: setattr(self.env, *data),
            "is_wrapped": self._is_wrapped,
            "call": lambda data: data[0](self.env, *data[1]),
            "render": lambda _: self.env.render(),
            "spaces": lambda _: (self.env.observation_space, self.env.action_space),
            "layer_types": lambda _: self._layer_types(),
            "configure": self._configure,
            "sync": lambda _: self._reap(block=True),
            "preload": lambda name: importlib.import_module(name) and None,
        }
        try:
            while True:
                self._reap(block=False)
                command, data = pickle.loads(self.conn.recv_bytes())
                if command == "close":
                    break
                if command == "free":  # no reply: the trainer sends it ahead of its next command
                    self._free(data)
                    continue
                try:
                    reply = ("ok", handlers[command](data))
                except Exception as error:  # reported to the caller, which raises it
                    text = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=-3)}"
                    reply = ("error", (type(error).__name__, text))
                self.conn.send_bytes(dumps(reply))
        except (EOFError, ConnectionResetError, BrokenPipeError):  # the other side went away
            pass
        finally:
            self._free(list(self.paused))
            self._reap(block=True)

    def _step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not self.vec:
            return obs, reward, terminated, truncated
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info: dict[str, Any] = {}
        if done:
            info["terminal_observation"] = obs
            obs, reset_info = self.env.reset()
        return obs, reward, done, info, reset_info

    def _reset(self, data: tuple[int | None, dict[str, Any] | None]) -> Any:
        seed, options = data
        return self.env.reset(seed=seed, **({"options": options} if options else {}))

    def _has_attr(self, name: str) -> bool:
        try:
            self.env.get_wrapper_attr(name)
        except AttributeError:
            return False
        return True

    def _is_wrapped(self, wrapper_class: type) -> bool:
        layer: Any = self.env
        while isinstance(layer, gym.Wrapper):
            if isinstance(layer, wrapper_class):
                return True
            layer = layer.env
        return False

    def _layer_types(self) -> list[type]:
        types, layer = [], self.env
        while isinstance(layer, gym.Wrapper):
            types.append(type(layer))
            layer = layer.env
        return types

    def _configure(self, data: tuple[list[int], bytes]) -> None:
        """:param data: the statistics layers' depths, and ``arsm_rl.cloning.headless_function`` pickled"""
        self.statistics, finder = data
        try:  # arsm_rl.cloning imports here without torch: its SB3 imports find bare packages (_load)
            self.headless = pickle.loads(finder)(self.env)
        except Exception:  # headless only saves time: rollouts without it are the same
            self.headless = None

    def _snapshot(self) -> tuple[str, int]:
        """Fork a paused copy of this process; :return: the address it listens on and its pid"""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = f"\0arsm-fork-{os.getpid()}-{secrets.token_hex(8)}"
        listener.bind(address)
        listener.listen(128)
        parent = os.getpid()
        pid = _fork()
        if pid == 0:
            try:
                self._pause(listener, parent)
            finally:
                os._exit(0)
        listener.close()
        self.paused.add(pid)
        return address, pid

    def _pause(self, listener: socket.socket, parent: int) -> None:
        """The paused copy: fork a rollout for each connection, until killed."""
        self.conn.close()
        self.paused, self.dying = set(), set()
        _die_with_parent(parent)
        if self.headless is not None:
            self.headless(self.env.unwrapped)
        signal.signal(signal.SIGCHLD, _reap_children)
        while True:
            conn, _ = listener.accept()
            if not _same_user(conn):
                conn.close()
                continue
            me = os.getpid()
            if _fork() == 0:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _die_with_parent(me)
                env = without_layers(self.env, self.statistics)
                EnvServer(Connection(conn.detach()), env, vec=False, statistics=[]).serve()
                os._exit(0)
            conn.close()

    def _free(self, pids: list[int]) -> None:
        """Kill paused copies (reaped later: a process's teardown takes about a millisecond)."""
        for pid in pids:
            if pid in self.paused:
                self.paused.discard(pid)
                os.kill(pid, signal.SIGKILL)
                self.dying.add(pid)

    def _reap(self, block: bool) -> None:
        """Reap exited children (``block``: wait for the freed copies first)."""
        for pid in list(self.dying) if block else []:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:  # reaped already
                pass
            self.dying.discard(pid)
        try:
            while (pid := os.waitpid(-1, os.WNOHANG)[0]) > 0:
                self.dying.discard(pid)
        except ChildProcessError:  # no children
            pass


def _bare_packages() -> None:
    """Register :data:`_BARE_PACKAGES` as packages whose ``__init__`` did not run, so their submodules import alone."""
    for name in _BARE_PACKAGES:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def _load(payload: bytes) -> Any:
    """Unpickle the env function with :data:`_BARE_PACKAGES` bare; if it needs more of SB3, the normal way."""
    _bare_packages()
    try:
        return pickle.loads(payload)
    except (ImportError, AttributeError):
        for name in [name for name in sys.modules if name.split(".")[0] == "stable_baselines3"]:
            del sys.modules[name]
        return pickle.loads(payload)


def main() -> None:
    """A worker: ``python -m arsm_rl.forkvec.server FD``, FD a socket to the trainer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    conn = Connection(int(sys.argv[1]))
    try:
        path, registry, payload = pickle.loads(conn.recv_bytes())
        sys.path[:] = path
        for blob in registry:  # the trainer's env ids (registered by its imports), where this process can load them
            try:
                spec = pickle.loads(blob)
            except Exception:
                continue
            gym.registry.setdefault(spec.id, spec)
        env = _load(payload)()
        gc.freeze()  # the objects made so far are never traversed by the collector: fewer pages copied after forks
        conn.send_bytes(dumps(("ok", {"torch": "torch" in sys.modules})))
    except (EOFError, ConnectionResetError, BrokenPipeError):
        return
    except Exception as error:
        text = f"building the env failed: {type(error).__name__}: {error}"
        conn.send_bytes(dumps(("error", (type(error).__name__, text))))
        return
    EnvServer(conn, env, vec=True, statistics=[]).serve()
    _reap_orphans(seconds=2)
    env.close()


if __name__ == "__main__":
    main()
