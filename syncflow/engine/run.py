"""Begin and finish one instance sync: the record's status and the single-flight lease.

Each step is one transaction (``session_scope``): begin marks the record running and takes the
(instance, category) lease at once (another holder: the record ends ``skipped``, naming it; a
bad option or a retired instance: ``failed``), and reads what the run needs from the sync state
(cursor, remembered page size, gap-ledger options, whether holes are open); finish records the
outcome and gives the lease back. A crash between steps loses nothing: the cursor only ever
covers committed rows, and the lease runs out by itself.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from syncflow.engine.options import SyncOptions
from syncflow.errors import ConfigError, IllegalTransitionError, LockedError
from syncflow.sources.base import source_kind
from syncflow.store import gaps as ledger
from syncflow.store import sessions as book
from syncflow.store import sync_state
from syncflow.store.db import get_engine, session_scope
from syncflow.store.instances import retired_note
from syncflow.store.models import (
    Instance,
    InstanceKind,
    ItemStatus,
    RecordStatus,
    SessionStatus,
    SyncConfigItem,
    SyncInstanceRecord,
    SyncSession,
    utcnow,
)

log = logging.getLogger(__name__)

ADAPTIVE_BATCH_KEY = "adaptive_batch_size"
"""The key of the sync state's options under which an adaptive read remembers its page size."""


@dataclass
class InstanceRun:
    """What the steps of one instance sync share (JSON-serialisable; no secrets)."""

    record_id: int
    session_id: str
    instance_id: int
    instance_name: str
    kind: str
    block_name: str | None
    category: str
    owner: str
    lease_seconds: float
    start_seq: int
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the instance's non-secret settings (telegram: chat id)
    block_binding: str | None = None  # the key its block must carry (blocks syncflow made for it)
    adaptive_batch_size: int | None = None  # the page size an adaptive read reached last time (sync state)
    state_options: dict[str, Any] | None = None  # the sync state's options at begin (None: not read)
    open_holes: bool | None = None  # whether the gap ledger had open holes at begin (None: not read)

    @property
    def opts(self) -> SyncOptions:
        return SyncOptions.parse(self.options, instance=self.instance_name)

    @property
    def incremental(self) -> bool:
        """Read page by page after a cursor (messages), else as one snapshot."""
        return source_kind(self.kind).reads_incrementally(self.category)

    @property
    def keeps_gap_ledger(self) -> bool:
        """A dense-seq kind read incrementally, not a range: its holes are recorded and repaired."""
        return self.incremental and source_kind(self.kind).dense_seq and not self.opts.is_range


@dataclass
class Skipped:
    record_id: int
    reason: str


def begin_instance_sync(
    *,
    record_id: int,
    owner: str,
    lease_seconds: float,
    flow_run_id: str | None = None,
    options: dict[str, Any] | None = None,
    engine: Engine | None = None,
) -> InstanceRun | Skipped:
    """Mark the record running and take the (instance, category) lease, in one transaction.

    When another sync holds the lease the record ends ``skipped`` with the holder named; a bad
    option, a kind that cannot sync the category or a retired instance fails it (ConfigError).
    Locks in the order every writer takes: the session row, the record, the lease's row.
    """
    engine = engine or get_engine()
    refused: ConfigError | None = None
    skipped: Skipped | None = None
    with session_scope(engine) as s:
        rec = book.get_record(s, record_id=record_id)
        inst = s.get(Instance, rec.instance_id)
        assert inst is not None
        merged = {**(rec.options or {}), **(options or {})}
        try:  # a bad option, or a kind that cannot sync this category, fails the record: it never runs
            if inst.retired_at is not None:
                raise ConfigError(retired_note(inst))
            check_shared_block(s, inst)
            opts = SyncOptions.parse(merged, instance=inst.name)
            source_kind(inst.kind).check(rec.sync_category, instance=inst.name)
        except ConfigError as exc:
            refused = exc
            book.fail_instance_sync(s, record_id=record_id, error_message=str(exc), session_id=rec.session_id)
        else:
            run = InstanceRun(
                record_id=record_id,
                session_id=rec.session_id,
                instance_id=inst.id,
                instance_name=inst.name,
                kind=inst.kind,
                block_name=inst.block_name,
                category=rec.sync_category,
                owner=owner,
                lease_seconds=lease_seconds,
                start_seq=0,
                options=asdict(opts),
                config=dict(inst.config or {}),
                block_binding=inst.block_binding,
            )
            book.start_instance_sync(s, record_id=record_id, flow_run_id=flow_run_id, session_id=run.session_id)
            try:
                state = sync_state.acquire_lock(
                    s, instance_id=run.instance_id, category=run.category, owner=owner, lease_seconds=lease_seconds
                )
            except LockedError:
                reason = describe_holder(
                    s, instance_id=run.instance_id, instance_name=run.instance_name, category=run.category
                )
                book.skip_instance_sync(s, record_id=record_id, reason=reason, session_id=run.session_id)
                skipped = Skipped(record_id=record_id, reason=reason)
            else:
                last_seq = state.last_seq
                if opts.full:
                    sync_state.reset_cursor(s, instance_id=run.instance_id, category=run.category, owner=owner)
                    last_seq = None
                holes = None
                if run.keeps_gap_ledger:
                    holes = ledger.any_open(s, instance_id=run.instance_id, category=run.category)
    if refused is not None:
        raise refused
    if skipped is not None:
        log.info("skipped %s", skipped.reason)
        return skipped
    start = (opts.from_seq - 1 if opts.from_seq else 0) if opts.is_range else (last_seq or 0)
    remembered = state.options.get(ADAPTIVE_BATCH_KEY)
    return replace(
        run,
        start_seq=max(start, 0),
        adaptive_batch_size=remembered if isinstance(remembered, int) and remembered > 0 else None,
        state_options=state.options,
        open_holes=holes,
    )


def check_shared_block(s: Session, inst: Instance) -> None:
    """ConfigError when an instance without a block key (registered before keys, or with
    --block) shares its block with another live instance: one's rows would land under the
    other (two names that once mapped to one block name, ``coll`` and ``COLL``)."""
    if inst.block_binding is not None or not inst.block_name or inst.kind == InstanceKind.TELEGRAM:
        return
    other = s.scalar(
        select(Instance.name)
        .where(Instance.block_name == inst.block_name, Instance.id != inst.id, Instance.retired_at.is_(None))
        .limit(1)
    )
    if other is not None:
        raise ConfigError(
            f"instance {inst.name}: its block {inst.block_name!r} is also the connection of instance {other!r}: "
            "refusing to sync (one instance's rows would land under the other); re-register them with "
            "`syncflow instances add NAME --url ...` (each gets a block of its own) and remove these"
        )


def describe_holder(s: Session, *, instance_id: int, instance_name: str, category: str) -> str:
    """Why a sync was skipped, in words: the instance by name, the run holding its lease (the
    flow run id, and the session of the record that run syncs) and when that lease ends."""
    row = s.execute(
        select(SyncConfigItem.lock_owner, SyncConfigItem.lock_expires_at).where(
            SyncConfigItem.instance_id == instance_id, SyncConfigItem.category == category
        )
    ).first()
    owner, expires = (row[0], row[1]) if row is not None else (None, None)
    holder = f"{owner!r}" if owner else "another sync"
    if owner and owner.startswith("run:"):
        run_id = owner.removeprefix("run:")
        holder = f"flow run {run_id}"
        held = s.execute(
            select(SyncInstanceRecord.session_id)
            .where(SyncInstanceRecord.flow_run_id == run_id, SyncInstanceRecord.instance_id == instance_id)
            .order_by(SyncInstanceRecord.id.desc())
        ).first()
        if held is not None:
            holder += f" (sync-instance '{category}:{instance_name}' of session {held[0]})"
    if expires is not None:
        left = max(0, round((expires - utcnow()).total_seconds()))
        lease = f"its lease ends at {expires:%Y-%m-%d %H:%M:%S} UTC (in {left} s, renewed while it runs)"
    else:
        lease = "its lease end is unknown"
    return f"skipped: {category} of {instance_name} is already being synced by {holder}; {lease}"


def cancel_reason_of(run: InstanceRun, session_status: str, record_status: str) -> str | None:
    if session_status == SessionStatus.CANCELLED or record_status == RecordStatus.CANCELLED:
        return f"session {run.session_id} was cancelled"
    return None


def cancel_reason(s: Session, run: InstanceRun) -> str | None:
    row = s.execute(
        select(SyncSession.status, SyncInstanceRecord.status)
        .join(SyncInstanceRecord, SyncInstanceRecord.session_id == SyncSession.session_id)
        .where(SyncInstanceRecord.id == run.record_id)
    ).one()
    return cancel_reason_of(run, row[0], row[1])


def should_stop(run: InstanceRun, *, engine: Engine | None = None) -> str | None:
    """Why the sync should stop at this boundary (session or record cancelled), or None."""
    with session_scope(engine or get_engine()) as s:
        return cancel_reason(s, run)


def finish_instance_sync(
    run: InstanceRun,
    *,
    outcome: str,
    details: dict[str, Any] | None = None,
    error: str | None = None,
    engine: Engine | None = None,
    batch_size: int | None = None,
) -> str:
    """Record how the sync ended and give the lease back. Returns the record's final status.

    ``outcome`` is completed | failed | cancelled. When the session was cancelled meanwhile
    the record is already cancelled: only the details and the lease are settled.
    ``batch_size``: the page size an adaptive read reached, remembered in the sync state.
    """
    status = RecordStatus.parse(outcome, what="outcome")
    engine = engine or get_engine()
    with session_scope(engine) as s:
        try:
            rid, sid = run.record_id, run.session_id
            if status == RecordStatus.COMPLETED:
                book.complete_instance_sync(s, record_id=rid, details=details, session_id=sid)
            elif status == RecordStatus.FAILED:
                book.fail_instance_sync(
                    s, record_id=rid, error_message=error or "failed", details=details, session_id=sid
                )
            else:
                book.cancel_instance_sync(s, record_id=rid, reason=error, details=details, session_id=sid)
        except IllegalTransitionError:
            rec = book.get_record(s, record_id=run.record_id)
            if details:
                rec.sync_details = {**(rec.sync_details or {}), **details}
            status = RecordStatus(rec.status)
        item_status = {
            RecordStatus.COMPLETED.value: ItemStatus.COMPLETED,
            RecordStatus.FAILED.value: ItemStatus.FAILED,
        }.get(status.value, ItemStatus.CANCELLED)
        if batch_size is not None:
            sync_state.merge_options(
                s, instance_id=run.instance_id, category=run.category, values={ADAPTIVE_BATCH_KEY: batch_size}
            )
        sync_state.release_lock(
            s,
            instance_id=run.instance_id,
            category=run.category,
            owner=run.owner,
            status=item_status.value,
            error=error if status == RecordStatus.FAILED else None,
        )
    return status.value


__all__ = [
    "ADAPTIVE_BATCH_KEY",
    "InstanceRun",
    "Skipped",
    "begin_instance_sync",
    "cancel_reason",
    "cancel_reason_of",
    "check_shared_block",
    "describe_holder",
    "finish_instance_sync",
    "should_stop",
]
