"""gateway and jobs: one HTTP API (docs/architecture.md#the-five-systems).

- `POST /messages` goes straight to the state queue through an SQS-SendMessage service
  integration (no function in front): the whole request body is the message body
  (`$request.body`; the integration's default would read a `MessageBody` field), tagged with
  message attributes from the request's context (`sluice-source`, the request id, the
  `Idempotency-Key` header and the caller, `runtime.pipeline.gateway`), and the integration's
  role may only `sqs:SendMessage` on that queue (SSE-SQS: no KMS grant needed). The router
  takes every tagged body as raw state, one item keyed by the request (or the key). The answer
  is SQS's own SendMessage response (HTTP API response mapping changes only status and headers).
- `POST /jobs` and `GET /jobs/{id}` run the jobs function (in the VPC, beside Redis), which
  enqueues jobs on the same queue; the queue's router completes them (`runtime.jobs`).

Every route is authorized (IAM by default, a JWT authorizer when config asks), the stage
throttles by default and writes JSON access logs to a log group with a retention.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
import jsii
from aws_cdk import aws_apigateway as apigw_v1
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from runtime.declarations.integration import IAM_CALLER_VARIABLE, JWT_CALLER_VARIABLE, integration_attributes
from runtime.declarations.names import ACCEPTED_FOLDER, JOBS_RESULTS_PREFIX
from stacks.config import EnvironmentConfig
from stacks.functions import FunctionFactory, FunctionSpec
from stacks.nag import Ack, acknowledge, resource_finding
from stacks.retention import log_retention
from stacks.shared import SharedResources

JOBS_PREFIX = JOBS_RESULTS_PREFIX
MESSAGES_ROUTE = "POST /messages"
JOBS_WORKER_ROUTER = "runtime.examples.jobs_worker:router"
# One JSON line per request: who, what, how it ended, how long the integration took.
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "caller": "$context.identity.caller",
    "user": "$context.identity.user",
    "requestTime": "$context.requestTime",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "integrationStatus": "$context.integrationStatus",
    "integrationLatency": "$context.integrationLatency",
    "integrationError": "$context.integrationErrorMessage",
    "authorizerError": "$context.authorizer.error",
}


def gateway_attributes(authorization: str) -> dict[str, dict[str, str]]:
    """The POST /messages integration's message attributes: the caller is the JWT's subject or
    the IAM caller's ARN."""
    return integration_attributes(JWT_CALLER_VARIABLE if authorization == "jwt" else IAM_CALLER_VARIABLE)


@jsii.implements(apigw.IAccessLogSettings)
class JsonAccessLogs:
    """Access log settings of an HTTP API stage: one JSON object per request."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigw.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigw.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw_v1.AccessLogFormat:
        return apigw_v1.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS))


class GatewayConstruct(Construct):
    """The HTTP API, its stage, the queue integration and the jobs function."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        shared: SharedResources,
        factory: FunctionFactory,
    ) -> None:
        super().__init__(scope, construct_id)
        gateway = config.gateway
        self.authorizer = self._authorizer(config)
        self.api = apigw.HttpApi(
            self,
            "Api",
            api_name=f"{config.prefix}-api",
            description=f"sluice {config.name}: POST /messages to the state queue; synchronous jobs",
            create_default_stage=False,
            default_authorizer=self.authorizer,
        )
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=log_retention(gateway.access_log_retention_days or config.functions.log_retention_days),
            removal_policy=factory.removal_policy,
        )
        self.stage = apigw.HttpStage(
            self,
            "DefaultStage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(
                rate_limit=gateway.throttle_rate_per_s, burst_limit=gateway.throttle_burst
            ),
            access_log_settings=JsonAccessLogs(self.access_logs),
        )
        self.jobs_function = self._jobs(config, shared, factory) if config.jobs.enabled else None
        self._messages_route(config, shared)
        cdk.CfnOutput(self, "Url", value=self.stage.url, description="the HTTP API's base URL")

    def _authorizer(self, config: EnvironmentConfig) -> apigw.IHttpRouteAuthorizer:
        gateway = config.gateway
        if gateway.authorization == "jwt":
            return authorizers.HttpJwtAuthorizer(
                "Jwt", gateway.jwt_issuer, jwt_audience=list(gateway.jwt_audience)
            )
        return authorizers.HttpIamAuthorizer()

    def _jobs(
        self,
        config: EnvironmentConfig,
        shared: SharedResources,
        factory: FunctionFactory,
    ) -> lambda_.Function:
        # The router completes jobs with the same settings the waiter reads them with: both get
        # the jobs section (the pipeline construct asks for it on the routers).
        if not config.pipeline.router_completes_jobs:
            cdk.Annotations.of(self).add_warning_v2(
                "sluice:jobs-router",
                f"pipeline.router_completes_jobs is false: {config.pipeline.router!r} does not complete "
                "jobs, so POST /jobs will answer 202 and GET will stay pending; use a "
                f"runtime.jobs.JobsRouter (e.g. {JOBS_WORKER_ROUTER!r}, which passes every other item to "
                "the enrich router)",
            )

        jobs = config.jobs
        function = factory.create(
            self,
            FunctionSpec(
                name="jobs",
                handler="runtime.handlers.jobs.handler",
                timeout_s=jobs.timeout_s,
                memory_mb=jobs.memory_mb,
                description="sluice jobs: POST /jobs enqueues and waits on Redis; GET /jobs/{id}",
                sections=frozenset({"jobs"}),
            ),
        )
        shared.state_queue.grant(function, "sqs:SendMessage")
        shared.redis_auth_secret.grant_read(function)
        # Reads a job's outcome and presigns it; the worker (the router) writes it.
        jobs_objects = factory.results_bucket.arn_for_objects(f"{JOBS_PREFIX}*")
        function.add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[jobs_objects]))
        # Records each job's acceptance, create-only, before enqueuing it (runtime.jobs.store).
        accepted = factory.results_bucket.arn_for_objects(f"{JOBS_PREFIX}{ACCEPTED_FOLDER}*")
        function.add_to_role_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=[accepted]))
        integration = integrations.HttpLambdaIntegration("Jobs", function)
        self.api.add_routes(path="/jobs", methods=[apigw.HttpMethod.POST], integration=integration)
        self.api.add_routes(path="/jobs/{id}", methods=[apigw.HttpMethod.GET], integration=integration)
        acknowledge(
            function,
            Ack(
                "Serverless-LambdaDLQ",
                "invoked synchronously by the HTTP API only: the caller receives every error, so "
                "there is no asynchronous event to keep",
            ),
            Ack(
                "Serverless-LambdaAsyncFailureDestination",
                "invoked synchronously by the HTTP API only; no asynchronous invocation to route",
            ),
            Ack(
                "AwsSolutions-IAM5",
                "a job's outcome is one object per job id under the results bucket's jobs/ prefix: "
                "the function reads (and presigns) any of them, and writes (create-only) one "
                "acceptance record per job under jobs/accepted/, nothing else in S3",
                (resource_finding(function, jobs_objects), resource_finding(function, accepted)),
            ),
        )
        return function

    def _messages_route(self, config: EnvironmentConfig, shared: SharedResources) -> None:
        """POST /messages → SQS SendMessage: L1 integration and route (the body as it came)."""
        role = iam.Role(
            self,
            "MessagesIntegrationRole",
            # Only API Gateway acting for this account (confused-deputy protection).
            assumed_by=iam.ServicePrincipal(
                "apigateway.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}},
            ),
            description="HTTP API POST /messages: send the request body to the state queue, nothing else",
        )
        shared.state_queue.grant(role, "sqs:SendMessage")
        integration = apigw.CfnIntegration(
            self,
            "MessagesIntegration",
            api_id=self.api.api_id,
            integration_type="AWS_PROXY",
            integration_subtype="SQS-SendMessage",
            payload_format_version="1.0",
            credentials_arn=role.role_arn,
            request_parameters={
                "QueueUrl": shared.state_queue.queue_url,
                "MessageBody": "$request.body",
                # Tags set from the request's context: always raw state, keyed by the request
                # (or its caller's Idempotency-Key); see runtime.pipeline.gateway.
                "MessageAttributes": json.dumps(gateway_attributes(config.gateway.authorization)),
            },
            timeout_in_millis=10_000,
            description="the request body, unchanged, as one tagged message on the state queue",
        )
        if config.gateway.authorization == "jwt":
            # Bound to the API by the jobs routes above, so its id exists now.
            authorization = {
                "authorization_type": "JWT",
                "authorizer_id": self.authorizer.authorizer_id,  # type: ignore[attr-defined]
            }
        else:
            authorization = {"authorization_type": "AWS_IAM"}
        apigw.CfnRoute(
            self,
            "MessagesRoute",
            api_id=self.api.api_id,
            route_key=MESSAGES_ROUTE,
            target=f"integrations/{integration.ref}",
            **authorization,
        )
