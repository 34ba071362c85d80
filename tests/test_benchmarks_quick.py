"""The benchmarks' ``--quick`` modes run end to end and write sensible numbers (so the scripts cannot rot)."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch as th

ROOT = Path(__file__).resolve().parents[1]
NUMERIC = ("sim_steps", "total_variance", "noise_to_signal", "cosine_mean", "cosine_of_mean", "grad_norm_mean")
#: What a benchmark run must leave alone: the committed results and the documents that show them.
COMMITTED = ("benchmarks/results", "benchmarks/README.md", "docs")


def committed_state() -> tuple[str, dict[str, tuple[int, int]]]:
    """git's status of :data:`COMMITTED`, and the size and modification time of each of its files (so that a rewrite
    of a file someone has already modified, or of an ignored one such as a lock, is caught too)."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", *COMMITTED],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    files = [path for name in COMMITTED for path in [ROOT / name, *(ROOT / name).rglob("*")] if path.is_file()]
    return status, {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in files}


def run_quick(script: str, *args: str, tmp_path: Path, timeout: float) -> tuple[Path, str]:
    """Run ``benchmarks/<script> --quick *args`` as a user would, without ``--out``, from the repository root: it must
    leave every committed file alone and write into the fresh folder that it prints (made in TMPDIR, here
    ``tmp_path``). Return that folder and the standard output."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from outputs import QUICK_FOLDER

    before = committed_state()
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert committed_state() == before, f"{script} --quick wrote into {', '.join(COMMITTED)}"
    (folder,) = [Path(line.removeprefix(QUICK_FOLDER)) for line in result.stdout.splitlines() if line.startswith(QUICK_FOLDER)]
    assert folder.parent == tmp_path and folder.is_dir(), folder
    return folder, result.stdout


def test_gradient_quality_quick(tmp_path: Path) -> None:
    out, _ = run_quick("gradient_quality.py", tmp_path=tmp_path, timeout=120)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gradient_quality

    estimators = set(gradient_quality.ESTIMATORS)  # the registered ones it measures, and A2C's
    with open(out / "gradient_quality.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    snapshots = {row["snapshot_steps"] for row in rows}
    assert snapshots == {"0", "256"}
    for snapshot in snapshots:
        for setting in ("natural", "matched"):
            found = {r["estimator"] for r in rows if r["snapshot_steps"] == snapshot and r["setting"] == setting}
            assert found == estimators, (snapshot, setting, found)
        assert [r["estimator"] for r in rows if r["snapshot_steps"] == snapshot and r["setting"] == "reference"] == [
            "all_action"
        ]
    assert len(rows) == 2 * (1 + 2 * len(estimators))
    reference = {r["snapshot_steps"]: r for r in rows if r["setting"] == "reference"}
    for row in rows:
        for key in NUMERIC:
            assert math.isfinite(float(row[key])), (row["estimator"], key, row[key])
        assert float(row["sim_steps"]) >= float(row["real_steps"]) > 0
        if row["snapshot_steps"] == "0":  # near-uniform policy: every estimate points along the reference
            assert float(row["cosine_mean"]) > 0.3, (row["setting"], row["estimator"], row["cosine_mean"])
        if row["setting"] == "reference":
            assert row["projection_se_total"] == row["projection_z"] == ""  # no bias check of the reference itself
            continue
        # The bias check adds the reference's own error (its row's projection_se) to the draws'.
        total = math.hypot(float(row["projection_se"]), float(reference[row["snapshot_steps"]]["projection_se"]))
        assert float(row["projection_se_total"]) == pytest.approx(total)
        assert float(row["projection_z"]) == pytest.approx((float(row["projection_mean"]) - 1.0) / total)
    assert {r["repeats"] for r in rows if r["estimator"] == "arsm"} == {"4"}  # QUICK.arsm_repeats
    assert (out / "gradient_quality.png").stat().st_size > 0
    assert "ARSM" in (out / "gradient_quality.md").read_text()
    # The README's condensed tables are what the CSV says.
    summary = (out / "gradient_quality_summary.md").read_text()
    assert summary == gradient_quality.summary_markdown(gradient_quality.read_csv(out / "gradient_quality.csv"))


def test_rl_benchmark_quick(tmp_path: Path) -> None:
    """benchmarks/rl.py --quick, as a user runs it (no --algos, no --out): every algorithm that applies to CartPole
    (not MaskablePPO: no action masks) built from its preset, evaluated, its simulator steps accounted, into a fresh
    folder and not into the committed results."""
    out, stdout = run_quick("rl.py", tmp_path=tmp_path, timeout=300)
    assert "left out maskable_ppo: maskable_ppo needs an env with action masks" in stdout
    with open(out / "rl_CartPole-v1.csv", newline="") as file:
        rows = {row["algo"]: row for row in csv.DictReader(file)}
    with open(out / "rl_CartPole-v1_curves.csv", newline="") as file:
        curves = list(csv.DictReader(file))
    assert list(rows) == ["arsm", "arsm-paper", "rloo", "all_action", "arsm-critic", "all_action-critic", "arsm-bootstrap",
                          "all_action-bootstrap", "a2c", "ppo"]  # fmt: skip
    for algo, row in rows.items():
        evaluations = [float(c["eval_mean"]) for c in curves if c["algo"] == algo]
        assert len(evaluations) >= 2, algo
        assert 0 < int(row["real_steps"]) <= 2_000 + 256  # stops at an evaluation, never long past the budget
        assert int(row["episodes"]) > 0 and float(row["final_eval"]) == evaluations[-1]
        # Solved means an evaluation reached the threshold, and the run stopped at the first that did.
        assert (row["solved"] == "True") == (max(evaluations) >= 475) == (evaluations[-1] >= 475), (algo, evaluations)
        assert all(e < 475 for e in evaluations[:-1]), (algo, evaluations)
        if algo in ("a2c", "ppo", "arsm-critic", "all_action-critic"):  # no rollouts: the critic values the actions
            assert int(row["simulator_steps"]) == int(row["real_steps"]), algo
        else:  # pseudo rollouts counted
            assert int(row["simulator_steps"]) > int(row["real_steps"]), algo
        # the gradient's log-variance is recorded at every evaluation (after the first update)
        assert all(np.isfinite(float(c["grad_log_variance"])) for c in curves if c["algo"] == algo), algo
    assert (out / "rl_CartPole-v1.png").stat().st_size > 0
    # ARSM's train/no_signal_share, averaged over the updates between evaluations; no such key for PPO.
    assert all(0 <= float(c["no_signal_share"]) < 1 for c in curves if c["algo"] == "arsm")
    assert all(c["no_signal_share"] == "nan" for c in curves if c["algo"] == "ppo")

    # A second invocation merges: it replaces the rows of its own (algo, seed) and keeps the others.
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rl.py"), "--quick", "--algos", "ppo", "--eval-freq", "400",
         "--out", str(out)],
        check=True,
        cwd=ROOT,
        timeout=300,
    )  # fmt: skip
    with open(out / "rl_CartPole-v1.csv", newline="") as file:
        merged = {row["algo"]: row for row in csv.DictReader(file)}
    assert list(merged) == list(rows)
    assert {algo: row for algo, row in merged.items() if algo != "ppo"} == {a: r for a, r in rows.items() if a != "ppo"}
    assert merged["ppo"]["command"].endswith("--eval-freq 400 --out " + str(out))
    with open(out / "rl_CartPole-v1_curves.csv", newline="") as file:
        ppo_evals = [r["real_steps"] for r in csv.DictReader(file) if r["algo"] == "ppo"]
    assert ppo_evals[:2] == ["400", "800"]  # the new run's evaluation points, not the old ones
    summary = (out / "rl_CartPole-v1.md").read_text()
    assert summary.count("- `python benchmarks/rl.py --quick") == 2

    # --plot-only redraws the figure from the stored curves and runs (and rewrites) nothing else.
    (out / "rl_CartPole-v1.png").unlink()
    stored = {name: (out / name).read_text() for name in ("rl_CartPole-v1.csv", "rl_CartPole-v1_curves.csv")}
    plot_only = [sys.executable, str(ROOT / "benchmarks" / "rl.py"), "--plot-only", "--out"]
    subprocess.run([*plot_only, str(out)], check=True, cwd=ROOT, timeout=120)
    assert (out / "rl_CartPole-v1.png").stat().st_size > 0
    assert stored == {name: (out / name).read_text() for name in stored}
    empty = subprocess.run([*plot_only, str(out / "none")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and "no curves in" in empty.stderr.strip().splitlines()[-1]


def test_rl_hyperparams_name_the_rows(tmp_path: Path) -> None:
    """--hyperparams overrides every algo's preset and names its rows, so an ablation never replaces a preset's row."""
    command = [sys.executable, str(ROOT / "benchmarks" / "rl.py"), "--quick", "--algos", "arsm", "--max-steps", "512",
               "--eval-freq", "256", "--eval-episodes", "1", "--out", str(tmp_path)]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, timeout=300)
    subprocess.run([*command, "--hyperparams", "n_steps:128", "pseudo_horizon:5"], check=True, cwd=ROOT, timeout=300)
    with open(tmp_path / "rl_CartPole-v1.csv", newline="") as file:
        rows = {row["algo"]: row for row in csv.DictReader(file)}
    assert set(rows) == {"arsm", "arsm n_steps=128 pseudo_horizon=5"}
    # Rollouts cut at 5 steps spend fewer simulator steps than the preset's full-length ones.
    assert int(rows["arsm n_steps=128 pseudo_horizon=5"]["simulator_steps"]) < int(rows["arsm"]["simulator_steps"])
    bad = subprocess.run([*command, "--hyperparams", "gamma"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "malformed --hyperparams entry 'gamma'" in bad.stderr.strip().splitlines()[-1]


def test_side_by_side_reads_the_first_evaluation_at_each_level(tmp_path: Path) -> None:
    """benchmarks/side_by_side.py: per level, each run's first evaluation at or above it, and the wall-time ratio."""
    fields = ["algo", "seed", "real_steps", "simulator_steps", "episodes", "eval_mean", "wall_s"]
    points = [("arsm", 0, 1000, 9000, 5, -50.0, 4.0), ("arsm", 0, 2000, 20000, 9, 30.0, 10.0),
              ("ppo", 0, 5000, 5000, 20, 10.0, 2.0), ("ppo", 0, 9000, 9000, 40, 60.0, 4.0)]  # fmt: skip
    for folder, algo in (("a", "arsm"), ("b", "ppo")):
        (tmp_path / folder).mkdir()
        with open(tmp_path / folder / "rl_LunarLander-v3_curves.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(fields)
            writer.writerows(p for p in points if p[0] == algo)
    out = tmp_path / "table.md"
    command = [sys.executable, str(ROOT / "benchmarks" / "side_by_side.py"), "--env", "LunarLander-v3",
               "--run", f"arsm:0:{tmp_path / 'a'}", "--run", f"ppo:0:{tmp_path / 'b'}",
               "--levels", "0,50", "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 0 |") or line.startswith("| 50 |")]
    assert rows == [
        "| 0 | 2,000 real, 20,000 sim, 10.0 s | 5,000 real, 5,000 sim, 2.0 s | 5.00x |",
        "| 50 | not reached | 9,000 real, 9,000 sim, 4.0 s |  |",
    ]
    bad = subprocess.run([*command[:-4], "--levels", "zero", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("e.g. -100,0,100")


def test_gradient_variance_matches_its_definition() -> None:
    """rl.py's log-variance: EMAs (weight 0.01) of g and g² over backward passes, of the policy's parameters only."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import rl

    policy = th.nn.ModuleDict({"pi": th.nn.Linear(3, 1, bias=False), "value_net": th.nn.Linear(3, 1)})
    tracker = rl.GradientVariance(policy)
    assert np.isnan(tracker.log_variance)
    x1, x2 = th.tensor([1.0, 2.0, -1.0]), th.tensor([0.5, -1.0, 3.0])
    for x in (x1, x2):  # d(w . x)/dw = x; the value net's gradient must not enter
        (policy["pi"](x).sum() + 100.0 * policy["value_net"](x).sum()).backward()
    mean, square = 0.99 * x1 + 0.01 * x2, 0.99 * x1**2 + 0.01 * x2**2
    assert tracker.log_variance == pytest.approx(th.log(square - mean**2 + 1e-20).mean().item(), rel=1e-5)
    assert tracker.log_variance == pytest.approx(np.log(0.0099 * (x1 - x2).numpy() ** 2).mean(), rel=1e-4)


def test_rl_benchmark_rejects_unknown_algo() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rl.py"), "--algos", "arsm,sac"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown algos sac; choose from arsm," in result.stderr.strip().splitlines()[-1]


#: Every table of results in the documents, and a cell of it (a stale copy of it must be caught).
INCLUDED = {
    "benchmarks/README.md": {
        "results/summary.md": "| ARSM real steps | 5,000 (5/5 solved) | 5,000 (5/5 solved) |",
        "results/toy.md": "| ARSM | 0.5327 |",
        "results/clone_cost.md": "| 500 | 8,372 | 4,272 |",
        "results/fork_training.md": "| 20,000 | 3.8 | 22.8 |",
        "results/fork_training_step.md": "| 40,000 | 14.9 | 17.9 |",
        "results/headless.md": "| 12,000 | 4.4 | 2.0 | 0.45 |",
        "results/rl_CartPole-v1.md": "| arsm | 5/5 |",
        "results/rl_Acrobot-v1.md": "| arsm | 5/5 |",
        "results/rl_LunarLander-v3.md": "| arsm | 3/3 |",
        "results/throughput.md": "| CartPole-v1 | 64 |",
        "results/throughput_workers.md": "| LunarLander-v3 | 128 | 2 | subproc |",
        "results/scaling.md": "| 1 | 9.1 | 1.27x |",
        "results/gradient_quality_summary.md": "| ARSM | ",
        "results/mask_form.md": "| valid subset, C = 4 |",
        "results/many_actions_variance.md": "| 32 | 0 | arsm |",
        "results/many_actions_learning.md": "| 32 | 16 | maskable_ppo |",
        "results/rl_arsm-MaskedTaxi-v0.md": "| maskable_ppo | 3/3 |",
        "results/rl_MiniGrid-Empty-5x5-v0.md": "| rloo | 1/3 |",
        "results/ablations/rl_LunarLander-v3.md": "| arsm pseudo_horizon=300 | 0/3 |",
        "results/ablations/rl_Acrobot-v1.md": "| arsm-paper share_noise=True | 0/5 |",
        "results/side_by_side/LunarLander-v3.md": "| 200 | 75,000 real",
        "results/side_by_side/LunarLander-v3_seed1.md": "| 200 | 125,000 real, 7,548,225 sim, 404.1 s |",
        "results/side_by_side/LunarLander-v3_seed2.md": "| 200 | 105,000 real, 5,861,995 sim, 365.0 s |",
    },
    "docs/arsm.md": {"../benchmarks/results/rl_CartPole-v1.md": "| arsm | 5/5 |"},
}


@pytest.mark.parametrize("document", sorted(INCLUDED))
def test_document_tables_match_results(document: str) -> None:
    """Every table of results in a document equals its results file (python benchmarks/sync_readme.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sync_readme import DOCUMENTS, sync

    path = ROOT / document
    assert path in DOCUMENTS
    text = path.read_text()
    assert text.count("<!-- include ") == len(INCLUDED[document])
    assert sync(text, path.parent) == (text, [])
    for results, cell in INCLUDED[document].items():
        assert text.count(cell) >= 1, (results, cell)
        block = text.index(f"<!-- include {results} -->")
        stale = text[:block] + text[block:].replace(cell, cell.replace("|", "| x", 2), 1)
        assert sync(stale, path.parent) == (text, [results]), results


def test_summaries_are_computed_from_the_results() -> None:
    """results/summary.md and results/gradient_quality_summary.md are what their scripts compute from the CSVs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gradient_quality
    import summary

    results = ROOT / "benchmarks" / "results"
    assert (results / "summary.md").read_text() == summary.markdown(results)
    rows = gradient_quality.read_csv(results / "gradient_quality.csv")
    assert (results / "gradient_quality_summary.md").read_text() == gradient_quality.summary_markdown(rows)


def test_summary_marks_ratios_against_unsolved_baselines_as_bounds(tmp_path: Path) -> None:
    """A baseline that leaves a seed unsolved counts it at its budget, so its ratio to ARSM is only a bound (>=
    for its real steps, <= for ARSM's simulator steps over PPO's) and stays out of the sentence's exact span."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import summary

    fields = ["env", "algo", "seed", "solved", "real_steps", "episodes", "simulator_steps", "wall_s", "final_eval",
              "command"]  # fmt: skip
    # (algo, solved on seed 0, seed 1; real steps; simulator steps per real step): ARSM at 1,000 real steps on every env.
    plans = {"arsm": (True, True, 1_000, 10), "ppo": (True, True, 4_000, 1), "a2c": (True, True, 3_000, 1),
             "rloo": (True, False, 2_000, 5), "all_action": (False, False, 9_000, 5)}  # fmt: skip
    for env_id in summary.ENVS:
        with open(tmp_path / f"rl_{env_id}.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(fields)
            for algo, (first, second, real, per_step) in plans.items():
                if env_id == "LunarLander-v3" and algo == "ppo":  # unsolved seed 1 at its 16,000 budget
                    first, second = True, False
                for seed, solved in enumerate((first, second)):
                    steps = real if solved or algo != "ppo" else 16_000
                    writer.writerow([env_id, algo, seed, solved, steps, 10, steps * per_step, 1.0, 0.0, "c"])
        (tmp_path / f"rl_{env_id}_curves.csv").write_text("algo,seed,real_steps,simulator_steps,eval_mean\n")
    text = summary.markdown(tmp_path)
    assert "| PPO real steps | 4,000 (2/2): 4.0x ARSM's | 4,000 (2/2): 4.0x ARSM's | 10,000 (1/2): >= 10.0x ARSM's |" in text
    assert "| ARSM simulator steps | 10,000: 2.5x PPO's | 10,000: 2.5x PPO's | 10,000: <= 1.0x PPO's |" in text
    assert "ARSM needs 4.0x to 4.0x fewer real steps than PPO and 3.0x to 3.0x fewer than A2C" in text
    assert "where they do not (LunarLander-v3 PPO), the ratios are bounds" in text
    assert "Where ARSM does not reach" not in text
    # A peer that solves some seed is compared by steps; one that solves none by its return at its budget.
    assert "| RLOO, same budget | 2,000 (1/2), 10,000 sim |" in text
    assert "| all-action, same budget | +0 (+0 to +0) at 9,000 (0/2), 45,000 sim |" in text


def test_pseudo_stats_counts_replayed_restores(tmp_path: Path) -> None:
    """pseudo_stats.py reads each update's statistics back; on LunarLander a part of the pseudo steps is replay."""
    out, _ = run_quick("pseudo_stats.py", "--env", "LunarLander-v3", tmp_path=tmp_path, timeout=300)
    with open(out / "pseudo_stats_LunarLander-v3.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["real_steps"] for row in rows] == ["256"]  # an update's keys are dumped with the next iteration
    row = rows[0]
    assert 0 < float(row["pseudo_actions_per_step"]) <= 3  # four actions: at most three pseudo actions
    assert 0 < float(row["restore_to_real"]) < float(row["pseudo_to_real"])
    assert (out / "pseudo_stats_LunarLander-v3.png").stat().st_size > 0


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("rl.py", ["--env", "Foo-v0", "--algos", "ppo"], "rl.py: error: unknown env id 'Foo-v0'"),
        (
            "rl.py",
            ["--env", "MountainCarContinuous-v0", "--algos", "arsm"],
            "rl.py: error: MountainCarContinuous-v0 has a Box action space",
        ),
        ("rl.py", ["--env", "MountainCar-v0", "--algos", "arsm-paper"], "no preset 'MountainCar-v0-paper'"),
        (
            "rl.py",
            ["--quick", "--algos", "maskable_ppo"],
            "rl.py: error: maskable_ppo needs an env with action masks (action_masks()) and CartPole-v1 has none; drop it",
        ),
        ("rl.py", ["--quick", "--out", "benchmarks/results"], "rl.py: error: --quick never writes into benchmarks/results"),
        (
            "throughput.py",
            ["--quick", "--workers-out", "benchmarks/results/throughput_workers.md"],
            "throughput.py: error: --quick never writes into benchmarks/results",
        ),
        ("pseudo_stats.py", ["--env", "Foo-v0"], "pseudo_stats.py: error: unknown env id 'Foo-v0'"),
        ("sync_readme.py", ["--readme", "missing.md"], "sync_readme.py: error: no README at missing.md"),
    ],
)
def test_benchmarks_refuse_bad_input_in_one_line(script: str, args: list[str], message: str) -> None:
    """Bad input stops a benchmark before any run, with one usage line (exit 2), not a traceback."""
    before = committed_state()
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert committed_state() == before
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_sync_readme_names_a_missing_results_file(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- include results/rl_Nowhere-v0.md -->\n<!-- end include -->\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sync_readme.py"), "--readme", str(readme)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "an include block names results/rl_Nowhere-v0.md, which does not exist; run the benchmark that writes it, "
        "or remove the block"
    )


def test_rl_save_waits_for_the_lock(tmp_path: Path) -> None:
    """A save blocks while another invocation holds rl_<env>.lock, and then merges into what that one wrote."""
    import argparse
    import fcntl
    import threading

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import rl

    args = argparse.Namespace(env="CartPole-v1", threshold=475.0, out=tmp_path)
    row = {"env": "CartPole-v1", "algo": "ppo", "seed": 3, "solved": False, "real_steps": 100, "episodes": 2,
           "simulator_steps": 100, "wall_s": 1.0, "final_eval": 20.0, "command": "test"}  # fmt: skip
    curve = [{"algo": "ppo", "seed": 3, "real_steps": 100, "simulator_steps": 100, "episodes": 2, "eval_mean": 20.0}]
    rl.save({**row, "seed": 4}, [{**curve[0], "seed": 4}], args)
    table = tmp_path / "rl_CartPole-v1.csv"
    with open(tmp_path / "rl_CartPole-v1.lock", "w") as lock:  # another invocation, in the middle of its save
        fcntl.flock(lock, fcntl.LOCK_EX)
        saver = threading.Thread(target=rl.save, args=(row, curve, args))
        saver.start()
        saver.join(timeout=1.0)
        assert saver.is_alive()  # blocked by the lock
        with open(table, newline="") as file:
            assert [r["seed"] for r in csv.DictReader(file)] == ["4"]
    saver.join(timeout=60)  # closing the file released the lock
    assert not saver.is_alive()
    with open(table, newline="") as file:
        assert [r["seed"] for r in csv.DictReader(file)] == ["3", "4"]


def test_rl_quick_keeps_the_given_seeds(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rl.py"), "--quick", "--algos", "ppo", "--seeds", "2",
         "--max-steps", "512", "--eval-freq", "512", "--out", str(tmp_path)],
        check=True, cwd=ROOT, capture_output=True, timeout=300,
    )  # fmt: skip
    with open(tmp_path / "rl_CartPole-v1.csv", newline="") as file:
        assert [(r["algo"], r["seed"]) for r in csv.DictReader(file)] == [("ppo", "2")]


def test_throughput_quick(tmp_path: Path) -> None:
    """throughput.py times batched and one-at-a-time rollouts and splits an update's time, via the public API."""
    folder, _ = run_quick("throughput.py", tmp_path=tmp_path, timeout=120)
    out, workers = folder / "throughput.md", folder / "throughput_workers.md"
    # the worker table: the same rollouts with 0 and 1 workers (the script checks they spend the same steps)
    rows = [line.strip("| ").split(" | ") for line in workers.read_text().splitlines()[2:]]
    assert [(row[0], row[2], row[3]) for row in rows] == [("CartPole-v1", "0", "in process"), ("CartPole-v1", "1", "subproc")]
    assert rows[0][5] == "1.00x" and float(rows[1][4].replace(",", "")) > 0
    row = out.read_text().splitlines()[2].strip("| ").split(" | ")
    assert row[0] == "CartPole-v1" and int(row[1]) == 8  # the --quick rollout count
    batched, single = (float(cell.replace(",", "")) for cell in row[2:4])
    assert batched > 0 and single > 0 and row[4] == f"{batched / single:.1f}x"
    limit = float(row[5].replace(",", ""))
    assert limit > 0 and abs(int(row[6].rstrip("%")) - 100 * batched / limit) <= 1  # the table's cells are rounded
    shares = [int(cell.rstrip("%")) for cell in row[7:10]]
    assert all(0 <= share <= 100 for share in shares) and 98 <= sum(shares) <= 102  # the three parts, rounded
    assert int(row[10]) > 0 and int(row[11]) > 0 and int(row[13]) > 0  # µs per real step (ARSM, PPO), per iteration
    vectorised, envs = row[12].split(" (")
    assert int(vectorised) > 0 and envs == "8 envs)"  # ARSM with the sub-envs of RL Zoo's PPO preset for CartPole


def test_fork_training_quick(tmp_path: Path) -> None:
    folder, _ = run_quick("fork_training.py", tmp_path=tmp_path, timeout=300)
    text = (folder / "fork_training.md").read_text()
    assert "Parameters after training bit-identical: yes." in text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 2") or line.startswith("| 5")]
    assert [row[0].strip() for row in rows] == ["256", "512"]
    assert all(row[5].strip().endswith("(0)") and not row[4].strip().endswith("(0)") for row in rows)  # fork replays none


def test_headless_quick(tmp_path: Path) -> None:
    """headless.py: the rendering and headless LunarLander steps agree, and ARSM trains the same with and without
    particles in its rollouts."""
    folder, _ = run_quick("headless.py", tmp_path=tmp_path, timeout=300)
    text = (folder / "headless.md").read_text()
    assert "Parameters after training bit-identical: yes." in text
    (steps,) = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 2 |")]
    assert steps[-1].strip() == "yes" and int(steps[1].replace(",", "")) > 100
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith(("| 256 |", "| 512 |"))]
    assert len(rows) == 2 and all(int(row[4].replace(",", "")) > 0 for row in rows)


def test_scaling_quick(tmp_path: Path) -> None:
    """scaling.py: a row per worker count whose parts add up to its wall time, no rollouts on workers without
    workers, a projection for each env that agrees with its own split, and the short run with 0 and 2 workers."""
    folder, _ = run_quick("scaling.py", tmp_path=tmp_path, timeout=300)
    text = (folder / "scaling.md").read_text()
    assert (folder / "scaling.png").stat().st_size > 0 and text.count("Projected speed-up over no workers") == 3
    *tables, short = text.split("#### ")[1:]
    short_rows = [line.split("|")[1:-1] for line in short.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert short.startswith("Short run") and [int(row[0]) for row in short_rows] == [0, 2]
    assert short_rows[0][2].strip() == "1.00x" and float(short_rows[1][2].strip().rstrip("x")) > 0
    for table in tables:
        rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
        assert [int(row[0]) for row in rows] == [0, 1, 2]
        for row in rows:
            wall, collect, plan, rollouts, gradient = (float(row[i]) for i in (1, 3, 4, 5, 6))
            assert collect > 0 and collect + plan + rollouts + gradient == pytest.approx(wall, abs=0.2)
        assert rows[0][7].strip() == "0%"
        serial = float(table.split("Serial a = ")[1].split(" s")[0])
        parallel = float(table.split("parallel b = ")[1].split(" s")[0])
        one_worker_wall = float(rows[1][1])
        assert parallel == pytest.approx(float(rows[0][5]), abs=0.06)
        # each of the three is printed to 0.1 s: their rounding adds up to 0.05 + 0.05 + 0.025
        assert serial == pytest.approx(one_worker_wall - parallel / 2, abs=0.13)


@pytest.mark.parametrize(("script", "option"), [("headless.py", "--chunk=0"), ("fork_training.py", "--steps=-1")])
def test_paired_benchmarks_refuse_empty_runs_in_one_line(script: str, option: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), option], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"{script}: error: --steps and --chunk must be >= 1 real steps, got " + (
        "12000 and 0" if script == "headless.py" else "-1 and 5000"
    )


def test_toy_quick(tmp_path: Path) -> None:
    """toy.py on the paper's C = 30 toy: the exact gradient has no variance, ARSM's is orders of magnitude below
    REINFORCE's, itself below AR's (the paper's figure), and RLOO gets ARSM's number of evaluations."""
    out, _ = run_quick("toy.py", tmp_path=tmp_path, timeout=120)
    assert (out / "toy.png").stat().st_size > 0
    lines = (out / "toy.md").read_text().splitlines()
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in lines[4:10])}
    variance = {name: float(cells[1]) for name, cells in rows.items()}
    evaluations = {name: float(cells[3]) for name, cells in rows.items()}
    assert variance["true gradient"] == 0.0 and evaluations["true gradient"] == 30
    assert 0 < 1000 * variance["ARSM"] < variance["REINFORCE"] < variance["AR"]
    assert evaluations["RLOO"] == evaluations["ARSM"] and evaluations["AR"] == evaluations["REINFORCE"] == 1


def test_many_actions_quick(tmp_path: Path) -> None:
    """many_actions.py: the mask-form table (both forms), a variance row per (C, estimator) whose last cell is the
    error times the steps it cost, and learning fractions between the uniform policy's (0) and the optimum's (1)."""
    out, _ = run_quick("many_actions.py", tmp_path=tmp_path, timeout=300)
    forms = [line.split(" | ")[0].strip("| ") for line in (out / "mask_form.md").read_text().splitlines()[2:]]
    assert forms == ["full C = 6, masked logits -inf", "valid subset, C = 4"]
    lines = (out / "many_actions_variance.md").read_text().splitlines()
    rows = [line.strip("| ").split(" | ") for line in lines[2:] if line.startswith("| ")]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import many_actions

    estimators = many_actions.ESTIMATORS  # the registered ones it compares
    assert [(row[0], row[1], row[2]) for row in rows][: len(estimators)] == [("2", "0", e) for e in estimators]
    for row in rows:
        error, spent, product = float(row[4]), float(row[5].replace(",", "")), float(row[6])
        assert error > 0 and product == pytest.approx(error * spent / 1e5, rel=0.05, abs=1e-5)
    learning = (out / "many_actions_learning.md").read_text().splitlines()
    fractions = [float(line.split(" | ")[3]) for line in learning[2:] if line.startswith("| ")]
    assert fractions and all(-1.0 <= f <= 1.0 + 1e-9 for f in fractions)
    assert any("maskable_ppo" in line for line in learning)


def test_clone_cost_quick_writes_a_fresh_folder(tmp_path: Path) -> None:
    """clone_cost.py --quick without --out (tests/test_clone_cost_quick.py checks its numbers, with --out)."""
    out, stdout = run_quick("clone_cost.py", tmp_path=tmp_path, timeout=120)
    assert f"wrote {out / 'clone_cost.md'}" in stdout
    assert "`python benchmarks/clone_cost.py --quick`" in (out / "clone_cost.md").read_text()


def test_every_quick_mode_runs_here() -> None:
    """Every benchmark with a --quick mode has a test above that runs it with run_quick (no --out), so CI catches a crash
    and a write into the committed results (fingerprint.py has its own test)."""
    scripts = [
        path.name
        for path in sorted((ROOT / "benchmarks").glob("*.py"))
        if '"--quick"' in path.read_text() and '__name__ == "__main__"' in path.read_text()
    ]
    source = Path(__file__).read_text()
    assert len(scripts) >= 9
    assert [name for name in scripts if f'run_quick("{name}"' not in source and name != "fingerprint.py"] == []
