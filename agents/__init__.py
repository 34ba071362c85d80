"""The experiment-side zoo: algorithm table and RL-Zoo-format presets (``agents/<algo>.yml``).

``ALGOS`` maps the ``--algo`` names of ``train.py`` to classes. ``arsm`` is :class:`arsm_rl.ARSM`;
every estimator of :data:`arsm_rl.ESTIMATORS` marked ``algo`` (``rloo``, ``all_action``) is ARSM with
that gradient estimator (a thin subclass that only changes the default of ``estimator``, so its
models are ordinary ARSM models: ``ARSM.load`` reads them).
``a2c`` and ``ppo`` are Stable-Baselines3's own classes, used as baselines with RL Zoo's presets, and
``maskable_ppo`` is sb3-contrib's MaskablePPO, the baseline on envs with action masks.

Preset lookup (:func:`load_preset`) follows RL Zoo: the env id's key, else ``atari`` for ALE
games, else ``default``. A named variant (``--preset paper``) reads the key ``<env id>-<variant>``.

The rest of the experiment machinery behind ``train.py`` lives in the submodules: ``errors`` (``UsageError``),
``hyperparams`` (a run's preset and ``-params`` to checked constructor arguments), ``envs`` (env probing and
building), ``models`` (model zips: sniffing, loading, weights only), ``evaluation``, ``callbacks`` and
``experiment`` (one run); ``zoo`` runs ARSM inside RL Zoo itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from arsm_rl import ARSM, ESTIMATORS

__all__ = ["ALGOS", "ARSM_FAMILY", "PRESET_DIR", "estimator_algo", "is_atari", "load_preset", "preset_envs"]

#: Folder of the YAML presets, one file per algorithm name.
PRESET_DIR = Path(__file__).resolve().parent


def estimator_algo(estimator: str) -> type[ARSM]:
    """
    ARSM with ``estimator`` as the default of its ``estimator`` argument: a thin subclass, so its models are
    ordinary ARSM models (``ARSM.load`` reads them) and its presets are ARSM's.

    :param estimator: a name in :data:`arsm_rl.ESTIMATORS`
    """
    summary = ESTIMATORS[estimator].summary

    def __init__(self: ARSM, policy: Any, env: Any, estimator: str = estimator, **kwargs: Any) -> None:
        ARSM.__init__(self, policy, env, estimator=estimator, **kwargs)

    name = "".join(part.capitalize() for part in estimator.split("_")) + "ARSM"
    doc = f"ARSM with ``estimator={estimator!r}`` by default: {summary}."
    return type(name, (ARSM,), {"__init__": __init__, "__doc__": doc, "__module__": __name__, "__qualname__": name})


#: ``--algo`` name -> algorithm class: ARSM, one ARSM per estimator registered as an algo of its own
#: (``Estimator.algo``: the self-critic peers ``rloo`` and ``all_action``), SB3's A2C and PPO, and sb3-contrib's
#: MaskablePPO.
ALGOS: dict[str, type[BaseAlgorithm]] = {
    "arsm": ARSM,
    **{name: estimator_algo(name) for name, cls in ESTIMATORS.items() if cls.algo},
    "a2c": A2C,
    "ppo": PPO,
    "maskable_ppo": MaskablePPO,
}

#: Algorithms that need cloneable envs (and ``wrapper_class=make_cloneable``).
ARSM_FAMILY = frozenset(name for name, cls in ALGOS.items() if issubclass(cls, ARSM))


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` names an ALE game (``ALE/Pong-v5``, ``PongNoFrameskip-v4``)."""
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


def _read(path: Path) -> dict[str, dict[str, Any]]:
    with open(path) as file:
        presets = yaml.safe_load(file) or {}
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ValueError(f"{path}: expected a mapping from env ids to hyperparameter mappings")
    return presets


def preset_file(algo: str) -> Path:
    """The preset file of an ``--algo`` name (``rloo`` and ``all_action`` share ``arsm.yml``)."""
    return PRESET_DIR / f"{'arsm' if algo in ARSM_FAMILY else algo}.yml"


def preset_envs(algo: str) -> list[str]:
    """Env ids (and ``<env>-<variant>`` keys) with a preset for ``algo``, in file order."""
    return list(_read(preset_file(algo)))


def load_preset(
    algo: str, env_id: str, conf_file: str | Path | None = None, variant: str | None = None
) -> tuple[str, dict[str, Any]]:
    """
    Read the raw (unprocessed) preset of ``algo`` on ``env_id``.

    :param algo: a key of :data:`ALGOS`
    :param env_id: Gymnasium id
    :param conf_file: YAML file to read instead of ``agents/<algo>.yml``
    :param variant: named variant, read from the key ``<env_id>-<variant>``
    :return: the key that was used and a copy of its hyperparameters
    :raises KeyError: if the file has no matching key (a variant must exist; otherwise ``default``
        is the fallback)
    """
    path = Path(conf_file) if conf_file is not None else preset_file(algo)
    presets = _read(path)
    if variant is not None:
        key = f"{env_id}-{variant}"
        if key not in presets:
            choices = ", ".join(k for k in presets if k.startswith(f"{env_id}-")) or "none"
            raise KeyError(f"{path} has no preset {key!r} (variants of {env_id}: {choices})")
        return key, dict(presets[key])
    for key in (env_id, "atari" if is_atari(env_id) else None, "default"):
        if key is not None and key in presets:
            return key, dict(presets[key])
    raise KeyError(f"{path} has no preset for {env_id!r} and no 'default' entry")
