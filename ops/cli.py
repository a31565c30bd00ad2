"""`sluice`: the operator's command line (never shipped to Lambda).

    sluice cost --env prod [--files-per-s N] [--records-per-file K] [--record-bytes B]
    sluice status (--env NAME | --local)
    sluice dlq ls|show|redrive QUEUE (--env NAME | --local)

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
