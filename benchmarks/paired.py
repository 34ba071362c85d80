"""Two ARSM models trained in alternating chunks of real steps, in one invocation so that both see the same machine
load, and checked bit-identical at the end: the part that ``fork_training.py`` and ``headless.py`` share."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiment layer: agents/, train.py

from agents import ALGOS, load_preset
from agents.envs import make_env
from agents.hyperparams import build_kwargs, split_preset

Row = dict[str, Any]


def preset_model(preset_env: str, env_id: str, seed: int, vec_env: str = "dummy", **overrides: Any) -> Any:
    """The ARSM preset of ``preset_env`` (``agents/arsm.yml``, built as ``train.py`` builds it) on ``env_id``, with a
    ``vec_env`` training env (``dummy``: replay, ``fork``: ForkVecEnv) and constructor ``overrides``."""
    settings, hyperparams = split_preset("arsm", load_preset("arsm", preset_env)[1])
    venv = make_env(env_id, settings, int(settings.get("n_envs", 1)), seed, cloneable=True, vec_env=vec_env)
    return ALGOS["arsm"](env=venv, seed=seed, **{**build_kwargs(hyperparams), **overrides})


def check_chunks(parser: argparse.ArgumentParser, steps: int, chunk: int) -> None:
    """One-line errors (``parser.error``) for run lengths that cannot be timed in chunks."""
    if steps < 1 or chunk < 1:
        parser.error(f"--steps and --chunk must be >= 1 real steps, got {steps} and {chunk}")


def train_in_chunks(models: dict[str, Any], steps: int, chunk: int) -> tuple[list[Row], dict[str, float]]:
    """
    Train the models in turn, ``chunk`` real steps at a time, up to ``steps``.

    :return: a row per chunk (``steps``; per model its seconds of ``learn()``, and ``<name>_pseudo`` and
        ``<name>_replayed``, the pseudo and replayed steps it took) and each model's total seconds
    """
    rows, totals, done = [], dict.fromkeys(models, 0.0), 0
    while done < steps:
        done = min(steps, done + chunk)
        row: Row = {"steps": done}
        for name, model in models.items():
            pseudo, replayed = model.num_pseudo_steps, model.num_restore_steps
            start = time.perf_counter()
            model.learn(done - model.num_timesteps, reset_num_timesteps=False)  # SB3 adds its count so far: up to done
            row[name] = time.perf_counter() - start
            row[f"{name}_pseudo"] = model.num_pseudo_steps - pseudo
            row[f"{name}_replayed"] = model.num_restore_steps - replayed
            totals[name] += row[name]
        rows.append(row)
        print(row, flush=True)
    return rows, totals


def timing_rows(
    rows: list[Row], totals: dict[str, float], base: str, other: str, cells: Callable[[Row], list[str]]
) -> list[str]:
    """Table rows: real steps, ``base``'s and ``other``'s seconds and their ratio, then ``cells(row)``; and a total."""
    lines = [
        f"| {row['steps']:,} | {row[base]:.1f} | {row[other]:.1f} | {row[other] / row[base]:.2f} | {' | '.join(cells(row))} |"
        for row in rows
    ]
    blanks = " |" * len(cells(rows[0]))
    lines.append(
        f"| **total** | **{totals[base]:.1f}** | **{totals[other]:.1f}** | **{totals[other] / totals[base]:.2f}** |{blanks}"
    )
    return lines


def parameters(model: Any) -> th.Tensor:
    return th.cat([p.detach().reshape(-1) for p in model.policy.parameters()])


def finish(models: dict[str, Any], lines: list[str], out: Path, failure: str) -> None:
    """Append whether the models' parameters are bit-identical, write ``lines`` to ``out`` (and print them), close the
    envs; exit with ``failure`` when the parameters differ."""
    first, second = (parameters(model) for model in models.values())
    identical = th.equal(first, second)
    lines += ["", f"Parameters after training bit-identical: {'yes' if identical else 'NO'}."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for model in models.values():
        model.env.close()
    if not identical:
        raise SystemExit(failure)
