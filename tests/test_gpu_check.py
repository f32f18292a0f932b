"""benchmarks/gpu_check.py in its CPU mode (tiny sizes): every check runs and passes, so that the GPU check is known to
work when a GPU is lent; and a failing check is reported as such without stopping the others."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {"train:biggan-128:float32", "train:biggan-128:auto", "train:stylegan2-256:float32",
          "train:stylegan2-256:auto", "torchrun", "exact_resume", "serve", "sample:biggan-deep-128", "onnx"}


def _gpu_check(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    return done, [json.loads(x) for x in done.stdout.splitlines()]


def test_cpu_mode_runs_every_check_and_all_pass(tmp_path):
    out = tmp_path / "gpu_check.jsonl"
    done, lines = _gpu_check("--out", str(out))
    checks = {x["check"]: x for x in lines}
    assert set(checks) == CHECKS | {"summary"}, done.stderr[-3000:]
    failed = {name: (x.get("error"), x.get("skipped")) for name, x in checks.items() if x["ok"] is not True}
    assert not failed, failed
    assert done.returncode == 0
    assert [json.loads(x) for x in out.read_text().splitlines()] == lines
    assert all(x["machine"] and x["mode"] == "cpu" and x["device"] == "cpu" for x in lines)
    for name in CHECKS:
        if name.startswith("train:"):
            x = checks[name]
            assert x["img_per_s"] > 0 and x["s_per_kimg"] == pytest.approx(1000 / x["img_per_s"], rel=0.01)
            assert x["timed_iterations"] == 2
            assert x["precision"] == "float32" if name.endswith("float32") else x["precision"] in ("float32", "bf16")
    assert checks["torchrun"]["collective"]["backend"] == "gloo" and checks["torchrun"]["step"] == 4
    assert checks["exact_resume"]["bit_identical"] and checks["exact_resume"]["max_abs_diff"] == 0.0
    assert checks["serve"]["statuses"] == {"200": 12} and checks["serve"]["images_per_s"] > 0
    paths = checks["sample:biggan-deep-128"]["paths"]
    assert {"reference float32", "fold float32"} <= set(paths)
    assert paths["fold float32"]["max_abs_diff_vs_reference"] <= 1e-4
    assert checks["onnx"]["providers"] == ["CPUExecutionProvider"]
    assert checks["onnx"]["max_abs_diff_vs_pytorch"] <= 1e-4
    assert checks["summary"]["passed"] == len(CHECKS) and checks["summary"]["ok"]


def test_a_failing_check_is_reported_and_the_others_still_run(tmp_path):
    done, lines = _gpu_check("--only", "sample,onnx", "--biggan-deep-weights", str(tmp_path / "missing"))
    assert [x["check"] for x in lines] == ["sample:biggan-deep-128", "onnx", "summary"]
    assert all(x["ok"] is False and "missing" in x["error"] for x in lines[:2])
    assert lines[-1]["failed"] == ["sample:biggan-deep-128", "onnx"] and done.returncode == 1
