"""Which sluice the CLI talks to: a deployed environment (its CloudFormation stacks, read with
the user's usual AWS credentials) or the local runtime kept up by `python -m local --serve`
(its endpoints and names in a small state file)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from runtime.clients import AWS_CLIENT_CONFIG

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_FILE = REPO_ROOT / "build" / "local-serve.json"
SCHEDULED = ("loader", "checker", "archiver", "drain")


class TargetError(RuntimeError):
    """The environment cannot be reached or described (no stack, no state file, no credentials)."""


def load_config(env: str) -> Any:
    """`env`'s validated config from cdk.json."""
    from stacks.config import load_environment

    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]["sluice"]
    return load_environment(context, env)


@dataclass
class Target:
    name: str
    endpoint_url: str | None = None
    region: str | None = None
    queue_urls: list[str] = field(default_factory=list)
    alarm_names: list[str] = field(default_factory=list)
    functions: dict[str, str] = field(default_factory=dict)  # scheduled role -> function name
    share: Path | None = None
    redis_url: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    # Local only (deployed, the operations function reads its own): how long the router's ledger
    # recognises a part, which bounds when re-sending a halted batch's parts is safe.
    dedup_horizon_s: float | None = None
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            session = boto3.session.Session()
            self._clients[service] = session.client(  # type: ignore[call-overload]
                service, endpoint_url=self.endpoint_url, region_name=self.region, config=AWS_CLIENT_CONFIG
            )
        return self._clients[service]

    @classmethod
    def local(cls, state_file: Path) -> Target:
        if not state_file.is_file():
            raise TargetError(
                f"{state_file} not found: start the local runtime with `python -m local --serve`"
            )
        state = json.loads(state_file.read_text())
        import os

        from local.environment import load_local_config
        from local.servers import FAKE_AWS_ENVIRONMENT

        for name, value in FAKE_AWS_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        return cls(
            name=f"local ({state['env']})",
            endpoint_url=state["aws_endpoint_url"],
            region=FAKE_AWS_ENVIRONMENT["AWS_REGION"],
            queue_urls=list(state["queue_urls"].values()),
            share=Path(state["share"]),
            redis_url=state["redis_url"],
            dedup_horizon_s=load_local_config(state["env"]).dedup_horizon_s,
        )

    @classmethod
    def deployed(cls, env: str, endpoint_url: str | None = None) -> Target:
        target = cls(name=env, endpoint_url=endpoint_url)
        cfn = target.client("cloudformation")
        try:
            for stack in (f"sluice-{env}-stateful", f"sluice-{env}-stateless"):
                described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
                target.outputs.update(
                    {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
                )
                for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack):
                    for resource in page["StackResourceSummaries"]:
                        target._add_resource(resource)
        except (ClientError, BotoCoreError) as exc:
            raise TargetError(f"cannot describe sluice-{env}'s stacks: {exc}") from exc
        return target

    def _add_resource(self, resource: dict[str, Any]) -> None:
        kind, physical = resource["ResourceType"], resource.get("PhysicalResourceId", "")
        logical = resource["LogicalResourceId"].lower()
        if kind == "AWS::SQS::Queue":
            self.queue_urls.append(physical)
        elif kind == "AWS::CloudWatch::Alarm":
            self.alarm_names.append(physical)
        elif kind == "AWS::Lambda::Function":
            role = next((name for name in SCHEDULED if name in logical), None)
            if role is not None:
                self.functions[role] = physical
