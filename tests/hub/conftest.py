"""Fixtures for the JupyterHub tests: PostgreSQL, and fresh databases in it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from tests.hub.pg import pg_bin, running_postgres

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    if not pg_bin("initdb"):
        pytest.skip(
            "PostgreSQL is not installed (scripts/test installs it: apt-get install postgresql)"
        )
    with running_postgres() as url:
        yield url


@pytest.fixture
def new_pg_database(postgres_server: str) -> Callable[[], str]:
    """Makes a fresh, empty database and returns its URL."""

    def make() -> str:
        name = f"t{next(_counter)}"
        engine = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return postgres_server.rsplit("/", 1)[0] + "/" + name

    return make
