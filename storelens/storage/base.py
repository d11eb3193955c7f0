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
import logging
import threading
from typing import Any, Callable, Iterator, TypeVar

import sqlalchemy as sa

import storelens.storage.dialects as dialects
import storelens.storage.migrations as migrations
from storelens.errors import StorageError, WaitStopped

T = TypeVar("T")

log = logging.getLogger(__name__)

#: ``storage.migrate: wait`` and ``storelens db wait``: the first pause between two looks at the tables' revision,
#: doubled after each look up to the second (also the longest gap between two heartbeats of ``/healthz`` while a
#: service waits; a look is one small read per chain).
SCHEMA_POLL_S = (0.5, 5.0)


def poll_schema(look: Callable[[], T], stop: threading.Event,
                on_behind: Callable[[migrations.SchemaBehind, bool, float], None]) -> T:
    """``look()`` again, with backoff (:data:`SCHEMA_POLL_S`), while it raises
    :class:`~storelens.storage.migrations.SchemaBehind`: its answer. ``on_behind(exc, new, retry_s)`` after each
    such look (``new``: a state not said at the previous look, to log once per state). Other errors (tables newer
    than this StoreLens: :func:`~storelens.storage.migrations.check`'s :class:`StorageError`) end it at once;
    ``stop`` set (SIGTERM) ends it with :class:`WaitStopped`. The one wait of :func:`open_migrated` and of
    ``storelens db wait`` (:func:`storelens.storage.upgrade.wait`)."""
    delay, said = SCHEMA_POLL_S[0], None
    while True:
        try:
            return look()
        except migrations.SchemaBehind as exc:
            on_behind(exc, str(exc) != said, delay)
            said = str(exc)
            if stop.wait(delay):
                raise WaitStopped(f"stopped while waiting: {exc}") from None
            delay = min(delay * 2, SCHEMA_POLL_S[1])


def open_migrated(open_: Callable[[bool], T], migrate: str = "auto") -> T:
    """``open_(upgrade)``: a store opened as ``storage.migrate`` says.

    ``"auto"``: the store migrates its tables (``open_(True)``). ``"wait"``: it never does; while they are behind
    (:class:`~storelens.storage.migrations.SchemaBehind`, e.g. during ``storelens db upgrade``) this looks again
    (:func:`poll_schema`), logging what it waits for; meanwhile the ``schema`` wait of
    :mod:`storelens.runtime.service` makes ``/readyz`` fail naming the revision, and keeps ``/healthz`` up.
    Tables newer than this StoreLens (a rollback): :class:`StorageError` at once; a SIGTERM ends the wait
    (:class:`WaitStopped`: the services exit 0, as for any SIGTERM while starting).
    """
    if migrate == "auto":
        return open_(True)
    from storelens.runtime import service

    def behind(exc: migrations.SchemaBehind, new: bool, retry_s: float) -> None:
        service.waiting("schema", str(exc))
        log.log(logging.WARNING if new else logging.INFO, "waiting for the schema migration",
                extra={"chain": exc.chain, "revision": exc.current, "head": exc.head, "detail": str(exc),
                       "retry_s": retry_s})

    try:
        return poll_schema(lambda: open_(False), service.STOP, behind)
    finally:
        service.done_waiting("schema")


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
        upgrade: ``True``: migrate the tables to the head revision (under the migration lock); ``False``
            (``storage.migrate: wait``): never migrate, raise :class:`~storelens.storage.migrations.SchemaBehind`
            when they are behind (:func:`open_migrated` waits).
        migrate: options for the revision scripts (e.g. the gallery's ``dim``).
    """

    _what = "storage"

    def __init__(self, target: str, *, chain: str, schema: str | None = None, connect_timeout_s: float = 10.0,
                 application_name: str = "storelens", upgrade: bool = True, **migrate: Any) -> None:
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
            if upgrade:
                self._run(lambda conn: migrations.upgrade(self.db, conn, chain, **migrate))
            else:
                self._read(lambda conn: migrations.check(self.db, conn, chain))
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
