"""The ledger database's tables (the model its migrations must produce)."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

metadata = MetaData()

# One stream per shard. Append-only (triggers refuse UPDATE, DELETE, TRUNCATE); each event's
# hash covers its content and the previous event's hash.
ledger_events = Table(
    "ledger_events",
    metadata,
    Column("stream", Text, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("source_event_id", BigInteger, nullable=False),
    Column("transaction_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reserved_delta", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("reserved_after", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # Not hashed, derived: the running maximum of the account's created_at in version order
    # (monotonic per account); a replay at T counts the events with visible_at <= T.
    Column("visible_at", DateTime(timezone=True), nullable=False),
    # Where each event sits, carrying what a replay sums: a stream's tail is an index-only
    # scan of the key itself (one index fewer to write per event than a separate one).
    PrimaryKeyConstraint(
        "stream",
        "position",
        name="ledger_events_pkey",
        postgresql_include=["account_id", "currency", "amount", "reserved_delta", "version", "visible_at"],
    ),
    # Deduplication on arrival: an account's version lands once, however often it is relayed.
    UniqueConstraint("account_id", "version", name="ledger_events_account_version_unique"),
    Index("ledger_events_transaction", "transaction_id"),
)

# The head of each stream: where the next event goes. Locked by the relay; never trusted by verify.
ledger_heads = Table(
    "ledger_heads",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    # live: the relay appends here; moving: fenced while a move copies it away; moved: a
    # fenced copy of a stream that lives on another ledger server (ledger/streams.py)
    Column("state", Text, nullable=False, server_default=text("'live'")),
    # The highest outbox event id relayed into the stream: rows above it are new for certain.
    Column("source_high", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("state IN ('live', 'moving', 'moved')", name="ledger_heads_state_known"),
)

ledger_snapshots = Table(
    "ledger_snapshots",
    metadata,
    Column("snapshot_id", BigInteger, Identity(always=True), primary_key=True),
    Column("taken_at", DateTime(timezone=True), nullable=False),  # the moment the balances are of
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("accounts", BigInteger, nullable=False),
    Column("digest", LargeBinary, nullable=False),  # SHA-256 of its canonical form (ledger/snapshots.py)
    # Per stream partial sums (true since partitions); whole balances under each account's
    # latest stream before them.
    Column("per_stream", Boolean, nullable=False, server_default=text("true")),
    Index("ledger_snapshots_taken_at", "taken_at"),
    Index("ledger_snapshots_digest", "digest", unique=True),
)

# Per snapshot, per stream: every event at or below `position` is in the snapshot, none after
# `head` (the stream's end when it was taken) is, and between them those visible at its
# moment are; a replay from it reads the stream from position + 1 only.
ledger_snapshot_streams = Table(
    "ledger_snapshot_streams",
    metadata,
    Column("snapshot_id", BigInteger, ForeignKey("ledger_snapshots.snapshot_id"), nullable=False),
    Column("stream", Text, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("head", BigInteger, nullable=False),
    PrimaryKeyConstraint("snapshot_id", "stream", name="ledger_snapshot_streams_pkey"),
)

ledger_snapshot_balances = Table(
    "ledger_snapshot_balances",
    metadata,
    Column("snapshot_id", BigInteger, ForeignKey("ledger_snapshots.snapshot_id"), nullable=False),
    Column("account_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    # The stream whose events these sums are (per_stream snapshots): each stream's replay
    # joins its own rows.
    Column("stream", Text, nullable=False),
    PrimaryKeyConstraint("snapshot_id", "stream", "account_id", name="ledger_snapshot_balances_pkey"),
)

# Each verification's result on this server (its streams): the latest is what /metrics says.
ledger_verifications = Table(
    "ledger_verifications",
    metadata,
    Column("verification_id", BigInteger, Identity(always=True), primary_key=True),
    Column("finished_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("events", BigInteger, nullable=False),  # events of its streams checked
    Column("breaks", BigInteger, nullable=False),  # events that do not chain
    Column("rewrites", BigInteger, nullable=False),  # streams whose signed anchor disagrees
)
