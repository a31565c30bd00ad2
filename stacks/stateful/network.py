"""The VPC: public subnets for the NAT gateways, private subnets with egress for the functions,
isolated subnets for Redis and the EFS mount targets; gateway endpoints for S3 and DynamoDB
(free, and they keep the heaviest traffic off the NAT), interface endpoints from config, and the
security groups the functions and the writer container join."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs

from stacks.config import EnvironmentConfig
from stacks.retention import log_retention

HTTPS_PORT = 443
INTERFACE_ENDPOINTS = {
    "sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "secretsmanager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
}


@dataclass(frozen=True)
class Network:
    vpc: ec2.Vpc
    functions_security_group: ec2.SecurityGroup
    writer_security_group: ec2.SecurityGroup

    def functions_and_writer(self, what: str) -> tuple[tuple[ec2.ISecurityGroup, str], ...]:
        """The functions' and the writer container's groups, each with its ingress rule's
        description."""
        return (
            (self.functions_security_group, f"{what} from sluice functions"),
            (self.writer_security_group, f"{what} from the writer container"),
        )

    def admitting(
        self,
        stack: cdk.Stack,
        construct_id: str,
        description: str,
        port: int,
        peers: tuple[tuple[ec2.ISecurityGroup, str], ...],
    ) -> ec2.SecurityGroup:
        """A security group in the VPC with no egress that admits each of `peers` (a group and
        why) on `port`."""
        group = ec2.SecurityGroup(
            stack, construct_id, vpc=self.vpc, description=description, allow_all_outbound=False
        )
        for peer, why in peers:
            group.add_ingress_rule(peer, ec2.Port.tcp(port), why)
        return group


def build_network(stack: cdk.Stack, config: EnvironmentConfig, removal_policy: cdk.RemovalPolicy) -> Network:
    """The VPC and its security groups, in `stack`'s own scope (their logical ids stay put)."""
    settings = config.network
    flow_log_group = logs.LogGroup(
        stack,
        "VpcFlowLogs",
        retention=log_retention(config.functions.log_retention_days),
        removal_policy=removal_policy,
    )
    vpc = ec2.Vpc(
        stack,
        "Vpc",
        max_azs=settings.max_azs,
        nat_gateways=settings.nat_gateways,
        subnet_configuration=[
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
            ec2.SubnetConfiguration(
                name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
            ),
            ec2.SubnetConfiguration(name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
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
    network = Network(
        vpc=vpc,
        functions_security_group=ec2.SecurityGroup(
            stack,
            "FunctionsSecurityGroup",
            vpc=vpc,
            description="sluice Lambda functions (admitted by Redis and the EFS mount targets)",
            # Egress is opened port by port once Redis and EFS exist (restrict_function_egress).
            allow_all_outbound=False,
        ),
        writer_security_group=ec2.SecurityGroup(
            stack,
            "WriterSecurityGroup",
            vpc=vpc,
            description="join this group to mount the sluice EFS inbox (the writer container)",
            allow_all_outbound=True,
        ),
    )
    _build_interface_endpoints(stack, config, network)
    return network


def _build_interface_endpoints(stack: cdk.Stack, config: EnvironmentConfig, network: Network) -> None:
    endpoints_security_group = network.admitting(
        stack,
        "EndpointsSecurityGroup",
        "sluice interface endpoints: HTTPS from the functions and the writer container",
        HTTPS_PORT,
        network.functions_and_writer("HTTPS"),
    )
    for name in config.network.interface_endpoints:
        network.vpc.add_interface_endpoint(
            f"{name}-endpoint",
            service=INTERFACE_ENDPOINTS[name],
            subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            private_dns_enabled=True,
            open=False,
            security_groups=[endpoints_security_group],
        )


def restrict_function_egress(network: Network, *destinations: tuple[ec2.ISecurityGroup, int, str]) -> None:
    """What the functions use and nothing else: HTTPS (AWS APIs through the endpoints or the
    NAT, and the relay's third-party API), and each of `destinations` (a security group, its
    port, why). DNS to the VPC resolver is not filtered by security groups."""
    functions = network.functions_security_group
    functions.add_egress_rule(
        ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "HTTPS: AWS APIs and the relay API"
    )
    for group, port, why in destinations:
        functions.add_egress_rule(group, ec2.Port.tcp(port), why)
