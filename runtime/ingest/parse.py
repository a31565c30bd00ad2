"""From a file's bytes to encoded envelope items: strip junk, parse, project, encode.

The per-record path is kept tight on purpose (the loader's throughput is records/s): orjson
parses and re-serialises each record, the projection is compiled once per batch, and an item
is assembled from byte strings with the codec's `ItemEncoder`, never through a dict.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from runtime import codec
from runtime.ingest.errors import RejectedFile

# Reason codes (DESIGN "Bad input").
EMPTY = "empty"
NO_JSON = "no_json"
INVALID_JSON = "invalid_json"
INVALID_ENCODING = "invalid_encoding"
NOT_RECORDS = "not_records"
RECORD_TOO_LARGE = "record_too_large"
MISSING_FIELD = "missing_field"
NOT_REGULAR_FILE = "not_regular_file"
CRASH = "crash"

_UTF8_BOM = codecs.BOM_UTF8
# Longest first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_WHITESPACE = b" \t\r\n\f\v"
_OBJECT_OPEN = ord("{")
_ARRAY_OPEN = ord("[")


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


def _next_non_space(data: bytes, position: int) -> int:
    end = len(data)
    while position < end and data[position] in _WHITESPACE:
        position += 1
    return position


def _opens_json(data: bytes, position: int) -> bool:
    """Does a `{` or `[` at `position` open JSON records rather than junk like `[INFO] ...`?

    An object of records starts `{"` or `{}`; an array of records starts `[{` or `[]`
    (whitespace allowed between).
    """
    following = _next_non_space(data, position + 1)
    if following >= len(data):
        return False
    if data[position] == _OBJECT_OPEN:
        return data[following] in b'"}'
    return data[following] in b"{]"


# The usual junk in one regex pass (whitespace, `#` / `//` / `;` lines, `/* */` blocks); the
# general loop below takes over only for junk of another kind.
_COMMON_JUNK = re.compile(rb"(?:[ \t\r\n\f\v]+|#[^\n]*|//[^\n]*|;[^\n]*|/\*.*?\*/)*", re.DOTALL)


def strip_junk(data: bytes) -> bytes:
    """Drop everything before the first JSON value: comment lines (`#`, `//`, `;`, anything
    else that does not open JSON), `/* ... */` blocks, blank lines and a BOM."""
    data = _normalise_encoding(data)
    end = len(data)
    position = _COMMON_JUNK.match(data).end()  # type: ignore[union-attr]  # matches the empty string
    if position < end and data[position] in (_OBJECT_OPEN, _ARRAY_OPEN) and _opens_json(data, position):
        return data[position:] if position else data
    while True:
        position = _next_non_space(data, position)
        if position >= end:
            return b""
        lead = data[position]
        if lead in (_OBJECT_OPEN, _ARRAY_OPEN) and _opens_json(data, position):
            return data[position:] if position else data
        if data.startswith(b"/*", position):
            close = data.find(b"*/", position + 2)
            position = end if close < 0 else close + 2
            continue
        newline = data.find(b"\n", position)
        position = end if newline < 0 else newline + 1


_VALUE_STARTS = frozenset(b'[{"-0123456789tfn')


def _non_record_json(data: bytes) -> str | None:
    """When no records open anywhere: is some line the start of a JSON value all the same (a
    scalar, an array of scalars)? Then the file holds JSON that is not records. Only runs
    on the way to a rejection."""
    data = _normalise_encoding(data)
    for line_start in [0, *(i + 1 for i in range(len(data)) if data[i] == 0x0A)]:
        position = _next_non_space(data, line_start)
        if position < len(data) and data[position] in _VALUE_STARTS:
            try:
                value = orjson.loads(data[position:])
            except orjson.JSONDecodeError:
                continue
            return type(value).__name__
    return None


def _invalid(data: bytes, exc: orjson.JSONDecodeError) -> RejectedFile:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return RejectedFile(INVALID_ENCODING, f"not UTF-8 at byte {bad.start}")
    return RejectedFile(INVALID_JSON, str(exc))


def _parse_lines(body: bytes, whole_error: orjson.JSONDecodeError) -> list[Any]:
    """NDJSON: one object per non-blank line. Any bad line makes the whole file invalid."""
    records = []
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise _invalid(body, whole_error) from None
    return records


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
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"\n" not in body.strip():
            raise _invalid(body, exc) from None
        value = _parse_lines(body, exc)
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
