"""build_artifact.status/reason: every artifact has its own state; build.image_status goes

Artifacts made after COMPLETED (conda-pack archive, image) get a PENDING row at the COMPLETED commit,
then READY or FAILED with a reason. One model for all of them replaces the image-only column:
``build.image_status`` rows move onto the DOCKER_MANIFEST row (a FAILED image's reason moves out of
``build.status_info``, which describes the build again). Existing rows are READY.

Revision ID: 0010_artifact_status
Revises: 0009_settings
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_artifact_status"
down_revision = "0009_settings"
branch_labels = None
depends_on = None

_MANIFEST = "DOCKER_MANIFEST"


def upgrade() -> None:
    with op.batch_alter_table("build_artifact") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="READY"))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
    build = sa.table("build", sa.column("id", sa.Integer), sa.column("image_status", sa.String),
                     sa.column("status_info", sa.Text))
    artifact = sa.table("build_artifact", sa.column("build_id", sa.Integer), sa.column("artifact_type", sa.String),
                        sa.column("key", sa.String), sa.column("status", sa.String), sa.column("reason", sa.Text))
    has_manifest = sa.exists().where(artifact.c.build_id == build.c.id, artifact.c.artifact_type == _MANIFEST)
    # A PENDING or FAILED image without a manifest row becomes a row in that state.
    op.execute(artifact.insert().from_select(
        ["build_id", "artifact_type", "key", "status", "reason"],
        sa.select(build.c.id, sa.literal(_MANIFEST), sa.literal(""), build.c.image_status,
                  sa.case((build.c.image_status == "FAILED", build.c.status_info), else_=sa.null()))
        .where(build.c.image_status.in_(["PENDING", "FAILED"]), ~has_manifest)
    ))
    op.execute(build.update().where(build.c.image_status == "FAILED").values(status_info=None))
    _drop_image_status()


def _drop_image_status() -> None:
    """Drop the column in place. Not with batch mode on SQLite: it copies ``build`` and drops the
    original, and with foreign keys on that DROP cascades into every build's artifact rows and
    nulls every environment's current build. SQLite >= 3.35 drops a column natively."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE build DROP COLUMN image_status")
    else:
        op.drop_column("build", "image_status")


def downgrade() -> None:
    op.add_column("build", sa.Column("image_status", sa.String(16), nullable=True))
    build = sa.table("build", sa.column("id", sa.Integer), sa.column("image_status", sa.String),
                     sa.column("status_info", sa.Text))
    artifact = sa.table("build_artifact", sa.column("build_id", sa.Integer), sa.column("artifact_type", sa.String),
                        sa.column("status", sa.String), sa.column("reason", sa.Text))
    manifest = (artifact.c.build_id == build.c.id) & (artifact.c.artifact_type == _MANIFEST)
    op.execute(build.update().values(
        image_status=sa.select(artifact.c.status).where(manifest).scalar_subquery()))
    op.execute(build.update().where(build.c.image_status == "FAILED").values(
        status_info=sa.select(artifact.c.reason).where(manifest).scalar_subquery()))
    # Before this revision a row meant "the artifact exists": drop the others.
    op.execute(artifact.delete().where(artifact.c.status != "READY"))
    with op.batch_alter_table("build_artifact") as batch:
        batch.drop_column("reason")
        batch.drop_column("status")
