"""The run's results for people (rich tables) and machines (`--json` summary, `--report`
per-file fates). The report's totals reuse the summary's keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.table import Table

from local.run import RunResult, Snapshot
from runtime.ingest.layout import printable_name

PROBLEM_ROWS_SHOWN = 20


def summary(result: RunResult, *, share: Path | None = None) -> dict[str, Any]:
    reconciliation = result.reconciliation
    rejected = [
        {
            "file": printable_name(fate.file),
            "code": fate.reason,
            "detail": fate.detail,
            "path": fate.rejected_path,
        }
        for fate in reconciliation.files
        if fate.fate == "rejected"
    ]
    out: dict[str, Any] = {
        "ok": result.ok,
        "records_written": result.records_written,
        "records_delivered": reconciliation.records_delivered,
        "lost": reconciliation.lost,
        "duplicates": reconciliation.duplicates,
        "unexpected_records": len(reconciliation.unexpected_ids),
        "records_per_s": round(result.records_per_s, 1),
        "records_per_s_from_first_write": round(result.records_per_s_from_first_write, 1),
        "writer_records_per_s": round(result.writer_records_per_s, 1),
        "first_delivery_s": _rounded(result.first_delivery_s),
        "drain_s": _rounded(result.drain_s),
        "files_written": result.files_written,
        "files_delivered": sum(1 for f in reconciliation.files if f.fate == "delivered"),
        "files_skipped": sum(1 for f in reconciliation.files if f.fate == "skipped"),
        "rejected_files": rejected,
        "pending_files": [printable_name(f.file) for f in reconciliation.pending],
        "problems": [{"file": printable_name(f.file), "problem": f.problem} for f in reconciliation.problems],
        "unexpected_ids": reconciliation.unexpected_ids[:100],
        "dead_letters": result.dead_letters,
        "halted_batches": result.halted_batches,
        "writing_s": round(result.writing_s, 2),
        "elapsed_s": round(result.finished_at - result.started_at, 2),
        "interrupted": result.interrupted,
        "timed_out": result.timed_out,
        "stopped_cleanly": result.stop_clean,
        "invocations": result.invocations,
        "counters": result.counters,
    }
    if share is not None:
        out["share"] = str(share)
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def file_report(result: RunResult, *, share: Path) -> dict[str, Any]:
    """`--report`: every file's fate with its delivered item ids, then the summary's totals."""
    totals = summary(result, share=share)
    return {
        "files": [fate.as_dict(with_ids=True) for fate in result.reconciliation.files],
        **{key: value for key, value in totals.items() if key != "rejected_files"},
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in ("records", "value") else "left")
    return table


def progress_view(snapshot: Snapshot) -> Table:
    share = snapshot.share
    table = _table(f"sluice local run — {snapshot.phase}, {snapshot.elapsed_s:5.1f} s", "", "value")
    rows = [
        ("files written", snapshot.files_written),
        ("records written", snapshot.records_written),
        ("files in inbox", share.inbox),
        ("files claimed (in flight)", share.claimed),
        ("files committed", share.processed),
        ("files archived", share.archived),
        ("files rejected", share.rejected),
        ("messages sent (parts)", share.parts),
        *snapshot.counters.items(),
        *(
            (
                f"queue {name}: visible / in flight / delayed",
                "{visible} / {in_flight} / {delayed}".format(**depth),
            )
            for name, depth in snapshot.queues.items()
        ),
        ("items routed to the sink", snapshot.records_delivered),
        ("records/s at the sink (5 s)", f"{snapshot.records_per_s:,.0f}"),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    return table


def render_files(console: Console, report: dict[str, Any]) -> None:
    """`--report`'s per-file fates as a table."""
    table = _table("files", "file", "fate", "records", "reason", "where")
    for entry in report["files"]:
        reason = entry["reason"] or entry.get("problem") or ""
        table.add_row(
            entry["file"],
            entry["fate"],
            f"{entry['records_delivered']:,}",
            reason,
            entry.get("rejected_path", ""),
        )
    console.print(table)


def render_summary(console: Console, document: dict[str, Any]) -> None:
    table = _table("summary", "", "value")
    for key in (
        "records_written",
        "records_delivered",
        "lost",
        "duplicates",
        "unexpected_records",
        "records_per_s",
        "records_per_s_from_first_write",
        "writer_records_per_s",
        "first_delivery_s",
        "drain_s",
        "files_written",
        "files_delivered",
        "files_skipped",
        "dead_letters",
        "halted_batches",
        "writing_s",
        "elapsed_s",
    ):
        value = document[key]
        table.add_row(key, f"{value:,}" if isinstance(value, int) else "-" if value is None else str(value))
    parts: list[Any] = [table]
    if document["rejected_files"]:
        rejected = _table("rejected files", "file", "code", "where", "detail")
        for entry in document["rejected_files"][:PROBLEM_ROWS_SHOWN]:
            rejected.add_row(entry["file"], entry["code"], entry["path"], (entry["detail"] or "")[:60])
        parts.append(rejected)
    if document["problems"]:
        problems = _table("problems", "file", "problem")
        for entry in document["problems"][:PROBLEM_ROWS_SHOWN]:
            problems.add_row(entry["file"], entry["problem"])
        parts.append(problems)
    if document["ok"]:
        verdict = "[bold green]every record reached the sink exactly once[/]"
    elif document["timed_out"]:
        verdict = (
            "[bold red]FAILED: timed out before every file met its fate and the pipeline fell quiet "
            "(--timeout)[/]"
        )
    else:
        verdict = "[bold red]FAILED: see lost / duplicates / problems above[/]"
    console.print(Group(*parts))
    console.print(verdict)
