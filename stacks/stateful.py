"""The stateful stack: everything that holds data or addresses others depend on.

VPC (public subnets for the NAT gateways, private subnets with egress for the functions,
isolated subnets for Redis and the EFS mount targets), gateway endpoints for S3 and DynamoDB
(free, and they keep the heaviest traffic off the NAT), interface endpoints from config,
ElastiCache Redis (TLS, AUTH, `noeviction`), the EFS inbox with its access point, the queues and
their DLQs, the results bucket and the DynamoDB tables. Removal policies follow
`config.retain_data`; termination protection follows `config.termination_protection`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_efs as efs
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime.pipeline import ledger
from stacks.config import RELAY_QUEUE_RETENTION_S, SQS_MAX_RECEIVE_COUNT, EnvironmentConfig
from stacks.contract import SOURCE_PARTITION_KEY, SOURCE_SORT_KEY
from stacks.nag import Ack, acknowledge
from stacks.notifications import AlarmNotifications
from stacks.references import publish_bucket
from stacks.retention import log_retention

REDIS_PORT = 6379
NFS_PORT = 2049
EFS_ROOT = "/sluice"
EFS_POSIX_ID = "1000"
# Read-write through the access point; never ClientRootAccess (it maps every client to uid 1000).
MOUNT_ACTIONS = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
# The ledger's item layout is the runtime's (runtime/pipeline/ledger.py writes it): one string
# partition key and an epoch-seconds TTL. The relay source table is the user's: pk + sk.
LEDGER_PARTITION_KEY = ledger.PARTITION_KEY
LEDGER_TTL_ATTRIBUTE = ledger.TTL_ATTRIBUTE

INTERFACE_ENDPOINTS = {
    "sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "secretsmanager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
}

EFS_THROUGHPUT_MODES = {
    "bursting": efs.ThroughputMode.BURSTING,
    "elastic": efs.ThroughputMode.ELASTIC,
    "provisioned": efs.ThroughputMode.PROVISIONED,
}


@dataclass(frozen=True)
class RelayStorage:
    """What the relay needs from the stateful stack (built only when relay.enabled). Its failure
    bucket is read through the stack's outputs (stacks/references.py), not from here."""

    queue: sqs.Queue
    dead_letter_queue: sqs.Queue
    source_table: dynamodb.Table


class StatefulStack(cdk.Stack):
    """Data and network of one environment; exposes typed attributes for the stateless stack."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, **kwargs: object
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            termination_protection=config.termination_protection,
            description=f"sluice {config.name}: network, Redis, EFS inbox, queues, bucket, tables",
            **kwargs,  # type: ignore[arg-type]
        )
        self.config = config
        self.removal_policy = cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY

        self._build_network()
        self._build_redis()
        self._build_file_system()
        self._restrict_function_egress()
        self._build_queues()
        self._build_bucket()
        self._build_tables()
        self.relay = self._build_relay_resources() if config.relay.enabled else None
        self.notifications = AlarmNotifications(
            self, "AlarmNotifications", config=config, removal_policy=self.removal_policy
        )

    @property
    def availability_zones(self) -> list[str]:
        # An environment-agnostic stack (synth without credentials) would otherwise get two AZs
        # whatever max_azs says; Fn::GetAZs picks the real ones at deploy time.
        return [cdk.Fn.select(index, cdk.Fn.get_azs()) for index in range(self.config.network.max_azs)]

    # -- network ----------------------------------------------------------------------------

    def _build_network(self) -> None:
        network = self.config.network
        flow_log_group = logs.LogGroup(
            self,
            "VpcFlowLogs",
            retention=log_retention(self.config.functions.log_retention_days),
            removal_policy=self.removal_policy,
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=network.max_azs,
            nat_gateways=network.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
                ec2.SubnetConfiguration(
                    name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                ),
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
            flow_logs={
                "Rejected": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                )
            },
        )
        self.functions_security_group = ec2.SecurityGroup(
            self,
            "FunctionsSecurityGroup",
            vpc=self.vpc,
            description="sluice Lambda functions (admitted by Redis and the EFS mount targets)",
            # Egress is opened port by port once Redis and EFS exist (_restrict_function_egress).
            allow_all_outbound=False,
        )
        self.writer_security_group = ec2.SecurityGroup(
            self,
            "WriterSecurityGroup",
            vpc=self.vpc,
            description="join this group to mount the sluice EFS inbox (the writer container)",
            allow_all_outbound=True,
        )
        self._build_interface_endpoints()

    def _build_interface_endpoints(self) -> None:
        endpoints_security_group = ec2.SecurityGroup(
            self,
            "EndpointsSecurityGroup",
            vpc=self.vpc,
            description="sluice interface endpoints: HTTPS from the functions and the writer container",
            allow_all_outbound=False,
        )
        for peer, who in (
            (self.functions_security_group, "sluice functions"),
            (self.writer_security_group, "the writer container"),
        ):
            endpoints_security_group.add_ingress_rule(peer, ec2.Port.tcp(443), f"HTTPS from {who}")
        for name in self.config.network.interface_endpoints:
            self.vpc.add_interface_endpoint(
                f"{name}-endpoint",
                service=INTERFACE_ENDPOINTS[name],
                subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
                private_dns_enabled=True,
                open=False,
                security_groups=[endpoints_security_group],
            )

    def _restrict_function_egress(self) -> None:
        """What the functions use and nothing else: HTTPS (AWS APIs through the endpoints or the
        NAT, and the relay's third-party API), Redis and NFS to their own security groups. DNS
        to the VPC resolver is not filtered by security groups."""
        functions = self.functions_security_group
        functions.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS: AWS APIs and the relay API")
        functions.add_egress_rule(self.redis_security_group, ec2.Port.tcp(REDIS_PORT), "Redis (TLS + AUTH)")
        functions.add_egress_rule(self.efs_security_group, ec2.Port.tcp(NFS_PORT), "NFS to the EFS inbox")

    # -- Redis --------------------------------------------------------------------------------

    def _build_redis(self) -> None:
        redis = self.config.redis
        self.redis_security_group = ec2.SecurityGroup(
            self,
            "RedisSecurityGroup",
            vpc=self.vpc,
            description="sluice Redis: only the functions group, on the Redis port",
            allow_all_outbound=False,
        )
        self.redis_security_group.add_ingress_rule(
            self.functions_security_group, ec2.Port.tcp(REDIS_PORT), "sluice functions to Redis (TLS + AUTH)"
        )
        # ElastiCache AUTH tokens accept only !&#$^<>- as punctuation: generate without any.
        self.redis_auth_secret = secretsmanager.Secret(
            self,
            "RedisAuthToken",
            description=f"sluice {self.config.name}: ElastiCache Redis AUTH token",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=64
            ),
            removal_policy=self.removal_policy,
        )
        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "RedisSubnets",
            description="sluice Redis: isolated data subnets",
            subnet_ids=self.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids,
        )
        # Redis only coordinates (DESIGN "Where state lives"): it must refuse writes when full
        # rather than silently evict leases that carry a TTL, so the memory alarm can act.
        parameters = elasticache.CfnParameterGroup(
            self,
            "RedisParameters",
            cache_parameter_group_family=f"redis{redis.engine_version.split('.')[0]}",
            description="sluice Redis: noeviction",
            properties={"maxmemory-policy": "noeviction"},
        )
        self.redis = elasticache.CfnReplicationGroup(
            self,
            "Redis",
            replication_group_description=f"sluice {self.config.name} coordination (leases, markers)",
            engine="redis",
            engine_version=redis.engine_version,
            cache_node_type=redis.node_type,
            num_cache_clusters=1 + redis.replicas,
            automatic_failover_enabled=redis.multi_az,
            multi_az_enabled=redis.multi_az,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            auth_token=self.redis_auth_secret.secret_value.unsafe_unwrap(),
            port=REDIS_PORT,
            cache_subnet_group_name=subnet_group.ref,
            cache_parameter_group_name=parameters.ref,
            security_group_ids=[self.redis_security_group.security_group_id],
        )
        self.redis_host: str = self.redis.attr_primary_end_point_address
        self.redis_port = REDIS_PORT
        acknowledge(
            self.redis,
            Ack(
                "AwsSolutions-AEC5",
                "6379 is the port every Redis client assumes; access is limited by a security group "
                "that admits only the functions' group, TLS is required and AUTH is on",
            ),
        )
        if not redis.multi_az:
            acknowledge(
                self.redis,
                Ack(
                    "AwsSolutions-AEC4",
                    f"environment {self.config.name!r} runs a single node by config (redis.multi_az false); "
                    "Redis only coordinates, so losing it costs repeated work, never records",
                ),
            )
        acknowledge(
            self.redis_auth_secret,
            Ack(
                "AwsSolutions-SMG4",
                "rotating an ElastiCache AUTH token needs a coordinated ModifyReplicationGroup "
                "(AuthTokenUpdateStrategy ROTATE, wait the clients' 5-minute token cache, SET); done as an "
                "operator runbook, not by a generic rotation Lambda",
            ),
        )

    # -- EFS inbox ----------------------------------------------------------------------------

    def _build_file_system(self) -> None:
        ingest = self.config.ingest
        self.efs_security_group = ec2.SecurityGroup(
            self,
            "EfsSecurityGroup",
            vpc=self.vpc,
            description="sluice EFS mount targets: NFS from the functions and the writer container",
            allow_all_outbound=False,
        )
        for peer, who in (
            (self.functions_security_group, "sluice functions"),
            (self.writer_security_group, "the writer container"),
        ):
            self.efs_security_group.add_ingress_rule(peer, ec2.Port.tcp(NFS_PORT), f"NFS from {who}")
        provisioned = (
            cdk.Size.mebibytes(ingest.efs_provisioned_mibps)
            if ingest.efs_provisioned_mibps is not None
            else None
        )
        self.file_system = efs.FileSystem(
            self,
            "Inbox",
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_group=self.efs_security_group,
            encrypted=True,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            throughput_mode=EFS_THROUGHPUT_MODES[ingest.efs_throughput_mode],
            provisioned_throughput_per_second=provisioned,
            enable_automatic_backups=self.config.retain_data,
            removal_policy=self.removal_policy,
            # Not an opening: with the feature flag's default CDK would add an Allow of
            # ClientWrite + ClientRootAccess to any principal (via a mount target). The policy
            # below allows IAM principals of this account, through the access point only; an
            # anonymous (non-IAM) client matches no Allow and is refused.
            allow_anonymous_access=True,
        )
        # Every client (functions and the writer) enters through this access point, so files
        # are owned by one POSIX identity and nobody can see outside /sluice.
        self.access_point = self.file_system.add_access_point(
            "SluiceAccessPoint",
            path=EFS_ROOT,
            create_acl=efs.Acl(owner_uid=EFS_POSIX_ID, owner_gid=EFS_POSIX_ID, permissions="750"),
            posix_user=efs.PosixUser(uid=EFS_POSIX_ID, gid=EFS_POSIX_ID),
        )
        self._restrict_file_system_access()
        self.writer_mount_policy = iam.ManagedPolicy(
            self,
            "WriterMountPolicy",
            description=f"sluice {self.config.name}: mount the EFS inbox read-write through its access point",
            statements=[
                iam.PolicyStatement(
                    actions=MOUNT_ACTIONS,
                    resources=[self.file_system.file_system_arn],
                    conditions={
                        "StringEquals": {
                            "elasticfilesystem:AccessPointArn": self.access_point.access_point_arn
                        }
                    },
                )
            ],
        )
        cdk.CfnOutput(
            self,
            "WriterMountPolicyArn",
            value=self.writer_mount_policy.managed_policy_arn,
            description="attach to the writer's task role: mount -t efs -o tls,iam,accesspoint=...",
        )
        cdk.CfnOutput(
            self,
            "InboxFileSystemId",
            value=self.file_system.file_system_id,
            description="EFS file system the writer container mounts (write files under inbox/)",
        )
        cdk.CfnOutput(
            self,
            "InboxAccessPointId",
            value=self.access_point.access_point_id,
            description="EFS access point to mount with (uid/gid 1000, root /sluice, IAM + TLS)",
        )
        cdk.CfnOutput(
            self,
            "WriterSecurityGroupId",
            value=self.writer_security_group.security_group_id,
            description="security group the writer container joins to reach the mount targets",
        )

    def _restrict_file_system_access(self) -> None:
        """The file system policy: TLS always, an access point always, IAM always. Same-account
        IAM principals also need an identity policy that allows the mount (the functions get one
        from their Lambda file system config, conditioned on the sluice access point's exact ARN;
        the writer attaches WriterMountPolicy, likewise).

        The policy is a property of the file system, which the access point depends on, so it
        cannot name the access point's ARN (a circular dependency): it names any access point
        of this account and region, and the identity policies pin the exact one."""
        any_access_point = self.format_arn(
            service="elasticfilesystem",
            resource="access-point",
            resource_name="fsap-*",
            arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
        )
        every_client = [iam.AnyPrincipal()]
        client_actions = [
            "elasticfilesystem:ClientMount",
            "elasticfilesystem:ClientWrite",
            "elasticfilesystem:ClientRootAccess",
        ]
        for sid, condition in (
            ("DenyUnencryptedTransport", {"Bool": {"aws:SecureTransport": "false"}}),
            (
                "DenyOutsideAnAccessPoint",
                {"StringNotLike": {"elasticfilesystem:AccessPointArn": any_access_point}},
            ),
        ):
            self.file_system.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=sid,
                    effect=iam.Effect.DENY,
                    principals=every_client,
                    actions=client_actions,
                    conditions=condition,
                )
            )
        self.file_system.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisAccountThroughAnAccessPoint",
                principals=[iam.AccountRootPrincipal()],
                actions=MOUNT_ACTIONS,
                conditions={"StringLike": {"elasticfilesystem:AccessPointArn": any_access_point}},
            )
        )

    # -- queues -------------------------------------------------------------------------------

    def _queue(self, construct_id: str, *, fifo: bool, retention_s: int, **kwargs: object) -> sqs.Queue:
        # SSE-SQS everywhere: an API Gateway service integration can send without KMS grants.
        queue = sqs.Queue(
            self,
            construct_id,
            fifo=fifo or None,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.seconds(retention_s),
            # What the loader packs (and every producer sizes against): a queue left at a lower
            # limit would refuse those parts forever (the loader checks this once per run).
            max_message_size_bytes=self.config.queues.max_message_bytes,
            removal_policy=self.removal_policy,
            **kwargs,  # type: ignore[arg-type]
        )
        return queue

    def _dead_letter_queue(self, construct_id: str, *, fifo: bool) -> sqs.Queue:
        queue = self._queue(construct_id, fifo=fifo, retention_s=self.config.queues.dlq_retention_s)
        acknowledge(
            queue,
            Ack(
                "Serverless-SQSRedrivePolicy",
                "this is a dead-letter queue, the end of the line: poison lands here with its reason "
                "for an operator (alarmed on depth); a further DLQ would only hide it",
            ),
        )
        return queue

    def _build_queues(self) -> None:
        queues, pipeline = self.config.queues, self.config.pipeline
        visibility = cdk.Duration.seconds(pipeline.visibility_timeout_s)
        self.state_dlq = self._dead_letter_queue("StateDeadLetterQueue", fifo=False)
        self.state_queue = self._queue(
            "StateQueue",
            fifo=False,
            retention_s=queues.retention_s,
            visibility_timeout=visibility,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.state_dlq, max_receive_count=pipeline.standard_max_receive_count
            ),
        )
        self.fifo_dlq = self._dead_letter_queue("FifoDeadLetterQueue", fifo=True)
        # Deduplication ids are the envelope ids (never content-based): a re-send of a recorded
        # part carries its original id.
        self.fifo_queue = self._queue(
            "FifoQueue",
            fifo=True,
            retention_s=queues.retention_s,
            visibility_timeout=visibility,
            content_based_deduplication=False,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.fifo_dlq, max_receive_count=pipeline.fifo_max_receive_count
            ),
        )

    def _build_relay_resources(self) -> RelayStorage:
        # The relay's own FIFO queue: its drain receives on a schedule and sets visibility itself,
        # so it cannot share the router's FIFO queue (an event source mapping consumes that one).
        relay_dlq = self._dead_letter_queue("RelayDeadLetterQueue", fifo=True)
        relay_queue = self._queue(
            "RelayQueue",
            fifo=True,
            retention_s=RELAY_QUEUE_RETENTION_S,
            visibility_timeout=cdk.Duration.seconds(self.config.relay.drain_timeout_s * 6),
            content_based_deduplication=False,
            dead_letter_queue=sqs.DeadLetterQueue(queue=relay_dlq, max_receive_count=SQS_MAX_RECEIVE_COUNT),
        )
        # The relay's source: its stream feeds the relay function (INSERTs, filtered at the ESM).
        source_table = self._table(
            "RelaySource", SOURCE_PARTITION_KEY, SOURCE_SORT_KEY, stream=dynamodb.StreamViewType.NEW_IMAGE
        )
        # Stream records the relay could not pass on, as Lambda writes them. A bucket of their
        # own: nothing else may write there, so a failure record is never overwritten.
        failures = self._bucket(
            "RelayFailures",
            encryption=s3.BucketEncryption.S3_MANAGED,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="relay-failures/",
        )
        publish_bucket(self, "RelayFailures", failures, "stream records the relay could not pass on")
        return RelayStorage(queue=relay_queue, dead_letter_queue=relay_dlq, source_table=source_table)

    # -- results bucket -----------------------------------------------------------------------

    def _bucket(
        self, construct_id: str, *, lifecycle_rules: Sequence[s3.LifecycleRule] = (), **kwargs: object
    ) -> s3.Bucket:
        """Private, TLS-only, owner-enforced, versioned (an overwritten or deleted object can be
        recovered for `storage.noncurrent_version_expire_days`); named by CloudFormation (a fixed
        name would collide when a retained bucket outlives its stack and the stack is created
        again)."""
        keep_versions = cdk.Duration.days(self.config.storage.noncurrent_version_expire_days)
        return s3.Bucket(
            self,
            construct_id,
            versioned=True,
            lifecycle_rules=[
                *lifecycle_rules,
                s3.LifecycleRule(
                    id="expire-noncurrent-versions", noncurrent_version_expiration=keep_versions
                ),
            ],
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            removal_policy=self.removal_policy,
            auto_delete_objects=not self.config.retain_data,
            **kwargs,  # type: ignore[arg-type]
        )

    def _build_bucket(self) -> None:
        storage = self.config.storage
        self.access_logs_bucket = self._bucket(
            "AccessLogs",
            # Server access log delivery supports only SSE-S3 on the target bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs", expiration=cdk.Duration.days(storage.access_log_expire_days)
                )
            ],
        )
        acknowledge(
            self.access_logs_bucket,
            Ack("AwsSolutions-S1", "this is the server access log destination; logging it would recurse"),
        )
        expiration = (
            cdk.Duration.days(storage.results_expire_days)
            if storage.results_expire_days is not None
            else None
        )
        self.results_bucket = self._bucket(
            "Results",
            encryption=s3.BucketEncryption.S3_MANAGED,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="results/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="age-results",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                            transition_after=cdk.Duration.days(storage.results_infrequent_access_days),
                        )
                    ],
                    expiration=expiration,
                ),
            ],
        )
        publish_bucket(self, "Results", self.results_bucket, "the sinks' results bucket")

    # -- tables -------------------------------------------------------------------------------

    def _table(
        self, construct_id: str, partition_key: str, sort_key: str | None, **kwargs: object
    ) -> dynamodb.Table:
        return dynamodb.Table(
            self,
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

    def _build_tables(self) -> None:
        # The router's create-only outcome plans; items expire after the dedup horizon.
        self.ledger_table = self._table(
            "Ledger", LEDGER_PARTITION_KEY, None, time_to_live_attribute=LEDGER_TTL_ATTRIBUTE
        )
