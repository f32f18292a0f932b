"""A short kill campaign: a tiny run is killed with SIGKILL six times (three times at random moments of training,
three times in the middle of checkpoint writes), resumed each time, and must end with the same weights, bit for bit,
as a run that was never interrupted."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file
from test_training import tiny_config

from scalegan.training import train

pytestmark = pytest.mark.slow

# Runs training in a fresh process, each iteration at least 30 ms (so that a kill at a chosen step lands inside
# training on any machine); KILL=("save", k) kills it (SIGKILL, no cleanup) on the k-th safetensors write of a
# checkpoint, ("manifest", k) on the k-th manifest (every other file of that checkpoint is written).
CHILD = """
import json, os, signal, sys, time
import torch
torch.set_num_threads(1)
from scalegan.training import checkpoint, loop, train
from scalegan.training.config import TrainConfig
cfg, kill = TrainConfig.from_dict(json.loads(sys.argv[1])), json.loads(sys.argv[2])
periodic = loop.Run._periodic
def slow(self, bar):
    time.sleep(0.03)
    periodic(self, bar)
loop.Run._periodic = slow
if kill:
    name = {"save": "save_state_dict", "manifest": "write_manifest"}[kill[0]]
    original, calls = getattr(checkpoint, name), []
    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    setattr(checkpoint, name, dying)
train(cfg)
"""


def _weights(run) -> dict:
    root = run / "checkpoints"
    folder = root / (root / "latest").read_text().strip()
    return {p.name: load_file(p) for p in sorted(folder.glob("*.safetensors"))}


def _starts(log) -> int:
    return log.read_text().count('"event": "start"') if log.is_file() else 0


def _kill_after_steps(child, log, starts: int, steps: int, delay: float) -> None:
    """SIGKILL ``child`` ``delay`` seconds after it has logged ``steps`` iterations (the log lines after its start
    line, the log's start line number ``starts`` + 1: a resumed run first drops the lines past its checkpoint)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        parts = log.read_text().split('"event": "start"') if log.is_file() else []
        lines = parts[-1].splitlines()[1:] if len(parts) > starts + 1 else []
        logged = [json.loads(x)["step"] for x in lines if '"loss_g"' in x]
        if len(logged) * 2 >= steps:  # a loss line every 2 iterations
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            return
        time.sleep(0.01)
    raise AssertionError("the run ended before the planned kill")


def test_killed_and_resumed_runs_end_bit_identical(tiny_npz, tmp_path):
    settings = dict(iterations=60, ckpt_every=5, keep_checkpoints=2, sample_every=0)
    reference = tmp_path / "reference"
    train(tiny_config(tiny_npz, reference, **settings))

    run, log = tmp_path / "killed", tmp_path / "killed" / "logs" / "metrics.jsonl"
    rng = random.Random(0)
    plan = [("save", 6), ("steps", 4), ("manifest", 2), ("steps", 7), ("save", 3), ("steps", 3), (None, None)]
    kills = 0
    for kind, value in plan:
        resume = (run / "checkpoints" / "latest").is_file()
        cfg = tiny_config(tiny_npz, run, resume=resume, **settings).to_dict()
        kill = [kind, value] if kind in ("save", "manifest") else None
        starts = _starts(log)
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), json.dumps(kill)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kind == "steps":
            _kill_after_steps(child, log, starts, value, rng.uniform(0.0, 0.05))
        _, err = child.communicate(timeout=300)
        if kind is None:
            assert child.returncode == 0, err[-2000:]
        else:
            assert child.returncode == -signal.SIGKILL, err[-2000:]
            kills += 1
    assert kills == 6
    assert json.loads((run / "summary.json").read_text())["step"] == settings["iterations"]
    logged = [json.loads(x)["step"] for x in log.read_text().splitlines() if '"loss_g"' in x]
    assert logged == list(range(2, 61, 2))  # each step once: what a killed run logged after its checkpoint is dropped
    a, b = _weights(reference), _weights(run)
    assert a.keys() == b.keys() == {"G.safetensors", "G_ema.safetensors", "D.safetensors", "model.safetensors"}
    for name in a:
        assert a[name].keys() == b[name].keys()
        assert all((a[name][k] == b[name][k]).all() for k in a[name]), name
