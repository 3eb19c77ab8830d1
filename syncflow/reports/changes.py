"""A snapshot's change list as markdown (the Prefect artifact of a snapshot sync)."""

from __future__ import annotations

import re
from typing import Any, Final

ARTIFACT_LINES: Final = 200


def _md(text: str) -> str:
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text)


def changes_key(category: str, instance_name: str, instance_id: int) -> str:
    """``account-changes-pg-main``: one key per (category, instance), so versions line up."""
    slug = re.sub(r"[^a-z0-9-]+", "-", instance_name.lower()).strip("-") or str(instance_id)
    return f"{category}-changes-{slug}"[:255]


def change_lines(changes: list[str], total: int | None, limit: int) -> list[str]:
    """The first ``limit`` changes, then "... and M more" when there were more (``total``
    counts them all; a stored list is itself capped, see ``sync_details.changes_total``)."""
    total = len(changes) if total is None else max(total, len(changes))
    shown = changes[: max(limit, 0)]
    if total > len(shown):
        return [*shown, f"... and {total - len(shown)} more"]
    return list(shown)


def changes_markdown(category: str, instance_name: str, session_id: str, stored: Any) -> str:
    """Counts, then every change (at most :data:`ARTIFACT_LINES`), escaped for markdown.

    ``stored`` has ``counts`` (synced/created/updated/deleted/unchanged), ``changes`` and
    ``changes_total`` (:class:`syncflow.engine.snapshot.Stored`)."""
    c = stored.counts
    lines = [
        f"# {category} of {_md(instance_name)}",
        "",
        f"synced {c['synced']}: created {c['created']}, updated {c['updated']}, "
        f"deleted {c['deleted']}, unchanged {c['unchanged']} (session `{session_id}`)",
        "",
    ]
    if stored.changes:
        lines += [f"- {_md(line)}" for line in change_lines(stored.changes, stored.changes_total, ARTIFACT_LINES)]
    else:
        lines.append("no change")
    return "\n".join(lines)


__all__ = ["ARTIFACT_LINES", "change_lines", "changes_key", "changes_markdown"]
