"""Safe to operate once deployed: the writer can mount, alarms reach a person, scheduled runs
fail once, every grant is exact, optional systems are optional, and the stacks can be changed
later (no exports, no fixed physical names)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from constructs import IConstruct

from runtime.errors import ConfigError
from runtime.metric_names import OLDEST_FILE_AGE_SECONDS
from stacks.stage import SluiceStage
from tests.support.stacks import actions_of, build_stage, statements_of_function

SCHEDULED_HANDLERS = (
    "runtime.handlers.loader.handler",
    "runtime.handlers.checker.handler",
    "runtime.handlers.archiver.handler",
    "runtime.handlers.drain.handler",
)
X_RAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


@pytest.fixture(scope="module")
def dev() -> SluiceStage:
    return build_stage("dev", {"alarms": {"emails": ["oncall@example.com"]}})


@pytest.fixture(scope="module")
def stateful_t(dev: SluiceStage) -> Template:
    return Template.from_stack(dev.stateful)


@pytest.fixture(scope="module")
def stateless_t(dev: SluiceStage) -> Template:
    return Template.from_stack(dev.stateless)


def functions_by_handler(template: Template) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        resource["Properties"]["Handler"]: (logical_id, resource["Properties"])
        for logical_id, resource in template.find_resources("AWS::Lambda::Function").items()
        if "Handler" in resource["Properties"] and resource["Properties"]["Handler"].startswith("runtime.")
    }


# -- the writer's mount ---------------------------------------------------------------------------


def test_the_file_system_policy_admits_only_iam_tls_clients_through_an_access_point(
    stateful_t: Template,
) -> None:
    (file_system,) = stateful_t.find_resources("AWS::EFS::FileSystem").values()
    statements = file_system["Properties"]["FileSystemPolicy"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    denies = {s["Sid"]: s for s in statements if s["Effect"] == "Deny"}
    # No anonymous principal is allowed anything, and nobody gets root access.
    assert all(s["Principal"] != {"AWS": "*"} for s in allows)
    assert "elasticfilesystem:ClientRootAccess" not in actions_of(allows)
    (allow,) = allows
    assert sorted(allow["Action"]) == ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    assert "elasticfilesystem:AccessPointArn" in allow["Condition"]["StringLike"]
    assert denies["DenyUnencryptedTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    outside = denies["DenyOutsideAnAccessPoint"]["Condition"]["StringNotLike"]
    assert "access-point/fsap-*" in json.dumps(outside["elasticfilesystem:AccessPointArn"])


def test_the_writer_gets_a_managed_policy_for_exactly_the_sluice_access_point(stateful_t: Template) -> None:
    (policy,) = stateful_t.find_resources("AWS::IAM::ManagedPolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    (access_point_id,) = stateful_t.find_resources("AWS::EFS::AccessPoint")
    (pinned,) = statement["Condition"]["StringEquals"].values()
    assert list(statement["Condition"]["StringEquals"]) == ["elasticfilesystem:AccessPointArn"]
    assert {"Ref": access_point_id} in pinned["Fn::Join"][1]  # this access point, not any
    outputs = stateful_t.to_json()["Outputs"]
    assert {"InboxFileSystemId", "InboxAccessPointId", "WriterMountPolicyArn"} <= set(outputs)


# -- alarms reach someone -------------------------------------------------------------------------


def test_the_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(stateful_t: Template) -> None:
    (key_id,) = stateful_t.find_resources("AWS::KMS::Key", {"Properties": {"EnableKeyRotation": True}})
    stateful_t.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]}})
    stateful_t.has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                                "Effect": "Allow",
                            }
                        )
                    ]
                )
            }
        },
    )
    stateful_t.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "oncall@example.com"}
    )


def test_every_alarm_notifies_on_alarm_and_on_ok(stateful_t: Template, stateless_t: Template) -> None:
    alarms = {
        **stateful_t.find_resources("AWS::CloudWatch::Alarm"),
        **stateless_t.find_resources("AWS::CloudWatch::Alarm"),
    }
    assert len(alarms) >= 17
    for logical_id, alarm in alarms.items():
        properties = alarm["Properties"]
        assert len(properties.get("AlarmActions", [])) == 1, logical_id
        assert properties.get("OKActions") == properties["AlarmActions"], logical_id


def test_an_existing_topic_is_notified_instead_of_a_new_one() -> None:
    topic = "arn:aws:sns:eu-west-1:123456789012:oncall"
    stage = build_stage("dev", {"alarms": {"topic_arn": topic}})
    assert Template.from_stack(stage.stateful).find_resources("AWS::SNS::Topic") == {}
    for alarm in Template.from_stack(stage.stateless).find_resources("AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [topic]


@pytest.mark.parametrize(
    ("alarms", "message"),
    [
        ({"emails": ["not-an-address"]}, r"alarms\.emails"),
        ({"topic_arn": "oncall"}, r"alarms\.topic_arn"),
        ({"emails": ["a@example.com"], "topic_arn": "arn:aws:sns:eu-west-1:123456789012:t"}, "not both"),
    ],
)
def test_bad_alarm_recipients_fail_synth(alarms: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_stage("dev", {"alarms": alarms})


# -- scheduled functions and error alarms -----------------------------------------------------------


def test_scheduled_functions_are_never_retried_or_kept_waiting(stateless_t: Template) -> None:
    functions = functions_by_handler(stateless_t)
    for handler in SCHEDULED_HANDLERS:
        logical_id, _ = functions[handler]
        stateless_t.has_resource_properties(
            "AWS::Lambda::EventInvokeConfig",
            {"FunctionName": {"Ref": logical_id}, "MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60},
        )
        stateless_t.has_resource_properties(
            "AWS::Events::Rule",
            {
                "Targets": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Arn": {"Fn::GetAtt": [logical_id, "Arn"]},
                                "RetryPolicy": {"MaximumRetryAttempts": 0},
                            }
                        )
                    ]
                )
            },
        )
        stateless_t.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "MetricName": "AsyncEventsDropped",
                "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": logical_id}}],
            },
        )


def test_every_bucket_is_versioned_and_forgets_old_versions(stateful_t: Template) -> None:
    for bucket in stateful_t.find_resources("AWS::S3::Bucket").values():
        properties = bucket["Properties"]
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
        assert {"NoncurrentVersionExpiration": {"NoncurrentDays": 7}}.items() <= next(
            rule
            for rule in properties["LifecycleConfiguration"]["Rules"]
            if rule["Id"] == "expire-noncurrent-versions"
        ).items()


def test_every_function_has_an_error_alarm(stateless_t: Template) -> None:
    alarmed = set()
    for alarm in stateless_t.find_resources("AWS::CloudWatch::Alarm").values():
        for query in alarm["Properties"].get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("MetricName") == "Errors":
                alarmed.update(d["Value"]["Ref"] for d in metric["Dimensions"] if d["Name"] == "FunctionName")
    assert alarmed == {logical_id for logical_id, _ in functions_by_handler(stateless_t).values()}


def test_a_silent_checker_breaches_the_oldest_file_age_alarm(stateless_t: Template) -> None:
    stateless_t.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": OLDEST_FILE_AGE_SECONDS, "TreatMissingData": "breaching"}
    )


# -- exact grants -----------------------------------------------------------------------------------


def acknowledged(construct: IConstruct) -> dict[str, str]:
    """The cdk-nag acknowledgments made on `construct` (rule[finding] -> reason)."""
    rules: dict[str, str] = {}
    for entry in construct.node.metadata:
        if entry.type == "aws:cdk:acknowledged-rules":
            rules.update(entry.data)
    return rules


def test_wildcard_resources_are_exactly_the_explained_ones(dev: SluiceStage, stateless_t: Template) -> None:
    expected = {
        "loader": X_RAY | {"elasticfilesystem:ClientMount"},
        "checker": X_RAY | {"elasticfilesystem:ClientMount"},
        "archiver": X_RAY | {"elasticfilesystem:ClientMount"},
        "operations": X_RAY | {"elasticfilesystem:ClientMount"},
        "relay": X_RAY | {"dynamodb:ListStreams"},
    }
    resources = stateless_t.to_json()["Resources"]
    for name, function in dev.stateless.factory.functions.items():
        properties = resources[dev.stateless.get_logical_id(function.node.default_child)]["Properties"]
        wildcards = [s for s in statements_of_function(stateless_t, properties) if s["Resource"] == "*"]
        assert actions_of(wildcards) == expected.get(name, X_RAY), name
        # One acknowledgment per function, whose reason names every one of its wildcard actions.
        reason = acknowledged(function)["Annotation::AwsSolutions-IAM5[Resource::*]"]
        for action in actions_of(wildcards):
            assert action in reason, (name, action)


def test_only_the_relay_writes_its_failure_records(stateless_t: Template) -> None:
    writers = set()
    for handler, (_, properties) in functions_by_handler(stateless_t).items():
        for statement in statements_of_function(stateless_t, properties):
            if "RelayFailuresBucketArn" in json.dumps(statement["Resource"]) and actions_of([statement]) & {
                "s3:PutObject",
                "s3:DeleteObject",
            }:
                writers.add(handler)
    assert writers == {"runtime.handlers.relay.handler"}


def test_functions_reach_only_https_redis_and_nfs(stateful_t: Template) -> None:
    (group_id,) = stateful_t.find_resources(
        "AWS::EC2::SecurityGroup",
        {"Properties": {"GroupDescription": Match.string_like_regexp("Lambda functions")}},
    )
    (group,) = [stateful_t.to_json()["Resources"][group_id]["Properties"]]
    inline = group.get("SecurityGroupEgress", [])
    separate = [
        resource["Properties"]
        for resource in stateful_t.find_resources(
            "AWS::EC2::SecurityGroupEgress",
            {"Properties": {"GroupId": {"Fn::GetAtt": [group_id, "GroupId"]}}},
        ).values()
    ]
    ports = {(rule["IpProtocol"], rule.get("FromPort"), rule.get("ToPort")) for rule in [*inline, *separate]}
    assert ports == {("tcp", 443, 443), ("tcp", 6379, 6379), ("tcp", 2049, 2049)}
    assert not any(rule.get("IpProtocol") == "-1" for rule in inline)


# -- optional systems -------------------------------------------------------------------------------


def test_disabled_systems_create_nothing() -> None:
    stage = build_stage("dev", {"gateway": {"enabled": False}, "jobs": {"enabled": False}}, all_systems=False)
    stateful, stateless = Template.from_stack(stage.stateful), Template.from_stack(stage.stateless)
    handlers = set(functions_by_handler(stateless))
    assert (
        not {
            "runtime.handlers.relay.handler",
            "runtime.handlers.drain.handler",
            "runtime.handlers.jobs.handler",
        }
        & handlers
    )
    assert stateless.find_resources("AWS::ApiGatewayV2::Api") == {}
    assert len(stateful.find_resources("AWS::SQS::Queue")) == 4  # state + FIFO, each with its DLQ
    assert len(stateful.find_resources("AWS::DynamoDB::Table")) == 1  # the ledger only


def test_relay_is_off_until_an_environment_enables_it_with_an_https_api() -> None:
    for env in ("dev", "staging", "prod"):
        assert build_stage(env, all_systems=False).config.relay.enabled is False
    with pytest.raises(ConfigError, match=r"relay\.api_url must be an https:// URL"):
        build_stage(
            "dev", {"relay": {"enabled": True, "api_url": "http://api.example.com"}}, all_systems=False
        )
    with pytest.raises(ConfigError, match=r"jobs\.enabled needs gateway\.enabled"):
        build_stage("dev", {"gateway": {"enabled": False}}, all_systems=False)


# -- changeable stacks ------------------------------------------------------------------------------


def test_no_exports_and_no_fixed_physical_names(
    dev: SluiceStage, stateful_t: Template, stateless_t: Template
) -> None:
    for template in (stateful_t, stateless_t):
        text = json.dumps(template.to_json())
        assert "Fn::ImportValue" not in text
        assert all("Export" not in output for output in template.to_json().get("Outputs", {}).values())
    for bucket in stateful_t.find_resources("AWS::S3::Bucket").values():
        assert "BucketName" not in bucket["Properties"]
    assert dev.stateless.dependencies == [dev.stateful]
