"""Template tests of the stateful stack: the security-relevant properties of every resource and
what differs between dev and prod. Each environment's app is built once per module; asset
bundling is skipped."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from stacks.stage import SluiceStage
from tests.support.stacks import AGNOSTIC, build_stage


@pytest.fixture(scope="module")
def dev_t(dev: SluiceStage) -> Template:
    return Template.from_stack(dev.stateful)


@pytest.fixture(scope="module")
def prod_t(prod: SluiceStage) -> Template:
    return Template.from_stack(prod.stateful)


def only(template: Template, kind: str, props: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    found = template.find_resources(kind, {"Properties": props} if props else None)
    assert len(found) == 1, f"expected one {kind} matching {props}, found {len(found)}"
    return next(iter(found.items()))


def logical_id_of(template: Template, kind: str, props: dict[str, Any]) -> str:
    return only(template, kind, props)[0]


# -- network --------------------------------------------------------------------------------------


def test_nat_gateways_and_azs_follow_the_environment(dev_t: Template, prod_t: Template) -> None:
    dev_t.resource_count_is("AWS::EC2::NatGateway", 1)
    prod_t.resource_count_is("AWS::EC2::NatGateway", 3)
    # public + private-with-egress + isolated, per AZ
    dev_t.resource_count_is("AWS::EC2::Subnet", 6)
    prod_t.resource_count_is("AWS::EC2::Subnet", 9)


def test_gateway_and_interface_endpoints(dev_t: Template) -> None:
    endpoints = dev_t.find_resources("AWS::EC2::VPCEndpoint")
    services = json.dumps([resource["Properties"]["ServiceName"] for resource in endpoints.values()])
    kinds = sorted(
        resource["Properties"].get("VpcEndpointType", "Gateway") for resource in endpoints.values()
    )
    for service in (".s3", ".dynamodb", ".sqs", ".ssm", ".secretsmanager"):
        assert service in services
    assert kinds == ["Gateway", "Gateway", "Interface", "Interface", "Interface"]
    # Interface endpoints admit only the functions' and the writer's groups, never a CIDR.
    dev_t.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {"VpcEndpointType": "Interface", "PrivateDnsEnabled": True, "SecurityGroupIds": Match.any_value()},
    )


def test_vpc_flow_logs_record_rejected_traffic(dev_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::EC2::FlowLog", {"TrafficType": "REJECT", "LogDestinationType": "cloud-watch-logs"}
    )


# -- Redis ----------------------------------------------------------------------------------------


def test_redis_is_encrypted_with_auth_from_secrets_manager(dev_t: Template) -> None:
    _, group = only(dev_t, "AWS::ElastiCache::ReplicationGroup")
    props = group["Properties"]
    assert props["TransitEncryptionEnabled"] is True
    assert props["TransitEncryptionMode"] == "required"
    assert props["AtRestEncryptionEnabled"] is True
    assert props["Port"] == 6379
    assert "{{resolve:secretsmanager:" in json.dumps(props["AuthToken"])
    dev_t.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"GenerateSecretString": Match.object_like({"ExcludePunctuation": True})},
    )


def test_redis_parameter_group_never_evicts(dev_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::ElastiCache::ParameterGroup", {"Properties": {"maxmemory-policy": "noeviction"}}
    )


def test_redis_admits_only_the_functions_group(dev_t: Template) -> None:
    functions_sg = logical_id_of(
        dev_t,
        "AWS::EC2::SecurityGroup",
        {"GroupDescription": Match.string_like_regexp("^sluice Lambda functions")},
    )
    redis_sg = logical_id_of(
        dev_t, "AWS::EC2::SecurityGroup", {"GroupDescription": Match.string_like_regexp("^sluice Redis")}
    )
    rules = dev_t.find_resources(
        "AWS::EC2::SecurityGroupIngress", {"Properties": {"GroupId": {"Fn::GetAtt": [redis_sg, "GroupId"]}}}
    )
    assert [rule["Properties"]["SourceSecurityGroupId"] for rule in rules.values()] == [
        {"Fn::GetAtt": [functions_sg, "GroupId"]}
    ]
    assert [(rule["Properties"]["FromPort"], rule["Properties"]["ToPort"]) for rule in rules.values()] == [
        (6379, 6379)
    ]
    _, group = only(
        dev_t, "AWS::EC2::SecurityGroup", {"GroupDescription": Match.string_like_regexp("^sluice Redis")}
    )
    assert "SecurityGroupIngress" not in group["Properties"]  # no inline (CIDR) rules


def test_redis_size_and_failover_follow_the_environment(dev_t: Template, prod_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::ElastiCache::ReplicationGroup",
        {
            "CacheNodeType": "cache.t4g.micro",
            "NumCacheClusters": 1,
            "AutomaticFailoverEnabled": False,
            "MultiAZEnabled": False,
        },
    )
    prod_t.has_resource_properties(
        "AWS::ElastiCache::ReplicationGroup",
        {
            "CacheNodeType": "cache.r7g.large",
            "NumCacheClusters": 3,
            "AutomaticFailoverEnabled": True,
            "MultiAZEnabled": True,
        },
    )


# -- EFS ------------------------------------------------------------------------------------------


def test_efs_is_encrypted_with_the_configured_throughput(dev_t: Template, prod_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::EFS::FileSystem",
        {"Encrypted": True, "ThroughputMode": "elastic", "ProvisionedThroughputInMibps": Match.absent()},
    )
    prod_t.has_resource_properties(
        "AWS::EFS::FileSystem",
        {"Encrypted": True, "ThroughputMode": "provisioned", "ProvisionedThroughputInMibps": 128},
    )


def test_bursting_throughput_mode() -> None:
    template = Template.from_stack(
        build_stage("dev", {"ingest": {"efs_throughput_mode": "bursting"}}).stateful
    )
    template.has_resource_properties("AWS::EFS::FileSystem", {"ThroughputMode": "bursting"})


def test_efs_requires_tls_from_every_client(dev_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::EFS::FileSystem",
        {
            "FileSystemPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Principal": {"AWS": "*"},
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_efs_access_point_posix_identity_and_root(dev_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::EFS::AccessPoint",
        {
            "PosixUser": {"Uid": "1000", "Gid": "1000"},
            "RootDirectory": {
                "Path": "/sluice",
                "CreationInfo": {"OwnerUid": "1000", "OwnerGid": "1000", "Permissions": "750"},
            },
        },
    )


def test_efs_mount_targets_admit_functions_and_writer_on_nfs_only(dev_t: Template) -> None:
    efs_sg = logical_id_of(
        dev_t,
        "AWS::EC2::SecurityGroup",
        {"GroupDescription": Match.string_like_regexp("^sluice EFS mount targets")},
    )
    rules = dev_t.find_resources(
        "AWS::EC2::SecurityGroupIngress", {"Properties": {"GroupId": {"Fn::GetAtt": [efs_sg, "GroupId"]}}}
    )
    assert len(rules) == 2
    assert {rule["Properties"]["FromPort"] for rule in rules.values()} == {2049}
    assert all("SourceSecurityGroupId" in rule["Properties"] for rule in rules.values())


def test_outputs_for_the_writer_container(dev_t: Template) -> None:
    outputs = dev_t.to_json()["Outputs"]
    descriptions = " ".join(output.get("Description", "") for output in outputs.values())
    assert "EFS file system the writer container mounts" in descriptions
    assert "EFS access point" in descriptions
    assert "security group the writer container joins" in descriptions


# -- queues ---------------------------------------------------------------------------------------


def test_every_queue_has_sse_sqs_and_denies_plain_http(dev_t: Template) -> None:
    queues = dev_t.find_resources("AWS::SQS::Queue")
    assert len(queues) == 6  # state, router FIFO and relay FIFO, each with its DLQ
    assert all(queue["Properties"]["SqsManagedSseEnabled"] is True for queue in queues.values())
    policies = dev_t.find_resources(
        "AWS::SQS::QueuePolicy",
        {
            "Properties": {
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                            )
                        ]
                    )
                }
            }
        },
    )
    assert len(policies) == 6


def test_every_queue_takes_what_the_loader_packs(dev: SluiceStage, dev_t: Template) -> None:
    """Issue 22: a queue left below queues.max_message_bytes refused the loader's parts forever."""
    queues = dev_t.find_resources("AWS::SQS::Queue")
    limit = dev.config.queues.max_message_bytes
    assert {queue["Properties"]["MaximumMessageSize"] for queue in queues.values()} == {limit}


def test_redrive_counts_visibility_and_retention(dev: SluiceStage, dev_t: Template) -> None:
    pipeline, queues = dev.config.pipeline, dev.config.queues
    visibility = 6 * pipeline.timeout_s + pipeline.batching_window_s
    dev_t.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "FifoQueue": Match.absent(),
            "VisibilityTimeout": visibility,
            "MessageRetentionPeriod": queues.retention_s,
            "RedrivePolicy": {
                "deadLetterTargetArn": Match.any_value(),
                "maxReceiveCount": pipeline.standard_max_receive_count,
            },
        },
    )
    dev_t.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "FifoQueue": True,
            "ContentBasedDeduplication": False,
            "VisibilityTimeout": visibility,
            "RedrivePolicy": {
                "deadLetterTargetArn": Match.any_value(),
                "maxReceiveCount": 10 * pipeline.max_attempts + pipeline.fifo_bounce_allowance,
            },
        },
    )
    dev_t.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "FifoQueue": True,
            "ContentBasedDeduplication": False,
            "VisibilityTimeout": 6 * dev.config.relay.drain_timeout_s,
            "MessageRetentionPeriod": 14 * 86_400,  # the drain dead-letters long before
            "RedrivePolicy": {"deadLetterTargetArn": Match.any_value(), "maxReceiveCount": 1000},
        },
    )
    dlqs = dev_t.find_resources("AWS::SQS::Queue", {"Properties": {"RedrivePolicy": Match.absent()}})
    assert sorted(str(q["Properties"].get("FifoQueue", False)) for q in dlqs.values()) == [
        "False",
        "True",
        "True",
    ]
    assert {q["Properties"]["MessageRetentionPeriod"] for q in dlqs.values()} == {queues.dlq_retention_s}


# -- bucket and tables ----------------------------------------------------------------------------


def test_results_bucket_is_private_encrypted_logged_and_aged(dev_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LoggingConfiguration": {"DestinationBucketName": Match.any_value(), "LogFilePrefix": "results/"},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like({"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}),
                        Match.object_like(
                            {"Transitions": [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]}
                        ),
                    ]
                )
            },
        },
    )
    ssl_only = dev_t.find_resources(
        "AWS::S3::BucketPolicy",
        {
            "Properties": {
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                            )
                        ]
                    )
                }
            }
        },
    )
    assert len(ssl_only) == 3  # results, access logs, relay failures: every bucket


def test_ledger_table_on_demand_ttl_pitr(dev_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        },
    )


def test_relay_source_table_streams_new_images(dev_t: Template) -> None:
    dev_t.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "StreamSpecification": {"StreamViewType": "NEW_IMAGE"},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    )


# -- what differs between environments -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "count"),
    [
        ("AWS::DynamoDB::Table", 2),
        ("AWS::S3::Bucket", 3),  # results, access logs, relay failures
        ("AWS::EFS::FileSystem", 1),
        ("AWS::SQS::Queue", 6),
    ],
)
def test_removal_policy_follows_retain_data(dev_t: Template, prod_t: Template, kind: str, count: int) -> None:
    assert len(dev_t.find_resources(kind, {"DeletionPolicy": "Delete"})) == count
    assert len(prod_t.find_resources(kind, {"DeletionPolicy": "Retain"})) == count


def test_prod_tables_have_deletion_protection(dev_t: Template, prod_t: Template) -> None:
    assert (
        len(
            prod_t.find_resources("AWS::DynamoDB::Table", {"Properties": {"DeletionProtectionEnabled": True}})
        )
        == 2
    )
    assert (
        len(dev_t.find_resources("AWS::DynamoDB::Table", {"Properties": {"DeletionProtectionEnabled": True}}))
        == 0
    )


def test_termination_protection_only_in_prod(dev: SluiceStage, prod: SluiceStage) -> None:
    assert prod.stateful.termination_protection is True
    assert dev.stateful.termination_protection is False


def test_flow_log_retention_follows_the_environment(dev_t: Template, prod_t: Template) -> None:
    dev_t.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 14})
    prod_t.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 365})


def test_an_environment_agnostic_synth_has_no_account_region_or_arn_literals() -> None:
    for env in ("dev", "prod"):
        text = json.dumps(Template.from_stack(build_stage(env, target=AGNOSTIC).stateful).to_json())
        assert "arn:aws:" not in text
        assert "us-east-1" not in text
