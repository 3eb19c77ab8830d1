"""telegram: per-instance settings and the per-account lease

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

* ``instances.config`` (JSON, nullable): the non-secret, per-kind settings of an instance.
  A ``telegram`` instance is one chat of an account: ``{"chat_id": -1001234567890,
  "account": "main", "type": "supergroup", "title": "...", "username": ...}`` (``account``
  is the name of the account's block, which is also the instance's ``block_name``; the
  other keys are what discovery saw). Other kinds leave it empty.
* ``account_leases``: who may use an account's session now, across processes and machines.
  One row per (account, slot); a process holds a slot while its connection to the account is
  open, renews it while it uses it, and gives it back when it disconnects; a killed holder's
  lease runs out by itself (``expires_at``). Telegram revokes a session used from two places
  at once: the default is one slot per account.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
# TODO(integrator): "0005" once 0005_gap_ledger.py lands (chained to 0004 so this branch runs alone).
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("config", JSON, nullable=True))
    op.create_table(
        "account_leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("acquired_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_leases")),
        sa.UniqueConstraint("account", "slot", name=op.f("uq_account_leases_account_slot")),
    )


def downgrade() -> None:
    op.drop_table("account_leases")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("config")
