"""benchmarks/time_to_quality.py's equal-wall-clock comparison of arms trained by iterations: each evaluation's
iterations times the arm's measured seconds per iteration (demo_profile.py --cost-only lines)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from time_to_quality import read_costs, table  # noqa: E402


def _curve(path: Path, label: str, seed: int, points: list[tuple[int, float, float]]) -> Path:
    rows = [{"label": label, "seed": seed, "step": step, "class_consistency": cc, "fd": fd, "train_seconds": 1.0,
             "train": {}, "set": {}} for step, cc, fd in points]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_arms_are_compared_at_equal_seconds_from_their_costs(tmp_path):
    costs_file = tmp_path / "costs.jsonl"
    costs_file.write_text(json.dumps({"label": "base", "ms_per_iteration": 200.0}) + "\n"
                          + json.dumps({"label": "cheap", "ms_per_iteration": 100.0}) + "\n")
    costs = read_costs(str(costs_file))
    assert costs == {"base": 0.2, "cheap": 0.1}
    curves = [_curve(tmp_path / "b0.jsonl", "base", 0, [(800, 0.70, 16.0), (1600, 0.80, 10.0)]),
              _curve(tmp_path / "b1.jsonl", "base", 1, [(800, 0.72, 15.0), (1600, 0.82, 9.0)]),
              _curve(tmp_path / "c0.jsonl", "cheap", 0, [(1600, 0.75, 12.0), (3200, 0.85, 8.0)])]
    text = table(curves, 320.0, "cost_seconds", costs)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    # 320 s: base's 1,600th iteration (0.2 s each) and cheap's 3,200th (0.1 s each), not their 1,600th.
    assert "| 1600 / 1600 |" in rows["base"] and "0.810 (0.800 / 0.820)" in rows["base"]
    assert "| 3200 |" in rows["cheap"] and "0.850 (0.850)" in rows["cheap"]
    assert list(rows) == ["cheap", "base"]  # best class consistency first
    with pytest.raises(SystemExit, match="no line labelled 'other'"):
        table([_curve(tmp_path / "o.jsonl", "other", 0, [(10, 0.1, 1.0)])], 1.0, "cost_seconds", costs)
