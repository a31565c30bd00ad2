"""End to end through the local runtime: the writer simulator, the real loader, checker,
archiver and router, on the benchmark's own moto server and Redis (`python -m local` with
`--redis-url` / `--aws-endpoint-url`), summarised by the runtime's exactly-once check."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.measure import Measurement

ROOT = Path(__file__).resolve().parent.parent


class EndToEndFailed(RuntimeError):
    """The local runtime reported a loss, a duplicate or an error."""


def through_local_runtime(
    redis_url: str, aws_endpoint_url: str, duration_s: float, rate: float
) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-e2e-") as directory:
        summary_path = Path(directory) / "summary.json"
        command = [
            sys.executable, "-m", "local",
            "--duration", str(duration_s),
            "--rate", str(rate),
            "--no-live",
            "--json", str(summary_path),
            "--log", str(Path(directory) / "functions.log"),
            "--redis-url", redis_url,
            "--aws-endpoint-url", aws_endpoint_url,
        ]  # fmt: skip
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if finished.returncode != 0 or not summary_path.exists():
            raise EndToEndFailed(f"python -m local exited {finished.returncode}:\n{finished.stdout[-3000:]}")
        summary: dict[str, Any] = orjson.loads(summary_path.read_bytes())
    delivered = int(summary["records_delivered"])
    rate_per_s = float(summary["records_per_s"])
    return Measurement(
        name="end_to_end:local_runtime",
        seconds=delivered / rate_per_s if rate_per_s else 0.0,
        files=int(summary["files_written"]),
        records=delivered,
        extra={
            "records_written": int(summary["records_written"]),
            "lost": int(summary["lost"]),
            "duplicates": int(summary["duplicates"]),
            "rejected_files": len(summary["rejected_files"])
            if isinstance(summary["rejected_files"], list)
            else int(summary["rejected_files"]),
            "target_rate": rate,
        },
    )
