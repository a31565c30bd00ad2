from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import codec
from runtime.errors import EnvelopeError, MessageTooLarge, TooManyAttributes


def SQS_ALLOWED(c: int) -> bool:
    return c in (0x9, 0xA, 0xD) or 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD or 0x10000 <= c <= 0x10FFFF


def test_round_trip() -> None:
    envelope = codec.Envelope(
        id="b1/0", parent=None, items=(codec.Item(id="f#0", step=0, attempt=0, state={"a": 1}),)
    )
    assert codec.decode(codec.encode(envelope)) == envelope


def test_noncharacters_are_escaped_and_round_trip() -> None:
    body = codec.dumps({"s": "a\ufffeb\uffffc"})
    assert "\ufffe".encode() not in body and "\uffff".encode() not in body
    assert all(SQS_ALLOWED(ord(ch)) for ch in body.decode())
    assert orjson.loads(body) == {"s": "a\ufffeb\uffffc"}


@given(st.text())
def test_any_text_encodes_to_sqs_allowed_characters(text: str) -> None:
    try:
        body = codec.dumps({"s": text})
    except orjson.JSONEncodeError:
        return  # lone surrogates cannot be encoded at all; orjson refuses them
    assert all(SQS_ALLOWED(ord(ch)) for ch in body.decode())
    assert orjson.loads(body)["s"] == text


def test_derived_ids_are_fixed_length_however_deep() -> None:
    ident = "batch/0"
    for slot in range(200):
        ident = codec.derived_id(ident, slot)
        assert len(ident) == codec.DERIVED_ID_LENGTH
    assert codec.derived_id("p", 1) == codec.derived_id("p", 1)
    assert codec.derived_id("p", 1) != codec.derived_id("p", 2)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"v":2,"id":"x","parent":null,"items":[]}',
        b'{"v":1,"id":"x","parent":null,"items":[]}',
        b'{"v":1,"id":"x","parent":null,"items":[{"id":"a","step":-1,"attempt":0,"state":1}]}',
        b'{"v":1,"id":"x","parent":null,"items":[{"id":"a","step":0,"attempt":true,"state":1}]}',
        b'{"v":1,"id":"","parent":null,"items":[{"id":"a","step":0,"attempt":0,"state":1}]}',
    ],
)
def test_decode_rejects_bad_bodies(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        codec.decode(body)


def test_attributes_count_name_type_and_value() -> None:
    attributes = {"reason": {"DataType": "String", "StringValue": "é"}}
    assert codec.attributes_size(attributes) == len("reason") + len("String") + 2
    assert codec.check_message(b"x" * 10, attributes, limit=100) == 10 + 14
    with pytest.raises(MessageTooLarge):
        codec.check_message(b"x" * 90, attributes, limit=100)
    with pytest.raises(TooManyAttributes):
        codec.attributes_size({str(i): {"DataType": "String", "StringValue": "v"} for i in range(11)})
    with pytest.raises(EnvelopeError):
        codec.check_message(b"")


def test_billing_units() -> None:
    assert codec.billing_units(1) == 1
    assert codec.billing_units(65_536) == 1
    assert codec.billing_units(65_537) == 2
    assert codec.billing_units(1_048_576) == 16


@given(
    st.lists(st.text(min_size=0, max_size=300), min_size=1, max_size=120),
    st.integers(min_value=600, max_value=4096),
    st.integers(min_value=0, max_value=200),
)
def test_packer_never_exceeds_limit_never_empty_and_keeps_order(
    texts: list[str], limit: int, attribute_bytes: int
) -> None:
    packer = codec.EnvelopePacker(
        max_bytes=limit, make_id=lambda k: f"batch-0001/{k}", attribute_bytes=attribute_bytes
    )
    parts: list[codec.PackedPart] = []
    sent: list[int] = []
    for index, text in enumerate(texts):
        item = codec.encode_item(codec.Item(id=f"f#{index}", step=0, attempt=0, state={"t": text}))
        if not packer.fits_alone(item):
            with pytest.raises(MessageTooLarge):
                packer.add(item, index)
            continue
        closed = packer.add(item, index)
        if closed:
            parts.append(closed)
        sent.append(index)
    last = packer.flush()
    if last:
        parts.append(last)
    seen: list[int] = []
    for k, part in enumerate(parts):
        assert part.index == k and part.id == f"batch-0001/{k}"
        assert 0 < part.size <= limit
        assert part.size == len(part.body) + attribute_bytes
        decoded = codec.decode(part.body)
        assert decoded.id == part.id and len(decoded.items) == part.count
        seen.extend(int(item.id.split("#")[1]) for item in decoded.items)
        assert (part.first, part.last) == (seen[-part.count], seen[-1])
    assert seen == sent


def test_packer_fills_greedily() -> None:
    packer = codec.EnvelopePacker(max_bytes=8192, make_id=str)
    item = codec.encode_item(codec.Item(id="x", step=0, attempt=0, state={"p": "y" * 80}))
    parts = [p for p in (packer.add(item) for _ in range(500)) if p]
    assert all(8192 - len(item) - 1 < p.size <= 8192 for p in parts)
