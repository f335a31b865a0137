"""A/B experiments: the experiment table, and on each answer the experiment and variant that
produced it (both empty for answers outside an experiment).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "experiment",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("variants_json", sa.String(), nullable=False),
        sa.Column("winner", sa.String(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("stopped_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )
    op.create_index("ix_experiment_status", "experiment", ["status"])
    with op.batch_alter_table("answermetric") as batch:
        batch.add_column(sa.Column("experiment_id", ID, nullable=True))
        batch.add_column(sa.Column("variant", sa.String(), nullable=True))
        batch.create_index("ix_answermetric_experiment_id", ["experiment_id"])


def downgrade() -> None:
    with op.batch_alter_table("answermetric") as batch:
        batch.drop_index("ix_answermetric_experiment_id")
        batch.drop_column("variant")
        batch.drop_column("experiment_id")
    op.drop_index("ix_experiment_status", "experiment")
    op.drop_table("experiment")
