"""A session's report for the Prefect UI: a markdown summary and a table of its records,
rendered from the one view (:class:`syncflow.schemas.SessionDetailView`); the task in
``tasks/artifacts.py`` publishes them."""

from __future__ import annotations

from typing import Any

from syncflow.schemas import Progress, SessionDetailView, SessionProgress

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
    for warning in view.warnings:
        lines.append(f"- **warning**: {warning}")
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


# What one item of a category is, in progress lines (CLI bar, progress artifacts).
UNITS: dict[str, str] = {
    "messages": "msgs",
    "metadata": "convs",
    "account": "accounts",
    "config": "settings",
    "capacity": "samples",
}


def unit_of(category: str) -> str:
    return UNITS.get(category, "items")


def fmt_eta(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_text(p: Progress | SessionProgress, done: int, unit: str = "items") -> str:
    """A progress in words, as the CLI bar and the Prefect progress artifacts say it:
    ``1,500 / 6,000 msgs (25.0 %), 300/s, ETA 15s`` — the total, rate and ETA only when known
    (the ETA once a batch was measured: :func:`syncflow.schemas.measure_progress`)."""
    text = f"{done:,}" + (f" / {p.expected:,}" if p.expected is not None else "") + f" {unit}"
    if p.percent is not None:
        text += f" ({p.percent:.1f} %)"
    if p.rate_per_second:
        text += f", {p.rate_per_second:,.0f}/s"
    if p.eta_seconds is not None:
        text += f", ETA {fmt_eta(p.eta_seconds)}"
    return text


def session_progress_description(view: SessionDetailView, done: int, total: int) -> str:
    """The session progress artifact's description: instances done / total, then the items
    (done / expected, rate, ETA while it runs; :attr:`SessionDetailView.progress`)."""
    unit = unit_of(view.sync_category)
    text = f"session {view.session_id} ({view.sync_category}): {done}/{total} instances done"
    if view.progress is not None:
        return f"{text}; {progress_text(view.progress, view.items_synced, unit)}"
    return f"{text}; {view.items_synced:,} {unit}"


__all__ = [
    "TABLE_FIELDS",
    "UNITS",
    "fmt_eta",
    "progress_text",
    "records_table",
    "session_progress_description",
    "summary_markdown",
    "unit_of",
]
