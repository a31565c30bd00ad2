"""Every optional system switched on: what the template tests, the synth check and the deploy
rehearsal build (the relay is off by default: it needs the third-party API's https URL)."""

from __future__ import annotations

from typing import Any

ALL_SYSTEMS: dict[str, Any] = {
    "relay": {"enabled": True, "api_url": "https://api.example.com/v1/records"},
    "gateway": {"enabled": True},
    "jobs": {"enabled": True},
}
