"""The API key: an SSM Parameter Store SecureString read through Powertools Parameters,
decrypted, cached for `api_key_cache_s` and re-read early only after the API refuses it
(401/403: it may have been rotated). The value is never logged and never put in the
environment; only the parameter's name is configuration.
"""

from __future__ import annotations

from typing import Any

from runtime.relay.errors import ApiKeyUnavailable


class ApiKeySource:
    def __init__(self, ssm: Any, parameter_name: str, max_age_s: int) -> None:
        from aws_lambda_powertools.utilities.parameters import SSMProvider

        # A provider of our own (not Powertools' module default) so the injected client is used
        # and its cache belongs to this source.
        self._provider = SSMProvider(boto3_client=ssm)
        self._name = parameter_name
        self._max_age_s = max_age_s
        self._refresh = False

    def get(self) -> str:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        force = self._refresh
        self._refresh = False
        try:
            value = self._provider.get(self._name, decrypt=True, max_age=self._max_age_s, force_fetch=force)
        except GetParameterError as exc:
            cause = type(exc.__cause__).__name__
            raise ApiKeyUnavailable(f"cannot read parameter {self._name}: {cause}") from exc
        if not isinstance(value, str) or not value:
            raise ApiKeyUnavailable(f"parameter {self._name} is empty")
        return value

    def refresh_next_time(self) -> None:
        """The API refused the key: read the parameter again before the next call."""
        self._refresh = True
