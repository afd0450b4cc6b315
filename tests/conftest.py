"""Shared fixtures: throwaway databases on the real SQLite and PostgreSQL, and real local servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from monitor.store import Store, open_store

PG_URL = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1).split("?", 1)[0]


@pytest.fixture(autouse=True)
def _own_default_database(tmp_path, monkeypatch) -> None:
    """Code that falls back to the configured database gets one of the test's own, never var/ or $DATABASE_URL."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'default.db'}")


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'atmp.db'}")
    yield store
    store.dispose()


@pytest.fixture
def pg_store() -> Iterator[Store]:
    """A store in a schema made for this test alone and dropped after it: no other data is touched."""
    schema = f"atmp_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(_pg_conninfo(PG_URL), autocommit=True)
    admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in PG_URL else "?"
    store = open_store(f"{PG_URL}{separator}options=-csearch_path%3D{schema}")
    try:
        yield store
    finally:
        store.dispose()
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=["sqlite", "pg"])
def store(request) -> Store:
    """Both real back ends: a test using `store` runs once on each."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def feed_server():
    """A real HTTP server on loopback (tests/feedserver.py), fresh for each test."""
    from feedserver import FeedServer

    with FeedServer() as server:
        yield server
