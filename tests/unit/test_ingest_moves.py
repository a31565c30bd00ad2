"""Quarantine and directory moves never lose or overwrite another file, and survive a crash
between link and unlink or a retried rename that answers ENOENT after succeeding."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from runtime.ingest.fs import Fs
from runtime.ingest.layout import NAME_MAX, REASON_SUFFIX, alternate_name, fitted_name, reason_name
from runtime.ingest.moves import move_directory, quarantine, quarantined_as, rename_checked, was_quarantined


def test_a_name_already_in_rejected_is_kept(tmp_path: Path) -> None:
    rejected = tmp_path / "rejected" / "b1"
    rejected.mkdir(parents=True)
    (rejected / "f.json").write_bytes(b"someone else's file")
    (rejected / "f.json.reason.json").write_bytes(b'{"code":"other"}')
    source = tmp_path / "f.json"
    source.write_bytes(b"mine")

    name = quarantine(Fs(), str(source), str(rejected), code="invalid_json", detail="d", batch="b1")

    assert name == "f.json~2" and not source.exists()
    assert (rejected / "f.json").read_bytes() == b"someone else's file"
    assert (rejected / "f.json~2").read_bytes() == b"mine"
    assert orjson.loads((rejected / "f.json~2.reason.json").read_bytes())["code"] == "invalid_json"
    assert orjson.loads((rejected / "f.json.reason.json").read_bytes())["code"] == "other"


def test_a_move_that_died_between_link_and_unlink_is_finished(tmp_path: Path) -> None:
    rejected = tmp_path / "rejected"
    rejected.mkdir()
    source = tmp_path / "f.json"
    source.write_bytes(b"mine")
    os.link(source, rejected / "f.json")  # the link happened, the unlink did not
    (rejected / "f.json.reason.json").write_bytes(b'{"code":"crash"}')

    name = quarantine(Fs(), str(source), str(rejected), code="crash", detail="d", batch="b")

    assert name == "f.json" and not source.exists() and (rejected / "f.json").read_bytes() == b"mine"
    assert sorted(p.name for p in rejected.iterdir()) == ["f.json", "f.json.reason.json"]


class EnoentAfterRename(Fs):
    """EFS without a reply cache: the rename happened, the retried call answers ENOENT."""

    def rename(self, source: str, target: str) -> None:
        super().rename(source, target)
        raise FileNotFoundError(2, "No such file or directory", source)


def test_enoent_after_a_successful_rename_counts_as_moved(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    assert rename_checked(EnoentAfterRename(), str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "b").read_bytes() == b"x"
    assert not rename_checked(Fs(), str(tmp_path / "gone"), str(tmp_path / "c"))


def test_directories_never_replace_an_existing_one(tmp_path: Path) -> None:
    halted = tmp_path / "halted"
    (halted / "b1").mkdir(parents=True)  # empty: a plain rename would silently replace it
    source = tmp_path / "claimed" / "b1"
    source.mkdir(parents=True)
    (source / "f").write_bytes(b"x")
    assert move_directory(Fs(), str(source), str(halted), "b1") == "b1~2"
    assert (halted / "b1~2" / "f").exists() and (halted / "b1").is_dir()


def test_write_once_keeps_the_first_version(tmp_path: Path) -> None:
    fs = Fs()
    assert fs.write_once(str(tmp_path / "k.json"), b"first")
    assert not fs.write_once(str(tmp_path / "k.json"), b"second")
    assert (tmp_path / "k.json").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"], "no temporary names left behind"


def test_read_prefix_reads_exactly_the_header_size(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    data, st = Fs().read_prefix(str(tmp_path / "f"), 4)
    assert data == b"0123" and st.size == 10
    with pytest.raises(FileNotFoundError):
        Fs().read_prefix(str(tmp_path / "missing"), 4)


def test_every_derived_name_fits_for_a_255_byte_name(tmp_path: Path) -> None:
    """Issue 22: `<name>.reason.json`, `<name>~N` and the temporary names passed NAME_MAX."""
    rejected = tmp_path / "rejected"
    name = "é" * 127 + "x"  # 255 bytes
    assert len(name.encode()) == NAME_MAX
    names = []
    for content in (b"one", b"two"):
        source = tmp_path / "in" / name
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(content)
        names.append(quarantine(Fs(), str(source), str(rejected), code="invalid_json", detail="d", batch="b"))
    assert names[0] == name and names[1] == alternate_name(name, 2) != name
    for entry in rejected.iterdir():
        assert len(os.fsencode(entry.name)) <= NAME_MAX
    for quarantined, content in zip(names, (b"one", b"two"), strict=True):
        assert (rejected / quarantined).read_bytes() == content
        assert orjson.loads((rejected / reason_name(quarantined)).read_bytes())["code"] == "invalid_json"
    assert was_quarantined({p.name for p in rejected.iterdir()}, name)


def test_fitted_names_are_deterministic_and_distinct() -> None:
    long_a, long_b = "a" * 250 + "1.json", "a" * 250 + "2.json"
    assert fitted_name(long_a, REASON_SUFFIX) == fitted_name(long_a, REASON_SUFFIX)
    assert fitted_name(long_a, REASON_SUFFIX) != fitted_name(long_b, REASON_SUFFIX)
    assert fitted_name("short.json", REASON_SUFFIX) == "short.json.reason.json"
    odd = os.fsdecode(b"\xff" * 255)  # not UTF-8: works on the bytes
    assert len(os.fsencode(fitted_name(odd, "~2"))) <= NAME_MAX


def test_a_second_link_elsewhere_is_not_a_quarantine(tmp_path: Path) -> None:
    rejected = tmp_path / "rejected"
    rejected.mkdir()
    source = tmp_path / "f.json"
    source.write_bytes(b"mine")
    os.link(source, tmp_path / "elsewhere.json")
    (rejected / "f.json").write_bytes(b"another file of the same name")
    st = Fs().stat(str(source))
    assert quarantined_as(Fs(), st.ino, str(rejected), "f.json") is None
    os.link(source, rejected / "f.json~2")
    (rejected / "f.json~2.reason.json").write_bytes(b'{"code":"crash"}')
    assert quarantined_as(Fs(), st.ino, str(rejected), "f.json") == "f.json~2"
