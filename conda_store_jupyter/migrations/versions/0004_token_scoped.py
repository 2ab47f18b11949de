"""token.scoped: down-scoped tokens do not inherit their user's live grants

Revision ID: 0004_token_scoped
Revises: 0003_tokens
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_token_scoped"
down_revision = "0003_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows were issued without the distinction; treat them as scoped (the safe reading).
    with op.batch_alter_table("token") as batch:
        batch.add_column(sa.Column("scoped", sa.Boolean, nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("token") as batch:
        batch.drop_column("scoped")
