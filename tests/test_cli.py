"""The `scalegan` command: info, train (flags, config file, dry run), sample (grid, PNGs, NPZ, GIF)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import scalegan
from scalegan.cli import main, parse_overrides
from scalegan.sampling import sample
from scalegan.utils import to_hwc

TRAIN = ["--iterations", "2", "--batch-size", "16", "--n-d-steps", "1", "--no-progress", "--no-tensorboard",
         "--sample-every", "0", "--set", "ch=8", "--set", "d_ch=8", "--set", "z_dim=16", "--set", "shared_dim=16"]


@pytest.fixture
def run(tiny_npz, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", f"npz:{tiny_npz}", "--out-dir", str(out), *TRAIN]) == 0
    return out


def test_info_json(capsys):
    assert main(["info", "biggan-128", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["G_params"] == 70_433_988 and info["D_params"] == 87_982_370
    assert main(["info", "--list"]) == 0
    assert "biggan-deep-256" in capsys.readouterr().out
    assert main(["info", "biggan-12"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "scalegan", "train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("--iterations", "--precision", "--ema-start", "--resume", "--config", "--dry-run", "--set"):
        assert flag in out


def test_dry_run_resolution_order(tiny_npz, tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"lr_g": 1e-3, "batch_size": 8, "model_overrides": {"ch": 16}}))
    args = ["train", "--dry-run", "--data", f"npz:{tiny_npz}", "--config", str(config), "--batch-size", "4",
            "--set", "z_dim=32"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    train = report["train"]
    assert report["family"] == "biggan" and report["objective"]["loss"] == "hinge"  # resolved with defaults
    assert report["objective"]["n_d_steps"] == 1  # the biggan-fmnist preset's value (the objective's default is 2)
    assert train["optim"]["lr_g"] == 1e-3  # the config file beats the preset (sections nested in the output)
    assert train["batch_size"] == 4  # a flag beats the config file
    assert report["model"]["ch"] == 16 and report["model"]["z_dim"] == 32 and report["model"]["n_classes"] == 3
    assert not (tmp_path / "runs").exists()


def test_bad_flags_are_one_line_errors(tiny_npz, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nothing.npz"), "--out-dir", str(tmp_path / "r")]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--set", "chanels=3"]) == 2
    assert "unknown" in capsys.readouterr().err
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["ch"])
    assert parse_overrides(["g_attn=[16, 32]", "hier=false", "init=N02"]) == {
        "g_attn": (16, 32), "hier": False, "init": "N02"}


def test_sample_outputs(run, tmp_path, capsys):
    grid, npz, pngs = tmp_path / "grid.png", tmp_path / "s.npz", tmp_path / "pngs"
    assert main(["sample", str(run), "--grid", str(grid), "--npz", str(npz), "--png-dir", str(pngs),
                 "--per-class", "4", "--truncation", "0.8", "--seed", "3", "--save-latents"]) == 0
    data = np.load(npz)
    assert data["x"].shape == (12, 32, 32, 1) and data["x"].dtype == np.uint8
    assert data["y"].dtype == np.int64 and data["y"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data["z"].shape == (12, 16) and np.abs(data["z"]).max() <= 0.8
    assert Image.open(grid).size == (4 * 34 + 2, 3 * 34 + 2)  # one row per class
    assert len(list(pngs.glob("*_c1.png"))) == 4
    # The same seed through the Python API gives the same images.
    G, _ = scalegan.load(run)
    expected = to_hwc(sample(G, 12, y=torch.tensor(data["y"]), truncation=0.8, seed=3))
    assert np.array_equal(expected, data["x"])


def test_sample_by_class_name_and_errors(run, tmp_path, capsys):
    npz = tmp_path / "b.npz"
    assert main(["sample", str(run), "--class", "Bottom", "--class", "0", "--n", "5", "--npz", str(npz)]) == 0
    assert np.load(npz)["y"].tolist() == [2, 0, 2, 0, 2]
    assert main(["sample", str(run), "--class", "botom", "--grid", str(tmp_path / "x.png")]) == 2
    assert "did you mean 'bottom'" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "missing")]) == 2


def test_interpolation_sheet_and_gif(run, tmp_path):
    sheet, gif = tmp_path / "interp.png", tmp_path / "interp.gif"
    assert main(["sample", str(run), "--interp", "class", "--class", "0", "--class", "2", "--rows", "2",
                 "--steps", "4", "--grid", str(sheet), "--gif", str(gif)]) == 0
    assert Image.open(sheet).size == (4 * 34 + 2, 2 * 34 + 2)
    animation = Image.open(gif)
    assert animation.n_frames == 6


def test_info_on_a_run_and_resume(run, tiny_npz, capsys):
    assert main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["class_names"] == ["top", "middle", "bottom"] and info["model"]["n_classes"] == 3
    assert main(["train", "--data", f"npz:{tiny_npz}", "--out-dir", str(run), *TRAIN]) == 2  # exists
    args = ["train", "--data", f"npz:{tiny_npz}", "--out-dir", str(run), "--resume", *TRAIN]
    assert main([*args[:-len(TRAIN)], *TRAIN[2:], "--iterations", "3"]) == 0
    assert json.loads((run / "summary.json").read_text())["step"] == 3
    # The run's own config is the base of a resume: --out-dir and --resume are enough (the defaults would name
    # another model and dataset, which the resume refuses).
    assert main(["train", "--out-dir", str(run), "--resume", "auto", "--iterations", "4", "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["step"] == 4


def test_sigterm_stops_with_a_checkpoint(tiny_npz, tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scalegan", "train", "--data", f"npz:{tiny_npz}", "--out-dir", str(out),
           *TRAIN, "--iterations", "100000", "--log-every", "1", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    metrics = out / "logs" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == {"signal": "SIGTERM"} and 2 <= summary["step"] < 100000
    assert (out / "checkpoints" / f"step_{summary['step']:07d}" / "state.pt").is_file()


def test_every_subcommand_is_wired():
    from scalegan.cli import build_parser

    parser = build_parser()
    for argv in (["train"], ["sample", "x"], ["info"], ["convert", "--list"], ["eval", "a", "b"],
                 ["train-classifier", "--data", "fashion-mnist", "--out-dir", "c"]):
        args = parser.parse_args(argv)
        assert callable(args.func), argv
    assert main(["convert", "--list"]) == 0
