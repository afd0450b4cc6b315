"""notifications: delivery kinds and attempt bookkeeping, digest runs, source-health incidents

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_incidents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subscription", sa.String(length=100), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="the source's failing_since when the incident opened",
        ),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription", "source_id", "started_at", name="uq_source_incidents_started"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind",
                sa.String(length=16),
                server_default="event",
                nullable=False,
                comment="event|digest_item|digest|health",
            )
        )
        batch_op.add_column(sa.Column("digest_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("incident_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "parts_sent",
                sa.Integer(),
                server_default="0",
                nullable=False,
                comment="messages of a split digest already accepted",
            )
        )
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_response", sa.Text(), nullable=True))
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=16),
            existing_nullable=False,
            comment="pending|sending|sent|failed; queued|batched for digest items",
            existing_comment="pending|sending|sent|failed",
        )
        batch_op.create_foreign_key("fk_deliveries_digest_id", "deliveries", ["digest_id"], ["id"])
        batch_op.create_foreign_key("fk_deliveries_incident_id", "source_incidents", ["incident_id"], ["id"])
        batch_op.create_index("ix_deliveries_subscription_status", ["subscription", "status"], unique=False)
        batch_op.create_index("ix_deliveries_digest_id", ["digest_id"], unique=False)

    op.create_table(
        "digest_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subscription", sa.String(length=100), nullable=False),
        sa.Column(
            "slot",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="the schedule time served; null for a manual send",
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription", "slot", name="uq_digest_runs_subscription_slot"),
    )


def downgrade() -> None:
    op.drop_table("digest_runs")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_digest_id")
        batch_op.drop_index("ix_deliveries_subscription_status")
        batch_op.drop_constraint("fk_deliveries_incident_id", type_="foreignkey")
        batch_op.drop_constraint("fk_deliveries_digest_id", type_="foreignkey")
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=16),
            existing_nullable=False,
            comment="pending|sending|sent|failed",
            existing_comment="pending|sending|sent|failed; queued|batched for digest items",
        )
        batch_op.drop_column("last_response")
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("parts_sent")
        batch_op.drop_column("payload")
        batch_op.drop_column("incident_id")
        batch_op.drop_column("digest_id")
        batch_op.drop_column("kind")
    op.drop_table("source_incidents")
