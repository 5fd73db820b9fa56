"""The shard schema as SQLAlchemy Core tables: the model the migrations must produce.

Migrations spell their DDL out (they are frozen in time); tests/test_migrations.py
checks that `alembic upgrade head` yields exactly these tables.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
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
    # The router's slot, computed by the database (wallet_slot is CRC32 mod 4096, as in
    # shard_router/slots.py): a slot migration finds its accounts by it.
    Column("slot", SmallInteger, Computed("wallet_slot(account_id)", persisted=True), nullable=False),
    # live: this shard serves the account. incoming: copied here by a slot migration, not
    # yet served. moved: served elsewhere now; every write here is refused.
    Column("placement", Text, nullable=False, server_default=text("'live'")),
    CheckConstraint("balance >= 0", name="accounts_balance_not_negative"),
    CheckConstraint("reserved >= 0 AND reserved <= balance", name="accounts_reserved_within_balance"),
    CheckConstraint("status IN ('active', 'frozen')", name="accounts_status_known"),
    CheckConstraint("version >= 0", name="accounts_version_not_negative"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="accounts_currency_iso"),
    CheckConstraint("placement IN ('live', 'incoming', 'moved')", name="accounts_placement_known"),
    Index("accounts_slot", "slot"),
)

# The slots this shard owns: account creation checks it in the same statement, and a slot
# migration moves a row from one shard to another. The fence that keeps a coordinator
# routing with an old topology from creating an account on the wrong shard.
shard_slots = Table(
    "shard_slots",
    metadata,
    Column("slot", SmallInteger, primary_key=True, autoincrement=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("slot >= 0 AND slot < 4096", name="shard_slots_in_range"),
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
    Index("commit_decisions_decided_at", "decided_at"),  # the retention job's scan
)

# Every balance change, written in the same local transaction as the change; the ledger
# relay copies it out. (account_id, version) orders an account's events exactly.
outbox = Table(
    "outbox",
    metadata,
    Column("event_id", BigInteger, Identity(always=True), primary_key=True),
    Column("transaction_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),  # signed change of balance
    Column("reserved_delta", BigInteger, nullable=False),  # signed change of reserved
    Column("balance_after", BigInteger, nullable=False),
    Column("reserved_after", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("account_id", "version", name="outbox_account_version_unique"),
    CheckConstraint(
        "kind IN ('deposit', 'debit', 'credit', 'hold', 'release', 'compensate')", name="outbox_kind_known"
    ),
    CheckConstraint(
        "balance_after >= 0 AND reserved_after >= 0 AND reserved_after <= balance_after", name="outbox_after_consistent"
    ),
)

# TC/C and Saga progress, on the debit-side shard, one row per transfer.
phase_state = Table(
    "phase_state",
    metadata,
    Column("transaction_id", UUID(as_uuid=True), primary_key=True),
    Column("mode", Text, nullable=False),
    Column("from_account", Text, nullable=False),
    Column("to_account", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("debit_try", Text, nullable=False),  # not_sent | sent | received
    Column("credit_try", Text, nullable=False),
    Column("second_phase", Text, nullable=True),  # confirm | cancel, once decided
    Column("second_state", Text, nullable=False, server_default=text("'none'")),  # none | sent | done
    Column("error_code", Text, nullable=True),
    Column("out_of_order", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("mode IN ('tcc', 'saga')", name="phase_state_mode_known"),
    CheckConstraint("debit_try IN ('not_sent', 'sent', 'received')", name="phase_state_debit_try_known"),
    CheckConstraint("credit_try IN ('not_sent', 'sent', 'received')", name="phase_state_credit_try_known"),
    CheckConstraint(
        "second_phase IS NULL OR second_phase IN ('confirm', 'cancel')", name="phase_state_second_phase_known"
    ),
    CheckConstraint("second_state IN ('none', 'sent', 'done')", name="phase_state_second_state_known"),
    Index("phase_state_unfinished", "updated_at", postgresql_where=text("second_state <> 'done'")),
)

# One row per (transfer, branch, operation) that ran on this shard, written in the same
# local transaction as the branch's business change: repeats do nothing, a Cancel before
# its Try is a null compensation, and a Try after its Cancel is refused.
barrier = Table(
    "barrier",
    metadata,
    Column("transaction_id", UUID(as_uuid=True), nullable=False),
    Column("branch", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("transaction_id", "branch", "operation", name="barrier_pkey"),
    CheckConstraint("branch IN ('debit', 'credit')", name="barrier_branch_known"),
    CheckConstraint("operation IN ('try', 'confirm', 'cancel')", name="barrier_operation_known"),
    CheckConstraint("origin IN ('try', 'confirm', 'cancel')", name="barrier_origin_known"),
)
