"""The envelope codec: the one place that encodes, decodes, sizes and validates SQS bodies.

Every producer and consumer in sluice (loader, router, relay, gateway, jobs) goes through this
module. The wire format is::

    {"v": 1, "id": ..., "parent": ..., "items": [{"id", "step", "attempt", "state"}, ...]}

Sizes are UTF-8 bytes of the body plus every message attribute's name, type and value, which
is how SQS counts them against its maximum message size; billing is per started 64 KiB chunk.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

from runtime.errors import EnvelopeError, MessageTooLarge, TooManyAttributes

ENVELOPE_VERSION = 1
SQS_MAX_MESSAGE_BYTES = 1_048_576
BILLING_CHUNK_BYTES = 65_536
MAX_MESSAGE_ATTRIBUTES = 10
DERIVED_ID_LENGTH = 26

# orjson escapes every control character but writes the noncharacters U+FFFE and U+FFFF raw,
# and SQS rejects both. In UTF-8 they are exactly these 3-byte sequences, which cannot occur
# inside any other character's encoding, so a byte replace is exact.
_RAW_FFFE = "\ufffe".encode()
_RAW_FFFF = "\uffff".encode()
_NONCHARACTER_LEAD = b"\xef\xbf"

MessageAttributes = Mapping[str, Mapping[str, Any]]

# Message attribute names (docs/bad-input.md#dead-letter-attributes): one set, shared by the
# router, the relay and tooling. Every message sluice dead-letters carries the first three.
ATTR_PREFIX = "sluice-"  # every attribute below starts with it
ATTR_REASON = "sluice-reason"  # a reason code
ATTR_DETAIL = "sluice-detail"  # <= 512 characters
ATTR_SOURCE = "sluice-source"  # system/queue
ATTR_STEP = "sluice-step"  # the mutation's name
ATTR_ATTEMPTS = "sluice-attempts"
ATTR_ERROR = "sluice-error"  # the exception's type
ATTR_TRACE = "sluice-trace"  # a traceback excerpt, <= 1 KiB
ATTR_STATUS = "sluice-status"  # relay: the API's HTTP status
ATTR_RESPONSE = "sluice-response"  # relay: an excerpt of the API's answer
MAX_DETAIL_CHARS = 512
MAX_TRACE_BYTES = 1024
# Set by the HTTP API's SQS integration on every POST /messages (stacks/gateway.py), beside
# ATTR_SOURCE: the request id keys the raw item; the idempotency key and the caller scope it.
ATTR_REQUEST_ID = "sluice-request-id"
ATTR_IDEMPOTENCY_KEY = "sluice-idempotency-key"
ATTR_CALLER = "sluice-caller"


def string_attribute(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def number_attribute(value: int) -> dict[str, str]:
    return {"DataType": "Number", "StringValue": str(value)}


@dataclass(frozen=True, slots=True)
class Item:
    """One unit of work. `id` is deterministic and kept through every step.

    `history` is the optional, bounded list of what happened to the item (step names, retries,
    failures, redrives; the router keeps it when configured to); `dead_letter` is the reason
    code the framework wrote when it dead-lettered the item (the mark a redrive is recognised
    by). Both are omitted from the wire format when absent.
    """

    id: str
    step: int
    attempt: int
    state: Any
    history: tuple[str, ...] | None = None
    dead_letter: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "step": self.step, "attempt": self.attempt, "state": self.state}
        if self.history is not None:
            out["history"] = list(self.history)
        if self.dead_letter is not None:
            out["dead_letter"] = self.dead_letter
        return out


@dataclass(frozen=True, slots=True)
class Envelope:
    """An SQS message body: a batch of items with a stable id and its lineage."""

    id: str
    parent: str | None
    items: tuple[Item, ...]


def dumps(value: Any) -> bytes:
    """Serialize to JSON bytes that SQS accepts (noncharacters escaped)."""
    return escape_sqs_noncharacters(orjson.dumps(value))


def escape_sqs_noncharacters(data: bytes) -> bytes:
    if _NONCHARACTER_LEAD not in data:
        return data
    return data.replace(_RAW_FFFE, b"\\ufffe").replace(_RAW_FFFF, b"\\uffff")


# Characters SQS refuses anywhere in a message, attributes included (its allowed set inverted).
_SQS_REFUSED_CHARACTERS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_safe_text(text: str) -> str:
    """`text` with every character SQS refuses replaced by U+FFFD (for attribute values that
    quote foreign text, such as an API's response)."""
    return _SQS_REFUSED_CHARACTERS.sub("\ufffd", text)


def derived_id(parent_id: str, slot: int | str) -> str:
    """Fixed-length id of an output derived from `parent_id`: base32(sha256(parent|slot))[:26].

    26 base32 characters carry 130 bits, so collisions are not a practical concern, and the
    length never grows with the depth of the lineage (FIFO dedup ids allow 128 characters).
    """
    digest = hashlib.sha256(f"{parent_id}|{slot}".encode()).digest()
    return base64.b32encode(digest).decode("ascii")[:DERIVED_ID_LENGTH]


def encode_item(item: Item) -> bytes:
    return dumps(item.as_dict())


class ItemEncoder:
    """Encodes items byte-identically to `encode_item`, without building an Item or a dict.

    For producers with many items per second (the loader): ids are `<prefix><index>`, where
    the prefix is escaped once, and each state arrives as JSON bytes already made SQS-safe
    with `dumps` / `escape_sqs_noncharacters`.
    """

    __slots__ = ("_middle",)

    def __init__(self, step: int = 0, attempt: int = 0) -> None:
        self._middle = b'","step":%d,"attempt":%d,"state":' % (step, attempt)

    @staticmethod
    def id_prefix(prefix: str) -> bytes:
        """`{"id":"<prefix>` with the prefix JSON-escaped (digits appended stay valid)."""
        return b'{"id":' + dumps(prefix)[:-1]

    def finish(self, id_prefix: bytes, index: int, state_json: bytes) -> bytes:
        return b"%b%d%b%b}" % (id_prefix, index, self._middle, state_json)

    def finish_all(self, id_prefix: bytes, states: Iterable[bytes]) -> list[bytes]:
        """`finish` for states numbered from 0, in one comprehension (no call per item)."""
        middle = self._middle
        return [b"%b%d%b%b}" % (id_prefix, index, middle, state) for index, state in enumerate(states)]


def _envelope_prefix(envelope_id: str, parent: str | None) -> bytes:
    return b'{"v":1,"id":' + dumps(envelope_id) + b',"parent":' + dumps(parent) + b',"items":['


_ENVELOPE_SUFFIX = b"]}"


def envelope_overhead(envelope_id: str, parent: str | None = None, attribute_bytes: int = 0) -> int:
    """Bytes an envelope with this id costs besides its items (and their separators)."""
    return len(_envelope_prefix(envelope_id, parent)) + len(_ENVELOPE_SUFFIX) + attribute_bytes


def assemble(envelope_id: str, parent: str | None, encoded_items: list[bytes]) -> bytes:
    """Build an envelope body from items already encoded with `encode_item`."""
    if not encoded_items:
        raise EnvelopeError("an envelope must hold at least one item")
    return _envelope_prefix(envelope_id, parent) + b",".join(encoded_items) + _ENVELOPE_SUFFIX


def encode(envelope: Envelope) -> bytes:
    return assemble(envelope.id, envelope.parent, [encode_item(i) for i in envelope.items])


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise EnvelopeError(reason)


def _decode_item(raw: Any, index: int) -> Item:
    # Fast path for a well-formed item of exactly the four fields (routers decode hundreds of
    # thousands per second): the same checks, without building an error message per field.
    if type(raw) is dict and len(raw) == 4:
        item_id, step, attempt = raw.get("id"), raw.get("step"), raw.get("attempt")
        if (
            type(item_id) is str
            and item_id
            and type(step) is int
            and step >= 0
            and type(attempt) is int
            and attempt >= 0
            and "state" in raw
        ):
            return Item(item_id, step, attempt, raw["state"])
    return _decode_item_checked(raw, index)


def _decode_item_checked(raw: Any, index: int) -> Item:
    _require(isinstance(raw, dict), f"items[{index}] is not an object")
    item_id, step, attempt = raw.get("id"), raw.get("step"), raw.get("attempt")
    _require(isinstance(item_id, str) and item_id != "", f"items[{index}].id must be a string")
    for name, value in (("step", step), ("attempt", attempt)):
        _require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            f"items[{index}].{name} must be a non-negative integer",
        )
    _require("state" in raw, f"items[{index}] has no state")
    history = raw.get("history")
    if history is not None:
        _require(
            isinstance(history, list) and all(isinstance(name, str) for name in history),
            f"items[{index}].history must be an array of strings",
        )
        history = tuple(history)
    dead_letter = raw.get("dead_letter")
    _require(
        dead_letter is None or isinstance(dead_letter, str), f"items[{index}].dead_letter must be a string"
    )
    return Item(
        id=item_id, step=step, attempt=attempt, state=raw["state"], history=history, dead_letter=dead_letter
    )


def parse_json(body: str | bytes) -> Any:
    """Parse a body as JSON; EnvelopeError (with orjson's reason) when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"body is not valid JSON: {exc}") from exc


def looks_like_envelope(value: Any) -> bool:
    """True when a parsed body claims to be an envelope (has a version field)."""
    return isinstance(value, dict) and "v" in value and "items" in value


def envelope_from_value(value: Any) -> Envelope:
    _require(isinstance(value, dict), "body is not a JSON object")
    _require(value.get("v") == ENVELOPE_VERSION, f"unsupported envelope version {value.get('v')!r}")
    envelope_id, parent, items = value.get("id"), value.get("parent"), value.get("items")
    _require(isinstance(envelope_id, str) and envelope_id != "", "id must be a non-empty string")
    _require(parent is None or isinstance(parent, str), "parent must be a string or null")
    _require(isinstance(items, list) and len(items) > 0, "items must be a non-empty array")
    return Envelope(
        id=envelope_id,
        parent=parent,
        items=tuple(_decode_item(raw, i) for i, raw in enumerate(items)),
    )


def decode(body: str | bytes) -> Envelope:
    """Decode and validate an envelope; EnvelopeError says exactly what is wrong."""
    return envelope_from_value(parse_json(body))


def attributes_size(attributes: MessageAttributes | None) -> int:
    """Bytes SQS counts for message attributes: each name, data type and value."""
    if not attributes:
        return 0
    if len(attributes) > MAX_MESSAGE_ATTRIBUTES:
        raise TooManyAttributes(
            f"{len(attributes)} message attributes; SQS accepts at most {MAX_MESSAGE_ATTRIBUTES}"
        )
    total = 0
    for name, attribute in attributes.items():
        total += len(name.encode()) + len(str(attribute["DataType"]).encode())
        if "BinaryValue" in attribute:
            total += len(attribute["BinaryValue"])
        else:
            total += len(str(attribute["StringValue"]).encode())
    return total


def billing_units(size: int) -> int:
    """SQS bills each started 64 KiB chunk of a request's payload as one request."""
    return max(1, -(-size // BILLING_CHUNK_BYTES))


def check_message(
    body: bytes, attributes: MessageAttributes | None = None, limit: int = SQS_MAX_MESSAGE_BYTES
) -> int:
    """Validate a message for SQS and return its counted size."""
    if not body:
        raise EnvelopeError("SQS does not accept an empty message")
    size = len(body) + attributes_size(attributes)
    if size > limit:
        raise MessageTooLarge(size, limit)
    return size


@dataclass(frozen=True, slots=True)
class PackedPart:
    """One packed envelope. `first` / `last` are the caller's tags of its first and last item."""

    index: int
    id: str
    body: bytes
    count: int
    first: Any
    last: Any
    size: int

    @property
    def billing_units(self) -> int:
        return billing_units(self.size)


class EnvelopePacker:
    """Greedily packs encoded items into envelopes no larger than `max_bytes` (body + attributes).

    Parts are numbered from `start_index`; `make_id(k)` names part k. The packing is a pure
    function of the item sequence and the parameters, so a resumed batch recomputes the same
    parts byte for byte.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        make_id: Callable[[int], str],
        parent: str | None = None,
        attribute_bytes: int = 0,
        start_index: int = 0,
    ) -> None:
        self._max = max_bytes
        self._make_id = make_id
        self._parent = parent
        self._attribute_bytes = attribute_bytes
        self._index = start_index
        self._items: list[bytes] = []
        self._tags: list[Any] = []
        self._size = 0
        self._prefix = b""
        self._start_part()

    def _start_part(self) -> None:
        self._items = []
        self._tags = []
        self._prefix = _envelope_prefix(self._make_id(self._index), self._parent)
        self._size = len(self._prefix) + len(_ENVELOPE_SUFFIX) + self._attribute_bytes

    def fits_alone(self, encoded_item: bytes) -> bool:
        return self._size_with_only(encoded_item) <= self._max

    def _size_with_only(self, encoded_item: bytes) -> int:
        base = len(self._prefix) + len(_ENVELOPE_SUFFIX) + self._attribute_bytes
        return base + len(encoded_item)

    def add(self, encoded_item: bytes, tag: Any = None) -> PackedPart | None:
        """Add one item; returns the part this add closed, if any."""
        extra = len(encoded_item) + (1 if self._items else 0)
        closed = None
        if self._size + extra > self._max:
            if not self._items:
                raise MessageTooLarge(self._size + extra, self._max, "item")
            closed = self._close()
            extra = len(encoded_item)
            if self._size + extra > self._max:
                raise MessageTooLarge(self._size + extra, self._max, "item")
        self._items.append(encoded_item)
        self._tags.append(tag)
        self._size += extra
        return closed

    def add_many(self, encoded_items: Sequence[bytes], first_tag: int) -> list[PackedPart]:
        """Add items tagged `first_tag`, `first_tag + 1`, ...; returns the parts this closed.

        Packs exactly as calling `add` for each item would (the same greedy cut points), but
        finds each cut with a bisect over cumulative sizes instead of a Python step per item:
        the loader packs hundreds of thousands of records a second through here.
        """
        count = len(encoded_items)
        if count == 1:  # one-record files: the plain path is cheaper than the set-up below
            part = self.add(encoded_items[0], first_tag)
            return [part] if part is not None else []
        closed: list[PackedPart] = []
        # reach[i]: bytes of items[:i] plus one separator each (what they add to a part).
        reach = list(map(operator.add, accumulate(map(len, encoded_items), initial=0), range(count + 1)))
        start = 0
        while start < count:
            # Joining a non-empty part costs a separator; the first item of a part does not.
            separator_saved = 0 if self._items else 1
            budget = self._max - self._size + reach[start] + separator_saved
            end = bisect.bisect_right(reach, budget, lo=start) - 1
            if end == start:
                if not self._items:
                    raise MessageTooLarge(self._size + len(encoded_items[start]), self._max, "item")
                closed.append(self._close())
                continue
            self._items.extend(encoded_items[start:end])
            self._tags.extend((first_tag + start, first_tag + end - 1))  # _close reads the ends
            self._size += reach[end] - reach[start] - separator_saved
            start = end
            if start < count:
                closed.append(self._close())
        return closed

    def flush(self) -> PackedPart | None:
        """Close the open part, if it holds anything."""
        return self._close() if self._items else None

    def _close(self) -> PackedPart:
        # One join, one buffer: a part is up to 1 MiB, and every fresh buffer of that size
        # costs its page faults again (prefix + join + suffix would make three).
        items = self._items
        items[0] = self._prefix + items[0]
        items[-1] = items[-1] + _ENVELOPE_SUFFIX
        body = b",".join(items)
        part = PackedPart(
            index=self._index,
            id=self._make_id(self._index),
            body=body,
            count=len(self._items),
            first=self._tags[0],
            last=self._tags[-1],
            size=len(body) + self._attribute_bytes,
        )
        self._index += 1
        self._start_part()
        return part
