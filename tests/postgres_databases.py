"""A fresh PostgreSQL database per test, on the server the `postgres_url` fixture uses.

The session's `postgres_url` database is shared by a whole test session; a Dagster instance
needs one of its own (its tables, runs and cursors must start empty), so these tests create
one and drop it afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from tests.conftest import POSTGRES_ADMIN_URL, drop_database, need_server


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new, empty database; drop it on the way out."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})
    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as failed:
        admin.dispose()
        need_server("postgres", f"PostgreSQL at 127.0.0.1:5432 is unreachable: "
                                f"{str(failed.orig).strip().splitlines()[0]}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        drop_database(admin, name)
        admin.dispose()
