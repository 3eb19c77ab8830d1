"""``POST /sync_sessions/api/instances/{name}/check``: is an instance ready to sync?

The same checks as ``syncflow instances check NAME`` (:mod:`syncflow.engine.check`): its
connection block on this server's Prefect API, the connection, the credentials and one
privilege check per category. Answers 200 with ``ok: false`` when a check failed (the
instance's problem, not the request's); 404 for an unknown instance.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from syncflow.api import schemas as m
from syncflow.api.deps import WRITE, ConsoleDep
from syncflow.store import instances as inst_svc
from syncflow.store.db import session_scope

router = APIRouter(prefix="/sync_sessions/api", tags=["instances"])


class CheckOut(BaseModel):
    check: str = Field(description="block, connection, credentials or 'privileges: <category>'.")
    ok: bool
    detail: str = Field(description="What was seen, or what to do about it.")


class InstanceCheckOut(BaseModel):
    instance: str
    ok: bool = Field(description="Every check passed.")
    checks: list[CheckOut]


@router.post(
    "/instances/{name}/check",
    response_model=InstanceCheckOut,
    dependencies=WRITE,
    responses={
        401: {"model": m.ErrorOut, "description": "Missing or invalid bearer token."},
        403: {"model": m.ErrorOut, "description": "No API token configured: writes are disabled."},
        404: {"model": m.ErrorOut, "description": "Unknown instance."},
        422: {"model": m.ValidationErrorOut, "description": "Bad input: the message says what."},
    },
)
async def check_instance(
    c: ConsoleDep,
    name: Annotated[str, Path(min_length=1, max_length=255, description="The instance's name.")],
) -> InstanceCheckOut:
    """Check the instance: block present on this Prefect server, connection, credentials and the
    privileges of each category it syncs (a little of each is read). Nothing is written."""
    from tasks.instance_check import InstanceRef
    from tasks.instance_check import check_instance as run_check

    with session_scope(c.get_engine()) as s:
        inst = inst_svc.get_instance(s, name=name)
        ref = InstanceRef(inst.name, inst.kind, inst.block_name, tuple(inst.categories), inst.config or None)
    result = await run_check(ref, timeout=c.settings.prefect_timeout)
    return InstanceCheckOut.model_validate(result.as_dict())


__all__ = ["router"]
