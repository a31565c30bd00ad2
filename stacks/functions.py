"""The one function factory: every sluice Lambda gets the same runtime, architecture, layer,
VPC placement, log group, tracing and environment contract; a `FunctionSpec` names what
differs (handler, timeout, memory, EFS mount).

The dependency layer is built without Docker: a local bundler runs pip for the Lambda platform
(manylinux2014 aarch64 wheels for the configured CPython), which works on any machine with pip.
It installs exactly what the lock for that CPython names (`requirements-lambda-<python>.lock`,
resolved for the Lambda platform by `make lock`, every distribution pinned and hashed), so the
layer's asset hash, derived from the lock, stands for its content.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from runtime.declarations.aws_limits import LAMBDA_ENVIRONMENT_LIMIT_BYTES
from runtime.declarations.names import LEDGER_TTL_ATTRIBUTE
from runtime.declarations.settings import FunctionSettings, RedisSettings, to_environ
from runtime.errors import ConfigError
from stacks.alarms import METRICS_NAMESPACE, SERVICE_NAME, error_rate_alarm
from stacks.config import EnvironmentConfig
from stacks.contract import RelayResources, Resources, function_settings
from stacks.nag import (
    LAMBDA_BASIC_EXECUTION,
    LAMBDA_VPC_ACCESS,
    Ack,
    acknowledge,
    managed_policy_finding,
)
from stacks.references import read_bucket
from stacks.retention import log_retention
from stacks.shared import SharedResources

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"
EFS_MOUNT_PATH = "/mnt/sluice"
LAYER_PLATFORM = "manylinux2014_aarch64"

PYTHON_RUNTIMES = {
    "3.12": lambda_.Runtime.PYTHON_3_12,
    "3.13": lambda_.Runtime.PYTHON_3_13,
}

# Only the importable package ships; the project root is the asset so that handler paths read
# `runtime.handlers.<name>.handler`.
CODE_EXCLUDES = ["*", "!runtime", "**/__pycache__", "**/*.pyc", "**/tests", "**/.pytest_cache"]


# A deploy-time value (queue URL, ARN, endpoint) counted at a generous upper bound of its length.
TOKEN_ALLOWANCE_BYTES = 160
_TOKEN = re.compile(r"\$\{Token\[[^\]]+\]\}")


def check_environment_size(function: str, environment: dict[str, str]) -> None:
    """Lambda refuses more than 4 KB of environment variables at deploy time; catch it at synth.

    The only unbounded setting that reaches the environment is the ingest projection."""
    size = sum(
        len(name.encode()) + len(_TOKEN.sub("x" * TOKEN_ALLOWANCE_BYTES, value).encode())
        for name, value in environment.items()
    )
    if size > LAMBDA_ENVIRONMENT_LIMIT_BYTES:
        raise ConfigError(
            f"ingest.projection (or another setting): the {function} function's environment would be "
            f"about {size} bytes, over Lambda's {LAMBDA_ENVIRONMENT_LIMIT_BYTES}-byte limit"
        )


class LayerBuildError(ConfigError):
    """pip could not assemble the dependency layer for the Lambda platform."""


def layer_lock(python_version: str, project_root: Path = PROJECT_ROOT) -> Path:
    """The lock the layer for this CPython installs from (written by `make lock`)."""
    return project_root / f"requirements-lambda-{python_version}.lock"


@jsii.implements(cdk.ILocalBundling)
class PipPlatformBundling:
    """Installs the hashed lock into `<output>/python` with the Lambda platform's wheels.

    `--require-hashes --no-deps`: pip installs exactly the lock's distributions, each checked
    against its hashes, and resolves nothing itself (the lock was resolved for the Lambda
    platform, not for this machine)."""

    def __init__(self, lock: Path, python_version: str) -> None:
        self.lock = lock
        self.python_version = python_version

    def command(self, output_dir: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--disable-pip-version-check",
            "--require-hashes",
            "--no-deps",
            "-r",
            str(self.lock),
            "--platform",
            LAYER_PLATFORM,
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            self.python_version,
            "--target",
            str(Path(output_dir) / "python"),
        ]

    def try_bundle(self, output_dir: str, *_options: Any, **_kwargs: Any) -> bool:
        # jsii passes the BundlingOptions struct positionally; nothing in it is needed here.
        if not self.lock.is_file():
            raise LayerBuildError(f"building the Lambda layer: {self.lock.name} is missing; run `make lock`")
        result = subprocess.run(self.command(output_dir), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            # Never fall back to Docker (returning False would): fail synth with pip's own reason.
            raise LayerBuildError(f"building the Lambda layer failed:\n{result.stderr[-4000:]}")
        return True


def layer_fingerprint(lock: Path, python_version: str) -> str:
    """The layer's asset hash: the lock's bytes, the CPython and the platform — all it depends on."""
    return hashlib.sha256(lock.read_bytes() + f"|{python_version}|{LAYER_PLATFORM}".encode()).hexdigest()


def code_asset(project_root: Path) -> lambda_.AssetCode:
    """The functions' code: the `runtime` package of `project_root`, without caches or tests."""
    return lambda_.Code.from_asset(
        str(project_root), ignore_mode=cdk.IgnoreMode.DOCKER, exclude=CODE_EXCLUDES
    )


def dependency_layer(
    scope: Construct, construct_id: str, python_version: str, lock: Path | None = None
) -> lambda_.LayerVersion:
    runtime = PYTHON_RUNTIMES[python_version]
    lock = lock or layer_lock(python_version)
    code = lambda_.Code.from_asset(
        str(lock.parent),
        ignore_mode=cdk.IgnoreMode.DOCKER,
        exclude=["*", f"!{lock.name}"],
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        asset_hash=layer_fingerprint(lock, python_version),
        bundling=cdk.BundlingOptions(
            # `image` is required by the API and never used: the local bundler either installs
            # the lock or raises, it never returns False, so CDK never falls back to Docker. No
            # `command` either, so nothing here could install unpinned packages.
            image=cdk.DockerImage.from_registry(f"public.ecr.aws/sam/build-python{python_version}"),
            local=PipPlatformBundling(lock, python_version),
        ),
    )
    return lambda_.LayerVersion(
        scope,
        construct_id,
        code=code,
        compatible_architectures=[lambda_.Architecture.ARM_64],
        compatible_runtimes=[runtime],
        description=f"sluice runtime dependencies ({lock.name}) for Python {python_version} arm64",
    )


def ledger_key_names(table: dynamodb.ITable) -> tuple[str, str]:
    """The ledger's partition and sort key names ("" without a sort key), read from the table
    the stateful stack declares, so delivery records always fit its key schema."""
    if not isinstance(table, dynamodb.Table):
        raise TypeError("the relay needs the ledger as a dynamodb.Table to read its key schema")
    schema = table.schema_v2()
    partition_keys, sort_keys = schema.partition_keys, schema.sort_keys or []
    if len(partition_keys) != 1 or len(sort_keys) > 1:
        raise TypeError(
            "the relay's delivery records need a ledger with one partition key, at most one sort key"
        )
    return partition_keys[0].name, sort_keys[0].name if sort_keys else ""


@dataclass(frozen=True)
class FunctionSpec:
    """What differs between sluice functions; everything else comes from the factory."""

    name: str  # the config key (functions.reserved_concurrency) and the construct id
    handler: str
    timeout_s: int
    description: str
    mount_efs: bool = False
    memory_mb: int | None = None
    # The settings sections it reads besides queues and Redis (stacks.contract.SECTIONS).
    sections: frozenset[str] = frozenset()
    # Actions this function is granted on Resource "*" beyond the factory's own (X-Ray, the EFS
    # mount), each with why: they become its IAM5 acknowledgment's reason, and a template test
    # holds every function's wildcard actions to exactly these.
    wildcard_actions: tuple[tuple[str, str], ...] = ()

    @property
    def construct_id(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("-"))


class FunctionFactory(Construct):
    """Builds every sluice Lambda of one stateless stack from a `FunctionSpec`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, shared: SharedResources
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.shared = shared
        self.runtime = PYTHON_RUNTIMES[config.functions.python_version]
        self.layer = dependency_layer(self, "DependencyLayer", config.functions.python_version)
        self.code = code_asset(PROJECT_ROOT)
        self.results_bucket = read_bucket(self, "ResultsBucket", shared.outputs, "Results")
        self.removal_policy = cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY
        # Every function the factory builds, and its error alarm (no function goes unwatched).
        self.functions: dict[str, lambda_.Function] = {}
        self.error_alarms: dict[str, cloudwatch.Alarm] = {}

    # -- the environment contract ---------------------------------------------------------------

    def resources(self) -> Resources:
        shared = self.shared
        return Resources(
            state_url=shared.state_queue.queue_url,
            state_dlq_url=shared.state_dlq.queue_url,
            fifo_url=shared.fifo_queue.queue_url,
            fifo_dlq_url=shared.fifo_dlq.queue_url,
            ledger_table=shared.ledger_table.table_name,
            results_bucket=self.results_bucket.bucket_name,
            ingest_root=EFS_MOUNT_PATH,
        )

    def relay_resources(self) -> RelayResources | None:
        """Where the relay keeps its messages and delivery records (None: no relay)."""
        shared = self.shared
        if shared.relay is None:
            return None
        partition_key, sort_key = ledger_key_names(shared.ledger_table)
        return RelayResources(
            queue_url=shared.relay.queue.queue_url,
            dlq_url=shared.relay.dead_letter_queue.queue_url,
            ledger_table=shared.ledger_table.table_name,
            ledger_partition_key=partition_key,
            ledger_sort_key=sort_key,
            ledger_ttl_attribute=LEDGER_TTL_ATTRIBUTE,
        )

    def settings(self, sections: frozenset[str]) -> FunctionSettings:
        """The settings a function with these sections validates at run time."""
        shared = self.shared
        redis = RedisSettings(
            host=shared.redis_host,
            port=shared.redis_port,
            tls=True,
            auth_secret_arn=shared.redis_auth_secret.secret_arn,
        )
        return function_settings(self.config, self.resources(), redis, sections, self.relay_resources())

    def environment(self, spec: FunctionSpec) -> dict[str, str]:
        """Every variable the function gets: its settings and the Powertools names. The only
        place a function's environment is built."""
        environment = {
            **to_environ(self.settings(spec.sections)),
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        }
        check_environment_size(spec.name, environment)
        return environment

    # -- the function ---------------------------------------------------------------------------

    def create(self, scope: Construct, spec: FunctionSpec) -> lambda_.Function:
        functions = self.config.functions
        log_group = logs.LogGroup(
            scope,
            f"{spec.construct_id}Logs",
            retention=log_retention(functions.log_retention_days),
            removal_policy=self.removal_policy,
        )
        filesystem = (
            lambda_.FileSystem.from_efs_access_point(self.shared.access_point, EFS_MOUNT_PATH)
            if spec.mount_efs
            else None
        )
        function = lambda_.Function(
            scope,
            spec.construct_id,
            description=spec.description,
            runtime=self.runtime,
            architecture=lambda_.Architecture.ARM_64,
            handler=spec.handler,
            code=self.code,
            layers=[self.layer],
            timeout=cdk.Duration.seconds(spec.timeout_s),
            memory_size=spec.memory_mb or functions.memory_mb,
            tracing=lambda_.Tracing.ACTIVE if functions.tracing else lambda_.Tracing.DISABLED,
            vpc=self.shared.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[self.shared.functions_security_group],
            filesystem=filesystem,
            log_group=log_group,
            environment=self.environment(spec),
            # Unset unless config asks: a reservation must leave 100 unreserved in the account.
            reserved_concurrent_executions=functions.reserved_concurrency.get(spec.name),
        )
        self._acknowledge_common(function, self.wildcard_actions(spec))
        self.functions[spec.name] = function
        self.error_alarms[spec.name] = error_rate_alarm(
            scope,
            f"{spec.construct_id}Errors",
            function,
            percent=self.config.alarms.error_rate_percent,
            what=spec.name,
        )
        return function

    def wildcard_actions(self, spec: FunctionSpec) -> dict[str, str]:
        """Every action the function holds on Resource "*", with the reason."""
        actions: dict[str, str] = {}
        if self.config.functions.tracing:
            reason = "X-Ray accepts no resource for sending traces (functions.tracing)"
            actions |= {"xray:PutTraceSegments": reason, "xray:PutTelemetryRecords": reason}
        if spec.mount_efs:
            actions["elasticfilesystem:ClientMount"] = (
                "Lambda's file system grant, conditioned on the sluice access point's ARN"
            )
        return actions | dict(spec.wildcard_actions)

    def _acknowledge_common(self, function: lambda_.Function, wildcard_actions: dict[str, str]) -> None:
        if wildcard_actions:
            reasons = "; ".join(f"{action}: {why}" for action, why in sorted(wildcard_actions.items()))
            acknowledge(
                function,
                Ack(
                    "AwsSolutions-IAM5",
                    f"actions on Resource '*', each with why: {reasons}",
                    ("Resource::*",),
                ),
            )
        acknowledge(
            function,
            Ack(
                "AwsSolutions-IAM4",
                "AWS managed Lambda execution policies: basic (write its own log streams) and VPC "
                "access (create/delete its ENIs, which take no resource-level restriction)",
                (
                    managed_policy_finding(function, LAMBDA_BASIC_EXECUTION),
                    managed_policy_finding(function, LAMBDA_VPC_ACCESS),
                ),
            ),
            Ack(
                "AwsSolutions-L1",
                f"runtime pinned by functions.python_version ({self.config.functions.python_version}): "
                "the dependency layer's wheels are built for exactly that CPython",
            ),
            Ack(
                "Serverless-LambdaLatestVersion",
                f"runtime pinned by functions.python_version ({self.config.functions.python_version}): "
                "the dependency layer's wheels are built for exactly that CPython",
            ),
        )
