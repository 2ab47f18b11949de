"""keyvaluestore: settings overrides per scope, and the filesystem watcher's record

Revision ID: 0009_settings
Revises: 0008_specification_lockfile
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_settings"
down_revision = "0008_specification_lockfile"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keyvaluestore",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("prefix", sa.String(512), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.UniqueConstraint("prefix", "key", name="uq_keyvaluestore_prefix_key"),
    )
    op.create_index("ix_keyvaluestore_prefix", "keyvaluestore", ["prefix"])


def downgrade() -> None:
    op.drop_index("ix_keyvaluestore_prefix", table_name="keyvaluestore")
    op.drop_table("keyvaluestore")
