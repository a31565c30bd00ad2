"""Property tests (hypothesis) of the loader's pure path: strip -> parse -> project -> pack ->
unpack gives back exactly the projected records, in order, once each, behind any supported
junk and in any supported layout; any byte string gets a fate (items or a reason), never an
exception (issue 22). Examples are capped so the whole file runs in a few seconds."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import codec
from runtime.ingest.errors import RejectedFile
from runtime.ingest.parse import NUMBER_OUT_OF_RANGE, compile_projection, file_items

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMIT = 4096

# Number text generated as text: what a writer may put in a file.
NUMBER_TEXT = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=20, max_value=40).map(lambda n: "9" * n),  # > 64 bits
    st.sampled_from(["1e400", "-1e400", "-0", "1E-400", "-0.0", "0.1000000000000000055511151231257827"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(st.integers(0, 10**6), st.text("0123456789", min_size=1, max_size=30)).map(
        lambda t: f"{t[0]}.{t[1]}"
    ),
)
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
    | st.sampled_from("\ufffe\uffff"),
    max_size=12,
)


def _json_value(depth: int) -> st.SearchStrategy[str]:
    """JSON text (not values): numbers are kept exactly as written."""
    scalar = st.one_of(NUMBER_TEXT, TEXT.map(json.dumps), st.sampled_from(["true", "false", "null"]))
    if depth == 0:
        return scalar
    inner = _json_value(depth - 1)
    return st.one_of(
        scalar,
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.dictionaries(TEXT, inner, max_size=3).map(
            lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
        ),
    )


RECORD_TEXT = st.dictionaries(TEXT, _json_value(3), min_size=1, max_size=4).map(
    lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
)
JUNK = st.lists(
    st.sampled_from(
        [
            "# a comment",
            "// another",
            "; ini style",
            "/* block\n { not json\n */",
            "[INFO] started {batch}",
            "{{template}}",
            "2026-11-25 12:00:00 log line",
            "",
            "   ",
        ]
    ),
    max_size=4,
).map(lambda lines: "".join(line + "\n" for line in lines))
LAYOUT = st.sampled_from(["object", "array", "ndjson"])
PROJECTIONS = st.sampled_from([{}, {"kept": ("a", "null"), "deep": ("a.b", "omit")}])


def _lay_out(records: list[str], layout: str) -> str:
    if layout == "object":
        return records[0]
    if layout == "array":
        return "[\n" + ",\n".join(records) + "\n]"
    return "\n".join(records) + "\n"


def _exact(value: Any) -> bool:
    """Within what travels: integers that fit 64 bits (signed or unsigned), finite doubles."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(map(_exact, value))
    return all(map(_exact, value.values()))


def _unpack(items: list[bytes]) -> list[Any]:
    packer = codec.EnvelopePacker(max_bytes=LIMIT, make_id=lambda k: f"b/{k}")
    parts = packer.add_many(items, 0)
    final = packer.flush()
    parts += [final] if final else []
    out = []
    for part in parts:
        assert 0 < len(part.body) <= LIMIT
        out.extend(item.state for item in codec.decode(part.body).items)
    return out


@FAST
@given(
    records=st.lists(RECORD_TEXT, min_size=1, max_size=5),
    junk=JUNK,
    layout=LAYOUT,
    projection=PROJECTIONS,
)
def test_records_come_back_exactly_once_in_order(
    records: list[str], junk: str, layout: str, projection: dict[str, tuple[str, str]]
) -> None:
    records = records[:1] if layout == "object" else records
    data = (junk + _lay_out(records, layout)).encode()
    expected = [json.loads(r) for r in records]  # the standard library keeps integers exact
    project = compile_projection(projection)
    try:
        items = file_items("f.json", data, project, codec.ItemEncoder(), LIMIT - 200)
    except RejectedFile as rejected:
        # Only a number that cannot travel exactly, or a record too large for a part.
        assert rejected.code in (NUMBER_OUT_OF_RANGE, "record_too_large"), rejected
        if rejected.code == NUMBER_OUT_OF_RANGE:
            assert not all(map(_exact, expected))
        return
    assert all(map(_exact, expected)), "a number that cannot travel exactly was let through"
    wanted = [project(r) for r in expected] if project else expected
    got = _unpack(items)
    assert orjson.dumps(got) == orjson.dumps(wanted)
    assert [json.loads(orjson.dumps(v)) for v in got] == [json.loads(orjson.dumps(v)) for v in wanted]
    ids = [orjson.loads(i)["id"] for i in items]
    assert ids == [f"f.json#{n}" for n in range(len(records))]


@FAST
@given(
    data=st.binary(max_size=300)
    | st.lists(
        st.sampled_from(
            [
                b"{",
                b"[",
                b'"',
                b"\n",
                b"1e400",
                b"#",
                b"/*",
                b"\xff",
                b"}",
                b"]",
                b'"a":',
                b"99999999999999999999999",
            ]
        ),
        max_size=40,
    ).map(b"".join)
)
def test_any_bytes_get_a_fate(data: bytes) -> None:
    try:
        items = file_items("f.json", data, None, codec.ItemEncoder(), LIMIT - 200)
    except RejectedFile as rejected:
        assert rejected.code
        return
    assert items and _unpack(items)
