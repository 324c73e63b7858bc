"""The link store as the first released version made it: links and dead letters.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "links",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("resource", sa.String(50), nullable=False),
        sa.Column("webshop_id", sa.String(255), nullable=False),
        sa.Column("chargebee_id", sa.String(255), nullable=False),
        sa.Column("webshop_version", sa.JSON),
        sa.Column("webshop_hash", sa.Text),
        sa.Column("webshop_synced_at", sa.DateTime),
        sa.Column("chargebee_version", sa.JSON),
        sa.Column("chargebee_hash", sa.Text),
        sa.Column("chargebee_synced_at", sa.DateTime),
        sa.Column("deterministic_id", sa.String(255)),
        sa.UniqueConstraint("resource", "webshop_id", name="links_webshop_key"),
        sa.UniqueConstraint("resource", "chargebee_id", name="links_chargebee_key"),
    )
    op.create_index("links_deterministic_id", "links", ["resource", "deterministic_id"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("stream", sa.String(100), nullable=False),
        sa.Column("record_key", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("record", sa.JSON),
        sa.Column("details", sa.JSON),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
