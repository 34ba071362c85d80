"""Presets and hyperparameters: from ``agents/<algo>.yml`` and ``-params`` to checked constructor arguments.

:func:`read_preset` reads the preset of a run (with its ``-params`` overrides, parsed by :func:`parse_overrides`),
:func:`split_preset` separates the env/run settings (:data:`ENV_KEYS`) from the constructor's keyword arguments,
:func:`build_kwargs` evaluates the code strings (:func:`eval_code`, RL Zoo's ``policy_kwargs: "dict(...)"``) and
builds ``lin_X`` schedules, and :func:`check_types` refuses values the constructor's annotations do not allow,
before anything is built. :func:`resolved_hyperparams` lists every constructor argument of a run (for
``config.yml`` and TensorBoard), :func:`list_presets` prints ``--list``.
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import inspect
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

import torch as th
import yaml
from stable_baselines3.common.utils import LinearSchedule

from agents import ALGOS, ARSM_FAMILY, load_preset, preset_envs
from agents.errors import UsageError

__all__ = ["CODE_KEYS", "ENV_KEYS", "build_kwargs", "check_types", "constructor_hints", "constructor_parameters",
           "eval_code", "list_presets", "parse_overrides", "plain_value", "read_preset", "resolved_hyperparams",
           "split_preset"]  # fmt: skip

#: Preset keys that configure the environment or the run rather than the algorithm's constructor.
ENV_KEYS = ("n_timesteps", "n_envs", "normalize", "env_wrapper", "frame_stack", "env_kwargs")
#: Preset keys whose string values are Python expressions (RL Zoo convention), evaluated with ``nn``/``th``.
CODE_KEYS = ("policy_kwargs", "normalize", "env_kwargs")
_BARE_WORD = re.compile(r"^[A-Za-z_][\w.\-/]*$")


def read_preset(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """
    The raw preset of ``--algo`` on ``--env`` (``-conf``, ``--preset``), with the ``-params`` overrides and the
    ``--rollout-workers``/``--rollout-backend`` flags applied.

    :return: the preset's key and its raw values
    :raises UsageError: on a missing or malformed preset (file), malformed ``-params``, rollout flags outside the ARSM family
    """
    try:
        key, raw = load_preset(args.algo, args.env, args.conf_file, args.preset)
    except FileNotFoundError as error:
        raise UsageError(f"preset file not found: {error.filename}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"malformed preset YAML ({str(error).splitlines()[0]})") from None
    except (KeyError, ValueError) as error:
        raise UsageError(str(error).strip("'\"") + "; see python train.py --list") from None
    raw.update(parse_overrides(args.hyperparams))
    for flag, key_name, value in (("--rollout-workers", "n_rollout_workers", args.rollout_workers),
                                  ("--rollout-backend", "rollout_backend", args.rollout_backend)):  # fmt: skip
        if value is not None:
            if args.algo not in ARSM_FAMILY:
                raise UsageError(f"{flag} is for the ARSM family (--algo {', '.join(ARSM_FAMILY)}), not {args.algo}")
            raw[key_name] = value
    return key, raw


def list_presets() -> int:
    """``--list``: the env ids with a preset, per algorithm (variants as ``--preset`` names)."""
    for algo in ALGOS:
        if algo in ARSM_FAMILY and algo != "arsm":
            continue
        keys = [k for k in preset_envs(algo) if k not in ("default", "atari")]
        plain = [k for k in keys if not any(k.startswith(f"{other}-") for other in keys if other != k)]
        variants = [f"{k} (--env {base} --preset {k[len(base) + 1 :]})" for k in keys if k not in plain for base in plain
                    if k.startswith(f"{base}-")]  # fmt: skip
        print(f"{algo}: {', '.join(plain + variants)}")
    peers = ", ".join(algo for algo in ALGOS if algo in ARSM_FAMILY and algo != "arsm")
    print(f"{peers}: the arsm presets; other env ids fall back to each file's 'default' entry")
    return 0


def parse_overrides(items: Sequence[str], what: str = "-params") -> dict[str, Any]:
    """
    ``key:value`` pairs to a dict; values are Python literals (``0.01``, ``None``, ``[64, 64]``, ``"rloo"``).

    A value that is not a literal is kept as a string when it is a bare word (the shell strips quotes,
    so ``estimator:"rloo"`` arrives as ``estimator:rloo``) or when the key holds code (``policy_kwargs``).

    :raises UsageError: on a missing ``:`` or an unparsable value
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition(":")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"malformed {what} entry {item!r}: write key:value, e.g. learning_rate:0.01")
        try:
            value: Any = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if key in CODE_KEYS or _BARE_WORD.match(text):
                value = text
            else:
                raise UsageError(
                    f"malformed {what} value {item!r}: use a Python literal, e.g. n_steps:128, gamma:0.98 or estimator:rloo"
                ) from None
        out[key] = value
    return out


def eval_code(key: str, text: str) -> Any:
    """Evaluate a preset's code string (``dict(net_arch=[64], activation_fn=nn.ReLU)``) with ``nn`` and ``th`` in scope."""
    try:
        return eval(text, {"__builtins__": {}, "dict": dict, "list": list, "nn": th.nn, "th": th, "True": True})
    except Exception as error:
        raise UsageError(f"cannot evaluate {key} {text!r} ({error}); write e.g. dict(net_arch=[64, 64])") from None


def _schedule(value: Any) -> Any:
    """RL Zoo's ``lin_X``: a linear schedule from X to 0 over training."""
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            return LinearSchedule(float(value[4:]), 0.0, 1.0)
        except ValueError:
            raise UsageError(f"malformed schedule {value!r}: write lin_<start>, e.g. lin_0.001") from None
    return value


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``cls.__init__``, following ``**kwargs`` up the class hierarchy."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(klass.__init__)
        for name, param in signature.parameters.items():
            if name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                params.setdefault(name, param)
        if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return params


def split_preset(algo: str, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Split a raw preset into run/env settings and constructor keyword arguments (still raw strings).

    :raises UsageError: on keys the algorithm's constructor does not take
    """
    settings = {key: raw.pop(key) for key in ENV_KEYS if key in raw}
    raw.setdefault("policy", "MlpPolicy")
    accepted = constructor_parameters(ALGOS[algo])
    unknown = sorted(set(raw) - set(accepted) - {"policy"})
    if unknown:
        raise UsageError(f"{algo} takes no hyperparameter {', '.join(unknown)}; check -params or the preset")
    return settings, raw


def build_kwargs(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs from raw preset values: ``policy_kwargs`` strings evaluated, ``lin_X`` schedules built."""
    kwargs = {key: _schedule(value) for key, value in hyperparams.items()}
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = eval_code("policy_kwargs", kwargs["policy_kwargs"])
    return kwargs


def constructor_hints(cls: type) -> dict[str, Any]:
    """Type annotations of the keyword parameters of ``cls.__init__``, following ``**kwargs`` up the class hierarchy."""
    hints: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        try:
            found = typing.get_type_hints(klass.__init__)
        except (NameError, TypeError):  # an annotation that cannot be resolved: no check for that class
            found = {}
        for name, hint in found.items():
            hints.setdefault(name, hint)
        if not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(klass.__init__).parameters.values()):
            break
    return hints


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is allowed by the annotation ``hint`` (unknown kinds of annotation allow everything)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is collections.abc.Callable:
        return callable(value)
    if origin is type:
        return isinstance(value, type)
    if isinstance(origin, type):
        return isinstance(value, origin)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def check_types(algo: str, kwargs: dict[str, Any]) -> None:
    """
    Refuse constructor arguments whose type the constructor's annotations do not allow (``gamma:high``,
    ``learning_rate:[1, 2]``), before anything is built. Values are checked by the constructor afterwards.

    :raises UsageError: naming the key, the value and the expected type
    """
    hints = constructor_hints(ALGOS[algo])
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            expected = str(hint).replace("collections.abc.", "").replace("typing.", "").replace("<class '", "")
            expected = expected.replace("'>", "")
            raise UsageError(f"{key}:{value!r} is not a valid {key} for {algo} (expected {expected}); check -params or preset")


def plain_value(value: Any) -> Any:
    """A YAML/TensorBoard friendly form of a hyperparameter value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def resolved_hyperparams(algo: str, hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Every constructor argument with its value: the preset's, else the constructor default."""
    out: dict[str, Any] = {}
    for name, param in constructor_parameters(ALGOS[algo]).items():
        if name in ("env", "tensorboard_log", "verbose", "seed", "device", "_init_setup_model"):
            continue
        if name in hyperparams:
            out[name] = plain_value(hyperparams[name])
        elif param.default is not inspect.Parameter.empty:
            out[name] = plain_value(param.default)
    return out
