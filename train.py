"""Train (or evaluate) an agent with a preset from ``agents/``: the RL Baselines3 Zoo command line for ARSM.

    python train.py --algo arsm --env CartPole-v1
    python train.py --algo ppo --env Acrobot-v1 -tb runs --seed 1
    python train.py --algo arsm --env CartPole-v1 -params learning_rate:0.02 estimator:"rloo"
    python train.py --algo arsm --env CartPole-v1 --preset paper
    python train.py --algo arsm --env CartPole-v1 --eval-only -i logs/arsm/CartPole-v1_1/CartPole-v1.zip
    python train.py --list

A run writes ``<log-folder>/<algo>/<env>_<k>/``: ``<env>.zip`` (the final model), ``config.yml`` (the
resolved settings and every constructor argument, defaults included), Monitor CSVs
(``<i>.monitor.csv``), ``vecnormalize.pkl`` when the preset normalises, ``rl_model_<steps>_steps.zip``
checkpoints with ``--save-freq``, and ``best_model.zip``/``evaluations.npz`` with evaluation on. Training stops
when an evaluation reaches the env's ``spec.reward_threshold`` (``--no-stop-at-threshold``: the whole budget).
See ``docs/train.md``.

This file is the command line only: it parses the flags, hands them to :func:`agents.experiment.run` (the
experiment machinery lives in ``agents/``: ``hyperparams``, ``envs``, ``models``, ``evaluation``, ``callbacks``,
``experiment``) and turns bad input (:class:`agents.errors.UsageError`) into one ``error: ...`` line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from agents import ALGOS
from agents.envs import VEC_ENVS
from agents.errors import UsageError
from agents.experiment import run
from agents.hyperparams import list_presets
from arsm_rl.rollouts import BACKENDS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see python train.py --help)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default once: as the help text says it, else argparse's ``(default: ...)``; none for flags and
    empty defaults (``None``, ``''``, ``[]``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default in (None, "", []) or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


#: RL Zoo's hyperparameter-search flags: the search runs through RL Zoo itself (``python -m agents.zoo``).
OPTIMIZE_FLAGS = ("-optimize", "--optimize-hyperparameters", "--n-trials", "--max-total-trials", "--n-jobs", "--sampler",
                  "--pruner", "--n-startup-trials", "--n-evaluations", "--storage", "--study-name", "--no-optim-plots",
                  "-optimize-params", "--optimization-log-path")  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags, named as in RL Baselines3 Zoo's ``train.py``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    optimize = [a for a in args_list if a.split("=", 1)[0] in OPTIMIZE_FLAGS]
    if optimize:
        rest = " ".join(args_list if "--algo" in args_list else ["--algo", "arsm", *args_list])
        raise UsageError(
            f"{optimize[0]}: hyperparameter search runs through RL Zoo itself, with ARSM registered: "
            f"python -m agents.zoo train {rest} (needs pip install -e '.[zoo]')"
        )
    p = _Parser(description=__doc__.split("\n")[0], formatter_class=_HelpFormatter)
    p.add_argument("--algo", default="arsm", help=f"algorithm: {', '.join(ALGOS)}")
    p.add_argument("--env", default="CartPole-v1", help="Gymnasium id (also arsm/... and module:EnvId)")
    p.add_argument("-n", "--n-timesteps", type=_positive, default=None, help="real env steps (default: the preset's)")
    p.add_argument("--seed", type=_at_least(-1), default=-1, help="random seed (-1: draw one)")
    p.add_argument("--n-envs", type=_positive, default=None, help="parallel envs (default: the preset's)")
    p.add_argument("--vec-env", default="dummy", choices=list(VEC_ENVS), help="VecEnv type (fork: arsm_rl.ForkVecEnv)")
    p.add_argument("--rollout-workers", type=_at_least(0), default=None,
                   help="ARSM family: processes for pseudo rollouts (default: the preset's, else 0: in process)")  # fmt: skip
    p.add_argument("--rollout-backend", default=None, choices=list(BACKENDS),
                   help="ARSM family: where rollout workers run (%(choices)s; default: preset's, else subproc)")  # fmt: skip
    p.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY:VALUE",
                   help="keyword arguments of gym.make (default: the preset's env_kwargs)")  # fmt: skip
    p.add_argument("-tb", "--tensorboard-log", default="", help="TensorBoard folder (default: none)")
    p.add_argument("-f", "--log-folder", default="logs", help="where run folders are created")
    p.add_argument("-uuid", "--uuid", action="store_true", help="append a unique id to the run folder's name")
    p.add_argument("--eval-freq", type=int, default=None,
                   help="evaluate every N real steps (<= 0 disables; default: about 20 times a run, <= 25000)")  # fmt: skip
    p.add_argument("--no-stop-at-threshold", dest="stop_at_threshold", action="store_false",
                   help="train the whole budget (default: stop once an evaluation reaches spec.reward_threshold)")  # fmt: skip
    p.add_argument("--eval-episodes", type=_positive, default=5, help="episodes per evaluation")
    p.add_argument("--n-eval-envs", type=_positive, default=1, help="envs of the evaluation VecEnv")
    p.add_argument("--eval-env-kwargs", nargs="+", default=[], metavar="KEY:VALUE",
                   help="keyword arguments of gym.make for the evaluation env (default: --env-kwargs)")  # fmt: skip
    p.add_argument("--stochastic", action="store_true", help="evaluate the stochastic policy (default: deterministic)")
    p.add_argument("--save-freq", type=int, default=-1, help="checkpoint every N real steps (<= 0 disables)")
    p.add_argument("--log-interval", type=_at_least(-2), default=-1,
                   help="updates between progress tables (-1: about 20 per run, -2: none)")  # fmt: skip
    p.add_argument(
        "-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE", help="override preset values (Python literals)"
    )
    p.add_argument("-conf", "--conf-file", default=None, help="preset YAML to read instead of agents/<algo>.yml")
    p.add_argument("--preset", default=None, help="named variant: reads the key <env>-<preset> (e.g. paper)")
    p.add_argument("-i", "--trained-agent", default="", help="model zip to continue training (or to evaluate)")
    p.add_argument("--weights-only", action="store_true",
                   help="with -i: build the model from the preset and read only the zip's weights (no pickle)")  # fmt: skip
    p.add_argument("--eval-only", action="store_true", help="evaluate --trained-agent and exit")
    p.add_argument("--gym-packages", nargs="+", default=[], help="modules to import (they register envs)")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--num-threads", type=int, default=1,
                   help="torch CPU threads (default 1: small MLPs run fastest on one; -1: torch's default, for CNNs)")
    p.add_argument("-P", "--progress", action="store_true", help="show a progress bar (default: on an interactive terminal)")
    p.add_argument("--verbose", type=int, default=1, help="0 silent, 1 progress table, 2 debug (tracebacks)")
    p.add_argument("--list", action="store_true", help="print the envs each algorithm has presets for")
    args = p.parse_args(args_list)
    if args.log_interval == 0:
        raise UsageError("--log-interval must be >= 1, -1 (about 20 tables per run) or -2 (none)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: bad input becomes one ``error: ...`` line on stderr and exit status 2."""
    args = None
    try:
        args = parse_args(argv)
        return list_presets() if args.list else run(args)
    except UsageError as error:
        if args is not None and args.verbose >= 2:
            raise
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
