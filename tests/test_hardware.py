"""precision "auto" and channels_last auto: the choice follows the hardware, is recorded, and warns when forced."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from test_training import tiny_config

from scalegan import hardware
from scalegan.cli import main
from scalegan.training import train


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16."""

    def set_support(value: bool):
        monkeypatch.setattr(hardware, "_cpu_bf16", lambda: value)
        monkeypatch.setattr(hardware, "bf16_slowdown", lambda: 52.0)

    return set_support


def test_auto_precision_follows_the_cpu(cpu_bf16):
    cpu_bf16(True)
    choice = hardware.choose_precision("auto", "cpu")
    assert choice.value == "bf16" and "natively" in choice.reason
    cpu_bf16(False)
    choice = hardware.choose_precision("auto", "cpu")
    assert choice.value == "float32" and "no native bf16" in choice.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        hardware.choose_precision("auto", "cpu")
        assert hardware.choose_precision("float32", "cpu").value == "float32"


def test_explicit_bf16_without_bf16_runs_with_one_warning_naming_the_slowdown(cpu_bf16):
    cpu_bf16(False)
    with pytest.warns(UserWarning, match=r"52x slower than float32") as record:
        choice = hardware.choose_precision("bf16", "cpu")
    assert choice.value == "bf16" and len(record) == 1
    cpu_bf16(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hardware.choose_precision("bf16", "cpu").value == "bf16"


def test_channels_last_auto():
    assert hardware.choose_channels_last(None, "cpu", "float32").value is True
    assert hardware.choose_channels_last(None, "cuda", "float32").value is False
    assert hardware.choose_channels_last(None, "cuda", "bf16").value is True
    assert hardware.choose_channels_last(False, "cpu", "bf16").value is False


def test_inference_dtype(cpu_bf16):
    cpu_bf16(True)
    assert hardware.inference_dtype("auto") == torch.bfloat16
    cpu_bf16(False)
    assert hardware.inference_dtype("auto") is None and hardware.inference_dtype(torch.float32) is None
    with pytest.warns(UserWarning, match="slower"):
        assert hardware.inference_dtype(torch.bfloat16) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        hardware.inference_dtype("half-ish")


def test_the_real_probe_reports_avx2_as_float32():
    """With oneDNN and ATen limited to AVX2 (an AVX2-only CPU, or a stand-in for one) auto picks float32; without
    the limit it picks what oneDNN reports."""
    code = "from scalegan.hardware import choose_precision; print(choose_precision('auto').value)"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "float32"
    expected = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    assert hardware.choose_precision("auto").value == expected


def test_dry_run_prints_the_resolved_precision(tiny_npz, capsys):
    assert main(["train", "--data", f"npz:{tiny_npz}", "--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train"]["precision"] in ("bf16", "float32")  # never "auto"
    assert report["train"]["precision"] == report["hardware"]["precision"]
    assert report["train"]["channels_last"] is True and report["hardware"]["precision_reason"].startswith("auto")


def test_run_records_the_choice(tiny_npz, tmp_path, cpu_bf16):
    cpu_bf16(False)
    train(tiny_config(tiny_npz, tmp_path, iterations=1))
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["train"]["precision"] == saved["hardware"]["precision"] == "float32"
    assert "no native bf16" in saved["hardware"]["precision_reason"]
    first = json.loads((tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["event"] == "start" and first["precision"] == "float32" and first["channels_last"] is True
