"""Built-in exact-type families: classic control and toy text (copies of the few attributes that
change during an episode) and the Box2D envs (replay); CartPole's batched numpy dynamics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from arsm_rl.cloning.access import Fields
from arsm_rl.cloning.families import REPLAY, Family

#: Constant tables of the toy-text envs, shared by scratch copies.
TOY_TEXT_TABLES = ("P", "desc", "initial_state_distrib", "_cliff", "locs", "locs_colors")


class CartPoleDynamics:
    """
    Gymnasium's ``CartPoleEnv.step`` for a batch of states in numpy, operation for operation, so results are
    bit-identical to stepping the envs one by one (``tests/test_rollouts.py`` checks this).

    :param env: the ``CartPoleEnv`` whose constants (masses, force, thresholds, integrator, reward) apply
    :param cores: one core state per row, as the classic family's state access reads it
        (``(state, steps_beyond_terminated)``)
    """

    def __init__(self, env: Any, cores: Sequence[Any]) -> None:
        self.env = env
        self.state = np.empty((len(cores), 4))
        for r, (state, steps_beyond_terminated) in enumerate(cores):
            if steps_beyond_terminated is not None:
                raise ValueError("internal error: CartPole snapshot taken after termination")
            self.state[r] = state

    def observations(self) -> np.ndarray:
        """:return: (R, 4) float32 observations of the current states"""
        return self.state.astype(np.float32)

    def step(self, rows: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        :param rows: the rows to step
        :param actions: their actions (0 or 1)
        :return: their observations (float32), rewards and ``terminated`` flags
        """
        c = self.env
        x, x_dot, theta, theta_dot = self.state[rows].T
        force = np.where(actions == 1, c.force_mag, -c.force_mag)
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        temp = (force + c.polemass_length * np.square(theta_dot) * sintheta) / c.total_mass
        thetaacc = (c.gravity * sintheta - costheta * temp) / (
            c.length * (4.0 / 3.0 - c.masspole * np.square(costheta) / c.total_mass)
        )
        xacc = temp - c.polemass_length * thetaacc * costheta / c.total_mass
        if c.kinematics_integrator == "euler":
            x = x + c.tau * x_dot
            x_dot = x_dot + c.tau * xacc
            theta = theta + c.tau * theta_dot
            theta_dot = theta_dot + c.tau * thetaacc
        else:
            x_dot = x_dot + c.tau * xacc
            x = x + c.tau * x_dot
            theta_dot = theta_dot + c.tau * thetaacc
            theta = theta + c.tau * theta_dot
        self.state[rows] = np.stack([x, x_dot, theta, theta_dot], axis=1)
        terminated = (x < -c.x_threshold) | (x > c.x_threshold) | (theta < -c.theta_threshold_radians)
        terminated |= theta > c.theta_threshold_radians
        alive_reward, fall_reward = (0.0, -1.0) if c._sutton_barto_reward else (1.0, 1.0)
        return self.state[rows].astype(np.float32), np.where(terminated, fall_reward, alive_reward), terminated


CARTPOLE = Family("classic", Fields(("state", "steps_beyond_terminated")), dynamics=CartPoleDynamics, verified=True)
ACROBOT = Family("classic", Fields(("state",)), verified=True)
MOUNTAIN_CAR = Family("classic", Fields(("state",)), verified=True)
PENDULUM = Family("classic", Fields(("state", "last_u")), verified=True)
FROZEN_LAKE = Family("toy_text", Fields(("s", "lastaction")), shared_attrs=TOY_TEXT_TABLES, verified=True)
CLIFF_WALKING = Family("toy_text", Fields(("s", "lastaction")), shared_attrs=TOY_TEXT_TABLES, verified=True)
TAXI = Family(
    "toy_text", Fields(("s", "lastaction", "fickle_step", "taxi_orientation")), shared_attrs=TOY_TEXT_TABLES, verified=True
)
BLACKJACK = Family(
    "toy_text", Fields(("player", "dealer", "dealer_top_card_suit", "dealer_top_card_value_str")), verified=True, bounded=True
)


def builtin_table() -> dict[type, Family]:
    """The built-in families by exact env class (imports the gymnasium env modules; Box2D only if installed).

    :return: a new table.
    """
    from gymnasium.envs import classic_control as cc
    from gymnasium.envs import toy_text as tt

    table: dict[type, Family] = {
        cc.CartPoleEnv: CARTPOLE,
        cc.AcrobotEnv: ACROBOT,
        cc.MountainCarEnv: MOUNTAIN_CAR,
        cc.Continuous_MountainCarEnv: MOUNTAIN_CAR,
        cc.PendulumEnv: PENDULUM,
        tt.FrozenLakeEnv: FROZEN_LAKE,
        tt.CliffWalkingEnv: CLIFF_WALKING,
        tt.TaxiEnv: TAXI,
        tt.BlackjackEnv: BLACKJACK,
    }
    try:  # Box2D is optional
        from gymnasium.envs import box2d

        for cls in (box2d.LunarLander, box2d.BipedalWalker, box2d.CarRacing):
            table[cls] = REPLAY
    except Exception:  # pragma: no cover - box2d not installed
        pass
    return table
