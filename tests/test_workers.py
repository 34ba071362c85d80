"""Rollout workers (issue 14): the same training bit for bit for 0, 1 and 2 workers, and no leaked processes."""

from __future__ import annotations

import gc
import importlib.util
import multiprocessing.context
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from arsm_rl import ARSM, make_cloneable
from arsm_rl.rollouts import BACKENDS, POLICY_BLOCK, block_rows, pad_rows, register_backend
from arsm_rl.rollouts.workers import SubprocWorkers

SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=64, seed=0)

ROOT = Path(__file__).resolve().parents[1]


def parameters(model: ARSM) -> th.Tensor:
    return th.cat([p.detach().reshape(-1) for p in model.policy.parameters()])


def worker_processes() -> list[int]:
    """Descendants of this process below its direct children (the forkserver's children: the rollout workers)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    children = {pid for pid, parent in parents.items() if parent == os.getpid()}
    return [pid for pid, parent in parents.items() if parent in children]


def test_policy_rows_do_not_depend_on_the_other_blocks() -> None:
    """What makes the split invisible: a block's logits are the same whichever blocks are stacked with it, in the numpy
    form the rollouts use and in torch's (policies without a numpy form); with numpy, a row's logits are even the same
    with zeros in the rest of its block."""
    from arsm_rl.rollouts import numpy_logits

    th.manual_seed(0)
    policy = ARSM("MlpPolicy", "LunarLander-v3", seed=0).policy
    mlp = numpy_logits(policy)
    assert mlp is not None
    block = np.random.default_rng(0).normal(size=(POLICY_BLOCK, 8)).astype(np.float32)
    with th.no_grad():
        alone = policy(th.as_tensor(block))
        for k in (2, 7, 40):
            others = np.random.default_rng(k).normal(size=((k - 1) * POLICY_BLOCK, 8)).astype(np.float32)
            stacked = policy(th.as_tensor(np.concatenate([others, block])))
            assert th.equal(stacked[-POLICY_BLOCK:], alone)
            assert np.array_equal(mlp(np.concatenate([others, block]))[-POLICY_BLOCK:], mlp(block))
    for row in (0, 5, 15):
        lonely = np.zeros_like(block)
        lonely[row] = block[row]
        assert np.array_equal(mlp(lonely)[row], mlp(block)[row])
    assert block_rows(np.array([3, 40]), 50).tolist() == list(range(16)) + list(range(32, 48))
    assert len(pad_rows(np.zeros((17, 2)))) == 2 * POLICY_BLOCK


def test_a_share_may_start_inside_a_block_with_numpy_logits() -> None:
    """Rollouts run in pieces that start inside policy blocks (zero rows in the places of the rollouts before them)
    give what they give run all together, with the policy's numpy form (rows independent of their block); a policy
    whose rows depend on their block (torch's) is refused such a piece."""
    from arsm_rl.actions import JointActions
    from arsm_rl.rollouts import (
        RacePolicy,
        RolloutEngine,
        TorchLogits,
        enable_cloning,
        race_policy,
        rows_independent,
        run_lockstep,
    )
    from arsm_rl.rollouts.workers import merge

    venv = make_vec_env("LunarLander-v3", n_envs=2, seed=0)
    enable_cloning(venv)
    engine = RolloutEngine(venv)
    venv.reset()
    rng = np.random.default_rng(0)
    branches = []
    for _ in range(20):
        branches += engine.branch_points(range(2))
        venv.step(rng.integers(4, size=2))
    n = len(branches)
    first, horizons = rng.integers(4, size=n), [25] * n
    policy = ARSM("MlpPolicy", "LunarLander-v3", **SMALL).policy
    joint = JointActions(np.array([4]), discrete=True)
    args = (joint, 7, n, np.zeros((1, 2, 1, 4), np.float32), np.zeros(n, np.int64), np.zeros(n, np.int64), False)
    act = race_policy(policy, *args)
    assert rows_independent(act)
    whole = engine.run(branches, first, act, horizons)
    pieces = [run_lockstep(engine.pool, branches[a:b], first[a:b], engine.pipeline, act, horizons[a:b], engine.stepper,
                           id_offset=a) for a, b in [(0, 5), (5, 21), (21, 23), (23, n)]]  # fmt: skip
    joined = merge(pieces)
    assert np.array_equal(whole.rewards, joined.rewards) and np.array_equal(whole.lengths, joined.lengths)
    assert whole.lengths.max() == 25
    torch_act = RacePolicy(TorchLogits(policy), *args)
    with pytest.raises(ValueError, match="id_offset must be a multiple of 16 for this policy, got 5"):
        run_lockstep(engine.pool, branches[5:], first[5:], engine.pipeline, torch_act, horizons[5:], id_offset=5)
    engine.close()
    venv.close()


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("CartPole-v1", {}),  # batched dynamics
        ("FrozenLake-v1", dict(ent_coef=0.01)),  # toy text, one env at a time
        ("LunarLander-v3", dict(max_pseudo_rollouts=48, pseudo_horizon=30, share_noise=True)),  # replayed snapshots
        ("CartPole-v1", dict(action_values="bootstrap", pseudo_horizon=10)),  # cut rollouts' observations come back
    ],
)
def test_same_training_with_two_workers(env_id: str, kwargs: dict[str, Any]) -> None:
    steps = 256
    reference = ARSM("MlpPolicy", env_id, **SMALL, **kwargs).learn(steps)
    shared = ARSM("MlpPolicy", env_id, n_rollout_workers=2, **SMALL, **kwargs)
    counts = WorkerRollouts()
    shared.start_rollout_workers()  # ready from the first update on: every update gives them their shares
    shared.learn(steps, callback=counts)
    assert reference.num_pseudo_steps == shared.num_pseudo_steps > 0
    assert th.equal(parameters(reference), parameters(shared))
    assert len(counts.counts) == steps // 64 - 1 and min(counts.counts) > 0  # the workers did roll out
    shared.close_rollout_workers()
    assert worker_processes() == []


class WorkerRollouts(BaseCallback):
    """Keeps how many rollouts of each update but the last ran on workers (``last_update.rollouts.worker_rollouts``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: list[int] = []

    def _on_rollout_start(self) -> None:
        if self.model.last_update is not None:
            self.counts.append(self.model.last_update.rollouts.worker_rollouts)

    def _on_step(self) -> bool:
        return True


def learn_on_workers(model: ARSM, steps: int) -> ARSM:
    """``model.learn(steps)`` with its workers ready from the first update (so every update gives them rollouts,
    checked), then stopped."""
    counts = WorkerRollouts()
    model.start_rollout_workers()
    model.learn(steps, callback=counts)
    assert counts.counts and min(counts.counts) > 0, counts.counts
    model.close_rollout_workers()
    return model


@pytest.fixture(autouse=True)
def _models_of_earlier_tests_are_gone() -> None:
    """The workers of a model stop when it is garbage-collected: earlier tests' workers are not this test's."""
    gc.collect()


def test_same_training_with_one_worker_and_a_subproc_training_env() -> None:
    reference = ARSM("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), **SMALL).learn(256)
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv, wrapper_class=make_cloneable)
    shared = learn_on_workers(ARSM("MlpPolicy", venv, n_rollout_workers=1, **SMALL), 256)
    assert th.equal(parameters(reference), parameters(shared))
    venv.close()


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["Acrobot-v1", "MountainCar-v0", "Taxi-v4", "MiniGrid-Empty-5x5-v0", "ALE/Pong-v5"])
def test_same_training_with_workers_every_family(env_id: str) -> None:
    from arsm_rl.cloning import register_optional_envs

    register_optional_envs(env_id)
    env_kwargs = dict(wrapper_class=__import__("minigrid.wrappers").wrappers.FlatObsWrapper) if "MiniGrid" in env_id else {}
    policy = "CnnPolicy" if "ALE" in env_id else "MlpPolicy"
    results = []
    for workers in (0, 1, 2):
        venv = make_vec_env(env_id, n_envs=1, seed=0, **env_kwargs)
        model = ARSM(policy, venv, n_rollout_workers=workers, max_pseudo_rollouts=40, pseudo_horizon=20, **SMALL)
        results.append(parameters(learn_on_workers(model, 128) if workers else model.learn(128)))
    assert th.equal(results[0], results[1]) and th.equal(results[0], results[2])


def one_update(model: ARSM, estimator: str | None = None) -> tuple[Any, ARSM]:
    """One update through the public update API (optionally planned and trained with another estimator)."""
    collected = model.collect_update()
    if estimator is not None:
        model.estimator = estimator
    plan = model.plan_update(collected)
    values = model.run_rollouts(collected, plan.requests).values
    model.train(collected)
    return collected, values


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("CartPole-v1", {}),  # no budget: every step's rollouts are known when it is taken
        # a budget sampled per step, the real noise shared with rollouts that start before the steps it comes from
        ("LunarLander-v3", dict(max_pseudo_rollouts=48, budget_sampling="step", pseudo_horizon=30, share_noise=True)),
        ("CartPole-v1", dict(estimator="all_action", action_values="bootstrap", pseudo_horizon=10)),
    ],
)
def test_rollouts_sent_while_the_update_is_collected(env_id: str, kwargs: dict[str, Any]) -> None:
    """Idle workers get whole blocks of rollouts while the real steps are still taken (EarlyRollouts); the update is
    the same bit for bit, whether the shares sent ahead are used, or dropped because the update was planned for
    another estimator, or left behind by a collection that a callback stopped."""
    reference = ARSM("MlpPolicy", env_id, **SMALL, **kwargs)
    shared = ARSM("MlpPolicy", env_id, n_rollout_workers=2, **SMALL, **kwargs)
    shared.start_rollout_workers()
    for model in (reference, shared):
        model.learn(64, callback=StopAt(40))  # stopped mid-collection: shares sent ahead are never claimed
    sent = []
    for estimator in (None, None, "rloo" if "estimator" not in kwargs else None):
        (collected, values), (early, shared_values) = one_update(reference, estimator), one_update(shared, estimator)
        assert collected.early is None and early.early is not None
        sent.append(len(early.early.sent))
        assert np.array_equal(values, shared_values)
    assert th.equal(parameters(reference), parameters(shared))
    assert reference.num_pseudo_steps == shared.num_pseudo_steps > 0
    assert max(sent) > 0  # blocks did go ahead
    shared.close_rollout_workers()
    assert worker_processes() == []


def test_the_rollouts_seed_is_read_ahead_not_drawn() -> None:
    """The seed of the rollouts sent ahead is the pseudo stream's next draw, read from a copy: collecting leaves the
    stream as it is (an update without rollouts draws nothing, as without workers), so two collections in a row read
    the same seed, and rolling out the second draws it."""
    model = ARSM("MlpPolicy", "CartPole-v1", n_rollout_workers=1, **SMALL)
    model.start_rollout_workers()
    first, second = model.collect_update(), model.collect_update()
    assert first.early is not None and second.early is not None and first.early.entropy == second.early.entropy
    model.run_rollouts(second, model.plan_update(second).requests)
    third = model.collect_update()
    assert third.early is not None and third.early.entropy != second.early.entropy
    model.close_rollout_workers()


class StopAt(BaseCallback):
    """Stops training at a real step."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        return self.num_timesteps < self.step


class KillAWorker(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def _on_step(self) -> bool:
        if self.num_timesteps == 65:  # during the second update's collection: the workers are up
            self.seen = worker_processes()
            os.kill(self.seen[0], signal.SIGKILL)
        return True


def test_a_dead_worker_is_a_clear_error_and_nothing_leaks() -> None:
    """The trainer names the dead worker and the signal that killed it, and stops the others."""
    callback = KillAWorker()
    model = ARSM("MlpPolicy", "CartPole-v1", n_rollout_workers=2, **SMALL)
    model.start_rollout_workers()
    with pytest.raises(RuntimeError, match=r"^rollout worker \d died \(killed by SIGKILL\); its rollouts are lost$"):
        model.learn(256, callback=callback)
    assert len(callback.seen) == 2
    assert worker_processes() == []


class FailsOutsideItsProcess(gym.Env):
    """Steps in the process that built it; raises in any other (a rollout worker)."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.home = os.getpid()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if os.getpid() != self.home:
            raise ValueError("stepped away from home")
        self.t += 1
        return np.zeros(1, np.float32), float(action), False, self.t >= 10, {}


def test_an_error_in_a_worker_is_raised_in_the_trainer() -> None:
    model = ARSM("MlpPolicy", FailsOutsideItsProcess(), n_rollout_workers=1, **SMALL)
    model.start_rollout_workers()
    with pytest.raises(RuntimeError, match="a rollout worker failed: ValueError: stepped away from home"):
        model.learn(128)
    assert worker_processes() == []


def test_workers_that_cannot_start_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processes start in a thread, beside the trainer; what stops them is raised in the trainer."""

    def no_process(self: Any) -> None:
        raise OSError("Resource temporarily unavailable")

    for process in (multiprocessing.context.ForkServerProcess, multiprocessing.context.SpawnProcess):
        monkeypatch.setattr(process, "start", no_process)
    model = ARSM("MlpPolicy", "CartPole-v1", n_rollout_workers=2, **SMALL)
    message = (r"^rollout workers could not start \(OSError: Resource temporarily unavailable\); n_rollout_workers=0 "
               r"runs the rollouts in the training process$")  # fmt: skip
    for _ in range(2):  # and again: a pool whose start failed starts afresh
        with pytest.raises(RuntimeError, match=message):
            model.start_rollout_workers()
    assert worker_processes() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_rollout_workers=-1), "n_rollout_workers must be a whole number >= 0, got -1"),
        (dict(n_rollout_workers=1.5), "n_rollout_workers must be a whole number >= 0, got 1.5"),
        (dict(rollout_backend="nope"), "Unknown rollout_backend 'nope'; choose one of subproc, ray"),
    ],
)
def test_bad_worker_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ARSM("MlpPolicy", "CartPole-v1", **kwargs)


def test_frame_stacks_and_image_transposes_travel_to_the_workers() -> None:
    """VecFrameStack and VecTransposeImage are mirrored in the workers (Atari's usual stack): same training."""
    from stable_baselines3.common.vec_env import VecFrameStack

    from tests.test_arsm import TinyImageEnv

    results = []
    for workers in (0, 2):
        venv = VecFrameStack(make_vec_env(TinyImageEnv, n_envs=2, seed=0), n_stack=3)
        model = ARSM("CnnPolicy", venv, n_rollout_workers=workers, n_steps=16, seed=0)
        model = learn_on_workers(model, 64) if workers else model.learn(64)
        assert model.num_pseudo_steps > 0
        results.append(parameters(model))
    assert th.equal(results[0], results[1])


def test_vec_normalize_statistics_travel_with_every_update() -> None:
    """VecNormalize's statistics change at every real step; each update's rollouts in the workers use the current
    ones, as in the training process: the same training."""
    from stable_baselines3.common.vec_env import VecNormalize

    results = []
    for workers in (0, 2):
        venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
        model = ARSM("MlpPolicy", venv, n_rollout_workers=workers, **SMALL)
        model = learn_on_workers(model, 384) if workers else model.learn(384)
        assert model.num_pseudo_steps > 0
        results.append(parameters(model))
    assert th.equal(results[0], results[1])
    assert worker_processes() == []


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (pip install -e '.[ray]')")
def test_ray_backend_gives_the_same_training() -> None:
    """Two Ray actors on a local Ray (started with the workers, shut down with them), bit-identical to no workers."""
    import ray

    reference = ARSM("MlpPolicy", "CartPole-v1", **SMALL).learn(192)
    shared = learn_on_workers(ARSM("MlpPolicy", "CartPole-v1", n_rollout_workers=2, rollout_backend="ray", **SMALL), 192)
    assert th.equal(parameters(reference), parameters(shared))
    assert not ray.is_initialized()


def test_missing_ray_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"rollout_backend='ray' needs Ray: pip install -e '\.\[ray\]'"):
        ARSM("MlpPolicy", "CartPole-v1", n_rollout_workers=1, rollout_backend="ray")
    ARSM("MlpPolicy", "CartPole-v1", rollout_backend="ray")  # no workers: nothing to import


def test_the_engine_owns_the_workers_for_the_models_life() -> None:
    """The workers start with the first update without the trainer waiting (it runs the rollouts until they are
    ready), stay up across updates and learn() calls, stop with close_rollout_workers() or with the model, and start
    again when needed."""
    model = ARSM("MlpPolicy", "CartPole-v1", n_rollout_workers=1, **SMALL)
    model.start_rollout_workers()
    first = worker_processes()
    collected = model.collect_update()
    requests = model.plan_update(collected).requests
    assert model.run_rollouts(collected, requests).worker_rollouts > 0
    model.learn(128)
    model.learn(64, reset_num_timesteps=False)
    assert len(first) == 1 and worker_processes() == first  # the same process for every update of the model
    model.close_rollout_workers()
    assert worker_processes() == []
    model.learn(64, reset_num_timesteps=False)  # started again, without waiting
    model.start_rollout_workers()  # waits for them: no other process
    assert len(worker_processes()) == 1 and model.num_pseudo_steps > 0
    del model
    gc.collect()
    assert worker_processes() == []


def test_a_registered_backend_is_a_rollout_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backends register as estimators do (register_backend); ARSM's docstring, docs/arsm.md and train.py's help name
    every registered one."""

    class Local(SubprocWorkers):
        name = "local_test"

    monkeypatch.setitem(BACKENDS, Local.name, Local)
    assert register_backend(Local) is Local and BACKENDS["local_test"] is Local
    reference = ARSM("MlpPolicy", "CartPole-v1", **SMALL).learn(128)
    model = ARSM("MlpPolicy", "CartPole-v1", n_rollout_workers=1, rollout_backend="local_test", **SMALL)
    shared = learn_on_workers(model, 128)
    assert th.equal(parameters(reference), parameters(shared))
    monkeypatch.delitem(BACKENDS, Local.name)
    docs = (ROOT / "docs" / "arsm.md").read_text()
    help_text = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True).stdout
    for name in BACKENDS:
        assert f'``"{name}"``' in (ARSM.__doc__ or "") and f'`"{name}"`' in docs and name in help_text, name


UNGUARDED = """
from arsm_rl import ARSM

model = ARSM("MlpPolicy", "CartPole-v1", n_steps=64, n_rollout_workers=1)
model.learn(128)
"""


@pytest.mark.parametrize("guarded", [False, True])
def test_a_script_without_the_main_guard_is_told_so(tmp_path: Path, guarded: bool) -> None:
    """forkserver/spawn processes run the script again: without ``if __name__ == "__main__":`` the workers refuse to
    start, with one error naming the line (no hang, no process started); with the guard the script trains."""
    body = UNGUARDED if not guarded else UNGUARDED.replace("\nmodel", "\nif __name__ == '__main__':\n    model")
    body = body.replace("\nmodel.learn", "\n    model.learn") if guarded else body
    script = tmp_path / "script.py"
    script.write_text(body)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    if guarded:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"RuntimeError: rollout workers start processes that run your script again, so line 5 of {script} must be "
        "under 'if __name__ == \"__main__\":' (as with SubprocVecEnv), or use n_rollout_workers=0"
    )


@pytest.mark.parametrize("activation", [th.nn.Tanh, th.nn.ELU])
def test_a_task_carries_no_torch_storage(activation: type[th.nn.Module]) -> None:
    """Through a multiprocessing pipe a torch tensor travels as a file descriptor that the worker fetches from the
    trainer's resource-sharer thread (25-40 ms per task while the trainer runs its own share): the rollout policy
    sends its weights (its numpy form for a Tanh MLP, the torch policy's state for an ELU one) and action coding as
    numpy, and acts the same after the trip."""
    import io
    from multiprocessing.reduction import ForkingPickler

    from arsm_rl.rollouts import race_policy

    model = ARSM("MlpPolicy", "CartPole-v1", **{**SMALL, "policy_kwargs": dict(net_arch=[16], activation_fn=activation)})
    collected = model.collect_update()
    rows = np.arange(4)
    act = race_policy(model.policy, model.policy.joint, 7, 4, collected.noise, rows, 0 * rows, share_noise=False)
    assert act.portable == (activation is not th.nn.ELU)
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(act)
    assert b"rebuild_storage_fd" not in buffer.getvalue()
    travelled = ForkingPickler.loads(buffer.getvalue())
    obs = collected.obs[:4].reshape(4, -1)
    assert np.array_equal(travelled.logits(obs), act.logits(obs))
    assert np.array_equal(travelled(obs, rows, 1), act(obs, rows, 1))
