"""core: namespaces, role mappings, specifications, environments, builds, artifacts

Revision ID: 0001_core
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

_STATUS = sa.Enum("QUEUED", "BUILDING", "COMPLETED", "FAILED", "CANCELED", name="build_status",
                  native_enum=False, length=16)
_ARTIFACT = sa.Enum("DIRECTORY", "LOCKFILE", "LOGS", "YAML", "CONDA_PACK", "DOCKER_MANIFEST", "DOCKER_BLOB",
                    "CONSTRUCTOR_INSTALLER", "CONTAINER_REGISTRY", name="build_artifact_type",
                    native_enum=False, length=32)


def upgrade() -> None:
    op.create_table(
        "namespace",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("metadata", sa.JSON),
        sa.Column("deleted_on", sa.DateTime),
    )
    op.create_table(
        "namespace_role_mapping",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("namespace_id", sa.Integer, sa.ForeignKey("namespace.id", ondelete="CASCADE"), nullable=False),
        sa.Column("entity", sa.String(255), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
    )
    op.create_table(
        "specification",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_on", sa.DateTime, nullable=False),
    )
    op.create_table(
        "environment",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("namespace_id", sa.Integer, sa.ForeignKey("namespace.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("current_build_id", sa.Integer),
        sa.Column("deleted_on", sa.DateTime),
        sa.UniqueConstraint("namespace_id", "name", name="uq_environment_namespace_name"),
    )
    op.create_table(
        "build",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("specification_id", sa.Integer, sa.ForeignKey("specification.id"), nullable=False),
        sa.Column("environment_id", sa.Integer, sa.ForeignKey("environment.id"), nullable=False),
        sa.Column("status", _STATUS, nullable=False),
        sa.Column("status_info", sa.Text),
        sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("scheduled_on", sa.DateTime, nullable=False),
        sa.Column("started_on", sa.DateTime),
        sa.Column("ended_on", sa.DateTime),
        sa.Column("deleted_on", sa.DateTime),
        sa.Column("job_id", sa.String(64)),
    )
    op.create_index("ix_build_environment_id", "build", ["environment_id"])
    op.create_index("ix_build_status", "build", ["status"])
    # environment.current_build_id -> build.id closes the cycle once both tables exist.
    with op.batch_alter_table("environment") as batch:
        batch.create_foreign_key(
            "fk_environment_current_build", "build", ["current_build_id"], ["id"], ondelete="SET NULL"
        )
    op.create_table(
        "build_artifact",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("build_id", sa.Integer, sa.ForeignKey("build.id", ondelete="CASCADE"), nullable=False),
        sa.Column("artifact_type", _ARTIFACT, nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
    )
    op.create_index("ix_build_artifact_build_id", "build_artifact", ["build_id"])


def downgrade() -> None:
    op.drop_table("build_artifact")
    with op.batch_alter_table("environment") as batch:
        batch.drop_constraint("fk_environment_current_build", type_="foreignkey")
    op.drop_table("build")
    op.drop_table("environment")
    op.drop_table("specification")
    op.drop_table("namespace_role_mapping")
    op.drop_table("namespace")
