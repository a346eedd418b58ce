"""Alembic environment for the authz schema.

``authz.migrate`` configures Alembic in code (no alembic.ini) and passes an open
connection, inside its own transaction, as ``config.attributes["connection"]``. Without
one (``authz.migrate.config(url)`` given to an ``alembic.command``), the URL comes from
the ``sqlalchemy.url`` option or AUTHZ_DATABASE_URL.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from authz.tables import UTCDateTime, metadata

config = context.config


def _render_item(type_, obj, autogen_context):
    # UTCDateTime converts values in Python only: the column is a plain DateTime.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def _options(dialect_name: str) -> dict:
    return {
        "target_metadata": metadata,
        "render_item": _render_item,
        "compare_type": True,
        # SQLite alters little in place; batch mode copies the table instead.
        "render_as_batch": dialect_name == "sqlite",
    }


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("AUTHZ_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: pass one to authz.migrate.config or set AUTHZ_DATABASE_URL")
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Print the SQL instead of running it (``alembic.command.upgrade(..., sql=True)``)."""
    from sqlalchemy.engine import make_url

    url = _url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from authz.migrate import engine_for

    engine = engine_for(_url())
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
