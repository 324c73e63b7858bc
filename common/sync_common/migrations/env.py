"""Alembic's entry point for the link store's migrations: run by sync_common.links on the
connection it opens (never from the alembic command line)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
