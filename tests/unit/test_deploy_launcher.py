"""The deploy rehearsal's moto launcher: each documented patch, against the launcher's own server
(a child process, so the patches never reach this test process's moto), with tiny templates
deployed the way the CDK CLI deploys: CreateChangeSet, then ExecuteChangeSet."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from local import moto_server
from local.servers import _stop, free_port
from tests.deploy import moto_launcher

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    port = free_port()
    record_file = tmp_path_factory.mktemp("launcher") / "recorded.json"
    env = {**os.environ, moto_launcher.RECORD_FILE_ENV: str(record_file)}
    process = moto_launcher.spawn(port, env, str(ROOT))
    try:
        moto_launcher.wait_ready(process, port)
    except RuntimeError:
        _stop(process)
        raise
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    try:
        yield {"session": session, "endpoint": f"http://localhost:{port}", "record_file": record_file}
    finally:
        _stop(process)


def client(launcher: dict[str, Any], service: str) -> Any:
    return launcher["session"].client(service, endpoint_url=launcher["endpoint"])


def deploy(
    launcher: dict[str, Any], name: str, resources: dict[str, Any], outputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Create and execute a change set, as `cdk deploy` does; the stack's description after."""
    cloudformation = client(launcher, "cloudformation")
    template = {"Resources": resources, **({"Outputs": outputs} if outputs else {})}
    change_set = cloudformation.create_change_set(
        StackName=name, ChangeSetName=f"{name}-cs", ChangeSetType="CREATE", TemplateBody=json.dumps(template)
    )
    cloudformation.execute_change_set(ChangeSetName=change_set["Id"], StackName=name)
    return dict(cloudformation.describe_stacks(StackName=name)["Stacks"][0])


def failure_events(launcher: dict[str, Any], name: str) -> list[dict[str, Any]]:
    events = client(launcher, "cloudformation").describe_stack_events(StackName=name)["StackEvents"]
    return [event for event in events if event["ResourceStatus"].endswith("_FAILED")]


def parameter(launcher: dict[str, Any], name: str) -> str:
    return str(client(launcher, "ssm").get_parameter(Name=name)["Parameter"]["Value"])


def ssm_parameter(name: str, value: Any) -> dict[str, Any]:
    return {"Type": "AWS::SSM::Parameter", "Properties": {"Name": name, "Type": "String", "Value": value}}


def test_the_launcher_refuses_a_moto_it_was_not_checked_against(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto_server, "version", lambda name: "9.9.9")
    with pytest.raises(SystemExit, match=r"tests/deploy/moto_launcher\.py were checked against 5\.2\.5"):
        moto_launcher.check_moto_version()


def test_an_unnamed_fifo_queue_is_named_as_cloudformation_names_it(launcher: dict[str, Any]) -> None:
    stack = deploy(
        launcher, "fifo", {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"FifoQueue": True}}}
    )
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    urls = client(launcher, "sqs").list_queues(QueueNamePrefix="fifo-Queue-")["QueueUrls"]
    assert len(urls) == 1 and urls[0].endswith(".fifo")


def test_outputs_and_exports_are_published_and_imported(launcher: dict[str, Any]) -> None:
    exporter = deploy(
        launcher,
        "exporter",
        {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {}}},
        {"QueueArn": {"Value": {"Fn::GetAtt": ["Queue", "Arn"]}, "Export": {"Name": "exporter:QueueArn"}}},
    )
    assert exporter["StackStatus"] == "CREATE_COMPLETE"
    [output] = exporter["Outputs"]
    assert output["OutputKey"] == "QueueArn" and output["ExportName"] == "exporter:QueueArn"
    importer = deploy(
        launcher, "importer", {"Copy": ssm_parameter("/imported", {"Fn::ImportValue": "exporter:QueueArn"})}
    )
    assert importer["StackStatus"] == "CREATE_COMPLETE"
    assert parameter(launcher, "/imported") == output["OutputValue"]


def test_a_weak_reference_reads_the_other_stacks_output(launcher: dict[str, Any]) -> None:
    producer = deploy(
        launcher,
        "producer",
        {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {}}},
        {"QueueArn": {"Value": {"Fn::GetAtt": ["Queue", "Arn"]}}},  # an output, no export
    )
    [output] = producer["Outputs"]
    reference = {"Fn::GetStackOutput": {"StackName": "producer", "OutputName": "QueueArn", "Region": REGION}}
    reader = deploy(launcher, "reader", {"Copy": ssm_parameter("/weak", reference)})
    assert reader["StackStatus"] == "CREATE_COMPLETE"
    assert parameter(launcher, "/weak") == output["OutputValue"]
    missing = {"Fn::GetStackOutput": {"StackName": "producer", "OutputName": "Nothing"}}
    broken = deploy(launcher, "broken-reader", {"Copy": ssm_parameter("/broken", missing)})
    assert broken["StackStatus"] == "ROLLBACK_COMPLETE"
    [failed] = failure_events(launcher, "broken-reader")
    assert "Nothing" in failed["ResourceStatusReason"]


def test_a_dangling_import_fails_the_stack_with_its_reason(launcher: dict[str, Any]) -> None:
    stack = deploy(
        launcher, "dangling", {"Copy": ssm_parameter("/dangling", {"Fn::ImportValue": "nobody:exports-this"})}
    )
    assert stack["StackStatus"] == "ROLLBACK_COMPLETE"
    [failed] = failure_events(launcher, "dangling")
    assert failed["LogicalResourceId"] == "Copy" and failed["ResourceStatus"] == "CREATE_FAILED"
    assert "nobody:exports-this" in failed["ResourceStatusReason"]


FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:operations"


def test_record_only_resources_are_recorded_and_answer_ref_and_getatt(launcher: dict[str, Any]) -> None:
    resources = {
        "Redis": {
            "Type": "AWS::ElastiCache::ReplicationGroup",
            "Properties": {"ReplicationGroupDescription": "r"},
        },
        "Api": {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"Name": "api", "ProtocolType": "HTTP"}},
        "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"Threshold": 1}},
        "Secret": {"Type": "AWS::SecretsManager::Secret", "Properties": {}},
        "Url": {
            "Type": "AWS::Lambda::Url",
            "Properties": {"TargetFunctionArn": FUNCTION_ARN, "AuthType": "AWS_IAM"},
        },
        "FunctionUrl": ssm_parameter("/url", {"Fn::GetAtt": ["Url", "FunctionUrl"]}),
        "UrlRef": ssm_parameter("/url/ref", {"Ref": "Url"}),
        "Address": ssm_parameter("/redis/address", {"Fn::GetAtt": ["Redis", "PrimaryEndPoint.Address"]}),
        "Port": ssm_parameter("/redis/port", {"Fn::GetAtt": ["Redis", "PrimaryEndPoint.Port"]}),
        "Endpoint": ssm_parameter("/api/endpoint", {"Fn::GetAtt": ["Api", "ApiEndpoint"]}),
        "ApiId": ssm_parameter("/api/id", {"Ref": "Api"}),
        "AlarmArn": ssm_parameter("/alarm/arn", {"Fn::GetAtt": ["Alarm", "Arn"]}),
        "SecretArn": ssm_parameter("/secret/arn", {"Ref": "Secret"}),
    }
    assert deploy(launcher, "recorded", resources)["StackStatus"] == "CREATE_COMPLETE"
    assert re.fullmatch(
        r"master\.[a-z0-9-]+\.[a-z0-9]{6}\.eu-west-1\.cache\.amazonaws\.com",
        parameter(launcher, "/redis/address"),
    )
    assert parameter(launcher, "/redis/port") == "6379"
    api_id = parameter(launcher, "/api/id")
    assert re.fullmatch(r"[a-z0-9]{10}", api_id)
    assert parameter(launcher, "/api/endpoint") == f"https://{api_id}.execute-api.eu-west-1.amazonaws.com"
    assert re.fullmatch(
        r"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:recorded-Alarm-\w+",
        parameter(launcher, "/alarm/arn"),
    )
    assert re.fullmatch(
        r"arn:aws:secretsmanager:eu-west-1:123456789012:secret:\S+-[a-z0-9]{6}",
        parameter(launcher, "/secret/arn"),
    )
    assert re.fullmatch(r"https://[a-z0-9]{32}\.lambda-url\.eu-west-1\.on\.aws/", parameter(launcher, "/url"))
    assert parameter(launcher, "/url/ref") == FUNCTION_ARN
    recorded = [
        entry for entry in json.loads(launcher["record_file"].read_text()) if entry["stack"] == "recorded"
    ]
    assert {entry["logical_id"]: entry["type"] for entry in recorded} == {
        "Redis": "AWS::ElastiCache::ReplicationGroup",
        "Api": "AWS::ApiGatewayV2::Api",
        "Alarm": "AWS::CloudWatch::Alarm",
        "Secret": "AWS::SecretsManager::Secret",
        "Url": "AWS::Lambda::Url",
    }
    assert (
        next(entry for entry in recorded if entry["logical_id"] == "Api")["properties"]["ProtocolType"]
        == "HTTP"
    )
    listed = client(launcher, "cloudformation").list_stack_resources(StackName="recorded")[
        "StackResourceSummaries"
    ]
    assert {resource["LogicalResourceId"] for resource in listed} >= {"Redis", "Api", "Alarm", "Secret"}


def test_an_attribute_a_recorded_type_does_not_have_fails_the_stack(launcher: dict[str, Any]) -> None:
    resources = {
        "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {}},
        "Copy": ssm_parameter("/alarm/nothing", {"Fn::GetAtt": ["Alarm", "NoSuchAttribute"]}),
    }
    assert deploy(launcher, "bad-getatt", resources)["StackStatus"] == "ROLLBACK_COMPLETE"
    [failed] = failure_events(launcher, "bad-getatt")
    assert "NoSuchAttribute" in failed["ResourceStatusReason"]


def test_custom_resources_are_recorded_not_invoked(launcher: dict[str, Any]) -> None:
    resources = {
        "AutoDelete": {
            "Type": "Custom::S3AutoDeleteObjects",
            "Properties": {
                "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:nowhere",
                "BucketName": "b",
            },
        }
    }
    assert deploy(launcher, "custom", resources)["StackStatus"] == "CREATE_COMPLETE"
    recorded = json.loads(launcher["record_file"].read_text())
    assert any(
        entry["stack"] == "custom" and entry["type"] == "Custom::S3AutoDeleteObjects" for entry in recorded
    )


def test_termination_protection_can_be_turned_on(launcher: dict[str, Any]) -> None:
    deploy(launcher, "protected", {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {}}})
    cloudformation = client(launcher, "cloudformation")
    cloudformation.update_termination_protection(EnableTerminationProtection=True, StackName="protected")
    assert (
        cloudformation.describe_stacks(StackName="protected")["Stacks"][0]["EnableTerminationProtection"]
        is True
    )


def test_deleting_a_change_set_that_does_not_exist_succeeds(launcher: dict[str, Any]) -> None:
    deploy(launcher, "cleanup", {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {}}})
    client(launcher, "cloudformation").delete_change_set(
        StackName="cleanup", ChangeSetName="cdk-diff-change-set-x"
    )


def test_an_efs_access_point_ref_is_its_id(launcher: dict[str, Any]) -> None:
    resources = {
        "FileSystem": {"Type": "AWS::EFS::FileSystem", "Properties": {"Encrypted": True}},
        "AccessPoint": {
            "Type": "AWS::EFS::AccessPoint",
            "Properties": {"FileSystemId": {"Ref": "FileSystem"}, "RootDirectory": {"Path": "/sluice"}},
        },
        "Id": ssm_parameter("/efs/ap", {"Ref": "AccessPoint"}),
        "Arn": ssm_parameter("/efs/ap-arn", {"Fn::GetAtt": ["AccessPoint", "Arn"]}),
    }
    assert deploy(launcher, "efs", resources)["StackStatus"] == "CREATE_COMPLETE"
    access_point = parameter(launcher, "/efs/ap")
    assert re.fullmatch(r"fsap-[0-9a-f]+", access_point)
    assert parameter(launcher, "/efs/ap-arn").endswith(f":access-point/{access_point}")


def test_functions_keep_architecture_and_layers_and_buckets_their_public_access_block(
    launcher: dict[str, Any],
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("index.py", "def handler(event, context):\n    return None\n")
    s3 = client(launcher, "s3")
    s3.create_bucket(Bucket="code", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="code", Key="code.zip", Body=archive.getvalue())
    code = {"S3Bucket": "code", "S3Key": "code.zip"}
    block = {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    resources = {
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            },
        },
        "Layer": {
            "Type": "AWS::Lambda::LayerVersion",
            "Properties": {"Content": code, "CompatibleRuntimes": ["python3.12"]},
        },
        "Function": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Code": code,
                "Handler": "index.handler",
                "Runtime": "python3.12",
                "Role": {"Fn::GetAtt": ["Role", "Arn"]},
                "Architectures": ["arm64"],
                "Layers": [{"Ref": "Layer"}],
                "MemorySize": 512,
            },
        },
        "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"PublicAccessBlockConfiguration": block}},
    }
    assert deploy(launcher, "function", resources)["StackStatus"] == "CREATE_COMPLETE"
    listed = client(launcher, "cloudformation").list_stack_resources(StackName="function")[
        "StackResourceSummaries"
    ]
    physical = {resource["LogicalResourceId"]: resource["PhysicalResourceId"] for resource in listed}
    config = client(launcher, "lambda").get_function_configuration(FunctionName=physical["Function"])
    assert config["Architectures"] == ["arm64"] and config["MemorySize"] == 512
    assert [layer["Arn"] for layer in config["Layers"]] == [physical["Layer"]]
    assert s3.get_public_access_block(Bucket=physical["Bucket"])["PublicAccessBlockConfiguration"] == block


def test_renaming_a_queue_replaces_it_and_its_outputs_follow(launcher: dict[str, Any]) -> None:
    arn_output = {"QueueArn": {"Value": {"Fn::GetAtt": ["Queue", "Arn"]}}}
    stack = deploy(launcher, "renamed", {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {}}}, arn_output)
    [before] = stack["Outputs"]
    sqs = client(launcher, "sqs")
    old_url = sqs.get_queue_url(QueueName=before["OutputValue"].rsplit(":", 1)[-1])["QueueUrl"]

    cloudformation = client(launcher, "cloudformation")
    template = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "renamed-v2"}}},
        "Outputs": arn_output,
    }
    change_set = cloudformation.create_change_set(
        StackName="renamed", ChangeSetName="rename", ChangeSetType="UPDATE", TemplateBody=json.dumps(template)
    )
    cloudformation.execute_change_set(ChangeSetName=change_set["Id"], StackName="renamed")

    stack = cloudformation.describe_stacks(StackName="renamed")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    [after] = stack["Outputs"]
    assert after["OutputValue"].endswith(":renamed-v2")
    urls = sqs.list_queues(QueueNamePrefix="renamed")["QueueUrls"]
    assert old_url not in urls and any(url.endswith("/renamed-v2") for url in urls)


def test_executing_a_change_set_removes_the_stacks_change_sets(launcher: dict[str, Any]) -> None:
    """Two stacks' change sets share a name, as the CLI names them: once one is executed, a
    lookup by that name for the stack finds nothing, with CloudFormation's error (the CLI waits
    for exactly that)."""
    cloudformation = client(launcher, "cloudformation")
    queue = {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {}}}
    for name in ("first-of-two", "second-of-two"):
        change_set = cloudformation.create_change_set(
            StackName=name,
            ChangeSetName="same-name",
            ChangeSetType="CREATE",
            TemplateBody=json.dumps({"Resources": queue}),
        )
        cloudformation.execute_change_set(ChangeSetName=change_set["Id"], StackName=name)
    for name in ("first-of-two", "second-of-two"):
        with pytest.raises(cloudformation.exceptions.ChangeSetNotFoundException):
            cloudformation.describe_change_set(StackName=name, ChangeSetName="same-name")


def test_an_ssm_parameter_keeps_its_name_as_previous_value(launcher: dict[str, Any]) -> None:
    """CDK's `BootstrapVersion`: an SSM-typed parameter, passed with UsePreviousValue on update."""
    client(launcher, "ssm").put_parameter(Name="/bootstrap/version", Value="21", Type="String")
    cloudformation = client(launcher, "cloudformation")
    version = {"Version": {"Type": "AWS::SSM::Parameter::Value<String>", "Default": "/bootstrap/version"}}
    for kind, copy in (("CREATE", "/copy-1"), ("UPDATE", "/copy-2")):
        template = {"Parameters": version, "Resources": {"Copy": ssm_parameter(copy, {"Ref": "Version"})}}
        change_set = cloudformation.create_change_set(
            StackName="ssm-previous",
            ChangeSetName=f"ssm-{kind}",
            ChangeSetType=kind,
            TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": "Version", "UsePreviousValue": True}] if kind == "UPDATE" else [],
        )
        cloudformation.execute_change_set(ChangeSetName=change_set["Id"], StackName="ssm-previous")
    stack = cloudformation.describe_stacks(StackName="ssm-previous")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE", failure_events(launcher, "ssm-previous")
    assert parameter(launcher, "/copy-2") == "21"
