"""ElastiCache Redis: TLS, AUTH (a generated token in Secrets Manager), `noeviction`, in the
isolated subnets behind a security group that admits only the functions."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager

from stacks.config import EnvironmentConfig
from stacks.nag import Ack, acknowledge
from stacks.stateful.network import Network

REDIS_PORT = 6379


@dataclass(frozen=True)
class Cache:
    security_group: ec2.SecurityGroup
    auth_secret: secretsmanager.Secret
    group: elasticache.CfnReplicationGroup

    @property
    def host(self) -> str:
        return self.group.attr_primary_end_point_address


def build_cache(
    stack: cdk.Stack, config: EnvironmentConfig, network: Network, removal_policy: cdk.RemovalPolicy
) -> Cache:
    """The replication group and its AUTH secret, in `stack`'s own scope."""
    redis = config.redis
    security_group = network.admitting(
        stack,
        "RedisSecurityGroup",
        "sluice Redis: only the functions group, on the Redis port",
        REDIS_PORT,
        ((network.functions_security_group, "sluice functions to Redis (TLS + AUTH)"),),
    )
    # ElastiCache AUTH tokens accept only !&#$^<>- as punctuation: generate without any.
    auth_secret = secretsmanager.Secret(
        stack,
        "RedisAuthToken",
        description=f"sluice {config.name}: ElastiCache Redis AUTH token",
        generate_secret_string=secretsmanager.SecretStringGenerator(
            exclude_punctuation=True, password_length=64
        ),
        removal_policy=removal_policy,
    )
    subnet_group = elasticache.CfnSubnetGroup(
        stack,
        "RedisSubnets",
        description="sluice Redis: isolated data subnets",
        subnet_ids=network.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids,
    )
    # Redis only coordinates (docs/architecture.md#where-state-lives): it must refuse writes when full
    # rather than silently evict leases that carry a TTL, so the memory alarm can act.
    parameters = elasticache.CfnParameterGroup(
        stack,
        "RedisParameters",
        cache_parameter_group_family=f"redis{redis.engine_version.split('.')[0]}",
        description="sluice Redis: noeviction",
        properties={"maxmemory-policy": "noeviction"},
    )
    group = elasticache.CfnReplicationGroup(
        stack,
        "Redis",
        replication_group_description=f"sluice {config.name} coordination (leases, markers)",
        engine="redis",
        engine_version=redis.engine_version,
        cache_node_type=redis.node_type,
        num_cache_clusters=1 + redis.replicas,
        automatic_failover_enabled=redis.multi_az,
        multi_az_enabled=redis.multi_az,
        transit_encryption_enabled=True,
        transit_encryption_mode="required",
        at_rest_encryption_enabled=True,
        auth_token=auth_secret.secret_value.unsafe_unwrap(),
        port=REDIS_PORT,
        cache_subnet_group_name=subnet_group.ref,
        cache_parameter_group_name=parameters.ref,
        security_group_ids=[security_group.security_group_id],
    )
    acknowledge(
        group,
        Ack(
            "AwsSolutions-AEC5",
            "6379 is the port every Redis client assumes; access is limited by a security group "
            "that admits only the functions' group, TLS is required and AUTH is on",
        ),
    )
    if not redis.multi_az:
        acknowledge(
            group,
            Ack(
                "AwsSolutions-AEC4",
                f"environment {config.name!r} runs a single node by config (redis.multi_az false); "
                "Redis only coordinates, so losing it costs repeated work, never records",
            ),
        )
    acknowledge(
        auth_secret,
        Ack(
            "AwsSolutions-SMG4",
            "rotating an ElastiCache AUTH token needs a coordinated ModifyReplicationGroup "
            "(AuthTokenUpdateStrategy ROTATE, wait the clients' 5-minute token cache, SET); done as an "
            "operator runbook, not by a generic rotation Lambda",
        ),
    )
    return Cache(security_group=security_group, auth_secret=auth_secret, group=group)
