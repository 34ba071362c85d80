"""Built-in exact-type families: classic control and toy text (copies of the few attributes that
change during an episode, with the batched dynamics of :mod:`arsm_rl.cloning.dynamics` where there are
some) and the Box2D envs (replay)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from arsm_rl.cloning.access import Fields
from arsm_rl.cloning.dynamics import AcrobotDynamics, CartPoleDynamics, MountainCarDynamics
from arsm_rl.cloning.families import REPLAY, Family

#: Constant tables of the toy-text envs, shared by scratch copies.
TOY_TEXT_TABLES = ("P", "desc", "initial_state_distrib", "_cliff", "locs", "locs_colors")


CARTPOLE = Family("classic", Fields(("state", "steps_beyond_terminated")), dynamics=CartPoleDynamics, verified=True)
ACROBOT = Family("classic", Fields(("state",)), dynamics=AcrobotDynamics, verified=True)
MOUNTAIN_CAR = Family("classic", Fields(("state",)), dynamics=MountainCarDynamics, verified=True)
CONTINUOUS_MOUNTAIN_CAR = Family("classic", Fields(("state",)), verified=True)
PENDULUM = Family("classic", Fields(("state", "last_u")), verified=True)
FROZEN_LAKE = Family("toy_text", Fields(("s", "lastaction")), shared_attrs=TOY_TEXT_TABLES, verified=True)
CLIFF_WALKING = Family("toy_text", Fields(("s", "lastaction")), shared_attrs=TOY_TEXT_TABLES, verified=True)
TAXI = Family(
    "toy_text", Fields(("s", "lastaction", "fickle_step", "taxi_orientation")), shared_attrs=TOY_TEXT_TABLES, verified=True
)
BLACKJACK = Family(
    "toy_text", Fields(("player", "dealer", "dealer_top_card_suit", "dealer_top_card_value_str")), verified=True, bounded=True
)


def lunar_lander_headless(env: Any) -> None:
    """
    LunarLander without its engine flames: when it renders (SB3's ``make_vec_env`` asks for ``rgb_array``), every
    engine firing adds a Box2D body (a "particle") that collides with the ground only, never with the lander, so
    the lander's trajectory does not depend on them, while the world steps several times slower with them
    (benchmarks/results/headless.md). Destroys the particles and stops making new ones.

    :param env: a ``LunarLander`` (``env.unwrapped``)
    """
    env.render_mode = None
    env._clean_particles(True)


#: LunarLander: replay, and its rollout copies without flame particles.
LUNAR_LANDER = replace(REPLAY, headless=lunar_lander_headless)


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
        cc.Continuous_MountainCarEnv: CONTINUOUS_MOUNTAIN_CAR,
        cc.PendulumEnv: PENDULUM,
        tt.FrozenLakeEnv: FROZEN_LAKE,
        tt.CliffWalkingEnv: CLIFF_WALKING,
        tt.TaxiEnv: TAXI,
        tt.BlackjackEnv: BLACKJACK,
    }
    try:  # Box2D is optional
        from gymnasium.envs import box2d

        table[box2d.LunarLander] = LUNAR_LANDER
        for cls in (box2d.BipedalWalker, box2d.CarRacing):
            table[cls] = REPLAY
    except Exception:  # pragma: no cover - box2d not installed
        pass
    return table
