"""Template tests of the HTTP API (gateway + jobs): routes, the SQS service integration, IAM
or JWT authorization, throttling, access logs, the jobs function and its grants; config rules;
cdk-nag. Properties are matched with `Match`, never by logical id; bundling is skipped."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Annotations, Match, Template

from runtime import codec
from runtime.errors import ConfigError
from stacks.config import GatewayConfig, JobsConfig
from stacks.gateway import ACCESS_LOG_FIELDS
from stacks.stage import SluiceStage
from tests.support.stacks import build_stage, output_name, with_nag

JWT = {"authorization": "jwt", "jwt_issuer": "https://issuer.example.com/", "jwt_audience": ["sluice-api"]}
JOBS_HANDLER = "runtime.handlers.jobs.handler"


@pytest.fixture(scope="module")
def dev() -> SluiceStage:
    return build_stage(
        "dev", {"jobs": {"wait_s": 20}, "gateway": {"throttle_rate_per_s": 50, "throttle_burst": 80}}
    )


@pytest.fixture(scope="module")
def dev_t(dev: SluiceStage) -> Template:
    return Template.from_stack(dev.stateless)


def only(template: Template, kind: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    found = template.find_resources(kind, {"Properties": props} if props else None)
    assert len(found) == 1, (kind, list(found))
    return next(iter(found.values()))["Properties"]  # type: ignore[no-any-return]


def statements_of_role(template: Template, role_id: str) -> list[dict[str, Any]]:
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": role_id}])}}
    )
    return [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]


def ref_of(value: dict[str, Any]) -> str:
    return value["Fn::GetAtt"][0] if "Fn::GetAtt" in value else value["Ref"]


def test_one_http_api_with_three_routes(dev_t: Template) -> None:
    only(dev_t, "AWS::ApiGatewayV2::Api", {"ProtocolType": "HTTP"})
    routes = dev_t.find_resources("AWS::ApiGatewayV2::Route")
    assert sorted(r["Properties"]["RouteKey"] for r in routes.values()) == [
        "GET /jobs/{id}",
        "POST /jobs",
        "POST /messages",
    ]


def test_post_messages_sends_the_whole_body_to_the_state_queue(dev_t: Template) -> None:
    integration = only(dev_t, "AWS::ApiGatewayV2::Integration", {"IntegrationSubtype": "SQS-SendMessage"})
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["PayloadFormatVersion"] == "1.0"
    parameters = integration["RequestParameters"]
    assert set(parameters) == {"QueueUrl", "MessageBody", "MessageAttributes"}
    assert parameters["MessageBody"] == "$request.body"
    # Tagged from the request's context; a missing header or caller still gives a non-empty value.
    assert json.loads(parameters["MessageAttributes"]) == {
        codec.ATTR_SOURCE: {"DataType": "String", "StringValue": "gateway"},
        codec.ATTR_REQUEST_ID: {"DataType": "String", "StringValue": "${context.requestId}"},
        codec.ATTR_IDEMPOTENCY_KEY: {
            "DataType": "String",
            "StringValue": "k:${request.header.idempotency-key}",
        },
        codec.ATTR_CALLER: {"DataType": "String", "StringValue": "c:${context.identity.userArn}"},
    }
    queue = output_name(parameters["QueueUrl"])  # the stateful stack's state queue
    assert "StateQueue" in queue and "DeadLetter" not in queue
    route = only(dev_t, "AWS::ApiGatewayV2::Route", {"RouteKey": "POST /messages"})
    integrations = dev_t.find_resources(
        "AWS::ApiGatewayV2::Integration", {"Properties": {"IntegrationSubtype": "SQS-SendMessage"}}
    )
    [integration_id] = integrations
    assert route["Target"] == {"Fn::Join": ["", ["integrations/", {"Ref": integration_id}]]}


def test_the_integration_role_may_only_send_to_the_state_queue(dev_t: Template) -> None:
    integration = only(dev_t, "AWS::ApiGatewayV2::Integration", {"IntegrationSubtype": "SQS-SendMessage"})
    role_id = ref_of(integration["CredentialsArn"])
    role = dev_t.to_json()["Resources"][role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "apigateway.amazonaws.com"},
            # API Gateway acting for another account cannot use the role (confused deputy).
            "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}},
        }
    ]
    assert "ManagedPolicyArns" not in role
    [statement] = statements_of_role(dev_t, role_id)
    assert statement["Action"] == "sqs:SendMessage" and statement["Effect"] == "Allow"
    assert "StateQueue" in str(statement["Resource"]) and "DeadLetter" not in str(statement["Resource"])


def test_every_route_requires_iam_authorization_by_default(dev_t: Template) -> None:
    routes = dev_t.find_resources("AWS::ApiGatewayV2::Route")
    assert {r["Properties"]["AuthorizationType"] for r in routes.values()} == {"AWS_IAM"}
    assert dev_t.find_resources("AWS::ApiGatewayV2::Authorizer") == {}


def test_a_jwt_authorizer_guards_every_route_when_configured() -> None:
    template = Template.from_stack(build_stage("dev", {"gateway": JWT}).stateless)
    integration = only(template, "AWS::ApiGatewayV2::Integration", {"IntegrationSubtype": "SQS-SendMessage"})
    caller = json.loads(integration["RequestParameters"]["MessageAttributes"])[codec.ATTR_CALLER]
    assert caller["StringValue"] == "c:${context.authorizer.claims.sub}"
    authorizer = only(template, "AWS::ApiGatewayV2::Authorizer")
    assert authorizer["AuthorizerType"] == "JWT"
    assert authorizer["JwtConfiguration"] == {"Issuer": JWT["jwt_issuer"], "Audience": JWT["jwt_audience"]}
    [authorizer_id] = template.find_resources("AWS::ApiGatewayV2::Authorizer")
    routes = template.find_resources("AWS::ApiGatewayV2::Route")
    assert len(routes) == 3
    for route in routes.values():
        assert route["Properties"]["AuthorizationType"] == "JWT"
        assert route["Properties"]["AuthorizerId"] == {"Ref": authorizer_id}


def test_the_stage_throttles_and_writes_json_access_logs(dev_t: Template) -> None:
    stage = only(dev_t, "AWS::ApiGatewayV2::Stage")
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"] == {"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 80}
    log_format = stage["AccessLogSettings"]["Format"]
    for field in ("$context.requestId", "$context.status", "$context.integrationErrorMessage"):
        assert field in log_format
    log_group_id = ref_of(stage["AccessLogSettings"]["DestinationArn"])
    log_group = dev_t.to_json()["Resources"][log_group_id]
    assert log_group["Type"] == "AWS::Logs::LogGroup" and log_group["Properties"]["RetentionInDays"] == 14
    assert set(ACCESS_LOG_FIELDS) >= {"requestId", "status", "routeKey"}


def test_the_jobs_function_runs_in_the_vpc_with_its_settings(dev_t: Template) -> None:
    props = only(dev_t, "AWS::Lambda::Function", {"Handler": JOBS_HANDLER})
    assert props["Timeout"] == 29 and props["MemorySize"] == 512 and "VpcConfig" in props
    variables = props["Environment"]["Variables"]
    assert variables["SLUICE_JOBS__WAIT_S"] == "20.0"
    assert variables["SLUICE_JOBS__RESULTS_PREFIX"] == "jobs/"
    assert "SLUICE_QUEUES__STATE_URL" in variables and "SLUICE_REDIS__AUTH_SECRET_ARN" in variables
    # The worker completes jobs with the same settings.
    router = only(dev_t, "AWS::Lambda::Function", {"Handler": "runtime.handlers.router.handler"})
    worker_variables = router["Environment"]["Variables"]
    for name in ("SLUICE_JOBS__RESULTS_PREFIX", "SLUICE_JOBS__STATUS_TTL_S", "SLUICE_JOBS__INLINE_MAX_BYTES"):
        assert worker_variables[name] == variables[name]


def test_the_jobs_function_may_send_to_the_queue_read_outcomes_and_the_redis_secret(dev_t: Template) -> None:
    props = only(dev_t, "AWS::Lambda::Function", {"Handler": JOBS_HANDLER})
    statements = statements_of_role(dev_t, ref_of(props["Role"]))
    by_action = {
        action: statement
        for statement in statements
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    assert set(by_action) == {
        "sqs:SendMessage",
        "s3:GetObject",
        "s3:PutObject",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    assert "StateQueue" in str(by_action["sqs:SendMessage"]["Resource"])
    assert by_action["s3:GetObject"]["Resource"]["Fn::Join"][1][-1] == "/jobs/*"
    assert by_action["s3:PutObject"]["Resource"]["Fn::Join"][1][-1] == "/jobs/accepted/*"  # acceptances only
    # Only the HTTP API may invoke it, from this API's routes.
    permissions = dev_t.find_resources(
        "AWS::Lambda::Permission", {"Properties": {"Principal": "apigateway.amazonaws.com"}}
    )
    assert len(permissions) == 2 and all("SourceArn" in p["Properties"] for p in permissions.values())


def completes_jobs(router: str) -> bool:
    """Whether the router (`package.module:attribute`) is a jobs worker: what
    pipeline.router_completes_jobs declares, found out by importing it (synth never does)."""
    from runtime.jobs.worker import JobsRouter
    from runtime.pipeline.state import load_router

    return isinstance(load_router(router), JobsRouter)


def test_a_router_that_does_not_complete_jobs_is_a_synth_warning() -> None:
    enrich = {"router": "runtime.examples.enrich:router", "router_completes_jobs": False}
    stage = build_stage("dev", {"pipeline": enrich})
    annotations = Annotations.from_stack(stage.stateless)
    annotations.has_warning("*", Match.string_like_regexp("does not complete"))
    stage = build_stage("dev")  # the default router completes jobs (and enriches the rest)
    Annotations.from_stack(stage.stateless).has_no_warning("*", Match.string_like_regexp("does not complete"))
    # The declaration's default tells the truth about the default router.
    pipeline = stage.config.pipeline
    assert pipeline.router_completes_jobs and completes_jobs(pipeline.router)
    assert not completes_jobs(enrich["router"])
    assert not completes_jobs("runtime.examples.hello:router")


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("jobs", {"wait_s": 30}, "less than 30"),
        ("jobs", {"wait_s": 28.5, "timeout_s": 29}, "wait_s must leave"),
        ("gateway", {"authorization": "jwt"}, "needs an https:// jwt_issuer"),
        ("gateway", {"jwt_issuer": "https://x.example.com/"}, "only used with authorization 'jwt'"),
        ("gateway", {"access_log_retention_days": 10}, "must be one of"),
    ],
)
def test_bad_gateway_and_jobs_config_fails_with_its_name(
    section: str, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_stage("dev", {section: values})


def test_defaults_wait_under_the_http_api_limit_behind_iam() -> None:
    assert JobsConfig().wait_s == 25 < 30 and GatewayConfig().authorization == "iam"


def test_prod_with_a_jwt_authorizer_has_no_unacknowledged_nag_finding() -> None:
    with_nag(build_stage("prod", {"gateway": JWT})).synth()
