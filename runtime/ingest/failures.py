"""The three classes of failure (docs/bad-input.md#three-classes-of-failure), decided in one place.

- **transient** (throttling, including 4xx codes like `RequestThrottled` and `KmsThrottled`;
  5xx; timeouts; connection errors): `TransientError` — the run ends there, the batch goes
  back uncharged and is retried first;
- **environment-wide** (`AccessDenied`, `QueueDoesNotExist`, a disabled KMS key, a queue
  limit below the envelope size): `EnvironmentFailure` — the run stops with one clear error
  and an alarm, the batch goes back uncharged;
- **batch-specific** (anything else: this batch's data, names, a part SQS refuses, a bug):
  counted as a run of the batch, which goes back with a backoff while the loader claims on;
  after `ingest.max_crash_runs` its culprit is quarantined or the batch halted.
"""

from __future__ import annotations

import errno

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from runtime.errors import EnvironmentFailure, SluiceError, TransientError

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "KmsThrottled",
        "KMS.ThrottlingException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
ENVIRONMENT_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "NonExistentQueue",
        "KmsDisabled",
        "KMS.DisabledException",
        "DisabledException",
        "KmsAccessDenied",
        "KMS.AccessDeniedException",
        "KmsNotFound",
        "KMS.NotFoundException",
        "KmsInvalidState",
        "KMS.KMSInvalidStateException",
        "KmsInvalidKeyUsage",
        "KmsOptInRequired",
    }
)
_TRANSIENT_TRANSPORT = (ConnectTimeoutError, ReadTimeoutError, EndpointConnectionError, ConnectionClosedError)

# OSErrors from EFS: retried, or the file system refusing everyone.
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ETIMEDOUT, errno.EAGAIN, errno.EINTR, errno.ESTALE})
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT})


class SendRejected(SluiceError):
    """SQS refused an entry or a call as the sender's fault (retrying cannot help): a
    batch-specific failure."""


def code_is_transient(code: str) -> bool:
    return code in TRANSIENT_CODES


def code_is_environmental(code: str) -> bool:
    return code in ENVIRONMENT_CODES


def aws_failure(exc: BotoCoreError | ClientError, what: str) -> SluiceError:
    """The typed failure for an AWS error (boto3's own retries already ran)."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code_is_environmental(code):
            return EnvironmentFailure(f"{what}: {code}: {exc}")
        if code_is_transient(code) or status >= 500:
            return TransientError(f"{what}: {code or status}: {exc}")
        return SendRejected(f"{what}: {code}: {exc}")
    if isinstance(exc, _TRANSIENT_TRANSPORT):
        return TransientError(f"{what}: {exc}")
    return TransientError(f"{what}: {type(exc).__name__}: {exc}")


def os_failure(exc: OSError) -> SluiceError | None:
    """TransientError or EnvironmentFailure for an OSError of those classes; None when it is
    this batch's (a name too long, an invalid argument...)."""
    if exc.errno in TRANSIENT_ERRNOS:
        return TransientError(f"{type(exc).__name__}: {exc}")
    if exc.errno in ENVIRONMENT_ERRNOS:
        return EnvironmentFailure(f"the file system refuses: {exc}")
    return None
