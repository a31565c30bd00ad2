"""Stops a deploy, diff or destroy with one clear line when no AWS credentials or region can be
found (the CDK CLI would otherwise fail later, with a long trace, or hang on a metadata lookup)."""

from __future__ import annotations

import sys

import boto3
from botocore.exceptions import BotoCoreError


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else "deploy"
    session = boto3.Session()
    try:
        credentials = session.get_credentials()
    except BotoCoreError as exc:  # a broken profile or config file
        print(f"{what}: cannot read AWS credentials: {exc}", file=sys.stderr)
        return 1
    if credentials is None:
        print(
            f"{what}: no AWS credentials found: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY), or run `aws sso login`, then try again",
            file=sys.stderr,
        )
        return 1
    if not session.region_name:
        print(f"{what}: no AWS region set: set AWS_REGION or your profile's region", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
