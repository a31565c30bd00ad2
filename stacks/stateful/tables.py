"""The DynamoDB tables: the router's ledger (create-only outcome plans, expiring after the
dedup horizon) and the relay's source table, whose stream feeds the relay function."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb

from runtime.declarations.names import (
    LEDGER_PARTITION_KEY,
    LEDGER_TTL_ATTRIBUTE,
    SOURCE_PARTITION_KEY,
    SOURCE_SORT_KEY,
)
from stacks.config import EnvironmentConfig


@dataclass(frozen=True)
class TableFactory:
    """Creates tables in `stack`'s own scope, all alike but for their keys."""

    stack: cdk.Stack
    config: EnvironmentConfig
    removal_policy: cdk.RemovalPolicy

    def table(
        self, construct_id: str, partition_key: str, sort_key: str | None, **kwargs: object
    ) -> dynamodb.Table:
        return dynamodb.Table(
            self.stack,
            construct_id,
            partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=sort_key, type=dynamodb.AttributeType.STRING)
            if sort_key
            else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=self.config.retain_data,
            removal_policy=self.removal_policy,
            **kwargs,  # type: ignore[arg-type]
        )

    def ledger(self) -> dynamodb.Table:
        """The router's create-only outcome plans; items expire after the dedup horizon."""
        return self.table("Ledger", LEDGER_PARTITION_KEY, None, time_to_live_attribute=LEDGER_TTL_ATTRIBUTE)

    def relay_source(self) -> dynamodb.Table:
        """The relay's source: its stream feeds the relay function (INSERTs, filtered at the ESM)."""
        return self.table(
            "RelaySource", SOURCE_PARTITION_KEY, SOURCE_SORT_KEY, stream=dynamodb.StreamViewType.NEW_IMAGE
        )
