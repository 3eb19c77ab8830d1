"""database instances: accounts, server settings, capacity samples

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

What the account / config / capacity syncs of ``postgres`` and ``mysql`` instances store:
``accounts`` and ``server_settings`` (full snapshots, deleted rows kept with ``deleted_at``)
and ``capacity_samples`` (a time series, one row per instance, database and session).
Times are naive UTC.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.func.current_timestamp()


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("privileges", JSON, nullable=False),
        sa.Column("memberships", JSON, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("last_session_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_accounts_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("instance_id", "identity", name=op.f("uq_accounts_instance_id_identity")),
    )
    op.create_table(
        "server_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("last_session_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_server_settings_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_settings")),
        sa.UniqueConstraint("instance_id", "name", name=op.f("uq_server_settings_instance_id_name")),
    )
    op.create_table(
        "capacity_samples",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=True),
        sa.Column("database", sa.String(length=255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("tables", JSON, nullable=False),
        sa.Column("collected_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_capacity_samples_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_capacity_samples")),
        sa.UniqueConstraint(
            "instance_id",
            "session_id",
            "database",
            name=op.f("uq_capacity_samples_instance_id_session_id_database"),
        ),
    )
    with op.batch_alter_table("capacity_samples", schema=None) as batch_op:
        batch_op.create_index(
            "idx_capacity_samples_instance_id_database_collected_at",
            ["instance_id", "database", "collected_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("capacity_samples", schema=None) as batch_op:
        batch_op.drop_index("idx_capacity_samples_instance_id_database_collected_at")

    op.drop_table("capacity_samples")
    op.drop_table("server_settings")
    op.drop_table("accounts")
