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

    def record(self, name: str, data: dict) -> None:
        """Append ``data`` as one JSON line to ``logs/NAME`` (``metrics.jsonl`` stays open; others are opened)."""
        if name == "metrics.jsonl":
            self.jsonl.write(json.dumps(data, default=str) + "\n")
            self.jsonl.flush()
            return
        with open(self.dir / name, "a") as f:
            f.write(json.dumps(data, default=str) + "\n")

    def scalars(self, step: int, values: dict, file: str | None = "metrics.jsonl") -> None:
        """TensorBoard scalars, and a JSON line in ``logs/FILE`` unless ``file`` is None."""
        if file is not None:
            self.record(file, {"step": step, **values})
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
