"""The sync store: SQLAlchemy 2 declarative models.

The schema is created and changed only by the Alembic migrations in
``syncflow/store/migrations`` (``syncflow db upgrade``); these classes must stay in step with them
(``tests/integration/test_migrations.py`` compares the two).

Times are stored as naive UTC and read back as aware UTC (:class:`UTCDateTime`).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "idx_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "chk_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class _Values(enum.StrEnum):
    """A closed set of string values, stored as VARCHAR with a CHECK constraint."""

    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]

    @classmethod
    def parse(cls, value: str, *, what: str) -> _Values:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(cls.values())
            from syncflow.errors import ConfigError

            raise ConfigError(f"unknown {what} {value!r} (expected one of: {allowed})") from None

    def __str__(self) -> str:
        return self.value


class InstanceKind(_Values):
    HTTP_SEQ = "http-seq"
    POSTGRES = "postgres"
    MYSQL = "mysql"
    SQL_TABLE = "sql-table"
    TELEGRAM = "telegram"


class Category(_Values):
    ACCOUNT = "account"
    CAPACITY = "capacity"
    CONFIG = "config"
    METADATA = "metadata"
    MESSAGES = "messages"
    OTHER = "other"


class SyncType(_Values):
    SCHEDULED = "scheduled"
    MANUAL_BATCH = "manual_batch"


class SessionStatus(_Values):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RecordStatus(_Values):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class ItemStatus(_Values):
    """Status of a (instance, category) sync state row (``sync_config_items``)."""

    IDLE = "idle"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_SESSION_STATUSES = (SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED)
TERMINAL_RECORD_STATUSES = (
    RecordStatus.COMPLETED,
    RecordStatus.FAILED,
    RecordStatus.CANCELLED,
    RecordStatus.SKIPPED,
)


def one_of(column: str, values: type[_Values]) -> str:
    """CHECK expression ``column IN (...)`` over a closed set of constant values."""
    quoted = ", ".join("'" + v + "'" for v in values.values())
    return f"{column} IN ({quoted})"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores naive UTC, returns aware UTC, on every backend alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created() -> Mapped[dt.datetime]:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow, server_default=func.current_timestamp())


def _updated() -> Mapped[dt.datetime]:
    return mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow, server_default=func.current_timestamp()
    )


class Instance(Base):
    """One source endpoint. Its connection lives in a Prefect block named ``block_name``."""

    __tablename__ = "instances"
    __table_args__ = (CheckConstraint(one_of("kind", InstanceKind), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    block_name: Mapped[str | None] = mapped_column(String(255))
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    tags: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    categories: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=true())
    description: Mapped[str | None] = mapped_column(Text)
    # Non-secret per-kind settings (telegram: {"chat_id": ..., "account": ..., what discovery saw}).
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Retired (``instances remove``): never synced again, out of ``instances list``; its records,
    # sessions and statistics stay, and its name stays taken (history names it).
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # The key of the block syncflow made for this instance; the block carries it too, and a
    # sync refuses a block whose key differs (None: a block named with --block, or older rows).
    block_binding: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    def supports(self, category: str) -> bool:
        return category in self.categories

    @property
    def retired(self) -> bool:
        return self.retired_at is not None


class SyncSession(Base):
    """One run over many instances (seed: sync-session-schema.md, ``sync_sessions``)."""

    __tablename__ = "sync_sessions"
    __table_args__ = (
        CheckConstraint(one_of("status", SessionStatus), name="status"),
        CheckConstraint(one_of("sync_type", SyncType), name="sync_type"),
        CheckConstraint(one_of("sync_category", Category), name="sync_category"),
        Index("idx_sync_sessions_session_id", "session_id"),
        Index("idx_sync_sessions_sync_type", "sync_type"),
        Index("idx_sync_sessions_sync_category", "sync_category"),
        Index("idx_sync_sessions_status", "status"),
        Index("idx_sync_sessions_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    sync_type: Mapped[str] = mapped_column(String(20), nullable=False)
    sync_category: Mapped[str] = mapped_column(
        String(20), nullable=False, default=Category.ACCOUNT.value, server_default=Category.ACCOUNT.value
    )
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, default=SessionStatus.RUNNING.value, server_default=SessionStatus.RUNNING.value
    )
    started_at: Mapped[dt.datetime] = _created()
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    total_instances: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    successful_instances: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    failed_instances: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_by: Mapped[str | None] = mapped_column(String(255))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    retry_of: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("sync_sessions.session_id", ondelete="SET NULL")
    )
    error_message: Mapped[str | None] = mapped_column(Text)
    # A messages session: the metadata session it ran first (a soft link, no foreign key).
    metadata_session_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    records: Mapped[list[SyncInstanceRecord]] = relationship(
        back_populates="session",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="SyncInstanceRecord.id",
    )
    # Read-only: the metadata session of metadata_session_id (a soft link; None once cleaned up).
    metadata_session: Mapped[SyncSession | None] = relationship(
        primaryjoin="foreign(SyncSession.metadata_session_id) == remote(SyncSession.session_id)",
        viewonly=True,
        uselist=False,
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_SESSION_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()


class SyncInstanceRecord(Base):
    """One instance's part of a session (seed: ``sync_instance_records``)."""

    __tablename__ = "sync_instance_records"
    __table_args__ = (
        CheckConstraint(one_of("status", RecordStatus), name="status"),
        CheckConstraint(one_of("sync_category", Category), name="sync_category"),
        UniqueConstraint("session_id", "instance_id"),
        Index("idx_sync_instance_records_session_id", "session_id"),
        Index("idx_sync_instance_records_instance_id", "instance_id"),
        Index("idx_sync_instance_records_sync_category", "sync_category"),
        Index("idx_sync_instance_records_status", "status"),
        Index("idx_sync_instance_records_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("sync_sessions.session_id", ondelete="CASCADE"), nullable=False
    )
    # RESTRICT: deleting an instance must never rewrite past sessions (it is retired instead).
    instance_id: Mapped[int] = mapped_column(Integer, ForeignKey("instances.id", ondelete="RESTRICT"), nullable=False)
    instance_name: Mapped[str | None] = mapped_column(String(255))
    sync_category: Mapped[str] = mapped_column(
        String(20), nullable=False, default=Category.ACCOUNT.value, server_default=Category.ACCOUNT.value
    )
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, default=RecordStatus.PENDING.value, server_default=RecordStatus.PENDING.value
    )
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    options: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    items_synced: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    items_created: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    items_updated: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    items_deleted: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    items_unchanged: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    error_message: Mapped[str | None] = mapped_column(Text)
    sync_details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    # Something the operator must know although the sync ran (the reconciliation found data
    # the gap ledger cannot explain); None when all is well.
    warning: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    session: Mapped[SyncSession] = relationship(back_populates="records")

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_RECORD_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()


class SyncConfigItem(Base):
    """Sync state of one (instance, category): cursor, status, options, single-flight lease."""

    __tablename__ = "sync_config_items"
    __table_args__ = (
        CheckConstraint(one_of("category", Category), name="category"),
        CheckConstraint(one_of("status", ItemStatus), name="status"),
        UniqueConstraint("instance_id", "category"),
        Index("idx_sync_config_items_status", "status"),
        Index("idx_sync_config_items_priority", "priority"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(Integer, ForeignKey("instances.id", ondelete="CASCADE"), nullable=False)
    category: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, default=ItemStatus.IDLE.value, server_default=ItemStatus.IDLE.value
    )
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    last_sync_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    metadata_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    lock_owner: Mapped[str | None] = mapped_column(String(64))
    lock_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class Message(Base):
    """A message pulled from a seq instance; unique per (instance, message_id)."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("instance_id", "message_id"),
        Index("idx_messages_instance_id_seq", "instance_id", "seq"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    instance_id: Mapped[int] = mapped_column(Integer, ForeignKey("instances.id", ondelete="CASCADE"), nullable=False)
    message_id: Mapped[str] = mapped_column(String(128), nullable=False)
    server_msg_id: Mapped[str | None] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    conversation_id: Mapped[str | None] = mapped_column(String(255))
    sender_id: Mapped[str | None] = mapped_column(String(255))
    message_type: Mapped[int | None] = mapped_column(Integer)
    content: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[int | None] = mapped_column(BigInteger)
    server_time: Mapped[int | None] = mapped_column(BigInteger)
    session_id: Mapped[str | None] = mapped_column(String(36))
    synced_at: Mapped[dt.datetime] = _created()
    # Telegram (seq sources leave them empty): edit time (ms), kind (text, photo, ..., service),
    # the message replied to, and JSON extras (forward origin, media metadata, service action).
    edit_time: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str | None] = mapped_column(String(32))
    reply_to: Mapped[str | None] = mapped_column(String(128))
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class GapStatus(_Values):
    """Status of a seq hole in the gap ledger (``seq_gaps``)."""

    OPEN = "open"  # still watched: re-read by incremental syncs (``found`` may be > 0 already)
    FILLED = "filled"  # every seq of the hole arrived late and is stored
    PARTLY_FILLED = "partly_filled"  # watch over: some seqs arrived, the rest never did
    CONFIRMED_EMPTY = "confirmed_empty"  # watch over: read N times across the window, nothing


class SeqGap(Base):
    """One seq hole of an (instance, category): the seqs ``from_seq..to_seq`` (inclusive) that a
    page skipped. Written in the transaction of the page that revealed it; re-read by later
    incremental syncs (``syncflow.engine.gaps``) until filled or confirmed empty."""

    __tablename__ = "seq_gaps"
    __table_args__ = (
        CheckConstraint(one_of("status", GapStatus), name="status"),
        CheckConstraint(one_of("category", Category), name="category"),
        CheckConstraint("from_seq <= to_seq", name="range"),
        UniqueConstraint("instance_id", "category", "from_seq"),
        Index("idx_seq_gaps_instance_id_status", "instance_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    instance_id: Mapped[int] = mapped_column(Integer, ForeignKey("instances.id", ondelete="CASCADE"), nullable=False)
    category: Mapped[str] = mapped_column(String(20), nullable=False)
    from_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    to_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_checked: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    checks: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, default=GapStatus.OPEN.value, server_default=GapStatus.OPEN.value
    )
    found: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    session_id: Mapped[str | None] = mapped_column(String(36))  # the session whose page revealed it

    @property
    def width(self) -> int:
        return self.to_seq - self.from_seq + 1


class Conversation(Base):
    """Metadata of a conversation/chat (always synced as a full snapshot)."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("instance_id", "conversation_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(Integer, ForeignKey("instances.id", ondelete="CASCADE"), nullable=False)
    conversation_id: Mapped[str] = mapped_column(String(255), nullable=False)
    title: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str | None] = mapped_column(String(64))  # as the source says it: "1", "group", "channel"
    avatar_url: Mapped[str | None] = mapped_column(Text)
    username: Mapped[str | None] = mapped_column(String(255))
    members_count: Mapped[int | None] = mapped_column(BigInteger)
    avatar_id: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class Account(Base):
    """One account of a database instance (PostgreSQL role, MySQL ``user@host``), full-snapshot synced.

    ``privileges`` and ``memberships`` are sorted readable strings (see
    ``syncflow.sources.db_snapshots.AccountSnapshot``); ``fingerprint`` hashes attributes,
    privileges and memberships together. An account the server no longer lists is kept with
    ``deleted`` set; ``last_session_id`` names the session that last changed the row.
    """

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("instance_id", "identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(Integer, ForeignKey("instances.id", ondelete="CASCADE"), nullable=False)
    identity: Mapped[str] = mapped_column(String(512), nullable=False)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    privileges: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    memberships: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    first_seen_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()
    last_session_id: Mapped[str | None] = mapped_column(String(36))


class ServerSetting(Base):
    """One setting of a database instance (``pg_settings`` / ``SHOW GLOBAL VARIABLES``), full-snapshot synced."""

    __tablename__ = "server_settings"
    __table_args__ = (UniqueConstraint("instance_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(Integer, ForeignKey("instances.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    value: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    first_seen_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()
    last_session_id: Mapped[str | None] = mapped_column(String(36))


class CapacitySample(Base):
    """The size of one database of an instance as one sync session measured it (a time series).

    ``session_id`` is a soft link (no foreign key): samples outlive the cleanup of old
    sessions. ``tables`` holds the largest tables (``{name, bytes, table_bytes, index_bytes, rows}``).
    """

    __tablename__ = "capacity_samples"
    __table_args__ = (
        UniqueConstraint("instance_id", "session_id", "database"),
        Index("idx_capacity_samples_instance_id_database_collected_at", "instance_id", "database", "collected_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    instance_id: Mapped[int] = mapped_column(Integer, ForeignKey("instances.id", ondelete="CASCADE"), nullable=False)
    session_id: Mapped[str | None] = mapped_column(String(36))
    database: Mapped[str] = mapped_column(String(255), nullable=False)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    tables: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False, default=list)
    collected_at: Mapped[dt.datetime] = _created()


class CategoryPause(Base):
    """Pause state of one category (queue admin, ``syncflow serve``): while ``paused`` no new
    instance sync of the category starts (sessions wait for their slot), and the schedules of
    the deployments listed in ``paused_deployments`` (the ones the pause switched off) stay off."""

    __tablename__ = "category_pauses"
    __table_args__ = (CheckConstraint(one_of("category", Category), name="category"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str] = mapped_column(String(20), nullable=False, unique=True)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    paused_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    paused_by: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    paused_deployments: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    resumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = _updated()


class AccountLease(Base):
    """One slot of an account's cross-process limit (Telegram: one process per session).

    A process holds a slot (``owner``) while its connection to the account is open, renews
    ``expires_at`` while it uses it and clears ``owner`` when it disconnects; a killed holder's
    lease runs out by itself. See ``syncflow.engine.account_lease``.
    """

    __tablename__ = "account_leases"
    __table_args__ = (UniqueConstraint("account", "slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(255), nullable=False)
    slot: Mapped[int] = mapped_column(Integer, nullable=False)
    owner: Mapped[str | None] = mapped_column(String(128))
    acquired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
