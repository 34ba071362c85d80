"""Training fingerprints (benchmarks/fingerprint.py): the committed ones hold on any x86-64 CPU, and the check can fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "fingerprint.py"
COMMITTED = ROOT / "benchmarks" / "results" / "fingerprints.json"
ONE = "MultiDiscrete/reinforce"  # the cheapest configuration


def fingerprint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, timeout=300, capture_output=True, text=True)


def test_fingerprints_pin_training() -> None:
    """Training is what it was when results/fingerprints.json was recorded (the CartPole and MultiDiscrete subset: every
    estimator, a budget, a horizon, two sub-envs with common random numbers, joint actions): the same real and simulator
    steps, the same parameters up to the rounding of this CPU's float kernels."""
    result = fingerprint("--quick", "--compare", str(COMMITTED))
    assert result.stdout.splitlines()[-1] == "0 of 11 changed", result.stdout + result.stderr


def test_fingerprint_check_tells_rounding_from_change(tmp_path: Path) -> None:
    """Against doctored references: parameters moved by 1e-3 of their norm or one more simulator step is a change;
    another digest with parameters moved by 1e-9 is rounding, a change only with --exact."""
    reference = json.loads(COMMITTED.read_text())
    entry = reference["configs"][ONE]

    def doctored(name: str, **changes: object) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"machine": reference["machine"], "configs": {ONE: {**entry, **changes}}}))
        return str(path)

    shifted = [p + 1e-3 * entry["norm"] for p in entry["projections"]]
    rounded = [p + 1e-9 * entry["norm"] for p in entry["projections"]]
    moved = fingerprint("--only", ONE, "--compare", doctored("moved", projections=shifted)).stdout
    assert "parameters moved 1.0e-03 of their norm" in moved and moved.splitlines()[-1] == "1 of 1 changed", moved
    steps = fingerprint("--only", ONE, "--compare", doctored("steps", pseudo_steps=entry["pseudo_steps"] + 1)).stdout
    assert steps.splitlines()[-1] == "1 of 1 changed", steps
    digest = doctored("digest", digest="0" * 16, projections=rounded)
    same = fingerprint("--only", ONE, "--compare", digest).stdout
    assert "1 of 1 differ in their last bits only" in same and same.splitlines()[-1] == "0 of 1 changed", same
    exact = fingerprint("--only", ONE, "--compare", digest, "--exact").stdout
    assert exact.splitlines()[-1] == "1 of 1 changed", exact


def test_fingerprint_refuses_a_foreign_file(tmp_path: Path) -> None:
    foreign = tmp_path / "old.json"
    foreign.write_text(json.dumps({ONE: "30975a5b0b1da498"}))  # the format before CPUs were recorded
    result = fingerprint("--only", ONE, "--compare", str(foreign))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: {foreign} is not a fingerprint file of this script (no 'machine' and 'configs'); record one with --out"
    ]
