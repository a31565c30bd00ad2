"""One environment of sluice: a stateful and a stateless stack inside one Stage."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.stateful import StatefulStack


class SluiceStage(cdk.Stage):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, env: cdk.Environment
    ) -> None:
        super().__init__(scope, construct_id, env=env)
        self.config = config
        self.stateful = StatefulStack(self, "stateful", config=config)
