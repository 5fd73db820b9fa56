"""The shard schema as SQLAlchemy Core tables: the model the migrations must produce.

Migrations spell their DDL out (they are frozen in time); tests/test_migrations.py
checks that `alembic upgrade head` yields exactly these tables.
"""
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("currency", Text, nullable=False),
    # Minor units. balance includes reserved; available = balance - reserved.
    Column("balance", BigInteger, nullable=False, server_default=text("0")),
    Column("reserved", BigInteger, nullable=False, server_default=text("0")),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    # +1 per balance change: orders an account's events exactly, whatever the commit order.
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("balance >= 0", name="accounts_balance_not_negative"),
    CheckConstraint("reserved >= 0 AND reserved <= balance", name="accounts_reserved_within_balance"),
    CheckConstraint("status IN ('active', 'frozen')", name="accounts_status_known"),
    CheckConstraint("version >= 0", name="accounts_version_not_negative"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="accounts_currency_iso"),
)

# One row per transaction id whose debit side (or deposit target) lives on this shard:
# the idempotency record and the transfer's outcome, written in the same local
# transaction as the balance change.
transfers = Table(
    "transfers",
    metadata,
    Column("transaction_id", UUID(as_uuid=True), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("from_account", Text, nullable=True),
    Column("to_account", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("protocol", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("phase", Text, nullable=False),
    Column("error_code", Text, nullable=True),
    Column("request_hash", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("amount > 0", name="transfers_amount_positive"),
    CheckConstraint("kind IN ('transfer', 'deposit')", name="transfers_kind_known"),
    CheckConstraint("status IN ('success', 'failed')", name="transfers_status_known"),
    CheckConstraint("(status = 'success') = (error_code IS NULL)", name="transfers_failure_has_code"),
)

# Two-phase commit: the outcome of a cross-shard batch, on its decision shard (a
# debit-side shard of the batch). The coordinator's INSERT of 'commit', committed
# with that shard's own branch, is the commit point; recovery fences a dead
# coordinator by inserting 'abort' under the same key. The primary key decides.
commit_decisions = Table(
    "commit_decisions",
    metadata,
    Column("batch_id", UUID(as_uuid=True), primary_key=True),
    Column("outcome", Text, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("outcome IN ('commit', 'abort')", name="commit_decisions_outcome_known"),
)
