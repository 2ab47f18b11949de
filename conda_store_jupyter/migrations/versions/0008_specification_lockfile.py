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
    with op.batch_alter_table("specification") as batch:
        batch.add_column(sa.Column("is_lockfile", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("specification") as batch:
        batch.drop_column("is_lockfile")
