"""The remembered check of image folders (`scalegan/data/folder.py`): a second open decodes nothing, and any
change (a file replaced, touched, added or removed) is noticed and re-decodes only the folder that holds it; a
read-only folder is remembered in the user's cache; a damaged record is ignored and written again."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import pytest
from test_data import save, solid, truncated_jpeg

import scalegan.data.folder as folder
from scalegan.data import UnreadableImageWarning, open_dataset


@pytest.fixture
def decodes(monkeypatch):
    """The files `_is_readable` decodes, in a list; timestamps count as settled at once."""
    seen: list[str] = []
    real = folder._is_readable

    def counting(path):
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(folder, "_is_readable", counting)
    monkeypatch.setattr(folder, "SETTLE_NS", 0)
    return seen


@pytest.fixture
def classes(tmp_path: Path, monkeypatch) -> Path:
    """Two class folders of three images; one of the cat files is broken."""
    monkeypatch.setenv("SCALEGAN_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "images"
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 255, 0))):
        save(root / "cat" / f"{name}.png", solid(colour))
        save(root / "dog" / f"{name}.png", solid(colour))
    save(root / "dog" / "c.jpg", solid((0, 0, 255)))
    truncated_jpeg(root / "cat" / "broken.jpg")
    return root


def open_folder(root: Path, expect_skipped: int = 1):
    """Open `root` as a folder dataset; the warning about unreadable files is the same whether remembered or not."""
    if not expect_skipped:
        return open_dataset(f"folder:{root}", resolution=4)
    with pytest.warns(UnreadableImageWarning, match=rf"skipped {expect_skipped} unreadable image file"):
        return open_dataset(f"folder:{root}", resolution=4)


def test_second_open_decodes_nothing(classes: Path, decodes: list[str]) -> None:
    first = open_folder(classes)
    assert sorted(decodes) == ["a.png", "a.png", "b.png", "b.png", "broken.jpg", "c.jpg"]
    record = json.loads((classes / folder.CHECK_FILE).read_text())
    assert record["kind"] == folder.CHECK_KIND and set(record["groups"]) == {"cat", "dog"}
    assert record["groups"]["cat"]["unreadable"] == ["cat/broken.jpg"] and record["groups"]["dog"]["unreadable"] == []
    decodes.clear()
    second = open_folder(classes)
    assert decodes == []
    assert second.files == first.files and second.labels.tolist() == first.labels.tolist() == [0, 0, 1, 1, 1]
    assert second.skipped == 1 and len(second) == 5  # the record is hidden: not taken for an image


def test_replaced_touched_added_and_removed_files_are_noticed(classes: Path, decodes: list[str]) -> None:
    open_folder(classes)
    decodes.clear()
    truncated_jpeg(classes / "dog" / "c.jpg")  # replaced by a broken file of another size
    with pytest.warns(UnreadableImageWarning, match=r"skipped 2 unreadable .*broken\.jpg.*c\.jpg"):
        open_dataset(f"folder:{classes}", resolution=4)
    assert sorted(decodes) == ["a.png", "b.png", "c.jpg"]  # the dog folder only
    decodes.clear()
    save(classes / "dog" / "c.jpg", solid((0, 0, 255)))
    future = time.time_ns() + 5_000_000_000
    os.utime(classes / "cat" / "broken.jpg", ns=(future, future))  # same bytes, new time: decoded again
    assert len(open_folder(classes)) == 5
    assert sorted(decodes) == ["a.png", "a.png", "b.png", "b.png", "broken.jpg", "c.jpg"]
    decodes.clear()
    truncated_jpeg(classes / "cat" / "new.jpg")  # added
    with pytest.warns(UnreadableImageWarning, match=r"skipped 2 unreadable .*new\.jpg"):
        open_dataset(f"folder:{classes}", resolution=4)
    assert sorted(decodes) == ["a.png", "b.png", "broken.jpg", "new.jpg"]
    decodes.clear()
    (classes / "cat" / "broken.jpg").unlink()  # removed
    (classes / "cat" / "new.jpg").unlink()
    ds = open_folder(classes, expect_skipped=0)
    assert len(ds) == 5 and ds.skipped == 0 and sorted(decodes) == ["a.png", "b.png"]


def test_read_only_folder_is_remembered_in_the_cache(classes: Path, decodes: list[str], monkeypatch) -> None:
    if os.geteuid() == 0:  # root writes through permission bits: refuse the folder's writes as a read-only mount
        real = folder.atomic_path

        @contextlib.contextmanager
        def read_only(path):
            if Path(path).parent == classes:
                raise PermissionError(errno.EROFS, "Read-only file system", str(path))
            with real(path) as tmp:
                yield tmp

        monkeypatch.setattr(folder, "atomic_path", read_only)
    os.chmod(classes, 0o555)
    try:
        open_folder(classes)
        assert not (classes / folder.CHECK_FILE).exists()
        cached = list((classes.parent / "cache" / "folder-checks").glob("*.json"))
        assert len(cached) == 1 and json.loads(cached[0].read_text())["root"] == str(classes.resolve())
        decodes.clear()
        open_folder(classes)
        assert decodes == []
    finally:
        os.chmod(classes, 0o755)


def test_damaged_record_is_ignored_and_written_again(classes: Path, decodes: list[str]) -> None:
    open_folder(classes)
    good = (classes / folder.CHECK_FILE).read_text()
    for damaged in ("{not json", '{"kind": "other"}', '[1, 2]', good.replace('"unreadable":[', '"unreadable":[7,', 1)):
        (classes / folder.CHECK_FILE).write_text(damaged)
        decodes.clear()
        open_folder(classes)
        assert len(decodes) == (3 if "[7," in damaged else 6), damaged  # a bad group is checked again, alone
        assert (classes / folder.CHECK_FILE).read_text() == good


def test_copied_folder_and_relative_root_reuse_the_record(classes: Path, decodes: list[str], monkeypatch) -> None:
    open_folder(classes)
    copy = shutil.copytree(classes, classes.parent / "copy")  # copy2: sizes and times kept
    monkeypatch.chdir(copy)
    decodes.clear()
    ds = open_folder(Path("."))
    assert decodes == [] and len(ds) == 5


def test_files_modified_just_now_are_checked_again(classes: Path, decodes: list[str], monkeypatch) -> None:
    monkeypatch.setattr(folder, "SETTLE_NS", 60_000_000_000)  # the fixture's files are all younger than a minute
    open_folder(classes)
    assert not (classes / folder.CHECK_FILE).exists()  # nothing settled: nothing to remember
    decodes.clear()
    open_folder(classes)
    assert len(decodes) == 6  # a rewrite within a coarse timestamp's tick would have looked unchanged
    old = time.time_ns() - 120_000_000_000
    for path in (classes / "dog").iterdir():
        os.utime(path, ns=(old, old))
    open_folder(classes)
    decodes.clear()
    open_folder(classes)
    assert sorted(decodes) == ["a.png", "b.png", "broken.jpg"]  # the settled dog folder is remembered


def test_nowhere_to_remember_is_one_warning_for_large_folders(classes: Path, decodes: list[str], monkeypatch) -> None:
    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(folder, "atomic_path", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_dataset(f"folder:{classes}", resolution=4)
    assert [w.category for w in caught] == [UnreadableImageWarning]  # a small folder is cheap to check again
    monkeypatch.setattr(folder, "PROGRESS_FROM", 6)
    with pytest.warns(UserWarning, match=r"could not remember the check of .*Permission denied.*decodes its 6 files"):
        open_folder(classes)
