"""gap ledger: seq holes per (instance, category), and a warning on the sync record

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

* ``seq_gaps``: every seq hole an incremental page revealed (``from_seq..to_seq`` inclusive,
  BIGINT up to 2^63-1), written in the transaction of that page; re-read by later incremental
  syncs until ``filled`` (the late messages arrived), ``partly_filled`` or ``confirmed_empty``
  (read ``checks`` times across the window with nothing). ``found``: messages found in it.
* ``sync_instance_records.warning``: what the per-run reconciliation could not explain
  (the server counts more messages than the store holds plus the open holes).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_STATUSES = "status IN ('open', 'filled', 'partly_filled', 'confirmed_empty')"
_CATEGORIES = "category IN ('account', 'capacity', 'config', 'metadata', 'messages', 'other')"


def upgrade() -> None:
    op.create_table(
        "seq_gaps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("from_seq", sa.BigInteger(), nullable=False),
        sa.Column("to_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_checked", sa.DateTime(), nullable=True),
        sa.Column("checks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="open", nullable=False),
        sa.Column("found", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=True),
        sa.CheckConstraint(_STATUSES, name=op.f("chk_seq_gaps_status")),
        sa.CheckConstraint(_CATEGORIES, name=op.f("chk_seq_gaps_category")),
        sa.CheckConstraint("from_seq <= to_seq", name=op.f("chk_seq_gaps_range")),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name=op.f("fk_seq_gaps_instance_id_instances"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seq_gaps")),
        sa.UniqueConstraint(
            "instance_id", "category", "from_seq", name=op.f("uq_seq_gaps_instance_id_category_from_seq")
        ),
    )
    op.create_index("idx_seq_gaps_instance_id_status", "seq_gaps", ["instance_id", "status"], unique=False)
    with op.batch_alter_table("sync_instance_records") as batch:
        batch.add_column(sa.Column("warning", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_instance_records") as batch:
        batch.drop_column("warning")
    op.drop_index("idx_seq_gaps_instance_id_status", table_name="seq_gaps")
    op.drop_table("seq_gaps")
