"""visible_at per event; snapshots with per-stream positions and a digest

Revision ID: L0002
Revises: L0001
Create Date: 2026-12-02

- `ledger_events.visible_at`: the running maximum of an account's `created_at` in version
  order (so monotonic per account): a replay at T counts exactly the events whose
  visible_at <= T, with no window over the account's history.
- `ledger_snapshot_streams`: per snapshot, per stream, the position up to which every event
  is in the snapshot, and the stream's head when it was taken (after it, every event is new
  to the snapshot): a replay from it reads only the events after the first.
- `ledger_events_replay`: (stream, position) with what a replay sums, so a stream's tail is
  an index-only scan.
- `ledger_snapshot_balances.stream`: the stream of the account's latest event in the
  snapshot, so each stream's replay joins its own accounts' balances in the database.
- `ledger_snapshots.digest`: SHA-256 of the snapshot's canonical form (ledger/snapshots.py),
  so an exported snapshot is checked on import.
"""

import sqlalchemy as sa
from alembic import op

from ledger.snapshots import digest_of_rows

REPLAY_COLUMNS = ("account_id", "currency", "amount", "reserved_delta", "version", "visible_at")

revision = "L0002"
down_revision = "L0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_visible_at()
    add_snapshot_streams()
    digest_old_snapshots()
    op.execute(
        "CREATE TRIGGER ledger_snapshot_streams_append_only BEFORE UPDATE OR DELETE ON ledger_snapshot_streams "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER ledger_snapshot_streams_no_truncate BEFORE TRUNCATE ON ledger_snapshot_streams "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
    )


def add_visible_at() -> None:
    op.add_column("ledger_events", sa.Column("visible_at", sa.DateTime(timezone=True), nullable=True))
    # The append-only triggers refuse every UPDATE: set aside for this one derivation.
    op.execute("ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only")
    op.execute("""
        UPDATE ledger_events e SET visible_at = v.visible_at
        FROM (SELECT stream, position,
                     max(created_at) OVER (PARTITION BY account_id ORDER BY version) AS visible_at
              FROM ledger_events) v
        WHERE v.stream = e.stream AND v.position = e.position
    """)
    op.execute("ALTER TABLE ledger_events ENABLE TRIGGER ledger_events_append_only")
    op.alter_column("ledger_events", "visible_at", nullable=False)
    # What a replay reads of each event, in stream order: a stream's tail is read from this
    # index alone (an index-only scan), not from the wide rows with their hashes.
    op.create_index(
        "ledger_events_replay", "ledger_events", ["stream", "position"], postgresql_include=list(REPLAY_COLUMNS)
    )


def add_snapshot_streams() -> None:
    op.create_table(
        "ledger_snapshot_streams",
        sa.Column("snapshot_id", sa.BigInteger, sa.ForeignKey("ledger_snapshots.snapshot_id"), nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("head", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", "stream", name="ledger_snapshot_streams_pkey"),
    )
    op.add_column("ledger_snapshots", sa.Column("digest", sa.LargeBinary, nullable=True))
    op.add_column("ledger_snapshot_balances", sa.Column("stream", sa.Text, nullable=True))
    op.execute("ALTER TABLE ledger_snapshot_balances DISABLE TRIGGER ledger_snapshot_balances_append_only")
    op.execute("""
        UPDATE ledger_snapshot_balances b SET stream = e.stream FROM ledger_events e
        WHERE e.account_id = b.account_id AND e.version = b.version
    """)
    op.execute("ALTER TABLE ledger_snapshot_balances ENABLE TRIGGER ledger_snapshot_balances_append_only")
    op.alter_column("ledger_snapshot_balances", "stream", nullable=False)
    op.create_index("ledger_snapshot_balances_stream", "ledger_snapshot_balances", ["snapshot_id", "stream"])


def digest_old_snapshots() -> None:
    bind = op.get_bind()
    snapshots = bind.execute(sa.text("SELECT snapshot_id, taken_at FROM ledger_snapshots ORDER BY snapshot_id")).all()
    op.execute("ALTER TABLE ledger_snapshots DISABLE TRIGGER ledger_snapshots_append_only")
    for snapshot_id, taken_at in snapshots:
        # An older snapshot gets positions from the events it covers: per stream, up to the
        # first event not in it.
        bind.execute(
            sa.text("""
            INSERT INTO ledger_snapshot_streams (snapshot_id, stream, position, head)
            SELECT :id, e.stream, coalesce(min(e.position) FILTER (WHERE e.visible_at > :at) - 1, max(e.position)),
                   max(e.position)
            FROM ledger_events e GROUP BY e.stream
        """),
            {"id": snapshot_id, "at": taken_at},
        )
        positions = bind.execute(
            sa.text("SELECT stream, position, head FROM ledger_snapshot_streams WHERE snapshot_id = :id"),
            {"id": snapshot_id},
        ).all()
        balances = bind.execute(
            sa.text(
                "SELECT account_id, currency, balance, reserved, version, stream "
                "FROM ledger_snapshot_balances WHERE snapshot_id = :id"
            ),
            {"id": snapshot_id},
        ).all()
        bind.execute(
            sa.text("UPDATE ledger_snapshots SET digest = :digest WHERE snapshot_id = :id"),
            {"id": snapshot_id, "digest": digest_of_rows(taken_at, positions, balances)},
        )
    op.execute("ALTER TABLE ledger_snapshots ENABLE TRIGGER ledger_snapshots_append_only")
    op.alter_column("ledger_snapshots", "digest", nullable=False)
    op.create_index("ledger_snapshots_digest", "ledger_snapshots", ["digest"], unique=True)


def downgrade() -> None:
    op.drop_table("ledger_snapshot_streams")
    op.drop_index("ledger_snapshot_balances_stream", "ledger_snapshot_balances")
    op.drop_column("ledger_snapshot_balances", "stream")
    op.drop_index("ledger_snapshots_digest", "ledger_snapshots")
    op.drop_column("ledger_snapshots", "digest")
    op.drop_index("ledger_events_replay", "ledger_events")
    op.drop_column("ledger_events", "visible_at")
