"""chat fields: conversation type as text, chat metadata, message extras

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

* ``conversations.type`` becomes text: servers send it as a number or a word ("group",
  "private"), and Telegram chats are ``user | bot | group | supergroup | channel``. Existing
  numbers are kept as their decimal text.
* ``conversations`` gains ``username``, ``members_count`` and ``avatar_id`` (Telegram chats).
* ``messages`` gains ``edit_time`` (ms), ``kind`` (text, photo, video, ..., service),
  ``reply_to`` and ``extra`` (JSON: forward origin, media metadata, service action); seq
  sources leave them empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.alter_column(
            "type",
            existing_type=sa.Integer(),
            type_=sa.String(length=64),
            existing_nullable=True,
            postgresql_using="type::text",
        )
        batch.add_column(sa.Column("username", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("members_count", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("avatar_id", sa.String(length=64), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("edit_time", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("kind", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("reply_to", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("extra", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        for name in ("extra", "reply_to", "kind", "edit_time"):
            batch.drop_column(name)
    with op.batch_alter_table("conversations") as batch:
        for name in ("avatar_id", "members_count", "username"):
            batch.drop_column(name)
        batch.alter_column(
            "type",
            existing_type=sa.String(length=64),
            type_=sa.Integer(),
            existing_nullable=True,
            postgresql_using="CASE WHEN type ~ '^-?[0-9]+$' THEN type::integer END",
        )
