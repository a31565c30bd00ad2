"""Operations function: `sluice --env NAME ingest rejected|halted …` on the deployed share.

Reached through a function URL with AWS_IAM auth only, so Lambda has verified the caller's
SigV4 signature before this runs and the event names who asked
(`requestContext.authorizer.iam`); every request and its outcome is logged with that caller.
The body is one JSON request for `runtime.operations.Operations.perform`; the answer is JSON:
200 with the result, 409 `{"refused": reason}` for an unsafe action, 400 for a bad request.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime.config import get_settings
from runtime.observability import logger
from runtime.operations import BadRequest, Operations, Refused, build_operations

CALLER_FIELDS = ("userArn", "callerId", "accountId", "userId", "principalOrgId")


@functools.cache
def _operations() -> Operations:
    return build_operations(get_settings())


def caller_of(event: dict[str, Any]) -> dict[str, Any]:
    """Who signed the request, as the function URL's IAM authorizer verified it."""
    iam = event.get("requestContext", {}).get("authorizer", {}).get("iam", {}) or {}
    return {field: iam.get(field) for field in CALLER_FIELDS if iam.get(field) is not None}


def _request(event: dict[str, Any]) -> dict[str, Any]:
    body = event.get("body") or ""
    try:
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body, validate=True).decode()
        request = json.loads(body)
    except ValueError as exc:  # bad base64, not UTF-8, not JSON
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("the body must be a JSON object")
    return request


def _answer(status: int, document: Any) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(document, default=str),
    }


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    caller = caller_of(event)
    if not caller.get("userArn"):  # only an IAM-authorized function URL reaches here with one
        logger.error("operation without an IAM caller refused", extra={"caller": caller})
        return _answer(403, {"refused": "no IAM caller in the request context"})
    request: dict[str, Any] = {}
    try:
        request = _request(event)
        logger.info("operation requested", extra={"caller": caller, "request": request})
        result = _operations().perform(request)
    except BadRequest as exc:
        logger.warning("bad operation request", extra={"caller": caller, "error": str(exc)})
        return _answer(400, {"error": str(exc)})
    except Refused as exc:
        logger.warning("operation refused", extra={"caller": caller, "request": request, "reason": str(exc)})
        return _answer(409, {"refused": str(exc)})
    except Exception:
        # Lambda answers the URL's caller 502; the log keeps who asked what when it failed.
        logger.exception("operation failed", extra={"caller": caller, "request": request})
        raise
    logger.info("operation done", extra={"caller": caller, "request": request, "result": result})
    return _answer(200, result)
