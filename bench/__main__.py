"""`python -m bench [--quick]`: loader and router benchmarks against the baseline, one process,
one moto server, one Redis. Prints a table, writes build/bench/results.json and results.png."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from bench.archiver import archiver_with_latency
from bench.end_to_end import through_local_runtime
from bench.footprint import loader_rss_with_inbox, redis_bytes_per_batch
from bench.loaders import (
    Servers,
    Shape,
    baseline_through_moto,
    sluice_core,
    sluice_through_moto,
    syscall_floor,
)
from bench.measure import (
    PRICE_REGION,
    SQS_FIFO_PER_MILLION_UNITS,
    SQS_STANDARD_PER_MILLION_UNITS,
    Measurement,
    median_of,
)
from bench.parse import parse_throughput
from bench.report import print_table, write_chart, write_json
from bench.router import failing_envelope, router_alone
from local.servers import FAKE_AWS_ENVIRONMENT, running_moto, running_redis
from runtime.config import IngestSettings

ARRIVAL_FILES_PER_S = 6000  # the ingest target (docs/ingest.md), for the archiver's keep-up ratio
E2E_RATE = 6000.0  # records/s the writer simulator produces in the end-to-end scenario
READ_THREADS = IngestSettings.model_fields["read_threads"].default  # what the loader ships with
COMMITTED_RESULTS = Path(__file__).resolve().parent / "results-committed.json"
# Not measured by the bench, kept across refreshes (see the file's `_about`).
KEPT_FROM_COMMITTED = ("_about", "bench_record_bytes")
CORE_RUNS = 3  # the loader core scenarios report the median of this many runs (full run)


@dataclass(frozen=True)
class Sizes:
    baseline_one: int
    baseline_hundred: int
    sluice_one: int
    sluice_hundred: int
    core_one: int
    core_hundred: int
    core_latency: int
    router_batches: int
    archiver_files: int
    rss_inbox_files: int
    end_to_end_s: int
    parse_mb: int

    @classmethod
    def for_run(cls, quick: bool, scale: float = 1.0) -> Sizes:
        base = (
            (200, 4, 2_000, 40, 10_000, 500, 6_000, 3, 2_000, 50_000, 10, 3)
            if quick
            else (2_000, 30, 20_000, 400, 100_000, 3_000, 48_000, 20, 12_000, 1_000_000, 60, 30)
        )
        return cls(*(max(1, round(n * scale)) for n in base))


@contextlib.contextmanager
def servers(args: argparse.Namespace) -> Iterator[Servers]:
    os.environ.update({k: v for k, v in FAKE_AWS_ENVIRONMENT.items() if k not in os.environ})
    with contextlib.ExitStack() as stack:
        redis_url = args.redis_url or stack.enter_context(running_redis()).url
        aws_url = args.aws_endpoint_url or stack.enter_context(running_moto()).url
        yield Servers(redis_url, aws_url)


def load_committed() -> dict[str, Any]:
    if not COMMITTED_RESULTS.is_file():
        return {}
    loaded: dict[str, Any] = orjson.loads(COMMITTED_RESULTS.read_bytes())
    return loaded


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def run_parse_only(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`--only parse`: the parse scenario alone (no servers), into parse.json."""
    parse = parse_throughput(Sizes.for_run(args.quick, args.scale).parse_mb)
    console.print(parse)
    out = Path(args.out)
    write_json(out / "parse.json", {"parse": parse})
    console.print(f"wrote {out / 'parse.json'}")
    return {"parse": parse}


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    sizes = Sizes.for_run(args.quick, args.scale)
    if args.only == "parse":
        return run_parse_only(args, console)
    parse = parse_throughput(sizes.parse_mb)
    with servers(args) as s:
        console.print(f"[bold]sluice benchmarks[/] ({'quick' if args.quick else 'full'} run) …")
        baseline = [
            baseline_through_moto(s, Shape("one_record", sizes.baseline_one, 1)),
            baseline_through_moto(s, Shape("hundred_records", sizes.baseline_hundred, 100)),
        ]
        sluice = [
            sluice_through_moto(s, Shape("one_record", sizes.sluice_one, 1)),
            sluice_through_moto(s, Shape("hundred_records", sizes.sluice_hundred, 100)),
        ]
        one_record = Shape("one_record", sizes.core_one, 1)
        latency_shape = Shape("one_record", sizes.core_latency, 1)
        hundred_latency_shape = Shape("hundred_records", sizes.core_latency // 24, 100)
        runs = 1 if args.quick else CORE_RUNS
        floor = median_of(runs, lambda: syscall_floor(one_record))
        core_one = median_of(runs, lambda: sluice_core(s, one_record))
        core_one_two = median_of(
            runs, lambda: sluice_core(s, one_record, processes=2, name="core:one_record:2_processes")
        )
        hundred = Shape("hundred_records", sizes.core_hundred, 100)
        core_hundred = median_of(runs, lambda: sluice_core(s, hundred))
        # The shipped loader: READ_THREADS threads a process; prod and staging run 2 processes.
        core_latency = median_of(
            runs,
            lambda: sluice_core(
                s,
                latency_shape,
                latency=True,
                threads=READ_THREADS,
                processes=2,
                name="core:efs_latency:2_processes",
            ),
        )
        core_latency_one = median_of(
            runs,
            lambda: sluice_core(
                s, latency_shape, latency=True, threads=READ_THREADS, name="core:efs_latency:1_process"
            ),
        )
        core_latency_hundred = median_of(
            runs,
            lambda: sluice_core(
                s,
                hundred_latency_shape,
                latency=True,
                threads=READ_THREADS,
                name="core:efs_latency:hundred_records",
            ),
        )
        router = router_alone(s.redis_url, None, sizes.router_batches)
        router_server = router_alone(s.redis_url, s.aws_endpoint_url, sizes.router_batches)
        failing = failing_envelope(s.redis_url, runs=1 if args.quick else 3)
        archiver = archiver_with_latency(s.redis_url, sizes.archiver_files)
        redis_footprint = redis_bytes_per_batch(s.redis_url)
        rss = loader_rss_with_inbox(s.redis_url, sizes.rss_inbox_files)
        end_to_end = through_local_runtime(s.redis_url, s.aws_endpoint_url, sizes.end_to_end_s, E2E_RATE)
    measurements = [
        *baseline,
        *sluice,
        floor,
        core_one,
        core_one_two,
        core_hundred,
        core_latency,
        core_latency_one,
        core_latency_hundred,
        router,
        router_server,
        failing,
        archiver,
        rss,
        end_to_end,
    ]
    ratios = {
        "records_per_s": _ratio(sluice[0].records_per_s, baseline[0].records_per_s),
        "billed_units_per_record": _ratio(
            sluice[0].billed_units_per_record, baseline[0].billed_units_per_record
        ),
        "records_per_s_hundred_records": _ratio(sluice[1].records_per_s, baseline[1].records_per_s),
        "archiver_vs_arrival": _ratio(archiver.files_per_s, ARRIVAL_FILES_PER_S),
        "loader_core_vs_syscall_floor": _ratio(core_one.files_per_s, floor.files_per_s),
        "efs_latency_2_processes_vs_1": _ratio(core_latency.files_per_s, core_latency_one.files_per_s),
    }
    print_table(measurements, ratios, console)
    results: dict[str, Any] = {
        "run": "quick" if args.quick else "full",
        "prices": {
            "region": PRICE_REGION,
            "sqs_standard_per_million_units": SQS_STANDARD_PER_MILLION_UNITS,
            "sqs_fifo_per_million_units": SQS_FIFO_PER_MILLION_UNITS,
        },
        "scenarios": {m.name: m.as_dict() for m in measurements},
        "loader_core": {
            "one_record": core_one.as_dict(),
            "one_record_2_processes": core_one_two.as_dict(),
            "syscall_floor_one_record": floor.as_dict(),
            "hundred_records": core_hundred.as_dict(),
            # Per invocation: the shipped prod loader (2 processes, start-up included).
            "efs_latency": core_latency.as_dict(),
            "efs_latency_1_process": core_latency_one.as_dict(),
            "efs_latency_hundred_records": core_latency_hundred.as_dict(),
        },
        "loader": {
            "efs_ops_per_file": sluice[0].extra["efs_ops_per_file"],
            # Measured with this many files in the inbox (1,000,000 in the full run).
            "rss_mb_1m_files" if sizes.rss_inbox_files >= 1_000_000 else "rss_mb_inbox": rss.peak_rss_mb,
            "rss_inbox_files": sizes.rss_inbox_files,
        },
        "router": {
            "transitions_per_s": router.extra["transitions_per_s"],
            "ledger_writes_per_message": router.extra["ledger_writes_per_message"],
            "redis_round_trips_per_message": router.extra["redis_round_trips_per_message"],
            "redis_bytes_per_million_transitions": router.extra["redis_bytes_per_million_transitions"],
            "moto_server": router_server.extra,
            "failing_envelope": failing.extra,
        },
        "archiver": {
            "files_per_s": round(archiver.files_per_s, 1),
            "arrival_files_per_s": ARRIVAL_FILES_PER_S,
        },
        "redis": redis_footprint,
        "end_to_end": end_to_end.as_dict(),
        "parse": parse,
        "ratios": ratios,
    }
    out = Path(args.out)
    write_json(out / "results.json", results)
    if not args.quick:
        # `sluice cost` reads the last full run's figures from this committed copy.
        committed = load_committed()
        kept = {k: committed[k] for k in KEPT_FROM_COMMITTED if k in committed}
        breakdown = committed.get("loader", {}).get("efs_ops_breakdown_per_file")
        loader = {**results["loader"], "efs_ops_breakdown_per_file": breakdown}
        write_json(COMMITTED_RESULTS, {**results, **kept, "loader": loader})
        console.print(f"refreshed {COMMITTED_RESULTS} (commit it)")
    write_chart(out / "results.png", baseline, sluice)
    console.print(f"wrote {out / 'results.json'} and {out / 'results.png'}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run (< 60 s)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every scenario's size (the smoke test uses 0.05)"
    )
    parser.add_argument("--out", default="build/bench", help="output directory (default build/bench)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting redis-server")
    parser.add_argument("--aws-endpoint-url", help="use this moto server instead of starting one")
    parser.add_argument(
        "--only",
        choices=["all", "parse"],
        default="all",
        help="run one scenario (parse: junk-only/NDJSON MB/s)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "sluice-bench")
    # Wide enough for the table when the output is not a terminal (CI logs, files).
    run(args, Console(width=None if os.isatty(1) else 180))


if __name__ == "__main__":
    main()


__all__ = ["Measurement", "main", "run"]
