"""The HTTP API on loopback: requests become API Gateway v2 (payload 2.0) events.

`LocalHttpApi` serves the routes the stacks declare (the contract, `api/openapi.json`, is served
at `GET /openapi.json`):
- `POST /messages` — the SQS-SendMessage service integration, emulated: the raw body goes to
  the state queue as the message body (`MessageBody: $request.body`), tagged with the
  integration's message attributes (`runtime.pipeline.gateway`: source, request id,
  Idempotency-Key, caller), and the answer is SQS's SendMessage response with the request id in
  `apigw-requestid`; no function runs, as on AWS;
- `POST /jobs`, `GET /jobs/{id}` — the real jobs handler, called with a v2 event and a
  Lambda-like context whose remaining time counts down from the function's timeout.

`build_gateway(settings, clients)` wires it (the state queue from the settings; SQS and the jobs
function as its integrations) for the local runtime and the tests alike; it starts on a free
port (`url`) and serves each request on its own thread (like concurrent Lambdas). Authorization
is not emulated: loopback callers are trusted.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from botocore.exceptions import ClientError

from local.functions import LOCAL_ACCOUNT, LambdaContext
from runtime.config import Settings
from runtime.jobs.api import STATUS_ROUTE, SUBMIT_ROUTE
from runtime.pipeline import gateway

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
MESSAGES_ROUTE = "POST /messages"
_JOB_PATH = re.compile(r"^/jobs/([^/]+)$")
API_ID = "localapi"
# The API's contract (api/openapi.json), served as the local runtime's own description.
OPENAPI_ROUTE = "/openapi.json"
OPENAPI_DOCUMENT = Path(__file__).resolve().parent.parent / "api" / "openapi.json"
REQUEST_ID_HEADER = "apigw-requestid"
STAGE = "$default"
# API Gateway's HTTP API cuts every integration at 30 s; the jobs function's default timeout.
JOBS_TIMEOUT_S = 29.0


def match_route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """The route key and path parameters of a request, as API Gateway would match them."""
    if method == "POST" and path == "/messages":
        return MESSAGES_ROUTE, {}
    if method == "POST" and path == "/jobs":
        return SUBMIT_ROUTE, {}
    found = _JOB_PATH.match(path)
    if method == "GET" and found:
        return STATUS_ROUTE, {"id": found.group(1)}
    return None


def api_event(
    method: str,
    path: str,
    route_key: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
    path_parameters: dict[str, str] | None = None,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """An API Gateway HTTP API proxy event (payload format 2.0), the shape AWS documents."""
    now = datetime.now(UTC)
    headers = {name.lower(): value for name, value in (headers or {}).items()}
    try:
        text, encoded = body.decode(), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT,
            "apiId": API_ID,
            "domainName": headers.get("host", "localhost"),
            "domainPrefix": API_ID,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": route_key,
            "stage": STAGE,
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if body:
        event["body"] = text
    if path_parameters:
        event["pathParameters"] = path_parameters
    return event


def send_message_response(message_id: str, body: str) -> dict[str, Any]:
    """What the SQS-SendMessage integration answers: SQS's SendMessage result."""
    return {
        "SendMessageResponse": {
            "ResponseMetadata": {"RequestId": str(uuid.uuid4())},
            "SendMessageResult": {
                "MD5OfMessageBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
                "MessageId": message_id,
            },
        }
    }


class LocalHttpApi:
    """The local HTTP API server (start/stop, or a context manager)."""

    def __init__(
        self,
        *,
        sqs: Any,
        state_url: str,
        jobs_handler: Handler,
        jobs_timeout_s: float = JOBS_TIMEOUT_S,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.sqs = sqs
        self.state_url = state_url
        self.jobs_handler = jobs_handler
        self.jobs_timeout_s = jobs_timeout_s
        self._server = _Server((host, port), _make_request_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalHttpApi:
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-http-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalHttpApi:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- the routes -------------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "GET" and path.split("?", 1)[0] == OPENAPI_ROUTE:
            return 200, {"content-type": "application/json"}, OPENAPI_DOCUMENT.read_bytes()
        route = match_route(method, path.split("?", 1)[0])
        if route is None:
            return 404, {"content-type": "application/json"}, b'{"message":"Not Found"}'
        route_key, parameters = route
        if route_key == MESSAGES_ROUTE:
            return self.send_to_queue(body, headers)
        event = api_event(
            method,
            path.split("?", 1)[0],
            route_key,
            body=body,
            headers=headers,
            query=path.partition("?")[2],
            path_parameters=parameters,
        )
        return self.invoke_jobs(event)

    def send_to_queue(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """The service integration: `MessageBody` is the request body as it came, tagged with
        the integration's message attributes (`runtime.pipeline.gateway`); the answer carries
        the request id in `apigw-requestid`, as API Gateway's does."""
        request_id = uuid.uuid4().hex
        answer_headers = {"content-type": "application/json", REQUEST_ID_HEADER: request_id}
        if not body:
            # SQS refuses an empty message (moto would accept it): answer as the integration does.
            error = {
                "Code": "MissingParameter",
                "Message": "The request must contain the parameter MessageBody.",
            }
            return 400, answer_headers, orjson.dumps({"Error": error})
        text = body.decode(errors="replace")
        lowered = {name.lower(): value for name, value in headers.items()}
        variables = {
            gateway.REQUEST_ID_VARIABLE: request_id,
            gateway.IDEMPOTENCY_KEY_VARIABLE: lowered.get("idempotency-key", ""),
        }
        attributes = gateway.fill_in(gateway.integration_attributes(), variables)
        try:
            sent = self.sqs.send_message(
                QueueUrl=self.state_url, MessageBody=text, MessageAttributes=attributes
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
            error = exc.response.get("Error", {})
            return status, answer_headers, orjson.dumps({"Error": error})
        response = send_message_response(sent["MessageId"], text)
        return 200, answer_headers, orjson.dumps(response)

    def invoke_jobs(self, event: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        started = time.monotonic()
        try:
            response = self.jobs_handler(event, LambdaContext("jobs", self.jobs_timeout_s))
        except Exception:  # noqa: BLE001 - a function error is API Gateway's 500, as on AWS
            return 500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}'
        if time.monotonic() - started > self.jobs_timeout_s:  # Lambda would have cut it off
            return 500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}'
        body = response.get("body") or ""
        data = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
        return int(response.get("statusCode", 200)), dict(response.get("headers") or {}), data


@dataclass(frozen=True, slots=True)
class GatewayClients:
    """What the HTTP API integrates with: SQS (`POST /messages`) and the jobs function (a
    Lambda handler, `(event, context) -> response`)."""

    sqs: Any
    jobs: Handler


def build_gateway(
    settings: Settings, clients: GatewayClients, *, jobs_timeout_s: float = JOBS_TIMEOUT_S
) -> LocalHttpApi:
    """The local HTTP API over `settings`' state queue (not started)."""
    return LocalHttpApi(
        sqs=clients.sqs,
        state_url=settings.queues.state_url,
        jobs_handler=clients.jobs,
        jobs_timeout_s=jobs_timeout_s,
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Hundreds of clients may connect at once (the concurrency test): the default backlog of
    # 5 would refuse them.
    request_queue_size = 1024


def _make_request_handler(api: LocalHttpApi) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, data = api.answer(self.command, self.path, dict(self.headers.items()), body)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def __getattr__(self, name: str) -> Any:
            # Every method (`do_<METHOD>`) reaches the route table: an unmatched one is API
            # Gateway's 404, never http.server's own 501.
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the local runtime reports its own progress

    return RequestHandler
