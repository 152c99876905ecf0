"""dashboard: rollup tables of per run x category counts, and a partial index of provider signals

Revision ID: dashboard_0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "dashboard_0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dash_rollup",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=200), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("human", sa.Integer(), nullable=False),
        sa.Column("responses", sa.Integer(), nullable=False),
        sa.Column("provider", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "category"),
    )
    op.create_table(
        "dash_rollup_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("response_max_id", sa.Integer(), nullable=False),
        sa.Column("response_count", sa.Integer(), nullable=False),
        sa.Column("label_max_id", sa.Integer(), nullable=False),
        sa.Column("label_count", sa.Integer(), nullable=False),
        sa.Column("prompt_max_id", sa.Integer(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_responses_provider_signal",
        "responses",
        ["run_id", "provider_refusal"],
        unique=False,
        sqlite_where=sa.text("provider_refusal IS NOT NULL"),
        postgresql_where=sa.text("provider_refusal IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_responses_provider_signal", table_name="responses")
    op.drop_table("dash_rollup_state")
    op.drop_table("dash_rollup")
