"""Junk stripping, the three record shapes, projection and item encoding: pure logic."""

from __future__ import annotations

import codecs

import orjson
import pytest

from runtime import codec
from runtime.ingest import parse
from runtime.ingest.errors import RejectedFile

RECORD = {"id": 1, "a": {"b": {"c": "deep"}}, "s": "text"}


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"# a comment\n",
        b"// a comment\n; another\n\n   \n",
        b"/* block\n { not json\n */\n",
        b"\xef\xbb\xbf# after a BOM\n",
        b"written by writer v2 at 13:00\n[INFO] starting {batch}\n{{template}}\n",
        b"\t# indented comment\r\n",
    ],
)
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (orjson.dumps(RECORD), [RECORD]),
        (orjson.dumps([RECORD, RECORD]), [RECORD, RECORD]),
        (b"[\n  " + orjson.dumps(RECORD) + b"\n]", [RECORD]),
        (orjson.dumps(RECORD) + b"\n\n" + orjson.dumps(RECORD) + b"\n", [RECORD, RECORD]),
        (b"{}", [{}]),
    ],
)
def test_junk_is_stripped_before_every_shape(junk: bytes, body: bytes, expected: list[object]) -> None:
    assert parse.parse_records(junk + body) == expected


def test_utf16_with_bom_is_honoured() -> None:
    data = codecs.BOM_UTF16_LE + ("# c\n" + orjson.dumps(RECORD).decode()).encode("utf-16-le")
    assert parse.parse_records(data) == [RECORD]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", parse.EMPTY),
        (b"   \n\n", parse.EMPTY),
        (b"# only a comment\n// and another\n", parse.NO_JSON),
        (b"/* never closed", parse.NO_JSON),
        (b'# junk\n{"a": 1', parse.INVALID_JSON),
        (b'{"a": 1}\n{"b": ', parse.INVALID_JSON),
        (b'{"a": tru}', parse.INVALID_JSON),
        (b'{"a": "\xff\xfe bad"}', parse.INVALID_ENCODING),
        (b"# junk\n[1, 2, 3]", parse.NOT_RECORDS),
        (b"42\n", parse.NOT_RECORDS),
        (b'"text"', parse.NOT_RECORDS),
        (b'[{"a": 1}, 2]', parse.NOT_RECORDS),
        (b'{"a": 1}\n[1]\n', parse.NOT_RECORDS),
        (b"[]", parse.EMPTY),
        (codecs.BOM_UTF16_LE + b"\x00\xd8", parse.INVALID_ENCODING),
    ],
)
def test_bad_input_codes(data: bytes, code: str) -> None:
    with pytest.raises(RejectedFile) as caught:
        parse.parse_records(data)
    assert caught.value.code == code


def test_projection_policies() -> None:
    project = parse.compile_projection(
        {
            "deep": ("a.b.c", "reject"),
            "gone_null": ("x.y", "null"),
            "gone_omit": ("x", "omit"),
            "through_scalar": ("s.t", "null"),
        }
    )
    assert project is not None
    assert project(RECORD) == {"deep": "deep", "gone_null": None, "through_scalar": None}
    with pytest.raises(RejectedFile) as caught:
        project({"a": {"b": {}}})
    assert caught.value.code == parse.MISSING_FIELD
    assert parse.compile_projection({}) is None


def test_items_match_the_codec_and_escape_noncharacters() -> None:
    encoder = codec.ItemEncoder()
    data = orjson.dumps([{"s": "a\ufffeb\uffff"}, {"n": 2}])
    items = parse.file_items("f\u00e9.json", data, None, encoder, 10_000)
    assert "\ufffe".encode() not in items[0] and "\uffff".encode() not in items[0]
    assert items[0] == codec.encode_item(
        codec.Item(id="f\u00e9.json#0", step=0, attempt=0, state={"s": "a\ufffeb\uffff"})
    )
    assert orjson.loads(items[1])["id"] == "f\u00e9.json#1"


def test_a_record_over_the_limit_rejects_the_whole_file() -> None:
    data = orjson.dumps([{"small": 1}, {"big": "x" * 1000}])
    with pytest.raises(RejectedFile) as caught:
        parse.file_items("f", data, None, codec.ItemEncoder(), 500)
    assert caught.value.code == parse.RECORD_TOO_LARGE


@pytest.mark.parametrize(
    "data",
    [
        orjson.dumps({"s": "raw \ufffe"}),
        b'{"s": "escaped \\uffff"}',
        b'{"s": "escaped upper \\uFFFE"}',
        codecs.BOM_UTF16_LE + '{"s": "\ufffe"}'.encode("utf-16-le"),
        codecs.BOM_UTF32_BE + '{"s": "\uffff"}'.encode("utf-32-be"),
    ],
)
def test_noncharacters_are_escaped_however_they_arrive(data: bytes) -> None:
    [item] = parse.file_items("f", data, None, codec.ItemEncoder(), 10_000)
    assert b"\xef\xbf\xbe" not in item and b"\xef\xbf\xbf" not in item
    assert orjson.loads(item)["state"]["s"][-1] in "\ufffe\uffff"


@pytest.mark.parametrize(
    "data",
    [
        b'{"id": 123456789012345678901234567890}',
        b'{"id": -9223372036854775809}',
        b'# junk\n{"a": 1e400}',
        b'[{"a": 1},\n {"a": -1E+400}]',
        b'{"a": 1}\n{"a": 1e400}\n',
        b'{"a": 1}\n{"a": 100000000000000000000}\n',
    ],
)
def test_numbers_that_cannot_travel_exactly_are_rejected(data: bytes) -> None:
    """Issue 22: orjson turned a 30-digit integer into 1.2345678901234568e+29 (silently)."""
    with pytest.raises(RejectedFile) as caught:
        parse.parse_records(data)
    assert caught.value.code == parse.NUMBER_OUT_OF_RANGE


def test_numbers_that_travel_are_kept() -> None:
    data = b'{"u": 18446744073709551615, "i": -9223372036854775808, "s": "1234567890123456789012"'
    data += b', "t": 1E-400}'
    [value] = parse.parse_records(data)
    assert value == {"u": 2**64 - 1, "i": -(2**63), "s": "1234567890123456789012", "t": 0.0}


@pytest.mark.parametrize(
    "line",
    [
        b"2026-11-25 12:00:00 [INFO] worker started\n",
        b"[2026-11-25] [INFO] {tick}\n",
        b"[\n",
        b'"unterminated\n',
    ],
)
def test_a_large_junk_file_is_no_json(line: bytes) -> None:
    """Issue 22: junk lines parsed in quadratic time (a 30 MB file outlived the Lambda and
    ended as `crash`); the cost is now linear (bench: parse.junk_only_mb_per_s)."""
    with pytest.raises(RejectedFile) as caught:
        parse.parse_records(line * (200_000 // len(line)))
    assert caught.value.code == parse.NO_JSON
