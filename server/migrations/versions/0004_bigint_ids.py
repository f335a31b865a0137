"""Ids are 64-bit on PostgreSQL too, as the API promises (up to 2**63 - 1): its SERIAL and
INTEGER are 32-bit, so a large but valid id in a request failed instead of finding nothing.
SQLite's INTEGER is already 64-bit, so nothing changes there.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KEYS = ["account", "answermetric", "document", "usage", "apikey", "billingorder", "chunk"]
KEYS += ["conversation", "ledgerentry", "oauthidentity", "message", "refreshtoken"]
REFERENCES = [
    ("answermetric", "user_id"),
    ("answermetric", "conversation_id"),
    ("document", "owner_id"),
    ("apikey", "user_id"),
    ("billingcustomer", "user_id"),
    ("billingorder", "user_id"),
    ("billingsubscription", "user_id"),
    ("chunk", "document_id"),
    ("conversation", "user_id"),
    ("ledgerentry", "user_id"),
    ("oauthidentity", "user_id"),
    ("passwordreset", "user_id"),
    ("sessionfamily", "user_id"),
    ("message", "conversation_id"),
]


def _alter(kind: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table in KEYS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN id TYPE {kind}")
        op.execute(
            f"DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s AS {kind}', "
            f"pg_get_serial_sequence('{table}', 'id')); END $$"
        )
    for table, column in REFERENCES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {kind}")


def upgrade() -> None:
    _alter("bigint")


def downgrade() -> None:
    _alter("integer")
