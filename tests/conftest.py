"""Shared pytest fixtures (keep this file small; put helpers in the test modules)."""
from __future__ import annotations

import os
import pathlib
import uuid

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _serial_tests_run_alone(request: pytest.FixtureRequest) -> None:
    """A ``serial`` test stops a server the other tests use (the Kafka broker): it fails at once in a
    pytest-xdist worker, before its body runs. ``make test`` runs ``-n 2 -m "not serial"``, then ``-m serial``."""
    if request.node.get_closest_marker("serial") and os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail('a serial test stops a server the other workers use: run it without -n (-m serial), the '
                    'others with -n 2 -m "not serial", as make test does', pytrace=False)


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
