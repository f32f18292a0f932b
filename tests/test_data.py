"""Datasets: each format from fixtures made in tmp_path, each DatasetError path, Fashion-MNIST if present."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scalegan.data import DatasetError, ImageDataset, Mirrored, UnreadableImageWarning, open_dataset
from scalegan.data.idx import FASHION_MNIST_CLASSES

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------------- fixtures


def write_idx(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    """Write an IDX image file and label file the way the MNIST distribution does."""
    directory.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    image_bytes = struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes()
    label_bytes = struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()
    for part, raw in (("images-idx3", image_bytes), ("labels-idx1", label_bytes)):
        name = f"{prefix}-{part}-ubyte"
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)


def digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images with no zero pixel, so the padding is distinguishable from the picture."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def dump_py2_style(obj: object, path: Path) -> None:
    """Pickle with protocol 2 naming numpy.core, as the Python 2 CIFAR files do."""
    raw = pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(raw)


def cifar_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(directory: Path, per_batch: int = 2) -> dict[str, tuple[np.ndarray, list[int]]]:
    directory.mkdir(parents=True)
    batches = {}
    for k, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        data, labels = cifar_images(per_batch, k), [(k + j) % 10 for j in range(per_batch)]
        dump_py2_style({b"batch_label": b"x", b"data": data, b"labels": labels}, directory / name)
        batches[name] = (data, labels)
    names = [name.encode() for name in "airplane automobile bird cat deer dog frog horse ship truck".split()]
    dump_py2_style({b"label_names": names, b"num_vis": 3072}, directory / "batches.meta")
    return batches


def write_cifar100(directory: Path) -> None:
    directory.mkdir(parents=True)
    for k, name in enumerate(["train", "test"]):
        data = cifar_images(3, 10 + k)
        fine, coarse = [0, 99, 42], [0, 19, 7]
        dump_py2_style({b"data": data, b"fine_labels": fine, b"coarse_labels": coarse}, directory / name)
    names = [f"class{i}".encode() for i in range(100)]
    dump_py2_style({b"fine_label_names": names, b"coarse_label_names": names[:20]}, directory / "meta")


def save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> Image.Image:
    return Image.new("RGB", size, colour)


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut in half: its header passes PIL's verify(), decoding it fails."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def scaled(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels as the datasets should return them, computed in float32 like the datasets."""
    return torch.from_numpy(pixels.astype(np.float32)) / 127.5 - 1.0


def level(value: int) -> torch.Tensor:
    return scaled(np.array(value, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------- IDX


def test_idx_pads_28_to_32_with_background_and_keeps_labels(tmp_path: Path) -> None:
    images, labels = digits(5)
    write_idx(tmp_path, "train", images, labels)
    ds = open_dataset(f"fashion-mnist:{tmp_path}")
    assert isinstance(ds, ImageDataset)
    assert (len(ds), ds.resolution, ds.channels, ds.num_classes) == (5, 32, 1, 10)
    assert ds.class_names == FASHION_MNIST_CLASSES
    x, y = ds[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.ndim == 0 and int(y) == labels[3]
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(x[0][border] == -1.0)
    torch.testing.assert_close(x[0, 2:30, 2:30], scaled(images[3]))
    stored, stored_labels = ds.tensors
    assert stored.dtype == torch.uint8 and stored.shape == (5, 1, 32, 32)
    assert stored_labels.dtype == torch.int64 and stored_labels.tolist() == labels.tolist()


def test_idx_plain_files_test_split_and_root(tmp_path: Path) -> None:
    images, labels = digits(4, seed=1)
    write_idx(tmp_path, "t10k", images, labels, gz=False)
    ds = open_dataset("mnist", split="test", root=str(tmp_path))
    assert ds.class_names == [str(d) for d in range(10)]
    assert [int(ds[i][1]) for i in range(4)] == labels.tolist()
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        open_dataset("mnist", split="train", root=str(tmp_path))  # only t10k-* was written


def test_idx_resolution_and_channels(tmp_path: Path) -> None:
    images, labels = digits(2)
    write_idx(tmp_path, "train", images, labels)
    ds = open_dataset(f"idx:{tmp_path}", resolution=16, channels=3)
    x, _ = ds[1]
    assert x.shape == (3, 16, 16) and ds.resolution == 16 and ds.channels == 3
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    padded = Image.fromarray(np.pad(images[1], 2)).resize((16, 16), Image.Resampling.BILINEAR)
    torch.testing.assert_close(x[0], scaled(np.asarray(padded)))
    assert ds.class_names == [str(c) for c in range(int(labels.max()) + 1)]  # idx: numbered classes


def test_idx_bad_magic_and_truncation(tmp_path: Path) -> None:
    images, labels = digits(3)
    write_idx(tmp_path, "train", images, labels, gz=False)
    labels_file = tmp_path / "train-labels-idx1-ubyte"
    labels_file.write_bytes(struct.pack(">II", 0x803, 3) + bytes(3))
    with pytest.raises(DatasetError, match="magic number 0x00000803, expected 0x00000801"):
        open_dataset(f"idx:{tmp_path}")
    write_idx(tmp_path, "train", images, labels, gz=False)
    images_file = tmp_path / "train-images-idx3-ubyte"
    images_file.write_bytes(images_file.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="truncated or damaged"):
        open_dataset(f"idx:{tmp_path}")


def test_idx_mismatched_lengths(tmp_path: Path) -> None:
    images, labels = digits(3)
    write_idx(tmp_path, "train", images, labels[:2])
    with pytest.raises(DatasetError, match="3 images but 2 labels"):
        open_dataset(f"idx:{tmp_path}")


def test_missing_idx_directory_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"apt-get install dataset-fashion-mnist.*--data-root DIR"):
        open_dataset("fashion-mnist", root=str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match="--data-root DIR"):
        open_dataset(f"mnist:{tmp_path / 'absent'}")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    ds = open_dataset("fashion-mnist")
    assert (len(ds), ds.num_classes, ds.resolution, ds.channels) == (60000, 10, 32, 1)
    images, labels = ds.tensors
    assert torch.bincount(labels).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert int(images[:, :, :2].max()) == 0 and int(images[:, :, :, -2:].max()) == 0  # the padding
    assert json.loads(json.dumps(ds.describe()))["size"] == 60000


# ---------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_layout_labels_and_names(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = open_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}")
    assert (len(ds), ds.resolution, ds.channels, ds.num_classes) == (10, 32, 3, 10)
    assert ds.class_names[:2] == ["airplane", "automobile"] and ds.class_names[-1] == "truck"
    data, labels = batches["data_batch_3"]
    x, y = ds[2 * 2 + 1]  # second image of the third batch
    assert int(y) == labels[1]
    row = data[1]  # 1024 red, 1024 green, 1024 blue values, each plane row-major
    torch.testing.assert_close(x, scaled(row.reshape(3, 32, 32)))
    assert x[1, 0, 5] == level(row[1024 + 5])

    test = open_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", split="test")
    assert len(test) == 2 and int(test[0][1]) == batches["test_batch"][1][0]


def test_cifar_to_grey_matches_pil_luminance(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path / "c10", per_batch=1)
    ds = open_dataset(f"cifar10:{tmp_path / 'c10'}", channels=1)
    rgb = batches["data_batch_1"][0][0].reshape(3, 32, 32).transpose(1, 2, 0)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    assert ds[0][0].shape == (1, 32, 32)
    torch.testing.assert_close(ds[0][0][0], scaled(expected))


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    write_cifar100(tmp_path / "cifar-100-python")
    ds = open_dataset(f"cifar100:{tmp_path / 'cifar-100-python'}", split="test")
    assert ds.num_classes == 100 and ds.class_names[42] == "class42"
    assert [int(ds[i][1]) for i in range(3)] == [0, 99, 42]


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10", per_batch=1)
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.mkdir, (str(marker),)

    (tmp_path / "c10" / "data_batch_2").write_bytes(pickle.dumps({b"data": Payload()}))
    with pytest.raises(DatasetError, match="refusing to load"):
        open_dataset(f"cifar10:{tmp_path / 'c10'}")
    assert not marker.exists()


def test_cifar_missing_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10", per_batch=1)
    (tmp_path / "c10" / "batches.meta").unlink()
    with pytest.raises(DatasetError, match="lacks batches.meta"):
        open_dataset(f"cifar10:{tmp_path / 'c10'}")


# ---------------------------------------------------------------------------------------------- folders


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes with a mix of formats, one corrupt file and one file that is not an image at all."""
    root = tmp_path / "images"
    save(root / "cat" / "a.png", solid((255, 0, 0)))
    save(root / "cat" / "nested" / "b.JPG", solid((0, 0, 255), (20, 12)), quality=95)
    save(root / "dog" / "c.bmp", solid((0, 255, 0)))
    (root / "dog" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / "dog" / "notes.txt").write_text("not an image and not counted")
    return root


def test_folder_classes_labels_and_skip_count(image_folder: Path) -> None:
    with pytest.warns(UnreadableImageWarning, match=r"skipped 1 unreadable .* of 4 .*corrupt\.png"):
        ds = open_dataset(f"folder:{image_folder}", resolution=8)
    assert ds.tensors is None
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert len(ds) == 3 and [int(ds[i][1]) for i in range(3)] == [0, 0, 1]
    x, _ = ds[0]
    assert x.shape == (3, 8, 8) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[:, 4, 4], torch.tensor([1.0, -1.0, -1.0]))  # red
    assert ds.describe()["skipped"] == 1
    batch_x, batch_y = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch_x.shape == (3, 3, 8, 8) and batch_y.tolist() == [0, 0, 1]


def test_folder_default_resolution_and_unlabelled(tmp_path: Path) -> None:
    save(tmp_path / "one.png", solid((10, 20, 30)))
    save(tmp_path / "two.webp", solid((10, 20, 30)))
    ds = open_dataset(f"folder:{tmp_path}")
    assert (len(ds), ds.num_classes, ds.class_names, ds.resolution) == (2, 0, [], 128)
    x, y = ds[1]
    assert x.shape == (3, 128, 128) and int(y) == 0


def test_folder_centre_crops_non_square(tmp_path: Path) -> None:
    stripes = np.zeros((20, 60, 3), dtype=np.uint8)
    stripes[:, :20, 0] = 255  # red | green | blue thirds
    stripes[:, 20:40, 1] = 255
    stripes[:, 40:, 2] = 255
    save(tmp_path / "wide.png", Image.fromarray(stripes))
    x, _ = open_dataset(f"folder:{tmp_path}", resolution=10)[0]
    assert torch.all(x[1] == 1.0) and torch.all(x[0] == -1.0) and torch.all(x[2] == -1.0)


def test_folder_rgba_palette_and_sixteen_bit(tmp_path: Path) -> None:
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparent pixels that store black
    save(tmp_path / "a_rgba.png", clear)
    save(tmp_path / "b_palette.gif", solid((0, 0, 255)).convert("P"))
    wide = np.full((8, 8), 128 * 257, dtype=np.uint16)  # 16-bit mid-grey, 128 in 8 bits
    wide[:, :4] = 0
    save(tmp_path / "c_16bit.png", Image.fromarray(wide))
    ds = open_dataset(str(tmp_path), resolution=8)
    assert ds.describe()["kind"] == "folder"
    assert torch.all(ds[0][0] == 1.0)  # composited on white, not left black
    torch.testing.assert_close(ds[1][0][:, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))
    sixteen = ds[2][0]
    assert torch.all(sixteen[:, :, 0] == -1.0)
    assert torch.all(sixteen[:, :, -1] == level(128))  # scaled down, not clipped to white


def test_folder_channel_conversions(tmp_path: Path) -> None:
    colour = (200, 40, 90)
    save(tmp_path / "grey.png", Image.new("L", (8, 8), 77))
    save(tmp_path / "rgb.png", solid(colour, (8, 8)))
    rgb = open_dataset(f"folder:{tmp_path}", resolution=8)
    grey_as_rgb = rgb[0][0]
    assert torch.all(grey_as_rgb == level(77))  # repeated into all three channels
    grey = open_dataset(f"folder:{tmp_path}", resolution=8, channels=1)
    luminance = Image.new("RGB", (1, 1), colour).convert("L").getpixel((0, 0))
    assert grey[1][0].shape == (1, 8, 8) and torch.all(grey[1][0] == level(luminance))


def test_folder_truncated_jpeg_is_counted_when_opened(tmp_path: Path) -> None:
    truncated_jpeg(tmp_path / "a.jpg")  # passes PIL's verify(); the check at open decodes it
    save(tmp_path / "b.png", solid((0, 255, 0)))
    with pytest.warns(UnreadableImageWarning, match=r"skipped 1 unreadable image file\(s\) of 2 .*a\.jpg"):
        ds = open_dataset(f"folder:{tmp_path}", resolution=4)
    assert len(ds) == 1 and ds.skipped == 1


def test_folder_file_broken_after_opening_is_replaced_by_the_next_image(tmp_path: Path) -> None:
    save(tmp_path / "a.png", solid((255, 0, 0)))
    save(tmp_path / "b.png", solid((0, 255, 0)))
    ds = open_dataset(f"folder:{tmp_path}", resolution=4)
    assert len(ds) == 2 and ds.skipped == 0
    truncated_jpeg(tmp_path / "a.png")  # replaced while a run reads the folder
    with pytest.warns(UnreadableImageWarning, match=r"could not decode .*a\.png"):
        x, _ = ds[0]
    torch.testing.assert_close(x, ds[1][0])
    assert ds.skipped == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file known to be bad is skipped quietly afterwards
        ds[0]
    with pytest.raises(IndexError):
        ds[2]


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no images"):
        open_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_bytes(b"<html>not found</html>")
    with pytest.raises(DatasetError, match="none of the 1 image files"):
        open_dataset(f"folder:{tmp_path / 'broken'}")
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(f"folder:{tmp_path / 'absent'}")


# ---------------------------------------------------------------------------------------------- NPZ


def test_npz_layouts_labels_and_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    y = np.array([2, 0, 1, 2])
    np.savez(tmp_path / "nhwc.npz", x=nhwc, y=y, class_names=np.array(["a", "b", "c"]))
    np.savez(tmp_path / "nchw.npz", x=nhwc.transpose(0, 3, 1, 2), y=y)
    np.savez(tmp_path / "grey.npz", x=nhwc[..., 0])
    for name in ("nhwc", "nchw"):
        ds = open_dataset(f"npz:{tmp_path / name}.npz")
        assert (ds.resolution, ds.channels) == (6, 3)
        torch.testing.assert_close(ds[0][0], scaled(nhwc[0].transpose(2, 0, 1)))
        assert [int(ds[i][1]) for i in range(4)] == y.tolist()
    assert open_dataset(f"npz:{tmp_path / 'nhwc.npz'}").class_names == ["a", "b", "c"]
    assert open_dataset(f"npz:{tmp_path / 'nchw.npz'}").class_names == ["0", "1", "2"]
    grey = open_dataset(str(tmp_path / "grey.npz"), resolution=3)
    assert (grey.channels, grey.num_classes, grey[0][0].shape, int(grey[0][1])) == (1, 0, (1, 3, 3), 0)


def test_npz_labels_of_minus_one_mean_unlabelled(tmp_path: Path) -> None:
    """`scalegan sample --npz` writes y = -1 for an unconditional generator's samples."""
    x = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    np.savez(tmp_path / "samples.npz", x=x, y=np.full(3, -1, np.int64))
    ds = open_dataset(f"npz:{tmp_path / 'samples.npz'}")
    assert (ds.num_classes, ds.class_names, ds.tensors[1].tolist()) == (0, [], [0, 0, 0])
    assert torch.equal(ds.tensors[0][:, 0], torch.from_numpy(x))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 4, 4), np.float32)}, r"dtype float32.*\[N, H, W, C\].*astype\(np.uint8\)"),
        ({"x": np.zeros((2, 4, 6, 3), np.uint8)}, "4x6 .* must be square"),
        ({"x": np.zeros((2, 4, 4, 5), np.uint8)}, r"shape \(2, 4, 4, 5\)"),
        ({"x": np.zeros((0, 4, 4), np.uint8)}, "has no images"),
        ({"y": np.zeros(2, np.int64)}, "no array named x"),
        ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(2, np.int64)}, "3 images but 2 labels"),
        ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, -4, 1])}, "label -4 at index 1"),
        ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([-1, -1, 1])}, "label -1 at index 0"),
        ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, 1, 2_000_000])}, "label 2000000 at index 2"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0.0, 1.0])}, "must be integers"),
        (
            {
                "x": np.zeros((3, 4, 4), np.uint8),
                "y": np.array([0, 1, 2]),
                "class_names": np.array(["a", "b"]),
            },
            r"label 2 at index 2 .*2 class names",
        ),
        (
            {
                "x": np.zeros((2, 4, 4), np.uint8),
                "y": np.array([0, 1]),
                "class_names": np.array(["a", 1], object),
            },
            "pickled object array",
        ),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"npz:{tmp_path / 'bad.npz'}")


# ---------------------------------------------------------------------------------------------- specs


def test_auto_detection(tmp_path: Path) -> None:
    write_idx(tmp_path / "idx", "train", *digits(2))
    write_cifar10(tmp_path / "c10", per_batch=1)
    write_cifar100(tmp_path / "c100")
    np.savez(tmp_path / "arrays.npz", x=np.zeros((2, 4, 4), np.uint8))
    save(tmp_path / "pictures" / "p.png", solid((1, 2, 3)))
    found = {name: open_dataset(str(tmp_path / name)).describe()["kind"] for name in os.listdir(tmp_path)}
    assert found == {
        "idx": "idx",
        "c10": "cifar10",
        "c100": "cifar100",
        "arrays.npz": "npz",
        "pictures": "folder",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spec": "imagenet-lsun"}, r"unknown dataset spec 'imagenet-lsun'.*'folder:DIR'.*'npz:FILE'"),
        ({"spec": "cifar10"}, "cifar10 needs a location"),
        ({"spec": "fashion-mnist", "split": "val"}, "split must be one of"),
        ({"spec": "fashion-mnist", "channels": 4}, "channels must be 1"),
        ({"spec": "fashion-mnist", "resolution": 0}, "resolution must be a positive integer"),
    ],
)
def test_bad_specs(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        open_dataset(**kwargs)


def test_bare_file_that_is_not_npz(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match="not an .npz"):
        open_dataset(str(tmp_path / "data.csv"))


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetError, ValueError)
    with pytest.raises(ValueError):
        open_dataset("no-such-dataset")


def test_mirrored_doubles_with_flipped_copies(tmp_path: Path, image_folder: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), y=np.arange(5) % 2)
    plain = open_dataset(f"npz:{tmp_path / 'a.npz'}")
    ds = Mirrored(plain)
    assert len(ds) == 10 and ds.describe() == {**plain.describe(), "size": 10, "mirror": True}
    for i in range(5):
        assert torch.equal(ds[i][0], plain[i][0]) and torch.equal(ds[5 + i][0], plain[i][0].flip(-1))
        assert ds[i][1] == ds[5 + i][1] == plain[i][1]
    assert torch.equal(ds[-1][0], ds[9][0])
    with pytest.raises(IndexError):
        ds[10]
    images, labels = ds.tensors  # in memory: both halves, as the items give them
    assert images.dtype == torch.uint8 and torch.equal(images[7], plain.tensors[0][2].flip(-1))
    assert labels.tolist() == [0, 1, 0, 1, 0] * 2
    with pytest.warns(UnreadableImageWarning):
        folder = Mirrored(open_dataset(f"folder:{image_folder}", resolution=8))
    assert folder.tensors is None and len(folder) == 6 and folder.describe()["skipped"] == 1
    assert torch.equal(folder[4][0], folder[1][0].flip(-1))
