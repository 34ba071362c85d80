"""``benchmarks/clone_cost.py --quick`` runs end to end and writes sensible numbers (so the script cannot rot)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The cases of ``--quick`` and their snapshot families.
FAMILIES = {"CartPole-v1": "classic", "FrozenLake-v1 slippery": "toy_text", "LunarLander-v3 wind (replay)": "replay"}


def _table(text: str, header: str) -> list[list[str]]:
    """The body rows of the markdown table whose header row starts with ``header``, as lists of cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_clone_cost_quick(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "clone_cost.py"), "--quick", "--out", str(tmp_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    text = (tmp_path / "clone_cost.md").read_text()
    assert "`python benchmarks/clone_cost.py --quick`" in text
    rows = _table(text, "| env | family |")
    assert {row[0]: row[1] for row in rows} == FAMILIES
    for name, family, *numbers, restore_steps, scratch_ms in rows:
        step, clone, restore, both, ratio = map(_number, numbers)
        for value in (step, clone, restore, both, ratio):
            assert math.isfinite(value) and value > 0, (name, numbers)
        assert math.isfinite(_number(scratch_ms)) and _number(scratch_ms) >= 0, (name, scratch_ms)  # printed to 0.1 ms
        assert math.isclose(ratio, both / step, rel_tol=0.05, abs_tol=0.01), name  # both / step, printed rounded
        assert (int(restore_steps) > 0) == (family == "replay"), name  # only replay restores step the env
    replay = _table(text, "| prefix (steps since reset) |")
    assert [row[0] for row in replay] == ["0", "10"]
    restores = [_number(row[1]) for row in replay]
    assert all(math.isfinite(r) and r > 0 for r in restores)
    assert _number(replay[1][3]) > 0  # µs per replayed step
    fork = _table(text, "| prefix (steps since reset) | replay restore")
    assert [row[0] for row in fork] == ["10"]
    assert _number(fork[0][1]) == restores[1]  # the replay restore of the table above
    assert all(math.isfinite(_number(cell)) and _number(cell) > 0 for cell in fork[0][2:])
