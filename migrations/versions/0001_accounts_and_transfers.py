"""accounts and transfers

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("reserved", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'active'")),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("balance >= 0", name="accounts_balance_not_negative"),
        sa.CheckConstraint("reserved >= 0 AND reserved <= balance", name="accounts_reserved_within_balance"),
        sa.CheckConstraint("status IN ('active', 'frozen')", name="accounts_status_known"),
        sa.CheckConstraint("version >= 0", name="accounts_version_not_negative"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="accounts_currency_iso"),
    )
    op.create_table(
        "transfers",
        sa.Column("transaction_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("from_account", sa.Text, nullable=True),
        sa.Column("to_account", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("protocol", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("phase", sa.Text, nullable=False),
        sa.Column("error_code", sa.Text, nullable=True),
        sa.Column("request_hash", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("amount > 0", name="transfers_amount_positive"),
        sa.CheckConstraint("kind IN ('transfer', 'deposit')", name="transfers_kind_known"),
        sa.CheckConstraint("status IN ('success', 'failed')", name="transfers_status_known"),
        sa.CheckConstraint("(status = 'success') = (error_code IS NULL)", name="transfers_failure_has_code"),
    )


def downgrade() -> None:
    op.drop_table("transfers")
    op.drop_table("accounts")
