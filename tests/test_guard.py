"""Nothing lost, nothing silent: the divergence guard (stop / rollback), checkpoint manifests and ``scalegan
verify``, resuming from the newest intact checkpoint, and failed checkpoint writes."""

import errno
import json
import shutil

import pytest
import torch
from conftest import loss_lines
from test_training import tiny_config

import scalegan
from scalegan.cli import main
from scalegan.manifest import verify_folder
from scalegan.objectives import Nets, Phase
from scalegan.objectives.biggan import BigGANObjective
from scalegan.training import checkpoint as ckpt_module
from scalegan.training import train
from scalegan.training.loop import CheckpointWriteError, Diverged, DivergenceError, phase_step


# ------------------------------------------------------------------------------------------ the guard, one step
class _InfGrad(torch.autograd.Function):
    """Identity forward; an infinite gradient backward: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


class _Objective:
    def __init__(self, D, fault):
        self.nets = Nets(torch.nn.Linear(2, 2), D, None, D, D)
        self.fault = fault

    def loss(self, phase, micro_batch, draw):
        out = self.nets.D(torch.ones(4, 3)).square().mean()
        if self.fault == "loss":
            out = out * float("nan")
        if self.fault == "gradient":
            out = _InfGrad.apply(out)
        return out, {"loss_d": out.detach()}

    def penalty(self, phase):
        return None


@pytest.mark.parametrize("fault", ["loss", "gradient", "weights"])
def test_a_non_finite_value_stops_the_step_before_the_optimizer_applies_it(fault):
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Linear(3, 1))
    D.register_parameter("unused", torch.nn.Parameter(torch.zeros(2)))  # takes no part in the loss
    if fault == "weights":
        with torch.no_grad():
            D.unused[1] = float("nan")
    optimizer = torch.optim.Adam(D.parameters(), lr=0.1)
    before = [p.detach().clone() for p in D.parameters()]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with pytest.raises(Diverged) as info:
        phase_step(_Objective(D, fault), Phase("Dmain", "D"), optimizer, scaler, 1, None)
    assert info.value.phase == "Dmain" and info.value.what.startswith({"gradient": "gradient norm"}.get(fault, fault))
    assert all(torch.equal(a, b) or (a.isnan() == b.isnan()).all() for a, b in zip(before, D.parameters()))
    assert not optimizer.state  # Adam never stepped
    clean = torch.nn.Sequential(torch.nn.Linear(3, 1))
    optimizer = torch.optim.Adam(clean.parameters(), lr=0.1)
    phase_step(_Objective(clean, None), Phase("Dmain", "D"), optimizer, scaler, 1, None)
    assert optimizer.state  # a clean step goes through


# ------------------------------------------------------------------------------------------ the guard in a run
def _inject(monkeypatch, calls: set[int], fault="loss"):
    """Make BigGAN's loss non-finite on the given calls (3 calls an iteration: n_d_steps 2 + G)."""
    original, seen = BigGANObjective.loss, {"n": 0}

    def loss(self, phase, micro_batch, draw):
        value, logged = original(self, phase, micro_batch, draw)
        seen["n"] += 1
        if seen["n"] in calls:
            value = value * float("nan") if fault == "loss" else _InfGrad.apply(value)
        return value, logged

    monkeypatch.setattr(BigGANObjective, "loss", loss)


def _cli_train(npz, run, *extra):
    return main(["train", "--model", "biggan-fmnist", "--data", f"npz:{npz}", "--out-dir", str(run),
                 "--batch-size", "16", "--ema-start", "2", "--log-every", "2", "--sample-every", "0",
                 "--no-tensorboard", "--no-progress", "--n-d-steps", "2", "--set", "ch=8", "--set", "d_ch=8",
                 "--set", "z_dim=16", "--set", "shared_dim=16", *extra])


def test_divergence_stop_writes_nothing_new_and_says_where(tiny_npz, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _inject(monkeypatch, {3 * 4 + 1})  # iteration 5's first D step
    assert _cli_train(tiny_npz, run, "--iterations", "8", "--ckpt-every", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([x for x in err if "error" in x]) == 1 and "Traceback" not in "".join(err)
    assert "non-finite loss in phase D" in err[-1] and "at step 5" in err[-1] and "step_0000004" in err[-1]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000002", "step_0000004"]
    events = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 5, "event": "diverged", "action": "stop", "non_finite": "loss"}.items() <= events[-1].items()
    assert main(["verify", str(run)]) == 0


def test_divergence_rollback_reloads_and_lowers_the_learning_rates(tiny_npz, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _inject(monkeypatch, {3 * 5 + 3}, fault="gradient")  # iteration 6's G step
    with pytest.warns(UserWarning, match="rolled back to step_0000004 with the learning rates x0.5"):
        summary = train(cfg := tiny_config(tiny_npz, run, iterations=8, ckpt_every=2, on_divergence="rollback"))
    assert summary["step"] == 8 and summary["rollbacks"] == 1
    state = torch.load(run / "checkpoints" / "step_0000008" / "state.pt", weights_only=True)
    assert state["guard"] == {"rollbacks": 1, "lr_scale": 0.5}
    assert state["opt_G"]["param_groups"][0]["lr"] == pytest.approx(0.5 * cfg.optim.lr_g)
    rollback = [x for x in map(json.loads, (run / "logs" / "metrics.jsonl").read_text().splitlines())
                if x.get("event") == "diverged"]
    assert rollback == [{"step": 6, "event": "diverged", "phase": "G", "non_finite": "gradient norm",
                         "action": "rollback", "to_step": 4, "rollbacks": 1, "lr_scale": 0.5}]
    assert all(torch.isfinite(v).all() for v in
               scalegan.load(run)[0].state_dict().values() if v.is_floating_point())
    assert [x["step"] for x in loss_lines(run) if "event" not in x] == [2, 4, 6, 8]


def test_rollbacks_are_bounded(tiny_npz, tmp_path, monkeypatch):
    _inject(monkeypatch, set(range(3 * 2 + 1, 1000)))  # diverges at every step from iteration 3 on
    with pytest.warns(UserWarning, match="rollback 1 of 1"), pytest.raises(DivergenceError, match="1 rollbacks used"):
        train(tiny_config(tiny_npz, tmp_path / "run", iterations=6, ckpt_every=2, on_divergence="rollback",
                          max_rollbacks=1))


# ------------------------------------------------------------------------------------------ manifests and verify
@pytest.fixture
def run_dir(tiny_npz, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_npz, run, iterations=6, ckpt_every=2, keep_checkpoints=3))
    return run


def _flip_byte(path, at=-100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_every_checkpoint_has_a_manifest_and_verify_checks_it(run_dir, tiny_npz, capsys):
    for step in (2, 4, 6):
        folder = run_dir / "checkpoints" / f"step_{step:07d}"
        files = json.loads((folder / "manifest.json").read_text())["files"]
        assert set(files) == {"G.safetensors", "G_ema.safetensors", "D.safetensors", "model.safetensors",
                              "config.json", "state.pt"}
        assert verify_folder(folder).ok
    assert main(["verify", str(run_dir)]) == 0
    assert "--resume continues from step_0000006" in capsys.readouterr().out
    _flip_byte(run_dir / "checkpoints" / "step_0000006" / "model.safetensors")  # same size, other bytes
    assert main(["verify", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "step_0000006/model.safetensors: its SHA-256 differs" in out
    assert "--resume continues from step_0000004" in out
    assert main(["sample", str(run_dir), "--n", "2", "--grid", str(run_dir / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step_0000006/model.safetensors is damaged" in err[0]
    assert main(["verify", str(run_dir / "nowhere")]) == 2


def test_resume_falls_back_to_the_newest_intact_checkpoint(run_dir, tiny_npz):
    state = run_dir / "checkpoints" / "step_0000006" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match=r"skipped damaged checkpoints step_0000006 \(state.pt: size .*\); using "
                                         "step_0000004"):
        summary = train(tiny_config(tiny_npz, run_dir, iterations=8, ckpt_every=2, keep_checkpoints=3,
                                    resume=True))
    assert summary["iterations_this_session"] == 4 and summary["step"] == 8
    for name in ("step_0000004", "step_0000008"):
        _flip_byte(run_dir / "checkpoints" / name / "D.safetensors")
    shutil.rmtree(run_dir / "checkpoints" / "step_0000006")
    with pytest.raises(ValueError, match="no intact checkpoint in .*step_0000008 \\(D.safetensors: its SHA-256"):
        train(tiny_config(tiny_npz, run_dir, iterations=10, resume=True))


def test_folders_without_a_manifest_load_with_a_note(run_dir, capsys):
    folder = run_dir / "checkpoints" / "step_0000006"
    (folder / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="has no manifest.json .* not verified"):
        scalegan.load(folder)
    assert main(["verify", str(folder)]) == 0 and "NOTE" in capsys.readouterr().out
    assert main(["verify", str(folder), "--write"]) == 0 and verify_folder(folder).ok and not verify_folder(
        folder).legacy


# ------------------------------------------------------------------------------------------ failed writes
def _fail_checkpoint(monkeypatch, on_calls: set[int]):
    """``torch.save`` of state.pt fails with "No space left on device" on the given checkpoint writes."""
    original, seen = torch.save, {"n": 0}

    def save(obj, path, *args, **kwargs):
        seen["n"] += 1
        if seen["n"] in on_calls:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "save", save)


def test_a_failed_checkpoint_write_keeps_the_previous_one(tiny_npz, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _fail_checkpoint(monkeypatch, {2})
    with pytest.raises(CheckpointWriteError, match="step 4 could not be written .*No space left on device.*"
                                                   "step_0000002, is intact"):
        train(tiny_config(tiny_npz, run, iterations=8, ckpt_every=2, keep_checkpoints=1))
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000002"]  # no partial folder left
    assert (root / "latest").read_text().strip() == "step_0000002" and verify_folder(root / "step_0000002").ok
    monkeypatch.undo()
    summary = train(tiny_config(tiny_npz, run, iterations=8, ckpt_every=2, keep_checkpoints=1, resume=True))
    assert summary["step"] == 8


def test_ckpt_failure_warn_keeps_training(tiny_npz, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _fail_checkpoint(monkeypatch, {2})
    with pytest.warns(UserWarning, match="step 4 could not be written .*training continues"):
        summary = train(tiny_config(tiny_npz, run, iterations=6, ckpt_every=2, keep_checkpoints=1,
                                    ckpt_failure="warn"))
    assert summary["step"] == 6
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000006"]
    events = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in events if x.get("event") == "checkpoint_failed"] == [4]
