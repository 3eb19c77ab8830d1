"""``syncflow changes``: what the snapshot syncs changed (accounts and grants, settings,
conversations, capacity), newest first, naming the session and the time.

The change lists are the records' ``sync_details`` (:mod:`syncflow.store.changes`); each entry
is the one view :class:`syncflow.schemas.ChangeEntry` (also ``GET /sync_sessions/api/changes``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.text import Text

from syncflow.cli import _output as out
from syncflow.reports.changes import change_lines
from syncflow.schemas import ChangesPage, change_entry
from syncflow.store import changes as change_store
from syncflow.store.session_ids import short_ids


def changes_cmd(
    ctx: typer.Context,
    instance: Annotated[
        str | None, typer.Option("--instance", metavar="NAME", help="Only this instance.", show_default=False)
    ] = None,
    category: Annotated[
        str | None,
        typer.Option(
            "--category",
            help=f"Only this category ({', '.join(change_store.CHANGE_CATEGORIES)}).",
            show_default=False,
        ),
    ] = None,
    since: out.SinceOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many syncs (records).")] = 20,
    lines: Annotated[
        int,
        typer.Option(
            "--lines", metavar="N", min=0, help="Per sync, the first N changes, then how many more (0: counts only)."
        ),
    ] = 10,
    _json: out.JsonFlag = False,
) -> None:
    """What changed: each snapshot sync (account, config, metadata, capacity) that created, updated
    or deleted something, newest first, with its session, time, counts and changes in words.

    For example `syncflow changes --instance pg-main --since 7d`. --json prints every stored line
    (the first 100 per sync; changes_total counts them all)."""
    with out.store() as session:
        recs = change_store.records_with_changes(
            session, instance=instance, category=category, since=since, limit=limit
        )
        shorts = short_ids(session, [r.session_id for r in recs])
        page = ChangesPage(items=[change_entry(r, shorts[r.session_id]) for r in recs], limit=limit, offset=0)
    payload = page.model_dump()  # the API's shape (GET /sync_sessions/api/changes)

    def human(p: dict[str, Any]) -> list[RenderableType]:
        scope = [f"instance {instance}"] if instance else []
        scope += [f"category {category}"] if category else []
        scope += [f"since {out.fmt_time(since)} UTC"] if since else []
        where = f" ({', '.join(scope)})" if scope else ""
        if not p["items"]:
            return [Text(f"no changes{where}")]
        blocks: list[str] = []
        for e in p["items"]:
            total = e["changes_total"]
            head = (
                f"{out.fmt_time(e['changed_at'])} UTC  {e['sync_category']} of {e['instance_name']}  "
                f"session {e['short_id']}  {total} change{'s' if total != 1 else ''} "
                f"({e['items_created']} created, {e['items_updated']} updated, {e['items_deleted']} deleted)"
            )
            body = [f"  {line}" for line in change_lines(e["changes"], total, lines)] if lines else []
            blocks.append("\n".join([head, *body]))
        more = len(p["items"]) == p["limit"]
        footer = f"{len(p['items'])} sync(s) with changes{where}, newest first"
        if more:
            footer += f"; older ones: --limit {min(p['limit'] * 2, 1000)} or --since"
        return [Text("\n".join([*blocks, footer]))]  # one text: print(*renderables) would join them with spaces

    out.render(ctx, payload, human)
