"""instance retirement, block binding, the metadata session of a messages session

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

* ``instances.retired_at``: ``syncflow instances remove`` retires an instance instead of
  deleting it. A retired instance is never synced again and leaves ``instances list``; its
  records, sessions and statistics stay as they were (and still name it). Its name stays
  taken (history names it), so a new instance needs another name.
* ``instances.block_binding``: the key of the connection block syncflow made for the
  instance; the block carries the same key, and a sync refuses a block whose key differs
  (another instance's connection must never fill this instance's tables).
* ``sync_instance_records.instance_id`` no longer cascades: ``ON DELETE RESTRICT``, so no
  deletion of an instance row can rewrite the history of past sessions (each record keeps
  ``instance_name``).
* ``sync_sessions.metadata_session_id``: the metadata session a messages session ran first
  (a soft link, like ``capacity_samples.session_id``: no foreign key, so SQLite does not have
  to rebuild ``sync_sessions``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FK = "fk_sync_instance_records_instance_id_instances"


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("retired_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("block_binding", sa.String(length=64), nullable=True))
    with op.batch_alter_table("sync_sessions") as batch:
        batch.add_column(sa.Column("metadata_session_id", sa.String(length=36), nullable=True))
    # SQLite rebuilds sync_instance_records (nothing references it, so nothing cascades).
    with op.batch_alter_table("sync_instance_records") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.create_foreign_key(FK, "instances", ["instance_id"], ["id"], ondelete="RESTRICT")


def downgrade() -> None:
    with op.batch_alter_table("sync_instance_records") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.create_foreign_key(FK, "instances", ["instance_id"], ["id"], ondelete="CASCADE")
    with op.batch_alter_table("sync_sessions") as batch:
        batch.drop_column("metadata_session_id")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("block_binding")
        batch.drop_column("retired_at")
