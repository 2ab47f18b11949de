"""build.image_status: the image's own state instead of a prefix of status_info

Revision ID: 0007_build_image_status
Revises: 0006_artifact_unique
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_build_image_status"
down_revision = "0006_artifact_unique"
branch_labels = None
depends_on = None

_OLD_PREFIX = "image not built: "


def upgrade() -> None:
    with op.batch_alter_table("build") as batch:
        batch.add_column(sa.Column("image_status", sa.String(16), nullable=True))
    # Carry over what the old encoding said: a COMPLETED build whose status_info starts with the
    # prefix had a failed image job (the reason stays in status_info, without the prefix).
    build = sa.table("build", sa.column("image_status", sa.String), sa.column("status_info", sa.Text))
    op.execute(
        build.update()
        .where(build.c.status_info.like(_OLD_PREFIX + "%"))
        .values(image_status="FAILED", status_info=sa.func.substr(build.c.status_info, len(_OLD_PREFIX) + 1))
    )


def downgrade() -> None:
    build = sa.table("build", sa.column("image_status", sa.String), sa.column("status_info", sa.Text))
    op.execute(
        build.update()
        .where(build.c.image_status == "FAILED")
        .values(status_info=sa.literal(_OLD_PREFIX) + sa.func.coalesce(build.c.status_info, ""))
    )
    with op.batch_alter_table("build") as batch:
        batch.drop_column("image_status")
