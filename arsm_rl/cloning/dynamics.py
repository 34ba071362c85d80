"""Batched numpy dynamics of classic-control envs, for the rollouts layer's batch stepper.

Each class reproduces one Gymnasium env's ``step`` for a batch of states, operation for operation in the same
order, so that results are **bit-identical** to stepping the envs one by one (``tests/test_rollouts.py`` checks
each against the real env over long random trajectories). Where Gymnasium computes on numpy scalars an operation
that numpy's array path computes differently, the array form that reproduces the scalar one is used: a scalar
``x**2`` is libm's ``pow(x, 2)``, which differs from numpy's array ``x**2`` (``x * x``) by one ulp in about 0.1 % of
values, so Acrobot squares with ``np.float_power`` (libm's ``pow``, no fast path).

A family names its dynamics in :attr:`~arsm_rl.cloning.Family.dynamics`; a user's family can name its own
:class:`Dynamics` subclass (``add_family_rule(When(test, Family(..., dynamics=MyDynamics)))``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["AcrobotDynamics", "CartPoleDynamics", "Dynamics", "MountainCarDynamics"]


class Dynamics(ABC):
    """
    One env's ``step`` for a batch of states.

    :param env: the env (``unwrapped``) whose constants apply
    :param cores: one core state per row, as the family's state access reads it
    """

    @classmethod
    def supports(cls, env: Any) -> bool:
        """Whether these dynamics reproduce ``env`` (``unwrapped``) with its settings; default: always."""
        return True

    @abstractmethod
    def __init__(self, env: Any, cores: Sequence[Any]) -> None: ...

    @abstractmethod
    def observations(self) -> np.ndarray:
        """:return: (R, ...) observations of the current states"""

    @abstractmethod
    def step(self, rows: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        :param rows: the rows to step
        :param actions: their actions
        :return: their observations, rewards and ``terminated`` flags
        """


class CartPoleDynamics(Dynamics):
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


class AcrobotDynamics(Dynamics):
    """
    Gymnasium's ``AcrobotEnv.step`` (RK4 over one ``dt``, angle wrapping, velocity bounds) for a batch of states.
    Not for torque noise (``torque_noise_max > 0`` draws from the env's RNG): :meth:`supports` says no.

    :param env: the ``AcrobotEnv`` whose constants apply
    :param cores: ``(state,)`` per row
    """

    @classmethod
    def supports(cls, env: Any) -> bool:
        return env.torque_noise_max == 0 and env.book_or_nips in ("book", "nips")

    def __init__(self, env: Any, cores: Sequence[Any]) -> None:
        self.env = env
        self.state = np.array([core[0] for core in cores], dtype=np.float64).reshape(len(cores), 4)

    def observations(self) -> np.ndarray:
        """:return: (R, 6) float32 observations: cos and sin of both angles, both angular velocities"""
        return _acrobot_obs(self.state)

    def _dsdt(self, y: np.ndarray) -> np.ndarray:
        """``AcrobotEnv._dsdt`` for (R, 5) augmented states (the torque last), same operations in the same order."""
        c = self.env
        sq = _scalar_square
        m1, m2, l1, lc1, lc2 = c.LINK_MASS_1, c.LINK_MASS_2, c.LINK_LENGTH_1, c.LINK_COM_POS_1, c.LINK_COM_POS_2
        I1 = I2 = c.LINK_MOI
        g = 9.8
        a, theta1, theta2, dtheta1, dtheta2 = y[:, 4], y[:, 0], y[:, 1], y[:, 2], y[:, 3]
        pi = np.pi
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * np.cos(theta2)) + I1 + I2
        d2 = m2 * (lc2**2 + l1 * lc2 * np.cos(theta2)) + I2
        phi2 = m2 * lc2 * g * np.cos(theta1 + theta2 - pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * sq(dtheta2) * np.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * np.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * np.cos(theta1 - pi / 2)
            + phi2
        )
        if c.book_or_nips == "nips":
            ddtheta2 = (a + d2 / d1 * phi1 - phi2) / (m2 * lc2**2 + I2 - sq(d2) / d1)
        else:
            ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * sq(dtheta1) * np.sin(theta2) - phi2) / (
                m2 * lc2**2 + I2 - sq(d2) / d1
            )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return np.stack([dtheta1, dtheta2, ddtheta1, ddtheta2, np.zeros(len(y))], axis=1)

    def step(self, rows: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        :param rows: the rows to step
        :param actions: their actions (0, 1 or 2)
        :return: their observations (float32), rewards (-1, 0 at the goal) and ``terminated`` flags
        """
        c = self.env
        torque = np.asarray(c.AVAIL_TORQUE, dtype=np.float64)[actions]
        y0 = np.concatenate([self.state[rows], torque[:, None]], axis=1)
        t = [0, c.dt]  # rk4 over [0, dt], as AcrobotEnv.step calls it
        dt = t[1] - t[0]
        dt2 = dt / 2.0
        k1 = self._dsdt(y0)
        k2 = self._dsdt(y0 + dt2 * k1)
        k3 = self._dsdt(y0 + dt2 * k2)
        k4 = self._dsdt(y0 + dt * k3)
        ns = (y0 + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4))[:, :4]
        ns[:, 0] = _wrap(ns[:, 0], -np.pi, np.pi)
        ns[:, 1] = _wrap(ns[:, 1], -np.pi, np.pi)
        ns[:, 2] = np.minimum(np.maximum(ns[:, 2], -c.MAX_VEL_1), c.MAX_VEL_1)
        ns[:, 3] = np.minimum(np.maximum(ns[:, 3], -c.MAX_VEL_2), c.MAX_VEL_2)
        self.state[rows] = ns
        terminated = -np.cos(ns[:, 0]) - np.cos(ns[:, 1] + ns[:, 0]) > 1.0
        return _acrobot_obs(ns), np.where(terminated, 0.0, -1.0), terminated


def _scalar_square(x: np.ndarray) -> np.ndarray:
    """Gymnasium's ``x**2`` on numpy float64 scalars (libm ``pow``), elementwise; see the module docstring."""
    return np.float_power(x, 2)


def _acrobot_obs(s: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(s[:, 0]), np.sin(s[:, 0]), np.cos(s[:, 1]), np.sin(s[:, 1]), s[:, 2], s[:, 3]], 1).astype(
        np.float32
    )


def _wrap(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Gymnasium's acrobot ``wrap`` elementwise: subtract (add) the range while above (below) it."""
    diff = high - low
    while (above := x > high).any():
        x = np.where(above, x - diff, x)
    while (below := x < low).any():
        x = np.where(below, x + diff, x)
    return x


class MountainCarDynamics(Dynamics):
    """
    Gymnasium's ``MountainCarEnv.step`` for a batch of states.

    :param env: the ``MountainCarEnv`` whose constants apply
    :param cores: ``(state,)`` per row (position, velocity)
    """

    def __init__(self, env: Any, cores: Sequence[Any]) -> None:
        self.env = env
        self.state = np.array([np.asarray(core[0], dtype=np.float64) for core in cores]).reshape(len(cores), 2)

    def observations(self) -> np.ndarray:
        """:return: (R, 2) float32 observations (position, velocity)"""
        return self.state.astype(np.float32)

    def step(self, rows: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        :param rows: the rows to step
        :param actions: their actions (0, 1 or 2)
        :return: their observations (float32), rewards (-1) and ``terminated`` flags
        """
        c = self.env
        position, velocity = self.state[rows].T
        velocity = velocity + ((actions - 1) * c.force + np.cos(3 * position) * (-c.gravity))
        velocity = np.clip(velocity, -c.max_speed, c.max_speed)
        position = position + velocity
        position = np.clip(position, c.min_position, c.max_position)
        velocity = np.where((position == c.min_position) & (velocity < 0), 0.0, velocity)
        terminated = (position >= c.goal_position) & (velocity >= c.goal_velocity)
        self.state[rows] = np.stack([position, velocity], axis=1)
        return self.state[rows].astype(np.float32), np.full(len(rows), -1.0), terminated
