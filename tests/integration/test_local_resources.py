"""The local environment's resources and settings come from the same config as the stacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from local import resources
from local.cli import build_parser, options_from
from local.environment import load_local_config
from local.resources import ResourceNames, function_settings, provision
from runtime.config import load_settings, to_environ
from runtime.errors import ConfigError
from runtime.pipeline import ledger as ledger_module


def test_queues_tables_parameter_and_secret_follow_the_config(aws: Any) -> None:
    config = load_local_config(overrides={"pipeline": {"timeout_s": 7, "standard_max_receive_count": 4}})
    provisioned = provision(aws, config)
    names = provisioned.names
    sqs = aws("sqs")
    state = sqs.get_queue_attributes(QueueUrl=provisioned.url(names.state_queue), AttributeNames=["All"])[
        "Attributes"
    ]
    assert int(state["VisibilityTimeout"]) == config.pipeline.visibility_timeout_s == 6 * 7
    assert int(state["MessageRetentionPeriod"]) == config.queues.retention_s
    assert int(state["MaximumMessageSize"]) == config.queues.max_message_bytes
    assert json.loads(state["RedrivePolicy"]) == {
        "deadLetterTargetArn": provisioned.arn(names.state_dlq),
        "maxReceiveCount": 4,
    }
    fifo = sqs.get_queue_attributes(QueueUrl=provisioned.url(names.fifo_queue), AttributeNames=["All"])[
        "Attributes"
    ]
    assert fifo["FifoQueue"] == "true"
    assert json.loads(fifo["RedrivePolicy"])["maxReceiveCount"] == config.pipeline.fifo_max_receive_count
    dlq = sqs.get_queue_attributes(QueueUrl=provisioned.url(names.state_dlq), AttributeNames=["All"])[
        "Attributes"
    ]
    assert int(dlq["MessageRetentionPeriod"]) == config.queues.dlq_retention_s

    dynamodb = aws("dynamodb")
    ledger = dynamodb.describe_table(TableName=names.ledger_table)["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in ledger["KeySchema"]} == {
        ledger_module.PARTITION_KEY: "HASH"
    }
    ttl = dynamodb.describe_time_to_live(TableName=names.ledger_table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == ledger_module.TTL_ATTRIBUTE
    source = dynamodb.describe_table(TableName=names.relay_source_table)["Table"]
    assert source["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
    aws("s3").head_bucket(Bucket=names.results_bucket)
    parameter = aws("ssm").get_parameter(Name=config.api_key_parameter, WithDecryption=True)["Parameter"]
    assert parameter["Type"] == "SecureString"
    aws("secretsmanager").describe_secret(SecretId=names.redis_auth_secret)


def test_instances_keep_runs_on_one_server_apart(aws: Any) -> None:
    config = load_local_config()
    first = provision(aws, config, "aaa111")
    second = provision(aws, config, "bbb222")
    assert first.names.state_queue != second.names.state_queue
    assert first.names.results_bucket == "sluice-dev-aaa111-results"


def test_function_settings_survive_the_environment_round_trip(tmp_path: Path) -> None:
    config = load_local_config()
    names = ResourceNames.for_config(config)
    provisioned = resources.Provisioned(
        names=names,
        queue_urls={
            q: f"http://moto/{q}"
            for q in (
                names.state_queue,
                names.state_dlq,
                names.fifo_queue,
                names.fifo_dlq,
                names.relay_queue,
                names.relay_dlq,
            )
        },
        queue_arns={},
    )
    settings = function_settings(config, provisioned, redis_url="redis://127.0.0.1:1/0", share=tmp_path)
    assert load_settings(to_environ(settings)) == settings
    ingest = settings.require_ingest()
    assert ingest.settle_s == config.ingest.settle_s and ingest.lease_s == config.ingest.lease_s
    assert ingest.archive_after_s == config.ingest.lease_s + config.ingest.loader_timeout_s
    pipeline = settings.require_pipeline()
    assert pipeline.dedup_horizon_s == config.dedup_horizon_s and pipeline.lease_s == config.pipeline.lease_s
    assert pipeline.router == config.pipeline.router
    relay = settings.require_relay()
    assert relay.fifo_url == "http://moto/sluice-dev-relay.fifo" and relay.ledger_table == names.ledger_table
    assert relay.calls_per_minute == config.relay.calls_per_minute
    jobs = settings.jobs_settings()
    assert jobs.wait_s == config.jobs.wait_s and jobs.results_bucket == names.results_bucket


# Where each resource is: the only settings allowed to differ between AWS and this machine.
LOCATIONS = {
    "root",
    "ledger_table",
    "results_bucket",
    "state_url",
    "state_dlq_url",
    "fifo_url",
    "fifo_dlq_url",
}


def test_local_functions_get_the_stacks_settings_apart_from_where_resources_are(tmp_path: Path) -> None:
    build_stage = pytest.importorskip("tests.support.stacks").build_stage
    config = load_local_config()
    local_block = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())["context"][
        "sluice"
    ]
    stage = build_stage("dev", local_block["local"], all_systems=False)
    assert stage.config == config
    cloud = stage.stateless.factory.settings(frozenset({"ingest", "pipeline"}))
    names = ResourceNames.for_config(config)
    urls = {
        q: f"http://moto/{q}" for q in (names.state_queue, names.state_dlq, names.fifo_queue, names.fifo_dlq)
    }
    urls |= {names.relay_queue: "http://moto/relay.fifo", names.relay_dlq: "http://moto/relay-dlq.fifo"}
    local = function_settings(
        config,
        resources.Provisioned(names=names, queue_urls=urls, queue_arns={}),
        redis_url="redis://127.0.0.1:1/0",
        share=tmp_path,
    )
    for section in ("queues", "ingest", "pipeline"):
        assert getattr(cloud, section).model_dump(exclude=LOCATIONS) == getattr(local, section).model_dump(
            exclude=LOCATIONS
        ), section


def test_config_overrides_are_validated_like_cdk_json() -> None:
    assert (
        load_local_config(overrides={"queues": {"max_message_bytes": 8192}}).queues.max_message_bytes == 8192
    )
    with pytest.raises(ConfigError, match=r"queues\.max_message_bytes"):
        load_local_config(overrides={"queues": {"max_message_bytes": 12}})


def test_cli_options_carry_kill_points_and_overrides() -> None:
    args = build_parser().parse_args(
        [
            "--kill-at",
            "loader:commit.before_rename:3",
            "--schedule",
            "loader=500ms",
            "--concurrency",
            "router=3",
            "--systems",
            "ingest",
        ]
    )
    options = options_from(args)
    assert options.systems == ("ingest",)
    # The last --kill-at of a function wins: one kill plan per function.
    assert options.functions.kill_at == {"loader": ("commit.before_rename", 3)}
    loader = options.functions.function("loader", 30, 1024)
    assert loader.kill is not None and loader.kill.deaths == 3
    assert options.functions.schedules == {"loader": "500ms"}
    assert options.functions.concurrency == {"router": 3}


@pytest.mark.parametrize(
    "argv",
    [["--systems", "nope"], ["--schedule", "loader=cron(1)"], ["--kill-at", "loader"], ["--rate", "0"]],
)
def test_cli_refuses_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
