"""Template tests of the stateless stack: the function factory's common properties, the
environment contract, ingest's schedules/mount/grants/alarms/dashboard and the routers' event
source mappings. Each environment's app is built once per module; bundling is skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Match, Template

from runtime import metric_names, observability
from runtime.config import load_settings
from runtime.errors import ConfigError
from stacks.alarms import METRIC_DIMENSIONS, METRICS_NAMESPACE, SERVICE_NAME
from stacks.functions import (
    EFS_MOUNT_PATH,
    FunctionSpec,
    PipPlatformBundling,
    code_asset,
)
from stacks.stage import SluiceStage
from tests.support.stacks import actions_of, build_stage, output_name, stateful_output, statements_of_function

HANDLERS = {
    "loader": "runtime.handlers.loader.handler",
    "checker": "runtime.handlers.checker.handler",
    "archiver": "runtime.handlers.archiver.handler",
    "router": "runtime.handlers.router.handler",
    "fifo-router": "runtime.handlers.fifo_router.handler",
}
INGEST = ("loader", "checker", "archiver")
ROUTERS = ("router", "fifo-router")


@pytest.fixture(scope="module")
def dev_t(dev: SluiceStage) -> Template:
    return Template.from_stack(dev.stateless)


@pytest.fixture(scope="module")
def prod_t(prod: SluiceStage) -> Template:
    return Template.from_stack(prod.stateless)


@pytest.fixture(scope="module")
def stateful_t(dev: SluiceStage) -> Template:
    return Template.from_stack(dev.stateful)


def function(template: Template, name: str) -> tuple[str, dict[str, Any]]:
    found = template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": HANDLERS[name]}})
    assert len(found) == 1, name
    logical_id, resource = next(iter(found.items()))
    return logical_id, resource["Properties"]


def role_statements(template: Template, name: str) -> list[dict[str, Any]]:
    _, props = function(template, name)
    return statements_of_function(template, props)


# -- the function factory -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HANDLERS))
def test_every_function_is_arm64_traced_in_the_vpc_with_the_layer(dev_t: Template, name: str) -> None:
    _, props = function(dev_t, name)
    assert props["Architectures"] == ["arm64"]
    assert props["Runtime"] == "python3.12"
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert len(props["VpcConfig"]["SubnetIds"]) == 2
    assert len(props["VpcConfig"]["SecurityGroupIds"]) == 1
    assert len(props["Layers"]) == 1
    assert "LoggingConfig" in props  # its own log group, with retention
    assert "ReservedConcurrentExecutions" not in props


def test_the_layer_is_for_arm64_and_the_configured_python(dev_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::Lambda::LayerVersion",
        {"CompatibleArchitectures": ["arm64"], "CompatibleRuntimes": ["python3.12"]},
    )


def test_log_retention_follows_the_environment(dev_t: Template, prod_t: Template) -> None:
    assert {
        g["Properties"]["RetentionInDays"] for g in dev_t.find_resources("AWS::Logs::LogGroup").values()
    } == {14}
    assert {
        g["Properties"]["RetentionInDays"] for g in prod_t.find_resources("AWS::Logs::LogGroup").values()
    } == {365}
    # loader, checker, archiver, operations, router, fifo-router, relay, drain, jobs + the HTTP
    # API's access logs
    assert len(prod_t.find_resources("AWS::Logs::LogGroup", {"DeletionPolicy": "Retain"})) == 10


def test_reserved_concurrency_only_where_config_sets_it() -> None:
    stage = build_stage("dev", {"functions": {"reserved_concurrency": {"loader": 5}}})
    template = Template.from_stack(stage.stateless)
    _, loader = function(template, "loader")
    assert loader["ReservedConcurrentExecutions"] == 5
    assert all(
        "ReservedConcurrentExecutions" not in function(template, name)[1]
        for name in HANDLERS
        if name != "loader"
    )


@pytest.mark.parametrize("name", INGEST)
def test_ingest_functions_mount_the_access_point(dev_t: Template, stateful_t: Template, name: str) -> None:
    _, props = function(dev_t, name)
    (mount,) = props["FileSystemConfigs"]
    assert mount["LocalMountPath"] == EFS_MOUNT_PATH == "/mnt/sluice"
    access_point = next(iter(stateful_t.find_resources("AWS::EFS::AccessPoint")))
    assert access_point in json.dumps(mount["Arn"])  # imported from the stateful stack


@pytest.mark.parametrize("name", ROUTERS)
def test_routers_do_not_mount_efs(dev_t: Template, name: str) -> None:
    assert "FileSystemConfigs" not in function(dev_t, name)[1]


@pytest.mark.parametrize(("stage_t", "memory_mb", "processes"), [("dev_t", 1769, "1"), ("prod_t", 3538, "2")])
def test_the_loader_gets_the_memory_its_processes_need(
    request: pytest.FixtureRequest, stage_t: str, memory_mb: int, processes: str
) -> None:
    template: Template = request.getfixturevalue(stage_t)
    _, loader = function(template, "loader")
    assert loader["MemorySize"] == memory_mb
    assert loader["Environment"]["Variables"]["SLUICE_INGEST__PROCESSES"] == processes
    # The checker and archiver wait on EFS and Redis, not the CPU: they keep the default.
    for name in ("checker", "archiver"):
        _, props = function(template, name)
        assert props["MemorySize"] == 1024
        assert props["Environment"]["Variables"]["SLUICE_INGEST__PROCESSES"] == processes


# -- the environment contract ---------------------------------------------------------------------


def test_environment_carries_the_settings_contract(dev: SluiceStage, dev_t: Template) -> None:
    _, loader = function(dev_t, "loader")
    variables = loader["Environment"]["Variables"]
    assert variables["SLUICE_ENV"] == "dev"
    assert variables["SLUICE_INGEST__ROOT"] == "/mnt/sluice"
    assert variables["SLUICE_INGEST__SETTLE_S"] == "30.0"
    assert variables["SLUICE_INGEST__LEASE_S"] == str(dev.config.ingest.lease_s)
    assert variables["SLUICE_REDIS__TLS"] == "true"
    assert variables["SLUICE_REDIS__PORT"] == "6379"
    assert "Redis" in output_name(variables["SLUICE_REDIS__HOST"])
    assert "RedisAuthToken" in output_name(variables["SLUICE_REDIS__AUTH_SECRET_ARN"])
    assert "StateQueue" in output_name(variables["SLUICE_QUEUES__STATE_URL"])
    assert variables["POWERTOOLS_SERVICE_NAME"] == SERVICE_NAME
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == METRICS_NAMESPACE
    assert not any(name.startswith("SLUICE_PIPELINE__") for name in variables)
    _, router = function(dev_t, "router")
    router_variables = router["Environment"]["Variables"]
    assert router_variables["SLUICE_PIPELINE__DEDUP_HORIZON_S"] == str(dev.config.dedup_horizon_s)
    assert "SLUICE_PIPELINE__LEDGER_TABLE" in router_variables
    assert router_variables["SLUICE_PIPELINE__ROUTER"] == dev.config.pipeline.router
    assert router_variables["SLUICE_PIPELINE__IO_THREADS"] == str(dev.config.pipeline.io_threads)
    assert not any(name.startswith("SLUICE_INGEST__") for name in router_variables)


def test_environment_round_trips_through_the_runtime_loader(dev: SluiceStage) -> None:
    factory = dev.stateless.factory
    spec = FunctionSpec(
        name="loader",
        handler=HANDLERS["loader"],
        timeout_s=60,
        description="x",
        sections=frozenset({"ingest", "pipeline"}),
    )
    expected = factory.settings(spec.sections)
    # The runtime's Settings reads the very fields the stacks' FunctionSettings declares.
    assert load_settings(factory.environment(spec)).model_dump() == expected.model_dump()


def test_alarm_metrics_match_what_the_runtime_emits() -> None:
    emitted = observability.metrics
    assert emitted.namespace == observability.METRICS_NAMESPACE == METRICS_NAMESPACE
    assert {"service": emitted.service} == METRIC_DIMENSIONS


# -- ingest ---------------------------------------------------------------------------------------


def test_schedules_per_environment(dev: SluiceStage, dev_t: Template) -> None:
    expressions = sorted(
        r["Properties"]["ScheduleExpression"] for r in dev_t.find_resources("AWS::Events::Rule").values()
    )
    drain = dev.config.relay.drain_schedule
    assert expressions == sorted(["rate(1 minute)", "rate(1 minute)", "rate(5 minutes)", drain])
    custom = build_stage(
        "dev", {"ingest": {"loader_schedule": "rate(2 minutes)", "archiver_schedule": "cron(0 * * * ? *)"}}
    )
    template = Template.from_stack(custom.stateless)
    expressions = sorted(
        r["Properties"]["ScheduleExpression"] for r in template.find_resources("AWS::Events::Rule").values()
    )
    assert expressions == sorted(["cron(0 * * * ? *)", "rate(1 minute)", "rate(2 minutes)", drain])


def test_only_the_loader_sends_and_only_to_its_target(dev_t: Template) -> None:
    loader = role_statements(dev_t, "loader")
    sends = [s for s in loader if "sqs:SendMessage" in actions_of([s])]
    assert len(sends) == 1
    assert "StateQueue" in json.dumps(sends[0]["Resource"])
    for name in ("checker", "archiver"):
        assert not any(action.startswith("sqs:") for action in actions_of(role_statements(dev_t, name)))


def test_fifo_target_sends_to_the_fifo_queue() -> None:
    template = Template.from_stack(build_stage("dev", {"ingest": {"target": "fifo"}}).stateless)
    sends = [s for s in role_statements(template, "loader") if "sqs:SendMessage" in actions_of([s])]
    assert len(sends) == 1
    assert "FifoQueue" in json.dumps(sends[0]["Resource"])


@pytest.mark.parametrize("name", list(HANDLERS))
def test_every_function_reads_the_redis_secret_and_efs_is_scoped(dev_t: Template, name: str) -> None:
    statements = role_statements(dev_t, name)
    assert "secretsmanager:GetSecretValue" in actions_of(statements)
    mount = [s for s in statements if "elasticfilesystem:ClientMount" in actions_of([s])]
    if name in INGEST:
        (statement,) = mount
        assert "elasticfilesystem:AccessPointArn" in json.dumps(statement["Condition"])
        assert "elasticfilesystem:ClientWrite" in actions_of(statements)
    else:
        assert mount == []


def alarm_metric_names(template: Template) -> set[str]:
    names: set[str] = set()
    for alarm in template.find_resources("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if "MetricName" in props:
            names.add(props["MetricName"])
        for query in props.get("Metrics", []):
            if "MetricStat" in query:
                names.add(query["MetricStat"]["Metric"]["MetricName"])
    return names


def test_ingest_and_pipeline_alarms(dev_t: Template) -> None:
    names = alarm_metric_names(dev_t)
    for metric in (
        metric_names.OLDEST_FILE_AGE_SECONDS,
        metric_names.REJECTED_FILES,
        metric_names.HALTED_BATCHES,
        metric_names.ENVIRONMENT_ERRORS,
        metric_names.FAILED_BATCH_RUNS,
        metric_names.STUCK_INBOX_FILES,
        metric_names.PLAN_MISMATCH,
        metric_names.REDIS_UNAVAILABLE,
        "DatabaseMemoryUsagePercentage",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
        "MeteredIOBytes",
    ):
        assert metric in names, metric
    dev_t.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": metric_names.OLDEST_FILE_AGE_SECONDS,
            "Namespace": "sluice",
            "Threshold": 1800,
            "Dimensions": [{"Name": "service", "Value": "sluice"}],
        },
    )


def test_efs_alarm_follows_the_throughput_mode(prod_t: Template) -> None:
    assert "MeteredIOBytes" in alarm_metric_names(prod_t)
    bursting = Template.from_stack(
        build_stage("dev", {"ingest": {"efs_throughput_mode": "bursting"}}).stateless
    )
    names = alarm_metric_names(bursting)
    assert "BurstCreditBalance" in names
    assert "MeteredIOBytes" not in names


def test_redis_memory_alarm_watches_every_node(prod: SluiceStage, prod_t: Template) -> None:
    (alarm,) = [
        a
        for a in prod_t.find_resources("AWS::CloudWatch::Alarm").values()
        if "DatabaseMemoryUsagePercentage" in json.dumps(a)
    ]
    nodes = [q for q in alarm["Properties"]["Metrics"] if "MetricStat" in q]
    assert len(nodes) == 1 + prod.config.redis.replicas
    assert alarm["Properties"]["Threshold"] == prod.config.redis.memory_alarm_percent


def test_dlq_alarm_thresholds_differ_by_environment(dev_t: Template, prod_t: Template) -> None:
    for template in (dev_t, prod_t):
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm", {"MetricName": "ApproximateNumberOfMessagesVisible", "Threshold": 1}
        )
    assert (
        len(
            dev_t.find_resources(
                "AWS::CloudWatch::Alarm", {"Properties": {"MetricName": "ApproximateNumberOfMessagesVisible"}}
            )
        )
        == 3  # the state, router FIFO and relay dead-letter queues
    )


def test_ingest_dashboard_shows_throughput_backlog_and_rejects(dev_t: Template) -> None:
    (dashboard,) = dev_t.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in (
        metric_names.RECORDS_SENT,
        metric_names.FILES_LOADED,
        metric_names.INBOX_DEPTH,
        metric_names.BATCHES_IN_FLIGHT,
        metric_names.REJECTED_FILES,
    ):
        assert metric in body, metric


# -- pipeline -------------------------------------------------------------------------------------


def test_router_event_source_mapping(dev: SluiceStage, dev_t: Template) -> None:
    pipeline = dev.config.pipeline
    dev_t.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "BatchSize": pipeline.batch_size,
            "MaximumBatchingWindowInSeconds": pipeline.batching_window_s,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": pipeline.max_concurrency},
            "EventSourceArn": stateful_output("StateQueue"),
        },
    )


def test_fifo_router_event_source_mapping(dev_t: Template) -> None:
    (mapping,) = dev_t.find_resources(
        "AWS::Lambda::EventSourceMapping",
        {"Properties": {"EventSourceArn": stateful_output("FifoQueue")}},
    ).values()
    props = mapping["Properties"]
    assert props["BatchSize"] <= 10
    assert "MaximumBatchingWindowInSeconds" not in props
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_visibility_covers_six_router_timeouts_plus_window(
    dev: SluiceStage, dev_t: Template, stateful_t: Template
) -> None:
    _, router = function(dev_t, "router")
    window = dev.config.pipeline.batching_window_s
    queues = stateful_t.find_resources(
        "AWS::SQS::Queue",
        {"Properties": {"RedrivePolicy": Match.any_value(), "VisibilityTimeout": Match.any_value()}},
    )
    router_queues = [q for q in queues.values() if q["Properties"]["RedrivePolicy"]["maxReceiveCount"] < 1000]
    assert len(router_queues) == 2  # the relay's queue is drained on a schedule, not by the router
    for queue in router_queues:
        assert queue["Properties"]["VisibilityTimeout"] >= 6 * router["Timeout"] + window


@pytest.mark.parametrize("name", ROUTERS)
def test_router_grants(dev_t: Template, name: str) -> None:
    statements = role_statements(dev_t, name)
    actions = actions_of(statements)
    # Exactly the ledger calls the router makes: no Scan, Query, DeleteItem or batch writes.
    assert {a for a in actions if a.startswith("dynamodb:")} == {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",
    }
    assert {"s3:PutObject", "s3:GetObject"} <= actions
    assert {
        "sqs:SendMessage",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
    } <= actions
    assert not any(
        action.endswith("*") for action in actions if action.startswith(("s3:", "dynamodb:", "sqs:"))
    )
    s3 = [s for s in statements if "s3:PutObject" in actions_of([s])]
    assert "ResultsBucketArn" in json.dumps(s3[0]["Resource"])


def test_an_environment_over_lambdas_limit_fails_synth_naming_the_projection() -> None:
    projection = {f"field_{i:03d}": {"path": f"payload.nested.source_field_{i:03d}"} for i in range(80)}
    with pytest.raises(ConfigError, match=r"ingest\.projection.*over Lambda's 4096-byte limit"):
        build_stage("dev", {"ingest": {"projection": projection}})


def test_code_asset_ships_only_the_runtime_package(tmp_path: Path) -> None:
    project = tmp_path / "project"
    for name, body in {
        "runtime/__init__.py": "",
        "runtime/handlers/loader.py": "def handler(event, context): ...\n",
        "runtime/__pycache__/codec.cpython-311.pyc": "",
        "runtime/ingest/tests/test_core.py": "",
        "stacks/stage.py": "",
        "tests/unit/test_x.py": "",
        "requirements.txt": "orjson\n",
        ".venv/bin/python": "",
    }.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    out = tmp_path / "out"
    app = cdk.App(outdir=str(out))
    stack = cdk.Stack(app, "AssetProbe")
    lambda_.Function(
        stack,
        "Probe",
        code=code_asset(project),
        handler="runtime.handlers.loader.handler",
        runtime=lambda_.Runtime.PYTHON_3_12,
    )
    app.synth()
    (staged,) = [path for path in out.iterdir() if path.name.startswith("asset.")]
    shipped = sorted(str(path.relative_to(staged)) for path in staged.rglob("*") if path.is_file())
    assert shipped == ["runtime/__init__.py", "runtime/handlers/loader.py"]


def test_layer_bundler_asks_pip_for_the_lambda_platform() -> None:
    command = PipPlatformBundling(Path("requirements-lambda-3.12.lock"), "3.12").command("/out")
    joined = " ".join(command)
    assert "--require-hashes --no-deps -r requirements-lambda-3.12.lock" in joined
    assert "--platform manylinux2014_aarch64" in joined
    assert "--only-binary=:all:" in joined
    assert "--implementation cp --python-version 3.12" in joined
    assert joined.endswith("--target /out/python")
