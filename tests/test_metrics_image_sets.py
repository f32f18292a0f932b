"""`load_image_set` (what `scalegan eval A B` measures) decodes files exactly as training does (`scalegan.data`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scalegan.data import DatasetError, open_dataset
from scalegan.metrics.eval import load_image_set
from scalegan.utils import to_uint8

SIZE = 8


def sixteen_bit_grey(path: Path) -> None:
    """A 16-bit grey ramp: clipping to 8 bits (PIL's convert) would make it nearly all white."""
    ramp = (np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE) * 1000 + 300).astype(np.uint16)
    Image.fromarray(ramp).save(path)


def rgba(path: Path) -> None:
    """Half transparent pixels that store black: dropping alpha differs from compositing on white."""
    pixels = np.zeros((SIZE, SIZE, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[..., 3] = np.linspace(0, 255, SIZE, dtype=np.uint8)[None, :]
    Image.fromarray(pixels, "RGBA").save(path)


def exif_rotated(path: Path) -> None:
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view), as phones write."""
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    pixels[: SIZE // 2, :, 1] = 255  # green top half: after rotation it is the right half
    pixels[:, :2, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


WRITERS = {"sixteen.png": sixteen_bit_grey, "alpha.png": rgba, "rotated.jpg": exif_rotated}


def training_pixels(spec: str, channels: int) -> torch.Tensor:
    """The images a training run reads from `spec`, as uint8."""
    dataset = open_dataset(spec, resolution=SIZE, channels=channels)
    return to_uint8(torch.stack([dataset[i][0] for i in range(len(dataset))]))


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_file_decodes_like_training(tmp_path, name):
    WRITERS[name](tmp_path / name)
    images, labels = load_image_set(tmp_path)
    channels = 1 if name == "sixteen.png" else 3  # a grey file stays grey
    assert images.dtype == torch.uint8 and images.shape == (1, channels, SIZE, SIZE) and labels is None
    expected = training_pixels(f"folder:{tmp_path}", channels)
    assert torch.equal(images, expected)
    assert len(torch.unique(images)) > 2  # a picture, not a flat image that any decoder would agree on
    picture = images[0].int()
    if name == "sixteen.png":  # scaled: 300 -> 1, 63300 -> 246 (clipping would give 255 almost everywhere)
        assert (picture[0, 0, 0], picture[0, -1, -1]) == (1, 246)
    elif name == "alpha.png":  # transparent column white, opaque column the stored colour
        assert picture[:, 0, 0].tolist() == [255, 255, 255] and picture[:, 0, -1].tolist() == [200, 0, 0]
    else:  # turned upright: the green top half of the stored picture is now its right half
        assert picture[1, :, -2:].min() > 200 and picture[1, :, :2].max() < 60


def test_mixed_folder_with_classes_decodes_like_training(tmp_path):
    for k, (name, write) in enumerate(sorted(WRITERS.items())):
        (tmp_path / f"class{k % 2}").mkdir(exist_ok=True)
        write(tmp_path / f"class{k % 2}" / name)
    images, labels = load_image_set(tmp_path)
    assert images.shape == (3, 3, SIZE, SIZE)  # grey repeated to RGB beside colour files
    assert torch.equal(images, training_pixels(f"folder:{tmp_path}", 3))
    assert labels.tolist() == open_dataset(f"folder:{tmp_path}", resolution=SIZE).labels.tolist() == [0, 0, 1]


def test_npz_reads_like_training(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    np.savez(tmp_path / "labelled.npz", x=x, y=np.array([0, 2, 1, 2, 0]))
    images, labels = load_image_set(tmp_path / "labelled.npz")
    assert torch.equal(images, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert torch.equal(images, open_dataset(f"npz:{tmp_path / 'labelled.npz'}").tensors[0])
    assert labels.tolist() == [0, 2, 1, 2, 0]
    # `scalegan sample --npz` marks an unconditional generator's samples with y = -1: unlabelled, not an error.
    np.savez(tmp_path / "samples.npz", x=x, y=np.full(5, -1, np.int64))
    images, labels = load_image_set(tmp_path / "samples.npz")
    assert labels is None and images.shape == (5, 3, SIZE, SIZE)
    np.savez(tmp_path / "floats.npz", x=x.astype(np.float32) / 127.5 - 1)
    with pytest.raises(DatasetError, match="dtype float32"):  # refused as training refuses it
        load_image_set(tmp_path / "floats.npz")


def test_no_silent_resize(tmp_path):
    Image.new("RGB", (SIZE, SIZE), (1, 2, 3)).save(tmp_path / "a.png")
    Image.new("RGB", (2 * SIZE, SIZE), (1, 2, 3)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"different sizes \(H x W\): 8x8 \(e.g. a.png\), 8x16 \(e.g. b.png\)"):
        load_image_set(tmp_path)
    (tmp_path / "a.png").unlink()
    images, _ = load_image_set(tmp_path)  # one size, not square: kept as it is, not cropped
    assert images.shape == (1, 3, SIZE, 2 * SIZE)
    with pytest.raises(FileNotFoundError, match="neither an .npz file nor a folder"):
        load_image_set(tmp_path / "absent")
