"""Batched pseudo-action rollouts on scratch copies of the training environments.

ARSM values each distinct pseudo action at a visited state by trying it on a copy of the
environment restored to that state and following the current policy from there. This package
does the environment side of that, and nothing touches the training ``VecEnv``'s episode
statistics, auto-reset, RNG or ``VecNormalize`` statistics:

- :mod:`~arsm_rl.rollouts.vec`: :func:`enable_cloning` and :class:`VecCloner`, exact snapshots of the
  training sub-envs (in process for ``DummyVecEnv``, through ``env_method`` for ``SubprocVecEnv``) and
  scratch copies built the same way, minus ``Monitor``; :func:`verify_rollouts`, the checks run before
  training (exact restores where the method is not a tested built-in, episodes that end);
- :mod:`~arsm_rl.rollouts.obs`: :class:`ObsPipeline` replays the observation transforms of the ``VecEnv``
  wrappers (``VecTransposeImage``, ``VecFrameStack``, frozen ``VecNormalize``) so pseudo rollouts see
  observations exactly as the real trajectory does;
- :mod:`~arsm_rl.rollouts.steppers`: the stepper seam, "restore these snapshots, step these actions,
  return observations, rewards, ends", with its registered implementations (:data:`STEPPERS`);
- :mod:`~arsm_rl.rollouts.lockstep`: :func:`run_lockstep` runs all rollouts of an update in lockstep,
  one batched policy call per step;
- :mod:`~arsm_rl.rollouts.race`, :mod:`~arsm_rl.rollouts.noise` and :mod:`~arsm_rl.rollouts.mlp`:
  :class:`RacePolicy`, the policy inside pseudo rollouts, racing with each rollout's own noise stream
  (:class:`RolloutNoise`), on the policy's numpy form where it has one (:class:`NumpyLogits`); none of them imports
  torch, so a ``ForkVecEnv`` copy runs whole rollouts with them. :mod:`~arsm_rl.rollouts.policy` builds it from an SB3
  policy (:func:`race_policy`, :func:`numpy_logits`, :class:`TorchLogits`);
- :mod:`~arsm_rl.rollouts.workers`: the rollout workers (backends registered in :data:`BACKENDS`) and
  :class:`WorkerPool`, which starts and stops one engine's workers; :mod:`~arsm_rl.rollouts.processes`: what the
  ``subproc`` workers' processes need (the script guard, their priority, how they ended);
- :mod:`~arsm_rl.rollouts.engine`: :class:`RolloutEngine` holds one training env's parts, its workers included;
- :mod:`~arsm_rl.rollouts.returns`: :func:`discounted_returns` turns reward sequences into action values,
  with the same floating point operations for real and pseudo trajectories (equal rewards give bit-equal values);
  :func:`true_values` and :func:`tail_horizon` value an update's real steps, completed by tail rollouts.

The names are imported on first use (PEP 562), so that importing a torch-free module of this package (``race``,
``noise``, ``mlp``, in a ``ForkVecEnv`` process) does not import the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arsm_rl.lazy import lazy_attributes

if TYPE_CHECKING:
    from arsm_rl.rollouts.engine import RolloutEngine
    from arsm_rl.rollouts.lockstep import (
        POLICY_BLOCK,
        ActFn,
        BranchPoint,
        RolloutBatch,
        block_rows,
        rows_independent,
        run_in_forks,
        run_lockstep,
    )
    from arsm_rl.rollouts.mlp import NumpyLogits, pad_rows
    from arsm_rl.rollouts.noise import RolloutNoise
    from arsm_rl.rollouts.obs import Obs, ObsPipeline, flatten_steps, select_rows, stack_obs
    from arsm_rl.rollouts.policy import TorchLogits, numpy_logits, race_policy
    from arsm_rl.rollouts.race import RacePolicy
    from arsm_rl.rollouts.returns import discounted_returns, float32_rewards, tail_horizon, trailing_start, true_values
    from arsm_rl.rollouts.steppers import STEPPERS, BatchStepper, EnvStepper, ScratchPool, Stepper, select_stepper
    from arsm_rl.rollouts.vec import PROBE_EPISODES, PROBE_STEPS, VecCloner, enable_cloning, verify_rollouts
    from arsm_rl.rollouts.workers import BACKENDS, WorkerPool, WorkerSettings, register_backend

#: public name -> the module that defines it
_HOMES = {
    "RolloutEngine": "arsm_rl.rollouts.engine",
    "POLICY_BLOCK": "arsm_rl.rollouts.lockstep",
    "ActFn": "arsm_rl.rollouts.lockstep",
    "BranchPoint": "arsm_rl.rollouts.lockstep",
    "RolloutBatch": "arsm_rl.rollouts.lockstep",
    "block_rows": "arsm_rl.rollouts.lockstep",
    "rows_independent": "arsm_rl.rollouts.lockstep",
    "run_in_forks": "arsm_rl.rollouts.lockstep",
    "run_lockstep": "arsm_rl.rollouts.lockstep",
    "NumpyLogits": "arsm_rl.rollouts.mlp",
    "pad_rows": "arsm_rl.rollouts.mlp",
    "RolloutNoise": "arsm_rl.rollouts.noise",
    "Obs": "arsm_rl.rollouts.obs",
    "ObsPipeline": "arsm_rl.rollouts.obs",
    "flatten_steps": "arsm_rl.rollouts.obs",
    "select_rows": "arsm_rl.rollouts.obs",
    "stack_obs": "arsm_rl.rollouts.obs",
    "TorchLogits": "arsm_rl.rollouts.policy",
    "numpy_logits": "arsm_rl.rollouts.policy",
    "race_policy": "arsm_rl.rollouts.policy",
    "RacePolicy": "arsm_rl.rollouts.race",
    "discounted_returns": "arsm_rl.rollouts.returns",
    "float32_rewards": "arsm_rl.rollouts.returns",
    "tail_horizon": "arsm_rl.rollouts.returns",
    "trailing_start": "arsm_rl.rollouts.returns",
    "true_values": "arsm_rl.rollouts.returns",
    "STEPPERS": "arsm_rl.rollouts.steppers",
    "BatchStepper": "arsm_rl.rollouts.steppers",
    "EnvStepper": "arsm_rl.rollouts.steppers",
    "ScratchPool": "arsm_rl.rollouts.steppers",
    "Stepper": "arsm_rl.rollouts.steppers",
    "select_stepper": "arsm_rl.rollouts.steppers",
    "PROBE_EPISODES": "arsm_rl.rollouts.vec",
    "PROBE_STEPS": "arsm_rl.rollouts.vec",
    "VecCloner": "arsm_rl.rollouts.vec",
    "enable_cloning": "arsm_rl.rollouts.vec",
    "verify_rollouts": "arsm_rl.rollouts.vec",
    "BACKENDS": "arsm_rl.rollouts.workers",
    "WorkerPool": "arsm_rl.rollouts.workers",
    "WorkerSettings": "arsm_rl.rollouts.workers",
    "register_backend": "arsm_rl.rollouts.workers",
}

__all__ = [
    "BACKENDS",
    "POLICY_BLOCK",
    "PROBE_EPISODES",
    "PROBE_STEPS",
    "STEPPERS",
    "ActFn",
    "BatchStepper",
    "BranchPoint",
    "EnvStepper",
    "NumpyLogits",
    "Obs",
    "ObsPipeline",
    "RacePolicy",
    "RolloutBatch",
    "RolloutEngine",
    "RolloutNoise",
    "ScratchPool",
    "Stepper",
    "TorchLogits",
    "VecCloner",
    "WorkerPool",
    "WorkerSettings",
    "block_rows",
    "discounted_returns",
    "enable_cloning",
    "flatten_steps",
    "float32_rewards",
    "numpy_logits",
    "pad_rows",
    "race_policy",
    "register_backend",
    "rows_independent",
    "run_in_forks",
    "run_lockstep",
    "select_rows",
    "select_stepper",
    "stack_obs",
    "tail_horizon",
    "trailing_start",
    "true_values",
    "verify_rollouts",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _HOMES)
