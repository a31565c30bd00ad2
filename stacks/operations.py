"""The operations function: `sluice --env NAME ingest rejected|halted …` on the deployed share.

A function in the VPC with the EFS share mounted through the same access point as the loader,
reached only through a function URL with AWS_IAM auth (callers need
`lambda:InvokeFunctionUrl` on it; Lambda verifies their SigV4 signature and hands the handler
who they are, which it logs with every action). It sends only to the queue ingest targets,
and only to re-send a halted batch's parts under their ids, as the loader would.
"""

from __future__ import annotations

from collections.abc import Callable

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime.declarations.names import OPERATIONS_URL_OUTPUT
from stacks.config import EnvironmentConfig
from stacks.functions import FunctionSpec
from stacks.nag import Ack, acknowledge

SYNCHRONOUS_ACKS = (
    Ack(
        "Serverless-LambdaDLQ",
        "invoked synchronously through its function URL only: the operator's CLI receives every "
        "answer or error; there are no asynchronous events to keep",
    ),
    Ack(
        "Serverless-LambdaAsyncFailureDestination",
        "invoked synchronously through its function URL only: failures are answered to the "
        "operator's CLI and alarmed on the function's error rate",
    ),
)


class OperationsConstruct(Construct):
    """The operations function, its IAM-authenticated URL and the URL as a stack output."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        create_function: Callable[[Construct, FunctionSpec], lambda_.Function],
        target_queue: sqs.IQueue,
    ) -> None:
        """`create_function` places the function in the VPC with the functions' security group
        and mounts the share's access point (`mount_efs`); `target_queue` is the one queue the
        loader sends to."""
        super().__init__(scope, construct_id)
        self.function = create_function(
            self,
            FunctionSpec(
                name="operations",
                handler="runtime.handlers.operations.handler",
                # Re-sending a halted batch recomputes its parts as the loader does.
                timeout_s=config.ingest.loader_timeout_s,
                memory_mb=config.ingest.loader_memory_mb,
                description="sluice operations: rejected files and halted batches on the share, for `sluice`",
                mount_efs=True,
                sections=frozenset({"ingest", "pipeline"}),  # pipeline: the dedup horizon bounds resend-parts
            ),
        )
        target_queue.grant_send_messages(self.function)
        acknowledge(self.function, *SYNCHRONOUS_ACKS)
        self.url = self.function.add_function_url(auth_type=lambda_.FunctionUrlAuthType.AWS_IAM)
        cdk.CfnOutput(
            self,
            OPERATIONS_URL_OUTPUT,
            value=self.url.url,
            description="the operations function's URL (AWS_IAM auth): `sluice --env NAME ingest …`",
        ).override_logical_id(OPERATIONS_URL_OUTPUT)
