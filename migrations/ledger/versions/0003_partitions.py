"""ledger partitions: stream heads with a state and a watermark; snapshots of partial sums

Revision ID: L0003
Revises: L0002
Create Date: 2026-12-02

The ledger is split by stream over several servers (shard_router/topology.py: `ledgers`),
and a stream can move from one to another (ledger/streams.py).

- `ledger_heads.state`: `live` (the relay appends here), `moving` (fenced while a move copies
  the stream away: the relay leaves it alone), `moved` (a fenced copy: the stream lives on
  another server now, and nothing reads this one).
- `ledger_heads.source_high`: the highest outbox event id relayed into the stream. A relayed
  row above it is new for certain; only rows at or below it (a transaction that committed
  late, or a relay that died between its commit and the outbox delete) are checked against
  what the stream holds.
- `ledger_snapshots.per_stream`: the snapshot holds, per stream, each account's partial sum
  over that stream's events, so partitions add up and a stream can leave a server without
  taking others' balances along. Snapshots taken before are whole balances, each under the
  stream of the account's latest event: they are used only where their streams are exactly
  the server's (ledger/replay.py).
- `ledger_snapshot_balances` keyed by (snapshot, stream, account): an account whose slot moved
  has a row per stream.
- `ledger_events_pkey` (stream, position) carries the replay's columns (INCLUDE), and the
  separate `ledger_events_replay` index on the same key goes: one index fewer for the relay
  to write per event, the same index-only scan for a replay.
"""

import sqlalchemy as sa
from alembic import op

REPLAY_COLUMNS = ["account_id", "currency", "amount", "reserved_delta", "version", "visible_at"]

revision = "L0003"
down_revision = "L0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger_heads", sa.Column("state", sa.Text, nullable=False, server_default="live"))
    op.create_check_constraint("ledger_heads_state_known", "ledger_heads", "state IN ('live', 'moving', 'moved')")
    op.add_column("ledger_heads", sa.Column("source_high", sa.BigInteger, nullable=False, server_default="0"))
    op.execute("""
        UPDATE ledger_heads h SET source_high = coalesce(
            (SELECT max(source_event_id) FROM ledger_events e WHERE e.stream = h.stream), 0)
    """)
    op.add_column("ledger_snapshots", sa.Column("per_stream", sa.Boolean, nullable=False, server_default=sa.false()))
    op.alter_column("ledger_snapshots", "per_stream", server_default=sa.true())
    op.drop_index("ledger_snapshot_balances_stream", table_name="ledger_snapshot_balances")
    op.drop_constraint("ledger_snapshot_balances_pkey", "ledger_snapshot_balances", type_="primary")
    op.create_primary_key(
        "ledger_snapshot_balances_pkey", "ledger_snapshot_balances", ["snapshot_id", "stream", "account_id"]
    )
    # alembic's create_primary_key takes no INCLUDE: the statement itself
    op.drop_constraint("ledger_events_pkey", "ledger_events", type_="primary")
    op.execute(
        "ALTER TABLE ledger_events ADD CONSTRAINT ledger_events_pkey PRIMARY KEY (stream, position) "
        f"INCLUDE ({', '.join(REPLAY_COLUMNS)})"
    )
    op.drop_index("ledger_events_replay", "ledger_events")


def downgrade() -> None:
    op.create_index("ledger_events_replay", "ledger_events", ["stream", "position"], postgresql_include=REPLAY_COLUMNS)
    op.drop_constraint("ledger_events_pkey", "ledger_events", type_="primary")
    op.create_primary_key("ledger_events_pkey", "ledger_events", ["stream", "position"])
    op.drop_constraint("ledger_snapshot_balances_pkey", "ledger_snapshot_balances", type_="primary")
    op.create_primary_key("ledger_snapshot_balances_pkey", "ledger_snapshot_balances", ["snapshot_id", "account_id"])
    op.create_index("ledger_snapshot_balances_stream", "ledger_snapshot_balances", ["snapshot_id", "stream"])
    op.drop_column("ledger_snapshots", "per_stream")
    op.drop_column("ledger_heads", "source_high")
    op.drop_constraint("ledger_heads_state_known", "ledger_heads")
    op.drop_column("ledger_heads", "state")
