"""build_artifact: at most one row per (build, artifact type)

Earlier versions inserted after a check, so concurrent writers could duplicate a row; the newest
row of each pair is kept (it names the latest upload).

Revision ID: 0006_artifact_unique
Revises: 0005_namespace_owner
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_artifact_unique"
down_revision = "0005_namespace_owner"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM build_artifact WHERE id NOT IN ("
        " SELECT keep FROM (SELECT MAX(id) AS keep FROM build_artifact GROUP BY build_id, artifact_type) AS newest)"
    )
    with op.batch_alter_table("build_artifact") as batch:
        batch.create_unique_constraint("uq_build_artifact_type", ["build_id", "artifact_type"])


def downgrade() -> None:
    with op.batch_alter_table("build_artifact") as batch:
        batch.drop_constraint("uq_build_artifact_type", type_="unique")
