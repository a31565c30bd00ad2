"""The benchmark runs end to end on a tiny inbox, so it cannot rot (its figures are not
asserted here: speed is measured by `make bench`, never by timed tests)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.__main__ import main
from local.servers import MotoServer, RedisServer

pytestmark = pytest.mark.slow


def test_quick_benchmark_writes_results_and_chart(
    tmp_path: Path, redis_server: RedisServer, moto: MotoServer
) -> None:
    main(
        [
            "--quick",
            "--scale",
            "0.02",
            "--out",
            str(tmp_path),
            "--redis-url",
            redis_server.url,
            "--aws-endpoint-url",
            moto.url,
        ]
    )
    results = orjson.loads((tmp_path / "results.json").read_bytes())
    for path in (
        ("loader_core", "one_record", "files_per_s"),
        ("loader_core", "hundred_records", "records_per_s"),
        ("loader_core", "efs_latency", "files_per_s"),
        ("loader_core", "syscall_floor_one_record", "files_per_s"),
        ("ratios", "loader_core_vs_syscall_floor"),
        ("router", "transitions_per_s"),
        ("ratios", "records_per_s"),
        ("ratios", "billed_units_per_record"),
    ):
        node = results
        for key in path:
            node = node[key]
        assert isinstance(node, float | int) and node > 0, path
    assert results["loader_core"]["efs_latency"]["processes"] == 2, "the shipped prod loader: 2 processes"
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
