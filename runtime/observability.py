"""Logging and metrics for every function, through Powertools (X-Ray active tracing is set
on the functions by the stacks).

One service name and one metrics namespace for the whole product; each function sets its own
`POWERTOOLS_SERVICE_NAME` so logs and metrics carry it as a dimension.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

METRICS_NAMESPACE = "sluice"

logger = Logger(service="sluice")
metrics = Metrics(namespace=METRICS_NAMESPACE, service="sluice")
