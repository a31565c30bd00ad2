"""The three classes of failure (docs/bad-input.md#three-classes-of-failure), decided in one
place: pure logic on the exceptions botocore and the kernel raise."""

from __future__ import annotations

import errno

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from runtime.errors import EnvironmentFailure, TransientError
from runtime.ingest.failures import SendRejected, aws_failure, os_failure


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendMessageBatch",
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("RequestThrottled", 400, TransientError),
        ("KmsThrottled", 400, TransientError),
        ("ThrottlingException", 400, TransientError),
        ("InternalError", 500, TransientError),
        ("AnythingElse", 503, TransientError),
        ("AccessDenied", 403, EnvironmentFailure),
        ("AccessDeniedException", 400, EnvironmentFailure),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, EnvironmentFailure),
        ("QueueDoesNotExist", 400, EnvironmentFailure),
        ("KmsDisabled", 400, EnvironmentFailure),
        ("KMS.DisabledException", 400, EnvironmentFailure),
        ("InvalidMessageContents", 400, SendRejected),
        ("BatchRequestTooLong", 400, SendRejected),
    ],
)
def test_aws_errors_fall_in_their_class(code: str, status: int, kind: type[Exception]) -> None:
    assert type(aws_failure(client_error(code, status), "SendMessageBatch")) is kind


def test_timeouts_and_connection_errors_are_transient() -> None:
    assert isinstance(aws_failure(ReadTimeoutError(endpoint_url="http://x"), "s"), TransientError)
    assert isinstance(aws_failure(EndpointConnectionError(endpoint_url="http://x"), "s"), TransientError)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.EIO, TransientError),
        (errno.ETIMEDOUT, TransientError),
        (errno.EACCES, EnvironmentFailure),
        (errno.ENOSPC, EnvironmentFailure),
        (errno.ENAMETOOLONG, None),
        (errno.EINVAL, None),
    ],
)
def test_os_errors_fall_in_their_class(code: int, kind: type[Exception] | None) -> None:
    failure = os_failure(OSError(code, "m"))
    assert (None if failure is None else type(failure)) is kind
