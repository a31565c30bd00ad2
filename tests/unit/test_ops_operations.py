"""The deployed path of `sluice ingest …`: the operations handler invoked with function-URL
events (IAM authorizer context) over a real directory laid out as the share (moto's in-process
SQS for the loader's queue), and the CLI's SigV4-signed client against a local HTTP server that
checks the signature with botocore before handing the request to that same handler."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from click.testing import CliRunner
from moto import mock_aws

from local.environment import make_share
from local.functions import LambdaContext
from local.servers import FAKE_AWS_ENVIRONMENT
from ops.cli import main
from ops.remote import RemoteRefused, call
from runtime import config as runtime_config
from runtime import operations as operations_core
from runtime.declarations.names import OPERATIONS_URL_OUTPUT
from runtime.handlers import operations as handler_module
from runtime.ingest.layout import new_batch_id
from runtime.ingest.model import Header, Member, Packing
from runtime.operations import part_record, recompute_parts
from tests.support.aws import mock_client

CONTEXT: Any = LambdaContext("operations", 30)  # local's context stands in for Lambda's
CALLER = {
    "accountId": "123456789012",
    "callerId": "AIDAEXAMPLE:operator",
    "userArn": "arn:aws:iam::123456789012:user/operator",
    "userId": "AIDAEXAMPLE",
}


# The ledger recognises a part for a day after its claim; the batches below are claimed hours ago.
DEDUP_HORIZON_S = 86_400
# Halted batches claimed two hours ago (batch ids carry their claim time), well inside the horizon.
BATCH_H1, BATCH_H2, BATCH_H3 = (
    new_batch_id(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)) for _ in range(3)
)


def function_url_event(request: Any, caller: dict[str, Any] | None = CALLER) -> dict[str, Any]:
    """The payload (format 2.0) Lambda hands a function behind an AWS_IAM function URL."""
    context: dict[str, Any] = {"http": {"method": "POST", "path": "/"}, "requestId": "r-1"}
    if caller is not None:
        context["authorizer"] = {"iam": {**caller, "cognitoIdentity": None, "principalOrgId": None}}
    body = base64.b64encode(json.dumps(request).encode()).decode()
    return {
        "version": "2.0",
        "rawPath": "/",
        "requestContext": context,
        "body": body,
        "isBase64Encoded": True,
    }


@pytest.fixture
def share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str, Any]]:
    """The share, the loader's queue (moto in-process) and the function's environment."""
    root = make_share(tmp_path / "share")
    with mock_aws():
        sqs = mock_client("sqs")
        url = sqs.create_queue(QueueName="sluice-t-state")["QueueUrl"]
        monkeypatch.setenv("SLUICE_INGEST__ROOT", str(root))
        monkeypatch.setenv("SLUICE_QUEUES__STATE_URL", url)
        monkeypatch.setenv("SLUICE_PIPELINE__DEDUP_HORIZON_S", str(DEDUP_HORIZON_S))
        runtime_config.get_settings.cache_clear()
        handler_module._operations.cache_clear()
        yield root, url, sqs
        runtime_config.get_settings.cache_clear()
        handler_module._operations.cache_clear()


def invoke(request: Any, caller: dict[str, Any] | None = CALLER) -> tuple[int, Any]:
    answer = handler_module.handler(function_url_event(request, caller), CONTEXT)
    return answer["statusCode"], json.loads(answer["body"])


def _reject(root: Path, batch: str, name: str, body: bytes, code: str, bytes_sent: int) -> None:
    directory = root / "rejected" / batch
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(body)
    reason = {"code": code, "detail": "made on purpose", "batch": batch, "bytes_sent": bytes_sent, "at": 0}
    (directory / f"{name}.reason.json").write_text(json.dumps(reason))


def _halted_batch(root: Path, batch: str, files: int, recorded: int) -> list[str]:
    """A halted batch whose first `recorded` parts were published (as a loader run that halted
    part-way leaves it); returns every record id its members hold."""
    directory = root / "halted" / batch
    (directory / ".parts").mkdir(parents=True)
    members, ids = [], []
    for f in range(files):
        name = f"f{f}.ndjson"
        body = b"".join(orjson.dumps({"f": f, "n": n, "pad": "x" * 300}) + b"\n" for n in range(8))
        (directory / name).write_bytes(body)
        stat = (directory / name).stat()
        members.append(Member(name, stat.st_size, stat.st_mtime_ns))
        ids += [f"{name}#{n}" for n in range(8)]
    header = Header(batch, tuple(members), Packing(max_message_bytes=4096, projection={}))
    (directory / ".header.json").write_bytes(header.to_json())
    parts = recompute_parts(header, lambda _i, name, size: (directory / name).read_bytes()[:size])
    for part in parts[:recorded]:
        (directory / ".parts" / f"{part.index}.json").write_bytes(part_record(part).to_json())
    (directory / ".halted.json").write_text(json.dumps({"reason": "past_resend_horizon", "batch": batch}))
    return ids


def _queued(sqs: Any, url: str) -> list[dict[str, Any]]:
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            bodies.append(orjson.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_every_action_answers_and_is_logged_with_the_caller(
    share: tuple[Path, str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    root, _url, _sqs = share
    _reject(root, "b1", "ok.json", b'[{"a": 1}]', "invalid_json", 0)
    status, listed = invoke({"action": "rejected.ls"})
    assert status == 200 and [row["file"] for row in listed] == ["b1/ok.json"]
    status, dry = invoke({"action": "rejected.replay", "file": "b1/ok.json"})
    assert status == 200 and dry["applied"] is False and not (root / "inbox" / "ok.json").exists()
    status, _done = invoke({"action": "rejected.replay", "file": "b1/ok.json", "apply": True})
    assert status == 200 and (root / "inbox" / "ok.json").read_bytes() == b'[{"a": 1}]'
    status, again = invoke({"action": "rejected.replay", "file": "b1/ok.json", "apply": True})
    assert status == 409 and "already replayed" in again["refused"]
    status, bad = invoke({"action": "rejected.delete", "file": "b1/ok.json"})
    assert status == 400 and "unknown action" in bad["error"]
    status, missing = invoke({"action": "halted.show"})
    assert status == 400 and "batch" in missing["error"]
    status, _anonymous = invoke({"action": "rejected.ls"}, caller=None)
    assert status == 403
    lines = [{"message": r.getMessage(), **vars(r)} for r in caplog.records if r.name == "sluice"]
    logged = [(line["message"], line.get("caller", {}).get("userArn")) for line in lines]
    assert ("operation done", CALLER["userArn"]) in logged
    assert ("operation refused", CALLER["userArn"]) in logged
    assert ("bad operation request", CALLER["userArn"]) in logged
    assert any(message == "operation without an IAM caller refused" for message, _arn in logged)
    applied = next(
        line for line in lines if line["message"] == "operation done" and line["request"].get("apply")
    )
    assert applied["caller"]["callerId"] == CALLER["callerId"] and applied["request"]["file"] == "b1/ok.json"


def test_resend_parts_sends_every_part_under_its_id_then_commits(share: tuple[Path, str, Any]) -> None:
    root, url, sqs = share
    ids = _halted_batch(root, BATCH_H1, files=6, recorded=3)
    status, shown = invoke({"action": "halted.show", "batch": BATCH_H1})
    assert status == 200 and shown["halted_for"] == "past_resend_horizon"
    assert shown["choices"]["members"].startswith("refused") and shown["choices"]["resend-parts"].startswith(
        "ok"
    )
    request = {"action": "halted.resume", "batch": BATCH_H1, "choice": "resend-parts"}
    status, dry = invoke(request)
    assert status == 200 and dry["applied"] is False and len(dry["resent"]) == 3 and dry["new"]
    assert _queued(sqs, url) == [] and (root / "halted" / BATCH_H1).is_dir()
    status, done = invoke({**request, "apply": True})
    assert status == 200 and done["applied"] is True
    envelopes = _queued(sqs, url)
    assert sorted(e["id"] for e in envelopes) == sorted(done["resent"] + done["new"])
    assert sorted(item["id"] for e in envelopes for item in e["items"]) == sorted(ids)
    committed = root / "processed" / BATCH_H1
    assert (committed / ".committed").is_file() and not (root / "halted" / BATCH_H1).exists()
    assert len(list((committed / ".parts").glob("*.json"))) == len(envelopes)  # each recorded before sent


def test_resend_parts_refuses_a_part_that_does_not_reproduce(share: tuple[Path, str, Any]) -> None:
    root, url, sqs = share
    _halted_batch(root, BATCH_H2, files=4, recorded=2)
    member = root / "halted" / BATCH_H2 / "f0.ndjson"
    member.write_bytes(member.read_bytes().replace(b'"f":0', b'"f":9'))  # same size, other bytes
    request = {
        "action": "halted.resume",
        "batch": BATCH_H2,
        "choice": "resend-parts",
        "apply": True,
    }
    status, refused = invoke(request)
    assert status == 409 and "part 0 does not reproduce" in refused["refused"]
    assert _queued(sqs, url) == [] and (root / "halted" / BATCH_H2 / "f0.ndjson").exists()


def test_resend_parts_is_refused_once_the_ledger_may_have_forgotten_the_parts(
    share: tuple[Path, str, Any],
) -> None:
    """The ledger recognises a re-sent part for the dedup horizon after the claim; later, a part
    the routers processed would be processed again, so resend-parts is no longer offered."""
    root, url, sqs = share
    old = new_batch_id(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=DEDUP_HORIZON_S + 3600))
    _halted_batch(root, old, files=4, recorded=2)
    status, refused = invoke(
        {"action": "halted.resume", "batch": old, "choice": "resend-parts", "apply": True}
    )
    assert status == 409 and "could be processed twice" in refused["refused"]
    assert _queued(sqs, url) == [] and (root / "halted" / old).is_dir()


def test_a_replay_that_died_after_its_marker_is_not_replayed_again(
    share: tuple[Path, str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker is written before the file goes back: a replay that dies in between leaves a
    marker and no file, and a retry is refused (never a second copy after the loader took one)."""
    root, _url, _sqs = share
    _reject(root, "b1", "bad.json", b'{"a": 1}', "invalid_json", 0)
    real_write_new = operations_core._write_new

    def dies_on_the_inbox_file(target: Path, data: bytes) -> None:
        if target.parent.name == "inbox":
            raise OSError("the function timed out here")
        real_write_new(target, data)

    monkeypatch.setattr(operations_core, "_write_new", dies_on_the_inbox_file)
    with pytest.raises(OSError):
        operations_core.rejected_replay(root, "b1/bad.json", apply=True)
    monkeypatch.setattr(operations_core, "_write_new", real_write_new)
    with pytest.raises(operations_core.Refused, match="already replayed"):
        operations_core.rejected_replay(root, "b1/bad.json", apply=True)
    assert not (root / "inbox" / "bad.json").exists()


def test_members_go_back_without_the_one_whose_quarantine_was_interrupted(
    share: tuple[Path, str, Any],
) -> None:
    """A member linked into rejected/ whose unlink never ran is the rejected file: giving it back
    too would let `rejected replay` load it a second time."""
    root, _url, _sqs = share
    batch = new_batch_id()
    halted, rejected = root / "halted" / batch, root / "rejected" / batch
    halted.mkdir(parents=True)
    rejected.mkdir(parents=True)
    for name in ("good.json", "bad.json"):
        (halted / name).write_bytes(b'{"a": 1}')
    os.link(halted / "bad.json", rejected / "bad.json")  # the quarantine's link, then the crash
    (rejected / "bad.json.reason.json").write_text(json.dumps({"code": "invalid_json", "bytes_sent": 0}))

    done = operations_core.halted_resume(root, batch, "members", apply=True)

    assert done["returned"] == ["good.json"]
    assert (root / "inbox" / "good.json").exists() and not (root / "inbox" / "bad.json").exists()


def test_a_failure_is_raised_and_logged_with_who_asked(
    share: tuple[Path, str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    root, url, sqs = share
    _halted_batch(root, BATCH_H3, files=2, recorded=1)
    sqs.delete_queue(QueueUrl=url)  # the loader's queue is gone: the send fails
    request = {
        "action": "halted.resume",
        "batch": BATCH_H3,
        "choice": "resend-parts",
        "apply": True,
    }
    with pytest.raises(Exception, match=r"NonExistentQueue|does not exist"):
        invoke(request)
    (failed,) = [r for r in caplog.records if r.getMessage() == "operation failed"]
    assert vars(failed)["caller"]["userArn"] == CALLER["userArn"] and vars(failed)["request"] == request
    assert (root / "halted" / BATCH_H3).is_dir()  # not committed


# -- the CLI's signed client -----------------------------------------------------------------------


class FunctionUrl(BaseHTTPRequestHandler):
    """A function URL with AWS_IAM auth: the SigV4 signature is recomputed with botocore from the
    known test credentials; a valid one reaches the real handler with the caller in its event."""

    credentials = Credentials(
        FAKE_AWS_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
        FAKE_AWS_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
        FAKE_AWS_ENVIRONMENT["AWS_SESSION_TOKEN"],
    )
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        authorization = self.headers.get("authorization", "")
        FunctionUrl.seen.append(authorization)
        if not self._signature_valid(body, authorization):
            self._answer(403, {"Message": "The request signature we calculated does not match"})
            return
        event = function_url_event(json.loads(body), {**CALLER, "userId": self.credentials.access_key})
        answer = handler_module.handler(event, CONTEXT)
        self._answer(answer["statusCode"], json.loads(answer["body"]))

    def _signature_valid(self, body: bytes, authorization: str) -> bool:
        if not authorization.startswith("AWS4-HMAC-SHA256 Credential="):
            return False
        url = f"http://{self.headers['host']}{self.path}"
        signed = [h for h in authorization.split("SignedHeaders=")[1].split(",", maxsplit=1)[0].split(";")]
        request = AWSRequest(method="POST", url=url, data=body, headers={h: self.headers[h] for h in signed})
        request.context["timestamp"] = self.headers["x-amz-date"]
        signer = SigV4Auth(self.credentials, "lambda", "us-east-1")
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        return (
            authorization.endswith(f"Signature={expected}")
            and "/us-east-1/lambda/aws4_request" in authorization
        )

    def _answer(self, status: int, document: Any) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def function_url(share: tuple[Path, str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in FAKE_AWS_ENVIRONMENT.items():  # mock_aws put its own keys in the environment
        monkeypatch.setenv(name, value)
    server = HTTPServer(("127.0.0.1", 0), FunctionUrl)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FunctionUrl.seen = []
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    thread.join()


def test_the_cli_signs_its_requests_and_reads_the_url_from_the_stack(
    share: tuple[Path, str, Any], function_url: str
) -> None:
    root, _url, _sqs = share
    _reject(root, "b1", "late.ndjson", b'{"a": 1}\n{"a": 2}\n{"a": 3}\n', "late_write", 9)
    cfn = mock_client("cloudformation")
    stateless = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {OPERATIONS_URL_OUTPUT: {"Value": function_url}},
    }
    for stack in ("stateful", "stateless"):
        cfn.create_stack(StackName=f"sluice-t-{stack}", TemplateBody=json.dumps(stateless))
    runner = CliRunner()
    listed = runner.invoke(main, ["ingest", "rejected", "ls", "--env", "t", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [row["file"] for row in json.loads(listed.output)] == ["b1/late.ndjson"]
    replay = ["ingest", "rejected", "replay", "b1/late.ndjson", "--env", "t", "--json", "--apply"]
    replayed = runner.invoke(main, replay)
    assert replayed.exit_code == 0, replayed.output
    assert (root / "inbox" / "late.ndjson.tail-9").read_bytes() == b'{"a": 2}\n{"a": 3}\n'
    refused = runner.invoke(main, replay)
    assert refused.exit_code != 0 and "already replayed" in refused.output
    assert len(FunctionUrl.seen) == 3 and all(a.startswith("AWS4-HMAC-SHA256") for a in FunctionUrl.seen)


def test_deployed_status_reads_the_share_through_the_operations_function(
    share: tuple[Path, str, Any], function_url: str
) -> None:
    """EFS is only reachable from the VPC: `sluice status --env` asks the operations function for
    the share's counts, and a halted batch there is something a person must see (exit 1)."""
    root, _url, _sqs = share
    _reject(root, "b1", "bad.json", b"{", "invalid_json", 0)
    _halted_batch(root, "b2", files=2, recorded=1)
    (root / "inbox" / "waiting.json").write_bytes(b"{}")
    cfn = mock_client("cloudformation")
    stateless = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {OPERATIONS_URL_OUTPUT: {"Value": function_url}},
    }
    for stack in ("stateful", "stateless"):
        cfn.create_stack(StackName=f"sluice-t-{stack}", TemplateBody=json.dumps(stateless))

    result = CliRunner().invoke(main, ["status", "--env", "t", "--json"])

    assert result.exit_code == 1, result.output
    document = json.loads(result.output)
    counts = document["ingest"]["share"]
    assert (counts["inbox_files"], counts["halted_batches"], counts["rejected_files"]) == (1, 1, 1)
    assert "1 halted batch(es) in halted/" in document["attention"]
    assert FunctionUrl.seen and all(a.startswith("AWS4-HMAC-SHA256") for a in FunctionUrl.seen)


def test_a_request_whose_signature_does_not_match_is_turned_away(function_url: str) -> None:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="not-the-secret", aws_session_token="testing"
    )
    with pytest.raises(Exception, match="403") as caught:
        call(function_url, {"action": "rejected.ls"}, session)
    assert not isinstance(caught.value, RemoteRefused)
    assert call(function_url, {"action": "rejected.ls"}, boto3.session.Session()) == []


def test_the_handler_ships_without_the_cli() -> None:
    """The function's code is runtime/ only: its import pulls in neither click nor rich nor ops."""
    import subprocess
    import sys

    probe = (
        "import sys, runtime.handlers.operations; print(sorted({'click', 'rich', 'ops'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert result.stdout.strip() == "[]"
