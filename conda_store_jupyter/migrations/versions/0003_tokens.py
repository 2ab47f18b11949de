"""tokens: hashed, expiring, revocable API tokens

Revision ID: 0003_tokens
Revises: 0002_packages
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_tokens"
down_revision = "0002_packages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("hashed", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255)),
        sa.Column("primary_namespace", sa.String(255), nullable=False),
        sa.Column("role_bindings", sa.JSON, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("created_on", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("last_used", sa.DateTime),
        sa.Column("revoked_on", sa.DateTime),
        sa.Column("issuer_id", sa.Integer, sa.ForeignKey("token.id", ondelete="SET NULL")),
    )
    op.create_index("ix_token_prefix", "token", ["prefix"])


def downgrade() -> None:
    op.drop_table("token")
