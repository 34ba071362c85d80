"""ARSM's settings: the constructor's checks, one line each; the training env made ready for them; learning rates as
schedules."""

from __future__ import annotations

from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.vec_env import VecEnv

from arsm_rl.cloning import NotCloneableError, has_masks
from arsm_rl.critic import ACTION_VALUES
from arsm_rl.rollouts import enable_cloning, verify_rollouts

__all__ = ["as_schedule", "check_settings", "prepare_env"]


def check_settings(n_steps: int, max_pseudo_rollouts: int | None, budget_sampling: str, pseudo_horizon: int | None,
                   action_values: str, n_rollout_workers: int, critic_buffer_size: int, critic_batch_size: int,
                   critic_gradient_steps: int, critic_tau: float) -> None:  # fmt: skip
    """
    :raises ValueError: for a value out of range, or settings that do not go together (the message says what to set)
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}.")
    if max_pseudo_rollouts is not None and max_pseudo_rollouts < 1:
        raise ValueError(f"max_pseudo_rollouts must be None or >= 1, got {max_pseudo_rollouts}.")
    if budget_sampling not in ("update", "step"):
        raise ValueError(f"budget_sampling must be 'update' or 'step', got {budget_sampling!r}.")
    if pseudo_horizon is not None and pseudo_horizon < 1:
        raise ValueError(f"pseudo_horizon must be None or >= 1, got {pseudo_horizon}.")
    if action_values not in ACTION_VALUES:
        raise ValueError(f"action_values must be one of {', '.join(map(repr, ACTION_VALUES))}, got {action_values!r}.")
    if action_values == "critic" and n_rollout_workers > 0:
        raise ValueError(
            "action_values='critic' runs no rollout, so rollout workers would have nothing to do: set n_rollout_workers=0."
        )
    if action_values == "bootstrap" and pseudo_horizon is None:
        raise ValueError("action_values='bootstrap' cuts rollouts at pseudo_horizon steps: set pseudo_horizon=N.")
    if critic_buffer_size < 1 or critic_batch_size < 1 or critic_gradient_steps < 0 or not 0.0 <= critic_tau <= 1.0:
        raise ValueError(
            "critic_buffer_size and critic_batch_size must be >= 1, critic_gradient_steps >= 0 and critic_tau in "
            f"[0, 1], got {critic_buffer_size}, {critic_batch_size}, {critic_gradient_steps} and {critic_tau}."
        )


def prepare_env(env: VecEnv, action_values: str, verify: bool, pseudo_horizon: int | None, seed: int | None) -> bool:
    """
    Make a training env's sub-envs cloneable and check them (``verify``: :func:`~arsm_rl.rollouts.verify_rollouts`),
    unless the critic values the actions (``action_values="critic"``: nothing is cloned).

    :return: whether the env has action masks
    :raises NotCloneableError: (or ``TypeError``) for an env that cannot be cloned, naming ``action_values='critic'``
    :raises ValueError: for ``action_values="bootstrap"`` on an env with action masks
    """
    masked = has_masks(env)
    if action_values == "critic":
        return masked
    if action_values == "bootstrap" and masked:
        raise ValueError(
            "action_values='bootstrap' does not read action masks at the states where rollouts are cut: train an env "
            "with action masks with action_values='rollout' or 'critic'."
        )
    try:
        enable_cloning(env)
        if verify:
            verify_rollouts(env, horizon=pseudo_horizon, seed=0 if seed is None else seed)
    except (NotCloneableError, TypeError) as error:
        raise type(error)(
            f"{error} (Or train with ARSM(action_values='critic'): a learned critic values the actions and no env is "
            "cloned.)"
        ) from None
    return masked


def as_schedule(value: float | Schedule) -> Schedule:
    """A learning rate as a schedule of the progress remaining (a constant one for a float). SB3's ``FloatSchedule``
    does this from SB3 2.6 on; ``get_schedule_fn``, which older versions have, is deprecated."""
    if callable(value):
        return value
    rate = float(value)
    return lambda _: rate
