"""Run logs: one JSON object per line in ``logs/metrics.jsonl``, and TensorBoard event files."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path


class RunLogger:
    def __init__(self, log_dir: str | os.PathLike, tensorboard: bool = True):
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.dir / "metrics.jsonl", "a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.dir))
            except ImportError:  # tensorboard is a dependency, but keep training if it is broken
                warnings.warn("tensorboard is not importable: writing JSONL logs only", stacklevel=2)

    def scalars(self, step: int, values: dict, jsonl: bool = True) -> None:
        """A line of ``metrics.jsonl`` (unless ``jsonl=False``) and TensorBoard scalars."""
        if jsonl:
            self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
            self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def image(self, step: int, tag: str, array) -> None:
        """A uint8 [H, W, C] image (sample grids) for TensorBoard."""
        if self.tb is not None:
            self.tb.add_image(tag, array, step, dataformats="HWC")

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
