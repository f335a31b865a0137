"""Answer records say how the answer ended: done, aborted (the client left mid-stream) or
failed (the backend failed part-way). Earlier records all ended done.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("answermetric") as batch:
        batch.add_column(sa.Column("status", sa.String(), nullable=False, server_default="done"))


def downgrade() -> None:
    with op.batch_alter_table("answermetric") as batch:
        batch.drop_column("status")
