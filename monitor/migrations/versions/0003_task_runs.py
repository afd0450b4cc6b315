"""task runs: when each periodic task last ran and how it ended, for `atmp-monitor status`

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_runs",
        sa.Column(
            "name", sa.String(length=200), nullable=False, comment="the beat entry: poll:<source>, digest:<name>, sweep"
        ),
        sa.Column("task", sa.String(length=100), nullable=False),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_outcome", sa.String(length=32), nullable=False),
        sa.Column("last_detail", sa.Text(), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("task_runs")
