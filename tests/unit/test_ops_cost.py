"""`sluice cost`: issue 26's hand-checked example, within 1 %, and the command itself."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ops.cli import main
from ops.cost import (
    PRICES_FILE,
    EfsOps,
    Measured,
    Settings,
    Workload,
    efs_elastic_per_file,
    estimate,
    load_json,
)

# 6,000 one-record files/s for 30 days on EFS Elastic; per file 1 data read, 1 data write,
# 2 metadata reads, 3 metadata writes; 32 KiB / 4 KiB minimums; $0.03 / $0.06 per GiB.
EXAMPLE = Workload(files_per_s=6000, records_per_file=1, record_bytes=400, days=30)
MEASURED = Measured(
    efs_ops=EfsOps(data_reads=1, data_writes=1, metadata_reads=2, metadata_writes=3),
    units_per_record_one=0.00755,
    baseline_units_per_record=1.0005,
)


def _line(bill: dict, service: str, item: str) -> float:
    return next(line["usd"] for line in bill["lines"] if line["service"] == service and line["item"] == item)


def test_issue_example_within_one_percent() -> None:
    prices = load_json(PRICES_FILE)
    assert EXAMPLE.files == 15_552_000_000
    assert efs_elastic_per_file(MEASURED.efs_ops, 400, prices) * 1e6 == pytest.approx(3.66, rel=0.01)
    doc = estimate(Settings(efs_mode="elastic"), EXAMPLE, MEASURED, prices)
    assert _line(doc["sluice"], "EFS", "Elastic throughput") == pytest.approx(56_953, rel=0.01)
    assert _line(doc["sluice"], "SQS", "sends") == pytest.approx(46.97, rel=0.01)
    assert _line(doc["one_message_per_record"], "SQS", "sends") == pytest.approx(6_223.91, rel=0.01)


def test_committed_results_give_the_same_example() -> None:
    doc = estimate(Settings(efs_mode="elastic"), EXAMPLE)
    assert _line(doc["sluice"], "EFS", "Elastic throughput") == pytest.approx(56_953, rel=0.01)
    assert _line(doc["sluice"], "SQS", "sends") == pytest.approx(46.97, rel=0.01)


def test_records_per_file_is_the_lever() -> None:
    doc = estimate(Settings(efs_mode="elastic"), EXAMPLE, MEASURED)
    totals = [row["usd"] for row in doc["lever_records_per_file"]]
    assert totals == sorted(totals, reverse=True)
    assert totals[0] > 40 * totals[-1]
    assert doc["one_message_per_record"]["total"] > doc["sluice"]["total"]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_cost_command_json(env: str) -> None:
    result = CliRunner().invoke(
        main, ["cost", "--env", env, "--records-per-file", "60", "--files-per-s", "100", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["environment"] == env
    assert doc["workload"]["records_per_month"] == pytest.approx(15_552_000_000)
    assert doc["sluice"]["total"] > 0


def test_cost_command_table_and_bad_env() -> None:
    ok = CliRunner().invoke(main, ["cost", "--env", "dev"])
    assert ok.exit_code == 0 and "one message per record" in ok.output
    bad = CliRunner().invoke(main, ["cost", "--env", "nope"])
    assert bad.exit_code != 0
