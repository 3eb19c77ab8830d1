"""``/sync_sessions/api/instances/{name}/gaps``: the gap ledger of one instance (read-only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from syncflow.api import schemas as m
from syncflow.api.deps import READ, DbDep
from syncflow.store import gaps as ledger
from syncflow.store import instances as inst_svc

router = APIRouter(prefix="/sync_sessions/api", tags=["gaps"])

GapStatusName = Literal["open", "filled", "partly_filled", "confirmed_empty"]


@router.get(
    "/instances/{name}/gaps",
    dependencies=READ,
    responses={
        401: {"model": m.ErrorOut, "description": "Missing or invalid bearer token."},
        404: {"model": m.ErrorOut, "description": "Unknown instance."},
        422: {"model": m.ValidationErrorOut, "description": "Bad input: the message says what."},
    },
)
def instance_gaps(
    s: DbDep,
    name: Annotated[str, Path(min_length=1, max_length=255, description="The instance's name.")],
    status: Annotated[GapStatusName | None, Query(description="Only holes with this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> dict[str, Any]:
    """The seq holes of an instance (the gap ledger): each hole's seq range, status (open,
    filled, partly_filled, confirmed_empty), messages found, checks made, first seen and last
    checked; ``counts`` by status over all of them."""
    inst = inst_svc.get_instance(s, name=name)
    rows = ledger.list_gaps(s, instance=name, status=status, limit=limit)
    return {
        "instance": inst.name,
        "counts": ledger.gap_counts(s, instance_id=inst.id),
        "gaps": [r.gap.to_json() for r in rows],
    }


__all__ = ["router"]
