"""scripts/slurm/train.sbatch with stand-ins for Slurm's commands: it refuses a rendezvous host that does not
resolve, or that resolves to loopback in a multi-node job (the silent-localhost hang), and otherwise starts one
torchrun agent per node with the c10d rendezvous, restarts and --resume auto."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm" / "train.sbatch"

pytestmark = pytest.mark.skipif(shutil.which("getent") is None, reason="needs getent (glibc)")


def _sbatch(tmp_path, head: str, nodes: int, **env) -> tuple[subprocess.CompletedProcess, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "torchrun.args"
    stubs = {
        "scontrol": f'#!/bin/bash\necho "{head}"\n',  # `scontrol show hostnames LIST`: the first node first
        "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n',  # runs its command once here
        "torchrun": f'#!/bin/bash\necho "$TORCH_DISABLE_SHARE_RDZV_TCP_STORE $*" > "{record}"\n',
    }
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node[1-2]",
            "SLURM_NNODES": str(nodes), "SLURM_JOB_ID": "42", "RUN": str(tmp_path / "run"), **env}
    done = subprocess.run(["bash", str(SCRIPT), "--model", "biggan-128"], capture_output=True, text=True, env=full,
                          cwd=tmp_path)
    return done, record.read_text() if record.is_file() else ""


def test_a_host_that_does_not_resolve_fails_loudly(tmp_path):
    done, args = _sbatch(tmp_path, "no-such-node.invalid", 2)
    assert done.returncode == 1 and not args
    assert "scalegan sbatch: error: the rendezvous host no-such-node.invalid does not resolve" in done.stderr


def test_a_loopback_host_fails_in_a_multi_node_job(tmp_path):
    done, args = _sbatch(tmp_path, "localhost", 2)
    assert done.returncode == 1 and not args
    assert "resolves to" in done.stderr and "(loopback)" in done.stderr and "RDZV_HOST" in done.stderr


def test_one_agent_per_node_with_rendezvous_restarts_and_resume_auto(tmp_path):
    done, args = _sbatch(tmp_path, "localhost", 1, GPUS_PER_NODE="0", PROCS_PER_NODE="2")
    assert done.returncode == 0, done.stderr
    assert args.split() == ["1", "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                            "--rdzv-endpoint", "localhost:29500", "--rdzv-id", "42", "--rdzv-conf",
                            "join_timeout=900", "--max-restarts", "3", "-m", "scalegan", "train", "--device", "cpu",
                            "--out-dir", str(tmp_path / "run"), "--resume", "auto", "--model", "biggan-128"]
