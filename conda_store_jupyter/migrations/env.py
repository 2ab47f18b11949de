"""Alembic environment: runs against the connection handed over by ``orm.upgrade``."""

from alembic import context

from conda_store_jupyter.orm import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # e.g. `alembic` CLI with -x url=...: open our own
    from conda_store_jupyter.orm import create_engine_for

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    connection = create_engine_for(url).connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
