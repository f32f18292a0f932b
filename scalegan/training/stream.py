"""An endless, resumable stream of shuffled batches.

Epoch ``e`` uses the permutation drawn from ``seed`` and ``e`` alone, so the position (epoch, batch) is all
a checkpoint needs to continue the exact same data order. In a distributed run the permutation is cut into
global batches of ``batch_size * world_size`` images and rank ``r`` takes the ``r``-th slice of each: the ranks
see disjoint shards, and N ranks x B images see what one process with N x B images sees.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.base import to_float


class _Pixels(Dataset):
    """A dataset's uint8 items (``ImageDataset.pixels``): what loader workers send to the training process."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset.pixels(i)


class BatchStream:
    def __init__(self, dataset, batch_size: int, seed: int, num_workers: int = 0, epoch: int = 0, pos: int = 0,
                 rank: int = 0, world_size: int = 1):
        global_batch = batch_size * world_size
        if len(dataset) < global_batch:
            per_rank = f" ({world_size} processes x {batch_size})" if world_size > 1 else ""
            raise ValueError(f"the dataset has {len(dataset)} images, fewer than one batch of {global_batch}"
                             f"{per_rank}: lower --batch-size")
        self.dataset, self.batch_size, self.seed, self.num_workers = dataset, batch_size, seed, num_workers
        self.rank, self.world_size = rank, world_size
        self.epoch, self.pos = epoch, pos
        self.batches_per_epoch = len(dataset) // global_batch
        self._iter = None

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def _order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=g)

    def _start_epoch(self) -> None:
        order = self._order(self.epoch)
        bs, gb = self.batch_size, self.batch_size * self.world_size
        first = self.rank * bs
        batches = [order[i * gb + first:i * gb + first + bs] for i in range(self.pos, self.batches_per_epoch)]
        tensors = getattr(self.dataset, "tensors", None)
        if tensors is not None:
            images, labels = tensors
            self._iter = ((images[b].float().div_(127.5).sub_(1), labels[b]) for b in batches)
        else:
            # Workers hand over uint8 pixels (a quarter of float32's bytes), converted here as the dataset would.
            pixels = getattr(self.dataset, "has_pixels", False)
            loader = DataLoader(_Pixels(self.dataset) if pixels else self.dataset, num_workers=self.num_workers,
                                batch_sampler=[b.tolist() for b in batches], persistent_workers=False)
            self._iter = ((to_float(x), y) for x, y in loader) if pixels else iter(loader)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos >= self.batches_per_epoch:
            self.epoch, self.pos, self._iter = self.epoch + 1, 0, None
        if self._iter is None:
            self._start_epoch()
        x, y = next(self._iter)
        self.pos += 1
        return x, y
