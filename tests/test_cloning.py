"""Exactness tests for arsm_rl.cloning (snapshot/restore of envs for ARSM pseudo-action rollouts).

Every family is checked the same way: reset with a seed, random prefix, snapshot, 40 different
"wander" steps (through resets), restore, and compare the continuation (200 steps, unseeded resets
included) with an untouched twin seeded identically: bit-identical obs bytes, reward, terminated,
truncated.  Atari/MiniGrid cases are skipped only when the package is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pickle
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import EzPickle
from stable_baselines3.common.monitor import Monitor

from arsm_rl.cloning import (
    CloneableWrapper,
    CloningError,
    NotCloneableError,
    Snapshot,
    check_cloneable,
    clone_state,
    family_of,
    make_cloneable,
    make_headless,
    register_cloneable,
    register_wrapper_state,
    restore_state,
    scratch_copy,
)

HAS_ALE = importlib.util.find_spec("ale_py") is not None
HAS_MINIGRID = importlib.util.find_spec("minigrid") is not None
HAS_BOX2D = importlib.util.find_spec("Box2D") is not None

if HAS_ALE:
    import ale_py

    gym.register_envs(ale_py)
if HAS_MINIGRID:
    import minigrid  # noqa: F401  (registers the MiniGrid envs)


# ---------------------------------------------------------------------------------------------
# User-defined envs
# ---------------------------------------------------------------------------------------------


class WalkEnv(gym.Env[np.ndarray, int]):
    """Plain Python env with stochastic dynamics (generic deepcopy family)."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Discrete(3)
        self.pos = 0.0
        self.vel = 0.0
        self.bonus = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.pos, self.vel])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.pos, self.vel, self.bonus = 0.0, float(self.np_random.normal()), 0.0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.vel += (int(action) - 1) * 0.1 + float(self.np_random.normal()) * 0.01
        self.pos += self.vel
        self.bonus += 0.5 * int(action)
        return self._obs(), -abs(self.pos) + self.bonus, abs(self.pos) > 25.0, False, {}


class MethodWalkEnv(WalkEnv):
    """Provides its own exact snapshot methods (custom family)."""

    def clone_core_state(self) -> Any:
        return (self.pos, self.vel, self.bonus)

    def restore_core_state(self, state: Any) -> None:
        self.pos, self.vel, self.bonus = state


class ForgetsVelocityEnv(WalkEnv):
    """Deliberately broken: the snapshot leaves out the velocity."""

    def clone_core_state(self) -> Any:
        return (self.pos, self.bonus)

    def restore_core_state(self, state: Any) -> None:
        self.pos, self.bonus = state


class ForgetsBonusEnv(WalkEnv):
    """Deliberately broken: the hidden bonus only affects the reward."""

    def clone_core_state(self) -> Any:
        return (self.pos, self.vel)

    def restore_core_state(self, state: Any) -> None:
        self.pos, self.vel = state


class EzWalkEnv(WalkEnv, EzPickle):
    """Pickles by constructor arguments: deepcopy would silently give a fresh env."""

    def __init__(self) -> None:
        WalkEnv.__init__(self)
        EzPickle.__init__(self)


class StepLimit(gym.Wrapper[Any, Any, Any, Any]):
    """A user time-limit wrapper (handled by the generic wrapper rule)."""

    def __init__(self, env: gym.Env[Any, Any], limit: int) -> None:
        super().__init__(env)
        self.limit = limit
        self.count = 0

    def reset(self, **kwargs: Any) -> Any:
        self.count = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        obs, r, term, trunc, info = self.env.step(action)
        self.count += 1
        return obs, r, term, trunc or self.count >= self.limit, info


class ForgetfulStepLimit(StepLimit):
    """Same, but (wrongly) registered as stateless below."""


register_wrapper_state(ForgetfulStepLimit)


# ---------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------


def _make_sb3_atari(max_episode_steps: int | None = None) -> gym.Env[Any, Any]:
    from gymnasium.wrappers import FrameStackObservation
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    # the TimeLimit sits below AtariWrapper and counts raw frames, including up to 30 no-op reset frames
    kw = {} if max_episode_steps is None else {"max_episode_steps": 4 * max_episode_steps + 32}
    return FrameStackObservation(AtariWrapper(gym.make("ALE/Breakout-v5", frameskip=1, **kw), frame_skip=4), 4)


def _gym(env_id: str, **kwargs: Any) -> Callable[..., gym.Env[Any, Any]]:
    def make(max_episode_steps: int | None = None) -> gym.Env[Any, Any]:
        extra = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
        return gym.make(env_id, **kwargs, **extra)

    return make


def _user(cls: type) -> Callable[..., gym.Env[Any, Any]]:
    def make(max_episode_steps: int | None = None) -> gym.Env[Any, Any]:
        env: gym.Env[Any, Any] = cls()
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps)
        return env

    return make


@dataclass
class Family:
    name: str
    make: Callable[..., gym.Env[Any, Any]]
    prefix: int
    family: str
    available: bool = True
    reason: str = ""
    long_episodes: bool = True  # episodes can outlast a 12-step time limit


FAMILIES = [
    Family("CartPole", _gym("CartPole-v1"), 8, "classic"),
    Family("Acrobot", _gym("Acrobot-v1"), 30, "classic"),
    Family("MountainCar", _gym("MountainCar-v0"), 30, "classic"),
    Family("FrozenLake-slippery", _gym("FrozenLake-v1", is_slippery=True), 4, "toy_text"),
    Family("Taxi-rainy-fickle", _gym("Taxi-v4", is_rainy=True, fickle_passenger=True), 30, "toy_text"),
    Family("CliffWalking-slippery", _gym("CliffWalking-v1", is_slippery=True), 30, "toy_text"),
    Family("Blackjack", _gym("Blackjack-v1"), 1, "toy_text", long_episodes=False),
    Family(
        "LunarLander-wind",
        _gym("LunarLander-v3", enable_wind=True, turbulence_power=1.5),
        40,
        "replay",
        HAS_BOX2D,
        "Box2D (gymnasium[box2d]) is not installed",
    ),
    Family("Pong-v5-sticky", _gym("ALE/Pong-v5"), 60, "atari", HAS_ALE, "ale-py is not installed"),
    Family("Breakout-SB3-AtariWrapper-FrameStack", _make_sb3_atari, 60, "atari", HAS_ALE, "ale-py is not installed"),
    Family("MiniGrid-DoorKey", _gym("MiniGrid-DoorKey-8x8-v0"), 20, "minigrid", HAS_MINIGRID, "minigrid is not installed"),
    Family(
        "MiniGrid-DynObstacles",
        _gym("MiniGrid-Dynamic-Obstacles-8x8-v0"),
        6,
        "minigrid",
        HAS_MINIGRID,
        "minigrid is not installed",
    ),
    Family("user-generic", _user(WalkEnv), 20, "generic"),
    Family("user-methods", _user(MethodWalkEnv), 20, "custom"),
]


def _params() -> list[Any]:
    return [
        pytest.param(f, id=f.name, marks=() if f.available else pytest.mark.skip(reason=f.reason)) for f in FAMILIES
    ]


def _cv2_shim() -> types.SimpleNamespace:
    """Numpy stand-in for the two OpenCV calls of SB3's WarpFrame (only used when cv2 is missing)."""

    def cvt_color(frame: np.ndarray, code: int) -> np.ndarray:
        return (frame @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)

    def resize(frame: np.ndarray, size: tuple[int, int], interpolation: int = 0) -> np.ndarray:
        rows = np.linspace(0, frame.shape[0] - 1, size[1]).astype(int)
        cols = np.linspace(0, frame.shape[1] - 1, size[0]).astype(int)
        return frame[rows][:, cols]

    return types.SimpleNamespace(COLOR_RGB2GRAY=7, INTER_AREA=3, cvtColor=cvt_color, resize=resize)


@pytest.fixture(autouse=True)
def _opencv_for_warpframe(monkeypatch: pytest.MonkeyPatch) -> None:
    # SB3's WarpFrame needs OpenCV, which is not a dependency of this project. The image transform
    # does not matter for cloning (only the wrapper stack's state does), so use a numpy stand-in.
    from stable_baselines3.common import atari_wrappers

    if atari_wrappers.cv2 is None:
        monkeypatch.setattr(atari_wrappers, "cv2", _cv2_shim())


# ---------------------------------------------------------------------------------------------
# Helpers (independent of the checker inside arsm_rl.cloning)
# ---------------------------------------------------------------------------------------------


def canon(x: Any) -> Any:
    if isinstance(x, np.ndarray | np.generic):
        a = np.asarray(x)
        return (a.dtype.str, a.shape, a.tobytes())
    if isinstance(x, dict):
        return tuple((k, canon(x[k])) for k in sorted(x))
    if isinstance(x, tuple | list):
        return tuple(canon(v) for v in x)
    return (type(x).__name__, repr(x))


def transitions(env: gym.Env[Any, Any], actions: list[Any]) -> list[tuple[Any, ...]]:
    """Step ``actions``; after an episode ends, reset unseeded and record the reset observation."""
    out: list[tuple[Any, ...]] = []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        out.append((canon(obs), repr(float(reward)), bool(terminated), bool(truncated)))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(("reset", canon(obs)))
    return out


def assert_same(got: list[tuple[Any, ...]], ref: list[tuple[Any, ...]], where: str) -> None:
    for i, (g, r) in enumerate(zip(got, ref, strict=False)):
        if g != r:
            fields = ("obs", "reward", "terminated", "truncated")
            bad = [f for f, x, y in zip(fields, g, r, strict=False) if x != y]
            pytest.fail(f"{where}: transition {i} differs in {bad}")
    assert len(got) == len(ref), where


def actions(env: gym.Env[Any, Any], seed: int, n: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(a) for a in rng.integers(0, int(env.action_space.n), size=n)]  # type: ignore[attr-defined]


def run_prefix(env: gym.Env[Any, Any], twin: gym.Env[Any, Any], acts: list[int]) -> int:
    """Step env and twin identically; returns the number of steps since the last reset."""
    since_reset = 0
    for a in acts:
        e, t = env.step(a), twin.step(a)
        assert canon(e[0]) == canon(t[0]) and e[1:4] == t[1:4], "twin is not reproducible"
        since_reset += 1
        if e[2] or e[3]:
            assert canon(env.reset()[0]) == canon(twin.reset()[0])
            since_reset = 0
    return since_reset


# ---------------------------------------------------------------------------------------------
# Per-family exactness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fam", _params())
def test_exact_restore(fam: Family) -> None:
    env = make_cloneable(fam.make())
    twin = fam.make()
    assert family_of(env) == fam.family
    env.reset(seed=11)
    twin.reset(seed=11)
    since_reset = run_prefix(env, twin, actions(env, 1, fam.prefix))

    snap = clone_state(env)
    assert snap.restore_steps == (since_reset if fam.family == "replay" else 0)
    continuation = actions(env, 2, 200)
    reference = transitions(twin, continuation)

    transitions(env, actions(env, 3, 40))  # wander off with different actions, through resets
    restore_state(env, snap)
    assert_same(transitions(env, continuation), reference, "after restore")
    restore_state(env, snap)
    assert_same(transitions(env, continuation), reference, "after restoring the same snapshot again")

    copy_env = scratch_copy(env)
    restore_state(copy_env, pickle.loads(pickle.dumps(snap)))
    assert_same(transitions(copy_env, continuation), reference, "scratch_copy + pickled snapshot")

    fresh = make_cloneable(fam.make())
    restore_state(fresh, snap)
    assert_same(transitions(fresh, continuation), reference, "fresh instance made the same way")
    for e in (env, twin, copy_env, fresh):
        e.close()


@pytest.mark.parametrize("fam", _params())
def test_time_limit_truncates_at_the_same_step(fam: Family) -> None:
    if not fam.long_episodes:
        pytest.skip(f"{fam.name} episodes never reach a time limit")
    limit = 12
    env = make_cloneable(fam.make(max_episode_steps=limit))
    twin = fam.make(max_episode_steps=limit)
    env.reset(seed=5)
    twin.reset(seed=5)
    run_prefix(env, twin, actions(env, 1, 4))
    snap = clone_state(env)
    continuation = actions(env, 2, 40)
    reference = transitions(twin, continuation)
    assert any(len(t) == 4 and t[3] for t in reference), "the continuation should truncate at least once"
    transitions(env, actions(env, 3, 9))
    restore_state(env, snap)
    assert_same(transitions(env, continuation), reference, "time limit after restore")
    copy_env = scratch_copy(env)
    restore_state(copy_env, snap)
    assert_same(transitions(copy_env, continuation), reference, "time limit in scratch copy")


def _monitor(env: gym.Env[Any, Any]) -> Monitor:
    layer: Any = env
    while not isinstance(layer, Monitor):
        layer = layer.env
    return layer


@pytest.mark.parametrize("fam", _params())
def test_real_env_unchanged_by_pseudo_rollouts(fam: Family) -> None:
    real = make_cloneable(Monitor(fam.make()))
    twin = Monitor(fam.make())
    real.reset(seed=3)
    twin.reset(seed=3)
    real.action_space.seed(9)
    twin.action_space.seed(9)
    pool = [scratch_copy(real) for _ in range(2)]
    assert not any(isinstance(layer, Monitor) for layer in _chain(pool[0]))
    for t in range(50):
        if t % 10 == 0:
            snap = clone_state(real)
            for k, sim in enumerate(pool):
                restore_state(sim, snap)
                transitions(sim, actions(sim, 100 + t + k, 12))
                sim.action_space.sample()
            restore_state(real, snap)  # restoring the real env to its own state must change nothing
        a, b = real.action_space.sample(), twin.action_space.sample()
        assert a == b
        assert_same(transitions(real, [a]), transitions(twin, [b]), f"real env at step {t}")
    m_real, m_twin = _monitor(real), _monitor(twin)
    assert m_real.get_episode_rewards() == m_twin.get_episode_rewards()
    assert m_real.get_episode_lengths() == m_twin.get_episode_lengths()
    assert m_real.get_total_steps() == m_twin.get_total_steps()
    assert m_real.rewards == m_twin.rewards
    assert real.unwrapped.np_random.bit_generator.state == twin.unwrapped.np_random.bit_generator.state
    assert real.action_space.np_random.bit_generator.state == twin.action_space.np_random.bit_generator.state


def _chain(env: gym.Env[Any, Any]) -> list[Any]:
    out = []
    layer: Any = env
    while isinstance(layer, gym.Wrapper):
        out.append(layer)
        layer = layer.env
    return out


# ---------------------------------------------------------------------------------------------
# Specific behaviours
# ---------------------------------------------------------------------------------------------


def test_record_episode_statistics_is_not_part_of_the_snapshot() -> None:
    real = make_cloneable(gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1")))
    real.reset(seed=0)
    transitions(real, [0, 1, 0])
    stats = real.env
    before = (stats.episode_returns, stats.episode_lengths, list(stats.return_queue))  # type: ignore[attr-defined]
    snap = clone_state(real)
    sim = scratch_copy(real)
    assert not any(isinstance(layer, gym.wrappers.RecordEpisodeStatistics) for layer in _chain(sim))
    restore_state(sim, snap)
    transitions(sim, [1] * 30)
    restore_state(real, snap)
    assert (stats.episode_returns, stats.episode_lengths, list(stats.return_queue)) == before  # type: ignore[attr-defined]


def test_make_cloneable_is_idempotent() -> None:
    env = make_cloneable(gym.make("CartPole-v1"))
    assert isinstance(env, CloneableWrapper)
    assert make_cloneable(env) is env


@pytest.mark.skipif(not HAS_BOX2D, reason="Box2D (gymnasium[box2d]) is not installed")
def test_nested_make_cloneable_records_once() -> None:
    inner = make_cloneable(gym.make("LunarLander-v3"))
    outer = make_cloneable(Monitor(inner))
    assert outer is not inner and isinstance(outer, CloneableWrapper)
    assert inner.records and not outer.records  # type: ignore[attr-defined]
    outer.reset(seed=1)
    transitions(outer, [0, 2, 2, 1])
    snap = outer.clone_state()  # type: ignore[attr-defined]
    assert snap.restore_steps == 4
    sim = scratch_copy(outer)
    restore_state(sim, snap)
    assert_same(transitions(sim, [3, 3, 0]), transitions(outer, [3, 3, 0]), "nested recorder")


@pytest.mark.skipif(not HAS_BOX2D, reason="Box2D (gymnasium[box2d]) is not installed")
def test_replay_after_unseeded_reset() -> None:
    env = make_cloneable(gym.make("LunarLander-v3", enable_wind=True))
    twin = gym.make("LunarLander-v3", enable_wind=True)
    env.reset(seed=2)
    twin.reset(seed=2)
    acts = actions(env, 4, 400)
    done_at = None
    for i, a in enumerate(acts):  # play until the first episode ends, then 5 more steps
        e, t = env.step(a), twin.step(a)
        assert e[1] == t[1]
        if e[2] or e[3]:
            env.reset()
            twin.reset()
            done_at = i
            break
    assert done_at is not None
    run_prefix(env, twin, acts[done_at + 1 : done_at + 6])
    snap = clone_state(env)
    assert snap.restore_steps == 5
    assert snap.record[0][0] == "rng"
    continuation = actions(env, 5, 60)
    reference = transitions(twin, continuation)
    sim = scratch_copy(env)
    restore_state(sim, snap)
    assert_same(transitions(sim, continuation), reference, "replay after an unseeded reset")


def test_snapshot_is_immutable_and_picklable() -> None:
    env = make_cloneable(gym.make("Taxi-v4", is_rainy=True, fickle_passenger=True))
    env.reset(seed=0)
    snap = clone_state(env)
    assert isinstance(snap, Snapshot)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.restore_steps = 3  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL))
    assert isinstance(again, Snapshot) and again.restore_steps == 0 and again.core == snap.core


def test_scratch_copy_shares_constant_tables_only() -> None:
    env = make_cloneable(Monitor(gym.make("Taxi-v4")))
    env.reset(seed=0)
    sim = scratch_copy(env)
    assert sim.unwrapped is not env.unwrapped
    assert sim.unwrapped.P is env.unwrapped.P  # type: ignore[attr-defined]
    assert sim.unwrapped.np_random is not env.unwrapped.np_random


def test_restore_into_a_different_env_is_refused() -> None:
    cart = make_cloneable(gym.make("CartPole-v1"))
    cart.reset(seed=0)
    snap = clone_state(cart)
    with pytest.raises(ValueError, match="cannot be restored"):
        restore_state(make_cloneable(gym.make("Acrobot-v1")), snap)
    with pytest.raises(ValueError, match="wrapper layers differ"):
        restore_state(gym.wrappers.ClipReward(gym.make("CartPole-v1"), -1, 1), snap)


def test_vec_env_method_round_trip() -> None:
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0, wrapper_class=make_cloneable)
    venv.reset()
    snap = venv.env_method("clone_state", indices=[1])[0]
    assert isinstance(snap, Snapshot)
    sim = venv.env_method("scratch_copy", indices=[1])[0]
    restore_state(sim, snap)
    real = venv.envs[1]  # type: ignore[attr-defined]
    acts = [0, 1, 1, 0, 1]
    ref = transitions(real, acts)
    assert_same(transitions(sim, acts), ref, "env_method snapshot")
    venv.env_method("restore_state", snap, indices=[1])
    assert_same(transitions(real, acts), ref, "env_method restore")


# ---------------------------------------------------------------------------------------------
# Refusals and check_cloneable
# ---------------------------------------------------------------------------------------------


def test_ezpickle_user_env_is_refused() -> None:
    with pytest.raises(TypeError, match="EzWalkEnv") as info:
        make_cloneable(EzWalkEnv())
    assert "EzPickle" in str(info.value) and "check_cloneable" in str(info.value)
    env = EzWalkEnv()
    env.reset(seed=0)
    with pytest.raises(NotCloneableError):
        clone_state(env)


def test_ezpickle_user_env_with_registered_adapter() -> None:
    class RegisteredEzWalk(EzWalkEnv):
        pass

    def set_state(u: Any, state: Any) -> None:
        u.pos, u.vel, u.bonus = state

    register_cloneable(RegisteredEzWalk, get_state=lambda u: (u.pos, u.vel, u.bonus), set_state=set_state)
    check_cloneable(RegisteredEzWalk(), n_prefix=10, n_compare=30)


@pytest.mark.skipif(not HAS_BOX2D, reason="Box2D (gymnasium[box2d]) is not installed")
def test_lunarlander_without_recorder_is_refused() -> None:
    env = gym.make("LunarLander-v3")
    env.reset(seed=0)
    with pytest.raises(NotCloneableError, match="make_cloneable"):
        clone_state(env)
    wrapped = make_cloneable(gym.make("LunarLander-v3"))
    wrapped.reset(seed=0)
    snap = clone_state(wrapped)
    with pytest.raises(NotCloneableError, match="make_cloneable"):
        restore_state(gym.make("LunarLander-v3"), snap)


@pytest.mark.skipif(not HAS_BOX2D, reason="Box2D (gymnasium[box2d]) is not installed")
def test_headless_lunar_lander_steps_exactly_as_the_rendering_one() -> None:
    """LunarLander renders flame particles (Box2D bodies that collide with the ground only): made headless in the
    middle of an episode, with particles in the air, an env takes the same steps as its rendering twin, bit for bit."""
    from gymnasium.envs.box2d.lunar_lander import heuristic

    differing, steps = [], 0
    for seed in range(8):
        envs = [gym.make("LunarLander-v3", render_mode="rgb_array") for _ in range(2)]
        obs = [env.reset(seed=seed)[0] for env in envs]
        rng = np.random.default_rng(seed)
        for t in range(1000):
            if t == 40:
                assert len(envs[1].unwrapped.particles) > 0
                make_headless(envs[1])
                assert envs[1].unwrapped.particles == [] and envs[1].unwrapped.render_mode is None
            action = heuristic(envs[0].unwrapped, obs[0]) if rng.random() < 0.85 else int(rng.integers(4))
            results = [env.step(action) for env in envs]
            obs = [result[0] for result in results]
            steps += 1
            if not (np.array_equal(obs[0], obs[1]) and results[0][1:4] == results[1][1:4]):
                differing.append((seed, t))
                break
            if results[0][2] or results[0][3]:
                break
        assert len(envs[0].unwrapped.particles) > 0 and envs[1].unwrapped.particles == []  # its twin still renders
    assert differing == [] and steps > 1000, steps


def test_make_headless_leaves_other_envs_as_they_are() -> None:
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    assert make_headless(env) is env and env.unwrapped.render_mode == "rgb_array"
    unknown = EzWalkEnv()  # no exact snapshot method: nothing to look up, nothing changed
    assert make_headless(unknown) is unknown


def test_recorder_needs_a_reset_after_wrapping() -> None:
    if not HAS_BOX2D:
        pytest.skip("Box2D (gymnasium[box2d]) is not installed")
    env = gym.make("LunarLander-v3")
    env.reset(seed=0)
    wrapped = make_cloneable(env)
    with pytest.raises(NotCloneableError, match="reset"):
        clone_state(wrapped)


def test_check_cloneable_passes_on_exact_envs() -> None:
    check_cloneable("CartPole-v1", n_prefix=10, n_compare=50)
    check_cloneable(gym.make("FrozenLake-v1", is_slippery=True), seed=3, n_prefix=5, n_compare=50)
    check_cloneable(StepLimit(WalkEnv(), 7), n_prefix=10, n_compare=30)


def test_check_cloneable_reports_obs_divergence() -> None:
    with pytest.raises(CloningError, match=r"^obs diverged at continuation step 0 after restore"):
        check_cloneable(ForgetsVelocityEnv(), n_prefix=10, n_compare=30)


def test_check_cloneable_reports_reward_divergence() -> None:
    with pytest.raises(CloningError, match=r"^reward diverged at continuation step 0 after restore"):
        check_cloneable(ForgetsBonusEnv(), n_prefix=10, n_compare=30)


def test_check_cloneable_reports_truncation_divergence() -> None:
    # 10 prefix steps with a limit of 7: the snapshot has count 3, so the reference truncates at
    # continuation step 3. The 4-step wander truncates and resets (count 0) and the restore does not
    # restore the (wrongly stateless) counter, so the restored env runs on.
    with pytest.raises(CloningError, match=r"^truncated diverged at continuation step 3 after restore"):
        check_cloneable(ForgetfulStepLimit(MethodWalkEnv(), 7), n_prefix=10, n_wander=4, n_compare=30)


def test_check_cloneable_refuses_ezpickle_env() -> None:
    with pytest.raises(NotCloneableError, match="check_cloneable"):
        check_cloneable(EzWalkEnv())


# ---------------------------------------------------------------------------------------------
# Longer sweeps
# ---------------------------------------------------------------------------------------------

SWEEP = [
    ("CartPole-v1", {}),
    ("Acrobot-v1", {}),
    ("MountainCar-v0", {}),
    ("FrozenLake-v1", {"is_slippery": True, "map_name": "8x8"}),
    ("Taxi-v4", {"is_rainy": True, "fickle_passenger": True}),
    ("CliffWalking-v1", {"is_slippery": True}),
    ("LunarLander-v3", {}),
    ("LunarLander-v3", {"enable_wind": True, "turbulence_power": 2.0}),
    ("ALE/Breakout-v5", {}),
    ("ALE/Pong-v5", {"repeat_action_probability": 0.0}),
    ("MiniGrid-KeyCorridorS3R3-v0", {}),
    ("MiniGrid-MultiRoom-N4-S5-v0", {}),
]


def lunar_lander_heuristic_actions(n: int, seed: int) -> list[int]:
    """Actions of gymnasium's hand-written LunarLander controller over ``n`` steps from ``reset(seed=seed)``: it
    keeps the lander flying for 150+ steps, where random actions crash it within about 90."""
    from gymnasium.envs.box2d.lunar_lander import heuristic

    env = gym.make("LunarLander-v3")
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(n):
        out.append(int(heuristic(env.unwrapped, obs)))
        obs, _, terminated, truncated, _ = env.step(out[-1])
        assert not (terminated or truncated), "the controller's episode ended inside the prefix"
    return out


LONG_PREFIX = [
    pytest.param("MiniGrid-KeyCorridorS3R3-v0", {}, "minigrid", id="KeyCorridor",
                 marks=pytest.mark.skipif(not HAS_MINIGRID, reason="minigrid is not installed")),
    pytest.param("MiniGrid-MultiRoom-N4-S5-v0", {}, "minigrid", id="MultiRoom",
                 marks=pytest.mark.skipif(not HAS_MINIGRID, reason="minigrid is not installed")),
    pytest.param("FrozenLake-v1", {"is_slippery": True, "map_name": "8x8"}, "toy_text", id="FrozenLake-8x8"),
    pytest.param("LunarLander-v3", {}, "replay", id="LunarLander-no-wind",
                 marks=pytest.mark.skipif(not HAS_BOX2D, reason="Box2D (gymnasium[box2d]) is not installed")),
    pytest.param("ALE/Pong-v5", {"repeat_action_probability": 0.0}, "atari", id="Pong-p0",
                 marks=pytest.mark.skipif(not HAS_ALE, reason="ale-py is not installed")),
]  # fmt: skip


@pytest.mark.parametrize(("env_id", "kwargs", "family"), LONG_PREFIX)
def test_exact_restore_after_a_long_prefix(env_id: str, kwargs: dict[str, Any], family: str) -> None:
    """CI-sized case of the slow sweep: a 160-step prefix, then snapshot, wander, restore, and a 100-step
    continuation bit-identical to an untouched twin (also from a scratch copy). LunarLander's prefix has no reset,
    so its snapshot replays all 160 steps (Box2D replay drift would show)."""
    env = make_cloneable(gym.make(env_id, **kwargs))
    twin = gym.make(env_id, **kwargs)
    assert family_of(env) == family
    env.reset(seed=5)
    twin.reset(seed=5)
    prefix = lunar_lander_heuristic_actions(160, seed=5) if family == "replay" else actions(env, 1, 160)
    since_reset = run_prefix(env, twin, prefix)
    snap = clone_state(env)
    if family == "replay":
        assert snap.restore_steps == since_reset == 160
    continuation = actions(env, 2, 100)
    reference = transitions(twin, continuation)
    transitions(env, actions(env, 3, 30))
    restore_state(env, snap)
    assert_same(transitions(env, continuation), reference, "after restore")
    sim = scratch_copy(env)
    restore_state(sim, snap)
    assert_same(transitions(sim, continuation), reference, "in a scratch copy")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize(("env_id", "kwargs"), SWEEP, ids=[f"{i}-{k}" for i, k in SWEEP])
def test_check_cloneable_sweep(env_id: str, kwargs: dict[str, Any], seed: int) -> None:
    if env_id.startswith("ALE/") and not HAS_ALE:
        pytest.skip("ale-py is not installed")
    if env_id.startswith("MiniGrid") and not HAS_MINIGRID:
        pytest.skip("minigrid is not installed")
    if env_id.startswith("LunarLander") and not HAS_BOX2D:
        pytest.skip("Box2D is not installed")
    check_cloneable(env_id, seed=seed, n_prefix=150, n_wander=60, n_compare=400, env_kwargs=kwargs)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_BOX2D, reason="Box2D (gymnasium[box2d]) is not installed")
def test_subproc_vec_env_snapshot_crosses_processes() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = make_vec_env("LunarLander-v3", n_envs=2, seed=0, wrapper_class=make_cloneable, vec_env_cls=SubprocVecEnv)
    try:
        venv.reset()
        for _ in range(5):
            venv.step(np.array([2, 1]))
        snap = venv.env_method("clone_state", indices=[0])[0]
        assert snap.restore_steps == 5
        local = make_cloneable(Monitor(gym.make("LunarLander-v3")))
        sim = scratch_copy(local)
        restore_state(sim, snap)
        venv.env_method("restore_state", snap, indices=[1])  # a snapshot of env 0 restored into env 1
        obs, *_ = venv.step(np.array([0, 3]))
        expected = sim.step(3)[0]
        assert canon(obs[1]) == canon(expected)
    finally:
        venv.close()


@pytest.mark.skipif(not HAS_ALE, reason="ale-py is not installed")
def test_atari_sticky_action_memory_is_restored() -> None:
    """ALE's cloneState does not save the previously applied (sticky) action; the cloner must.

    Snapshot at a point where the first frame after it repeats the previous action (draw < p), give
    the env a *different* last action during the wander, restore and compare with the twin.
    """
    from arsm_rl.cloning.atari import ale_rng_state

    env = make_cloneable(gym.make("ALE/Breakout-v5"))  # frameskip 4, repeat_action_probability 0.25
    twin = gym.make("ALE/Breakout-v5")
    env.reset(seed=4)
    twin.reset(seed=4)
    tracker = env.unwrapped.ale
    for _ in range(200):
        run_prefix(env, twin, [3])  # keep pressing LEFT
        if tracker.calls_until_accepted(tracker.rng_state()) > 1:
            break
    else:
        pytest.fail("no snapshot point whose first frame repeats the previous action")
    # the tracker hands cloneState on to ALE itself: ale_rng_state reads ALE's own RNG, against the mirror
    assert ale_rng_state(tracker) == tracker.rng_state(), "tracker's RNG mirror is out of sync with ALE"
    snap = clone_state(env)
    continuation = [2] * 5 + actions(env, 8, 30)  # RIGHT first: a stale LEFT memory would show
    reference = transitions(twin, continuation)
    transitions(env, [2, 1, 0, 0])  # last applied action in the wander: NOOP
    restore_state(env, snap)
    assert_same(transitions(env, continuation), reference, "sticky memory after restore")
    sim = scratch_copy(env)
    restore_state(sim, snap)
    assert_same(transitions(sim, continuation), reference, "sticky memory in scratch copy")
