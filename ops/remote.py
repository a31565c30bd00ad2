"""The operations function of a deployed environment, called through its function URL (AWS_IAM
auth): each request is signed with SigV4 for service `lambda` with the user's usual AWS
credentials (botocore's own signer), so the function knows — and logs — who asked."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

TIMEOUT_S = 900  # a function URL answers within the function's timeout (at most 15 minutes)
_URL_REGION = re.compile(r"\.lambda-url\.([a-z0-9-]+)\.on\.aws")


class RemoteError(RuntimeError):
    """The function could not be called, or answered an error (the message says which)."""


class RemoteRefused(RemoteError):
    """The function refused the action as unsafe (HTTP 409); the message is its reason."""


def region_of(url: str, fallback: str | None) -> str:
    match = _URL_REGION.search(url)
    region = match.group(1) if match else fallback
    if not region:
        raise RemoteError(f"no AWS region for {url}: set AWS_REGION (or a profile's region)")
    return region


def signed_request(
    url: str, request: dict[str, Any], session: boto3.session.Session
) -> urllib.request.Request:
    credentials = session.get_credentials()
    if credentials is None:
        raise RemoteError(
            "no AWS credentials found: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), "
            "or run 'aws sso login'"
        )
    body = json.dumps(request).encode()
    aws_request = AWSRequest(method="POST", url=url, data=body, headers={"content-type": "application/json"})
    SigV4Auth(credentials.get_frozen_credentials(), "lambda", region_of(url, session.region_name)).add_auth(
        aws_request
    )
    return urllib.request.Request(url, data=body, headers=dict(aws_request.headers.items()), method="POST")


def call(url: str, request: dict[str, Any], session: boto3.session.Session | None = None) -> Any:
    """POST one signed request; the function's JSON answer, RemoteRefused for 409, else RemoteError."""
    prepared = signed_request(url, request, session or boto3.session.Session())
    try:
        with urllib.request.urlopen(prepared, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as failure:
        text = failure.read().decode("utf-8", "replace")
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            answer = {"error": text}
        if failure.code == 409 and "refused" in answer:
            raise RemoteRefused(answer["refused"]) from None
        reason = answer.get("error") or answer.get("refused") or answer.get("Message") or text
        raise RemoteError(f"the operations function answered {failure.code}: {reason}") from None
    except urllib.error.URLError as failure:
        raise RemoteError(f"cannot reach the operations function at {url}: {failure.reason}") from None
