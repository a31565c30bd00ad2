"""One environment of sluice: a stateful and a stateless stack inside one Stage."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.notifications import NotifyOnAlarms
from stacks.stateful import StatefulStack
from stacks.stateless import StatelessStack
from stacks.validation import validate_for_synth


class SluiceStage(cdk.Stage):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, env: cdk.Environment
    ) -> None:
        super().__init__(scope, construct_id, env=env)
        validate_for_synth(config)
        self.config = config
        self.stateful = StatefulStack(self, "stateful", config=config)
        self.stateless = StatelessStack(self, "stateless", config=config, shared=self.stateful.shared)
        cdk.Aspects.of(self).add(NotifyOnAlarms(self.stateful.notifications.topic))
