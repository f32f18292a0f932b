"""Resizing images to the Inception input size, in the three conventions that published FIDs use.

The choice moves FID by whole points at low resolutions, so every metric card names it:

- `tf1-bilinear` (default): TensorFlow 1.x `tf.image.resize_bilinear` with `align_corners=False` and no
  half-pixel centres, the resize inside the original TF FID/IS code; torch-fidelity and NVIDIA's StyleGAN
  evaluators emulate it. Source pixel for output i: `i * in / out`, i.e. the grid is anchored at the top-left
  corner and never reaches the last input row's far side.
- `torch-bilinear`: `F.interpolate(mode="bilinear", align_corners=False)` (half-pixel centres), pytorch-fid's.
- `pil-bicubic`: PIL bicubic on each channel as a float image, clean-fid's "clean" resize (antialiased when
  downscaling).

All take float `[N, C, H, W]` pixel values in [0, 255] and return float `[N, C, size, size]` of the same dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "DEFAULT_RESIZER",
    "RESIZERS",
    "resize",
    "resize_pil_bicubic",
    "resize_tf1_bilinear",
    "resize_torch_bilinear",
]


def _tf1_axis(in_size: int, out_size: int, dtype: torch.dtype, device: torch.device):
    """Low/high source indices and the fractional weight of the high one, for one axis."""
    # TF1 computes the source position in float32: out index * (in / out).
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    pos = torch.arange(out_size, dtype=dtype, device=device) * scale.to(device)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = (pos - lo.to(pos.dtype)).to(dtype)
    return lo, hi, frac


def resize_tf1_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 bilinear resize (`align_corners=False`, no half-pixel centres) of float `[N, C, H, W]` to `size`."""
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected float images [N, C, H, W], got {x.dtype} {list(x.shape)}")
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    y_lo, y_hi, y_frac = _tf1_axis(h, size, x.dtype, x.device)
    x_lo, x_hi, x_frac = _tf1_axis(w, size, x.dtype, x.device)
    # Interpolate along width for the two source rows, then along height.
    top = x.index_select(2, y_lo)  # [N, C, size, W]
    bottom = x.index_select(2, y_hi)
    top = top.index_select(3, x_lo) + (top.index_select(3, x_hi) - top.index_select(3, x_lo)) * x_frac
    bottom = bottom.index_select(3, x_lo) + (bottom.index_select(3, x_hi) - bottom.index_select(3, x_lo)) * x_frac
    return top + (bottom - top) * y_frac[:, None]  # [N, C, size, size]


def resize_torch_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """PyTorch bilinear resize with half-pixel centres and no antialiasing (pytorch-fid's)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def resize_pil_bicubic(x: torch.Tensor, size: int) -> torch.Tensor:
    """PIL bicubic resize of each channel as a 32-bit float image, clipped to [0, 255] (clean-fid's)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    arrays = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((*arrays.shape[:2], size, size), dtype=np.float32)
    for i, image in enumerate(arrays):
        for c, channel in enumerate(image):
            resized = Image.fromarray(channel, mode="F").resize((size, size), Image.Resampling.BICUBIC)
            out[i, c] = np.asarray(resized)
    return torch.from_numpy(np.clip(out, 0, 255)).to(device=x.device, dtype=x.dtype)


RESIZERS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "tf1-bilinear": resize_tf1_bilinear,
    "torch-bilinear": resize_torch_bilinear,
    "pil-bicubic": resize_pil_bicubic,
}
DEFAULT_RESIZER = "tf1-bilinear"


def resize(x: torch.Tensor, size: int, method: str = DEFAULT_RESIZER) -> torch.Tensor:
    """Resize float `[N, C, H, W]` pixel values to `size` x `size` with the named convention."""
    try:
        fn = RESIZERS[method]
    except KeyError:
        raise ValueError(f"unknown resizer {method!r}; choose one of {', '.join(RESIZERS)}") from None
    return fn(x, size)
