"""Benchmark output: a table on the terminal, `results.json`, and a PNG chart comparing the
baseline and sluice loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench.measure import PRICE_REGION, Measurement

COLUMNS = (
    ("records/s", "records_per_s"),
    ("files/s", "files_per_s"),
    ("SQS calls", "sqs_calls"),
    ("billed units", "billed_units"),
    ("units/record", "billed_units_per_record"),
    ("MB sent", "mb_sent"),
    ("peak RSS MB", "peak_rss_mb"),
    ("$/M rec std", "cost_standard"),
    ("$/M rec FIFO", "cost_fifo"),
)


def _row(measurement: Measurement) -> list[str]:
    data = measurement.as_dict()
    data["mb_sent"] = round(measurement.bytes_sent / 1e6, 2)
    data["cost_standard"] = data["sqs_cost_per_million_records_usd"]["standard"]
    data["cost_fifo"] = data["sqs_cost_per_million_records_usd"]["fifo"]
    return [measurement.name] + [f"{data[key]:,}" for _, key in COLUMNS]


def print_table(measurements: list[Measurement], ratios: dict[str, float], console: Console) -> None:
    table = Table(title=f"sluice benchmarks (SQS prices: {PRICE_REGION} list prices)")
    table.add_column("scenario")
    for title, _ in COLUMNS:
        table.add_column(title, justify="right")
    for measurement in measurements:
        table.add_row(*_row(measurement))
    console.print(table)
    for name, value in ratios.items():
        console.print(f"  ratio {name}: {value:,.2f}")


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def write_chart(path: Path, baseline: list[Measurement], sluice: list[Measurement]) -> None:
    """Two panels: records/s and billed SQS units per record, baseline vs sluice per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m.name.split(":", 1)[-1] for m in sluice]
    figure, (speed, units) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.38
    positions = range(len(labels))
    for axis, metric, title, log in (
        (speed, "records_per_s", "records/s through moto (higher is better)", True),
        (units, "billed_units_per_record", "billed SQS units per record (lower is better)", True),
    ):
        axis.bar(
            [p - width / 2 for p in positions],
            [getattr(m, metric) for m in baseline],
            width,
            label="baseline",
        )
        axis.bar(
            [p + width / 2 for p in positions], [getattr(m, metric) for m in sluice], width, label="sluice"
        )
        axis.set_xticks(list(positions), labels)
        axis.set_title(title, fontsize=10)
        if log:
            axis.set_yscale("log")
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
