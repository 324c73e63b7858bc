"""Dead letters with a lifecycle: one open entry per record (per side it came from, stream
and key), its attempts, its first and last failure, and when it was resolved.

Stores made before this kept a row per failure: each record's rows become one open entry,
the latest row's reason and record with attempts = the number of rows, the first row's
time and run id as its first failure. The side a row came from is read from its details
(target-chargebee's rows carry `chargebee_id`; target-customwebshop's have no details);
the tap stream of target-chargebee's rows is the one the bundled maps feed the stream from.

Revision ID: 0003
Revises: 0002
"""

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

#: target-chargebee's streams -> the tap-customwebshop stream meltano.yml's maps feed them from
_FORWARD_SOURCE = {"items": "products", "item_prices": "products", "invoices": "orders"}


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as table:
        table.add_column(sa.Column("source", sa.String(20)))
        table.add_column(sa.Column("source_stream", sa.String(100)))
        table.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="1"))
        table.add_column(sa.Column("first_run_id", sa.String(64)))
        table.add_column(sa.Column("last_failed_at", sa.DateTime))
        table.add_column(sa.Column("resolved_at", sa.DateTime))
        table.add_column(sa.Column("resolved_run_id", sa.String(64)))
    _merge_existing_rows()
    with op.batch_alter_table("dead_letters") as table:
        table.alter_column("source", existing_type=sa.String(20), nullable=False)
        table.alter_column("source_stream", existing_type=sa.String(100), nullable=False)
        table.alter_column("first_run_id", existing_type=sa.String(64), nullable=False)
        table.alter_column("last_failed_at", existing_type=sa.DateTime, nullable=False)
    # at most one open entry per record: a later failure updates it (an upsert on this index)
    op.create_index(
        "dead_letters_open_key",
        "dead_letters",
        ["source", "stream", "record_key"],
        unique=True,
        sqlite_where=sa.text("resolved_at IS NULL"),
        postgresql_where=sa.text("resolved_at IS NULL"),
    )


def _merge_existing_rows() -> None:
    db = op.get_bind()
    letters = sa.table(
        "dead_letters",
        sa.column("id", sa.Integer),
        sa.column("run_id", sa.String),
        sa.column("stream", sa.String),
        sa.column("record_key", sa.String),
        sa.column("details", sa.JSON),
        sa.column("created_at", sa.DateTime),
        sa.column("source", sa.String),
        sa.column("source_stream", sa.String),
        sa.column("attempts", sa.Integer),
        sa.column("first_run_id", sa.String),
        sa.column("last_failed_at", sa.DateTime),
    )
    rows = db.execute(
        sa.select(letters.c.id, letters.c.run_id, letters.c.stream, letters.c.record_key,
                  letters.c.details, letters.c.created_at).order_by(letters.c.id)
    ).all()  # fmt: skip
    by_record = defaultdict(list)
    for row in rows:
        forward = isinstance(row.details, dict) and "chargebee_id" in row.details
        by_record[("webshop" if forward else "chargebee", row.stream, row.record_key)].append(row)
    for (source, stream, _key), group in by_record.items():
        first, latest = group[0], group[-1]
        source_stream = _FORWARD_SOURCE.get(stream, stream) if source == "webshop" else stream
        db.execute(
            letters.update()
            .where(letters.c.id == latest.id)
            .values(source=source, source_stream=source_stream, attempts=len(group),
                    first_run_id=first.run_id, last_failed_at=latest.created_at,
                    created_at=first.created_at)
        )  # fmt: skip
        older = [row.id for row in group[:-1]]
        if older:  # merged into the latest: its attempts count them
            db.execute(letters.delete().where(letters.c.id.in_(older)))
