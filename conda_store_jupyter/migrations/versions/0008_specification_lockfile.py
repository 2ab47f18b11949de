"""specification.is_lockfile: specifications submitted as conda-lock files (upstream's column)

Revision ID: 0008_specification_lockfile
Revises: 0007_build_image_status
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_specification_lockfile"
down_revision = "0007_build_image_status"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every existing specification is an environment.yaml: false for them all.
    # A plain ADD COLUMN (SQLite supports it with a constant default), never batch mode's copy of
    # the table: builds reference specification (see downgrade).
    op.add_column("specification", sa.Column("is_lockfile", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # Not batch mode on SQLite: it copies the table and drops the original, which builds reference
    # (with foreign keys on, that DROP fails or cascades). SQLite >= 3.35 drops a column natively.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE specification DROP COLUMN is_lockfile")
    else:
        op.drop_column("specification", "is_lockfile")
