"""packages: channels, packages, package builds, and which builds contain them

Revision ID: 0002_packages
Revises: 0001_core
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_packages"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conda_channel",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(1024), nullable=False, unique=True),
        sa.Column("last_update", sa.DateTime),
    )
    op.create_table(
        "conda_package",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("conda_channel.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("license", sa.Text),
        sa.Column("summary", sa.Text),
        sa.UniqueConstraint("channel_id", "name", "version", name="uq_conda_package"),
    )
    op.create_index("ix_conda_package_name", "conda_package", ["name"])
    op.create_table(
        "conda_package_build",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("package_id", sa.Integer, sa.ForeignKey("conda_package.id"), nullable=False),
        sa.Column("build", sa.String(255), nullable=False),
        sa.Column("build_number", sa.Integer, nullable=False, server_default="0"),
        sa.Column("subdir", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("md5", sa.String(32)),
        sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("depends", sa.JSON, nullable=False),
        sa.Column("constrains", sa.JSON, nullable=False),
        sa.Column("timestamp", sa.BigInteger),
        sa.Column("url", sa.Text),
        sa.UniqueConstraint("package_id", "subdir", "build", name="uq_conda_package_build"),
    )
    op.create_table(
        "build_conda_package_build",
        sa.Column("build_id", sa.Integer, sa.ForeignKey("build.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "conda_package_build_id",
            sa.Integer,
            sa.ForeignKey("conda_package_build.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )


def downgrade() -> None:
    op.drop_table("build_conda_package_build")
    op.drop_table("conda_package_build")
    op.drop_table("conda_package")
    op.drop_table("conda_channel")
