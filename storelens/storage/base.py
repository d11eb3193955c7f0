"""What the history store and the gallery store share: one connection, a lock, retries, migrations.

A store keeps one SQLAlchemy connection for its life, used by the threads
of a process under a lock. When a PostgreSQL server drops it (restart,
failover, idle timeout) the call that notices reconnects and runs once more
(every operation is idempotent, or says how to retry: :meth:`SqlStore._run`).
Database errors reach the caller as the driver raised them
(``sqlite3.IntegrityError``, ``psycopg.OperationalError``, ...), not wrapped
by SQLAlchemy; :class:`~storelens.errors.StorageError` means the database
cannot be used (unreachable at open, newer than this StoreLens, store closed).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, TypeVar

import sqlalchemy as sa

import storelens.storage.dialects as dialects
import storelens.storage.migrations as migrations
from storelens.errors import StorageError

T = TypeVar("T")


def _driver_error(exc: sa.exc.StatementError) -> BaseException:
    return exc.orig if isinstance(exc.orig, BaseException) else exc


class Closing:
    """``with store: ...`` closes the store at the end (the stores of this package)."""

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


class SqlStore(Closing):
    """Base of :class:`~storelens.storage.history.SqlStorage` and :class:`~storelens.storage.gallery.SqlGalleryStore`.

    Args:
        target: SQLite path (``":memory:"`` for a private in-memory database)
            or PostgreSQL libpq DSN / URL.
        chain: the migration chain of the store's tables.
        schema: PostgreSQL schema of the tables (created if missing); ``None``
            uses the connection's ``search_path``.
        connect_timeout_s: how long one connection attempt may take (SQLite: lock wait).
        application_name: PostgreSQL ``application_name``.
        migrate: options for the revision scripts (e.g. the gallery's ``dim``).
    """

    _what = "storage"

    def __init__(self, target: str, *, chain: str, schema: str | None = None, connect_timeout_s: float = 10.0,
                 application_name: str = "storelens", **migrate: Any) -> None:
        if schema is not None and not schema:
            raise ValueError("schema must be a non-empty name or None")
        self.db = dialects.open_database(target, schema=schema, connect_timeout_s=connect_timeout_s,
                                         application_name=application_name)
        self.schema = schema
        self._lock = threading.RLock()
        self._closed = False
        #: Counts the write transactions of this store object (read caches compare it, see storelens.api.cache).
        self.write_generation = 0
        self._connection: sa.Connection | None = None
        try:
            self._connection = self.db.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise StorageError(f"cannot connect to {self.db.name} ({self.db.where}): {exc.orig}".rstrip()) from exc
        try:
            self._run(lambda conn: migrations.upgrade(self.db, conn, chain, **migrate))
        except (sa.exc.DBAPIError, *self._driver_errors()) as exc:
            self.close()
            raise StorageError(f"cannot prepare the StoreLens {chain} tables ({self.db.where}): {exc}".rstrip()) \
                from exc
        except BaseException:
            self.close()
            raise

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        if not self.db.postgres:
            import sqlite3

            return (sqlite3.Error,)
        import psycopg

        return (psycopg.Error,)

    # -- lifecycle ---------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.where!r}, schema={self.schema!r})"

    def close(self) -> None:
        """Close the connection (idempotent); further calls raise :class:`StorageError` (``ping`` is ``False``)."""
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            self.db.engine.dispose()

    def ping(self) -> bool:
        """``True`` if the database answers a trivial query (readiness probe); reconnects if needed."""
        try:
            return self._read(lambda c: c.exec_driver_sql("SELECT 1").scalar()) == 1
        except Exception:
            return False

    @property
    def _conn(self) -> Any:
        """The driver's connection (``sqlite3`` / ``psycopg``), for tests and diagnostics."""
        conn = self._connection
        return None if conn is None else conn.connection.driver_connection

    _db = _conn

    # -- running statements ----------------------------------------------------------------

    def _run(self, fn: Callable[[sa.Connection], T], retry: Callable[[sa.Connection], T] | None = None) -> T:
        """Call ``fn(connection)`` under the lock; if the connection was lost, reconnect and call once more.

        The second call is ``retry`` if given (for a write that must tolerate its
        first attempt having committed, only the reply being lost), else ``fn``.
        """
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    raise StorageError(f"{self._what} is closed")
                try:
                    conn = self._connection
                    if conn is None or conn.invalidated or conn.closed:
                        self._connection = None
                        if conn is not None:
                            conn.close()
                        conn = self._connection = self.db.engine.connect()
                    return fn(conn) if attempt == 1 or retry is None else retry(conn)
                except sa.exc.StatementError as exc:
                    # Only a lost connection is retried; e.g. a cancelled statement on a healthy one is not.
                    if attempt == 1 and isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
                        continue
                    raise _driver_error(exc) from exc
                except self._driver_errors():  # from a driver call made directly (e.g. COPY)
                    if attempt == 1 and self._connection is not None and dialects.lost(self.db, self._connection):
                        self._connection.invalidate()
                        continue
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, fn: Callable[[sa.Connection], T]) -> T:
        def read(conn: sa.Connection) -> T:
            with conn.begin():
                return fn(conn)

        return self._run(read)

    @contextlib.contextmanager
    def _transaction(self, conn: sa.Connection) -> Iterator[sa.Connection]:
        """One write transaction on ``conn`` (rolled back on error); bumps :attr:`write_generation`."""
        try:
            with conn.begin():
                dialects.begin_write(self.db, conn)
                yield conn
        finally:
            self.write_generation += 1

    def _write(self, fn: Callable[[sa.Connection], T]) -> T:
        def write(conn: sa.Connection) -> T:
            with self._transaction(conn):
                return fn(conn)

        return self._run(write)

    def _rows(self, stmt: sa.Executable, params: Any = None) -> list[sa.Row[Any]]:
        return self._read(lambda c: c.execute(stmt, params).all())
