"""The relay's typed exceptions."""

from __future__ import annotations

from runtime.errors import SluiceError


class StreamRecordError(SluiceError):
    """A stream record cannot be relayed (no new image, no group key): it can never succeed, so
    the event source mapping's retries end with it in the on-failure destination."""


class ApiKeyUnavailable(SluiceError):
    """The API key parameter is missing or empty."""
