"""keyvaluestore: settings overrides per scope, and the filesystem watcher's record

Revision ID: 0008_settings
Revises: 0007_build_image_status
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_settings"
down_revision = "0007_build_image_status"
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
