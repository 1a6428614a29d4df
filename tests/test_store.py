"""Atomic writes inside the job folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchgen.errors import StoreError
from batchgen.images import JPEG, PNG, GeneratedImage
from batchgen.output import durable, history, paths
from batchgen.output.store import JobStore

from .conftest import png_bytes


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "job")
    s.prepare()
    return s


def test_write_images_names_by_format_and_hashes(store: JobStore) -> None:
    png = png_bytes()
    jpeg = b"\xff\xd8\xff" + b"x" * 10
    stored = store.write_images(
        ["images/a-1", "images/a-2"], [GeneratedImage(png, PNG), GeneratedImage(jpeg, JPEG)]
    )
    assert [s.path for s in stored] == ["images/a-1.png", "images/a-2.jpg"]
    assert (store.root / "images/a-1.png").read_bytes() == png
    assert stored[1].bytes == len(jpeg)
    import hashlib

    assert stored[0].sha256 == hashlib.sha256(png).hexdigest()


def test_extra_images_beyond_n_are_dropped(store: JobStore) -> None:
    png = png_bytes()
    stored = store.write_images(["images/a"], [GeneratedImage(png, PNG)] * 3)
    assert [s.path for s in stored] == ["images/a.png"]


def test_a_regenerated_image_in_another_format_replaces_the_old(store: JobStore) -> None:
    store.write_images(["images/a"], [GeneratedImage(png_bytes(), PNG)])
    store.write_images(["images/a"], [GeneratedImage(b"\xff\xd8\xff", JPEG)])
    assert sorted(p.name for p in (store.root / "images").iterdir()) == ["a.jpg"]


def test_no_temp_file_is_left_and_stale_ones_are_cleaned_from_every_folder(store: JobStore) -> None:
    (store.root / paths.HISTORY).mkdir()
    stale = [store.root / folder / ".batchgen-dead.tmp" for folder in (".", paths.IMAGES, paths.HISTORY)]
    for path in stale:
        path.write_bytes(b"half a file")
    (store.root / ".lock").write_bytes(b"")  # not a temp file: left alone
    store.write_json("report.json", {"ok": True})
    assert all(path.exists() for path in stale)
    store.prepare()
    assert [path for path in stale if path.exists()] == []
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == [".lock"]


def test_link_or_copy_links_where_it_can_and_else_copies_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(b"an image")
    durable.link_or_copy(source, tmp_path / "linked.png")
    assert (tmp_path / "linked.png").stat().st_ino == source.stat().st_ino

    def no_links(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(os, "fsync", lambda fd: fsynced.append(fd) or real_fsync(fd))
    durable.link_or_copy(source, tmp_path / "copied.png")
    assert (tmp_path / "copied.png").read_bytes() == b"an image"
    assert (tmp_path / "copied.png").stat().st_ino != source.stat().st_ino
    assert len(fsynced) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "copied.png", "linked.png"]


def test_a_failed_write_leaves_the_old_file_whole(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write_bytes("images/a.png", b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreError, match="No space left"):
        store.write_bytes("images/a.png", b"new")
    monkeypatch.undo()
    assert (store.root / "images/a.png").read_bytes() == b"old"
    assert sorted(p.name for p in (store.root / "images").iterdir()) == ["a.png"]


@pytest.mark.parametrize("relative", ["../escape.png", "images/../../escape.png", "/tmp/abs.png"])
def test_paths_outside_the_job_folder_are_refused(store: JobStore, relative: str) -> None:
    with pytest.raises(StoreError, match="outside the job folder"):
        store.write_bytes(relative, b"x")


def test_a_symlinked_images_folder_pointing_out_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "images").symlink_to(outside)
    store = JobStore(tmp_path / "job")
    store.prepare()
    with pytest.raises(StoreError, match="outside the job folder"):
        store.write_bytes("images/a.png", b"x")
    assert list(outside.iterdir()) == []


def test_files_get_ordinary_permissions_from_the_umask(store: JobStore) -> None:
    old = os.umask(0o022)
    try:
        store.write_bytes("images/a.png", b"x")
    finally:
        os.umask(old)
    assert (store.root / "images/a.png").stat().st_mode & 0o777 == 0o644


def test_the_allocator_settings_apply_on_glibc() -> None:
    import platform

    from batchgen.job.memory import tune_allocator

    applied = tune_allocator()
    assert applied is (platform.libc_ver()[0] == "glibc")


@pytest.mark.parametrize(
    ("relative", "version", "kept"),
    [
        ("images/a.png", 1, "history/a.1.png"),
        ("images/a-2.jpg", 3, "history/a-2.3.jpg"),
        ("images/a.json", 2, "history/a.2.json"),
        ("images/v1.2.png", 4, "history/v1.2.4.png"),
        ("images/noext", 2, "history/noext.2"),
    ],
)
def test_history_names_and_their_reading_back(relative: str, version: int, kept: str) -> None:
    assert paths.history(relative, version) == kept
    stem, _, ext = relative.removeprefix("images/").rpartition(".")
    if stem:
        assert paths.parse_history(kept.removeprefix("history/")) == (stem, version, ext)
    assert paths.parse_history(".batchgen-1.2.tmp") is None
    assert paths.parse_history("a.x.png") is None


def test_archive_keeps_each_file_under_its_history_name(store: JobStore) -> None:
    store.write_bytes(paths.image("a.png"), b"old")
    store.write_bytes(paths.sidecar("a"), b"{}")
    history.keep(store, [paths.image("a.png"), paths.sidecar("a")], 1)
    assert sorted(os.listdir(store.root / paths.HISTORY)) == ["a.1.json", "a.1.png"]
    assert (store.root / paths.history("images/a.png", 1)).read_bytes() == b"old"
    assert store.history_names() == ["a.1.json", "a.1.png"]


def test_a_new_version_drops_the_old_files_it_did_not_write_over_and_minds_none_gone(
    store: JobStore,
) -> None:
    store.write_bytes(paths.image("a-3.png"), b"old")
    store.write_bytes(paths.image("b.png"), b"other")
    store.drop([paths.image("a-3.png"), paths.image("a-4.png")])  # a-4 removed by someone already
    assert sorted(os.listdir(store.root / paths.IMAGES)) == ["b.png"]


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths os.fsync is called on, in order (a spy: fsync is not what these tests test)."""
    seen: list[Path] = []
    real = os.fsync

    def spy(fd: int) -> None:
        seen.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd through /proc (Linux)")
def test_fsync_dir_syncs_the_folder_itself(tmp_path: Path, synced: list[Path]) -> None:
    durable.fsync_dir(tmp_path)
    assert synced == [tmp_path]
    (tmp_path / "a-file").write_bytes(b"")
    durable.fsync_dir(tmp_path / "a-file")  # opened as a folder only: a file is not its business
    assert synced == [tmp_path]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd through /proc (Linux)")
def test_sync_makes_the_images_folder_and_the_job_folder_durable(store: JobStore, synced: list[Path]) -> None:
    store.write_bytes("images/a.json", b"{}", durable=False)
    assert synced == []
    store.sync()
    assert set(synced) >= {store.root / paths.IMAGES, store.root}


def test_fewer_images_than_asked_are_each_written(store: JobStore) -> None:
    stored = store.write_images(["images/a-1", "images/a-2"], [GeneratedImage(png_bytes(), PNG)])
    assert [s.path for s in stored] == ["images/a-1.png"]


def test_an_images_pixel_size_comes_from_its_header(store: JobStore) -> None:
    png = png_bytes()
    made, unreadable = store.write_images(
        ["images/a", "images/b"], [GeneratedImage(png, PNG), GeneratedImage(b"\xff\xd8\xff", JPEG)]
    )
    assert made.pixels is not None
    assert (made.width, made.height) == made.pixels
    assert (made.mime, made.bytes) == ("image/png", len(png))
    assert (unreadable.width, unreadable.height, unreadable.pixels) == (None, None, None)


@pytest.mark.parametrize("relative", ["", "images/a\0.png"])
def test_an_empty_name_or_one_with_a_nul_is_refused(store: JobStore, relative: str) -> None:
    with pytest.raises(StoreError, match="outside the job folder"):
        store.write_bytes(relative, b"x")


def test_a_job_folder_that_cannot_be_made_says_so(tmp_path: Path) -> None:
    (tmp_path / "job").write_bytes(b"a file where the folder should be")
    with pytest.raises(StoreError, match=r"^cannot create .*job/images: Not a directory$"):
        JobStore(tmp_path / "job").prepare()


def test_intact_means_every_file_there_at_its_size(store: JobStore) -> None:
    store.write_bytes("images/a.png", b"12345")
    store.write_bytes("images/b.png", b"1")
    assert store.intact([("images/a.png", 5), ("images/b.png", 1)])
    assert not store.intact([])
    assert not store.intact([("images/a.png", 5), ("images/b.png", 2)])
    assert not store.intact([("images/a.png", 4)])
    assert not store.intact([("images/a.png", 5), ("images/gone.png", 1)])


def test_fsync_dir_minds_neither_a_missing_folder_nor_one_it_cannot_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    durable.fsync_dir(tmp_path / "missing")

    def refused(fd: int) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "fsync", refused)
    before = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    durable.fsync_dir(tmp_path)
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before  # the folder's descriptor is closed


def test_a_link_that_cannot_take_its_place_leaves_no_temp_file(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(b"an image")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_bytes(b"")  # a folder that is not empty cannot be replaced
    with pytest.raises(IsADirectoryError):
        durable.link_or_copy(source, tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "taken"]


def test_a_source_that_is_gone_fails_as_itself(tmp_path: Path) -> None:
    missing = tmp_path / "gone.png"
    with pytest.raises(FileNotFoundError) as caught:
        durable.link_or_copy(missing, tmp_path / "copy.png")
    assert caught.value.filename == str(missing)  # not the temp file that was never made
    assert list(tmp_path.iterdir()) == []


def test_json_is_written_indented_for_people_with_a_final_newline(store: JobStore) -> None:
    store.write_json("a.json", {"ok": True, "n": [1]})
    assert (store.root / "a.json").read_bytes() == b'{\n  "ok": true,\n  "n": [\n    1\n  ]\n}\n'


def test_an_image_made_again_in_its_format_stays(store: JobStore) -> None:
    for _ in range(2):
        store.write_images(["images/a"], [GeneratedImage(png_bytes(), PNG)])
    assert sorted(p.name for p in (store.root / "images").iterdir()) == ["a.png"]


def test_an_old_image_removed_by_someone_else_is_no_error(store: JobStore) -> None:
    store.write_images(["images/a"], [GeneratedImage(png_bytes(), PNG)])
    store.prepare()  # a later run: a.png is one of the files that were there
    os.unlink(store.root / "images/a.png")
    store.write_images(["images/a"], [GeneratedImage(b"\xff\xd8\xff", JPEG)])
    assert sorted(p.name for p in (store.root / "images").iterdir()) == ["a.jpg"]


def test_a_sweep_removes_only_whole_temp_names_and_returns_the_rest(tmp_path: Path) -> None:
    temp = durable.temp_beside(tmp_path / "a.png")
    temp.write_bytes(b"half")
    for name in ("a.png", ".batchgen-notes.txt", "draft.tmp"):  # a prefix or a suffix alone is not ours
        (tmp_path / name).write_bytes(b"x")
    kept = durable.sweep(tmp_path)
    assert sorted(kept) == [".batchgen-notes.txt", "a.png", "draft.tmp"]
    assert sorted(os.listdir(tmp_path)) == sorted(kept)


def test_a_sweep_given_the_listing_reads_no_other_and_a_name_already_gone_is_no_error(tmp_path: Path) -> None:
    on_disk = durable.temp_beside(tmp_path / "b.png")
    on_disk.write_bytes(b"half")
    gone = durable.temp_beside(tmp_path / "c.png").name  # listed, then removed by someone else
    assert durable.sweep(tmp_path, ["b.png", gone]) == ["b.png"]
    assert on_disk.exists()  # not in the listing it was given: left for the next sweep


def test_a_name_is_refused_by_its_spelling_even_where_it_would_land_inside(store: JobStore) -> None:
    # The journal and sidecars name files relative to the job folder, never with '..' or a root.
    for relative in ("images/../a.png", str(store.root / "images" / "a.png")):
        with pytest.raises(StoreError, match="outside the job folder"):
            store.write_bytes(relative, b"x")
    assert list((store.root / "images").iterdir()) == []


def test_an_image_made_in_another_format_by_a_later_run_replaces_the_earlier_runs(tmp_path: Path) -> None:
    first = JobStore(tmp_path)
    first.prepare()
    first.write_images(["images/a"], [GeneratedImage(png_bytes(), PNG)])
    later = JobStore(tmp_path)  # another run: it knows the folder only by listing it
    later.prepare()
    later.write_images(["images/a"], [GeneratedImage(b"\xff\xd8\xff", JPEG)])
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["a.jpg"]
