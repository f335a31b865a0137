"""Alembic's environment: runs on the connection `server.db.migrate` hands it, inside that
caller's transaction, so concurrent starts serialise on the database's own lock."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from server.db.tables import is_unmapped  # registers every table on the metadata


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    """The lexical index is written by hand, not from the models: SQLite's FTS5 table and
    its shadow tables, PostgreSQL's chunk.tsv column and its GIN index; so is pgvector's
    chunk_vector table."""
    return not is_unmapped(name, type_)


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    include_name=_ours,
    render_as_batch=True,  # SQLite alters tables by copy-and-move
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
