"""Alembic's environment: runs on the connection `server.db.migrate` hands it, inside that
caller's transaction, so concurrent starts serialise on the database's own lock."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import server.db  # noqa: F401  (registers every table on SQLModel.metadata)


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    """The FTS5 table and its shadow tables are written by hand, not from the models."""
    return not (type_ == "table" and name is not None and name.startswith("chunk_fts"))


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
