"""The processes of ``subproc`` rollout workers: the script guard they need, their scheduling priority, how they
ended."""

from __future__ import annotations

import ast
import inspect
import os
import signal
import sys
from pathlib import Path

__all__ = ["WORKER_NICENESS", "exit_reason", "unguarded_main_line", "yield_to_trainer"]


def unguarded_main_line() -> int | None:
    """
    The line of the running script (``__main__``) that is starting worker processes outside an
    ``if __name__ == "__main__":`` block, or ``None`` (guarded, or no script file: ``python -c``, a notebook).

    ``forkserver`` and ``spawn`` processes run the script again when they start; unguarded, each would start processes
    of its own and die, so rollout workers refuse to start from there.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame = inspect.currentframe()
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__"):
        frame = frame.f_back
    if frame is None or path is None or os.path.abspath(frame.f_code.co_filename) != os.path.abspath(path):
        return None
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body[0].lineno <= line <= (node.end_lineno or 0):
            return None
    return line


def _is_main_test(test: ast.expr) -> bool:
    """Whether ``test`` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = {ast.dump(test.left), ast.dump(test.comparators[0])}
    return sides == {ast.dump(ast.Name("__name__", ast.Load())), ast.dump(ast.Constant("__main__"))}


def exit_reason(exitcode: int | None) -> str:
    """:return: how a worker process ended, from its ``exitcode`` (negative: the signal that killed it)"""
    if exitcode is None:
        return "still running, but its pipe is closed"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


#: How much lower than the trainer's the workers' scheduling priority is (``nice``): on a machine whose cores they
#: share with the trainer, the trainer's serial work (real steps, its own share, the gradient) goes first, and a short
#: run does not wait for the workers' start-up (imports, scratch envs), which uses the cores left idle.
WORKER_NICENESS = 5


def yield_to_trainer(pid: int | None) -> None:
    """Lower a worker process's scheduling priority by :data:`WORKER_NICENESS` (where the platform allows it)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid or 0, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)
    except (AttributeError, OSError):  # no setpriority (Windows), or not permitted: the default priority
        pass
