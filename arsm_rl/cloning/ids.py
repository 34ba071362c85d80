"""Env ids whose registration needs an optional package: ale-py for ALE games, minigrid for MiniGrid/BabyAI."""

from __future__ import annotations

import importlib

import gymnasium as gym


def is_ale_id(env_id: str) -> bool:
    """Whether ``env_id`` names an ALE game (``ALE/Pong-v5``, ``PongNoFrameskip-v4``)."""
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


def is_minigrid_id(env_id: str) -> bool:
    """Whether ``env_id`` names a MiniGrid or BabyAI env."""
    return env_id.startswith("MiniGrid") or env_id.startswith("BabyAI")


def register_optional_envs(env_id: str) -> None:
    """Make ``env_id`` available to ``gym.make`` when an optional package provides it: ALE ids need
    ``import ale_py; gym.register_envs(ale_py)``, MiniGrid/BabyAI ids ``import minigrid``.  Other
    ids are left alone.

    :param env_id: a gymnasium env id.
    :raises ImportError: when the package is not installed, saying e.g.
        ``ALE/Pong-v5 needs ale-py: pip install -e '.[atari]'``.
    """
    if is_ale_id(env_id):
        module, name, extra = "ale_py", "ale-py", "atari"
    elif is_minigrid_id(env_id):
        module, name, extra = "minigrid", "minigrid", "minigrid"
    else:
        return
    try:
        package = importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{env_id} needs {name}: pip install -e '.[{extra}]'", name=module) from error
    gym.register_envs(package)  # importing registers the ids; this keeps the import visibly used
