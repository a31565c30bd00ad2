"""`python -m local` (what `make run` calls): run sluice on this machine and prove that every
record reached the sink exactly once.

Exit status: 0 when every record arrived once and every file met its expected fate; 1 on any
loss, duplicate, unexpected record, wrong fate, dead letter, halted batch or timeout; 2 on a
usage or configuration error; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.live import Live

from local.environment import load_local_config, local_environment
from local.faults import SqsFaults
from local.function_options import FunctionOptions
from local.functions import InvocationResult
from local.report import file_report, progress_view, render_files, render_summary, summary, write_json
from local.run import LocalRun, RunOptions, Snapshot
from local.scheduler import parse_interval
from local.systems import SYSTEMS
from local.writer import FileShape
from runtime.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_LOG = Path("build/local/functions.log")
NON_LIVE_EVERY_S = 2.0  # a progress line this often without the live display


def _pairs(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name.strip(), value.strip()


def _schedule(text: str) -> tuple[str, str]:
    name, rate = _pairs(text)
    try:
        parse_interval(rate)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, rate


def _concurrency(text: str) -> tuple[str, int]:
    name, value = _pairs(text)
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"concurrency of {name} must be a positive integer")
    return name, int(value)


def _setting(text: str) -> tuple[str, Any]:
    path, raw = _pairs(text)
    try:
        return path, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return path, raw


def _kill_at(text: str) -> tuple[str, str, int]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and not parts[2].isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not FUNCTION:STEP[:DEATHS]")
    return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 1


def _sqs_faults(text: str) -> SqsFaults:
    try:
        return SqsFaults.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _systems(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    return names


def _positive(kind: type[float] | type[int]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be > 0")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description=(
            "Run sluice on this machine: a real redis-server and a moto server, every queue, "
            "bucket, table, parameter and secret created from the same config the stacks use "
            "(cdk.json, the env overlaid with the `local` block), the real handlers driven by a "
            "scheduler and an SQS event source mapping, fed by a writer simulator (or your own "
            "files with --inbox). Ends with a summary that checks every record reached the sink "
            "exactly once; exits 1 on any loss or duplicate."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--duration", type=_positive(float), default=60.0, metavar="S", help="seconds of writing"
    )
    run.add_argument(
        "--rate", type=_positive(float), default=6000.0, metavar="R", help="records written per second"
    )
    run.add_argument(
        "--timeout",
        type=_positive(float),
        default=120.0,
        metavar="S",
        help="after writing stops (or the inbox is copied), how long every file may take to meet its fate",
    )
    run.add_argument(
        "--systems",
        type=_systems,
        default=("ingest", "pipeline"),
        metavar="LIST",
        help=f"comma-separated systems to run ({', '.join(SYSTEMS)})",
    )
    run.add_argument("--json", type=Path, metavar="PATH", help="write the run summary as JSON")
    run.add_argument(
        "--inbox",
        type=Path,
        metavar="DIR",
        help="load your own files: DIR's entries are copied into the share (symlinks as symlinks, "
        "DIR never modified), the writer is off, and the run ends when every file has a fate",
    )
    run.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="write every file's fate (with its delivered item ids) as JSON",
    )
    run.add_argument(
        "--share",
        type=Path,
        metavar="DIR",
        help="the local 'EFS' share, kept after the run (unset: a temporary directory, removed)",
    )
    run.add_argument("--env", default="dev", help="the cdk.json environment to overlay the `local` block on")
    run.add_argument(
        "--set",
        dest="settings",
        type=_setting,
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a config value for this run, e.g. queues.max_message_bytes=65536 "
        "(validated like cdk.json)",
    )
    run.add_argument("--no-live", action="store_true", help="no live progress display")
    run.add_argument(
        "--serve",
        action="store_true",
        help="keep redis-server, the moto server and the resources up (no writer, no functions) until "
        "interrupted, their endpoints in --state-file, for `sluice … --local`",
    )
    run.add_argument(
        "--state-file", type=Path, default=Path("build/local-serve.json"), metavar="PATH", help="with --serve"
    )
    run.add_argument(
        "--log",
        type=Path,
        default=DEFAULT_LOG,
        metavar="PATH",
        help="where the functions' own output (Powertools logs and metrics) goes",
    )

    servers = parser.add_argument_group("servers (started on free loopback ports unless given)")
    servers.add_argument("--redis-url", metavar="URL", help="use this Redis instead of starting redis-server")
    servers.add_argument(
        "--aws-endpoint-url",
        metavar="URL",
        help="use this moto server instead of starting one (resources get a per-run name suffix)",
    )

    writer = parser.add_argument_group("writer simulator")
    writer.add_argument(
        "--records-per-file", type=_positive(int), default=100, metavar="N", help="records in each good file"
    )
    writer.add_argument(
        "--record-bytes",
        type=_positive(int),
        default=400,
        metavar="B",
        help="approximate JSON size of a record",
    )
    writer.add_argument(
        "--junk-lines", type=int, default=3, metavar="N", help="comment lines at the top of each file"
    )
    writer.add_argument(
        "--pieces", type=_positive(int), default=3, metavar="N", help="writes per file (never atomic)"
    )
    writer.add_argument(
        "--stall",
        type=float,
        default=0.0,
        metavar="S",
        help="longest pause between a file's pieces (must stay below ingest.settle_s)",
    )
    writer.add_argument("--ndjson", action="store_true", help="one record per line instead of a JSON array")
    writer.add_argument(
        "--bad-share",
        type=float,
        default=0.002,
        metavar="P",
        help="probability that a bad file (docs/bad-input.md#files-ingest) is written beside a good one",
    )
    writer.add_argument("--seed", type=int, help="seed for the writer's choices")
    writer.add_argument(
        "--relay-rate",
        type=_positive(float),
        metavar="R",
        help="with the relay system: items inserted into its source table per second (default: half "
        "the drain's relay.calls_per_minute budget)",
    )
    writer.add_argument(
        "--gateway-rate",
        type=_positive(float),
        default=5.0,
        metavar="R",
        help="with the gateway system: requests posted to POST /messages per second",
    )

    functions = parser.add_argument_group("functions")
    functions.add_argument(
        "--schedule",
        type=_schedule,
        action="append",
        default=[],
        metavar="NAME=RATE",
        help="tick a scheduled function at RATE (2s, 500ms, rate(1 minute)); local defaults: "
        "loader=1s checker=5s archiver=10s drain=1s",
    )
    functions.add_argument(
        "--sqs-faults",
        type=_sqs_faults,
        metavar="SPEC",
        help="inject faults into the functions' SendMessageBatch calls, e.g. "
        "throttle=0.1,partial=0.2,lost_response=0.05 (probabilities; see local/faults.py)",
    )
    functions.add_argument(
        "--config-schedules", action="store_true", help="use the config's schedules as they are"
    )
    functions.add_argument(
        "--concurrency",
        type=_concurrency,
        action="append",
        default=[],
        metavar="NAME=N",
        help="maximum concurrent invocations (defaults: loader=2, checker=1, archiver=1, router=the "
        "mapping's pipeline.max_concurrency)",
    )
    functions.add_argument(
        "--isolate",
        action="append",
        default=[],
        metavar="NAME",
        help="run every invocation of NAME in a child process (a crash ends only that invocation)",
    )
    functions.add_argument(
        "--kill-at",
        type=_kill_at,
        action="append",
        default=[],
        metavar="FUNCTION:STEP[:N]",
        help="crash test: run FUNCTION in child processes with SLUICE_KILL_AT=STEP until N "
        "(default 1) of them died at that step",
    )
    return parser


def _overrides(settings: list[tuple[str, Any]]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in settings:
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def options_from(
    args: argparse.Namespace, on_failure: Callable[[str, int, InvocationResult], None] | None = None
) -> RunOptions:
    return RunOptions(
        duration_s=args.duration,
        rate=args.rate,
        timeout_s=args.timeout,
        systems=args.systems,
        shape=FileShape(
            records_per_file=args.records_per_file,
            record_bytes=args.record_bytes,
            junk_lines=args.junk_lines,
            pieces=args.pieces,
            stall_s=args.stall,
            ndjson=args.ndjson,
        ),
        bad_share=args.bad_share,
        seed=args.seed,
        inbox=args.inbox,
        functions=FunctionOptions(
            schedules=dict(args.schedule),
            use_config_schedules=args.config_schedules,
            concurrency=dict(args.concurrency),
            isolate=frozenset(args.isolate),
            kill_at={function: (step, deaths) for function, step, deaths in args.kill_at},
            on_failure=on_failure,
        ),
    )


@contextlib.contextmanager
def functions_output_to(log: Path) -> Iterator[TextIO]:
    """Send fd 1 (where handlers and Powertools write) to `log`; yield the real stdout for the
    console, and put everything back afterwards."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    saved = os.dup(1)
    console_stream = os.fdopen(os.dup(saved), "w", encoding="utf-8", errors="replace")
    with open(log, "ab") as log_file:
        os.dup2(log_file.fileno(), 1)
    try:
        yield console_stream
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        console_stream.flush()
        console_stream.close()


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser, settle_s: float) -> None:
    if args.stall >= settle_s:
        parser.error(
            f"--stall {args.stall} must stay below ingest.settle_s ({settle_s}): "
            "the loader would claim half-written files"
        )
    if args.report is not None and args.inbox is None:
        parser.error("--report needs --inbox (the writer's run is summarised by --json)")
    if args.inbox is not None and not args.inbox.is_dir():
        parser.error(f"--inbox {args.inbox} is not a directory")
    if not 0 <= args.bad_share <= 1:
        parser.error("--bad-share must be between 0 and 1")


def main(argv: list[str] | None = None) -> int:
    # Powertools warns on stderr for every invocation that emitted no metric (an idle checker):
    # noise on a console whose functions' output goes to the log.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_local_config(args.env, _overrides(args.settings))
    except ConfigError as exc:
        parser.error(str(exc))
    _check(args, parser, config.ingest.settle_s)
    if args.serve:
        from local.serve import serve

        return serve(Console(), config, share=args.share, state_file=args.state_file)
    with functions_output_to(args.log) as console_stream:
        console = Console(file=console_stream)
        if not console.is_terminal:
            console.width = 160

        def report_failure(name: str, number: int, result: InvocationResult) -> None:
            what = "timed out" if result.timed_out else f"failed: {result.error}"
            console.print(f"[yellow]{name} invocation {number} {what}[/]")

        options = options_from(args, report_failure)
        relay_rate = args.relay_rate or config.relay.calls_per_minute / 60 / 2
        options = dataclasses.replace(options, relay_rate=relay_rate, gateway_rate=args.gateway_rate)
        try:
            return _run(console, args, options, config)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; servers and the temporary share were cleaned up[/]")
            return EXIT_INTERRUPTED


def _run(console: Console, args: argparse.Namespace, options: RunOptions, config: Any) -> int:
    live_wanted = not args.no_live and console.is_terminal
    faults = args.sqs_faults
    if faults is not None and args.seed is not None:
        faults = SqsFaults(faults.throttle, faults.partial, faults.lost_response, seed=args.seed)
    with local_environment(
        config=config,
        share=args.share,
        redis_url=args.redis_url,
        aws_endpoint_url=args.aws_endpoint_url,
        sqs_faults=faults,
        api_stub="relay" in options.systems,
    ) as environment:
        console.print(
            f"sluice local: redis {environment.redis_url}, moto {environment.aws_endpoint_url}, "
            f"share {environment.share}; functions' logs in {args.log}"
        )
        live = Live(console=console, refresh_per_second=2, transient=False) if live_wanted else None
        on_snapshot = _snapshot_printer(console, live)
        with live if live is not None else contextlib.nullcontext():
            result = LocalRun(environment, options, on_snapshot=on_snapshot).run()
        document = summary(result, share=environment.share)
        if environment.fault_proxy is not None:
            document["sqs_faults_injected"] = dict(environment.fault_proxy.stats.injected)
        if args.inbox is not None:
            report = file_report(result, share=environment.share)
            render_files(console, report)
            if args.report is not None:
                write_json(args.report, report)
        render_summary(console, document)
        if args.json is not None:
            write_json(args.json, document)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED


def _depth(depth: dict[str, int]) -> str:
    return "{visible}/{in_flight}/{delayed}".format(**depth)


def _snapshot_printer(console: Console, live: Live | None) -> Callable[[Snapshot], None]:
    last_line = [0.0]

    def show(snapshot: Snapshot) -> None:
        if live is not None:
            live.update(progress_view(snapshot))
            return
        if snapshot.elapsed_s - last_line[0] >= NON_LIVE_EVERY_S:
            last_line[0] = snapshot.elapsed_s
            console.print(
                f"{snapshot.phase:>9} {snapshot.elapsed_s:6.1f}s written {snapshot.records_written:,} "
                f"delivered {snapshot.records_delivered:,} ({snapshot.records_per_s:,.0f}/s) "
                f"rejected files {snapshot.share.rejected}, claimed {snapshot.share.claimed}, "
                f"state queue {_depth(snapshot.queues['state'])}, dlq {_depth(snapshot.queues['state dlq'])}"
            )

    return show
