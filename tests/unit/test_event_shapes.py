"""The canonical AWS events (tests/events/) are the shapes AWS documents: the local runtime
builds its events in the same shape, and the handlers read what those events carry."""

from __future__ import annotations

import base64
from typing import Any

from aws_lambda_powertools.utilities.data_classes import (
    APIGatewayProxyEventV2,
    DynamoDBStreamEvent,
    EventBridgeEvent,
    SQSEvent,
)

from local.http import SUBMIT_ROUTE, api_event
from local.scheduler import scheduled_event
from runtime.jobs.api import caller_of
from tests.support.events import http_api_event, load_event


def keys(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON object (lists are not entered)."""
    if not isinstance(value, dict):
        return set()
    return {f"{prefix}{k}" for k in value} | {p for k, v in value.items() for p in keys(v, f"{prefix}{k}.")}


def test_the_local_http_api_builds_the_canonical_request_shape() -> None:
    canonical = load_event("http_api_v2_iam")
    local = api_event("POST", "/jobs", SUBMIT_ROUTE, body=b"{}")
    # Headers are the client's; only a deployed API adds an authorizer (the local one has none).
    shape = {p for p in keys(canonical) if not p.startswith("headers.")}
    assert shape - keys(local) == {p for p in shape if p.startswith("requestContext.authorizer")}
    assert keys(local) <= shape


def test_the_local_scheduler_builds_the_canonical_scheduled_event() -> None:
    canonical, local = load_event("eventbridge_scheduled"), scheduled_event("x")
    assert keys(local) == keys(canonical)
    assert (local["detail-type"], local["source"]) == (canonical["detail-type"], canonical["source"])
    assert EventBridgeEvent(canonical).detail_type == "Scheduled Event"


def test_the_caller_is_the_iam_user_or_the_jwt_issuer_and_subject() -> None:
    iam = APIGatewayProxyEventV2(load_event("http_api_v2_iam"))
    jwt = APIGatewayProxyEventV2(load_event("http_api_v2_jwt"))
    assert caller_of(iam) == "iam:arn:aws:iam::123456789012:user/alice"
    assert caller_of(jwt) == "jwt:https://issuer.example.com/:client-7f3a"
    assert caller_of(APIGatewayProxyEventV2(api_event("POST", "/jobs", SUBMIT_ROUTE))) == ""


def test_binary_bodies_arrive_base64_encoded() -> None:
    canonical = APIGatewayProxyEventV2(load_event("http_api_v2_binary"))
    assert canonical.is_base64_encoded and base64.b64decode(canonical.body or "") == b"\xff\x00\xfe\x01"
    built = APIGatewayProxyEventV2(http_api_event("http_api_v2_iam", body=b"\xff\x00"))
    assert built.is_base64_encoded and base64.b64decode(built.body or "") == b"\xff\x00"
    text = APIGatewayProxyEventV2(http_api_event("http_api_v2_binary", body=b'{"a": 1}'))
    assert not text.is_base64_encoded and text.body == '{"a": 1}'


def test_the_stream_event_has_one_record_of_each_kind() -> None:
    records = list(DynamoDBStreamEvent(load_event("dynamodb_stream")).records)
    assert [r.event_name.name for r in records if r.event_name] == ["INSERT", "MODIFY", "REMOVE"]
    assert all(r.dynamodb and r.dynamodb.keys == {"pk": "order-42", "sk": "item"} for r in records)
    assert records[2].dynamodb and records[2].dynamodb.new_image == {}


def test_the_sqs_events_are_standard_and_fifo() -> None:
    standard = list(SQSEvent(load_event("sqs_standard")).records)
    fifo = list(SQSEvent(load_event("sqs_fifo")).records)
    assert all(r.attributes.message_group_id is None for r in standard)
    assert all(r.attributes.message_group_id == "sluice" for r in fifo)
    assert fifo[0].event_source_arn.endswith(".fifo")
