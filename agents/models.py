"""Models of a run: a new one from the preset, or one from a model zip (``-i``).

:func:`model_algo` tells which ``--algo`` a zip belongs to from its JSON part alone (nothing is unpickled);
:func:`load_model` is SB3's ``load`` with one-line errors (it unpickles: trusted files only) and
:func:`load_weights` the ``--weights-only`` way, which reads only the network weights into a model built from the
preset. :func:`build_model` makes the model of a training run, with its ``VecNormalize`` statistics.
"""

from __future__ import annotations

import argparse
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents import ALGOS, ARSM_FAMILY
from agents.errors import UsageError
from agents.hyperparams import constructor_parameters
from arsm_rl.cloning import NotCloneableError

__all__ = ["build_model", "check_model_algo", "load_model", "load_weights", "model_algo", "model_file",
           "refuse_pickled_statistics", "vecnormalize_path"]  # fmt: skip

#: What SB3's ``load`` raises on a file that is not a model zip (of this algorithm).
_LOAD_ERRORS = (
    zipfile.BadZipFile,
    KeyError,
    ValueError,
    EOFError,
    RuntimeError,
    pickle.UnpicklingError,
    AttributeError,
    AssertionError,
    TypeError,
)


def model_file(path: str) -> Path:
    """
    The model zip ``path`` names (``.zip`` may be left out).

    :raises UsageError: if there is no such file
    """
    file = Path(path)
    if not file.is_file() and file.with_suffix(".zip").is_file():
        file = file.with_suffix(".zip")
    if not file.is_file():
        raise UsageError(
            f"model file not found: {path} (pass the .zip written by train.py, e.g. logs/arsm/CartPole-v1_1/CartPole-v1.zip)"
        )
    return file


def model_algo(file: Path) -> str | None:
    """
    The ``--algo`` a model zip belongs to, read from its JSON ``data`` (nothing is unpickled): among the algorithms
    whose policies come from the saved policy class's module, the one whose constructor parameters best match the
    saved attributes (ARSM-family zips give ``arsm``).

    :return: the algorithm, or ``None`` if the file is not a Stable-Baselines3 model zip
    """
    try:
        with zipfile.ZipFile(file) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return None
    if not isinstance(data, dict) or "policy_class" not in data:
        return None
    saved = set(data)
    policy_module = data["policy_class"].get("__module__") if isinstance(data["policy_class"], dict) else None

    def score(algo: str) -> tuple[bool, int]:
        # first the policy's module (MaskablePPO's and PPO's parameters nearly coincide), then the parameters
        own_policy = any(cls.__module__ == policy_module for cls in ALGOS[algo].policy_aliases.values())
        params = set(constructor_parameters(ALGOS[algo]))
        return own_policy, len(params & saved) - len(params - saved)

    return max(ALGOS, key=score)


def check_model_algo(algo: str, file: Path) -> None:
    """
    :raises UsageError: if ``file`` is not a model zip, or holds a model of another algorithm than ``algo``
    """
    found = model_algo(file)
    if found is None:
        raise UsageError(f"{file} is not a Stable-Baselines3 model zip (pass the .zip written by train.py)")
    if found != algo and not (found in ARSM_FAMILY and algo in ARSM_FAMILY):
        raise UsageError(f"{file} holds a model of --algo {found}, not --algo {algo}: pass --algo {found}")


def load_model(algo: str, path: str, **kwargs: Any) -> BaseAlgorithm:
    """
    Load a model zip with friendly errors. SB3's ``load`` unpickles parts of the zip, which can run code: load only
    files you trust (see :func:`load_weights` for the others).

    :raises UsageError: if the file is missing or not a model of ``algo``
    """
    file = model_file(path)
    check_model_algo(algo, file)
    try:
        return ALGOS[algo].load(file, **kwargs)
    except _LOAD_ERRORS as error:
        raise UsageError(
            f"cannot load {file} as an {algo} model ({type(error).__name__}: {error}); is it a model zip of --algo {algo}?"
        ) from None


def load_weights(model: BaseAlgorithm, algo: str, path: str) -> None:
    """
    ``--weights-only``: put the zip's network weights into ``model`` (built from the preset) without reading its
    pickled parts (SB3's ``set_parameters``: the ``.pth`` files are read with ``torch.load(weights_only=True)``).

    :raises UsageError: if the file is missing, of another algorithm, or its weights do not fit the network
    """
    file = model_file(path)
    check_model_algo(algo, file)
    try:
        model.set_parameters(str(file), exact_match=True, device=model.device)
    except _LOAD_ERRORS as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(
            f"the weights in {file} do not fit the preset's network ({reason}); pass the -params it was trained with"
        ) from None


def vecnormalize_path(model_path: str) -> Path:
    return Path(model_path).resolve().parent / "vecnormalize.pkl"


def refuse_pickled_statistics(args: argparse.Namespace) -> None:
    if args.weights_only and vecnormalize_path(args.trained_agent).is_file():
        raise UsageError(
            f"--weights-only does not read {vecnormalize_path(args.trained_agent)} (VecNormalize statistics are a "
            "pickle, which can run code); use a model you trust without --weights-only"
        )


def build_model(
    args: argparse.Namespace,
    venv: VecEnv,
    kwargs: dict[str, Any],
    normalize: dict[str, Any] | None,
    seed: int,
) -> BaseAlgorithm:
    """A new model from the preset, or the ``-i`` model (with its VecNormalize statistics) on ``venv``."""
    tensorboard_log = args.tensorboard_log or None
    if args.trained_agent and not args.weights_only:
        stats = vecnormalize_path(args.trained_agent)
        if normalize is not None:
            venv = VecNormalize.load(str(stats), venv) if stats.is_file() else VecNormalize(venv, **normalize)
        model = load_model(
            args.algo, args.trained_agent, env=venv, device=args.device, tensorboard_log=tensorboard_log, verbose=args.verbose
        )
        model.set_random_seed(seed)
        return model
    if normalize is not None:
        venv = VecNormalize(venv, **normalize)
    try:
        model = ALGOS[args.algo](
            env=venv,
            seed=seed,
            device=args.device,
            verbose=args.verbose,
            tensorboard_log=tensorboard_log,
            **kwargs,
        )
    except NotCloneableError as error:
        raise UsageError(f"{args.env} cannot be cloned exactly: {error}") from None
    except (ValueError, TypeError, ImportError) as error:
        raise UsageError(f"cannot build {args.algo} on {args.env}: {error}") from None
    if args.weights_only:
        load_weights(model, args.algo, args.trained_agent)
    return model
