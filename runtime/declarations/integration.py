"""POST /messages: the message attributes the HTTP API's SQS integration sets, as HTTP API
parameter mapping templates. The stack writes them into the integration (stacks/gateway.py),
the local HTTP API fills them in (local/http.py) and the router reads them
(runtime/pipeline/gateway.py)."""

from __future__ import annotations

from runtime.codec import (
    ATTR_CALLER,
    ATTR_IDEMPOTENCY_KEY,
    ATTR_REQUEST_ID,
    ATTR_SOURCE,
    string_attribute,
)

GATEWAY_SOURCE = "gateway"
KEY_VALUE_PREFIX = "k:"
CALLER_VALUE_PREFIX = "c:"
REQUEST_ID_VARIABLE = "context.requestId"
IDEMPOTENCY_KEY_VARIABLE = "request.header.idempotency-key"
IAM_CALLER_VARIABLE = "context.identity.userArn"
JWT_CALLER_VARIABLE = "context.authorizer.claims.sub"


def integration_attributes(caller_variable: str = IAM_CALLER_VARIABLE) -> dict[str, dict[str, str]]:
    """`MessageAttributes` of the POST /messages integration, with `${...}` variables. The
    constant prefixes keep a missing header or caller from making an empty value, which SQS
    would refuse."""
    return {
        ATTR_SOURCE: string_attribute(GATEWAY_SOURCE),
        ATTR_REQUEST_ID: string_attribute(f"${{{REQUEST_ID_VARIABLE}}}"),
        ATTR_IDEMPOTENCY_KEY: string_attribute(f"{KEY_VALUE_PREFIX}${{{IDEMPOTENCY_KEY_VARIABLE}}}"),
        ATTR_CALLER: string_attribute(f"{CALLER_VALUE_PREFIX}${{{caller_variable}}}"),
    }
