"""TensorBoard logs of a train.py run, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

ROOT = Path(__file__).resolve().parents[1]
N_STEPS = 64
TOTAL = 512

#: Keys SB3 records with ``exclude="tensorboard"`` (or only with ``is_success`` infos): not in the event files.
NOT_IN_TENSORBOARD = {
    "time/iterations", "time/time_elapsed", "time/total_timesteps", "train/n_updates", "rollout/success_rate",
}  # fmt: skip
#: ARSM's own keys (docs/arsm.md, "Logged keys").
ARSM_KEYS = {
    "rollout/pseudo_actions_per_step",
    "rollout/pseudo_step_share",
    "rollout/pseudo_rollouts",
    "rollout/tail_rollouts",
    "rollout/pseudo_steps",
    "rollout/restore_steps",
    "time/total_pseudo_steps",
    "time/total_restore_steps",
    "time/total_env_steps",
    "time/pseudo_fps",
    "train/grad_norm",
    "train/grad_log_variance",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory of one short train.py run (TensorBoard logs in ``tb/``, run folder in ``logs/``)."""
    cwd = tmp_path_factory.mktemp("tb")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--algo", "arsm", "--env", "CartPole-v1", "-n", str(TOTAL), "--seed", "0",
         "-tb", "tb", "--eval-freq", "256", "--eval-episodes", "2", "--verbose", "0", "--num-threads", "1",
         "-params", f"n_steps:{N_STEPS}", "policy_kwargs:dict(net_arch=[16])"],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


@pytest.fixture(scope="module")
def events(run: Path) -> EventAccumulator:
    runs = list((run / "tb").iterdir())
    assert [r.name for r in runs] == ["CartPole-v1__arsm__0_1"]  # <env>__<algo>__<seed>, SB3's run counter appended
    accumulator = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


def documented_keys() -> set[str]:
    """Every logger key docs/arsm.md names, minus the ones SB3 keeps out of TensorBoard."""
    text = (ROOT / "docs" / "arsm.md").read_text()
    section = text[text.index("## Logged keys") :]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    return set(re.findall(r"`((?:rollout|time|train)/\w+)`", section)) - NOT_IN_TENSORBOARD


def values(events: EventAccumulator, tag: str) -> tuple[np.ndarray, np.ndarray]:
    scalars = events.Scalars(tag)
    return np.array([s.step for s in scalars]), np.array([s.value for s in scalars], dtype=float)


def test_documented_scalars_present(events: EventAccumulator) -> None:
    documented = documented_keys()
    assert documented >= ARSM_KEYS  # the docs still document ARSM's keys (and the parsing above works)
    logged = set(events.Tags()["scalars"])
    # the critic's keys are logged with action_values="critic" or "bootstrap" only (tests/test_critic.py reads them)
    expected = documented - {"train/critic_loss", "train/critic_td_error"}
    assert expected <= logged, f"documented but not in TensorBoard: {sorted(expected - logged)}"
    assert {"eval/mean_reward", "eval/mean_ep_length"} <= logged


def test_scalar_values_are_sensible(events: EventAccumulator) -> None:
    for tag in events.Tags()["scalars"]:
        assert all(math.isfinite(v) for v in values(events, tag)[1]), tag
    steps, rew = values(events, "rollout/ep_rew_mean")
    assert steps.max() == TOTAL and np.all(np.diff(steps) > 0) and np.all(steps % N_STEPS == 0)
    np.testing.assert_array_equal(values(events, "rollout/ep_len_mean")[1], rew)  # CartPole pays 1 per step
    assert np.all(values(events, "train/learning_rate")[1] == pytest.approx(0.01))  # the constructor default
    assert np.all(values(events, "train/grad_norm")[1] > 0)
    entropy_loss = values(events, "train/entropy_loss")[1]  # minus the mean entropy: in [-ln 2, 0] for 2 actions
    assert np.all((entropy_loss >= -math.log(2) - 1e-6) & (entropy_loss <= 0))
    assert entropy_loss[0] == pytest.approx(-math.log(2), abs=1e-3)  # logits layer initialised with gain 0.01
    assert np.ptp(entropy_loss) > 1e-3  # it follows the policy as it learns (-0.693 to -0.674 with this seed)
    share = values(events, "rollout/pseudo_step_share")[1]
    per_step = values(events, "rollout/pseudo_actions_per_step")[1]
    assert np.all((share > 0) & (share <= 1)) and np.allclose(per_step, share)  # C = 2: at most one pseudo action
    rollouts = values(events, "rollout/pseudo_rollouts")[1]
    np.testing.assert_allclose(rollouts, share * N_STEPS)  # every informative step is rolled out (no budget)
    assert np.all(values(events, "rollout/pseudo_steps")[1] >= rollouts)
    assert np.all(values(events, "rollout/tail_rollouts")[1] <= 1)
    assert np.all(values(events, "rollout/restore_steps")[1] == 0)  # CartPole restores by state copy, no replay
    assert np.all(values(events, "time/pseudo_fps")[1] > 0)


def test_episode_return_matches_the_monitor(run: Path, events: EventAccumulator) -> None:
    """rollout/ep_rew_mean at each dump is the mean return of the episodes the Monitor file records as finished by
    then (fewer than SB3's 100-episode window in 512 steps, so all of them; one env, so a running step count)."""
    monitor = np.loadtxt(next((run / "logs").glob("arsm/CartPole-v1_*/0.monitor.csv")), delimiter=",", skiprows=2)
    returns, lengths = monitor[:, 0], monitor[:, 1]
    ends = np.cumsum(lengths)  # the real step at which each episode ended
    assert len(returns) < 100 and ends[-1] <= TOTAL
    steps, rew = values(events, "rollout/ep_rew_mean")
    assert len(steps) > 3
    expected = [returns[ends <= step].mean() for step in steps]
    np.testing.assert_allclose(rew, expected, rtol=1e-6)  # TensorBoard stores float32


def test_step_accounting(events: EventAccumulator) -> None:
    steps, total_pseudo = values(events, "time/total_pseudo_steps")
    _, per_update = values(events, "rollout/pseudo_steps")
    _, total_env = values(events, "time/total_env_steps")
    np.testing.assert_allclose(np.cumsum(per_update), total_pseudo)
    real = total_env - total_pseudo  # num_timesteps at the update, which is dumped with the next iteration
    np.testing.assert_allclose(real, steps - N_STEPS)
    assert np.all(total_pseudo > 0)


def test_hyperparameters_logged(events: EventAccumulator) -> None:
    content = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = data.session_start_info.hparams
    assert hparams["algo"].string_value == "arsm" and hparams["env"].string_value == "CartPole-v1"
    assert hparams["estimator"].string_value == "arsm"
    assert hparams["n_steps"].number_value == N_STEPS and hparams["learning_rate"].number_value == pytest.approx(0.01)
    assert hparams["seed"].number_value == 0 and hparams["gamma"].number_value == pytest.approx(0.99)
    assert "net_arch=[16]" in hparams["policy_kwargs"].string_value
