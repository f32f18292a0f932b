"""What a restoration task does to an image (``scalegan.invert``'s degradation model): the tasks, the BT.601 grey
of colourisation, the noise level of denoising (given, or estimated from the input; clipping accounted for) and
``Degradation``, which maps a generated image to what the input shows and puts known pixels back. The search that
inverts through it is ``scalegan.invert`` (its module docstring explains each task)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

TASKS = ("invert", "inpaint", "superres", "denoise", "colorize")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601: colourisation compares this grey of the generated image


def grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma [N, 1, H, W] of RGB images [N, 3, H, W] (on any scale: the weights sum to 1)."""
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def estimate_noise_sigma(images: torch.Tensor) -> torch.Tensor:
    """The standard deviation of additive white Gaussian noise per image [N], on the [0, 1] pixel scale, of images
    [N, C, H, W] in [-1, 1]: median(|d|) / 0.6745 over the finest Haar diagonal coefficients d = (a - b - c + d) / 2
    of every 2x2 block and channel (orthonormal, so pure noise of deviation s gives coefficients of deviation s)."""
    x = images.float()
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    d = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]).abs() / 2
    # Blocks with a pixel at the range's ends hold clipped, shrunken noise: left out where enough others remain.
    clipped = F.max_pool2d(at_range_end(x).float().flatten(0, 1)[:, None], 2).reshape(d.shape) > 0
    sigma = []
    for coefficients, out in zip(d.flatten(1), clipped.flatten(1)):
        kept = coefficients[~out]
        sigma.append((kept if len(kept) >= 16 else coefficients).median())
    return torch.stack(sigma) / 0.6745 / 2  # / 2: from the [-1, 1] scale to [0, 1]


def at_range_end(x: torch.Tensor) -> torch.Tensor:
    """Which pixels of images in [-1, 1] are at an end of the range (within half an 8-bit step): clipped."""
    return x.abs() >= 1 - 1 / 255


# --------------------------------------------------------------------------------------------- degradation
class Degradation:
    """What the input is made of: the generated image ``x`` [B, C, R, R] -> what is compared with the input.

    ``channels``: G's image channels (colourisation needs 3); ``noise_sigma`` (denoise): the noise level per input
    image [N] or one for all, on the [0, 1] scale (the loss's expected residual; see the module docstring)."""

    def __init__(self, task: str, resolution: int, mask: torch.Tensor | None = None, factor: int = 4,
                 channels: int = 3, noise_sigma: torch.Tensor | float | None = None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        self.task, self.resolution, self.factor, self.mask = task, resolution, factor, None
        self.channels, self.noise_sigma, self.clipped_share = channels, None, None
        if task == "colorize" and channels != 3:
            raise ValueError("task colorize needs an RGB model; this one is grey")
        if task != "denoise" and noise_sigma is not None:
            raise ValueError("noise_sigma applies to task denoise only")
        if task == "denoise" and noise_sigma is not None:
            sigma = torch.as_tensor(noise_sigma, dtype=torch.float32).reshape(-1)
            if not (torch.isfinite(sigma).all() and (sigma >= 0).all()):
                raise ValueError(f"the noise sigma must be finite and >= 0, got {sigma.tolist()}")
            self.noise_sigma = sigma
        if task == "inpaint":
            if mask is None:
                raise ValueError("inpainting needs a mask (1 = known pixel, 0 = missing): pass --mask MASK.png")
            mask = torch.as_tensor(mask).float()
            mask = mask.reshape(1, 1, *mask.shape) if mask.dim() == 2 else mask
            if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != (resolution, resolution):
                raise ValueError(f"the mask must be [H, W] or [N, 1, H, W] at the model's resolution {resolution}, "
                                 f"got {list(mask.shape)}")
            if not mask.sum() > 0:
                raise ValueError("the mask marks no pixel as known (1 = known, 0 = missing)")
            self.mask = (mask > 0.5).float()
        if task == "superres" and (factor < 2 or resolution % factor):
            raise ValueError(f"super-resolution factor must be >= 2 and divide the model's resolution {resolution}, "
                             f"got {factor}")

    @property
    def input_channels(self) -> int:
        """The channels of the input images this task compares with (colourisation: grey)."""
        return 1 if self.task == "colorize" else self.channels

    def expected_residual(self, index: torch.Tensor | None, device) -> torch.Tensor | None:
        """Denoising: the noise's expected mean square per row [B] on the [-1, 1] scale, 4 sigma^2 (1 - p) with p the
        share of the input's pixels clipped at an end of the range (``clipped_share``; see the module docstring),
        else None."""
        if self.noise_sigma is None:
            return None
        sigma = self.noise_sigma.to(device)
        kept = 1 - self.clipped_share.to(device) if self.clipped_share is not None else torch.ones_like(sigma)
        if len(sigma) > 1 and index is not None:
            sigma, kept = sigma[index.to(device)], kept[index.to(device)]
        return (2 * sigma).square() * kept

    @property
    def input_size(self) -> int:
        """The side of the input images this task takes."""
        return self.resolution // self.factor if self.task == "superres" else self.resolution

    def __call__(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if self.task == "superres":
            return F.avg_pool2d(x, self.factor)
        if self.task == "inpaint":
            return x * self.weight(index, x.device)
        if self.task == "colorize":
            return grey(x)
        return x

    def weight(self, index: torch.Tensor | None, device) -> torch.Tensor | None:
        """The mask of the images ``index`` (which input each row of the batch belongs to), or None."""
        if self.mask is None:
            return None
        mask = self.mask.to(device)
        return mask if len(mask) == 1 or index is None else mask[index.to(device)]

    def preview(self, target: torch.Tensor) -> torch.Tensor:
        """A full-resolution guess from the input alone (for scoring classes): upsampled, or holes grey."""
        if self.task == "superres":
            return F.interpolate(target, scale_factor=self.factor, mode="bilinear", align_corners=False)
        if self.task == "inpaint":
            return target * self.weight(None, target.device)
        if self.task == "colorize":
            return target.expand(-1, self.channels, -1, -1)
        return target

    def restore(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The output image: inpainting keeps the known pixels of the input; the others are the generated image."""
        if self.task == "inpaint":
            mask = self.weight(None, generated.device)
            return mask * target + (1 - mask) * generated
        return generated
