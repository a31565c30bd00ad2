"""Alarms reach a person: one SNS topic per environment (or the user's own), notified on ALARM
and on OK by every CloudWatch alarm of the environment's stacks.

The topic is encrypted with a customer-managed key whose policy lets CloudWatch use it: with the
AWS-managed `alias/aws/sns` key CloudWatch cannot encrypt, and alarm notifications are dropped
without an error anywhere.
"""

from __future__ import annotations

import aws_cdk as cdk
import jsii
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct, IConstruct

from stacks.config import EnvironmentConfig

CLOUDWATCH = "cloudwatch.amazonaws.com"


class AlarmNotifications(Construct):
    """The environment's alarm topic: created (with its key and email subscriptions) or, with
    `alarms.topic_arn`, the user's existing one."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        removal_policy: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        alarms = config.alarms
        if alarms.topic_arn:
            self.topic: sns.ITopic = sns.Topic.from_topic_arn(self, "Topic", alarms.topic_arn)
        else:
            self.topic = self._topic(config, removal_policy)
        cdk.CfnOutput(
            self,
            "AlarmTopicArn",
            value=self.topic.topic_arn,
            description="every sluice alarm notifies this topic on ALARM and on OK",
        )

    def _topic(self, config: EnvironmentConfig, removal_policy: cdk.RemovalPolicy) -> sns.Topic:
        account = cdk.Stack.of(self).account
        key = kms.Key(
            self,
            "TopicKey",
            description=f"sluice {config.name}: encrypts the alarm topic (CloudWatch may use it)",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsEncryptNotifications",
                principals=[iam.ServicePrincipal(CLOUDWATCH)],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                # In a key policy "*" is this key. AWS's documented statement, without conditions:
                # a condition CloudWatch does not send would silently drop every notification.
                resources=["*"],
            )
        )
        topic = sns.Topic(
            self,
            "Topic",
            display_name=f"sluice {config.name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[iam.ServicePrincipal(CLOUDWATCH)],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                # Only this account's alarms (CloudWatch names the alarm's account as source).
                conditions={"StringEquals": {"aws:SourceAccount": account}},
            )
        )
        for email in config.alarms.emails:
            topic.add_subscription(subscriptions.EmailSubscription(email))
        return topic


@jsii.implements(cdk.IAspect)
class NotifyOnAlarms:
    """Adds the topic as ALARM and OK action of every CloudWatch alarm under the scope it is
    applied to, so no alarm built later (by any construct) can be left silent."""

    def __init__(self, topic: sns.ITopic) -> None:
        self._action = cloudwatch_actions.SnsAction(topic)

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, cloudwatch.Alarm):
            node.add_alarm_action(self._action)
            node.add_ok_action(self._action)
