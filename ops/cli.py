"""`sluice`: the operator's command line (never shipped to Lambda).

    sluice cost --env prod [--files-per-s N] [--records-per-file K] [--record-bytes B]
    sluice status (--env NAME | --local)
    sluice dlq ls|show|redrive QUEUE (--env NAME | --local)
    sluice ingest rejected ls|show|replay, sluice ingest halted ls|show|resume (--env NAME | --local)

Every command takes `--json` (a machine-readable answer on stdout instead of tables).
`--env NAME` reads a deployed environment's stacks (`sluice-<env>-stateful` / `-stateless`)
through CloudFormation with your usual AWS credentials; `--local` reads the state file
`python -m local --serve` writes (build/local-serve.json).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ops.target import DEFAULT_STATE_FILE, Target, TargetError

EXIT_OK, EXIT_ATTENTION, EXIT_ERROR = 0, 1, 2


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        console.width = 140
    return console


def emit(as_json: bool, document: Any, render: Callable[[Console, Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        render(_console(), document)


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")(command)


def target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--env NAME | --local [--state PATH]; the command receives `target`."""

    @click.option("--env", "env", metavar="NAME", help="a deployed environment (CloudFormation outputs)")
    @click.option("--local", "local", is_flag=True, help="the servers `python -m local --serve` keeps up")
    @click.option(
        "--state",
        type=click.Path(path_type=Path),
        default=DEFAULT_STATE_FILE,
        show_default=True,
        help="the state file of `python -m local --serve`",
    )
    @functools.wraps(command)
    def wrapper(env: str | None, local: bool, state: Path, **kwargs: Any) -> Any:
        if bool(env) == local:
            raise click.UsageError("give exactly one of --env NAME or --local")
        try:
            target = Target.local(state) if local else Target.deployed(str(env))
        except TargetError as exc:
            raise click.ClickException(str(exc)) from None
        return command(target=target, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """sluice's operator command line: status, dead letters, and what it will cost."""


# -- cost -------------------------------------------------------------------------------------


@main.command()
@click.option("--env", "env", default="dev", show_default=True, help="the cdk.json environment")
@click.option("--files-per-s", type=click.FloatRange(min=0), default=6000.0, show_default=True)
@click.option("--records-per-file", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--record-bytes", type=click.IntRange(min=1), default=400, show_default=True)
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True)
@json_option
def cost(  # noqa: PLR0917 - click passes options positionally by name
    env: str, files_per_s: float, records_per_file: int, record_bytes: int, days: float, as_json: bool
) -> None:
    """A monthly bill by service for ENV's settings, beside one-message-per-record's."""
    from ops.cost import CostInputError, Settings, Workload, estimate
    from ops.target import load_config
    from runtime.errors import ConfigError

    try:
        settings = Settings.from_config(load_config(env))
        document = estimate(settings, Workload(files_per_s, records_per_file, record_bytes, days))
    except (ConfigError, CostInputError) as exc:
        raise click.ClickException(str(exc)) from None
    emit(as_json, document, render_cost)


def render_cost(console: Console, doc: dict[str, Any]) -> None:
    w, s = doc["workload"], doc["settings"]
    console.print(
        f"[bold]sluice cost --env {doc['environment']}[/]: {w['files_per_s']:,g} files/s × "
        f"{w['records_per_file']:,} records × {w['record_bytes']:,} B for {w['days']:g} days = "
        f"{w['files_per_month']:,.0f} files, {w['records_per_month']:,.0f} records; EFS {s['efs_mode']}; "
        f"prices {doc['prices']['region']} as of {doc['prices']['as_of']} ({doc['prices']['source']})"
    )
    table = Table(title="monthly bill (USD)")
    for column in ("service", "item", "sluice", "basis"):
        table.add_column(column, justify="right" if column == "sluice" else "left")
    for line in doc["sluice"]["lines"]:
        table.add_row(line["service"], line["item"], f"{line['usd']:,.2f}", line["basis"])
    table.add_row("", "[bold]total[/]", f"[bold]{doc['sluice']['total']:,.2f}[/]", "")
    console.print(table)
    compare = Table(title="by service: sluice vs one message per record")
    for column in ("service", "sluice", "one message per record"):
        compare.add_column(column, justify="left" if column == "service" else "right")
    baseline = doc["one_message_per_record"]["by_service"]
    for service, usd in doc["sluice"]["by_service"].items():
        compare.add_row(service, f"{usd:,.2f}", f"{baseline.get(service, 0.0):,.2f}")
    compare.add_row(
        "[bold]total[/]", f"{doc['sluice']['total']:,.2f}", f"{doc['one_message_per_record']['total']:,.2f}"
    )
    console.print(compare)
    lever = Table(title="the lever: the same records/s, K records per file")
    for column in ("records per file", "files/s", "sluice total"):
        lever.add_column(column, justify="right")
    for row in doc["lever_records_per_file"]:
        lever.add_row(f"{row['records_per_file']:,}", f"{row['files_per_s']:,g}", f"{row['usd']:,.2f}")
    console.print(lever)


# -- status -----------------------------------------------------------------------------------


@main.command()
@click.option(
    "--minutes", type=click.IntRange(min=1, max=1440), default=5, show_default=True, help="rate window"
)
@target_options
@json_option
def status(target: Target, minutes: int, as_json: bool) -> None:
    """Per system: backlog, batches, halted/rejected, queues and DLQs, alarms, scheduled runs.
    Exits 1 when something needs a person (an alarm, a DLQ not empty, a halted batch)."""
    from ops.status import collect

    document = collect(target, minutes)
    emit(as_json, document, render_status)
    raise SystemExit(EXIT_ATTENTION if document["attention"] else EXIT_OK)


def _age(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:,.0f} s"


def render_status(console: Console, doc: dict[str, Any]) -> None:
    console.print(f"[bold]sluice status[/] {doc['environment']} at {doc['at']}")
    ingest = doc["ingest"]
    share = ingest.get("share")
    table = Table(title="ingest")
    table.add_column("what")
    table.add_column("value", justify="right")
    if isinstance(share, dict):
        for key, value in share.items():
            label = key.removesuffix("_s").replace("_", " ")
            table.add_row(label, _age(value) if key.endswith("age_s") else f"{value:,}")
    else:
        table.add_row("share", str(share))
    for group in ("redis", *(k for k in ingest if k.startswith("last_"))):
        for key, value in ingest.get(group, {}).items():
            table.add_row(f"{group.replace('_', ' ')}: {key.replace('_', ' ')}", str(value))
    console.print(table)
    queues = Table(title="queues")
    for column in ("queue", "dead letters of", "visible", "in flight", "delayed", "oldest"):
        queues.add_column(column, justify="left" if column in ("queue", "dead letters of") else "right")
    for queue in doc.get("queues", []):
        queues.add_row(
            queue["name"],
            queue["dlq_of"] or "",
            f"{queue['visible']:,}",
            f"{queue['in_flight']:,}",
            f"{queue['delayed']:,}",
            _age(queue["oldest_age_s"]),
        )
    console.print(queues)
    for role, when in doc.get("scheduled_last_run", {}).items():
        console.print(f"last run of {role}: {when or 'not in the last hour'}")
    for alarm in doc.get("alarms_in_alarm", []):
        console.print(f"[red]ALARM[/] {alarm['name']}: {alarm['reason']}")
    if doc["attention"]:
        console.print("[bold red]needs a person:[/] " + "; ".join(doc["attention"]))
    else:
        console.print("[green]nothing needs a person[/]")


# -- dlq --------------------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Dead letters: list, show one, redrive."""


def _queues(target: Target, queue: str) -> Any:
    from ops.dlq import DlqError, resolve

    try:
        return resolve(target, queue)
    except DlqError as exc:
        raise click.ClickException(str(exc)) from None


@dlq.command("ls")
@click.argument("queue")
@target_options
@json_option
def dlq_ls(target: Target, queue: str, as_json: bool) -> None:
    """List QUEUE's dead letters with reason, step, attempts and error."""
    from ops.dlq import list_messages

    messages = list_messages(target, _queues(target, queue))
    emit(as_json, messages, render_dead_letters)


def render_dead_letters(console: Console, messages: list[dict[str, Any]]) -> None:
    table = Table(title=f"{len(messages)} dead letter(s)")
    for column in ("envelope id", "reason", "step", "attempts", "error", "group", "detail"):
        table.add_column(column)
    for m in messages:
        table.add_row(
            str(m["envelope_id"]),
            str(m["reason"] or ""),
            str(m["step"] or ""),
            str(m["attempts"] or ""),
            str(m["error"] or ""),
            str(m["group"] or ""),
            str(m["detail"] or "")[:60],
        )
    console.print(table)


@dlq.command("show")
@click.argument("queue")
@click.argument("message")
@target_options
@json_option
def dlq_show(target: Target, queue: str, message: str, as_json: bool) -> None:
    """Show one dead letter (MESSAGE: its message id or envelope id), body and attributes."""
    from ops.dlq import DlqError, show

    try:
        document = show(target, _queues(target, queue), message)
    except DlqError as exc:
        raise click.ClickException(str(exc)) from None
    emit(as_json, document, lambda console, doc: console.print_json(json.dumps(doc, default=str)))


@dlq.command("redrive")
@click.argument("queue")
@click.option("--reason", help="only dead letters with this sluice-reason")
@click.option("--max", "maximum", type=click.IntRange(min=1), help="at most this many")
@click.option("--dry-run", is_flag=True, help="say what would move; move nothing")
@target_options
@json_option
def dlq_redrive(  # noqa: PLR0917 - click passes options by name
    target: Target, queue: str, reason: str | None, maximum: int | None, dry_run: bool, as_json: bool
) -> None:
    """Send QUEUE's dead letters (all, or those chosen) back to the queue that feeds it."""
    from ops.dlq import redrive

    document = redrive(target, _queues(target, queue), reason=reason, maximum=maximum, dry_run=dry_run)

    def render(console: Console, doc: dict[str, Any]) -> None:
        verb = "would redrive" if doc["dry_run"] else "redrove"
        render_dead_letters(console, doc["matched"])
        console.print(
            f"{verb} {len(doc['matched'])} from {doc['dlq']} to {doc['to']}; {doc['left_in_dlq']} left"
        )

    emit(as_json, document, render)


# -- ingest (the share: --local directly, --env through the operations function) ---------------


@main.group()
def ingest() -> None:
    """Quarantined files and halted batches on the share (--local: the local share; --env: the
    deployed operations function, through its IAM-authenticated URL)."""


@ingest.group()
def rejected() -> None:
    """Files in rejected/ with their reasons."""


@ingest.group()
def halted() -> None:
    """Batches in halted/ and the safe ways to resume them."""


def _local_sender(target: Target, queue_url: str | None) -> Any:
    """The loader's part sender on a local queue (re-sending parts needs it; nothing else does)."""
    if queue_url is None:
        return None
    from runtime.config import QueueSettings
    from runtime.ingest.sender import SqsPartSender

    group = QueueSettings().fifo_message_group_id if queue_url.endswith(".fifo") else None
    return SqsPartSender(target.client("sqs"), queue_url, group_id=group)


def operate(target: Target, request: dict[str, Any], queue_url: str | None = None) -> Any:
    """One share operation: on the local share here, or signed to the deployed operations
    function (its URL from the stateless stack's outputs); a refusal exits non-zero with its reason."""
    from ops.remote import RemoteError, call
    from runtime.declarations.names import OPERATIONS_URL_OUTPUT
    from runtime.operations import BadRequest, Operations, Refused

    try:
        if target.share is not None:
            operations = Operations(target.share, _local_sender(target, queue_url), target.dedup_horizon_s)
            return operations.perform(request)
        url = target.outputs.get(OPERATIONS_URL_OUTPUT)
        if not url:
            raise click.ClickException(
                f"{target.name}: no {OPERATIONS_URL_OUTPUT} output; deploy this version's stateless stack"
            )
        return call(url, request)
    except (Refused, BadRequest, RemoteError) as exc:
        raise click.ClickException(str(exc)) from None


def _print_rows(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table()
    for column in rows[0] if rows else ["(none)"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)


def _print_json(console: Console, doc: Any) -> None:
    console.print_json(json.dumps(doc, default=str))


@rejected.command("ls")
@target_options
@json_option
def rejected_ls(target: Target, as_json: bool) -> None:
    """List rejected files: batch/name, code, detail, bytes sent."""
    emit(as_json, operate(target, {"action": "rejected.ls"}), _print_rows)


@rejected.command("show")
@click.argument("file", metavar="BATCH/NAME")
@target_options
@json_option
def rejected_show(target: Target, file: str, as_json: bool) -> None:
    """One rejected file: its reason, first bytes and whether it may be replayed."""
    emit(as_json, operate(target, {"action": "rejected.show", "file": file}), _print_json)


@rejected.command("replay")
@click.argument("file", metavar="BATCH/NAME")
@click.option("--apply", is_flag=True, help="do it (default: a dry run)")
@target_options
@json_option
def rejected_replay(target: Target, file: str, apply: bool, as_json: bool) -> None:
    """Put a rejected file (or a late_write's unsent tail) back in inbox/, only if that cannot
    duplicate a record."""
    emit(as_json, operate(target, {"action": "rejected.replay", "file": file, "apply": apply}), _print_json)


@halted.command("ls")
@target_options
@json_option
def halted_ls(target: Target, as_json: bool) -> None:
    """List halted batches with the resume choices each allows."""
    emit(as_json, operate(target, {"action": "halted.ls"}), _print_rows)


@halted.command("show")
@click.argument("batch")
@target_options
@json_option
def halted_show(target: Target, batch: str, as_json: bool) -> None:
    """One halted batch: why it halted, members, header, recorded parts, choices."""
    emit(as_json, operate(target, {"action": "halted.show", "batch": batch}), _print_json)


@halted.command("resume")
@click.argument("batch")
@click.option("--choice", type=click.Choice(["members", "resend-parts"]), required=True)
@click.option("--apply", is_flag=True, help="do it (default: a dry run)")
@click.option(
    "--queue-url",
    help="--local resend-parts: the queue the loader sends to (deployed: the function knows it)",
)
@target_options
@json_option
def halted_resume(  # noqa: PLR0917 - click passes options by name
    target: Target, batch: str, choice: str, apply: bool, queue_url: str | None, as_json: bool
) -> None:
    """Resume a halted batch by a safe choice; anything else is refused with the reason."""
    request = {"action": "halted.resume", "batch": batch, "choice": choice, "apply": apply}
    emit(as_json, operate(target, request, queue_url), _print_json)
