"""Per-field merge bases on each link, and the pair of systems the store is bound to.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = {column["name"] for column in inspector.get_columns("links")}
    with op.batch_alter_table("links") as links:
        for name in ("webshop_base", "chargebee_base"):
            if name not in have:  # a development build may have added them already
                links.add_column(sa.Column(name, sa.JSON))
    indexes = {index["name"] for index in inspector.get_indexes("links")}
    if "links_deterministic_id" not in indexes:  # stores made before the index was added
        op.create_index("links_deterministic_id", "links", ["resource", "deterministic_id"])
    op.create_table(
        "bound_to",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("webshop", sa.Text, nullable=False),
        sa.Column("chargebee", sa.Text, nullable=False),
        sa.Column("bound_at", sa.DateTime, nullable=False),
    )
