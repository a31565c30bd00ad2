"""From a file's bytes to encoded envelope items: strip junk, parse, project, encode.

The per-record path is kept tight on purpose (the loader's throughput is records/s): orjson
parses and re-serialises each record, the projection is compiled once per batch, and an item
is assembled from byte strings with the codec's `ItemEncoder`, never through a dict.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from runtime import codec
from runtime.ingest.errors import RejectedFile

# Reason codes (docs/bad-input.md#files-ingest).
EMPTY = "empty"
NO_JSON = "no_json"
INVALID_JSON = "invalid_json"
INVALID_ENCODING = "invalid_encoding"
NOT_RECORDS = "not_records"
RECORD_TOO_LARGE = "record_too_large"
MISSING_FIELD = "missing_field"
NOT_REGULAR_FILE = "not_regular_file"
CRASH = "crash"
NUMBER_OUT_OF_RANGE = "number_out_of_range"
FILE_TOO_LARGE = "file_too_large"
UNREADABLE = "unreadable"
INVALID_NAME = "invalid_name"
FUTURE_MTIME = "future_mtime"

_UTF8_BOM = codecs.BOM_UTF8
# Longest first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _normalise_encoding(data: bytes) -> bytes:
    """UTF-8 without a BOM. A UTF-16/32 BOM is honoured by transcoding (rare, so not fast)."""
    if data.startswith(_UTF8_BOM):
        return data[len(_UTF8_BOM) :]
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding).encode()
            except UnicodeError as exc:
                detail = f"{encoding} with a BOM but undecodable: {exc}"
                raise RejectedFile(INVALID_ENCODING, detail) from None
    return data


# Junk, one unit at a time, in one regex pass (linear in the file: every unit consumes what
# it matches, and nothing is tried twice): whitespace, a `/* ... */` block (to the end of the
# file when never closed), or the rest of a line that does not open JSON records. Records
# open with `{"` or `{}` (an object) or `[{` or `[]` (an array), whitespace allowed between,
# so junk like `[INFO] ...` or `{{template}}` is junk.
_WS = rb"[ \t\r\n\f\v]"
_JUNK = re.compile(
    rb"(?:" + _WS + rb"+|/\*.*?(?:\*/|\Z)|(?!\{" + _WS + rb"*[\"}]|\[" + _WS + rb"*[{\]]|/\*)[^\n]+)*",
    re.DOTALL,
)


def strip_junk(data: bytes) -> bytes:
    """Drop everything before the first JSON value: comment lines (`#`, `//`, `;`, anything
    else that does not open JSON), `/* ... */` blocks, blank lines and a BOM. Linear time."""
    data = _normalise_encoding(data)
    position = _JUNK.match(data).end()  # type: ignore[union-attr]  # matches the empty string
    if position >= len(data):
        return b""
    return data[position:] if position else data


# A line that may start a JSON array that is not records (after leading whitespace): `[`
# followed by a value other than an object; and the last non-blank line (a scalar).
# (A leading newline literal lets the regex engine skip ahead between lines.)
_ARRAY_LINE = re.compile(rb"\n" + _WS + rb"*(?=\[" + _WS + rb"*[\[\]\"\-0-9tfn])")
# How much the search for non-record JSON may parse, as a multiple of the file's size (each
# attempt parses from its line to the end of the file): linear, however many lines qualify.
_NON_RECORD_BUDGET = 2


def _non_record_json(data: bytes) -> str | None:
    """When no records open anywhere: is some line the start of a JSON value that runs to the
    end of the file all the same (a scalar, an array of scalars)? Then the file holds JSON that
    is not records. A scalar can only be the last line; arrays are tried from the last line
    up, within a budget of a few times the file's size, so junk costs linear time. Only runs
    on the way to a rejection."""
    data = _normalise_encoding(data)
    view = memoryview(data)
    # Positions in `data` (the newline searched for first is our own, before the data).
    starts = [m.end() - 1 for m in _ARRAY_LINE.finditer(b"\n" + data)]
    content_end = len(data.rstrip())
    starts.append(data.rfind(b"\n", 0, content_end) + 1)  # the last non-blank line
    budget = _NON_RECORD_BUDGET * len(data) + 65_536
    for start in sorted(set(starts), reverse=True):
        budget -= len(data) - start
        if budget < 0:
            return None
        try:
            value = orjson.loads(view[start:])
        except orjson.JSONDecodeError:
            continue
        return type(value).__name__
    return None


# Numbers (docs/bad-input.md#numbers): integers travel exactly or the file is rejected; other numbers
# travel as IEEE 754 doubles. orjson turns an integer outside [-2**63, 2**64) into a double and
# refuses a number that overflows one, so a file that may hold either (a long run of digits,
# a three-digit exponent: found by one regex pass) is checked again by the standard library,
# which keeps every integer exact.
# One C pass (translate) and substring searches: a regex over every position cost more than
# parsing the file.
_NUMBER_SHAPES = bytes(
    b"0"[0] if chr(c).isdigit() and c < 128 else b"e"[0] if c in b"eE" else c if c in b"+-" else 32
    for c in range(256)
)
_SUSPECT_SHAPES = (b"0" * 20, b"-" + b"0" * 19, b"e000", b"e+000")


def _suspect_numbers(body: bytes) -> bool:
    """Might the body hold an integer outside 64 bits (20 digits, or 19 after a minus) or a
    number that overflows a double (a three-digit exponent)? False means certainly not."""
    shapes = body.translate(_NUMBER_SHAPES)
    return any(shape in shapes for shape in _SUSPECT_SHAPES)


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class _NumberOutOfRange(Exception):  # an internal signal, mapped to RejectedFile below
    pass


def _checked_int(text: str) -> int:
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _NumberOutOfRange(
            f"the integer {text[:40]}{'...' if len(text) > 40 else ''} has no exact carrier"
        )
    return value


def _checked_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NumberOutOfRange(f"{text[:40]} overflows a double")
    return value


def _not_json(text: str) -> Any:
    raise ValueError(text)  # NaN / Infinity are not JSON


def check_numbers(chunk: bytes | memoryview) -> None:
    """Raise `number_out_of_range` when `chunk` (one JSON document) holds an integer outside
    what travels exactly or a number that overflows a double; otherwise leave the verdict to
    orjson (a document the standard library cannot read either is not this problem)."""
    try:
        json.loads(bytes(chunk), parse_int=_checked_int, parse_float=_checked_float, parse_constant=_not_json)
    except _NumberOutOfRange as exc:
        raise RejectedFile(NUMBER_OUT_OF_RANGE, str(exc)) from None
    except (ValueError, RecursionError):
        return


def _invalid(data: bytes, exc: orjson.JSONDecodeError) -> RejectedFile:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return RejectedFile(INVALID_ENCODING, f"not UTF-8 at byte {bad.start}")
    return RejectedFile(INVALID_JSON, str(exc))


def _parse_lines(body: bytes, whole_error: orjson.JSONDecodeError, suspect: bool) -> list[Any]:
    """NDJSON: one value per non-blank line. Any bad line makes the whole file invalid."""
    lines = list(filter(None, map(bytes.strip, body.split(b"\n"))))  # iterated in C
    if suspect:
        for line in lines:
            check_numbers(line)
    try:
        return list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        raise _invalid(body, whole_error) from None


def _parse_body(body: bytes) -> Any:
    """One JSON document, or NDJSON lines (a list); numbers checked when any looks suspect."""
    suspect = _suspect_numbers(body)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if suspect:
            check_numbers(body)  # one document with a number that overflows a double
        if b"\n" not in body.strip():
            raise _invalid(body, exc) from None
        return _parse_lines(body, exc, suspect)
    if suspect:
        check_numbers(body)
    return value


def parse_records(data: bytes) -> list[Any]:
    """The records of a file: one object, an array of objects, or NDJSON objects."""
    if not data.strip():
        raise RejectedFile(EMPTY, "the file is empty")
    body = strip_junk(data)
    if not body:
        kind = _non_record_json(data)
        if kind is not None:
            raise RejectedFile(NOT_RECORDS, f"the JSON in the file is a {kind}, not records")
        raise RejectedFile(NO_JSON, "nothing but junk before the end of the file")
    value = _parse_body(body)
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise RejectedFile(NOT_RECORDS, f"top-level value is a {type(value).__name__}")
    if not value:
        raise RejectedFile(EMPTY, "an empty array holds no records")
    if set(map(type, value)) != {dict}:  # one pass in C; orjson makes plain dicts
        index, record = next((i, r) for i, r in enumerate(value) if not isinstance(r, dict))
        raise RejectedFile(NOT_RECORDS, f"record {index} is a {type(record).__name__}")
    return value


# --- projection -----------------------------------------------------------------------------
_MISSING = object()
Projector = Callable[[dict[str, Any]], dict[str, Any]]


def _lookup(record: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(record, dict):
            return _MISSING
        record = record.get(key, _MISSING)
        if record is _MISSING:
            return _MISSING
    return record


def compile_projection(projection: Mapping[str, tuple[str, str]]) -> Projector | None:
    """output field -> (dotted source path, missing policy `null`/`omit`/`reject`).

    None (the default, an empty projection) keeps every field.
    """
    if not projection:
        return None
    rules = [(field, tuple(path.split(".")), missing) for field, (path, missing) in projection.items()]

    def project(record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, path, missing in rules:
            value = _lookup(record, path)
            if value is _MISSING:
                if missing == "omit":
                    continue
                if missing == "reject":
                    raise RejectedFile(MISSING_FIELD, f"a record has no {'.'.join(path)} (for {field})")
                value = None
            out[field] = value
        return out

    return project


# --- items ----------------------------------------------------------------------------------
def _may_hold_noncharacters(data: bytes) -> bool:
    """U+FFFE / U+FFFF reach orjson's output raw only from raw UTF-8 (EF BF BE/BF) or a
    `\\u` escape in the source; without either, no record needs escaping."""
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or data[:4] == codecs.BOM_UTF32_BE:
        return True  # transcoded before parsing: the raw bytes say nothing
    # Single-byte needles: CPython searches those with memchr, two-byte ones far slower.
    return b"\\" in data or b"\xef" in data


def encode_file_items(
    file_name: str,
    records: list[Any],
    project: Projector | None,
    encoder: codec.ItemEncoder,
    *,
    escape: bool = True,
) -> list[bytes]:
    """One encoded item per record, ids `<file>#<index>`, step 0."""
    if project is not None:
        records = [project(record) for record in records]
    states = map(orjson.dumps, records)
    if escape:
        states = map(codec.escape_sqs_noncharacters, states)
    return encoder.finish_all(encoder.id_prefix(f"{file_name}#"), states)


def file_items(
    file_name: str,
    data: bytes,
    project: Projector | None,
    encoder: codec.ItemEncoder,
    max_item_bytes: int,
) -> list[bytes]:
    """Parse a whole file into encoded items, or raise RejectedFile. Nothing is packed until
    the whole file has passed, so a rejected file never contributes to a part."""
    try:
        items = encode_file_items(
            file_name, parse_records(data), project, encoder, escape=_may_hold_noncharacters(data)
        )
    except orjson.JSONEncodeError as exc:
        raise RejectedFile(INVALID_ENCODING, f"a record cannot be encoded: {exc}") from None
    sizes = list(map(len, items))
    largest = max(sizes)
    if largest > max_item_bytes:
        raise RejectedFile(
            RECORD_TOO_LARGE,
            f"record {sizes.index(largest)} encodes to {largest} bytes; a part holds {max_item_bytes}",
        )
    return items
