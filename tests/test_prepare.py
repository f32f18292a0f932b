"""`scalegan prepare` and packed datasets: every source kind, dedup, unreadable files, mirror, resume after an
interruption, refusal of a different command, training on a packed folder, and bad input as one error line."""

from __future__ import annotations

import importlib.util
import json
import zipfile

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from PIL import Image

import scalegan.data.prepare as prep
from scalegan.cli import main
from scalegan.data import DatasetError, PackedDataset, open_dataset
from scalegan.data.prepare import prepare
from scalegan.training import TrainConfig, train

CLASSES = ["ant", "bee", "cat"]


def _picture(seed: int, size=(14, 10), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def _class_folders(root, per_class: int = 4):
    """Class folders of RGB and grey images of different shapes (the crop policy has work to do)."""
    for y, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (10 + 3 * i, 16 - i)
            _picture(10 * y + i, size, "RGB" if i % 2 == 0 else "L").save(root / name / f"{i}.png")
    return root


def _items(dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [dataset[i] for i in range(len(dataset))]


def _same_items(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(_items(a), _items(b)):
        assert torch.equal(xa, xb) and int(ya) == int(yb)


def test_class_folders_pack_to_the_folder_loaders_pixels(tmp_path):
    src = _class_folders(tmp_path / "src")
    out = tmp_path / "out"
    manifest = prepare(str(src), out, resolution=8, shard_size=5, progress=False)
    assert manifest["count"] == 12 and [s["count"] for s in manifest["shards"]] == [5, 5, 2]
    plot = ["class_balance.png"] if importlib.util.find_spec("matplotlib") else []  # else a note says it was skipped
    assert sorted(p.name for p in out.iterdir()) == [*plot, "class_names.json", "labels.npy", "manifest.json",
                                                     "report.json", "shard-00000.npy", "shard-00001.npy",
                                                     "shard-00002.npy"]
    note = "class balance plot" if plot else "matplotlib is not installed"
    assert any(n.startswith(note) for n in json.loads((out / "report.json").read_text())["notes"])
    folder = open_dataset(f"folder:{src}", resolution=8)
    for spec in (str(out), f"packed:{out}"):
        packed = open_dataset(spec)
        assert isinstance(packed, PackedDataset) and packed.tensors is None
        assert packed.class_names == CLASSES == folder.class_names
        assert (packed.resolution, packed.channels) == (8, 3)
        assert packed.class_counts().tolist() == [4, 4, 4]
        _same_items(packed, folder)
    # Another resolution or channel count is converted on read, as the folder loader would.
    _same_items(open_dataset(str(out), resolution=4, channels=1),
                open_dataset(f"npz:{_as_npz(folder, tmp_path)}", resolution=4, channels=1))
    assert sorted(packed.verify()) == ["class_names.json", "labels.npy", "shard-00000.npy", "shard-00001.npy",
                                       "shard-00002.npy"]
    assert main(["verify", str(out)]) == 0
    shard = out / "shard-00001.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    open_dataset(str(out))  # opening does not hash the shards...
    with pytest.raises(DatasetError, match="shard-00001.npy is damaged"):
        open_dataset(str(out)).verify()  # ...verify does


def _as_npz(dataset, tmp_path) -> str:
    """The uint8 pixels and labels of a dataset as an NPZ file."""
    x = np.stack([((x + 1) * 127.5).round().to(torch.uint8).numpy() for x, _ in _items(dataset)])
    path = tmp_path / "as.npz"
    np.savez(path, x=x, y=np.array([int(y) for _, y in _items(dataset)]), class_names=np.array(dataset.class_names))
    return str(path)


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_loose_images_with_a_labels_file(tmp_path, kind):
    src = tmp_path / "src"
    src.mkdir()
    table = {"a.png": "zebra", "b.png": "horse", "c.jpg": "zebra", "d.png": "horse"}
    for i, name in enumerate([*table, "unlisted.png"]):
        _picture(i).save(src / name)
    if kind == "csv":
        labels = tmp_path / "labels.csv"
        labels.write_text("file,class\n" + "".join(f"{f},{c}\n" for f, c in table.items()))
    else:
        labels = tmp_path / "labels.json"
        labels.write_text(json.dumps(table))
    prepare(str(src), tmp_path / "out", resolution=8, labels_file=str(labels), progress=False)
    packed = open_dataset(str(tmp_path / "out"))
    assert packed.class_names == ["horse", "zebra"]  # sorted class names
    assert packed.labels.tolist() == [1, 0, 1, 0]  # files in name order: a, b, c, d
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any("1 image(s)" in note and "not in the labels file" in note for note in report["notes"])


def test_zip_of_class_folders_equals_the_folders(tmp_path):
    src = _class_folders(tmp_path / "top")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(src.rglob("*.png")):
            z.write(path, path.relative_to(tmp_path).as_posix())  # top/ant/0.png: the top folder is no class
    prepare(str(archive), tmp_path / "from_zip", resolution=8, progress=False)
    prepare(str(src), tmp_path / "from_folders", resolution=8, progress=False)
    for name in ("shard-00000.npy", "labels.npy", "class_names.json"):
        assert (tmp_path / "from_zip" / name).read_bytes() == (tmp_path / "from_folders" / name).read_bytes()


def test_npz_source_keeps_pixels_labels_and_names(tiny_npz, tmp_path):
    for resolution in (32, 16):
        out = tmp_path / f"out{resolution}"
        prepare(f"npz:{tiny_npz}", out, resolution=resolution, progress=False)
        packed, npz = open_dataset(str(out)), open_dataset(f"npz:{tiny_npz}", resolution=resolution)
        assert packed.channels == 1 and packed.class_names == ["top", "middle", "bottom"]
        _same_items(packed, npz)


def test_duplicates_and_unreadable_files_are_reported_not_fatal(tmp_path):
    src = _class_folders(tmp_path / "src", per_class=2)
    (src / "bee" / "copy.png").write_bytes((src / "ant" / "0.png").read_bytes())
    _picture(0, (10, 16)).save(src / "cat" / "same_pixels.bmp")  # another file format, the same pixels
    (src / "cat" / "broken.png").write_bytes(b"<html>404</html>")
    manifest = prepare(str(src), tmp_path / "out", resolution=8, progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert manifest["count"] == 6 and manifest["report"]["duplicates"] == 2
    assert [(d["file"].split("/")[-1], d["duplicate_of"].split("/")[-1]) for d in report["duplicates"]] == \
        [("copy.png", "0.png"), ("same_pixels.bmp", "0.png")]
    assert [u["file"].split("/")[-1] for u in report["unreadable"]] == ["broken.png"]
    assert "UnidentifiedImageError" in report["unreadable"][0]["reason"]
    kept = prepare(str(src), tmp_path / "all", resolution=8, dedup=False, progress=False)
    assert kept["count"] == 8


def test_mirror_doubles_with_the_flip_after_each_image(tmp_path):
    src = _class_folders(tmp_path / "src", per_class=2)
    plain = open_dataset(str(prepare(str(src), tmp_path / "plain", resolution=8, progress=False) and
                             tmp_path / "plain"))
    mirrored = open_dataset(str(prepare(str(src), tmp_path / "mirror", resolution=8, mirror=True, shard_size=4,
                                        progress=False) and tmp_path / "mirror"))
    assert len(mirrored) == 2 * len(plain) and mirrored.class_counts().tolist() == [4, 4, 4]
    for i in range(len(plain)):
        assert torch.equal(mirrored[2 * i][0], plain[i][0])
        assert torch.equal(mirrored[2 * i + 1][0], plain[i][0].flip(-1))
    with pytest.raises(DatasetError, match="even"):
        prepare(str(src), tmp_path / "odd", resolution=8, mirror=True, shard_size=3, progress=False)


def test_an_interrupted_prepare_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    src = _class_folders(tmp_path / "src")
    (src / "cat" / "broken.png").write_bytes(b"")
    (src / "bee" / "dup.png").write_bytes((src / "ant" / "1.png").read_bytes())
    options = dict(resolution=8, shard_size=4, mirror=True, progress=False)
    prepare(str(src), tmp_path / "whole", **options)

    write_progress = prep._write_progress

    def stop_after_the_first_shard(out, state):
        write_progress(out, state)
        raise KeyboardInterrupt  # as Ctrl-C would, right after shard 0 is recorded

    monkeypatch.setattr(prep, "_write_progress", stop_after_the_first_shard)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(src), tmp_path / "cut", **options)
    progress = json.loads((tmp_path / "cut" / ".progress.json").read_text())
    assert progress["consumed"] == 2 and [s["name"] for s in progress["shards"]] == ["shard-00000.npy"]
    monkeypatch.setattr(prep, "_write_progress", write_progress)

    decoded = []
    decode = prep._decode
    monkeypatch.setattr(prep, "_decode", lambda ref: decoded.append(ref) or decode(ref))
    prepare(str(src), tmp_path / "cut", **options)
    assert len(decoded) == 14 - 2  # only what the first run had not finished
    whole = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert whole == sorted(p.name for p in (tmp_path / "cut").iterdir())
    for name in whole:
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    decoded.clear()
    prepare(str(src), tmp_path / "cut", **options)  # finished: the same command does nothing
    assert decoded == []


def test_a_different_command_on_an_existing_out_is_refused(tmp_path):
    src = _class_folders(tmp_path / "src", per_class=2)
    prepare(str(src), tmp_path / "out", resolution=8, progress=False)
    with pytest.raises(DatasetError, match=r"\(resize, resolution differ\); pass --overwrite"):
        prepare(str(src), tmp_path / "out", resolution=6, resize="pad", progress=False)
    manifest = prepare(str(src), tmp_path / "out", resolution=6, resize="pad", overwrite=True, progress=False)
    assert manifest["resolution"] == 6 and open_dataset(str(tmp_path / "out")).resolution == 6
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        prepare(str(src), tmp_path / "other", resolution=8, overwrite=True, progress=False)


def test_pad_and_stretch_policies():
    wide = Image.fromarray(np.full((4, 8), 200, np.uint8))  # 8 wide, 4 high
    padded = np.asarray(prep.fit(wide, 8, "pad"))
    assert (padded[2:6] == 200).all() and (padded[:2] == 0).all() and (padded[6:] == 0).all()
    assert (np.asarray(prep.fit(wide, 8, "stretch")) == 200).all()
    assert np.asarray(prep.fit(wide, 8, "crop")).shape == (8, 8)


def test_training_runs_on_a_packed_dataset(tiny_npz, tmp_path):
    prepare(f"npz:{tiny_npz}", tmp_path / "packed", resolution=32, shard_size=40, progress=False)
    cfg = TrainConfig.from_preset(
        "biggan-fmnist", data=f"packed:{tmp_path / 'packed'}", out_dir=str(tmp_path / "run"), iterations=2,
        batch_size=8, n_d_steps=1, ema_start=1, log_every=1, sample_every=0, ckpt_every=0, progress=False,
        tensorboard=False, model_overrides={**tiny_overrides("biggan-fmnist"), "n_classes": 3})
    summary = train(cfg)
    assert summary["step"] == 2
    resolved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert resolved["dataset"]["kind"] == "packed" and resolved["dataset"]["size"] == 96


def _bad(tmp_path, what: str) -> list[str]:
    src = tmp_path / "src"
    if what in ("missing-file", "columns", "json-values"):
        src.mkdir()
        _picture(0).save(src / "a.png")
        labels = tmp_path / ("labels.json" if what == "json-values" else "labels.csv")
        labels.write_text({"missing-file": "file,class\na.png,x\nb.png,y\n", "columns": "name,label\na.png,x\n",
                           "json-values": '{"a.png": 3}'}[what])
        return [str(src), str(tmp_path / "out"), "--resolution", "8", "--labels-file", str(labels)]
    if what == "empty-class":
        _class_folders(src, per_class=1)
        (src / "dog").mkdir()
    elif what == "unreadable":
        (src / "ant").mkdir(parents=True)
        (src / "ant" / "x.png").write_bytes(b"")
    else:
        _class_folders(src, per_class=1)
    out = tmp_path / "out"
    if what == "out-file":
        out.write_text("")
    return [str(tmp_path / "nope") if what == "missing" else str(src), str(out), "--resolution",
            "0" if what == "resolution" else "8"]


@pytest.mark.parametrize("what, hint", [
    ("missing", "does not exist"), ("missing-file", "names 1 file(s) not in"), ("columns", "header row"),
    ("json-values", "JSON object of file name -> class name"), ("empty-class", "hold no images"),
    ("resolution", "integer >= 1"), ("out-file", "is a file"), ("unreadable", "none of the 1 images"),
    ("disk-full", "No space left on device"),
])
def test_bad_input_is_one_error_line(tmp_path, monkeypatch, capsys, what, hint):
    argv = ["prepare", *_bad(tmp_path, what), "--no-progress"]
    if what == "disk-full":
        def full(path, *args, **kwargs):
            raise OSError(28, "No space left on device", str(path))

        monkeypatch.setattr(np.lib.format, "open_memmap", full)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scalegan prepare: error: ") and hint in lines[0], err
    assert "Traceback" not in out + err
    if what == "disk-full":
        assert "run the same command again" in lines[0]


def test_worker_processes_write_the_same_bytes(tmp_path):
    src = _class_folders(tmp_path / "src", per_class=2)
    (src / "ant" / "broken.png").write_bytes(b"")
    prepare(str(src), tmp_path / "one", resolution=8, shard_size=4, progress=False)
    prepare(str(src), tmp_path / "two", resolution=8, shard_size=4, workers=2, progress=False)
    for name in ("shard-00000.npy", "shard-00001.npy", "labels.npy", "report.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_workers_hand_over_uint8_and_the_batches_are_the_same(tiny_npz, tmp_path, workers):
    """The training stream reads packed (and folder) items as uint8 and converts them in the loop's process: the
    batches equal the datasets' own float32 items, mirrored copies included."""
    from scalegan.data import Mirrored
    from scalegan.training.stream import BatchStream

    prepare(f"npz:{tiny_npz}", tmp_path / "packed", resolution=32, progress=False)
    for dataset in (PackedDataset(tmp_path / "packed"), Mirrored(PackedDataset(tmp_path / "packed"))):
        assert dataset.has_pixels and dataset.pixels(1)[0].dtype == torch.uint8
        stream = BatchStream(dataset, 16, seed=3, num_workers=workers)
        order = stream._order(0)
        for k in range(2):
            x, y = next(stream)
            expected = [dataset[int(i)] for i in order[16 * k:16 * (k + 1)]]
            assert x.dtype == torch.float32 and torch.equal(x, torch.stack([e[0] for e in expected]))
            assert torch.equal(y, torch.stack([torch.as_tensor(e[1]) for e in expected]))
