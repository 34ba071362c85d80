"""ForkVecEnv (issue 15): fork snapshots train bit-identically to replay with zero replayed steps, clone any env, and
leave no process behind."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from arsm_rl import ARSM, ForkVecEnv
from arsm_rl.cloning import NotCloneableError
from arsm_rl.rollouts import verify_rollouts

SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=32, seed=0)
LUNAR = dict(max_pseudo_rollouts=24, pseudo_horizon=20, share_noise=True)


def parameters(model: ARSM) -> th.Tensor:
    return th.cat([p.detach().reshape(-1) for p in model.policy.parameters()])


def descendants() -> list[int]:
    """The ForkVecEnv processes below this one (workers, paused copies, rollouts; zombies included), from /proc."""
    parents, fork = {}, set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if b"arsm_rl.forkvec.server" in (stat.parent / "cmdline").read_bytes():
                fork.add(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [os.getpid()]
    while frontier:
        below = [pid for pid, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return sorted(pid for pid in found if pid in fork)


def settle(expected: int, seconds: float = 5.0) -> list[int]:
    """:return: the descendants once there are ``expected`` of them (processes exit asynchronously), or at the deadline"""
    deadline = time.monotonic() + seconds
    while len(found := descendants()) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


class GlobalRandomWalk(gym.Env[np.ndarray, int]):
    """A walk whose noise comes from Python's global ``random``: no snapshot of the env object captures it."""

    observation_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            random.seed(seed)
        self.x = 0.0
        return np.array([self.x], dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x += 0.1 * (action - 1) + random.uniform(-0.2, 0.2)
        return np.array([self.x], dtype=np.float32), -abs(self.x), abs(self.x) > 1.0, False, {}


class Endless(GlobalRandomWalk):
    """The walk without its ends, and without a time limit."""

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, _, _, info = super().step(action)
        return obs, reward, False, False, info


def walk() -> gym.Env:
    return gym.wrappers.TimeLimit(GlobalRandomWalk(), max_episode_steps=40)


class RaisesAt(gym.Wrapper):
    """Raises in the 5th step of its env."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = 0

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.steps == 5:
            raise ValueError("boom at step 5")
        return self.env.step(action)


@pytest.mark.parametrize(
    ("env_kwargs", "mode"), [({}, "rollout"), ({"enable_wind": True}, "rollout"), ({}, "bootstrap")]
)  # fmt: skip
def test_lunar_lander_trains_as_the_replay_path_with_no_replayed_step(env_kwargs: dict[str, Any], mode: str) -> None:
    """Also with action_values="bootstrap": the observations where forked rollouts are cut close them as replayed ones."""
    lunar = dict(**LUNAR, action_values=mode)
    reference = ARSM("MlpPolicy", make_vec_env("LunarLander-v3", 2, seed=0, env_kwargs=env_kwargs), **SMALL, **lunar)
    reference.learn(128)
    venv = make_vec_env("LunarLander-v3", 2, seed=0, env_kwargs=env_kwargs, vec_env_cls=ForkVecEnv)
    forked = ARSM("MlpPolicy", venv, **SMALL, **lunar).learn(128)
    assert reference.num_restore_steps > 0 and forked.num_restore_steps == 0
    assert forked.num_pseudo_steps == reference.num_pseudo_steps - reference.num_restore_steps
    assert th.equal(parameters(reference), parameters(forked))
    assert venv.torch_in_workers == [False, False]
    assert venv.call(lambda env: "torch" in sys.modules) == [False, False]  # still light after training
    assert venv.live_snapshots == 0 and len(settle(2)) == 2  # learn() freed its paused copies: the workers remain
    venv.close()
    assert settle(0) == []


def test_budget_sampled_per_step_snapshots_only_the_kept_steps() -> None:
    """budget_sampling="step" decides at the real step which steps the budget keeps, so a fork is taken only there;
    training stays bit-identical to the replay path with the same sampling."""
    kwargs = dict(**SMALL, **LUNAR, budget_sampling="step")
    reference = ARSM("MlpPolicy", make_vec_env("LunarLander-v3", 2, seed=0), **kwargs).learn(256)
    taken: dict[str, int] = {}
    for sampling in ("update", "step"):
        venv = make_vec_env("LunarLander-v3", 2, seed=0, vec_env_cls=ForkVecEnv)
        snapshot = venv.snapshot
        taken[sampling] = 0

        def counted(indices: Any, snapshot: Any = snapshot, sampling: str = sampling) -> Any:
            taken[sampling] += len(indices)
            return snapshot(indices)

        venv.snapshot = counted  # type: ignore[method-assign]
        forked = ARSM("MlpPolicy", venv, **{**kwargs, "budget_sampling": sampling}).learn(256)
        venv.close()
        if sampling == "step":
            assert th.equal(parameters(reference), parameters(forked))
            assert forked.num_pseudo_steps == reference.num_pseudo_steps - reference.num_restore_steps
    # About 24 rollouts per update, from about 12 kept steps of 64 (2 tail snapshots per update on top).
    assert taken["step"] < taken["update"] / 2, taken


def test_hidden_global_rng_is_refused_by_replay_and_cloned_by_fork() -> None:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import this module (and torch)
    with pytest.raises(NotCloneableError, match="ForkVecEnv"):
        ARSM("MlpPolicy", make_vec_env(walk, 1, seed=0), **SMALL)
    venv = make_vec_env(walk, 2, seed=0, vec_env_cls=ForkVecEnv)
    verify_rollouts(venv, horizon=None)  # fork restores bit for bit
    model = ARSM("MlpPolicy", venv, **SMALL).learn(64)
    assert model.num_pseudo_steps > 0 and model.num_restore_steps == 0
    assert venv.torch_in_workers == [False, False]
    venv.close()
    endless = make_vec_env(Endless, 1, seed=0, vec_env_cls=ForkVecEnv)
    with pytest.raises(ValueError, match="Endless has no time limit"):  # the episode probe runs on a forked copy
        verify_rollouts(endless, horizon=None)
    endless.close()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_snapshot_restores_any_number_of_times_and_is_freed_with_its_handle() -> None:
    venv = make_vec_env("LunarLander-v3", 1, seed=0, vec_env_cls=ForkVecEnv, vec_env_kwargs=dict(max_snapshots=2))
    venv.reset()
    venv.step(np.array([2]))
    (snapshot,) = venv.snapshot([0])
    runs = []
    for _ in range(3):
        env = snapshot.restore()
        runs.append([env.step(a)[:2] for a in (0, 1, 2, 3, 2)])
        env.close()
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for run in runs[1:] for a, b in zip(runs[0], run, strict=True))
    obs, reward, _, _ = venv.step(np.array([0]))
    assert np.array_equal(obs[0], runs[0][0][0]) and reward[0] == runs[0][0][1]  # the copies were the training env
    venv.snapshot([0])  # dropped at once: freed ahead of the next command
    kept = venv.snapshot([0])
    with pytest.raises(RuntimeError, match="max_snapshots=2"):
        venv.snapshot([0, 0])
    del kept
    venv.step(np.array([0]))
    assert venv.live_snapshots == 1  # the first one
    venv.free_snapshots()
    assert venv.live_snapshots == 0 and len(settle(1)) == 1
    with pytest.raises(RuntimeError, match="paused process is gone"):
        snapshot.restore()
    venv.close()


def test_fork_rollouts_are_headless_and_the_training_env_still_renders() -> None:
    """A restored copy of LunarLander has no flame particles (render-only, arsm_rl.cloning.make_headless), while
    the worker's training env keeps rendering them; the copy steps exactly as the training env then does."""
    venv = make_vec_env("LunarLander-v3", 1, seed=0, vec_env_cls=ForkVecEnv)
    venv.reset()
    for _ in range(5):
        venv.step(np.array([2]))
    (snapshot,) = venv.snapshot([0])
    copy = snapshot.restore()
    assert copy.call(lambda env: (env.unwrapped.render_mode, len(env.unwrapped.particles))) == (None, 0)
    stepped = [copy.step(action)[:2] for action in (2, 2, 0, 3)]
    copy.close()
    assert venv.call(lambda env: (env.unwrapped.render_mode, len(env.unwrapped.particles))) == [("rgb_array", 5)]
    for (obs, reward), action in zip(stepped, (2, 2, 0, 3), strict=True):
        real_obs, real_reward, _, _ = venv.step(np.array([action]))
        assert np.array_equal(obs, real_obs[0]) and reward == real_reward[0]
    venv.close()


def test_errors_and_dead_workers_are_clear_and_leave_nothing() -> None:
    venv = make_vec_env("CartPole-v1", 2, seed=0, wrapper_class=RaisesAt, vec_env_cls=ForkVecEnv)
    venv.reset()
    (snapshot,) = venv.snapshot([1])
    for _ in range(4):
        venv.step(np.array([0, 1]))
    with pytest.raises(RuntimeError, match="boom at step 5"):
        venv.step(np.array([0, 1]))
    venv.close()
    assert settle(0) == []

    venv = make_vec_env("CartPole-v1", 2, seed=0, vec_env_cls=ForkVecEnv)
    venv.reset()
    snapshot = venv.snapshot([1])[0]
    rollout = snapshot.restore()
    rollout.step(0)
    os.kill(venv.processes[1].pid, signal.SIGKILL)  # its paused copy and rollout die with it
    with pytest.raises(RuntimeError, match="worker of sub-env 1 died"):
        venv.step(np.array([0, 1]))
    with pytest.raises(RuntimeError, match="process died"):
        rollout.step(0)
    assert settle(0) == []


def test_an_exception_in_the_trainer_frees_the_snapshots() -> None:
    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps > 48:
                raise KeyboardInterrupt
            return True

    venv = make_vec_env("CartPole-v1", 2, seed=0, vec_env_cls=ForkVecEnv)
    model = ARSM("MlpPolicy", venv, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        model.learn(1000, callback=Stop())
    assert venv.live_snapshots == 0 and len(settle(2)) == 2
    venv.close()
    assert settle(0) == []


def test_rollout_workers_restore_fork_snapshots() -> None:
    reference = ARSM("MlpPolicy", make_vec_env("LunarLander-v3", 1, seed=0, vec_env_cls=ForkVecEnv), **SMALL, **LUNAR)
    reference.learn(64)
    venv = make_vec_env("LunarLander-v3", 1, seed=0, vec_env_cls=ForkVecEnv)
    shared = ARSM("MlpPolicy", venv, n_rollout_workers=1, **SMALL, **LUNAR).learn(64)
    assert reference.num_pseudo_steps == shared.num_pseudo_steps > 0
    assert th.equal(parameters(reference), parameters(shared))
    assert len(settle(2)) == 2  # the env workers remain (the rollout worker's processes are test_workers.py's)
    venv.close()
    reference.env.close()
    assert settle(0) == []


def test_without_fork_one_line_names_the_replay_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(OSError, match=r"needs Linux.*DummyVecEnv") as error:
        make_vec_env("CartPole-v1", 1, vec_env_cls=ForkVecEnv)
    assert "\n" not in str(error.value)


def test_rollouts_run_whole_inside_their_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an MLP policy (numpy logits) each rollout runs inside its fork: no step crosses the socket, and training is
    the same as with one round trip per step (a policy forced onto that path), on LunarLander and on an env with a
    hidden global RNG that only forks can copy; the forks import no torch."""
    from arsm_rl.forkvec.vec_env import ForkedEnv
    from arsm_rl.rollouts import RacePolicy

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sent = []
    send_step = ForkedEnv.send_step
    monkeypatch.setattr(ForkedEnv, "send_step", lambda self, action: (sent.append(1), send_step(self, action))[1])
    for make, kwargs in ((lambda: make_vec_env("LunarLander-v3", 2, seed=0, vec_env_cls=ForkVecEnv), LUNAR),
                         (lambda: make_vec_env(walk, 2, seed=0, vec_env_cls=ForkVecEnv), {})):  # fmt: skip
        learnt = {}
        for inside in (True, False):
            with monkeypatch.context() as patch:
                if not inside:
                    patch.setattr(RacePolicy, "portable", property(lambda self: False))
                venv = make()
                model = ARSM("MlpPolicy", venv, **SMALL, **kwargs)
                sent.clear()  # the probes at construction step forked copies
                model.learn(64)
                learnt[inside] = parameters(model)
                assert model.num_pseudo_steps > 0
                assert (len(sent) == 0) == inside
                assert venv.torch_in_workers == [False, False]
                assert venv.call(lambda env: "arsm_rl.rollouts.race" in sys.modules) == [True, True]  # preloaded once
                venv.close()
        assert th.equal(learnt[True], learnt[False])
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_the_rollout_policy_imports_no_torch() -> None:
    """What a fork runs (arsm_rl.rollouts.race: the policy's numpy form, the noise, the race) imports neither torch nor
    SB3's package."""
    import subprocess

    code = "import sys, arsm_rl.rollouts.race; print('torch' in sys.modules, 'stable_baselines3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_a_rollout_that_fails_in_its_fork_raises_in_the_trainer() -> None:
    """An error inside a fork's rollout (here: no end within max_episode_steps) is raised in the trainer with its
    message, and its forks end."""
    from arsm_rl.rollouts import BranchPoint, race_policy, run_in_forks

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    venv = make_vec_env(walk, 1, seed=0, vec_env_cls=ForkVecEnv)
    venv.reset()
    model = ARSM("MlpPolicy", venv, **SMALL)
    n = 3
    act = race_policy(model.policy, model.policy.joint, 1, n, np.zeros((1, 1, 1, 3), np.float32), np.full(n, -1),
                      np.zeros(n, dtype=np.int64), share_noise=False)  # fmt: skip
    branches = [BranchPoint(venv.snapshot([0])[0], []) for _ in range(n)]
    batch = run_in_forks(branches, np.ones(n, dtype=np.int64), act, [2] * n)
    assert batch.lengths.tolist() == [2] * n and batch.restore_steps == 0
    with pytest.raises(RuntimeError, match="ran 3 steps without its episode ending"):
        run_in_forks(branches, np.ones(n, dtype=np.int64), act, None, max_episode_steps=3)
    del branches
    venv.close()
    assert settle(0) == []
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_budget_drawn_after_the_update_is_told_to_sample_per_step() -> None:
    """With a budget drawn once the update's steps are taken, ForkVecEnv must fork every step that may be rolled out
    from: one warning names budget_sampling='step'; none with it, or without a budget."""
    import warnings

    for kwargs, warned in ((LUNAR, True), ({**LUNAR, "budget_sampling": "step"}, False), ({}, False)):
        venv = make_vec_env("LunarLander-v3", 1, seed=0, vec_env_cls=ForkVecEnv)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ARSM("MlpPolicy", venv, **SMALL, **kwargs).learn(32)
        said = [str(w.message) for w in caught if "budget_sampling='step'" in str(w.message)]
        assert len(said) == int(warned), (kwargs, said)
        venv.close()
