"""The writer simulator: names, shapes, pacing, non-atomic writes, and bad files whose
content the loader's own parser judges the way the manifest expects."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import orjson
import pytest

from local.writer import BAD_KINDS, BAD_KINDS_BY_NAME, FileShape, WriterSimulator
from runtime.ingest.errors import RejectedFile
from runtime.ingest.fs import is_temporary_name
from runtime.ingest.parse import parse_records


def test_good_files_have_junk_then_the_records(tmp_path: Path) -> None:
    writer = WriterSimulator(tmp_path, shape=FileShape(records_per_file=7, record_bytes=300), rate=100)
    written = writer.write_good()
    data = (tmp_path / "inbox" / written.name).read_bytes()
    assert data.startswith(b"# exported by writer-sim")
    records = parse_records(data)
    assert len(records) == written.records == 7
    assert all(250 <= len(orjson.dumps(record)) <= 310 for record in records)
    assert [r["index"] for r in records] == list(range(7))


def test_ndjson_and_single_record_files_parse(tmp_path: Path) -> None:
    ndjson = WriterSimulator(tmp_path, shape=FileShape(records_per_file=4, ndjson=True), rate=100)
    assert len(parse_records((tmp_path / "inbox" / ndjson.write_good().name).read_bytes())) == 4
    single = WriterSimulator(tmp_path, shape=FileShape(records_per_file=1), rate=100)
    data = (tmp_path / "inbox" / single.write_good().name).read_bytes()
    assert orjson.loads(data[data.index(b"{") :])["index"] == 0


def test_names_are_timestamps_and_never_reused(tmp_path: Path) -> None:
    writer = WriterSimulator(tmp_path, shape=FileShape(records_per_file=1), rate=100)
    names = [writer.write_good().name for _ in range(50)]
    assert len(set(names)) == 50
    assert names == sorted(names)
    assert all(name[:8].isdigit() and name.endswith(".json") for name in names)


def test_files_are_written_in_pieces_not_atomically(tmp_path: Path) -> None:
    writer = WriterSimulator(
        tmp_path, shape=FileShape(records_per_file=50, pieces=4, stall_s=0.15), rate=100, seed=3
    )
    sizes: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(tmp_path / "inbox"):
                sizes.add(entry.stat().st_size)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    written = writer.write_good()
    done.set()
    watcher.join()
    final = (tmp_path / "inbox" / written.name).stat().st_size
    # The file existed under its final name while only part of it was written.
    assert any(0 < size < final for size in sizes)


def test_the_writer_paces_records_to_the_rate(tmp_path: Path) -> None:
    writer = WriterSimulator(tmp_path, shape=FileShape(records_per_file=10), rate=200)
    started = time.monotonic()
    writer.run(1.0, threading.Event())
    assert 0.9 <= time.monotonic() - started <= 1.3
    assert writer.manifest.records == 200
    assert len(writer.manifest.files) == 20


def test_the_bad_share_mixes_bad_files_into_the_manifest(tmp_path: Path) -> None:
    writer = WriterSimulator(tmp_path, shape=FileShape(records_per_file=1), rate=2000, bad_share=0.5, seed=7)
    writer.run(0.2, threading.Event())
    kinds = {f.kind for f in writer.manifest.files}
    assert "good" in kinds and len(kinds) > 3
    assert writer.manifest.records == sum(1 for f in writer.manifest.files if f.kind == "good")


@pytest.mark.parametrize("kind", [k for k in BAD_KINDS if k.fate == "rejected"], ids=lambda k: k.name)
def test_each_rejected_kind_is_judged_as_its_manifest_expects(tmp_path: Path, kind: object) -> None:
    writer = WriterSimulator(tmp_path, shape=FileShape(), rate=1, max_message_bytes=8192)
    written = writer.write_bad(kind)  # type: ignore[arg-type]
    path = tmp_path / "inbox" / written.name
    assert written.fate == "rejected" and written.records == 0 and written.codes
    if written.kind == "symlink":
        assert path.is_symlink()
        assert not Path(os.readlink(path)).is_relative_to(tmp_path / "inbox")
        return
    if written.kind == "record_too_large":
        (record,) = parse_records(path.read_bytes())
        assert len(orjson.dumps(record)) > 8192
        return
    with pytest.raises(RejectedFile) as caught:
        parse_records(path.read_bytes())
    assert caught.value.code in written.codes


@pytest.mark.parametrize("name", ["tmp_name", "dotfile", "directory"])
def test_skipped_kinds_are_what_the_loader_skips(tmp_path: Path, name: str) -> None:
    writer = WriterSimulator(tmp_path, shape=FileShape(), rate=1)
    written = writer.write_bad(BAD_KINDS_BY_NAME[name])
    path = tmp_path / "inbox" / written.name
    assert written.fate == "skipped"
    assert path.is_dir() if name == "directory" else is_temporary_name(written.name)
