"""Alembic environment of the rigbench store: runs on the connection `rigbench.store.upgrade` hands it, or on
the URL of alembic.ini / RIGBENCH_DB when Alembic's own command line is used to write a new migration."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from rigbench.store.schema import metadata

config = context.config


def _run(connection) -> None:
    # batch mode: SQLite cannot ALTER most things, Alembic copies the table instead
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = os.environ.get("RIGBENCH_DB") or config.get_main_option("sqlalchemy.url")
    with create_engine(url).begin() as conn:
        _run(conn)
