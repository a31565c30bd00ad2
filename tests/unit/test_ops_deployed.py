"""`sluice … --env NAME`: stack resources read through CloudFormation (moto's in-process
mock_aws), with a DLQ holding a dead letter and an alarm in ALARM."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from moto import mock_aws

from ops.cli import main
from runtime import metric_names
from tests.support.aws import mock_client

STATEFUL = {
    "Resources": {
        "StateDeadLetterQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"QueueName": "sluice-t-state-dlq"},
        },
        "StateQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": "sluice-t-state",
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["StateDeadLetterQueue", "Arn"]},
                    "maxReceiveCount": 30,
                },
            },
        },
    },
    "Outputs": {"InboxFileSystemId": {"Value": "fs-123"}},
}
STATELESS = {
    "Resources": {
        "DlqDepth": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": "sluice-t-dlq-depth",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Namespace": "AWS/SQS",
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 1,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            },
        }
    }
}


@pytest.fixture
def deployed() -> Iterator[None]:
    with mock_aws():
        cfn = mock_client("cloudformation")
        cfn.create_stack(StackName="sluice-t-stateful", TemplateBody=json.dumps(STATEFUL))
        cfn.create_stack(StackName="sluice-t-stateless", TemplateBody=json.dumps(STATELESS))
        yield


def test_status_of_a_deployed_environment(deployed: None) -> None:
    result = CliRunner().invoke(main, ["status", "--env", "t", "--json"])
    doc = json.loads(result.output)
    assert result.exit_code == 0, doc["attention"]
    assert {q["name"]: q["dlq_of"] for q in doc["queues"]} == {
        "sluice-t-state-dlq": "sluice-t-state",
        "sluice-t-state": None,
    }
    assert doc["ingest"]["last_5_min"] == {"files_per_s": None, "records_per_s": None}
    mock_client("cloudwatch").put_metric_data(
        Namespace="sluice",
        MetricData=[
            {"MetricName": name, "Dimensions": [{"Name": "service", "Value": "sluice"}], "Value": value}
            for name, value in ((metric_names.FILES_LOADED, 600), (metric_names.RECORDS_SENT, 1200))
        ],
    )
    sqs = mock_client("sqs")
    url = sqs.get_queue_url(QueueName="sluice-t-state-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='{"v": 1, "id": "x", "parent": null, "items": []}')
    # moto's CloudFormation does not create alarms: create one named as CloudFormation names them.
    alarm_name = "sluice-t-stateless-DlqDepth-1A2B3C"
    cloudwatch = mock_client("cloudwatch")
    properties = STATELESS["Resources"]["DlqDepth"]["Properties"]
    cloudwatch.put_metric_alarm(**{**properties, "AlarmName": alarm_name})
    cloudwatch.set_alarm_state(AlarmName=alarm_name, StateValue="ALARM", StateReason="made on purpose")
    result = CliRunner().invoke(main, ["status", "--env", "t", "--json"])
    doc = json.loads(result.output)
    assert result.exit_code == 1
    assert doc["ingest"]["last_5_min"] == {"files_per_s": 2.0, "records_per_s": 4.0}
    assert doc["alarms_in_alarm"] == [{"name": alarm_name, "reason": "made on purpose"}]
    assert any("sluice-t-state-dlq" in reason for reason in doc["attention"])


def test_dlq_ls_of_a_deployed_environment(deployed: None) -> None:
    result = CliRunner().invoke(main, ["dlq", "ls", "sluice-t-state-dlq", "--env", "t", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == []


def test_a_missing_environment_is_a_clear_error(deployed: None) -> None:
    result = CliRunner().invoke(main, ["status", "--env", "nope"])
    assert result.exit_code != 0 and "sluice-nope-stateful" in result.output
