"""Exact snapshot / restore of Gymnasium environments for ARSM pseudo-action rollouts.

ARSM evaluates "pseudo actions" by rolling them out on copies of the environment at visited
states.  A copy that is only approximately right silently biases the gradient estimate, so this
package only offers methods that were verified to be **bit-exact** (same observation bytes, reward,
``terminated`` and ``truncated`` at every step) and refuses everything else with a clear error.

Design
------
A :class:`Snapshot` (:mod:`~arsm_rl.cloning.snapshot`) has three parts:

* the **core** state of ``env.unwrapped``, read and written by the
  :class:`~arsm_rl.cloning.access.StateAccess` of the env's :class:`Family`
  (:mod:`~arsm_rl.cloning.families`).  The family is chosen by an ordered list of rules on
  ``type(env.unwrapped)`` (:mod:`~arsm_rl.cloning.registry`, see :func:`family` and :func:`family_of`):

  - ``custom``: classes registered with :func:`register_cloneable` (these win over everything),
    or envs that provide ``clone_core_state()`` / ``restore_core_state(state)`` themselves;
  - ``classic`` (CartPole, Acrobot, MountainCar, MountainCarContinuous, Pendulum) and
    ``toy_text`` (FrozenLake, Taxi, CliffWalking, Blackjack), by exact class
    (:mod:`~arsm_rl.cloning.classic`): copies of the few attributes that change during an episode
    (``state``, ``s``, ``lastaction``, Taxi's ``fickle_step`` ...);
  - ``replay`` (Box2D: LunarLander, BipedalWalker, CarRacing, also in the exact-class table): no
    state at all.  pybox2d cannot read or write joint/contact impulses, so a Box2D world cannot be
    restored exactly.  Instead the :class:`CloneableWrapper` (:mod:`~arsm_rl.cloning.core`) records
    the episode's reset condition (the seed passed to ``reset`` or the ``np_random`` bit-generator
    state just *before* an unseeded reset) and the action prefix; restoring replays them.
    ``Snapshot.restore_steps`` tells the caller how many simulator steps a restore costs;
  - ``atari`` (ale-py ``AtariEnv``, :mod:`~arsm_rl.cloning.atari`):
    ``ale.cloneState(include_rng=True)``, which also carries ALE's RNG, plus the sticky-action
    memory that ALE does not serialize (tracked by a proxy installed by :func:`make_cloneable`);
  - ``minigrid``: one ``deepcopy`` of the mutable instance dictionary (grid, agent, extras such as
    DynamicObstacles' ``obstacles`` copied *together* so their aliasing survives);
  - rules added with :func:`~arsm_rl.cloning.registry.add_family_rule`;
  - ``generic``: ``deepcopy`` of the instance dictionary of any other env, **refused** for classes
    that pickle by constructor arguments (:class:`gymnasium.utils.EzPickle`), because their copies
    are fresh, un-reset environments (this is why ``deepcopy`` is silently wrong for LunarLander
    and Atari).

* the **RNG** state (:mod:`~arsm_rl.cloning.rng`): ``unwrapped.np_random``'s bit-generator state
  (and ``_np_random_seed``), plus the bit-generator state of the action space(s), when they have
  been seeded;

* the state of every **wrapper layer** from the given env inwards (:mod:`~arsm_rl.cloning.layers`,
  one :class:`~arsm_rl.cloning.layers.LayerKind` and state access per wrapper class): TimeLimit
  ``_elapsed_steps``, OrderEnforcing ``_has_reset``, FrameStackObservation's queue, SB3's Atari
  wrappers (EpisodicLifeEnv lives, MaxAndSkipEnv frame buffer, StickyActionEnv), and a generic rule
  for unknown wrappers (``deepcopy`` of the wrapper's own attributes except the inner env and
  spaces; see :func:`register_wrapper_state`).  Statistics wrappers (SB3 ``Monitor``, Gymnasium
  ``RecordEpisodeStatistics``) are **not** part of a snapshot and restoring never touches them.

Snapshots are immutable, picklable (they cross SubprocVecEnv pipes) and can be restored any
number of times, into the env they came from or into another instance built the same way, e.g.
a :func:`scratch_copy`.  :func:`check_cloneable` (:mod:`~arsm_rl.cloning.check`) verifies
exactness on a user's env; :func:`verify_snapshots` is the quick version that ARSM runs before
training on every env with :func:`unverified_parts` (anything but the built-in, tested families and
wrapper rules); :func:`~arsm_rl.cloning.ids.register_optional_envs` makes ALE and
MiniGrid ids available to ``gym.make``.  :func:`time_limit` and :func:`is_transparent` describe
wrapper layers for other layers of the library (the rollouts' batch stepper); :func:`is_statistics` tells
which wrapper classes only record statistics (``ForkVecEnv`` splices them out of its forked rollouts);
:func:`make_headless` stops an env's render-only work in the copies pseudo rollouts run on (LunarLander's
flame particles, ``Family.headless``; :func:`headless_function` is that function, for ``ForkVecEnv``'s workers).
:mod:`~arsm_rl.cloning.masks` reads action masks the way sb3-contrib does (an env's or ``ActionMasker``'s
``action_masks()``); the checks take random *valid* actions on masked envs (:func:`sample_action`).
"""

from arsm_rl.cloning.access import StateAccess
from arsm_rl.cloning.check import check_cloneable, compare_restores, episodes_bounded, unverified_parts, verify_snapshots
from arsm_rl.cloning.core import (
    CloneableWrapper,
    clone_state,
    headless_function,
    make_cloneable,
    make_headless,
    restore_state,
    scratch_copy,
)
from arsm_rl.cloning.families import Family
from arsm_rl.cloning.ids import register_optional_envs
from arsm_rl.cloning.layers import LayerKind, is_statistics, is_transparent, register_wrapper_state, time_limit
from arsm_rl.cloning.masks import MASK_METHOD, env_masks, has_masks, sample_action, vec_masks
from arsm_rl.cloning.registry import add_family_rule, family, family_of, register_cloneable
from arsm_rl.cloning.rng import preserved_global_rngs
from arsm_rl.cloning.snapshot import CloningError, NotCloneableError, Snapshot

__all__ = [
    "MASK_METHOD",
    "CloneableWrapper",
    "CloningError",
    "Family",
    "LayerKind",
    "NotCloneableError",
    "Snapshot",
    "StateAccess",
    "add_family_rule",
    "check_cloneable",
    "clone_state",
    "compare_restores",
    "env_masks",
    "episodes_bounded",
    "family",
    "family_of",
    "has_masks",
    "headless_function",
    "is_statistics",
    "is_transparent",
    "make_cloneable",
    "make_headless",
    "preserved_global_rngs",
    "register_cloneable",
    "register_optional_envs",
    "register_wrapper_state",
    "restore_state",
    "sample_action",
    "scratch_copy",
    "time_limit",
    "unverified_parts",
    "vec_masks",
    "verify_snapshots",
]
