"""category pauses: the queue admin's pause flag per category

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

``category_pauses`` holds one row per category that was ever paused through the console
(``POST /api/admin/sync-queue/{category}/pause``): while ``paused`` is true no new instance
sync of the category starts, and ``paused_deployments`` lists the Prefect deployments whose
schedules the pause switched off (resume switches exactly those back on). Times are naive UTC.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.func.current_timestamp()


def upgrade() -> None:
    op.create_table(
        "category_pauses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("paused_at", sa.DateTime(), nullable=True),
        sa.Column("paused_by", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("paused_deployments", JSON, nullable=False),
        sa.Column("resumed_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "category IN ('account', 'capacity', 'config', 'metadata', 'messages', 'other')",
            name=op.f("chk_category_pauses_category"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_category_pauses")),
        sa.UniqueConstraint("category", name=op.f("uq_category_pauses_category")),
    )


def downgrade() -> None:
    op.drop_table("category_pauses")
