"""The local HTTP API: route matching, the API Gateway v2 event it builds (read back with
Powertools' own data class), and POST /messages as the SQS integration (in-process moto)."""

from __future__ import annotations

import base64
import http.client
import urllib.parse
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from moto import mock_aws

from local.http import (
    MESSAGES_ROUTE,
    STATUS_ROUTE,
    SUBMIT_ROUTE,
    GatewayClients,
    LocalHttpApi,
    api_event,
    build_gateway,
    match_route,
)
from runtime.config import QueueSettings, Settings
from tests.support.aws import mock_client


def test_routes_match_as_the_api_declares_them() -> None:
    assert match_route("POST", "/messages") == (MESSAGES_ROUTE, {})
    assert match_route("POST", "/jobs") == (SUBMIT_ROUTE, {})
    assert match_route("GET", "/jobs/abc") == (STATUS_ROUTE, {"id": "abc"})
    assert match_route("GET", "/jobs/abc/def") is None
    assert match_route("GET", "/messages") is None
    assert match_route("DELETE", "/jobs/abc") is None


def test_the_event_reads_back_through_powertools() -> None:
    event = APIGatewayProxyEventV2(
        api_event(
            "GET",
            "/jobs/abc",
            STATUS_ROUTE,
            headers={"X-Trace": "1"},
            query="a=1",
            path_parameters={"id": "abc"},
        )
    )
    assert event.route_key == STATUS_ROUTE and event.path_parameters == {"id": "abc"}
    assert event.request_context.http.method == "GET" and event.raw_path == "/jobs/abc"
    assert event.headers["x-trace"] == "1" and event.raw_query_string == "a=1" and event.body is None
    binary = APIGatewayProxyEventV2(api_event("POST", "/jobs", SUBMIT_ROUTE, body=b"\xff\x00"))
    assert binary.is_base64_encoded and base64.b64decode(binary.body or "") == b"\xff\x00"


@pytest.fixture
def api() -> Iterator[tuple[LocalHttpApi, Any]]:
    with mock_aws():
        sqs = mock_client("sqs")
        url = sqs.create_queue(QueueName="state")["QueueUrl"]
        settings = Settings(queues=QueueSettings(state_url=url))
        with build_gateway(settings, GatewayClients(sqs=sqs, jobs=lambda _e, _c: {})) as server:
            yield server, sqs


def post(server: LocalHttpApi, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    address = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    connection.request("POST", path, body=body)
    response = connection.getresponse()
    reply = (response.status, orjson.loads(response.read()))
    connection.close()
    return reply


def test_post_messages_sends_the_body_exactly_and_answers_the_message_id(
    api: tuple[LocalHttpApi, Any],
) -> None:
    server, sqs = api
    body = b'  {"a": [1, 2],\n "b": "\xc3\xa9"}  '
    status, reply = post(server, "/messages", body)
    [message] = sqs.receive_message(QueueUrl=server.state_url)["Messages"]
    assert status == 200
    assert reply["SendMessageResponse"]["SendMessageResult"]["MessageId"] == message["MessageId"]
    assert message["Body"] == body.decode()  # the whole body, not a field of it


def test_an_empty_body_is_refused_by_the_queue(api: tuple[LocalHttpApi, Any]) -> None:
    server, _sqs = api
    status, reply = post(server, "/messages", b"")
    assert status == 400 and reply["Error"]["Code"]
    assert post(server, "/nowhere", b"{}")[0] == 404
