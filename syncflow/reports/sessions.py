"""A session's report for the Prefect UI: a markdown summary and a table of its records,
rendered from the one view (:class:`syncflow.schemas.SessionDetailView`); the task in
``tasks/artifacts.py`` publishes them."""

from __future__ import annotations

from typing import Any

from syncflow.schemas import SessionDetailView

# The record fields of the artifact table, in column order (the view's names).
TABLE_FIELDS = (
    "instance_name",
    "status",
    "items_synced",
    "items_created",
    "items_updated",
    "items_unchanged",
    "items_deleted",
    "duration_seconds",
    "items_per_second",
    "error_message",
)


def records_table(view: SessionDetailView) -> list[dict[str, Any]]:
    """One row per record: the view's fields of :data:`TABLE_FIELDS` (duration rounded to ms,
    no error as "")."""
    rows = []
    for r in view.records:
        row = r.model_dump(include=set(TABLE_FIELDS))
        if row["duration_seconds"] is not None:
            row["duration_seconds"] = round(row["duration_seconds"], 3)
        row["error_message"] = row["error_message"] or ""
        rows.append({k: row[k] for k in TABLE_FIELDS})
    return rows


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def summary_markdown(view: SessionDetailView) -> str:
    """The session's head (category, status, instances, duration, retry link) and a table of
    its records."""
    lines = [
        f"# Sync session `{view.session_id}`",
        "",
        f"- category: **{view.sync_category}** ({view.sync_type})",
        f"- status: **{view.status}**",
        f"- instances: {view.total_instances} ({view.successful_instances} ok, {view.failed_instances} failed)",
    ]
    if view.duration_seconds is not None:
        lines.append(f"- duration: {view.duration_seconds:.1f} s")
    if view.retry_of:
        lines.append(f"- retry of: `{view.retry_of}`")
    lines += [
        "",
        "| instance | status | synced | created | updated | duration (s) | items/s | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records_table(view):
        err = str(r["error_message"]).replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r['instance_name']} | {r['status']} | {r['items_synced']} | {r['items_created']} | "
            f"{r['items_updated']} | {_cell(r['duration_seconds'])} | {_cell(r['items_per_second'])} | {err} |"
        )
    return "\n".join(lines) + "\n"


__all__ = ["TABLE_FIELDS", "records_table", "summary_markdown"]
