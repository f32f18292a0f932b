"""`prepare`: any labelled image source -> a packed dataset (`packed.py`) at one resolution, decoded once.

Sources: class folders (one subfolder per class), loose images with a labels file (CSV `file,class` or JSON
`{file: class}`, class names), a zip archive of class folders (read in place), or anything `open_dataset` reads as
arrays (NPZ, IDX, CIFAR). Images are streamed into a preallocated memory-mapped shard, so memory does not grow with
the dataset. After each finished shard, `OUT/.progress.json` records how many source items are done (and the small
per-shard labels and pixel hashes beside it), so the same command run again continues there; a different command on
the same OUT is refused unless `overwrite`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..manifest import MANIFEST
from ..utils import atomic_path, read_json, sha256_file, write_json
from .base import RESAMPLE, DatasetError, check_size, convert_channels
from .datasets import KINDS, detect_kind, open_dataset, parse_spec
from .folder import IMAGE_EXTENSIONS, _images_under, _is_image_file, decode_image, square, to_mode
from .packed import CLASS_NAMES, KIND, LABELS, VERSION, is_packed, shard_name

RESIZE_POLICIES = ("crop", "pad", "stretch")
SHARD_BYTES = 256 << 20  # default shard size: as many images as fit in 256 MiB
PROGRESS = ".progress.json"
REPORT = "report.json"
PLOT = "class_balance.png"
EXAMPLES = 3


# --------------------------------------------------------------------------------------------- sources
@dataclass
class Source:
    """What to pack: `items` are `(name, label, ref)` in a fixed order; `ref` is a file path, a zip member or an
    array index; `arrays` holds the uint8 [N, C, H, W] images of an array source."""

    spec: str
    kind: str
    class_names: list[str]
    items: list[tuple[str, int, Any]]
    channels: int
    zip_path: str | None = None
    arrays: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def open_source(source: str, labels_file: str | None = None) -> Source:
    """Enumerate a prepare source (nothing is decoded yet); bad sources raise DatasetError with the fix."""
    path = Path(source).expanduser()
    if labels_file is not None:
        if not path.is_dir():
            raise DatasetError(f"--labels-file needs SOURCE to be the folder of the images it names; {source} is not "
                               "a folder")
        return _labelled_folder(path, Path(labels_file).expanduser())
    if path.is_file() and path.suffix.lower() == ".zip":
        return _zip_source(path)
    if path.is_dir() and not _is_array_folder(path):
        return _folder_source(path)
    prefix, sep, _ = source.partition(":")
    if not path.exists() and not (sep and prefix.lower() in KINDS) and source.lower() not in KINDS:
        raise DatasetError(f"SOURCE {source} does not exist; pass a folder of class folders, an image folder with "
                           "--labels-file, a .zip of class folders, or a dataset spec (npz:FILE, idx:DIR, ...)")
    parse_spec(source)  # an array dataset spec (npz:FILE, idx:DIR, fashion-mnist, ...) or a path, else an error
    dataset = open_dataset(source)
    if dataset.tensors is None:
        raise DatasetError(f"{source} is a {dataset.kind} dataset; prepare reads folders, zips and array datasets")
    images, labels = (t.numpy() for t in dataset.tensors)
    names = [f"{dataset.kind}:{dataset.path}[{i}]" for i in range(len(images))]
    return Source(spec=source, kind=dataset.kind, class_names=dataset.class_names,
                  items=list(zip(names, labels.tolist(), range(len(images)))), channels=images.shape[1],
                  arrays=images)


def _is_array_folder(path: Path) -> bool:
    return detect_kind(path) in ("idx", "cifar10", "cifar100")


def _folder_source(root: Path) -> Source:
    subfolders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = {d.name: _images_under(d) for d in subfolders}
    loose = [f for f in sorted(root.iterdir()) if f.is_file() and _is_image_file(f)]
    notes = []
    if any(per_class.values()):
        empty = [name for name, files in per_class.items() if not files]
        if empty:
            raise DatasetError(f"class folder(s) {empty[:EXAMPLES]} in {root} hold no images; add images or move "
                               "the folder(s) out of SOURCE")
        if loose:
            notes.append(f"ignored {len(loose)} image(s) directly in {root}: class subfolders are used")
        names = list(per_class)
        items = [(str(f), y, str(f)) for y, name in enumerate(names) for f in per_class[name]]
        return Source(spec=str(root), kind="folder", class_names=names, items=items, channels=3, notes=notes)
    if not loose:
        raise DatasetError(f"{root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it or its "
                           "subfolders; point SOURCE at the folder that holds them")
    notes.append("no class subfolders and no --labels-file: the dataset is unlabelled")
    return Source(spec=str(root), kind="folder", class_names=[], items=[(str(f), 0, str(f)) for f in loose],
                  channels=3, notes=notes)


def read_labels_file(path: Path) -> dict[str, str]:
    """`file -> class name` from a CSV with a `file,class` header or a JSON object `{file: class}`."""
    if not path.is_file():
        raise DatasetError(f"labels file {path} does not exist; pass a CSV (file,class) or JSON ({{file: class}})")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"labels file {path} is not valid JSON ({e}); write {{\"file\": \"class\"}}") from None
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise DatasetError(f"labels file {path} must be a JSON object of file name -> class name (a string), "
                               'e.g. {"cat1.jpg": "cat"}')
        return table
    rows = csv.DictReader(io.StringIO(text))
    if rows.fieldnames is None or not {"file", "class"} <= {c.strip() for c in rows.fieldnames}:
        raise DatasetError(f"labels file {path} has columns {rows.fieldnames}; it needs a header row with the "
                           "columns file,class (class names, not indices)")
    table = {}
    for row in rows:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row["file"] or not row["class"]:
            raise DatasetError(f"labels file {path}, line {rows.line_num}: empty file or class; every row needs both")
        table[row["file"]] = row["class"]
    return table


def _labelled_folder(root: Path, labels_file: Path) -> Source:
    table = read_labels_file(labels_file)
    if not table:
        raise DatasetError(f"labels file {labels_file} lists no images; add rows `file,class`")
    missing = [f for f in table if not (root / f).is_file()]
    if missing:
        raise DatasetError(f"labels file {labels_file} names {len(missing)} file(s) not in {root}, e.g. "
                           f"{missing[:EXAMPLES]}; file names are relative to SOURCE")
    names = sorted(set(table.values()))
    index = {name: y for y, name in enumerate(names)}
    items = [(f, index[c], str(root / f)) for f, c in sorted(table.items())]
    unlisted = sum(1 for f in root.iterdir() if f.is_file() and _is_image_file(f) and f.name not in table)
    notes = [f"{unlisted} image(s) in {root} are not in the labels file and were left out"] if unlisted else []
    return Source(spec=str(root), kind="labelled", class_names=names, items=items, channels=3, notes=notes)


def _zip_source(path: Path) -> Source:
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(m for m in archive.namelist() if _is_image_member(m))
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"{path} is not a readable zip archive ({e})") from None
    parts = [m.split("/") for m in members]
    # A zip of a folder holds TOP/class/file: the common top folder is not a class.
    while parts and all(len(p) >= 3 and p[0] == parts[0][0] for p in parts):
        parts = [p[1:] for p in parts]
    classes = sorted({p[0] for p in parts if len(p) >= 2})
    if not classes:
        if not members:
            raise DatasetError(f"{path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return Source(spec=str(path), kind="zip", class_names=[], items=[(m, 0, m) for m in members], channels=3,
                      zip_path=str(path), notes=["no class folders in the zip: the dataset is unlabelled"])
    index = {name: y for y, name in enumerate(classes)}
    items = [(m, index[p[0]], m) for m, p in zip(members, parts) if len(p) >= 2]
    items.sort(key=lambda item: (item[1], item[0]))
    notes = [f"ignored {len(members) - len(items)} image(s) outside the class folders"] if len(items) < len(members) \
        else []
    return Source(spec=str(path), kind="zip", class_names=classes, items=items, channels=3, zip_path=str(path),
                  notes=notes)


def _is_image_member(name: str) -> bool:
    parts = name.split("/")
    return (not name.endswith("/") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
            and not any(p.startswith(".") or p == "__MACOSX" for p in parts))


# --------------------------------------------------------------------------------------------- decoding
def fit(image: Image.Image, resolution: int, policy: str) -> Image.Image:
    """Make an image `resolution` square: `crop` (centre crop, then resize: the folder loader's `square`), `pad`
    (resize the long side to `resolution`, centre on black) or `stretch` (resize, ignoring the aspect ratio)."""
    if policy == "crop":
        return square(image, resolution)
    if policy == "stretch":
        return image.resize((resolution, resolution), RESAMPLE)
    width, height = image.size
    scale = resolution / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Image.new(image.mode, (resolution, resolution), 0)
    canvas.paste(image.resize(size, RESAMPLE), ((resolution - size[0]) // 2, (resolution - size[1]) // 2))
    return canvas


def _pixels(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


_WORKER: dict[str, Any] = {}  # per process: the options and an open zip archive


def _init_worker(resolution: int, channels: int, policy: str, zip_path: str | None) -> None:
    _WORKER.clear()
    _WORKER.update(resolution=resolution, channels=channels, policy=policy,
                   archive=zipfile.ZipFile(zip_path) if zip_path else None)


def _decode(ref: str) -> tuple[np.ndarray | None, str]:
    """One file or zip member -> uint8 [C, R, R], or (None, the reason it cannot be read)."""
    try:
        archive = _WORKER["archive"]
        handle = io.BytesIO(archive.read(ref)) if archive is not None else ref
        image = decode_image(handle, _WORKER["channels"])
        return _pixels(fit(image, _WORKER["resolution"], _WORKER["policy"])), ""
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        return None, f"{type(e).__name__}: {e}"


def _array_image(images: np.ndarray, i: int, resolution: int, channels: int, policy: str) -> np.ndarray:
    pixels = convert_channels(images[i : i + 1], channels)[0].transpose(1, 2, 0)
    image = to_mode(Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels), "L" if channels == 1 else "RGB")
    return _pixels(fit(image, resolution, policy))


def decoded(src: Source, start: int, resolution: int, channels: int, policy: str,
            workers: int) -> Iterator[tuple[np.ndarray | None, str]]:
    """Items `start`, `start + 1`, ... decoded in order, on `workers` processes when > 1."""
    if src.arrays is not None:
        for _, _, i in src.items[start:]:
            yield _array_image(src.arrays, i, resolution, channels, policy), ""
        return
    refs = [ref for _, _, ref in src.items[start:]]
    args = (resolution, channels, policy, src.zip_path)
    if workers <= 1:
        _init_worker(*args)
        yield from map(_decode, refs)
        return
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, args) as pool:
        yield from pool.imap(_decode, refs, chunksize=16)


# --------------------------------------------------------------------------------------------- writing
@dataclass
class _State:
    """Progress: done shards (name, count, sha256), source items consumed, report lists, hashes of kept images."""

    consumed: int = 0
    shards: list[dict] = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    seen: dict[bytes, str] = field(default_factory=dict)  # pixel SHA-256 -> the first file with those pixels


class _Writer:
    """Streams images into preallocated memory-mapped shards of `size` images."""

    def __init__(self, out: Path, size: int, shape: tuple[int, int, int], state: _State, total_left: int) -> None:
        self.out, self.size, self.shape, self.state, self.left = out, size, shape, state, total_left
        self.array: np.ndarray | None = None
        self.n = 0
        self.labels: list[int] = []
        self.hashes: list[bytes] = []
        self.names: list[str] = []

    def add(self, pixels: np.ndarray, label: int) -> None:
        if self.array is None:
            capacity = min(self.size, self.left)
            self.partial = self.out / f".{shard_name(len(self.state.shards))}.partial"
            self.array = np.lib.format.open_memmap(self.partial, "w+", np.uint8, (capacity, *self.shape))
        self.array[self.n] = pixels
        self.n += 1
        self.labels.append(label)

    def full(self) -> bool:
        return self.array is not None and self.n == self.size

    def finish(self, consumed: int) -> None:
        """Close the current shard: rename it into place, then record the progress (in that order: a crash between
        leaves a shard that the next run writes again)."""
        if self.array is None or self.n == 0:
            return
        name = shard_name(len(self.state.shards))
        capacity = self.array.shape[0]
        self.array.flush()
        del self.array
        self.array = None
        if self.n < capacity:  # the last shard, short because of duplicates or unreadable files
            _truncate(self.partial, self.n, self.shape)
        os.replace(self.partial, self.out / name)
        self.state.shards.append({"name": name, "count": self.n, "sha256": sha256_file(self.out / name)})
        with atomic_path(self.out / f".{name}.meta.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, labels=np.asarray(self.labels, np.int64), hashes=np.asarray(self.hashes, "S32"),
                     names=np.asarray(self.names, str))
        self.left -= self.n
        self.state.consumed = consumed
        self.n, self.labels, self.hashes, self.names = 0, [], [], []
        _write_progress(self.out, self.state)


def _truncate(path: Path, n: int, shape: tuple[int, int, int]) -> None:
    """Rewrite a shard file with only its first `n` images, a chunk at a time."""
    source = np.load(path, mmap_mode="r")
    short = path.with_name(path.name + ".short")
    target = np.lib.format.open_memmap(short, "w+", np.uint8, (n, *shape))
    for start in range(0, n, 256):
        stop = min(start + 256, n)
        target[start:stop] = source[start:stop]
    target.flush()
    del target, source
    os.replace(short, path)


def _write_progress(out: Path, state: _State) -> None:
    """Atomically record the done shards; the options are written once, at the start."""
    progress = read_json(out / PROGRESS)
    progress.update(consumed=state.consumed, shards=state.shards, unreadable=state.unreadable,
                    duplicates=state.duplicates)
    write_json(out / PROGRESS, progress)


def _load_progress(out: Path, progress: dict) -> _State:
    state = _State(consumed=progress["consumed"], shards=progress["shards"], unreadable=progress["unreadable"],
                   duplicates=progress["duplicates"])
    for shard in state.shards:
        if not (out / shard["name"]).is_file():
            raise DatasetError(f"{out / shard['name']} is missing but {out / PROGRESS} lists it as done; rerun with "
                               "--overwrite to start again")
        with np.load(out / f".{shard['name']}.meta.npz") as meta:
            state.seen.update(zip(meta["hashes"].tolist(), meta["names"].tolist()))
    return state


OUR_FILES = ("shard-*.npy", ".shard-*", LABELS, CLASS_NAMES, MANIFEST, REPORT, PLOT, PROGRESS)


def _claim(out: Path, options: dict, overwrite: bool) -> tuple[_State, dict | None]:
    """Start, resume or refuse: the resumed state, and the manifest when OUT already holds this exact result."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"OUT {out} is a file; pass a folder path (it is created)")
    out.mkdir(parents=True, exist_ok=True)
    found = read_json(out / PROGRESS) if (out / PROGRESS).is_file() else None
    manifest = read_json(out / MANIFEST) if is_packed(out) else None
    previous = (found or manifest or {}).get("options")
    if (found or manifest) and previous != options and not overwrite:
        changed = sorted(k for k in options.keys() | (previous or {}).keys()
                         if (previous or {}).get(k) != options.get(k))
        raise DatasetError(f"{out} holds a dataset prepared with other options ({', '.join(changed)} differ); pass "
                           "--overwrite to replace it, or choose another OUT")
    if not (found or manifest) and any(out.iterdir()):
        raise DatasetError(f"{out} is not empty and holds no packed dataset; choose a new or empty folder for OUT "
                           "(--overwrite replaces only a packed dataset's files)")
    if overwrite and previous != options:
        for pattern in OUR_FILES:
            for path in out.glob(pattern):
                path.unlink()
        found = manifest = None
    if manifest is not None and found is None:
        return _State(), manifest
    if found is None:
        write_json(out / PROGRESS, {"options": options, "consumed": 0, "shards": [], "unreadable": [],
                                    "duplicates": []})
        return _State(), None
    return _load_progress(out, found), None


def prepare(source: str, out: str | os.PathLike, *, resolution: int, resize: str = "crop",
            channels: int | None = None, mirror: bool = False, dedup: bool = True, shard_size: int | None = None,
            labels_file: str | None = None, workers: int = 0, overwrite: bool = False,
            progress: bool = True) -> dict[str, Any]:
    """Pack `source` into the folder `out` (see the module docstring and `packed.py`); returns the manifest.

    The same call on a finished `out` returns its manifest; on an interrupted one it continues after the last
    finished shard. Unreadable files and (with `dedup`) images whose pixels at `resolution` repeat an earlier one's
    are left out and listed in `out/report.json`."""
    check_size(resolution, channels)
    if resolution is None:
        raise DatasetError("--resolution is required: the size every image is packed at")
    if resize not in RESIZE_POLICIES:
        raise DatasetError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    src = open_source(source, labels_file)
    channels = channels or src.channels
    if mirror and shard_size and shard_size % 2:
        raise DatasetError(f"--shard-size {shard_size} is odd; with --mirror an image and its flip share a shard: "
                           "pass an even size")
    out = Path(out).expanduser()
    options = {"source": str(Path(src.spec).expanduser().resolve()) if Path(src.spec).expanduser().exists()
               else src.spec, "labels_file": str(Path(labels_file).resolve()) if labels_file else None,
               "resolution": resolution, "channels": channels, "resize": resize, "mirror": mirror, "dedup": dedup,
               "shard_size": shard_size, "items": len(src.items),
               "items_sha256": hashlib.sha256("\n".join(f"{n}\t{y}" for n, y, _ in src.items).encode()).hexdigest()}
    state, manifest = _claim(out, options, overwrite)
    if manifest is not None:
        return manifest
    per_item = 2 if mirror else 1
    size = shard_size or max(2, SHARD_BYTES // (channels * resolution * resolution)) // 2 * 2  # given: in options
    writer = _Writer(out, size, (channels, resolution, resolution), state,
                     per_item * (len(src.items) - state.consumed))
    stream = decoded(src, state.consumed, resolution, channels, resize, workers)
    try:
        with tqdm(total=len(src.items), initial=state.consumed, desc=f"prepare {out.name}", unit="image",
                  disable=not progress) as bar:
            for k, (pixels, why) in enumerate(stream, start=state.consumed):
                _take(writer, state, src.items[k], pixels, why, dedup, mirror)
                if writer.full():
                    writer.finish(k + 1)
                bar.update(1)
        writer.finish(len(src.items))
        return _finish(out, src, state, options)
    except OSError as e:  # a full disk, a folder that became read-only: say how to go on
        where = e.filename or out
        raise OSError(f"could not write {where} ({e.strerror or e}); free space or fix the folder, then run the same "
                      f"command again: the {len(state.shards)} finished shard(s) are kept") from e


def _take(writer: _Writer, state: _State, item: tuple, pixels: np.ndarray | None, why: str, dedup: bool,
          mirror: bool) -> None:
    """Add one decoded item to the shard, or to the report as unreadable or duplicate."""
    name, label, _ = item
    if pixels is None:
        state.unreadable.append({"file": name, "reason": why})
        return
    digest = hashlib.sha256(pixels.tobytes()).digest()
    if dedup and digest in state.seen:
        state.duplicates.append({"file": name, "duplicate_of": state.seen[digest]})
        return
    state.seen.setdefault(digest, name)
    writer.hashes.append(digest)
    writer.names.append(name)
    writer.add(pixels, label)
    if mirror:
        writer.add(np.ascontiguousarray(pixels[:, :, ::-1]), label)


def _finish(out: Path, src: Source, state: _State, options: dict) -> dict[str, Any]:
    """Labels, class names, report, plot and, last, the manifest; then the progress files go."""
    count = sum(s["count"] for s in state.shards)
    if count == 0:
        for path in [out / PROGRESS, *out.glob(".shard-*")]:
            path.unlink()
        reasons = "; ".join(f"{u['file']}: {u['reason']}" for u in state.unreadable[:EXAMPLES])
        raise DatasetError(f"none of the {len(src.items)} images of {src.spec} could be read ({reasons}); check that "
                           "they are images and not, say, HTML pages saved by a downloader")
    labels = np.concatenate([np.load(out / f".{s['name']}.meta.npz")["labels"] for s in state.shards])
    with atomic_path(out / LABELS) as tmp, open(tmp, "wb") as f:
        np.save(f, labels)
    write_json(out / CLASS_NAMES, src.class_names)
    counts = np.bincount(labels, minlength=len(src.class_names)).tolist() if src.class_names else []
    report = {"source": src.spec, "items": len(src.items), "images": count, "mirrored": options["mirror"],
              "class_counts": dict(zip(src.class_names, counts)),
              "empty_classes": [n for n, c in zip(src.class_names, counts) if c == 0],
              "unreadable": state.unreadable, "duplicates": state.duplicates, "notes": list(src.notes)}
    report["notes"].append(plot_balance(out / PLOT, src.class_names, counts))
    write_json(out / REPORT, report)
    names = [s["name"] for s in state.shards] + [LABELS, CLASS_NAMES]
    manifest = {"format": 1, "kind": KIND, "version": VERSION, "resolution": options["resolution"],
                "channels": options["channels"], "count": count, "class_names": src.class_names,
                "class_counts": counts, "shards": state.shards, "source": src.spec, "options": options,
                "report": {k: (len(v) if isinstance(v, list) and k in ("unreadable", "duplicates") else v)
                           for k, v in report.items()},
                "files": {n: {"sha256": _digest(out, n, state.shards), "size": (out / n).stat().st_size}
                          for n in names}}
    write_json(out / MANIFEST, manifest)
    for path in [out / PROGRESS, *out.glob(".shard-*")]:
        path.unlink()
    return manifest


def _digest(out: Path, name: str, shards: list[dict]) -> str:
    """A shard's SHA-256 from when it was written (not hashed twice), any other file's now."""
    return next((s["sha256"] for s in shards if s["name"] == name), None) or sha256_file(out / name)


def plot_balance(path: Path, class_names: list[str], counts: list[int]) -> str:
    """A bar plot of images per class (matplotlib, when installed); returns a note saying what was done."""
    if not class_names:
        return "unlabelled: no class-balance plot"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib is not installed: no {PLOT} (pip install matplotlib)"
    figure, axes = plt.subplots(figsize=(max(4.0, 0.3 * len(class_names)), 3.0))
    axes.bar(range(len(counts)), counts)
    axes.set_xticks(range(len(counts)), class_names, rotation=90, fontsize=7)
    axes.set_ylabel("images")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return f"class balance plot: {PLOT}"


def balance_table(manifest: dict[str, Any]) -> str:
    """class, count and share of every class, as aligned text."""
    names, counts, total = manifest["class_names"], manifest["class_counts"], manifest["count"]
    if not names:
        return f"unlabelled: {total} images"
    width = max(5, *(len(n) for n in names))
    lines = [f"{'class':<{width}}  {'count':>8}  {'share':>6}"]
    lines += [f"{n:<{width}}  {c:>8}  {c / total:>6.1%}" for n, c in zip(names, counts)]
    return "\n".join(lines)
