"""namespace.owner: the identity a user's primary namespace belongs to

Two user names can normalise to the same namespace name; recording the owner lets the service
refuse to hand one user's namespace to another.

Revision ID: 0005_namespace_owner
Revises: 0004_token_scoped
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_namespace_owner"
down_revision = "0004_token_scoped"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("namespace") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
        batch.create_index("ix_namespace_owner", ["owner"])


def downgrade() -> None:
    with op.batch_alter_table("namespace") as batch:
        batch.drop_index("ix_namespace_owner")
        batch.drop_column("owner")
