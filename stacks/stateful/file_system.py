"""The EFS inbox: encrypted, one access point every client enters through (uid/gid 1000, root
/sluice), a file system policy that demands TLS, IAM and an access point, and the managed policy
and outputs the writer container mounts it with."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam

from stacks.config import EnvironmentConfig
from stacks.stateful.network import Network

NFS_PORT = 2049
EFS_ROOT = "/sluice"
EFS_POSIX_ID = "1000"
# Read-write through the access point; never ClientRootAccess (it maps every client to uid 1000).
MOUNT_ACTIONS = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
EFS_THROUGHPUT_MODES = {
    "bursting": efs.ThroughputMode.BURSTING,
    "elastic": efs.ThroughputMode.ELASTIC,
    "provisioned": efs.ThroughputMode.PROVISIONED,
}


@dataclass(frozen=True)
class Inbox:
    security_group: ec2.SecurityGroup
    file_system: efs.FileSystem
    access_point: efs.AccessPoint
    writer_mount_policy: iam.ManagedPolicy


def build_file_system(
    stack: cdk.Stack, config: EnvironmentConfig, network: Network, removal_policy: cdk.RemovalPolicy
) -> Inbox:
    """The file system, its access point, policy and the writer's outputs, in `stack`'s scope."""
    ingest = config.ingest
    security_group = network.admitting(
        stack,
        "EfsSecurityGroup",
        "sluice EFS mount targets: NFS from the functions and the writer container",
        NFS_PORT,
        network.functions_and_writer("NFS"),
    )
    provisioned = (
        cdk.Size.mebibytes(ingest.efs_provisioned_mibps) if ingest.efs_provisioned_mibps is not None else None
    )
    file_system = efs.FileSystem(
        stack,
        "Inbox",
        vpc=network.vpc,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        security_group=security_group,
        encrypted=True,
        performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
        throughput_mode=EFS_THROUGHPUT_MODES[ingest.efs_throughput_mode],
        provisioned_throughput_per_second=provisioned,
        enable_automatic_backups=config.retain_data,
        removal_policy=removal_policy,
        # Not an opening: with the feature flag's default CDK would add an Allow of
        # ClientWrite + ClientRootAccess to any principal (via a mount target). The policy
        # below allows IAM principals of this account, through the access point only; an
        # anonymous (non-IAM) client matches no Allow and is refused.
        allow_anonymous_access=True,
    )
    # Every client (functions and the writer) enters through this access point, so files
    # are owned by one POSIX identity and nobody can see outside /sluice.
    access_point = file_system.add_access_point(
        "SluiceAccessPoint",
        path=EFS_ROOT,
        create_acl=efs.Acl(owner_uid=EFS_POSIX_ID, owner_gid=EFS_POSIX_ID, permissions="750"),
        posix_user=efs.PosixUser(uid=EFS_POSIX_ID, gid=EFS_POSIX_ID),
    )
    _restrict_file_system_access(stack, file_system)
    writer_mount_policy = iam.ManagedPolicy(
        stack,
        "WriterMountPolicy",
        description=f"sluice {config.name}: mount the EFS inbox read-write through its access point",
        statements=[
            iam.PolicyStatement(
                actions=MOUNT_ACTIONS,
                resources=[file_system.file_system_arn],
                conditions={
                    "StringEquals": {"elasticfilesystem:AccessPointArn": access_point.access_point_arn}
                },
            )
        ],
    )
    cdk.CfnOutput(
        stack,
        "WriterMountPolicyArn",
        value=writer_mount_policy.managed_policy_arn,
        description="attach to the writer's task role: mount -t efs -o tls,iam,accesspoint=...",
    )
    cdk.CfnOutput(
        stack,
        "InboxFileSystemId",
        value=file_system.file_system_id,
        description="EFS file system the writer container mounts (write files under inbox/)",
    )
    cdk.CfnOutput(
        stack,
        "InboxAccessPointId",
        value=access_point.access_point_id,
        description="EFS access point to mount with (uid/gid 1000, root /sluice, IAM + TLS)",
    )
    cdk.CfnOutput(
        stack,
        "WriterSecurityGroupId",
        value=network.writer_security_group.security_group_id,
        description="security group the writer container joins to reach the mount targets",
    )
    return Inbox(
        security_group=security_group,
        file_system=file_system,
        access_point=access_point,
        writer_mount_policy=writer_mount_policy,
    )


def _restrict_file_system_access(stack: cdk.Stack, file_system: efs.FileSystem) -> None:
    """The file system policy: TLS always, an access point always, IAM always. Same-account
    IAM principals also need an identity policy that allows the mount (the functions get one
    from their Lambda file system config, conditioned on the sluice access point's exact ARN;
    the writer attaches WriterMountPolicy, likewise).

    The policy is a property of the file system, which the access point depends on, so it
    cannot name the access point's ARN (a circular dependency): it names any access point
    of this account and region, and the identity policies pin the exact one."""
    any_access_point = stack.format_arn(
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
        file_system.add_to_resource_policy(
            iam.PolicyStatement(
                sid=sid,
                effect=iam.Effect.DENY,
                principals=every_client,
                actions=client_actions,
                conditions=condition,
            )
        )
    file_system.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowThisAccountThroughAnAccessPoint",
            principals=[iam.AccountRootPrincipal()],
            actions=MOUNT_ACTIONS,
            conditions={"StringLike": {"elasticfilesystem:AccessPointArn": any_access_point}},
        )
    )
