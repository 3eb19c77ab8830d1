"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Every table of the store as of the Foundation issue. Times are naive UTC.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.func.current_timestamp()


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("block_name", sa.String(length=255), nullable=True),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("categories", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "kind IN ('http-seq', 'postgres', 'mysql', 'sql-table', 'telegram')",
            name=op.f("chk_instances_kind"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("name", name=op.f("uq_instances_name")),
    )
    op.create_table(
        "sync_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("sync_type", sa.String(length=20), nullable=False),
        sa.Column(
            "sync_category",
            sa.String(length=20),
            server_default="account",
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), server_default="running", nullable=False),
        sa.Column("started_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("total_instances", sa.Integer(), server_default="0", nullable=False),
        sa.Column("successful_instances", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed_instances", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("retry_of", sa.String(length=36), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'cancelled')",
            name=op.f("chk_sync_sessions_status"),
        ),
        sa.CheckConstraint(
            "sync_category IN ('account', 'capacity', 'config', 'metadata', 'messages', 'other')",
            name=op.f("chk_sync_sessions_sync_category"),
        ),
        sa.CheckConstraint(
            "sync_type IN ('scheduled', 'manual_batch')",
            name=op.f("chk_sync_sessions_sync_type"),
        ),
        sa.ForeignKeyConstraint(
            ["retry_of"],
            ["sync_sessions.session_id"],
            name=op.f("fk_sync_sessions_retry_of_sync_sessions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_sessions")),
        sa.UniqueConstraint("session_id", name=op.f("uq_sync_sessions_session_id")),
    )
    with op.batch_alter_table("sync_sessions", schema=None) as batch_op:
        batch_op.create_index("idx_sync_sessions_created_at", ["created_at"], unique=False)
        batch_op.create_index("idx_sync_sessions_session_id", ["session_id"], unique=False)
        batch_op.create_index("idx_sync_sessions_status", ["status"], unique=False)
        batch_op.create_index("idx_sync_sessions_sync_category", ["sync_category"], unique=False)
        batch_op.create_index("idx_sync_sessions_sync_type", ["sync_type"], unique=False)

    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.String(length=255), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("type", sa.Integer(), nullable=True),
        sa.Column("avatar_url", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_conversations_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint(
            "instance_id",
            "conversation_id",
            name=op.f("uq_conversations_instance_id_conversation_id"),
        ),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("server_msg_id", sa.String(length=128), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.String(length=255), nullable=True),
        sa.Column("sender_id", sa.String(length=255), nullable=True),
        sa.Column("message_type", sa.Integer(), nullable=True),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=True),
        sa.Column("server_time", sa.BigInteger(), nullable=True),
        sa.Column("session_id", sa.String(length=36), nullable=True),
        sa.Column("synced_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_messages_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("instance_id", "message_id", name=op.f("uq_messages_instance_id_message_id")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("idx_messages_instance_id_seq", ["instance_id", "seq"], unique=False)

    op.create_table(
        "sync_config_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="idle", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_sync_time", sa.DateTime(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("metadata_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("options", JSON, nullable=False),
        sa.Column("lock_owner", sa.String(length=64), nullable=True),
        sa.Column("lock_expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "category IN ('account', 'capacity', 'config', 'metadata', 'messages', 'other')",
            name=op.f("chk_sync_config_items_category"),
        ),
        sa.CheckConstraint(
            "status IN ('idle', 'queued', 'running', 'completed', 'failed', 'cancelled')",
            name=op.f("chk_sync_config_items_status"),
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_sync_config_items_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_config_items")),
        sa.UniqueConstraint(
            "instance_id",
            "category",
            name=op.f("uq_sync_config_items_instance_id_category"),
        ),
    )
    with op.batch_alter_table("sync_config_items", schema=None) as batch_op:
        batch_op.create_index("idx_sync_config_items_priority", ["priority"], unique=False)
        batch_op.create_index("idx_sync_config_items_status", ["status"], unique=False)

    op.create_table(
        "sync_instance_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("instance_name", sa.String(length=255), nullable=True),
        sa.Column(
            "sync_category",
            sa.String(length=20),
            server_default="account",
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("options", JSON, nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("items_synced", sa.Integer(), server_default="0", nullable=False),
        sa.Column("items_created", sa.Integer(), server_default="0", nullable=False),
        sa.Column("items_updated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("items_deleted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("items_unchanged", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("sync_details", JSON, nullable=True),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled', 'skipped')",
            name=op.f("chk_sync_instance_records_status"),
        ),
        sa.CheckConstraint(
            "sync_category IN ('account', 'capacity', 'config', 'metadata', 'messages', 'other')",
            name=op.f("chk_sync_instance_records_sync_category"),
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_sync_instance_records_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sync_sessions.session_id"],
            name=op.f("fk_sync_instance_records_session_id_sync_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_instance_records")),
        sa.UniqueConstraint(
            "session_id",
            "instance_id",
            name=op.f("uq_sync_instance_records_session_id_instance_id"),
        ),
    )
    with op.batch_alter_table("sync_instance_records", schema=None) as batch_op:
        batch_op.create_index("idx_sync_instance_records_created_at", ["created_at"], unique=False)
        batch_op.create_index("idx_sync_instance_records_instance_id", ["instance_id"], unique=False)
        batch_op.create_index("idx_sync_instance_records_session_id", ["session_id"], unique=False)
        batch_op.create_index("idx_sync_instance_records_status", ["status"], unique=False)
        batch_op.create_index("idx_sync_instance_records_sync_category", ["sync_category"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sync_instance_records", schema=None) as batch_op:
        batch_op.drop_index("idx_sync_instance_records_sync_category")
        batch_op.drop_index("idx_sync_instance_records_status")
        batch_op.drop_index("idx_sync_instance_records_session_id")
        batch_op.drop_index("idx_sync_instance_records_instance_id")
        batch_op.drop_index("idx_sync_instance_records_created_at")

    op.drop_table("sync_instance_records")
    with op.batch_alter_table("sync_config_items", schema=None) as batch_op:
        batch_op.drop_index("idx_sync_config_items_status")
        batch_op.drop_index("idx_sync_config_items_priority")

    op.drop_table("sync_config_items")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("idx_messages_instance_id_seq")

    op.drop_table("messages")
    op.drop_table("conversations")
    with op.batch_alter_table("sync_sessions", schema=None) as batch_op:
        batch_op.drop_index("idx_sync_sessions_sync_type")
        batch_op.drop_index("idx_sync_sessions_sync_category")
        batch_op.drop_index("idx_sync_sessions_status")
        batch_op.drop_index("idx_sync_sessions_session_id")
        batch_op.drop_index("idx_sync_sessions_created_at")

    op.drop_table("sync_sessions")
    op.drop_table("instances")
