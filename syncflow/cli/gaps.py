"""``syncflow gaps``: the gap ledger — the seq holes of each instance and what became of them.

``list`` shows the holes (status open / filled / partly_filled / confirmed_empty, messages found,
checks made); ``repair`` reads the holes of an instance now, whatever their age and status (an
incremental sync does it by itself for the open ones), under the instance's single-flight lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.text import Text

from syncflow.cli import _output as out
from syncflow.cli import _runtime
from syncflow.sources.base import source_kind
from syncflow.store import gaps as ledger
from syncflow.store import instances as instance_svc

gaps_app = typer.Typer(
    help="The gap ledger: seq holes per instance (open, filled, partly_filled, confirmed_empty) and their repair.",
    no_args_is_help=True,
)

STATUSES = "open, filled, partly_filled, confirmed_empty"


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _row(g: dict[str, Any]) -> list[Any]:
    return [
        g["instance"],
        g["seqs"],
        g["width"],
        g["status"],
        g["found"],
        g["checks"],
        out.fmt_time(_time(g["first_seen"])),
        out.fmt_time(_time(g["last_checked"])),
    ]


@gaps_app.command("list")
def gaps_list(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="Only this instance.", show_default=False)
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help=f"Only holes with this status ({STATUSES}).", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many holes.")] = 1000,
    _json: out.JsonFlag = False,
) -> None:
    """List the seq holes the incremental syncs found, by instance and seq."""
    with out.store() as session:
        if name is not None:
            instance_svc.get_instance(session, name=name)  # unknown name: one clear line
        rows = ledger.list_gaps(session, instance=name, status=status, limit=limit)
        payload = [r.to_json() for r in rows]

    def human(p: list[dict[str, Any]]) -> RenderableType:
        if not p:
            return Text(
                "no seq holes" + (f" with status {status}" if status else "") + (f" for {name}" if name else "")
            )
        return out.table(
            f"{len(p)} seq hole(s)",
            ["INSTANCE", "SEQS", "WIDTH", "STATUS", "FOUND", "CHECKS", "FIRST SEEN (UTC)", "LAST CHECKED (UTC)"],
            [_row(g) for g in p],
        )

    out.render(ctx, payload, human)


@gaps_app.command("repair")
def gaps_repair(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="The instance to repair.", show_default=False)
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every instance with holes that are not filled.", show_default=False)
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10_000, help="Messages per read.")] = 500,
    _json: out.JsonFlag = False,
) -> None:
    """Read the holes of NAME (or --all) now, whatever their age: store what arrived late.

    Every hole that is not filled is read (closed ones too: a message may come after its hole
    was confirmed empty); the main cursor never moves. Fails when a sync of the instance runs.
    """
    if (name is None) == (not every):
        out.fail("give an instance NAME or --all (not both)")
    with out.store() as session:
        if every:
            names = sorted({r.instance for r in ledger.list_gaps(session) if r.gap.status != "filled"})
            insts = [instance_svc.get_instance(session, name=n) for n in names]
        else:
            assert name is not None
            insts = [instance_svc.get_instance(session, name=name)]
        targets = [(i.id, i.name, i.kind, i.block_name, dict(i.config or {})) for i in insts]
    for _, iname, kind, _, _ in targets:
        if not source_kind(kind).dense_seq:
            out.fail(f"instance {iname}: kind {kind!r} has no dense seqs: it keeps no gap ledger")
    results = [_repair_one(*t, batch_size=batch_size) for t in targets]

    def human(p: list[dict[str, Any]]) -> RenderableType:
        if not p:
            return Text("no instance has holes to read")
        return out.table(
            "gap repair",
            ["INSTANCE", "HOLES", "READS", "LATE ARRIVALS", "FILLED", "PARTLY FILLED", "CONFIRMED EMPTY"],
            [
                [
                    r["instance"],
                    r["holes"],
                    r["reads"],
                    r["late_arrivals"],
                    r["filled"],
                    r["partly_filled"],
                    r["confirmed_empty"],
                ]
                for r in p
            ],
        )

    out.render(ctx, results, human)


def _repair_one(
    instance_id: int, name: str, kind: str, block_name: str | None, config: dict[str, Any], *, batch_size: int
) -> dict[str, Any]:
    _runtime.prepare()  # before Prefect is imported (the block is loaded through it)
    from blocks.connections import open_source
    from syncflow.engine.gaps import repair_now

    opened = asyncio.run(open_source(kind, block_name, name, config or None))
    result = repair_now(
        instance_id=instance_id, instance_name=name, kind=kind, fetch=opened.source.read_page, count=batch_size
    )
    repair = result.details()["gap_repair"]
    return {
        "instance": name,
        "holes": result.holes,
        "reads": result.reads,
        "late_arrivals": result.late_arrivals,
        "filled": repair["filled"],
        "partly_filled": repair["partly_filled"],
        "confirmed_empty": repair["confirmed_empty"],
        "seconds": repair["seconds"],
    }


__all__ = ["gaps_app"]
