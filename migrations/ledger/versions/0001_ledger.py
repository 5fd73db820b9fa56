"""event ledger, heads, snapshots; append-only by trigger

Revision ID: L0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "L0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("ledger_events", "ledger_snapshots", "ledger_snapshot_balances")


def upgrade() -> None:
    op.create_table(
        "ledger_events",
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("source_event_id", sa.BigInteger, nullable=False),
        sa.Column("transaction_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reserved_delta", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("reserved_after", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("stream", "position", name="ledger_events_pkey"),
        sa.UniqueConstraint("account_id", "version", name="ledger_events_account_version_unique"),
    )
    op.create_index("ledger_events_transaction", "ledger_events", ["transaction_id"])
    op.create_table(
        "ledger_heads",
        sa.Column("stream", sa.Text, primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "ledger_snapshots",
        sa.Column("snapshot_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("accounts", sa.BigInteger, nullable=False),
    )
    op.create_index("ledger_snapshots_taken_at", "ledger_snapshots", ["taken_at"])
    op.create_table(
        "ledger_snapshot_balances",
        sa.Column("snapshot_id", sa.BigInteger, sa.ForeignKey("ledger_snapshots.snapshot_id"), nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", "account_id", name="ledger_snapshot_balances_pkey"),
    )
    # The database itself refuses to change history, whoever asks.
    op.execute("""
        CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$
    """)
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )


def downgrade() -> None:
    for table in reversed(APPEND_ONLY):
        op.drop_table(table)
    op.drop_table("ledger_heads")
    op.execute("DROP FUNCTION ledger_refuse_change()")
