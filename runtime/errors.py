"""Typed exceptions. Nothing in sluice matches on exception messages."""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error sluice raises on purpose."""


class ConfigError(SluiceError):
    """A setting is missing or invalid; the message names it."""


class EnvelopeError(SluiceError):
    """A message body is not a valid sluice envelope."""


class MessageTooLarge(SluiceError):
    """An envelope (body plus attributes) exceeds the configured maximum message size."""

    def __init__(self, size: int, limit: int, what: str = "message") -> None:
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class TooManyAttributes(SluiceError):
    """SQS accepts at most 10 message attributes."""


class LeaseLost(SluiceError):
    """A fenced Redis write found that this worker no longer owns its lease."""


class TransientError(SluiceError):
    """A failure that may clear on retry (I/O error, throttling, timeout)."""


class EnvironmentFailure(SluiceError):
    """The environment refuses the work itself (access denied, a queue that does not exist, a
    disabled KMS key, a queue limit below the envelope size): the run stops with one clear
    error and an alarm; no batch is charged for it."""
