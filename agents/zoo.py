"""Run ARSM through RL Baselines3 Zoo itself (``pip install -e ".[zoo]"``).

    python -m agents.zoo train --algo arsm --env CartPole-v1 -n 20000
    python -m agents.zoo train --algo arsm --env CartPole-v1 -optimize --n-trials 20 -n 20000
    python -m agents.zoo enjoy --algo arsm --env CartPole-v1 -f logs --no-render
    python -m agents.zoo record_video --algo arsm --env CartPole-v1 -f logs -n 500 -o videos

The Zoo has no plugin system: its algorithm table ``rl_zoo3.ALGOS`` is a plain dict, read when the
command line is parsed. This launcher adds ``arsm``, ``rloo`` and ``all_action`` (see
:data:`agents.ALGOS`) to it and to the Optuna sampler tables, then hands the remaining arguments to
``rl_zoo3.train``, ``rl_zoo3.enjoy`` or ``rl_zoo3.record_video`` (headless: it renders ``rgb_array``
frames). Without ``-conf`` an ARSM-family run reads ``agents/arsm.yml``.
For ARSM-family algorithms the Zoo's envs are built with :func:`arsm_rl.make_cloneable` as the
outermost wrapper (needed for ``--vec-env subproc``; harmless otherwise).
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable, Sequence
from typing import Any

import envs  # noqa: F401  (registers the arsm/ env ids)
from agents import ALGOS, ARSM_FAMILY, preset_file
from arsm_rl import make_cloneable

__all__ = ["COMMANDS", "ZooCloneable", "main", "register", "sample_arsm_params"]

#: The rl_zoo3 scripts the launcher runs.
COMMANDS = ("train", "enjoy", "record_video")


def sample_arsm_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """Optuna search space for ARSM (the Zoo's sampler signature)."""
    from torch import nn

    net_arch = trial.suggest_categorical("net_arch", ["small", "medium"])
    activation = trial.suggest_categorical("activation_fn", ["tanh", "relu"])
    budget = trial.suggest_categorical("max_pseudo_rollouts", [0, 16, 64, 256])
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.1, log=True),
        "n_steps": trial.suggest_categorical("n_steps", [64, 128, 256, 512]),
        "gamma": 1.0 - trial.suggest_float("one_minus_gamma", 0.001, 0.05, log=True),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.05, log=True),
        "max_pseudo_rollouts": budget or None,
        "policy_kwargs": {
            "net_arch": {"small": [64, 64], "medium": [128, 128]}[net_arch],
            "activation_fn": {"tanh": nn.Tanh, "relu": nn.ReLU}[activation],
        },
    }


def convert_arsm_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a stored Optuna trial's raw parameters back into constructor arguments (``-optimize`` reports)."""
    from torch import nn

    out = dict(params)
    out["gamma"] = 1.0 - out.pop("one_minus_gamma")
    out["max_pseudo_rollouts"] = out.pop("max_pseudo_rollouts") or None
    out["policy_kwargs"] = {
        "net_arch": {"small": [64, 64], "medium": [128, 128]}[out.pop("net_arch")],
        "activation_fn": {"tanh": nn.Tanh, "relu": nn.ReLU}[out.pop("activation_fn")],
    }
    return out


class ZooCloneable:
    """
    The Zoo's ``env_wrapper`` (if any), then :func:`make_cloneable` outermost.

    rl_zoo3 replaces Gymnasium's ``TimeLimit`` with its ``PatchedTimeLimit`` when it is imported, in the
    trainer only: ``--vec-env subproc`` workers would build their envs with the original class, and their
    snapshots would not fit the trainer's scratch copies. Unpickled in a worker (before the worker builds its
    env), this wrapper applies the same patch there.

    :param wrapper_class: the Zoo's env wrapper, or ``None``
    """

    def __init__(self, wrapper_class: Callable[[Any], Any] | None) -> None:
        self.wrapper_class = wrapper_class

    def __setstate__(self, state: dict[str, Any]) -> None:
        import rl_zoo3.gym_patches  # noqa: F401  (patches TimeLimit in this process, as in the trainer)

        self.__dict__.update(state)

    def __call__(self, env: Any) -> Any:
        return make_cloneable(self.wrapper_class(env) if self.wrapper_class is not None else env)


def _cloneable_make_vec_env(original: Callable[..., Any]) -> Callable[..., Any]:
    """``make_vec_env`` that puts :func:`make_cloneable` outermost, after the Zoo's ``env_wrapper``."""

    def make_vec_env(*args: Any, wrapper_class: Callable[[Any], Any] | None = None, **kwargs: Any) -> Any:
        return original(*args, wrapper_class=ZooCloneable(wrapper_class), **kwargs)

    return make_vec_env


def register(cloneable_envs: bool = True) -> None:
    """
    Add the ARSM family to the Zoo's algorithm and Optuna tables (idempotent).

    :param cloneable_envs: also make the Zoo build its envs with :func:`make_cloneable` (only do this
        when running an ARSM-family algorithm: other algorithms must not require cloneable envs)
    """
    import rl_zoo3
    import rl_zoo3.exp_manager
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    for name in ARSM_FAMILY:
        rl_zoo3.ALGOS[name] = ALGOS[name]  # the same dict object as rl_zoo3.utils.ALGOS and the modules' imports
        HYPERPARAMS_SAMPLER[name] = sample_arsm_params
        HYPERPARAMS_CONVERTER[name] = convert_arsm_params
    if cloneable_envs and not getattr(rl_zoo3.exp_manager.make_vec_env, "_arsm_cloneable", False):
        patched = _cloneable_make_vec_env(rl_zoo3.exp_manager.make_vec_env)
        patched._arsm_cloneable = True  # type: ignore[attr-defined]
        rl_zoo3.exp_manager.make_vec_env = patched


def _option(argv: Sequence[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m agents.zoo {train,enjoy,record_video} ZOO_ARGS...``"""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        commands = ",".join(COMMANDS)
        sys.exit(f"usage: python -m agents.zoo {{{commands}}} [rl_zoo3 arguments, e.g. --algo arsm --env CartPole-v1]")
    command, rest = args[0], args[1:]
    try:
        import rl_zoo3  # noqa: F401
    except ImportError:
        sys.exit("error: rl_zoo3 is not installed; pip install -e '.[zoo]'")
    algo = _option(rest, "--algo") or "ppo"
    register(cloneable_envs=algo in ARSM_FAMILY)
    if command == "train" and algo in ARSM_FAMILY and _option(rest, "-conf", "--conf-file", "-yaml") is None:
        rest += ["-conf", str(preset_file(algo))]
    sys.argv = [f"rl_zoo3.{command}", *rest]
    if command == "train":
        from rl_zoo3.train import train

        train()
    elif command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        enjoy()
    else:  # rl_zoo3.record_video has no entry function: run the module as a script
        runpy.run_module("rl_zoo3.record_video", run_name="__main__")


if __name__ == "__main__":
    main()
