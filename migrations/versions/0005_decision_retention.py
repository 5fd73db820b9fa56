"""commit decisions by age, for their retention job

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

Recovery deletes decisions older than the retention (a day by default) whose batch has no
prepared branch left on any shard; this index finds them without scanning the table.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("commit_decisions_decided_at", "commit_decisions", ["decided_at"])


def downgrade() -> None:
    op.drop_index("commit_decisions_decided_at", table_name="commit_decisions")
