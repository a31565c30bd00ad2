"""One local environment: the servers (started here, or given by URL), the share directory,
the AWS resources created from the config, and the process environment every handler reads.

Handlers run in this process, so the environment is exported into `os.environ` (and restored
on exit): the `SLUICE_*` settings the stacks would set, `AWS_ENDPOINT_URL` (boto3 sends every
client there) and fake credentials that can never reach a real account.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.faults import FaultProxy, SqsFaults, fault_proxy
from local.relay import ApiStub
from local.resources import Provisioned, function_settings, provision
from local.servers import FAKE_AWS_ENVIRONMENT, MotoServer, RedisServer, running_moto, running_redis
from runtime.clients import AWS_CLIENT_CONFIG, aws_client, new_session
from runtime.config import Settings, get_settings, to_environ
from stacks.config import EnvironmentConfig, _deep_merge, load_environment
from stacks.validation import validate_for_synth

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = REPO_ROOT / "cdk.json"
SHARE_DIRECTORIES = ("inbox", "claimed", "processed", "archive", "halted", "rejected")


def load_local_config(env: str = "dev", overrides: Mapping[str, Any] | None = None) -> EnvironmentConfig:
    """`env` from cdk.json with the `local` block overlaid, then `overrides` (same validation)."""
    context = json.loads(CDK_JSON.read_text())["context"]["sluice"]
    if overrides:
        context = {**context, "local": _deep_merge(context.get("local") or {}, overrides)}
    config = load_environment(context, env, local=True)
    # docs/architecture.md#the-local-runtime: the local block follows the same rules as a
    # deploy (bar what ships to Lambda).
    validate_for_synth(config, deployed=False)
    return config


class AwsClients:
    """boto3 clients on one endpoint, one per service (boto3 clients are thread-safe; the Session
    that makes them is not, hence the lock)."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self._session = new_session()
        self._lock = threading.Lock()

    @functools.cache  # noqa: B019 - lives as long as the environment
    def __call__(self, service: str) -> Any:
        with self._lock:
            return self._session.client(  # type: ignore[call-overload]
                service,
                endpoint_url=self.endpoint_url,
                region_name=FAKE_AWS_ENVIRONMENT["AWS_REGION"],
                config=AWS_CLIENT_CONFIG,
            )


@dataclass
class LocalEnvironment:
    config: EnvironmentConfig
    provisioned: Provisioned
    settings: Settings
    share: Path
    redis_url: str
    client: AwsClients
    redis_server: RedisServer | None = None
    moto_server: MotoServer | None = None
    fault_proxy: FaultProxy | None = None
    api_stub: ApiStub | None = None

    @property
    def aws_endpoint_url(self) -> str:
        return self.client.endpoint_url


@contextmanager
def _exported(environ: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in environ}
    os.environ.update(environ)
    # Settings and clients are cached per process on first use: drop anything cached before.
    get_settings.cache_clear()
    aws_client.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        aws_client.cache_clear()


def make_share(root: Path) -> Path:
    for directory in SHARE_DIRECTORIES:
        (root / directory).mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def local_environment(
    *,
    config: EnvironmentConfig,
    share: Path | None = None,
    redis_url: str | None = None,
    aws_endpoint_url: str | None = None,
    redis_appendonly: bool = False,
    sqs_faults: SqsFaults | None = None,
    api_stub: bool = False,
) -> Iterator[LocalEnvironment]:
    """Start what is not given, provision, export the environment; undo it all on exit.
    `sqs_faults` puts a fault-injecting proxy between the functions and SQS (`local.faults`)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with ExitStack() as stack:
        redis_server = None
        if redis_url is None:
            redis_server = stack.enter_context(running_redis(appendonly=redis_appendonly))
            redis_url = redis_server.url
        moto_server = None
        if aws_endpoint_url is None:
            moto_server = stack.enter_context(running_moto())
            aws_endpoint_url = moto_server.url
        if share is None:
            share = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sluice-share-")))
        make_share(share)
        # A shared moto server may hold another run's resources: give ours their own names.
        instance = "" if moto_server is not None else secrets.token_hex(3)
        # The functions' clients reach moto through the fault proxy when faults are injected;
        # the runtime's own clients (provisioning, observing) always talk to moto directly.
        proxy = None
        if sqs_faults is not None and sqs_faults.active:
            proxy = stack.enter_context(fault_proxy(aws_endpoint_url, sqs_faults))
        functions_endpoint = proxy.url if proxy is not None else aws_endpoint_url
        stack.enter_context(_exported({**FAKE_AWS_ENVIRONMENT, "AWS_ENDPOINT_URL": functions_endpoint}))
        clients = AwsClients(aws_endpoint_url)
        provisioned = provision(clients, config, instance)
        # The relay's third-party API: a stub on loopback, started before the settings that
        # point the drain at it.
        stub = stack.enter_context(ApiStub()) if api_stub else None
        settings = function_settings(
            config, provisioned, redis_url=redis_url, share=share, relay_api_url=stub.url if stub else ""
        )
        stack.enter_context(_exported(to_environ(settings)))
        yield LocalEnvironment(
            config=config,
            provisioned=provisioned,
            settings=settings,
            share=share,
            redis_url=redis_url,
            client=clients,
            redis_server=redis_server,
            moto_server=moto_server,
            fault_proxy=proxy,
            api_stub=stub,
        )
