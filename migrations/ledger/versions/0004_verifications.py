"""ledger verifications: each `wallet ledger verify`'s result, on every ledger server

Revision ID: L0004
Revises: L0003
Create Date: 2026-12-09

One row per verification and ledger server: the events of its streams that were checked,
how many do not chain (breaks) and how many of its streams disagree with a signed anchor
(rewrites). `/metrics` reads each server's latest (`wallet_ledger_verification_ok`, and
its time), so an alert can say the last verification failed, or that none ran lately.
"""

import sqlalchemy as sa
from alembic import op

revision = "L0004"
down_revision = "L0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_verifications",
        sa.Column("verification_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("breaks", sa.BigInteger, nullable=False),
        sa.Column("rewrites", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_verifications")
