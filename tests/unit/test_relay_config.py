"""The relay's config is validated at synth, with the offending setting's name."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.config import RelaySettings, Settings, load_settings, to_environ
from runtime.errors import ConfigError
from stacks.config import load_environment

CONTEXT: dict[str, Any] = {"environments": {"dev": {}}}


def environment(relay: dict[str, Any]) -> Any:
    return load_environment({"environments": {"dev": {"relay": relay}}}, "dev")


def test_defaults_are_valid_and_the_probe_backoff_is_capped_at_15_minutes() -> None:
    relay = load_environment(CONTEXT, "dev").relay
    assert relay.breaker_backoff_cap_s == 900
    # Both limits act well inside the relay queue's 14 days.
    assert relay.max_age_s + relay.longest_unseen_s() <= 13 * 86_400
    with pytest.raises(ConfigError, match=r"relay\.breaker_backoff_cap_s"):
        environment({"breaker_backoff_cap_s": 901})


@pytest.mark.parametrize(
    ("relay", "message"),
    [
        ({"drain_schedule": "every minute"}, "drain_schedule"),
        ({"api_url": "api.example.com"}, "api_url"),
        ({"api_url": "http://api.example.com/v1"}, r"relay\.api_url must be an https:// URL"),
        ({"enabled": True}, r"relay\.api_url is required when relay\.enabled"),
        ({"deadline_margin_s": 5}, "deadline_margin_s must cover"),
        ({"max_record_age_s": 30}, r"relay\.max_record_age_s"),
        ({"calls_per_minute": 0}, r"relay\.calls_per_minute"),
        ({"unknown": 1}, r"relay\.unknown"),
        # 13 days of age plus a 15-minute backoff and a day of slack outlast 14 days' retention
        ({"max_age_s": 13 * 86_400}, r"relay\.max_age_s .* could\s+expire"),
        ({"max_age_s": 10 * 86_400, "drain_schedule": "rate(4 days)"}, r"relay\.max_age_s"),
        ({"max_attempts": 0}, r"relay\.max_attempts"),
    ],
)
def test_bad_values_fail_with_their_name(relay: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        environment(relay)


def test_relay_settings_round_trip_through_the_environment() -> None:
    settings = Settings(
        relay=RelaySettings(fifo_url="https://q/relay.fifo", ledger_sort_key="", calls_per_minute=7)
    )
    assert load_settings(to_environ(settings)) == settings
    with pytest.raises(ConfigError, match="SLUICE_RELAY__BREAKER_BACKOFF_CAP_S"):
        load_settings({"SLUICE_RELAY__BREAKER_BACKOFF_CAP_S": "1000"})
