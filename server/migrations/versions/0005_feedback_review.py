"""The learning loop's first tables: the asker's feedback on an answer (one row per answer,
replaced when they rate again) and experts' reviews; and the hash of the token a guest rates
an answer with.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("answermetric") as batch:
        batch.add_column(sa.Column("feedback_token_hash", sa.String(), nullable=True))
    op.create_table(
        "feedback",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "answer_id",
            ID,
            sa.ForeignKey("answermetric.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("rating", sa.String(), nullable=False),
        sa.Column("comment", sa.String(), nullable=True),
        sa.Column("tags_json", sa.String(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "review",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "answer_id", ID, sa.ForeignKey("answermetric.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("reviewer_id", ID, sa.ForeignKey("account.id"), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("corrected_answer", sa.String(), nullable=True),
        sa.Column("knowledge_gap", sa.String(), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_review_answer_id", "review", ["answer_id"])
    op.create_index("ix_review_reviewer_id", "review", ["reviewer_id"])


def downgrade() -> None:
    op.drop_table("review")
    op.drop_table("feedback")
    with op.batch_alter_table("answermetric") as batch:
        batch.drop_column("feedback_token_hash")
