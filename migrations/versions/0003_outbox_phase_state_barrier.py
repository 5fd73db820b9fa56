"""outbox, phase state and barrier

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("event_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("transaction_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reserved_delta", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("reserved_after", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.UniqueConstraint("account_id", "version", name="outbox_account_version_unique"),
        sa.CheckConstraint(
            "kind IN ('deposit', 'debit', 'credit', 'hold', 'release', 'compensate')", name="outbox_kind_known"
        ),
        sa.CheckConstraint(
            "balance_after >= 0 AND reserved_after >= 0 AND reserved_after <= balance_after",
            name="outbox_after_consistent",
        ),
    )
    op.create_table(
        "phase_state",
        sa.Column("transaction_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("from_account", sa.Text, nullable=False),
        sa.Column("to_account", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("request_hash", sa.LargeBinary, nullable=False),
        sa.Column("debit_try", sa.Text, nullable=False),
        sa.Column("credit_try", sa.Text, nullable=False),
        sa.Column("second_phase", sa.Text, nullable=True),
        sa.Column("second_state", sa.Text, nullable=False, server_default=sa.text("'none'")),
        sa.Column("error_code", sa.Text, nullable=True),
        sa.Column("out_of_order", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("mode IN ('tcc', 'saga')", name="phase_state_mode_known"),
        sa.CheckConstraint("debit_try IN ('not_sent', 'sent', 'received')", name="phase_state_debit_try_known"),
        sa.CheckConstraint("credit_try IN ('not_sent', 'sent', 'received')", name="phase_state_credit_try_known"),
        sa.CheckConstraint(
            "second_phase IS NULL OR second_phase IN ('confirm', 'cancel')", name="phase_state_second_phase_known"
        ),
        sa.CheckConstraint("second_state IN ('none', 'sent', 'done')", name="phase_state_second_state_known"),
    )
    op.create_index(
        "phase_state_unfinished", "phase_state", ["updated_at"], postgresql_where=sa.text("second_state <> 'done'")
    )
    op.create_table(
        "barrier",
        sa.Column("transaction_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("branch", sa.Text, nullable=False),
        sa.Column("operation", sa.Text, nullable=False),
        # 'try' rows written by a Cancel that came first carry origin 'cancel': the Try is then refused.
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("transaction_id", "branch", "operation", name="barrier_pkey"),
        sa.CheckConstraint("branch IN ('debit', 'credit')", name="barrier_branch_known"),
        sa.CheckConstraint("operation IN ('try', 'confirm', 'cancel')", name="barrier_operation_known"),
        sa.CheckConstraint("origin IN ('try', 'confirm', 'cancel')", name="barrier_origin_known"),
    )


def downgrade() -> None:
    op.drop_table("barrier")
    op.drop_index("phase_state_unfinished", table_name="phase_state")
    op.drop_table("phase_state")
    op.drop_table("outbox")
