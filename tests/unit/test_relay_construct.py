"""Template tests of the relay construct, wired into a dev stage the way the stateless stack
wires every system (the real function factory; bundling skipped): the INSERT-only stream
mapping, the schedule, least-privilege grants, the environment contract, alarms, cdk-nag."""

from __future__ import annotations

import json
import re
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from runtime import metric_names as names
from runtime.config import load_settings
from runtime.relay.filters import INSERT_ONLY
from stacks.relay import DRAIN_HANDLER, RELAY_HANDLER, RelayConstruct
from stacks.stage import SluiceStage
from tests.support.stacks import build_stage, output_name

API_URL = "https://api.example.com/v1/records"
RELAY_OVERRIDES = {
    "enabled": True,
    "api_url": API_URL,
    "calls_per_minute": 120,
    "drain_schedule": "rate(2 minutes)",
    "retry_attempts": 7,
    "max_record_age_s": 3600,
    "group_key_field": "customer",
}


def relay_stage() -> tuple[SluiceStage, RelayConstruct]:
    """A dev stage with relay overrides; the stateless stack wires the relay construct to the
    stateful stack's relay queue, its DLQ, the source table and the ledger."""
    stage = build_stage("dev", {"relay": RELAY_OVERRIDES})
    return stage, stage.stateless.relay


@pytest.fixture(scope="module")
def built() -> tuple[SluiceStage, RelayConstruct]:
    return relay_stage()


@pytest.fixture(scope="module")
def template(built: tuple[SluiceStage, RelayConstruct]) -> Template:
    return Template.from_stack(built[0].stateless)


def function_props(template: Template, handler: str) -> tuple[str, dict[str, Any]]:
    found = template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": handler}})
    assert len(found) == 1, handler
    logical_id, resource = next(iter(found.items()))
    return logical_id, resource["Properties"]


def statements_of(template: Template, handler: str) -> list[dict[str, Any]]:
    _, props = function_props(template, handler)
    role = props["Role"]["Fn::GetAtt"][0]
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": role}])}}
    )
    return [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]


def actions(statement: dict[str, Any]) -> list[str]:
    value = statement["Action"]
    return [value] if isinstance(value, str) else list(value)


def test_the_stream_mapping_passes_inserts_only_with_retries_bisect_and_an_s3_destination(
    template: Template,
) -> None:
    relay_id, _ = function_props(template, RELAY_HANDLER)
    mappings = template.find_resources(
        "AWS::Lambda::EventSourceMapping", {"Properties": {"FunctionName": {"Ref": relay_id}}}
    )
    assert len(mappings) == 1
    props = next(iter(mappings.values()))["Properties"]
    patterns = [json.loads(f["Pattern"]) for f in props["FilterCriteria"]["Filters"]]
    assert patterns == [dict(INSERT_ONLY)]
    assert props["BisectBatchOnFunctionError"] is True
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["MaximumRetryAttempts"] == 7
    assert props["MaximumRecordAgeInSeconds"] == 3600
    assert props["ParallelizationFactor"] == 1
    assert props["StartingPosition"] == "TRIM_HORIZON"
    # The relay's own bucket (the records themselves), not a queue (metadata only).
    assert output_name(props["DestinationConfig"]["OnFailure"]["Destination"]) == "RelayFailuresBucketArn"
    assert "stream" in json.dumps(props["EventSourceArn"]).lower()


def test_the_drain_runs_on_the_configured_schedule(template: Template) -> None:
    drain_id, props = function_props(template, DRAIN_HANDLER)
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(2 minutes)",
            "Targets": Match.array_with([Match.object_like({"Arn": {"Fn::GetAtt": [drain_id, "Arn"]}})]),
        },
    )
    assert props["Timeout"] == 60
    assert props["Architectures"] == ["arm64"]
    assert "VpcConfig" in props  # behind the NAT for the API call, beside Redis


def _resolve_tokens(environment: dict[str, Any]) -> dict[str, str]:
    """CloudFormation intrinsics stand for deploy-time strings: replace them with a placeholder."""
    return {k: v if isinstance(v, str) else "resolved-at-deploy" for k, v in environment.items()}


def _declared_ledger_keys(stage: SluiceStage) -> tuple[str, str]:
    """The ledger's key names as the stateful template declares them (the table with a TTL)."""
    tables = Template.from_stack(stage.stateful).find_resources(
        "AWS::DynamoDB::Table", {"Properties": {"TimeToLiveSpecification": Match.any_value()}}
    )
    [ledger] = tables.values()
    keys = {k["KeyType"]: k["AttributeName"] for k in ledger["Properties"]["KeySchema"]}
    return keys["HASH"], keys.get("RANGE", "")


def test_the_environment_carries_the_relay_settings_and_never_the_key(
    template: Template, built: tuple[SluiceStage, RelayConstruct]
) -> None:
    for handler in (RELAY_HANDLER, DRAIN_HANDLER):
        _, props = function_props(template, handler)
        environment = _resolve_tokens(props["Environment"]["Variables"])
        relay = load_settings(environment).require_relay()
        assert relay.api_url == API_URL
        assert relay.api_key_parameter == "/sluice/dev/relay/api-key"
        assert relay.calls_per_minute == 120
        assert relay.group_key_field == "customer"
        assert relay.breaker_backoff_cap_s <= 900
        assert relay.fifo_url == relay.dlq_url == relay.ledger_table == "resolved-at-deploy"
        assert (relay.ledger_partition_key, relay.ledger_sort_key) == _declared_ledger_keys(built[0])
        secretish = [name for name in environment if re.search(r"API_KEY$|SECRET$|TOKEN$", name)]
        assert secretish == []


def test_the_drain_reads_one_parameter_and_decrypts_only_through_ssm(template: Template) -> None:
    statements = statements_of(template, DRAIN_HANDLER)
    ssm = [s for s in statements if any(a.startswith("ssm:") for a in actions(s))]
    assert len(ssm) == 1 and actions(ssm[0]) == ["ssm:GetParameter"]
    assert "parameter/sluice/dev/relay/api-key" in json.dumps(ssm[0]["Resource"])
    kms = [s for s in statements if any(a.startswith("kms:") for a in actions(s))]
    assert len(kms) == 1 and actions(kms[0]) == ["kms:Decrypt"]
    condition = kms[0]["Condition"]["StringEquals"]
    assert "ssm." in json.dumps(condition["kms:ViaService"])
    assert "parameter/sluice/dev/relay/api-key" in json.dumps(
        condition["kms:EncryptionContext:PARAMETER_ARN"]
    )
    dynamodb = {a for s in statements for a in actions(s) if a.startswith("dynamodb:")}
    assert dynamodb == {"dynamodb:GetItem", "dynamodb:PutItem"}
    sqs_actions = {a for s in statements for a in actions(s) if a.startswith("sqs:")}
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage"} <= (
        sqs_actions
    )
    assert not any(a in ("*", "ssm:*", "kms:*", "sqs:*") for s in statements for a in actions(s))


def test_the_relay_function_only_sends_to_the_queue_and_puts_failures(template: Template) -> None:
    statements = statements_of(template, RELAY_HANDLER)
    s3_actions = {a for s in statements for a in actions(s) if a.startswith("s3:")}
    assert s3_actions == {"s3:PutObject", "s3:ListBucket"}
    assert not any(a.startswith(("ssm:", "kms:Decrypt")) for s in statements for a in actions(s))
    sqs_actions = {a for s in statements for a in actions(s) if a.startswith("sqs:")}
    assert "sqs:SendMessage" in sqs_actions and "sqs:ReceiveMessage" not in sqs_actions


def test_alarms_cover_queue_age_dead_letters_and_the_api_error_rate(template: Template) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"MetricName": "ApproximateAgeOfOldestMessage", "Threshold": 3600, "Namespace": "AWS/SQS"},
    )
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    rendered = json.dumps(alarms)
    assert names.RELAY_API_CALLS in rendered and names.RELAY_API_ERRORS in rendered
    assert re.search(r"relay: messages in the dead-letter queue", rendered)
    error_rate = [
        a
        for a in alarms.values()
        if "Metrics" in a["Properties"] and names.RELAY_API_ERRORS in json.dumps(a["Properties"]["Metrics"])
    ]
    assert len(error_rate) == 1
    for metric in error_rate[0]["Properties"]["Metrics"]:
        if "MetricStat" in metric:
            assert metric["MetricStat"]["Metric"]["Namespace"] == "sluice"


def test_nothing_in_the_relay_has_an_unacknowledged_nag_finding() -> None:
    stage, _ = relay_stage()
    app = stage.node.scope
    assert isinstance(app, cdk.App)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(verbose=True), ServerlessChecks(verbose=True))
    try:
        app.synth()
    except RuntimeError as error:
        relay_findings = [line for line in str(error).splitlines() if "/Relay/" in line]
        assert relay_findings == []
