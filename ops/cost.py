"""`sluice cost`: a monthly bill by service for one environment's settings, beside the
straightforward design's (one SQS message per record), and the lever that moves it most.

Every per-operation figure comes from the benchmark's committed results
(`bench/results-committed.json`, rewritten by a full `make bench`); every price from one dated
file (`ops/prices.json`). The model is arithmetic over those, so its inputs can be overridden
and checked by hand (tests/unit/test_ops_cost.py reproduces issue 26's example).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.config import EnvironmentConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
PRICES_FILE = Path(__file__).resolve().parent / "prices.json"
RESULTS_FILE = REPO_ROOT / "bench" / "results-committed.json"
KIB = 1024
GIB = 1024**3
SQS_UNIT_BYTES = 64 * KIB
HOURS_PER_MONTH = 730
LAMBDA_MB_PER_VCPU = 1769
ENDPOINT_SERVICES = 5  # sqs, ssm, secretsmanager, logs, monitoring (stacks/stateful.py)
ALARMS_ESTIMATE = 16  # what the stateless stack creates with every system on (estimate)
CUSTOM_METRICS_ESTIMATE = 20
LOG_BYTES_PER_INVOCATION = 2_000
LEVER_RECORDS_PER_FILE = (1, 10, 60, 100, 1000)


class CostInputError(ValueError):
    """A cost input that cannot be modelled (negative rate, unknown node type, …)."""


def load_json(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@dataclass(frozen=True)
class EfsOps:
    """EFS operations per file, writer and sluice together."""

    data_reads: float = 1
    data_writes: float = 1
    metadata_reads: float = 2
    metadata_writes: float = 3


@dataclass(frozen=True)
class Measured:
    """What the bench measured (per file, per record, per second of one vCPU)."""

    efs_ops: EfsOps = field(default_factory=EfsOps)
    units_per_record_one: float = 0.00755
    units_per_record_hundred: float = 0.0073
    baseline_units_per_record: float = 1.0005
    bench_record_bytes: int = 400
    loader_files_per_s_1_process: float = 5746.0
    loader_files_per_s_2_processes: float = 7577.0
    loader_records_per_s_hundred: float = 137873.0
    router_transitions_per_s: float = 32604.0
    ledger_writes_per_message: float = 1.0
    archiver_files_per_s: float = 14476.0

    @classmethod
    def from_results(cls, results: dict[str, Any]) -> Measured:
        scenarios, core = results["scenarios"], results["loader_core"]
        ops = results["loader"].get("efs_ops_breakdown_per_file") or {}
        return cls(
            efs_ops=EfsOps(**ops),
            units_per_record_one=scenarios["sluice:one_record"]["billed_units_per_record"],
            units_per_record_hundred=scenarios["sluice:hundred_records"]["billed_units_per_record"],
            baseline_units_per_record=scenarios["baseline:one_record"]["billed_units_per_record"],
            bench_record_bytes=results.get("bench_record_bytes", 400),
            loader_files_per_s_1_process=core["efs_latency_1_process"]["files_per_s"],
            loader_files_per_s_2_processes=core["efs_latency"]["files_per_s"],
            loader_records_per_s_hundred=core["efs_latency_hundred_records"]["records_per_s"],
            router_transitions_per_s=results["router"]["moto_server"]["transitions_per_s"],
            ledger_writes_per_message=results["router"]["ledger_writes_per_message"],
            archiver_files_per_s=results["archiver"]["files_per_s"],
        )


@dataclass(frozen=True)
class Workload:
    files_per_s: float = 6000.0
    records_per_file: int = 1
    record_bytes: int = 400
    days: float = 30.0
    transitions_per_record: float = 1.0

    @property
    def files(self) -> float:
        return self.files_per_s * self.days * 86_400

    @property
    def records(self) -> float:
        return self.files * self.records_per_file

    @property
    def seconds(self) -> float:
        return self.days * 86_400


@dataclass(frozen=True)
class Line:
    service: str
    item: str
    usd: float
    basis: str

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "item": self.item, "usd": round(self.usd, 2), "basis": self.basis}


@dataclass(frozen=True)
class Settings:
    """The environment settings the bill depends on (from cdk.json, or given by a test)."""

    name: str = "custom"
    efs_mode: str = "elastic"
    efs_provisioned_mibps: int = 0
    loader_processes: int = 1
    loader_memory_mb: int = 1769
    function_memory_mb: int = 1024
    max_message_bytes: int = 1_048_576
    nat_gateways: int = 1
    azs: int = 2
    redis_node_type: str = "cache.t4g.micro"
    redis_nodes: int = 1
    fifo: bool = False

    @classmethod
    def from_config(cls, config: EnvironmentConfig) -> Settings:
        ingest = config.ingest
        return cls(
            name=config.name,
            efs_mode=str(ingest.efs_throughput_mode),
            efs_provisioned_mibps=ingest.efs_provisioned_mibps or 0,
            loader_processes=ingest.processes,
            loader_memory_mb=ingest.loader_memory_mb,
            function_memory_mb=config.functions.memory_mb,
            max_message_bytes=config.queues.max_message_bytes,
            nat_gateways=config.network.nat_gateways,
            azs=config.network.max_azs,
            redis_node_type=config.redis.node_type,
            redis_nodes=1 + config.redis.replicas,
        )


def efs_bytes_per_file(ops: EfsOps, file_bytes: int, prices: dict[str, Any]) -> tuple[float, float]:
    """(read, written) bytes Elastic meters for one file: each data operation at least the data
    minimum, each metadata operation exactly the metadata minimum."""
    data = max(prices["efs_elastic_data_op_min_kib"] * KIB, file_bytes)
    meta = prices["efs_elastic_metadata_op_min_kib"] * KIB
    return (
        ops.data_reads * data + ops.metadata_reads * meta,
        ops.data_writes * data + ops.metadata_writes * meta,
    )


def efs_elastic_per_file(ops: EfsOps, file_bytes: int, prices: dict[str, Any]) -> float:
    read, written = efs_bytes_per_file(ops, file_bytes, prices)
    return (
        read / GIB * prices["efs_elastic_read_per_gib"] + written / GIB * prices["efs_elastic_write_per_gib"]
    )


def units_per_record(measured: Measured, workload: Workload) -> float:
    """sluice's billed SQS units per record: the bench's figure (interpolated between its 1- and
    100-record files), scaled by record size against the bench's records."""
    k = min(max(workload.records_per_file, 1), 100)
    one, hundred = measured.units_per_record_one, measured.units_per_record_hundred
    base = one + (hundred - one) * (k - 1) / 99
    return base * workload.record_bytes / measured.bench_record_bytes


def baseline_units_per_record(measured: Measured, workload: Workload) -> float:
    return measured.baseline_units_per_record * math.ceil(workload.record_bytes / SQS_UNIT_BYTES)


class Bill:
    """The lines of one design's monthly bill."""

    def __init__(
        self, settings: Settings, workload: Workload, measured: Measured, prices: dict[str, Any]
    ) -> None:
        self.settings, self.workload, self.measured, self.prices = settings, workload, measured, prices
        self.lines: list[Line] = []

    def add(self, service: str, item: str, usd: float, basis: str) -> None:
        self.lines.append(Line(service, item, usd, basis))

    @property
    def total(self) -> float:
        return sum(line.usd for line in self.lines)

    def by_service(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.lines:
            out[line.service] = out.get(line.service, 0.0) + line.usd
        return out


def _efs(bill: Bill) -> None:
    s, w, m, p = bill.settings, bill.workload, bill.measured, bill.prices
    file_bytes = w.records_per_file * w.record_bytes
    write_ops_per_s = w.files_per_s * (m.efs_ops.data_writes + m.efs_ops.metadata_writes)
    if s.efs_mode == "elastic":
        per_file = efs_elastic_per_file(m.efs_ops, file_bytes, p)
        read, written = efs_bytes_per_file(m.efs_ops, file_bytes, p)
        basis = (
            f"{w.files:,.0f} files × {read / KIB:,.0f} KiB read + {written / KIB:,.0f} KiB written "
            f"(metering minimums) = ${per_file * 1e6:,.2f} per million files"
        )
        bill.add("EFS", "Elastic throughput", w.files * per_file, basis)
    elif s.efs_mode == "provisioned":
        usd = s.efs_provisioned_mibps * p["efs_provisioned_per_mibps_month"]
        bill.add("EFS", "Provisioned throughput", usd, f"{s.efs_provisioned_mibps} MiB/s × $6/month")
    else:
        bill.add("EFS", "Bursting throughput", 0.0, "no throughput charge; storage only")
    if s.efs_mode == "provisioned":
        # Metered throughput (reads count a third), with the same per-operation minimums: an estimate.
        read, written = efs_bytes_per_file(m.efs_ops, file_bytes, p)
        needed = w.files_per_s * (read / 3 + written) / (1024 * KIB)
        if needed > s.efs_provisioned_mibps:
            bill.add(
                "EFS", "WARNING metered throughput over provisioned", 0.0, f"needs ≈ {needed:,.0f} MiB/s"
            )
    caps = {"bursting": 7_000, "provisioned": 25_000, "elastic": 500_000}
    if write_ops_per_s > caps.get(s.efs_mode, 0):
        bill.add("EFS", "WARNING write IOPS over the mode's cap", 0.0, f"{write_ops_per_s:,.0f} writes/s")


def _sqs(bill: Bill, units: float, messages: float) -> None:
    s, w, p = bill.settings, bill.workload, bill.prices
    price = p["sqs_fifo_per_million_units"] if s.fifo else p["sqs_standard_per_million_units"]
    send = w.records * units
    bill.add(
        "SQS", "sends", send / 1e6 * price, f"{units:.5g} billed units/record × {w.records:,.0f} records"
    )
    bill.add("SQS", "receives (router mapping)", send / 1e6 * price, "the same 64 KiB chunks, received once")
    bill.add(
        "SQS", "deletes", messages / 10 / 1e6 * price, f"{messages:,.0f} messages, DeleteMessageBatch of 10"
    )


def packed_messages(workload: Workload, max_message_bytes: int) -> float:
    """Messages sluice sends: records packed greedily up to the maximum message size."""
    return workload.records / max(1, max_message_bytes // max(1, workload.record_bytes))


def _lambda(bill: Bill, messages: float) -> None:
    s, w, m, p = bill.settings, bill.workload, bill.measured, bill.prices
    loader_files_per_s = (
        m.loader_files_per_s_2_processes if s.loader_processes > 1 else m.loader_files_per_s_1_process
    )
    # Time per file grows with records per file (the bench's 1- and 100-record files, per invocation).
    per_record = max(0.0, (100 / m.loader_records_per_s_hundred - 1 / m.loader_files_per_s_1_process) / 99)
    seconds_per_file = 1 / loader_files_per_s + per_record * (w.records_per_file - 1)
    loader_gb_s = w.files * seconds_per_file * s.loader_memory_mb / 1024
    bill.add(
        "Lambda",
        "loader",
        loader_gb_s * p["lambda_arm64_per_gb_s"],
        f"{1 / seconds_per_file:,.0f} files/s per invocation ({s.loader_processes} process(es), "
        f"{s.loader_memory_mb} MB): {loader_gb_s:,.0f} GB-s",
    )
    vcpu = min(1.0, s.function_memory_mb / LAMBDA_MB_PER_VCPU)
    router_s = w.records * w.transitions_per_record / (m.router_transitions_per_s * vcpu)
    router_gb_s = router_s * s.function_memory_mb / 1024
    bill.add(
        "Lambda",
        "router",
        router_gb_s * p["lambda_arm64_per_gb_s"],
        f"{m.router_transitions_per_s:,.0f} transitions/s per vCPU × {vcpu:.2f} vCPU: "
        f"{router_gb_s:,.0f} GB-s",
    )
    archiver_gb_s = w.files / m.archiver_files_per_s * s.function_memory_mb / 1024
    requests = messages / 10 + w.seconds / 60 * 2 + w.seconds / 300
    bill.add("Lambda", "archiver", archiver_gb_s * p["lambda_arm64_per_gb_s"], f"{archiver_gb_s:,.0f} GB-s")
    bill.add(
        "Lambda",
        "requests",
        requests / 1e6 * p["lambda_per_million_requests"],
        f"{requests:,.0f} invocations (router batches of 10 messages, schedules)",
    )


def _writes(bill: Bill, messages: float) -> None:
    m, p = bill.measured, bill.prices
    ledger = messages * m.ledger_writes_per_message
    bill.add(
        "DynamoDB",
        "ledger writes",
        ledger / 1e6 * p["dynamodb_per_million_write_units"],
        f"{m.ledger_writes_per_message:g} write/message × {messages:,.0f} messages",
    )
    bill.add(
        "S3",
        "sink PUTs",
        messages / 1000 * p["s3_put_per_thousand"],
        f"one object per envelope: {messages:,.0f} PUTs",
    )


def _fixed(bill: Bill) -> None:
    s, w, p = bill.settings, bill.workload, bill.prices
    months = w.days * 24 / HOURS_PER_MONTH
    nat = s.nat_gateways * p["nat_gateway_per_hour"] * HOURS_PER_MONTH * months
    bill.add(
        "VPC",
        "NAT gateways",
        nat,
        f"{s.nat_gateways} × ${p['nat_gateway_per_hour']}/h (AWS APIs go through endpoints)",
    )
    sqs_gb = 2 * w.records * w.record_bytes / 1e9
    endpoints = ENDPOINT_SERVICES * s.azs * p["interface_endpoint_per_az_hour"] * HOURS_PER_MONTH * months
    bill.add(
        "VPC",
        "interface endpoints",
        endpoints + sqs_gb * p["interface_endpoint_per_gb"],
        f"{ENDPOINT_SERVICES} services × {s.azs} AZs + {sqs_gb:,.0f} GB through the SQS endpoint",
    )
    node_prices = p["elasticache_node_per_hour"]
    if s.redis_node_type not in node_prices:
        raise CostInputError(f"no price for ElastiCache node type {s.redis_node_type} in {PRICES_FILE.name}")
    redis = s.redis_nodes * node_prices[s.redis_node_type] * HOURS_PER_MONTH * months
    bill.add("ElastiCache", "Redis nodes", redis, f"{s.redis_nodes} × {s.redis_node_type}")
    invocations = w.records / 1000 + w.seconds / 60 * 2
    logs_gb = invocations * LOG_BYTES_PER_INVOCATION / 1e9
    watch = (
        ALARMS_ESTIMATE * p["cloudwatch_alarm_per_month"]
        + CUSTOM_METRICS_ESTIMATE * p["cloudwatch_metric_per_month"]
        + p["cloudwatch_dashboard_per_month"]
        + logs_gb * p["cloudwatch_logs_ingest_per_gb"]
    ) * months
    bill.add("CloudWatch", "alarms, metrics, dashboard, logs", watch, f"estimate; {logs_gb:,.1f} GB of logs")


def sluice_bill(settings: Settings, workload: Workload, measured: Measured, prices: dict[str, Any]) -> Bill:
    bill = Bill(settings, workload, measured, prices)
    units = units_per_record(measured, workload)
    messages = packed_messages(workload, settings.max_message_bytes)
    _efs(bill)
    _sqs(bill, units, messages)
    _lambda(bill, messages)
    _writes(bill, messages)
    _fixed(bill)
    return bill


def baseline_bill(settings: Settings, workload: Workload, measured: Measured, prices: dict[str, Any]) -> Bill:
    """The straightforward design: one SQS message per record, so one ledger write and one sink
    object per record, on the same file system and network."""
    bill = Bill(settings, workload, measured, prices)
    units = baseline_units_per_record(measured, workload)
    _efs(bill)
    _sqs(bill, units, workload.records)
    _lambda(bill, workload.records)
    _writes(bill, workload.records)
    _fixed(bill)
    return bill


def lever(
    settings: Settings, workload: Workload, measured: Measured, prices: dict[str, Any]
) -> list[dict[str, Any]]:
    """The same records/s written K records per file, for a few K."""
    records_per_s = workload.files_per_s * workload.records_per_file
    rows = []
    for k in LEVER_RECORDS_PER_FILE:
        shaped = dataclasses.replace(workload, records_per_file=k, files_per_s=records_per_s / k)
        bill = sluice_bill(settings, shaped, measured, prices)
        rows.append(
            {"records_per_file": k, "files_per_s": round(records_per_s / k, 2), "usd": round(bill.total, 2)}
        )
    return rows


def estimate(
    settings: Settings,
    workload: Workload,
    measured: Measured | None = None,
    prices: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole answer as one JSON-able document."""
    if workload.files_per_s < 0 or workload.records_per_file < 1 or workload.record_bytes < 1:
        raise CostInputError("files/s must be >= 0, records per file and record bytes >= 1")
    measured = measured or Measured.from_results(load_json(RESULTS_FILE))
    prices = prices or load_json(PRICES_FILE)
    ours = sluice_bill(settings, workload, measured, prices)
    theirs = baseline_bill(settings, workload, measured, prices)
    return {
        "environment": settings.name,
        "prices": {"as_of": prices["as_of"], "region": prices["region"], "source": PRICES_FILE.name},
        "workload": {
            **dataclasses.asdict(workload),
            "files_per_month": workload.files,
            "records_per_month": workload.records,
        },
        "settings": dataclasses.asdict(settings),
        "sluice": {
            "lines": [line.as_dict() for line in ours.lines],
            "by_service": _rounded(ours.by_service()),
            "total": round(ours.total, 2),
        },
        "one_message_per_record": {
            "lines": [line.as_dict() for line in theirs.lines],
            "by_service": _rounded(theirs.by_service()),
            "total": round(theirs.total, 2),
        },
        "lever_records_per_file": lever(settings, workload, measured, prices),
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 2) for name, value in values.items()}
