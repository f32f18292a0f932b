"""Multi-node and fault-tolerant training on torchrun's elastic engine, on one machine over loopback with gloo: two
node agents meeting at a c10d rendezvous, a worker killed and brought back by ``--max-restarts`` with
``--resume auto``, a node that never joins, a rank late at a barrier, and a resume with another world size."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import latest_weights, loss_lines, rms_difference
from test_distributed import TRAIN, _children, _torchrun, free_port
from test_training import tiny_config

from scalegan.training import train
from scalegan.training.loop import trim_logs

pytestmark = pytest.mark.slow

# A torchrun worker: `scalegan train` with every iteration at least SLOW seconds long (so a kill lands inside
# training on any machine), with LATE_RANK, that rank LATE seconds late at its periodic barriers, and with READ_LOG,
# every image index a packed dataset reads appended to READ_LOG.RANK.
CHILD = """
import os, sys, time
from scalegan.data.packed import PackedDataset
from scalegan.training import loop
from scalegan.cli import main
if os.environ.get("READ_LOG"):
    read, log = PackedDataset.pixels, open(os.environ["READ_LOG"] + "." + os.environ["RANK"], "a")
    def logged(self, i):  # what the training stream reads (uint8 items)
        log.write(f"{i}\\n")
        log.flush()
        return read(self, i)
    PackedDataset.pixels = logged
if os.environ.get("BROKEN_RANK") == os.environ.get("RANK"):  # this rank's data "disk" fails on its 20th read
    read_broken, calls = PackedDataset.pixels, []
    def broken(self, i):
        calls.append(i)
        if len(calls) == 20:
            raise OSError(5, "Input/output error", f"{self.path}/shard-00000.npy")
        return read_broken(self, i)
    PackedDataset.pixels = broken
slow, late = float(os.environ.get("SLOW", "0")), int(os.environ.get("LATE_RANK", "-1"))
periodic, wait_for = loop.Run._periodic, loop.wait_for
def slowed(self, bar):
    time.sleep(slow)
    periodic(self, bar)
def late_wait(info, what, timeout):
    if info.rank == late:
        time.sleep(float(os.environ["LATE"]))
    wait_for(info, what, timeout)
loop.Run._periodic, loop.wait_for = slowed, late_wait
sys.exit(main(["train", *sys.argv[1:]]))
"""


def _with(args: list[str], **flags) -> list[str]:
    """``args`` with the values of these flags (underscores for dashes) replaced."""
    args = list(args)
    for key, value in flags.items():
        args[args.index("--" + key.replace("_", "-")) + 1] = str(value)
    return args


def _agents(child, args: list[str], tmp_path, restarts: int = 0, nodes: int = 2, join_timeout: int = 60,
            env: dict | None = None) -> list[subprocess.Popen]:
    """``nodes`` torchrun node agents of one process each, meeting at a c10d rendezvous on loopback, as
    ``torchrun --nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:PORT`` is started on each node of a cluster."""
    endpoint = f"127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "scalegan-test",
           "--rdzv-conf", f"join_timeout={join_timeout}", "--max-restarts", str(restarts), "--monitor-interval",
           "0.2", str(child), *args]
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
            **(env or {})}  # a fresh store per rendezvous round (README: Multi-node)
    return [subprocess.Popen(cmd, stdout=open(tmp_path / f"agent{n}.log", "w"), stderr=subprocess.STDOUT, text=True,
                             env=full) for n in range(nodes)]


def _finish(agents, tmp_path, timeout: float = 300) -> list[str]:
    deadline = time.monotonic() + timeout
    for agent in agents:
        try:
            agent.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for a in agents:
                a.kill()
            tail = (tmp_path / "agent0.log").read_text()[-3000:]
            raise AssertionError(f"the agents did not finish: {tail}") from None
    return [(tmp_path / f"agent{n}.log").read_text() for n in range(len(agents))]


@pytest.fixture
def child(tmp_path):
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def _same_weights(a, b) -> None:
    for name in ("G", "D", "G_ema"):
        x, y = latest_weights(a, name), latest_weights(b, name)
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x), f"{name} differs"


def test_two_node_agents_train_as_two_ranks(tiny_npz, tmp_path, child):
    """Two node agents (c10d rendezvous over loopback, one process each) training on a packed dataset end with the
    weights of one `torchrun --standalone` run of 2 processes, bit for bit (that run matches one process with the
    global batch: tests/test_distributed.py); each rank reads only the images of its own slices."""
    packed = tmp_path / "packed"
    done = subprocess.run([sys.executable, "-m", "scalegan", "prepare", f"npz:{tiny_npz}", str(packed),
                           "--resolution", "32"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # 3 iterations x 2 D steps = 6 global batches of 16: one epoch of the 96 images
    common = ["--data", f"packed:{packed}", "--batch-size", "8", "--iterations", "3", *TRAIN]
    reads = tmp_path / "reads"
    logs = _finish(_agents(child, [*common, "--out-dir", str(tmp_path / "nodes")], tmp_path,
                           env={"READ_LOG": str(reads)}), tmp_path)
    assert all("error" not in log.lower() for log in logs), logs
    by_rank = [[int(x) for x in Path(f"{reads}.{rank}").read_text().split()] for rank in (0, 1)]
    assert [len(r) for r in by_rank] == [48, 48] and len(set(by_rank[0] + by_rank[1])) == 96  # disjoint, all
    proc = _torchrun(2, [*common, "--out-dir", str(tmp_path / "standalone")])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    _same_weights(tmp_path / "nodes", tmp_path / "standalone")
    assert json.loads((tmp_path / "nodes" / "summary.json").read_text())["world_size"] == 2


def test_killed_worker_is_restarted_and_the_run_ends_bit_identical(tiny_npz, tmp_path, child):
    """One worker of a 2-node run is SIGKILLed mid-training; torchrun (--max-restarts 1) restarts the group,
    `--resume auto` continues from the newest intact checkpoint, and the run ends with the weights of a run that
    was never interrupted, bit for bit; every step is logged once; no partial checkpoint is left."""
    common = ["--data", f"npz:{tiny_npz}", "--batch-size", "8", "--iterations", "12", "--keep-checkpoints", "2",
              *_with(TRAIN, ckpt_every=3)]
    run, log = tmp_path / "run", tmp_path / "run" / "logs" / "metrics.jsonl"
    agents = _agents(child, [*common, "--out-dir", str(run), "--resume", "auto"], tmp_path, restarts=1,
                     env={"SLOW": "0.3"})
    deadline = time.monotonic() + 240
    while not (log.is_file() and any(json.loads(x).get("step", 0) >= 5 for x in log.read_text().splitlines()
                                     if x.endswith("}") and '"loss_g"' in x)):
        assert time.monotonic() < deadline and all(a.poll() is None for a in agents), "no step 5 before the kill"
        time.sleep(0.05)
    victims = _children(agents[1].pid)
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    killed_at = max(json.loads(x)["step"] for x in log.read_text().splitlines() if x.endswith("}"))
    logs = _finish(agents, tmp_path)
    assert all(a.returncode == 0 for a in agents), logs

    starts = [json.loads(x) for x in log.read_text().splitlines() if '"event": "start"' in x]
    assert len(starts) == 2 and "resumed" not in starts[0]
    resumed = starts[1]["resumed"]
    assert resumed["step"] in (3, 6) and resumed["step"] <= killed_at, (resumed, killed_at)
    steps = [x["step"] for x in loss_lines(run)]
    assert steps == list(range(1, 13)), steps  # each step once: the lines after the checkpoint were dropped
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers and sorted(p.name for p in (run / "checkpoints").glob("step_*")) == [
        "step_0000009", "step_0000012"]

    straight = tmp_path / "straight"
    proc = _torchrun(2, [*common, "--out-dir", str(straight)])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    _same_weights(run, straight)
    print(json.dumps({"killed_at_step": killed_at, "resumed": resumed}))


def test_a_node_that_never_joins_is_a_timeout_error(tiny_npz, tmp_path, child):
    """One agent of a 2-node run alone: torchrun's rendezvous gives up after join_timeout with an error naming
    the rendezvous, instead of waiting for ever."""
    started = time.monotonic()
    agents = _agents(child, ["--data", f"npz:{tiny_npz}", "--out-dir", str(tmp_path / "run"), *TRAIN], tmp_path,
                     nodes=1, join_timeout=3)
    (out,) = _finish(agents, tmp_path, timeout=120)
    assert agents[0].returncode != 0
    assert "RendezvousTimeoutError" in out, out[-2000:]
    assert time.monotonic() - started < 90
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_rank_that_cannot_read_its_data_stops_the_group(tiny_npz, tmp_path, child):
    """Rank 1's data fails mid-epoch: it stops with one error line naming the file, rank 0 with one line saying it
    lost its peer, both agents exit non-zero, and nothing hangs."""
    packed = tmp_path / "packed"
    done = subprocess.run([sys.executable, "-m", "scalegan", "prepare", f"npz:{tiny_npz}", str(packed),
                           "--resolution", "32"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    started = time.monotonic()
    args = ["--data", f"packed:{packed}", "--batch-size", "8", "--iterations", "6", *TRAIN, "--out-dir",
            str(tmp_path / "run")]
    agents = _agents(child, args, tmp_path, env={"BROKEN_RANK": "1"})
    logs = _finish(agents, tmp_path, timeout=120)
    assert all(a.returncode != 0 for a in agents)
    errors = [line for log in logs for line in log.splitlines() if line.startswith("scalegan train: error:")]
    assert sorted(len([e for e in errors if e.startswith(f"scalegan train: error: {who}")]) for who in
                  (f"{packed}/shard-00000.npy: Input/output error", "rank 0: lost contact")) == [1, 1], errors
    frames = [line for log in logs for line in log.splitlines() if line.strip().startswith("File ")]
    assert not [f for f in frames if "scalegan" in f and "torch" not in f], frames  # torchrun's own summary only
    assert time.monotonic() - started < 60


def test_a_rank_late_at_the_barrier_is_named(tiny_npz, tmp_path, child):
    """Rank 1 stays away from the barrier after rank 0's checkpoint: both ranks stop within --barrier-timeout
    with one line naming it, instead of hanging for the process group's hour."""
    started = time.monotonic()
    args = ["--data", f"npz:{tiny_npz}", "--batch-size", "8", "--iterations", "4", *_with(TRAIN, ckpt_every=2),
            "--barrier-timeout", "2", "--out-dir", str(tmp_path / "run")]
    agents = _agents(child, args, tmp_path, env={"LATE_RANK": "1", "LATE": "8"})
    logs = "".join(_finish(agents, tmp_path, timeout=120))
    assert all(a.returncode != 0 for a in agents)
    assert ("scalegan train: error: rank 0: rank 1 did not arrive within 2 s after rank 0's checkpoint of step 2"
            in logs), logs[-3000:]
    assert time.monotonic() - started < 60


def test_resume_with_another_world_size_keeps_the_global_batch(tiny_npz, tmp_path):
    """A run of 2 processes x 8 resumed by one process continues with 1 x 16 (the same global batch, data order
    and noise) and ends where the 2-process run ends, within float32 rounding; keeping --batch-size 8 changes the
    global batch, says so, and ends elsewhere."""
    common = ["--data", f"npz:{tiny_npz}", "--batch-size", "8", *TRAIN]
    two = tmp_path / "two"
    proc = _torchrun(2, [*common, "--out-dir", str(two), "--iterations", "4"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    bound = 1e-5  # tests/test_distributed.py's floor for 2 ranks against one process
    for name, batch in (("kept", "8"), ("changed", "4")):
        proc = _torchrun(2, [*common, "--out-dir", str(tmp_path / name), "--iterations", "2"])
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        args = _with(common, batch_size=batch)
        done = subprocess.run([sys.executable, "-m", "scalegan", "train", *args, "--out-dir", str(tmp_path / name),
                               "--iterations", "4", "--resume"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        if name == "kept":
            assert "with 1 x 16: the global batch of 16, the data order and the noise continue" in done.stderr
            diffs = {net: rms_difference(latest_weights(two, net), latest_weights(tmp_path / name, net), skip_sn=True)
                     for net in ("G", "D", "G_ema")}
            print(json.dumps({"resumed_by_one_process_rms": diffs}))
            assert all(diff <= bound for diff in diffs.values()), diffs
        else:
            assert "the global batch changes from 16 to 4" in done.stderr
            diff = rms_difference(latest_weights(two, "G"), latest_weights(tmp_path / name, "G"), skip_sn=True)
            print(json.dumps({"global_batch_changed_rms_G": diff}))
            assert diff > 10 * bound
    with pytest.raises(subprocess.CalledProcessError) as e:  # 16 cannot be shared by 3 processes
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3", "-m",
                        "scalegan", "train", *common, "--out-dir", str(two), "--iterations", "6", "--resume"],
                       capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "global batch of 16 (2 processes x 8 images) cannot be shared equally by 3 processes" in e.value.stdout + \
        e.value.stderr


def test_resume_auto_starts_a_new_run_then_continues_it(tiny_npz, tmp_path):
    """--resume auto: an empty run folder starts; a folder with a checkpoint continues; the result equals a run
    that was never stopped, bit for bit."""
    run, straight = tmp_path / "run", tmp_path / "straight"
    first = train(tiny_config(tiny_npz, run, iterations=2, resume="auto"))
    assert first["iterations_this_session"] == 2
    with open(run / "logs" / "metrics.jsonl", "a") as f:  # what a process killed after the checkpoint had logged
        f.write(json.dumps({"step": 3, "loss_g": 1.0}) + "\n" + '{"step": 4, "lo')
    second = train(tiny_config(tiny_npz, run, iterations=4, resume="auto"))
    assert second["iterations_this_session"] == 2 and second["step"] == 4
    train(tiny_config(tiny_npz, straight, iterations=4))
    _same_weights(run, straight)
    assert [x["step"] for x in loss_lines(run)] == [2, 4]
    start = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()
             if '"event": "start"' in x][-1]
    assert start["resumed"] == {"from": "step_0000002", "step": 2, "log_lines_dropped": 2}


def test_trim_logs_keeps_what_precedes_the_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "event": "start"}\n{"step": 5}\n{"step": 6}\n{"ste')
    (tmp_path / "eval.jsonl").write_text('{"step": 4}\n')
    assert trim_logs(tmp_path, 5) == 2
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 0, "event": "start"}\n{"step": 5}\n'
    assert (tmp_path / "eval.jsonl").read_text() == '{"step": 4}\n'
    assert trim_logs(tmp_path, 5) == 0
