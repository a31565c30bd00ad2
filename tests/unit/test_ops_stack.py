"""The operations function's template: reached only through an AWS_IAM function URL (its URL a
stack output), in the VPC with the share's access point mounted like the loader, and granted
exactly what re-sending a halted batch needs — the loader's one queue, nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from runtime.declarations.names import OPERATIONS_URL_OUTPUT
from stacks.functions import EFS_MOUNT_PATH
from stacks.stage import SluiceStage
from tests.support.stacks import actions_of, build_stage, statements_of_function

HANDLER = "runtime.handlers.operations.handler"


@pytest.fixture(scope="module")
def dev() -> SluiceStage:
    return build_stage("dev")


@pytest.fixture(scope="module")
def template(dev: SluiceStage) -> Template:
    return Template.from_stack(dev.stateless)


def _function(template: Template, handler: str) -> tuple[str, dict[str, Any]]:
    (found,) = template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": handler}}).items()
    return found[0], found[1]["Properties"]


def test_the_function_is_reached_only_through_an_iam_authenticated_url(template: Template) -> None:
    logical_id, _properties = _function(template, HANDLER)
    urls = template.find_resources("AWS::Lambda::Url")
    ours = [
        u["Properties"]
        for u in urls.values()
        if u["Properties"]["TargetFunctionArn"] == {"Fn::GetAtt": [logical_id, "Arn"]}
    ]
    assert len(ours) == 1 and ours[0]["AuthType"] == "AWS_IAM"
    # No resource policy opens it to anyone: callers need lambda:InvokeFunctionUrl themselves.
    permissions = template.find_resources("AWS::Lambda::Permission")
    assert not [
        p
        for p in permissions.values()
        if p["Properties"].get("FunctionName") in ({"Ref": logical_id}, {"Fn::GetAtt": [logical_id, "Arn"]})
    ]
    template.has_output(
        OPERATIONS_URL_OUTPUT,
        {"Value": {"Fn::GetAtt": [Match.string_like_regexp("^Operations"), "FunctionUrl"]}},
    )


def test_it_runs_in_the_vpc_with_the_loaders_mount(template: Template) -> None:
    _id, operations = _function(template, HANDLER)
    _id, loader = _function(template, "runtime.handlers.loader.handler")
    assert operations["VpcConfig"] == loader["VpcConfig"]
    assert operations["VpcConfig"]["SubnetIds"] and operations["VpcConfig"]["SecurityGroupIds"]
    assert operations["FileSystemConfigs"] == loader["FileSystemConfigs"]
    (mount,) = operations["FileSystemConfigs"]
    assert mount["LocalMountPath"] == EFS_MOUNT_PATH
    assert "accesspoint" in str(mount["Arn"]).lower()  # the access point, not the file system
    environment = operations["Environment"]["Variables"]
    assert environment["SLUICE_INGEST__ROOT"] == EFS_MOUNT_PATH


def test_it_may_send_only_to_the_loaders_queue_and_mount_only_its_access_point(template: Template) -> None:
    _id, operations = _function(template, HANDLER)
    _id, loader = _function(template, "runtime.handlers.loader.handler")
    statements = statements_of_function(template, operations)
    assert actions_of(statements) == {
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "elasticfilesystem:ClientMount",
        "elasticfilesystem:ClientWrite",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    loader_statements = statements_of_function(template, loader)

    def granted(statements: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
        return [s for s in statements if any(a.startswith(prefix) for a in actions_of([s]))]

    # The very statements the loader holds: the one target queue, the same access point.
    assert granted(statements, "sqs:") == granted(loader_statements, "sqs:")
    assert granted(statements, "elasticfilesystem:") == granted(loader_statements, "elasticfilesystem:")
    mount = next(s for s in statements if s["Action"] == "elasticfilesystem:ClientMount")
    assert "elasticfilesystem:AccessPointArn" in str(mount["Condition"])
