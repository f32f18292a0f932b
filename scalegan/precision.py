"""Mixed precision as the reference implementations do it: the run's autocast (bf16 or fp16) covers the networks,
and each family marks the parts that stay float32 (*islands*).

- StyleGAN2 (stylegan2-ada): reduced precision only in the ``num_fp16_res`` highest resolutions of G and D; the
  mapping networks, the lower-resolution blocks, the toRGB image sum and D's epilogue stay float32. Under fp16 the
  modulated convolutions pre-normalise weights and styles, and training clamps conv outputs to +-256 unless
  ``conv_clamp`` is set.
- BigGAN: spectral norm's power iteration and singular value, and batch-norm statistics stay float32.
- Every family: losses are computed on float32 logits, parameters and Adam's state are float32 (autocast casts
  copies for the matmuls; the optimiser never sees bf16).

``scope="all"`` (``--precision-scope all``) turns the islands off: every layer then runs in the autocast dtype,
the whole-network mixed precision earlier versions used (faster, less exact). Outside autocast the islands are
no-ops, so float32 training and inference do not depend on any of this.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

SCOPES = ("family", "all")

_scope: contextvars.ContextVar[str] = contextvars.ContextVar("scalegan_precision_scope", default="family")


def reduced_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for ``device_type`` (bf16 or fp16), or None outside autocast."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def island(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A float32 island for code working on ``x``'s device: autocast off inside (under the ``family`` scope), so
    the caller casts its inputs with ``.float()`` and computes in float32; a no-op outside autocast and under the
    ``all`` scope."""
    device_type = x.device.type
    if _scope.get() == "all" or not torch.is_autocast_enabled(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)


@contextlib.contextmanager
def autocast(device_type: str, dtype: torch.dtype | None, scope: str = "family") -> Iterator[None]:
    """The training run's mixed precision: ``torch.autocast`` in ``dtype`` (None: off, float32) with the family's
    float32 islands (``scope="family"``) or without (``"all"``)."""
    if scope not in SCOPES:
        raise ValueError(f"precision scope must be one of {SCOPES}, got {scope!r}")
    token = _scope.set(scope)
    try:
        with torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            yield
    finally:
        _scope.reset(token)
