"""train.py end to end: subprocess runs with tiny budgets, run folders, -i, --eval-only, bad input, plots, RL Zoo."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

import train
from agents import ALGOS, ARSM_FAMILY, load_preset, preset_envs
from agents.callbacks import eval_freq
from agents.envs import normalize_kwargs
from agents.experiment import next_run_dir, show_progress
from agents.hyperparams import build_kwargs, check_types, parse_overrides, split_preset
from agents.models import model_algo
from arsm_rl import ARSM

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "train.py")
#: Tiny ARSM settings: short updates and a small network keep a 256-step run to a few seconds.
TINY_ARSM = ["n_steps:64", "policy_kwargs:dict(net_arch=[16])"]

UNCLONEABLE_MODULE = '''
import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle


class Uncloneable(gym.Env, EzPickle):
    """An EzPickle env without snapshot support: deepcopy would silently rebuild it."""

    def __init__(self):
        EzPickle.__init__(self)
        self.observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, False, False, {}


gym.register("Uncloneable-v0", entry_point=Uncloneable, max_episode_steps=20)
'''


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return env


def run_train(*args: str, cwd: Path, extra_path: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, TRAIN, "--num-threads", "1", *args],
        cwd=cwd,
        env=_env(extra_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def arsm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny ARSM run with everything on: normalisation, TensorBoard, evaluation and checkpoints."""
    cwd = tmp_path_factory.mktemp("arsm_run")
    result = run_train(
        "--algo", "arsm", "--env", "CartPole-v1", "-n", "256", "--seed", "3", "-tb", "tb", "--eval-freq", "128",
        "--eval-episodes", "2", "--save-freq", "128", "-params", *TINY_ARSM, "normalize:True", "learning_rate:0.02",
        cwd=cwd,
    )  # fmt: skip
    assert_ok(result)
    return cwd


def test_arsm_run_folder(arsm_run: Path) -> None:
    run = arsm_run / "logs" / "arsm" / "CartPole-v1_1"
    names = {p.name for p in run.iterdir()}
    assert {"CartPole-v1.zip", "config.yml", "0.monitor.csv", "vecnormalize.pkl", "evaluations.npz", "best_model.zip"} <= names
    assert {"rl_model_128_steps.zip", "rl_model_256_steps.zip", "rl_model_vecnormalize_256_steps.pkl"} <= names
    config = yaml.safe_load((run / "config.yml").read_text())
    assert config["algo"] == "arsm" and config["env"] == "CartPole-v1" and config["preset"] == "CartPole-v1"
    assert config["seed"] == 3 and config["n_timesteps"] == 256 and config["normalize"] is True
    hyper = config["hyperparams"]
    # Overrides, and the constructor defaults the preset does not repeat, are all written down.
    assert hyper["n_steps"] == 64 and hyper["learning_rate"] == 0.02
    assert hyper["policy_kwargs"] == "dict(net_arch=[16])"
    assert hyper["gamma"] == 0.99 and hyper["estimator"] == "arsm" and hyper["max_grad_norm"] == 0.5
    assert (arsm_run / "tb" / "CartPole-v1__arsm__3_1").is_dir()
    model = ARSM.load(run / "CartPole-v1.zip")
    assert model.num_timesteps == 256 and model.n_steps == 64 and model.policy.net_arch == [16]


def test_continue_training(arsm_run: Path) -> None:
    first = arsm_run / "logs" / "arsm" / "CartPole-v1_1"
    result = run_train(
        "--algo", "arsm", "--env", "CartPole-v1", "-n", "128", "--seed", "4", "--eval-freq", "-1", "-tb", "tb",
        "-i", str(first / "CartPole-v1.zip"), "-params", *TINY_ARSM, "normalize:True",
        cwd=arsm_run,
    )  # fmt: skip
    assert_ok(result)
    second = arsm_run / "logs" / "arsm" / "CartPole-v1_2"
    assert (second / "vecnormalize.pkl").is_file()
    assert yaml.safe_load((second / "config.yml").read_text())["trained_agent"].endswith("CartPole-v1.zip")
    model = ARSM.load(second / "CartPole-v1.zip")
    assert model.num_timesteps == 256 + 128  # counted on from the loaded model


def test_eval_only(arsm_run: Path) -> None:
    model = arsm_run / "logs" / "arsm" / "CartPole-v1_1" / "CartPole-v1.zip"
    result = run_train("--algo", "arsm", "--env", "CartPole-v1", "--eval-only", "-i", str(model), "--eval-episodes", "3",
                       "--seed", "0", cwd=arsm_run)  # fmt: skip
    assert_ok(result)
    assert " +- " in result.stdout and "over 3 episodes" in result.stdout
    assert not (arsm_run / "logs" / "arsm" / "CartPole-v1_3").exists()  # no run folder for an evaluation


@pytest.mark.parametrize("algo", ["a2c", "ppo"])
def test_baselines(algo: str, tmp_path: Path) -> None:
    result = run_train("--algo", algo, "--env", "CartPole-v1", "-n", "256", "--seed", "0", "--eval-freq", "-1",
                       "--verbose", "0", cwd=tmp_path)  # fmt: skip
    assert_ok(result)
    run = tmp_path / "logs" / algo / "CartPole-v1_1"
    assert (run / "CartPole-v1.zip").is_file()
    assert len(list(run.glob("*.monitor.csv"))) == 8  # RL Zoo's presets use 8 envs on CartPole
    hyper = yaml.safe_load((run / "config.yml").read_text())["hyperparams"]
    assert hyper["n_steps"] == (32 if algo == "ppo" else 5)
    assert ALGOS[algo].load(run / "CartPole-v1.zip").num_timesteps >= 256


def _default_sigint() -> None:
    """Background shells start jobs with SIGINT ignored, so that Python never raises KeyboardInterrupt: undo that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _new_group_with_default_sigint() -> None:
    """A process group of its own (to find its processes afterwards), with SIGINT as in a terminal."""
    os.setpgrp()
    _default_sigint()


@pytest.mark.parametrize(
    ("stop", "status", "workers", "vec_env"),
    [
        (signal.SIGINT, 130, "0", "dummy"),
        (signal.SIGTERM, 143, "0", "dummy"),
        (signal.SIGTERM, 143, "2", "dummy"),
        (signal.SIGINT, 130, "0", "fork"),  # ForkVecEnv workers, paused copies and rollouts: none left either
        pytest.param(signal.SIGTERM, 143, "0", "fork", marks=pytest.mark.slow),
    ],
)
def test_interrupt_saves(stop: signal.Signals, status: int, workers: str, vec_env: str, tmp_path: Path) -> None:
    """Ctrl-C and SIGTERM (timeout, schedulers, container stops) both stop training and save the model; rollout
    workers stop with the trainer (none of its process group is left)."""
    proc = subprocess.Popen(
        [sys.executable, TRAIN, "--num-threads", "1", "--algo", "arsm", "--env", "CartPole-v1", "-n", "1000000",
         "--seed", "0", "--eval-freq", "-1", "--log-interval", "1", "--rollout-workers", workers, "--vec-env", vec_env,
         "-params", "n_steps:32", "policy_kwargs:dict(net_arch=[16])"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_new_group_with_default_sigint,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # wait for the first progress table: training is under way
        if "total_timesteps" in line or time.monotonic() > deadline:
            break
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == status, err
    assert "Continue with: -i" in err and "Traceback" not in err
    model = tmp_path / "logs" / "arsm" / "CartPole-v1_1" / "CartPole-v1.zip"
    assert ARSM.load(model).num_timesteps > 0
    deadline = time.monotonic() + 30
    while _group_members(proc.pid) and time.monotonic() < deadline:  # daemons exit right after the trainer
        time.sleep(0.2)
    assert _group_members(proc.pid) == []


def _group_members(group: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_ctrl_c_in_a_terminal_with_subproc_envs(tmp_path: Path) -> None:
    """Ctrl-C in a terminal goes to the whole foreground process group: SubprocVecEnv's sub-env processes too. They
    leave it to the trainer, which saves, closes them and exits with 130 (they used to die of it, and the trainer's
    close then raised BrokenPipeError: exit 1). The trainer is held stopped while the signal reaches the group, so
    that the sub-envs surely handle it first (which comes first is up to the scheduler)."""
    proc = subprocess.Popen(
        [sys.executable, TRAIN, "--num-threads", "1", "--algo", "arsm", "--env", "CartPole-v1", "-n", "1000000",
         "--seed", "0", "--eval-freq", "-1", "--log-interval", "1", "--vec-env", "subproc", "--n-envs", "2",
         "-params", "n_steps:32", "policy_kwargs:dict(net_arch=[16])"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_default_sigint,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # wait for the first progress table: training is under way
        if "total_timesteps" in line or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGSTOP)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    time.sleep(2)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Continue with: -i" in err and "Traceback" not in err and "Error" not in err
    assert ARSM.load(tmp_path / "logs" / "arsm" / "CartPole-v1_1" / "CartPole-v1.zip").num_timesteps > 0
    deadline = time.monotonic() + 30
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group_members(proc.pid) == []


# ---------------------------------------------------------------------------------------------- bad input


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--algo", "dqnx"], ["unknown algo 'dqnx'", "arsm, rloo, all_action, a2c, ppo"]),
        (["--env", "NoSuchEnv-v0"], ["unknown env id 'NoSuchEnv-v0'"]),
        (["--env", "nosuchmodule:Foo-v0"], ["unknown env id"]),
        (["--env", "MountainCarContinuous-v0"], ["Box action space", "Discrete", "envs.discretize.DiscreteBins"]),
        (["-params", "n_steps=64"], ["malformed -params entry", "key:value"]),
        (["-params", "n_steps:[64"], ["malformed -params value"]),
        (["-params", "policy_kwargs:dict(net_arch=[64"], ["cannot evaluate policy_kwargs"]),
        (["-params", "learning_rate:lin_x"], ["malformed schedule"]),
        (["-params", "no_such_param:1"], ["takes no hyperparameter no_such_param"]),
        (["-params", "env_kwargs:dict(foo=1)"], ["cannot make CartPole-v1", "env_kwargs"]),
        (["--env", "FrozenLake-v1", "--env-kwargs", 'map_name:"9x9"'], ["FrozenLake-v1 with env_kwargs", "(KeyError: '9x9')"]),
        (["--env", "FrozenLake-v1", "--eval-env-kwargs", 'map_name:"9x9"'], ["(KeyError: '9x9'); check env_kwargs (--eval"]),
        (["--env", "LunarLander-v3", "--env-kwargs", "gravity:5.0"], ["make LunarLander-v3", "(AssertionError: gravity"]),
        (["-params", "estimator:nope"], ["cannot build arsm on CartPole-v1", "Unknown estimator"]),
        (["-params", "learning_rate:abc"], ["learning_rate:'abc' is not a valid learning_rate", "float"]),
        (["-params", "learning_rate:[1,2]"], ["learning_rate:[1, 2] is not a valid learning_rate"]),
        (["-params", "gamma:high"], ["gamma:'high' is not a valid gamma for arsm (expected float)"]),
        (["-n", "0"], ["-n/--n-timesteps: must be >= 1, got 0"]),
        (["-n", "-5"], ["-n/--n-timesteps: must be >= 1, got -5"]),
        (["--n-envs", "0"], ["--n-envs: must be >= 1"]),
        (["--seed", "-3"], ["--seed: must be >= -1"]),
        (["--log-interval", "0"], ["--log-interval must be >= 1, -1"]),
        (["-optimize", "--n-trials", "3"], ["hyperparameter search runs through RL Zoo", "python -m agents.zoo train"]),
        (["--n-trials", "3"], ["python -m agents.zoo train"]),
        (["--weights-only"], ["--weights-only needs -i"]),
        (["--rollout-workers", "-1"], ["--rollout-workers: must be >= 0"]),
        (["--rollout-backend", "nope"], ["argument --rollout-backend: invalid choice: 'nope' (choose from 'subproc', 'ray')"]),
        (["--algo", "ppo", "--rollout-workers", "2"], ["--rollout-workers is for the ARSM family"]),
        (["--env", "Blackjack-v1"], ["cannot train on Blackjack-v1", "Tuple observations", "FlattenObservation"]),
        (["--env", "MiniGrid-FourRooms-v0"], ["text part 'mission'", "ImgObsWrapper", "FlatObsWrapper"]),
        (["--algo", "ppo", "--env", "MiniGrid-FourRooms-v0"], ["cannot train on MiniGrid-FourRooms-v0"]),
        (["--env", "CliffWalking-v1", "--seed", "0"], ["CliffWalking-v1 has no time limit", "TimeLimit", "pseudo_horizon"]),
        (["--preset", "nope"], ["no preset 'CartPole-v1-nope'"]),
        (["-conf", "missing.yml"], ["preset file not found"]),
        (["--eval-only", "-i", "missing.zip"], ["model file not found: missing.zip"]),
        (["--eval-only"], ["needs -i"]),
        (["--no-such-flag"], ["unrecognized arguments"]),
    ],
)
def test_bad_input(args: list[str], fragments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = train.main(["-n", "64", "--eval-freq", "-1", *args])
    assert_one_line_error(code, capsys.readouterr().err, *fragments)
    assert not (tmp_path / "logs").exists()  # nothing was started


@pytest.mark.parametrize("kind", ["garbage", "foreign_zip", "truncated"])
def test_corrupt_model(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    path = tmp_path / "model.zip"
    if kind == "garbage":
        path.write_bytes(b"not a zip at all")
    elif kind == "foreign_zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
    else:
        model = ARSM("MlpPolicy", "CartPole-v1", n_steps=8, policy_kwargs={"net_arch": [4]})
        model.save(tmp_path / "good.zip")
        path.write_bytes((tmp_path / "good.zip").read_bytes()[:400])
    monkeypatch.chdir(tmp_path)
    code = train.main(["--eval-only", "-i", str(path)])
    assert_one_line_error(code, capsys.readouterr().err, "model.zip is not a Stable-Baselines3 model zip")


@pytest.mark.parametrize(
    ("saved", "asked"),
    [("ppo", "arsm"), ("arsm", "ppo"), ("a2c", "ppo"), ("ppo", "a2c"), ("maskable_ppo", "ppo"), ("ppo", "maskable_ppo")],
)
@pytest.mark.parametrize("mode", [["--eval-only"], ["-n", "64"]])
def test_model_of_another_algo(saved: str, asked: str, mode: list[str], tmp_path: Path, capsys, monkeypatch) -> None:
    """A zip says which --algo it belongs to (read from its JSON, nothing unpickled)."""
    ALGOS[saved]("MlpPolicy", "CartPole-v1", n_steps=8).save(tmp_path / "model.zip")
    monkeypatch.chdir(tmp_path)
    code = train.main(["--algo", asked, "-i", str(tmp_path / "model.zip"), "--eval-freq", "-1", *mode])
    assert_one_line_error(code, capsys.readouterr().err, f"model of --algo {saved}, not --algo {asked}: pass --algo {saved}")
    assert model_algo(tmp_path / "model.zip") == saved
    assert not (tmp_path / "logs").exists()


def test_bad_input_subprocess(tmp_path: Path) -> None:
    """The real process: exit status 2, one line on stderr, no traceback (here: an env that cannot be cloned)."""
    (tmp_path / "uncloneable_env.py").write_text(UNCLONEABLE_MODULE)
    result = run_train("--env", "uncloneable_env:Uncloneable-v0", "-n", "64", cwd=tmp_path, extra_path=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "cannot be cloned exactly", "check_cloneable")
    assert result.stdout == ""


def test_list(capsys: pytest.CaptureFixture) -> None:
    assert train.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("arsm: ") and "CartPole-v1" in out and "\nppo: " in out and "\na2c: " in out


def test_the_machinery_does_not_import_the_command_line() -> None:
    """agents/ holds the experiment machinery and train.py the command line on top of it: no module of agents/ imports
    train.py (no import cycle)."""
    for path in (ROOT / "agents").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert "train" not in imported, path


def test_settings_pieces(tmp_path: Path) -> None:
    """-params values, a preset's normalize setting, the evaluation interval and run folder numbering."""
    assert parse_overrides(["learning_rate:0.02", "estimator:rloo", "net_arch:[64, 64]", "max_pseudo_rollouts:None"]) == {
        "learning_rate": 0.02, "estimator": "rloo", "net_arch": [64, 64], "max_pseudo_rollouts": None}  # fmt: skip
    assert normalize_kwargs("dict(norm_obs=True)", 0.98) == {"norm_obs": True, "gamma": 0.98}
    assert normalize_kwargs(True, None) == {} and normalize_kwargs(False, 0.99) is None
    assert eval_freq(train.parse_args([]), 10_000) == 500 and eval_freq(train.parse_args([]), 10**7) == 25_000
    assert eval_freq(train.parse_args(["--eval-freq", "-1"]), 10_000) == -1
    first, second = (next_run_dir(str(tmp_path), "arsm", "ALE/Pong-v5") for _ in range(2))
    assert (first.name, second.name) == ("ALE-Pong-v5_1", "ALE-Pong-v5_2") and second.parent == tmp_path / "arsm"


# ---------------------------------------------------------------------------------------------- presets


REQUIRED_ARSM = ["CartPole-v1", "Acrobot-v1", "LunarLander-v3", "MountainCar-v0", "FrozenLake-v1", "Taxi-v4"]


def test_presets_complete_and_valid() -> None:
    envs = preset_envs("arsm")
    assert set(REQUIRED_ARSM) <= set(envs)
    assert any(e.startswith("ALE/") or "NoFrameskip" in e for e in envs)
    assert "CartPole-v1-paper" in envs
    for algo in ("a2c", "ppo"):
        assert {"CartPole-v1", "Acrobot-v1", "LunarLander-v3", "MountainCar-v0"} <= set(preset_envs(algo))
    for algo in ("arsm", "a2c", "ppo"):
        for key in preset_envs(algo):
            _, raw = load_preset(algo, key) if not key.endswith("-paper") else load_preset(algo, key[:-6], variant="paper")
            settings, hyper = split_preset(algo, raw)  # raises on keys the constructor does not take
            kwargs = build_kwargs(hyper)
            check_types(algo, kwargs)  # raises on values of the wrong type
            assert isinstance(kwargs.get("policy_kwargs", {}), dict)
            assert float(settings.get("n_timesteps", 1)) > 0


def test_paper_preset() -> None:
    key, raw = load_preset("arsm", "CartPole-v1", variant="paper")
    assert key == "CartPole-v1-paper"
    _, hyper = split_preset("arsm", raw)
    kwargs = build_kwargs(hyper)
    assert kwargs["learning_rate"] == 0.03 and kwargs["max_pseudo_rollouts"] == 16 and kwargs["gamma"] == 0.99
    assert kwargs["policy_kwargs"]["net_arch"] == [10, 10]
    assert kwargs["policy_kwargs"]["activation_fn"].__name__ == "ReLU"


@pytest.mark.parametrize("algo", ["rloo", "all_action"])
def test_project_env_and_arsm_peers(algo: str, tmp_path: Path, monkeypatch) -> None:
    """The project's own env ids work (here with the ``default`` preset), and so do the ARSM peers."""
    monkeypatch.chdir(tmp_path)
    args = ["--algo", algo, "--env", "arsm/RandomMDP-v0", "-n", "64", "--seed", "0", "--eval-freq", "-1", "--verbose", "0"]
    assert train.main([*args, "-params", "n_steps:32"]) == 0
    run = tmp_path / "logs" / algo / "arsm-RandomMDP-v0_1"
    config = yaml.safe_load((run / "config.yml").read_text())
    assert config["preset"] == "default" and config["hyperparams"]["estimator"] == algo
    assert ARSM.load(run / "arsm-RandomMDP-v0.zip").estimator == algo


def test_arsm_family_saves_as_arsm(tmp_path: Path) -> None:
    for name in ARSM_FAMILY - {"arsm"}:
        model = ALGOS[name]("MlpPolicy", "CartPole-v1", n_steps=8, policy_kwargs={"net_arch": [4]})
        assert model.estimator == name
        model.save(tmp_path / name)
        assert ARSM.load(tmp_path / f"{name}.zip").estimator == name


# ---------------------------------------------------------------------------------------------- plots and the Zoo


def test_plot(arsm_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    plot = str(ROOT / "benchmarks" / "plot.py")
    result = subprocess.run([sys.executable, plot, str(arsm_run / "logs" / "arsm"), "--out", str(out)],
                            capture_output=True, text=True, env=_env(), timeout=300)  # fmt: skip
    assert_ok(result)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out_tb = tmp_path / "curves_tb.png"
    result = subprocess.run([sys.executable, plot, str(arsm_run / "tb"), "--x", "env-steps", "--out", str(out_tb)],
                            capture_output=True, text=True, env=_env(), timeout=300)  # fmt: skip
    assert_ok(result)
    assert out_tb.stat().st_size > 1000


@pytest.mark.skipif(importlib.util.find_spec("rl_zoo3") is None, reason="rl_zoo3 not installed (pip install -e '.[zoo]')")
def test_rl_zoo_launcher(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agents.zoo", "train", "--algo", "arsm", "--env", "CartPole-v1", "-n", "128",
         "--eval-freq", "-1", "--seed", "0", "-f", str(tmp_path), "-params", "n_steps:64", "--num-threads", "1"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert_ok(result)
    run = tmp_path / "arsm" / "CartPole-v1_1"
    assert (run / "CartPole-v1.zip").is_file()
    assert ARSM.load(run / "CartPole-v1.zip").n_steps == 64
    zoo = [sys.executable, "-m", "agents.zoo"]
    common = ["--algo", "arsm", "--env", "CartPole-v1", "-f", str(tmp_path)]
    enjoy = subprocess.run([*zoo, "enjoy", *common, "--no-render", "-n", "50"], cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert_ok(enjoy)
    video = subprocess.run([*zoo, "record_video", *common, "-n", "20", "-o", str(tmp_path / "videos")], cwd=ROOT,
                           env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert_ok(video)
    assert list((tmp_path / "videos").glob("*.mp4"))


@pytest.mark.skipif(importlib.util.find_spec("rl_zoo3") is None, reason="rl_zoo3 not installed (pip install -e '.[zoo]')")
def test_rl_zoo_launcher_with_subproc_workers(tmp_path: Path) -> None:
    """rl_zoo3 patches TimeLimit in the trainer only: the workers' envs must be built with the same class."""
    result = subprocess.run(
        [sys.executable, "-m", "agents.zoo", "train", "--algo", "arsm", "--env", "CartPole-v1", "-n", "256",
         "--vec-env", "subproc", "--eval-freq", "-1", "--seed", "0", "-f", str(tmp_path), "-params", "n_steps:64",
         "n_envs:2", "--num-threads", "1"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert_ok(result)
    assert "pseudo_rollouts" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="optuna not installed (pip install -e '.[zoo]')")
def test_optuna_sampler_gives_valid_arsm_hyperparameters() -> None:
    """agents/zoo.py's Optuna search space: a fixed trial maps to the documented constructor arguments, and every
    trial of a (seeded) study builds an ARSM with them; the converter turns the stored raw parameters back into them."""
    import optuna
    from torch import nn

    from agents.zoo import convert_arsm_params, sample_arsm_params

    raw = {"net_arch": "medium", "activation_fn": "relu", "max_pseudo_rollouts": 0, "learning_rate": 0.02,
           "n_steps": 128, "one_minus_gamma": 0.01, "ent_coef": 1e-4}  # fmt: skip
    params = sample_arsm_params(optuna.trial.FixedTrial(raw), n_actions=2, n_envs=1, additional_args={})
    assert params == {
        "learning_rate": 0.02, "n_steps": 128, "gamma": pytest.approx(0.99), "ent_coef": 1e-4,
        "max_pseudo_rollouts": None, "policy_kwargs": {"net_arch": [128, 128], "activation_fn": nn.ReLU},
    }  # fmt: skip
    budget = sample_arsm_params(optuna.trial.FixedTrial({**raw, "max_pseudo_rollouts": 16}), 2, 1, {})
    assert budget["max_pseudo_rollouts"] == 16

    built: list[tuple[dict, ARSM]] = []

    def objective(trial: optuna.Trial) -> float:
        sampled = sample_arsm_params(trial, n_actions=2, n_envs=1, additional_args={})
        built.append((sampled, ARSM("MlpPolicy", "CartPole-v1", **sampled)))
        assert convert_arsm_params(trial.params) == sampled
        return 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=6)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 6
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 6  # the space is sampled, not fixed
    for sampled, model in built:
        assert model.n_steps == sampled["n_steps"] in (64, 128, 256, 512)
        assert 0.95 <= model.gamma <= 0.999 and 1e-8 <= model.ent_coef <= 0.05
        assert model.learning_rate == sampled["learning_rate"] and 1e-3 <= model.learning_rate <= 0.1
        assert model.max_pseudo_rollouts in (None, 16, 64, 256)
        hidden = [m.out_features for m in model.policy.modules() if isinstance(m, nn.Linear)][:-1]
        assert hidden in ([64, 64], [128, 128])
        assert any(isinstance(m, sampled["policy_kwargs"]["activation_fn"]) for m in model.policy.modules())


# ---------------------------------------------------------------------------------------------- issue 12


def test_weights_only_does_not_run_a_pickled_payload(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    """Loading a zip unpickles its data (it can run code); --weights-only reads only the weights."""
    import base64
    import json
    import pickle

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (tmp_path / "marker",))

    ARSM("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": [16]}).save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(files["data"])
    data["policy_class"][":serialized:"] = base64.b64encode(pickle.dumps(Payload())).decode()
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(tmp_path / "crafted.zip", "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    monkeypatch.chdir(tmp_path)
    evaluate = ["--algo", "arsm", "--eval-only", "-i", "crafted.zip", "--eval-episodes", "1", "--seed", "0"]
    assert train.main([*evaluate, "--weights-only", "-params", "policy_kwargs:dict(net_arch=[16])"]) == 0
    assert "over 1 episodes" in capsys.readouterr().out
    assert not (tmp_path / "marker").exists()
    assert train.main([*evaluate, "--weights-only"]) == 2  # the preset's 64-64 network: the weights do not fit
    assert "do not fit the preset's network" in capsys.readouterr().err
    train.main(evaluate)  # SB3's load: the payload runs (why the docs say to load only files you trust)
    assert (tmp_path / "marker").exists()


def test_summary_line_and_table_interval(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["-n", "1280", "--seed", "0", "--eval-freq", "-1", "--eval-episodes", "2", "-params", "n_steps:32",
            "policy_kwargs:dict(net_arch=[16])"]  # fmt: skip
    assert train.main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("| time/") for line in out) == 20  # 40 updates, a table every second one
    assert out[-1].startswith("arsm CartPole-v1 seed 0; final evaluation ")
    assert "over 2 episodes; 1,280 real steps + " in out[-1] and " pseudo steps; " in out[-1]
    assert out[-1].endswith("; model logs/arsm/CartPole-v1_1/CartPole-v1.zip")


def test_rl_zoo_flags(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    """--env-kwargs, --eval-env-kwargs, --n-eval-envs, -uuid and --log-interval -2 (no tables), as in RL Zoo."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    args = ["-n", "128", "--seed", "0", "--eval-freq", "64", "--eval-episodes", "2", "--n-eval-envs", "2", "-uuid",
            "--log-interval", "-2", "--env-kwargs", "sutton_barto_reward:True", "--eval-env-kwargs",
            "sutton_barto_reward:False", "-params", *TINY_ARSM]  # fmt: skip
    assert train.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("| time/") == out.count("| eval/") == 2  # tables only at the two evaluations (as in RL Zoo)
    (run,) = (tmp_path / "logs" / "arsm").iterdir()
    assert run.name.startswith("CartPole-v1_1_") and len(run.name) == len("CartPole-v1_1_") + 36
    assert yaml.safe_load((run / "config.yml").read_text())["env_kwargs"] == {"sutton_barto_reward": True}
    returns = [float(line.split(",")[0]) for line in (run / "0.monitor.csv").read_text().splitlines()[2:]]
    assert returns and max(returns) <= 0  # Sutton and Barto's rewards: 0 per step, -1 at the end
    assert np.load(run / "evaluations.npz")["results"].min() > 0  # the evaluation env keeps the usual +1 per step


@pytest.mark.parametrize("algo", ["arsm", "ppo"])
def test_minigrid_preset(algo: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    extra = ["-params", "n_steps:16"] if algo == "arsm" else []
    assert train.main(["--algo", algo, "--env", "MiniGrid-Empty-5x5-v0", "-n", "32", "--seed", "0", "--eval-freq", "-1",
                       "--eval-episodes", "1", "--verbose", "0", *extra]) == 0  # fmt: skip
    assert (tmp_path / "logs" / algo / "MiniGrid-Empty-5x5-v0_1" / "MiniGrid-Empty-5x5-v0.zip").is_file()


GLOBAL_RANDOM_MODULE = '''
import random

import gymnasium as gym
import numpy as np


class GlobalRandomWalk(gym.Env):
    """Rewards from Python's global random: no snapshot can capture them."""

    observation_space = gym.spaces.Box(-100, 100, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.x += 2 * int(action) - 1
        return np.array([self.x], np.float32), random.random(), False, False, {}


gym.register("GlobalRandomWalk-v0", entry_point=GlobalRandomWalk, max_episode_steps=20)
'''


def test_inexact_clones_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    (tmp_path / "global_random_env.py").write_text(GLOBAL_RANDOM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code = train.main(["--env", "global_random_env:GlobalRandomWalk-v0", "-n", "64", "--eval-freq", "-1"])
    assert_one_line_error(code, capsys.readouterr().err, "cannot be cloned exactly",
                          "not exact: the env draws from Python's random", "register_cloneable")  # fmt: skip
    assert not (tmp_path / "logs").exists()
    # the critic clones nothing: the same env trains with it
    code = train.main(["--env", "global_random_env:GlobalRandomWalk-v0", "-n", "64", "--eval-freq", "-1",
                       "-params", "action_values:'critic'", "n_steps:32"])  # fmt: skip
    assert code == 0 and any((tmp_path / "logs").rglob("*.zip"))


def test_progress_bar_by_default_on_a_terminal(monkeypatch) -> None:
    args = train.parse_args([])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(args)
    assert not show_progress(train.parse_args(["--verbose", "0"]))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not show_progress(args) and show_progress(train.parse_args(["-P"]))


def test_masked_env_trains_and_evaluates_with_masks(tmp_path: Path) -> None:
    """A masked RandomMDP raises on a masked action: training with evaluations (MaskableEvalCallback), the final
    evaluation and --eval-only all pass the masks."""
    env_args = ("--env", "arsm/RandomMDP-v0", "--env-kwargs", "n_states:4", "n_actions:6", "n_masked:3")
    result = run_train("--algo", "arsm", *env_args, "-n", "128", "--seed", "0", "--eval-freq", "64", "--eval-episodes", "2",
                       "-params", *TINY_ARSM, cwd=tmp_path)  # fmt: skip
    assert_ok(result)
    run = tmp_path / "logs" / "arsm" / "arsm-RandomMDP-v0_1"
    assert (run / "evaluations.npz").is_file()
    model = next(run.glob("*.zip"))
    result = run_train("--algo", "arsm", *env_args, "--eval-only", "-i", str(model), "--eval-episodes", "3", cwd=tmp_path)
    assert_ok(result)
    assert "over 3 episodes" in result.stdout


# ---------------------------------------------------------------------------------------------- evaluation, help

THRESHOLD_ENVS_MODULE = """
import gymnasium as gym

# CartPole with a reward threshold any episode reaches (each lasts at least 8 steps), and without one
gym.register("LowBarCartPole-v0", entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv",
             max_episode_steps=500, reward_threshold=5.0)
gym.register("NoBarCartPole-v0", entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv", max_episode_steps=500)
"""


def test_training_stops_at_the_reward_threshold(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    """By default the periodic evaluation (about 20 per run) stops training once its mean reaches the env's
    spec.reward_threshold, and the summary line says so; --no-stop-at-threshold and envs without a threshold train
    the whole budget."""
    import numpy as np

    (tmp_path / "threshold_envs.py").write_text(THRESHOLD_ENVS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    common = ["-n", "1280", "--seed", "0", "--eval-episodes", "2", "-params", *TINY_ARSM]
    assert train.main(["--env", "threshold_envs:LowBarCartPole-v0", *common]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "; 64 real steps; stopped at the reward threshold 5 (evaluation " in summary, summary
    run = tmp_path / "logs" / "arsm" / "threshold_envs-LowBarCartPole-v0_1"
    assert ARSM.load(run / "threshold_envs-LowBarCartPole-v0.zip").num_timesteps == 64  # the first evaluation: 1280/20
    assert np.load(run / "evaluations.npz")["timesteps"].tolist() == [64]

    for env_id, flags, run_name in (("LowBarCartPole-v0", ["--no-stop-at-threshold"], "LowBarCartPole-v0_2"),
                                    ("NoBarCartPole-v0", [], "NoBarCartPole-v0_1")):  # fmt: skip
        assert train.main(["--env", f"threshold_envs:{env_id}", *common, "-n", "256", *flags]) == 0
        summary = capsys.readouterr().out.strip().splitlines()[-1]
        assert "; 256 real steps + " in summary and "stopped" not in summary, summary
        evaluations = np.load(tmp_path / "logs" / "arsm" / f"threshold_envs-{run_name}" / "evaluations.npz")
        assert evaluations["timesteps"].tolist() == list(range(12, 257, 12))  # every 256 // 20 steps


@pytest.mark.parametrize("vec_env", ["subproc", "fork"])
def test_eval_env_has_the_training_env_class(vec_env: str, tmp_path: Path) -> None:
    """The periodic evaluation env is built as the training env (as RL Zoo does): SB3's EvalCallback has no reason to
    warn that they are not of the same type."""
    result = run_train("--algo", "arsm", "--env", "CartPole-v1", "-n", "128", "--seed", "0", "--vec-env", vec_env,
                       "--eval-freq", "64", "--eval-episodes", "2", "-params", *TINY_ARSM, cwd=tmp_path)  # fmt: skip
    assert_ok(result)
    assert "not of the same type" not in result.stderr, result.stderr
    assert "Eval num_timesteps=128" in result.stdout


def test_help_shows_each_default_once(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = capsys.readouterr().out
    options = re.split(r"\n  (?=-)", out.split("options:", 1)[1])
    assert len(options) > 30
    for option in options:
        text = " ".join(option.split())
        assert text.count("default:") <= 1, text
        for empty in ("(default: None)", "(default: [])", "(default: )", "(default: False)"):
            assert empty not in text
    text = " ".join(out.split())
    assert "--algo ALGO algorithm: arsm" in text and "(default: arsm)" in text and "(default: 5)" in text
    assert "real env steps (default: the preset's) -" in text  # said by the help text, not repeated by argparse
