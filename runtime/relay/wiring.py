"""How the relay system is put together: `build_relay` (the stream function) and `build_drain`
(the scheduled drain), the one wiring the Lambda handlers, the local runtime and the tests
share, and the clients each function makes from its environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.clients import aws_client, make_redis
from runtime.config import Settings
from runtime.relay.api import ApiClient
from runtime.relay.breaker import AttemptCounter, BreakerPolicy, CallBudget, CircuitBreaker
from runtime.relay.drain import Drain, check_drain_settings
from runtime.relay.keys import ApiKeySource
from runtime.relay.ledger import DeliveryLedger
from runtime.relay.stream import StreamRelay


@dataclass(frozen=True, slots=True)
class RelayClients:
    """What the relay function talks to: SQS (the relay FIFO queue)."""

    sqs: Any


@dataclass(frozen=True, slots=True)
class DrainClients:
    """What the drain talks to: SQS (the relay FIFO queue and its DLQ), DynamoDB (the delivery
    ledger), Redis (breaker, call budget, attempts) and SSM (the API key)."""

    sqs: Any
    dynamodb: Any
    redis: Any
    ssm: Any


def build_relay(settings: Settings, clients: RelayClients) -> StreamRelay:
    relay = settings.require_relay()
    return StreamRelay(
        sqs=clients.sqs,
        queue_url=relay.fifo_url,
        group_key_field=relay.group_key_field,
        max_message_bytes=settings.queues.max_message_bytes,
    )


def build_drain(settings: Settings, clients: DrainClients) -> Drain:
    """A drain over the given clients (its API key cached for `api_key_cache_s` by this drain,
    so keep the drain for as long as the key may be reused)."""
    relay = check_drain_settings(settings.require_relay())
    return Drain(
        sqs=clients.sqs,
        ledger=DeliveryLedger(clients.dynamodb, relay),
        api=ApiClient(relay),
        api_key=ApiKeySource(clients.ssm, relay.api_key_parameter, relay.api_key_cache_s),
        breaker=CircuitBreaker(
            clients.redis,
            BreakerPolicy(
                failure_threshold=relay.breaker_failure_threshold,
                backoff_base_s=relay.breaker_backoff_base_s,
                backoff_cap_s=relay.breaker_backoff_cap_s,
            ),
        ),
        budget=CallBudget(clients.redis, relay.calls_per_minute, relay.burst_calls),
        settings=relay,
        attempts=AttemptCounter(clients.redis, relay.max_age_s),
    )


def relay_clients_from_environment() -> RelayClients:
    return RelayClients(sqs=aws_client("sqs"))


def drain_clients_from_environment(settings: Settings) -> DrainClients:
    return DrainClients(
        sqs=aws_client("sqs"),
        dynamodb=aws_client("dynamodb"),
        redis=make_redis(settings.redis),
        ssm=aws_client("ssm"),
    )
