"""Users live in `account`: `user` is a reserved word in PostgreSQL (and SQL), and every
query had to quote it. Foreign keys follow the rename on both engines.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_user_email", table_name="user")
    op.rename_table("user", "account")
    op.create_index("ix_account_email", "account", ["email"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_account_email", table_name="account")
    op.rename_table("account", "user")
    op.create_index("ix_user_email", "user", ["email"], unique=True)
