"""Images out: grids of image batches, and PNG, GIF and MP4 encoding (bytes for the server, atomic files for the
CLI and the training loop). Every path that writes or sends pictures encodes them here."""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .utils import atomic_path, to_hwc, write_bytes


def make_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile [N, C, H, W] images in [-1, 1] (or uint8) into one uint8 image [H', W', C], ``nrow`` per row."""
    arr = to_hwc(images)
    n, h, w, c = arr.shape
    ncol = nrow
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8)
    for k in range(n):
        r, col = divmod(k, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = arr[k]
    return grid


def sheet_frames(sheet: torch.Tensor, rows: int, steps: int) -> list[np.ndarray]:
    """Animation frames from an interpolation sheet [rows * steps, C, H, W]: frame k shows column k of every row,
    ping-ponged (A -> B -> A)."""
    cols = sheet.reshape(rows, steps, *sheet.shape[1:])
    frames = [make_grid(cols[:, k], nrow=min(rows, 8)) for k in range(steps)]
    return ping_pong(frames)


def ping_pong(frames: list) -> list:
    """``frames`` forth and back, for a seamless loop (the ends are not repeated)."""
    return frames + frames[-2:0:-1]


def _pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _format(path) -> str:
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP"}.get(ext, "PNG")


# --------------------------------------------------------------------------------------------- bytes
def encode_image(array: np.ndarray, format: str = "PNG") -> bytes:
    """A uint8 [H, W, C] array as an image file's bytes (PNG by default)."""
    buffer = io.BytesIO()
    _pil(array).save(buffer, format=format)
    return buffer.getvalue()


def encode_gif(frames: Sequence[np.ndarray], duration_ms: int = 80) -> bytes:
    """uint8 [H, W, C] frames as a looping animated GIF's bytes."""
    images = [_pil(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return buffer.getvalue()


def encode_mp4(frames: Sequence[np.ndarray], fps: int = 12) -> bytes:
    """uint8 [H, W, C] frames as an H.264 MP4 file's bytes (imageio's bundled ffmpeg: the ``serve`` extra). Frames
    are padded (edge pixels) to whole 16-pixel macro blocks (yuv420p); grayscale is written as RGB."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio's FFMPEG format runs)
    except ImportError:
        raise OSError("writing MP4 needs imageio and imageio-ffmpeg: pip install scalegan[serve] (or write a .gif)") \
            from None
    h, w, c = frames[0].shape
    H, W = -(-h // 16) * 16, -(-w // 16) * 16
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "walk.mp4")  # ffmpeg picks the container by the extension
        with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                macro_block_size=16, ffmpeg_log_level="error") as writer:
            for f in frames:
                f = np.repeat(f, 3, -1) if c == 1 else f
                writer.append_data(np.pad(f, ((0, H - h), (0, W - w), (0, 0)), mode="edge"))
        with open(path, "rb") as f:
            return f.read()


def encode_animation(frames: Sequence[np.ndarray], format: str, fps: int = 12) -> bytes:
    """Frames as ``format`` ("gif" or "mp4") bytes."""
    if format == "gif":
        return encode_gif(frames, duration_ms=round(1000 / fps))
    if format == "mp4":
        return encode_mp4(frames, fps)
    raise ValueError(f"animation format must be gif or mp4, got {format!r}")


# --------------------------------------------------------------------------------------------- files
def save_image(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 [H, W, C] array as PNG (or by extension), atomically."""
    with atomic_path(path) as tmp:
        _pil(array).save(tmp, format=_format(path))


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, duration_ms: int = 80) -> None:
    """Write uint8 [H, W, C] frames as a looping animated GIF, atomically."""
    write_bytes(path, encode_gif(frames, duration_ms))


def save_mp4(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: int = 12) -> None:
    """Write frames as an MP4 (``encode_mp4``), atomically."""
    write_bytes(path, encode_mp4(frames, fps))


def save_animation(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: int = 12) -> None:
    """A GIF or an MP4, by ``path``'s extension."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in (".gif", ".mp4"):
        raise ValueError(f"{path}: write an animation as .gif or .mp4")
    write_bytes(path, encode_animation(frames, ext[1:], fps))


__all__ = ["encode_animation", "encode_gif", "encode_image", "encode_mp4", "make_grid", "ping_pong", "save_animation",
           "save_gif", "save_image", "save_mp4", "sheet_frames"]


# --------------------------------------------------------------------------------------------- inversion inputs
def fit_input(image: Image.Image, size: int) -> torch.Tensor:
    """An input image (8-bit grey or RGB, any size) as inversion takes it: centre-cropped to a square, resized
    (bicubic) to ``size``, float [C, size, size] in [-1, 1] (``scalegan invert`` and the server's /v1/invert)."""
    from .data.base import to_float
    from .data.folder import square

    array = np.asarray(square(image, size, Image.Resampling.BICUBIC))
    array = array[:, :, None] if array.ndim == 2 else array
    return to_float(torch.from_numpy(array.copy()).permute(2, 0, 1))


def known_mask(mask: Image.Image, image_size: tuple[int, int], resolution: int, what: str = "the mask") -> torch.Tensor:
    """The known-pixel mask [1, R, R] (1 = known: white >= 128) of an 8-bit grey mask image that has the input's
    size (cropped and resized with it, nearest) or the model's resolution; another size is a ValueError naming
    ``what``."""
    from .data.folder import square

    if mask.size == image_size:
        mask = square(mask, resolution, Image.Resampling.NEAREST)
    elif mask.size != (resolution, resolution):
        raise ValueError(f"{what} is {mask.size[0]}x{mask.size[1]}: it must have the input image's size "
                         f"({image_size[0]}x{image_size[1]}) or the model's resolution ({resolution}x{resolution})")
    return torch.from_numpy((np.asarray(mask) >= 128).astype(np.float32))[None]
