"""slot ownership: the fence that keeps an account live on one shard only

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Adds
  - wallet_slot(text): the router's slot function (CRC32 of the UTF-8 id, mod 4096) in SQL,
    so the database itself knows each account's slot;
  - accounts.slot (stored, generated) and accounts.placement (live | incoming | moved);
  - shard_slots: the slots this shard owns. Account creation checks it in the same
    statement; a slot migration moves the row from one shard to the other.

The shard's owned slots come from the topology, so run it per named shard:
`alembic -x shard=NAME upgrade head` or `wallet db upgrade --all`.
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SLOT_COUNT = 4096  # frozen here on purpose: a migration must not change with the code

# Standard CRC32 (reflected polynomial 0xEDB88320), as zlib.crc32 computes it.
CREATE_WALLET_SLOT = f"""
CREATE FUNCTION wallet_slot(account_id text) RETURNS smallint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    bytes bytea := convert_to(account_id, 'UTF8');
    crc bigint := 4294967295;
BEGIN
    FOR i IN 0 .. length(bytes) - 1 LOOP
        crc := crc # get_byte(bytes, i);
        FOR bit IN 1 .. 8 LOOP
            IF (crc & 1) = 1 THEN
                crc := (crc >> 1) # 3988292384;
            ELSE
                crc := crc >> 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN ((crc # 4294967295) % {SLOT_COUNT})::smallint;
END
$$
"""


def owned_slots() -> list[int]:
    attributes = context.config.attributes
    slots = attributes.get("owned_slots")
    assert slots is not None, (
        "this migration records which slots the shard owns: run it for a named shard "
        "(alembic -x shard=NAME upgrade head, or wallet db upgrade --all)"
    )
    return sorted(slots)


def upgrade() -> None:
    slots = owned_slots()
    op.execute(CREATE_WALLET_SLOT)
    op.add_column(
        "accounts",
        sa.Column("slot", sa.SmallInteger, sa.Computed("wallet_slot(account_id)", persisted=True), nullable=False),
    )
    op.add_column("accounts", sa.Column("placement", sa.Text, nullable=False, server_default=sa.text("'live'")))
    op.create_check_constraint("accounts_placement_known", "accounts", "placement IN ('live', 'incoming', 'moved')")
    op.create_index("accounts_slot", "accounts", ["slot"])
    shard_slots = op.create_table(
        "shard_slots",
        sa.Column("slot", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint(f"slot >= 0 AND slot < {SLOT_COUNT}", name="shard_slots_in_range"),
    )
    if slots:
        op.bulk_insert(shard_slots, [{"slot": slot} for slot in slots])


def downgrade() -> None:
    op.drop_table("shard_slots")
    op.drop_index("accounts_slot", table_name="accounts")
    op.drop_constraint("accounts_placement_known", "accounts", type_="check")
    op.drop_column("accounts", "placement")
    op.drop_column("accounts", "slot")
    op.execute("DROP FUNCTION wallet_slot(text)")
