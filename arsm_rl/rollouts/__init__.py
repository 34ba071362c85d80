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
- :mod:`~arsm_rl.rollouts.policy` and :mod:`~arsm_rl.rollouts.noise`: :class:`RacePolicy`, the policy inside
  pseudo rollouts, racing with each rollout's own noise stream (:class:`RolloutNoise`), with the policy's numpy form
  where it has one (:mod:`~arsm_rl.rollouts.mlp`: :class:`NumpyLogits`, :func:`numpy_logits`);
- :mod:`~arsm_rl.rollouts.workers`: the rollout workers (backends registered in :data:`BACKENDS`) and
  :class:`WorkerPool`, which starts and stops one engine's workers;
- :mod:`~arsm_rl.rollouts.engine`: :class:`RolloutEngine` holds one training env's parts, its workers included;
- :mod:`~arsm_rl.rollouts.returns`: :func:`discounted_returns` turns reward sequences into action values,
  with the same floating point operations for real and pseudo trajectories (equal rewards give bit-equal values);
  :func:`true_values` and :func:`tail_horizon` value an update's real steps, completed by tail rollouts.
"""

from arsm_rl.rollouts.engine import RolloutEngine
from arsm_rl.rollouts.lockstep import POLICY_BLOCK, ActFn, BranchPoint, RolloutBatch, block_rows, pad_rows, run_lockstep
from arsm_rl.rollouts.mlp import NumpyLogits
from arsm_rl.rollouts.noise import RolloutNoise
from arsm_rl.rollouts.obs import Obs, ObsPipeline, flatten_steps, select_rows, stack_obs
from arsm_rl.rollouts.policy import RacePolicy, numpy_logits
from arsm_rl.rollouts.returns import discounted_returns, float32_rewards, tail_horizon, trailing_start, true_values
from arsm_rl.rollouts.steppers import STEPPERS, BatchStepper, EnvStepper, ScratchPool, Stepper, select_stepper
from arsm_rl.rollouts.vec import PROBE_EPISODES, PROBE_STEPS, VecCloner, enable_cloning, verify_rollouts
from arsm_rl.rollouts.workers import BACKENDS, WorkerPool, WorkerSettings, register_backend

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
    "register_backend",
    "run_lockstep",
    "select_rows",
    "select_stepper",
    "stack_obs",
    "tail_horizon",
    "trailing_start",
    "true_values",
    "verify_rollouts",
]
