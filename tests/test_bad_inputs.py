"""A corpus of bad input, built on the fly in a temporary folder, fed to every subcommand of the real CLI in-process.

Every bad input must give exit status 2 and exactly one stderr line, ``scalegan CMD: error: ...``, that names the
file or the value (never a traceback, nothing on stdout). Image folders that hold some unreadable files are used:
the readable images train, and one warning counts the rest.

The corpus: images (CMYK JPEG, 16-bit PNG, palette PNG, 1x1, 1000x3, truncated PNG / JPEG, zero-byte file, text
named .png), image folders (empty class folders, nothing readable, a mix of good and bad files), NPZ files (wrong
dtype, rank, channels, lengths, labels, NaN, broken zip, pickles), training config files (NaN, wrong types, unknown
keys, broken JSON), weights folders (tampered config.json, truncated / empty / non-finite safetensors), ``--set``
values, devices, and each subcommand's own flags and positional arguments."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from PIL import Image

import scalegan
from scalegan.cli import main
from scalegan.data import UnreadableImageWarning, open_dataset
from scalegan.manifest import write_manifest
from scalegan.weights import save_generator

CLASSES = ["top", "middle", "bottom", "left", "right"]  # tiny_overrides gives BigGAN 5 classes


# --------------------------------------------------------------------------------------------- the corpus
def _rgb(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _good_images(folder, seed: int) -> None:
    """Six readable files of awkward kinds: plain RGB, CMYK JPEG, 16-bit, palette, 1 pixel, 1000 x 3."""
    folder.mkdir(parents=True, exist_ok=True)
    _rgb((40, 40), seed).save(folder / "rgb.png")
    _rgb((40, 40), seed + 1).convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    ramp = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "sixteen.png")
    _rgb((40, 40), seed + 2).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one_pixel.png")
    _rgb((1000, 3), seed + 3).save(folder / "elongated.png")


BAD_FILES = ("truncated.png", "truncated.jpg", "zero.png", "text.png")


def _bad_images(folder, seed: int) -> None:
    """Four unreadable files: truncated PNG and JPEG, a zero-byte file and a text file named .png."""
    folder.mkdir(parents=True, exist_ok=True)
    png, jpeg = _png_bytes(_rgb((64, 64), seed)), _jpeg_bytes(_rgb((64, 64), seed + 1))
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("<html>404 Not Found</html>\n")


def _npz(path, **arrays) -> None:
    np.savez(path, **arrays)


def _npz_files(c) -> None:
    x = np.zeros((6, 8, 8, 1), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    npz = c / "npz"
    npz.mkdir()
    _npz(npz / "float64.npz", x=x.astype(np.float64) / 255, y=y)
    nan = x.astype(np.float32)
    nan[0, 0, 0, 0] = np.nan
    _npz(npz / "nan.npz", x=nan, y=y)
    _npz(npz / "int64.npz", x=x.astype(np.int64), y=y)
    _npz(npz / "float_labels.npz", x=x, y=y.astype(np.float32))
    _npz(npz / "nan_labels.npz", x=x, y=np.full(6, np.nan))
    _npz(npz / "rank2.npz", x=np.zeros((6, 64), dtype=np.uint8), y=y)
    _npz(npz / "rank5.npz", x=np.zeros((6, 1, 8, 8, 1), dtype=np.uint8), y=y)
    _npz(npz / "five_channels.npz", x=np.zeros((6, 8, 8, 5), dtype=np.uint8), y=y)
    _npz(npz / "not_square.npz", x=np.zeros((6, 8, 12, 3), dtype=np.uint8), y=y)
    _npz(npz / "length.npz", x=x, y=y[:4])
    _npz(npz / "negative.npz", x=x, y=np.array([0, 1, -3, 0, 1, 2]))
    _npz(npz / "out_of_range.npz", x=x, y=np.array([0, 1, 7, 0, 1, 2]), class_names=np.array(["a", "b", "c"]))
    _npz(npz / "huge_label.npz", x=x, y=np.array([0, 1, 10**9, 0, 1, 2]))
    _npz(npz / "labels_2d.npz", x=x, y=y.reshape(6, 1))
    _npz(npz / "no_x.npz", images=x, y=y)
    _npz(npz / "empty.npz", x=np.zeros((0, 8, 8, 1), dtype=np.uint8), y=np.zeros(0, dtype=np.int64))
    _npz(npz / "names_numbers.npz", x=x, y=y, class_names=np.array([1, 2, 3]))
    _npz(npz / "names_no_labels.npz", x=x, class_names=np.array(["a", "b", "c"]))
    np.savez(npz / "pickled.npz", x=x, y=np.array([0, "one", None, 0, 1, 2], dtype=object))
    good = (npz / "float64.npz").read_bytes()
    (npz / "truncated.npz").write_bytes(good[: len(good) // 2])
    (npz / "zero.npz").write_bytes(b"")
    (npz / "text.npz").write_text("x,y\n1,2\n")
    _npz(npz / "unlabelled.npz", x=x)
    _npz(npz / "latents_wrong_dim.npz", latents=np.zeros((2, 7), dtype=np.float32), y=np.zeros(2, dtype=np.int64))


CONFIGS = {
    "nan": '{"lr_g": NaN}',
    "infinity": '{"beta1": -Infinity}',
    "iterations_text": '{"iterations": "10"}',
    "ema_text": '{"ema": "yes"}',
    "model_number": '{"model": 3}',
    "device_number": '{"device": 0}',
    "overrides_text": '{"model_overrides": {"ch": "wide"}}',
    "unknown_key": '{"learning_rate": 0.1}',
    "unknown_objective": '{"objective": {"n_g_steps": 2}}',
    "unknown_model": '{"model": "biggan-9000"}',
    "negative": '{"iterations": -5}',
    "zero_batch": '{"batch_size": 0}',
    "precision": '{"precision": "bf17"}',
    "broken": '{"lr_g": 0.1,',
    "empty": "",
    "null": "null",
    "list": "[1, 2]",
    "train_list": '{"train": [1, 2]}',
    "unknown_augment": '{"augment": "rotate"}',
    "bad_device": '{"device": "tpu"}',
}


def _configs(c) -> None:
    folder = c / "configs"
    folder.mkdir()
    for name, text in CONFIGS.items():
        (folder / f"{name}.json").write_text(text)
    (folder / "binary.json").write_bytes(b"\xff\xfe\x00junk")
    (folder / "directory.json").mkdir()


def _tamper(folder, edit) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    path.write_text(edit(data) if callable(edit) else edit)


def _weights(c) -> None:
    """A good tiny weights folder and copies with one thing broken each."""
    import shutil

    torch.manual_seed(0)
    G = scalegan.api.create_model("biggan-fmnist", **tiny_overrides("biggan-fmnist"))[0]
    good = save_generator(G, c / "weights" / "good", class_names=CLASSES)

    def copy(name):
        return shutil.copytree(good, c / "weights" / name)

    def with_model(**fields):
        return lambda d: json.dumps({**d, "model": {**d["model"], **fields}})

    _tamper(copy("broken_json"), '{"format": 2, "model": {')
    _tamper(copy("config_list"), "[1, 2, 3]")
    _tamper(copy("no_model"), lambda d: json.dumps({k: v for k, v in d.items() if k != "model"}))
    _tamper(copy("unknown_family"), lambda d: json.dumps({**d, "family": "vqgan", "model": {
        **d["model"], "family": "vqgan"}}))
    _tamper(copy("unknown_field"), with_model(colour=3))
    _tamper(copy("future_format"), lambda d: json.dumps({**d, "format": 99}))
    _tamper(copy("nan_field"), lambda d: json.dumps({**d, "model": {**d["model"], "bn_eps": float("nan")}}))
    _tamper(copy("ch_mismatch"), with_model(ch=16))  # caught by the manifest
    _tamper(copy("ch_mismatch_manifest"), with_model(ch=16))
    write_manifest(c / "weights" / "ch_mismatch_manifest", ["model.safetensors", "config.json"])  # by the shapes
    for name, names in [("class_names_number", 5), ("class_names_count", list("abcdefg")), ("class_names_mixed", [
            "a", 1, "c", "d", "e"])]:
        _tamper(copy(name), lambda d, names=names: json.dumps({**d, "class_names": names}))
        write_manifest(c / "weights" / name, ["model.safetensors", "config.json"])
    weights_file = good / "model.safetensors"
    data = weights_file.read_bytes()
    (copy("truncated_weights") / "model.safetensors").write_bytes(data[: len(data) // 2])
    (copy("truncated_weights_manifest") / "model.safetensors").write_bytes(data[: len(data) // 2])
    write_manifest(c / "weights" / "truncated_weights_manifest", ["model.safetensors", "config.json"])
    (copy("zero_weights") / "model.safetensors").write_bytes(b"")
    (copy("text_weights") / "model.safetensors").write_text("not a safetensors file")
    (copy("no_weights") / "model.safetensors").unlink()
    nan_folder = copy("nan_weights")
    next(v for v in G.state_dict().values() if v.is_floating_point()).fill_(float("nan"))  # shares the storage
    save_generator(G, nan_folder, class_names=CLASSES)
    run = c / "weights" / "run_dangling"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("ckpt_000100\n")
    (c / "weights" / "fake.onnx").write_text("not onnx")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    c = tmp_path_factory.mktemp("corpus")
    # A folder of classes with readable files of every awkward kind, unreadable files and an empty class folder.
    _good_images(c / "mixed" / "a", 0)
    _good_images(c / "mixed" / "b", 10)
    _bad_images(c / "mixed" / "b", 20)
    (c / "mixed" / "c_empty").mkdir()
    _bad_images(c / "all_bad" / "a", 30)
    _good_images(c / "class_all_bad" / "a", 50)
    _bad_images(c / "class_all_bad" / "b", 60)
    (c / "only_empty" / "a").mkdir(parents=True)
    (c / "only_empty" / "b").mkdir()
    (c / "nothing").mkdir()
    _good_images(c / "loose", 40)  # no class folders: unlabelled
    _npz_files(c)
    _configs(c)
    _weights(c)
    return c


# --------------------------------------------------------------------------------------------- the cases
TRAIN = ["--iterations", "1", "--batch-size", "4", "--no-progress", "--no-tensorboard", "--sample-every", "0",
         "--out-dir", "{c}/runs/r"]
DEV = "cuda:7"  # no machine this runs on has 8 GPUs: "CUDA is not available" or "has 1 CUDA device(s)"
W = "{c}/weights"


def case(id: str, argv: list[str] | str, *hints: str):
    """One bad input: its argv (``{c}`` is the corpus folder) and the texts its error line must contain."""
    return pytest.param(argv.split() if isinstance(argv, str) else argv, hints, id=id)


NPZ_HINTS = {  # file -> what the error line must say
    "float64": "dtype float64", "nan": "dtype float32", "int64": "dtype int64", "float_labels": "integers",
    "nan_labels": "integers", "rank2": "shape (6, 64)", "rank5": "shape (6, 1, 8, 8, 1)",
    "five_channels": "shape (6, 8, 8, 5)", "not_square": "square", "length": "4 labels", "negative": "label -3",
    "out_of_range": "label 7", "huge_label": "label 1000000000", "labels_2d": "one-dimensional",
    "no_x": "no array named x", "empty": "no images", "names_numbers": "class_names", "names_no_labels": "no labels",
    "pickled": "pickled", "truncated": "not an .npz file", "zero": "not an .npz file", "text": "not an .npz file",
}
NPZ_TRAIN = [case(f"train-npz-{name}", ["train", "--data", f"npz:{{c}}/npz/{name}.npz", *TRAIN], f"{name}.npz", hint)
             for name, hint in NPZ_HINTS.items()]
NPZ_OTHER = [
    case("classifier-npz-rank5", "train-classifier --data {c}/npz/rank5.npz --out-dir {c}/clf", "shape"),
    case("classifier-npz-negative", "train-classifier --data npz:{c}/npz/negative.npz --out-dir {c}/clf",
         "label -3"),
    case("classifier-npz-unlabelled", "train-classifier --data npz:{c}/npz/unlabelled.npz --out-dir {c}/clf",
         "no class labels"),
    case("eval-sets-npz-float", "eval {c}/npz/float64.npz {c}/npz/nan.npz --n 4", "dtype float64"),
    case("eval-sets-npz-truncated", "eval {c}/npz/truncated.npz {c}/npz/zero.npz --n 4", "truncated.npz"),
]

CONFIG_HINTS = {
    "nan": "lr_g", "infinity": "beta1", "iterations_text": "iterations", "ema_text": "ema", "model_number": "model",
    "device_number": "device", "overrides_text": "ch", "unknown_key": "learning_rate",
    "unknown_objective": "n_g_steps", "unknown_model": "biggan-9000", "negative": "iterations",
    "zero_batch": "batch_size", "precision": "bf17", "broken": "not valid JSON", "empty": "not valid JSON",
    "null": "expected a JSON object", "list": "expected a JSON object", "train_list": "train",
    "unknown_augment": "rotate", "bad_device": "tpu", "binary": "binary.json", "directory": "directory.json",
    "missing": "missing.json",
}
FILE_LEVEL = {"broken", "empty", "null", "list", "binary", "directory", "missing"}  # these name the file
CONFIG_CASES = [case(f"train-config-{name}", ["train", "--dry-run", "--config", f"{{c}}/configs/{name}.json"],
                     *([f"{name}.json"] if name in FILE_LEVEL else []), hint)
                for name, hint in CONFIG_HINTS.items()]

SET_CASES = [
    case("set-lr-negative", "train --dry-run --set lr_g=-1", "lr_g", "--lr-g"),
    case("set-iterations-text", "train --dry-run --set iterations=abc", "iterations", "--iterations"),
    case("set-nonexistent", "train --dry-run --set nonexistent=1", "nonexistent"),
    case("set-ch-negative", "train --dry-run --set ch=-8", "ch"),
    case("set-ch-zero", "train --dry-run --set ch=0", "ch"),
    case("set-ch-nan", "train --dry-run --set ch=NaN", "ch"),
    case("set-bn-eps-nan", "train --dry-run --set bn_eps=NaN", "bn_eps"),
    case("set-bn-eps-negative", "train --dry-run --set bn_eps=-1", "bn_eps"),
    case("set-n-classes-negative", "train --dry-run --set n_classes=-1", "n_classes"),
    case("set-resolution-text", "train --dry-run --set resolution=big", "resolution"),
    case("set-no-value", "train --dry-run --set ch", "KEY=VALUE"),
    case("set-no-key", "train --dry-run --set =3", "KEY=VALUE"),
    case("set-attn-text", "train --dry-run --set g_attn=[\"x\"]", "g_attn"),
    case("info-set-negative", "info biggan-fmnist --set ch=-8", "ch"),
    case("info-set-unknown", "info biggan-fmnist --set nonexistent=1", "nonexistent"),
]

TRAIN_FLAGS = [
    case("train-lr-text", "train --dry-run --lr-g fast", "fast"),
    case("train-lr-negative", "train --dry-run --lr-g -1", "-1"),
    case("train-iterations-text", "train --dry-run --iterations abc", "abc"),
    case("train-ema-decay", "train --dry-run --ema-decay 1.5", "ema_decay"),
    case("train-precision", "train --dry-run --precision fp8", "fp8"),
    case("train-unknown-model", "train --dry-run --model biggan-9000", "biggan-9000"),
    case("train-threads-zero", "train --dry-run --threads 0", "--threads"),
    case("train-unknown-flag", "train --dry-run --learning-rate 0.1", "--learning-rate"),
    case("train-augment", "train --dry-run --augment rotate", "rotate"),
    case("train-eval-metrics", "train --dry-run --eval-every 10 --eval-metrics fid,bogus", "bogus"),
    case("train-missing-data", ["train", "--data", "{c}/no_such_dir", *TRAIN], "no_such_dir"),
    case("train-unknown-spec", ["train", "--data", "imagenet-21k", *TRAIN], "imagenet-21k"),
    case("train-folder-empty-classes", ["train", "--data", "folder:{c}/only_empty", *TRAIN], "only_empty"),
    case("train-folder-nothing", ["train", "--data", "folder:{c}/nothing", *TRAIN], "nothing"),
    case("train-folder-all-bad", ["train", "--data", "{c}/all_bad", *TRAIN], "all_bad"),
    case("train-folder-is-file", ["train", "--data", "folder:{c}/loose/rgb.png", *TRAIN], "rgb.png is a file"),
    case("train-image-file", ["train", "--data", "{c}/loose/rgb.png", *TRAIN], "rgb.png"),
    case("train-resume-nothing", ["train", "--data", "npz:{c}/npz/unlabelled.npz", "--resume", *TRAIN[:-2],
                                  "--out-dir", "{c}/runs/never"], "never"),
]

DEVICES = [
    case(f"{cmd}-device-{dev.replace(':', '')}", [*argv.split(), "--device", dev], dev)
    for cmd, argv in [("train", "train --dry-run"), ("sample", f"sample {W}/good --n 2"),
                      ("eval", f"eval {W}/good --ref npz:{{c}}/npz/unlabelled.npz --n 2"),
                      ("export", f"export {W}/good {{c}}/out/x.onnx"), ("serve", f"serve {W}/good"),
                      ("convert", "convert --list"),
                      ("train-classifier", "train-classifier --data npz:{c}/npz/unlabelled.npz --out-dir {c}/clf")]
    for dev in (DEV, "tpu")
] + [
    case("sample-device-empty", ["sample", f"{W}/good", "--device", ""], "''"),
    case("sample-device-index", f"sample {W}/good --device cpu:x", "cpu:x"),
]

WEIGHTS_HINTS = {
    "broken_json": "not valid JSON", "config_list": "expected a JSON object", "no_model": "no model section",
    "unknown_family": "vqgan", "unknown_field": "colour", "future_format": "99", "nan_field": "bn_eps",
    "ch_mismatch": "config.json", "ch_mismatch_manifest": "mis-shaped", "class_names_number": "class_names",
    "class_names_count": "7 class names", "class_names_mixed": "class_names",
    "truncated_weights": "model.safetensors", "truncated_weights_manifest": "model.safetensors",
    "zero_weights": "model.safetensors", "text_weights": "model.safetensors", "no_weights": "model.safetensors",
    "nan_weights": "non-finite", "run_dangling": "ckpt_000100",
}
WEIGHTS_CASES = [case(f"{cmd}-weights-{name}", [*argv.split(), f"{W}/{name}", *rest.split()], name, hint)
                 for name, hint in WEIGHTS_HINTS.items()
                 for cmd, argv, rest in [("sample", "sample", "--n 2 --grid {c}/out/g.png"), ("info", "info", "")]]
WEIGHTS_CASES += [
    case("export-weights-truncated", f"export {W}/truncated_weights {{c}}/out/x.onnx", "model.safetensors"),
    case("serve-weights-mismatch", f"serve {W}/ch_mismatch_manifest", "mis-shaped"),
    case("eval-weights-broken", f"eval {W}/broken_json --ref npz:{{c}}/npz/unlabelled.npz --n 2", "not valid JSON"),
]

SAMPLE = [
    case("sample-missing", "sample {c}/does_not_exist --n 2", "does_not_exist"),
    case("sample-class-index", f"sample {W}/good --class 99 --n 2", "99"),
    case("sample-class-name", f"sample {W}/good --class sweater --n 2", "sweater"),
    case("sample-n-and-per-class", f"sample {W}/good --n 2 --per-class 2", "--per-class"),
    case("sample-per-class-zero", f"sample {W}/good --per-class 0", "--per-class"),
    case("sample-n-text", f"sample {W}/good --n many", "many"),
    case("sample-truncation-nan", f"sample {W}/good --truncation nan", "nan"),
    case("sample-seed-text", f"sample {W}/good --seed x", "--seed"),
    case("sample-max-batch-zero", f"sample {W}/good --max-batch 0", "--max-batch"),
    case("sample-mix-layers", f"sample {W}/good --mix 2 --mix-layers 5-2", "5-2"),
    case("sample-standing-negative", f"sample {W}/good --standing-stats -1", "--standing-stats"),
    case("sample-interp-kind", f"sample {W}/good --interp w", "--interp"),
    case("sample-grid-in-file", f"sample {W}/good --n 2 --grid {W}/good/config.json/g.png",
         "config.json is a file"),
    case("sample-onnx-source", f"sample {W}/fake.onnx --n 2", "fake.onnx", "--backend onnx"),
]

OTHERS = [
    case("info-unknown", "info biggan-9000", "biggan-9000"),
    case("info-missing-path", "info {c}/weights/nope/", "nope/ does not exist"),
    case("convert-missing", "convert {c}/nope.pth {c}/out/conv", "nope.pth"),
    case("convert-text", "convert {c}/configs/list.json {c}/out/conv", "list.json"),
    case("convert-wrong-format", "convert {c}/configs/list.json {c}/out/conv --source-format biggan-pytorch",
         "list.json"),
    case("convert-no-src", "convert", "SRC"),
    case("convert-no-out", f"convert {W}/good", "OUT"),
    case("convert-unknown-name", "convert --download biggan-deep-1024", "biggan-deep-1024"),
    case("convert-bn-eps", f"convert {W}/good {{c}}/out/conv --bn-eps 0", "--bn-eps"),
    case("export-missing", "export {c}/nope {c}/out/x.onnx", "nope"),
    case("export-opset", f"export {W}/good {{c}}/out/x.onnx --opset 9", "opset"),
    case("export-format", f"export {W}/good {{c}}/out/x.onnx --format tflite", "tflite"),
    case("export-truncation", f"export {W}/good {{c}}/out/x.onnx --truncation -1", "--truncation"),
    case("export-no-out", f"export {W}/good", "OUT"),
    case("eval-no-ref", f"eval {W}/good --n 2", "--ref"),
    case("eval-missing-set", "eval {c}/nope_a {c}/nope_b", "nope_a"),
    case("eval-metrics", "eval {c}/npz/unlabelled.npz {c}/npz/unlabelled.npz --metrics fid,bogus", "bogus"),
    case("eval-backbone", "eval {c}/npz/unlabelled.npz {c}/npz/unlabelled.npz --backbone vgg", "vgg"),
    case("eval-classifier-missing", "eval {c}/npz/unlabelled.npz {c}/npz/unlabelled.npz --backbone "
         "classifier:{c}/noclf", "noclf"),
    case("eval-kid-zero", "eval a b --kid-subsets 0", "--kid-subsets"),
    case("eval-ref-bad", f"eval {W}/good --ref npz:{{c}}/npz/rank5.npz --n 2", "shape"),
    case("classifier-epochs", "train-classifier --data npz:{c}/npz/unlabelled.npz --out-dir {c}/clf --epochs 0",
         "--epochs"),
    case("classifier-channels", "train-classifier --out-dir {c}/clf --channels 2", "--channels"),
    case("classifier-lr", "train-classifier --out-dir {c}/clf --lr nan", "nan"),
    case("classifier-no-out", "train-classifier --data npz:{c}/npz/unlabelled.npz", "--out-dir"),
    case("classifier-folder-unlabelled", "train-classifier --data folder:{c}/loose --out-dir {c}/clf",
         "no class labels"),
    case("serve-missing", "serve {c}/nope", "nope"),
    case("serve-port-zero", f"serve {W}/good --port 0", "--port"),
    case("serve-port-high", f"serve {W}/good --port 70000", "70000"),
    case("serve-max-batch", f"serve {W}/good --max-batch 0", "--max-batch"),
    case("serve-queue", f"serve {W}/good --queue-size 0", "--queue-size"),
    case("serve-timeout", f"serve {W}/good --timeout 0", "--timeout"),
    case("serve-wait", f"serve {W}/good --max-wait-ms -1", "--max-wait-ms"),
    case("serve-public-no-token", f"serve {W}/good --host 0.0.0.0", "--token"),
    case("serve-onnx-backend", f"serve {W}/good --backend onnx", "onnx"),
    case("serve-onnx-text", f"serve {W}/fake.onnx --backend onnx", "fake.onnx"),
    case("serve-onnx-torch", f"serve {W}/fake.onnx", "fake.onnx"),
    case("sample-npz-is-folder", f"sample {W}/good --n 2 --npz {{c}}/npz", "npz"),
    case("sample-class-negative", f"sample {W}/good --n 2 --class -1", "-1"),
    case("sample-threads", f"sample {W}/good --threads -1", "--threads"),
    case("export-out-is-folder", f"export {W}/good {{c}}/npz", "npz"),
    case("convert-scalegan-weights", f"convert {W}/good/model.safetensors {{c}}/out/conv", "model.safetensors"),
    case("eval-sets-mixed-sizes", "eval {c}/loose {c}/loose", "different sizes"),
    case("eval-ref-n-zero", f"eval {W}/good --ref npz:{{c}}/npz/unlabelled.npz --ref-n 0", "--ref-n"),
    case("train-out-dir-is-file", ["train", "--data", "npz:{c}/npz/unlabelled.npz", *TRAIN[:-2], "--out-dir",
                                   "{c}/loose/rgb.png"], "rgb.png is a file"),
    case("no-command", [], "COMMAND"),
    case("unknown-command", "generate", "generate"),
]

# Subcommands added by other work in the same release: a few cases each (their own tests hold the rest).
NEW_COMMANDS = [
    case("invert-missing-source", "invert {c}/nope {c}/loose/rgb.png --out-dir {c}/out/inv", "nope"),
    case("invert-missing-image", f"invert {W}/good {{c}}/loose/nope.png --out-dir {{c}}/out/inv", "nope.png"),
    case("invert-zero-byte-image", f"invert {W}/good {{c}}/mixed/b/zero.png --out-dir {{c}}/out/inv", "zero.png"),
    case("invert-text-image", f"invert {W}/good {{c}}/mixed/b/text.png --out-dir {{c}}/out/inv", "text.png"),
    case("invert-truncated-image", f"invert {W}/good {{c}}/mixed/b/truncated.jpg --out-dir {{c}}/out/inv",
         "truncated.jpg"),
    case("invert-device", f"invert {W}/good {{c}}/loose/rgb.png --out-dir {{c}}/out/inv --device tpu", "tpu"),
    case("invert-inpaint-no-mask", f"invert {W}/good {{c}}/loose/rgb.png --out-dir {{c}}/out/inv --task inpaint",
         "--mask"),
    case("invert-no-out", f"invert {W}/good {{c}}/loose/rgb.png", "--out-dir"),
    case("edit-missing-source", "edit {c}/nope --n 2", "nope"),
    case("edit-latents-text", f"edit {W}/good --latents {{c}}/npz/text.npz", "text.npz"),
    case("edit-latents-wrong-dim", f"edit {W}/good --latents {{c}}/npz/latents_wrong_dim.npz",
         "latents_wrong_dim.npz"),
    case("edit-latents-missing", f"edit {W}/good --latents {{c}}/npz/nope.npz", "nope.npz"),
    case("edit-strength-nan", f"edit {W}/good --strength nan", "nan"),
    case("edit-direction-negative", f"edit {W}/good --direction -1", "-1"),
    case("edit-class", f"edit {W}/good --class 99", "99"),
    case("edit-device", f"edit {W}/good --device {DEV}", DEV),
    case("verify-missing", "verify {c}/nope", "nope"),
    case("verify-config-file", "verify {c}/configs/list.json", "list.json"),
]

CASES = (NPZ_TRAIN + NPZ_OTHER + CONFIG_CASES + SET_CASES + TRAIN_FLAGS + DEVICES + WEIGHTS_CASES + SAMPLE + OTHERS
         + NEW_COMMANDS)


@pytest.fixture
def no_server(monkeypatch):
    """A case that passed every check must fail the test, not start a server that never returns."""
    import uvicorn

    def refuse(*args, **kwargs):
        raise AssertionError("the server started: the bad input was not caught")

    monkeypatch.setattr(uvicorn, "run", refuse)


@pytest.mark.parametrize("argv, hints", CASES)
def test_bad_input_is_one_error_line(argv, hints, corpus, tmp_path, monkeypatch, capsys, no_server):
    monkeypatch.chdir(tmp_path)  # anything written by mistake lands here, not in the repository
    monkeypatch.setenv("SCALEGAN_CACHE", str(tmp_path / "cache"))  # no Inception weights, no pretrained models
    argv = [a.replace("{c}", str(corpus)) for a in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    command = argv[0] if argv and not argv[0].startswith("-") and argv[0] != "generate" else None
    prefix = f"scalegan {command}: error: " if command else "scalegan: error: "
    assert lines[0].startswith(prefix), lines[0]
    assert len(lines[0]) > len(prefix) + 10, lines[0]
    for hint in hints:
        assert hint in lines[0], (hint, lines[0])
    assert out == ""


# --------------------------------------------------------------------------------------------- usable data
def test_readable_images_are_used_and_the_rest_counted_in_one_warning(corpus):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = open_dataset(f"folder:{corpus}/mixed", resolution=16)
        items = [dataset[i] for i in range(len(dataset))]
    unreadable = [w for w in caught if issubclass(w.category, UnreadableImageWarning)]
    assert len(unreadable) == 1, [str(w.message) for w in caught]
    message = str(unreadable[0].message)
    assert f"{len(BAD_FILES)} unreadable" in message and "of 16" in message, message
    assert len(dataset) == 12 and dataset.skipped == len(BAD_FILES)
    assert dataset.class_names == ["a", "b"]  # the empty class folder is no class
    assert sorted(f.name for f in dataset.files) == sorted(
        ["rgb.png", "cmyk.jpg", "sixteen.png", "palette.png", "one_pixel.png", "elongated.png"] * 2)
    for x, _ in items:
        assert x.shape == (3, 16, 16) and torch.isfinite(x).all() and -1 <= x.min() and x.max() <= 1
    sixteen = items[[f.name for f in dataset.files].index("sixteen.png")][0]
    assert sixteen.max() > 0.5  # the 16-bit ramp scaled to 8 bits, not clipped to white
    assert sixteen.std() > 0.1


def test_a_class_left_without_readable_images_is_named_in_the_warning(corpus):
    with pytest.warns(UnreadableImageWarning) as caught:
        dataset = open_dataset(f"folder:{corpus}/class_all_bad", resolution=8)
    assert len(caught) == 1 and "class folder(s) ['b'] have no readable image left" in str(caught[0].message)
    assert dataset.class_names == ["a", "b"] and dataset.labels.tolist() == [0] * 6


def _warning_lines(err: str, command: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"scalegan {command}: warning: ")]


def test_train_uses_the_readable_images_of_a_mixed_folder(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", f"folder:{corpus}/mixed", *[a.replace("{c}", str(corpus)) for a in TRAIN[:-2]],
            "--out-dir", str(run), "--set", "ch=8", "--set", "d_ch=8", "--set", "z_dim=16", "--set", "shared_dim=8"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    skipped = [line for line in _warning_lines(err, "train") if "unreadable" in line]
    assert len(skipped) == 1 and f"skipped {len(BAD_FILES)} unreadable image file(s) of 16" in skipped[0], err
    assert not any("could not decode" in line for line in err.splitlines()), err
    config = json.loads((run / "train_config.json").read_text())
    assert config["dataset"]["size"] == 12 and config["dataset"]["skipped"] == len(BAD_FILES), config["dataset"]


def test_train_classifier_uses_the_readable_images(corpus, tmp_path, capsys):
    argv = ["train-classifier", "--data", f"folder:{corpus}/mixed", "--out-dir", str(tmp_path / "clf"),
            "--epochs", "1", "--resolution", "16", "--width", "4", "--feature-dim", "8", "--batch-size", "4"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    skipped = [line for line in _warning_lines(err, "train-classifier") if "unreadable" in line]
    assert len(skipped) == 1, err
    result = json.loads(out)
    assert result["dataset"]["size"] == 12 and result["dataset"]["num_classes"] == 2


def test_corpus_size():
    """The corpus holds the cases the README's "Bad input" section counts, each under its own id."""
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert f"a corpus of {len(CASES)} bad inputs" in readme
    assert len({p.id for p in CASES}) == len(CASES)
