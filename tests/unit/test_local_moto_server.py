"""`local/moto_server.py` patches one moto version: another refuses to start, with the reason."""

from __future__ import annotations

import pytest

from local import moto_server


def test_another_moto_version_is_refused_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto_server, "version", lambda _name: "9.9.9")
    expected = r"moto 9\.9\.9 is installed; the patches in local/moto_server\.py were checked against 5\.2\.5"
    with pytest.raises(SystemExit, match=expected):
        moto_server.main(["-p", "0"])
