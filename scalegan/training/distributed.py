"""Distributed training from ``torchrun``'s environment: process group, ranks, and the few collectives the loop
needs.

``torchrun --nproc_per_node N -m scalegan train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` (multi-node through its rendezvous); ``init_distributed`` reads them. gloo
runs on CPU, NCCL on CUDA, where each process takes the GPU of its local rank. Without those variables the
run is a single process and every helper here is a no-op.

Rank 0 alone writes logs, sample grids, evaluations and checkpoints; the other ranks then wait in ``wait_for``, a
barrier whose timeout names the rank that did not arrive, so a stuck or lost rank ends the run with one line
instead of a hang.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Rank 0 alone writes checkpoints, sample grids and periodic evaluations while the others wait in their next
# collective; the timeout must cover the longest of those.
TIMEOUT = timedelta(hours=1)
_barriers = {"n": 0}  # ``wait_for`` calls so far: every rank makes the same calls in the same order


class GroupError(RuntimeError):
    """A rank did not arrive at a barrier in time, or the group lost a rank: the run cannot continue."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # the process group was created here (and is destroyed here)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """The ranks torchrun gave this process (a single process when its variables are absent)."""
    if "WORLD_SIZE" not in os.environ:
        return DistInfo()
    try:
        return DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                        int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    except (KeyError, ValueError) as e:
        raise ValueError(f"incomplete torchrun environment ({e}): RANK, WORLD_SIZE and LOCAL_RANK must be "
                         "integers; launch with `torchrun --nproc_per_node N -m scalegan train ...`") from e


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any) and return this process's rank info and device.

    ``device`` is the configured device: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a distributed run (one GPU per
    process, NCCL); ``cpu`` uses gloo."""
    info = env_info()
    dev = torch.device(device)
    if not info.enabled:
        return info, dev
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dist.is_initialized():  # the caller's own group
        if dist.get_world_size() != info.world_size:
            raise RuntimeError("a process group of another size than WORLD_SIZE is already initialised")
        return info, dev
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, timeout=TIMEOUT)
    if info.rank == 0 and restarts_need_fresh_store():
        warnings.warn(RESTART_STORE_ADVICE, stacklevel=2)
    return DistInfo(info.rank, info.world_size, info.local_rank, owns_group=True), dev


# torchrun's agents share one store with their workers across --max-restarts, and a restarted group can read the
# addresses its killed predecessors left there: gloo then fails with "connectFullMesh ... Connection refused" and
# NCCL retries "connect returned Connection refused" (pytorch/pytorch#167288). torch's own switch gives each
# rendezvous round a fresh store.
RESTART_STORE_ADVICE = ("torchrun --max-restarts with the agents' shared store: a restarted group may fail to "
                        "connect (pytorch/pytorch#167288); start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
                        "in its environment (README: Multi-node)")


def restarts_need_fresh_store() -> bool:
    """Whether torchrun may restart this group while sharing its agents' store with the workers."""
    try:
        restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    except ValueError:
        restarts = 0
    return restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"


def wait_for(info: DistInfo, what: str, timeout: float) -> None:
    """Every rank waits here until all have arrived (after ``what``, e.g. rank 0's checkpoint), at most ``timeout``
    seconds; then a ``GroupError`` on every rank names the ranks that did not arrive.

    Arrivals are keys in the process group's store (torchrun's rendezvous store), so every rank, not only rank 0,
    sees who is missing, whatever the backend (gloo's monitored barrier bounds only rank 0's wait)."""
    if not (info.enabled and dist.is_initialized()):
        return
    store = dist.distributed_c10d._get_default_store()
    _barriers["n"] += 1
    keys = [f"scalegan/wait/{_barriers['n']}/{rank}" for rank in range(info.world_size)]  # the attempt's store
    store.set(keys[info.rank], "1")
    try:
        store.wait(keys, timedelta(seconds=timeout))
    except RuntimeError as e:  # DistStoreError: the wait timed out (or the store is gone with rank 0's agent)
        try:
            missing = [rank for rank, key in enumerate(keys) if not store.check([key])]
        except RuntimeError:
            missing = []
        who = (f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}" if missing
               else "the group's store (on rank 0's node)")
        raise GroupError(f"{who} did not arrive within {timeout:g} s {what} (rank {info.rank} of "
                         f"{info.world_size} waited): a stuck or lost process, see its own error; raise "
                         "--barrier-timeout if that work really takes longer") from e


def shutdown(info: DistInfo, wait: bool = True, timeout: float = TIMEOUT.total_seconds()) -> None:
    """Wait for every rank (unless this one failed: the others may never arrive; torchrun stops them), at most
    ``timeout`` seconds, then leave the process group if it was created by ``init_distributed``."""
    if not (info.enabled and dist.is_initialized()):
        return
    if wait:
        wait_for(info, "at the end of training (rank 0's last checkpoint and samples)", timeout)
    if info.owns_group:
        dist.destroy_process_group()


def all_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise sum over ranks (a copy; the input is left as it is)."""
    values = values.clone()
    if info.enabled:
        dist.all_reduce(values)
    return values


def any_rank(flag: bool | torch.Tensor, info: DistInfo | None = None, device: torch.device | None = None) -> bool:
    """True on every rank when it is true on one: ranks stop at the same iteration (signals, time budget) and skip
    the same optimizer steps. ``flag``: a bool, or a one-element tensor (left on its device: one sync). Without
    ``info``, whether a process group is running decides."""
    enabled = info.enabled if info is not None else dist.is_available() and dist.is_initialized()
    if not enabled:
        return bool(flag)
    if isinstance(flag, torch.Tensor):
        t = flag.detach().float().reshape(1)
    else:
        t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
