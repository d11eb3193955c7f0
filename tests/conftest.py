"""Shared pytest fixtures (keep this file small; put helpers in the test modules)."""
from __future__ import annotations

import os
import pathlib
import uuid

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> pathlib.Path:
    """The checkout's root folder (holds ``storelens/``, ``proto/``, ``scripts/``)."""
    return REPO_ROOT


@pytest.fixture(params=["sqlite", "postgres"])
def history_store(request):
    """An empty history store: SQLite in memory, or PostgreSQL (``STORELENS_PG_DSN``) in a schema of its own
    (dropped afterwards)."""
    if request.param == "sqlite":
        from storelens.storage import SqliteStorage

        s = SqliteStorage(":memory:")
        yield s
        s.close()
        return
    psycopg = pytest.importorskip("psycopg")
    from storelens.storage import PostgresStorage

    dsn = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
    schema = f"test_{request.module.__name__.rsplit('.', 1)[-1].removeprefix('test_')[:20]}_{uuid.uuid4().hex[:12]}"
    s = PostgresStorage(dsn, schema=schema)
    yield s
    s.close()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
