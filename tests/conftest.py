"""Fixtures every test directory may use: a real PostgreSQL server (tests/postgres_server.py).

`postgres_url` starts one server for the whole session (a few seconds); `pg_database_url` gives
each test a fresh, empty database on it, dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of the session's PostgreSQL server (superuser `chiron`, database `postgres`)."""
    with PostgresServer().start() as server:
        yield server.url


@pytest.fixture
def pg_database_url(postgres_url: str) -> Iterator[str]:
    """The URL of a new database for this test alone."""
    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        # FORCE ends the sessions a test left open (a gateway it killed, a store not closed).
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
