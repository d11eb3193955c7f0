"""Everything that differs between SQLite and PostgreSQL, in one place.

* connecting: a SQLite file (WAL journal, ``synchronous=NORMAL``, foreign
  keys, ``secure_delete`` so deleted rows are overwritten; the driver in
  autocommit mode, write transactions are ``BEGIN IMMEDIATE``) or a libpq
  DSN / ``postgresql+psycopg://`` URL through psycopg 3 (``search_path`` set
  to the store's schema on every connection, so a reconnect keeps it);
* upserts: :func:`insert` is ``sqlite.insert`` or ``postgresql.insert``
  (both have ``on_conflict_do_update`` / ``on_conflict_do_nothing``);
* migrations: PostgreSQL takes a session-level advisory lock per schema
  (concurrent openers migrate once; :func:`migration_lock`) and creates the
  schema; an index added to an existing table is built ``CONCURRENTLY``
  (:func:`add_index`: writes go on during an upgrade), SQLite builds it in the
  migration's transaction;
* erasure: on PostgreSQL a customer's erasure and the history's writes of track rows take a
  transaction-scoped advisory lock (:func:`erasure_lock`; SQLite's write lock already orders them);
  SQLite checkpoints and truncates the write-ahead log after a
  deletion (after the retention purge on a connection of its own, outside the
  store's lock: :func:`checkpoint_after_purge`); PostgreSQL runs ``VACUUM`` on
  the tables after an explicit erasure;
* the face gallery's table names, customer insertion order and camera lists.
"""
from __future__ import annotations

import contextlib
import logging
import pathlib
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import NullPool

import storelens.storage.schema as schema

log = logging.getLogger(__name__)

#: Namespace of the advisory lock taken while migrating (the key also hashes the schema name).
MIGRATION_LOCK = "storelens.migrate:"

_PG_TARGET = re.compile(r"^\s*(postgres(ql)?(\+psycopg)?://|\w+\s*=)")


def is_postgres(target: str) -> bool:
    """``True`` for a libpq DSN or a PostgreSQL URL, ``False`` for a SQLite path (or ``":memory:"``)."""
    return bool(_PG_TARGET.match(target))


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password (``password``, ``sslpassword``) replaced by ``***`` (for error messages and logs).
    A URL whose user name or password is not percent-encoded (:func:`storelens.config.site.pg_url_unencoded`:
    libpq would read part of the password as the host, port or database) or that does not parse is only its
    scheme and host.

    Example:
        >>> redact_dsn("postgresql://storelens:secret@db:5432/storelens")
        'user=storelens password=*** dbname=storelens host=db port=5432'
        >>> redact_dsn("postgresql://storelens:se/cret@db:5432/storelens")
        'postgresql://db'
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from storelens.config.site import pg_url_unencoded

    if pg_url_unencoded(dsn):
        return _scheme_and_host(dsn)
    try:
        params = conninfo_to_dict(_libpq(dsn))
    except psycopg.ProgrammingError:
        return _scheme_and_host(dsn) if "://" in dsn else "<invalid dsn>"
    for key in ("password", "sslpassword"):
        if key in params:
            params[key] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def _scheme_and_host(url: str) -> str:
    """``scheme://host`` of a URL that does not parse cleanly: the host after its last ``@``, nothing of the
    user name, password, port, database or parameters."""
    scheme, _, rest = url.strip().partition("://")
    host = re.split(r"[/?#]", rest.rpartition("@")[2], maxsplit=1)[0]
    host = host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0].partition(",")[0]
    if not re.fullmatch(r"[\w.\-\[\]:%]*", host):
        host = "?"
    return f"{scheme}://{host}"


def _libpq(dsn: str) -> str:
    return re.sub(r"^\s*postgres(ql)?\+psycopg://", "postgresql://", dsn)


@dataclass
class Database:
    """An engine on one database and what the stores need to know about its dialect."""

    engine: sa.Engine
    postgres: bool
    where: str  # for messages: the file, or the redacted DSN
    schema: str | None = None
    memory: bool = False

    @property
    def name(self) -> str:
        return "PostgreSQL" if self.postgres else "SQLite"


def open_database(target: str, *, schema: str | None = None, connect_timeout_s: float = 10.0,
                  application_name: str = "storelens") -> Database:
    """An engine on ``target`` (SQLite path, ``":memory:"``, ``file:`` URI, libpq DSN or PostgreSQL URL).

    Nothing is connected yet. Every engine hands out a fresh connection per
    ``connect()`` (no pool): each store keeps one connection open for its life.
    """
    if is_postgres(target):
        from storelens.config.site import PG_URL_UNENCODED, pg_url_unencoded
        from storelens.errors import StorageError

        if pg_url_unencoded(target):  # libpq would read the password's rest as host/port/database, errors show it
            raise StorageError(f"cannot connect to PostgreSQL ({redact_dsn(target)}): {PG_URL_UNENCODED}")
        return Database(_postgres_engine(target, schema, connect_timeout_s, application_name), True,
                        redact_dsn(target), schema)
    if schema is not None:
        raise ValueError("a SQLite database has no schemas")
    memory = target == ":memory:" or target.startswith("file::memory:")
    if not memory and not target.startswith("file:"):
        pathlib.Path(target).parent.mkdir(parents=True, exist_ok=True)

    def connect() -> sqlite3.Connection:
        # isolation_level=None: the driver opens no transaction by itself; writes run in BEGIN IMMEDIATE.
        conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None,
                               timeout=connect_timeout_s, uri=target.startswith("file:"))
        for pragma in ("foreign_keys=ON", "secure_delete=ON") + (() if memory else ("journal_mode=WAL",
                                                                                   "synchronous=NORMAL")):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    return Database(sa.create_engine("sqlite+pysqlite://", creator=connect, poolclass=NullPool), False,
                    target, None, memory)


def _postgres_engine(dsn: str, schema: str | None, timeout_s: float, application_name: str) -> sa.Engine:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(_libpq(dsn))
    params.setdefault("connect_timeout", max(1, round(timeout_s)))
    params.setdefault("application_name", application_name)
    conninfo = make_conninfo(**{k: str(v) for k, v in params.items()})

    def connect() -> psycopg.Connection:
        conn = psycopg.connect(conninfo, autocommit=True)
        try:
            if schema is not None:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            conn.autocommit = False
        except BaseException:
            conn.close()
            raise
        return conn

    engine = sa.create_engine("postgresql+psycopg://", creator=connect, poolclass=NullPool)
    # An executemany INSERT becomes one multi-row statement per 1000 rows (one round trip), as with psycopg2.
    engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


def insert(db: Database, table: sa.Table) -> Any:
    """``INSERT`` with ``on_conflict_do_update`` / ``on_conflict_do_nothing`` for the dialect."""
    return (postgresql.insert if db.postgres else sqlite.insert)(table)


def insert_on(conn: sa.Connection, table: sa.Table) -> Any:
    """:func:`insert` for the dialect of ``conn`` (code that has the connection, not the :class:`Database`)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def begin_write(db: Database, conn: sa.Connection) -> None:
    """Called first in a write transaction: SQLite takes the write lock now (waiting up to the timeout)."""
    if not db.postgres:  # straight to the driver: this runs for every write
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")


#: How often an opener waiting for another one's migration of the same PostgreSQL schema tries the lock again.
MIGRATION_LOCK_POLL_S = 0.2


@contextlib.contextmanager
def migration_lock(db: Database, conn: sa.Connection) -> Iterator[None]:
    """Serialise concurrent migrations of one PostgreSQL schema (called outside a transaction; SQLite: its write
    lock, taken by :func:`prepare_migration`, does).

    A session-level advisory lock (the key of the transaction-scoped one older releases take, so they wait for
    each other), held across the commits of an autocommit block (:func:`add_index`). It is tried, not waited for,
    every :data:`MIGRATION_LOCK_POLL_S` outside any transaction: a session waiting inside a statement holds a
    snapshot, which a ``CREATE INDEX CONCURRENTLY`` of the holder would wait for (a deadlock).
    """
    if not db.postgres:
        yield
        return
    key = MIGRATION_LOCK + (db.schema or "")
    arg = "hashtext(:key)" if db.schema is not None else "hashtext(:key || coalesce(current_schema(), ''))"
    conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        while True:
            with conn.begin():
                if conn.execute(sa.text(f"SELECT pg_try_advisory_lock({arg})"), {"key": key}).scalar():
                    break
            time.sleep(MIGRATION_LOCK_POLL_S)
    finally:
        conn.execution_options(isolation_level=conn.default_isolation_level)
    try:
        yield
    finally:
        if not (conn.invalidated or conn.closed or lost(db, conn)):
            try:
                with conn.begin():
                    conn.execute(sa.text(f"SELECT pg_advisory_unlock({arg})"), {"key": key})
            except sa.exc.DBAPIError as exc:  # the lock must not outlive the migration: end the session holding it
                log.warning("releasing the migration lock failed (%s); reconnecting", exc.orig)
                conn.invalidate()


def prepare_migration(db: Database, conn: sa.Connection) -> None:
    """First in the migration's transaction: SQLite takes its write lock, PostgreSQL creates the schema."""
    begin_write(db, conn)
    if db.postgres and db.schema is not None:
        conn.execute(sa.schema.CreateSchema(db.schema, if_not_exists=True))


def add_index(op: Any, name: str, table: str, columns: Sequence[str]) -> None:
    """In a revision script (``op``: :mod:`alembic.op`): index an existing table that may be large without
    holding up its writes.

    SQLite: ``CREATE INDEX`` in the migration's transaction (one writer at a time anyway). PostgreSQL: decided by
    what is there first, so the revision can run again after a failure part-way: an index of that name left
    invalid by a build that did not finish (process killed, or a deadlock with an older release's opener waiting
    for the migration lock inside its transaction) is dropped and built again; a valid one is kept (``IF NOT
    EXISTS``), also on a table without rows, where an earlier run's index was committed by the autocommit block
    of the next :func:`add_index` while the version stayed behind. A table without rows (a new store): built in
    the migration's transaction. A table with rows: ``CREATE INDEX CONCURRENTLY`` in an Alembic autocommit block
    (the revisions before are committed first, with their version): writes go on during the build.
    """
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        op.create_index(name, table, list(columns))
        return

    def valid() -> bool | None:  # None: no index of that name
        return op.get_bind().execute(sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
                                     {"name": name}).scalar()

    if bind.execute(sa.text(f"SELECT NOT EXISTS (SELECT 1 FROM {bind.dialect.identifier_preparer.quote(table)})")
                    ).scalar():
        if valid() is False:
            op.drop_index(name, table_name=table)
        op.create_index(name, table, list(columns), if_not_exists=True)
        return
    with op.get_context().autocommit_block():
        if valid() is False:
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
        op.create_index(name, table, list(columns), postgresql_concurrently=True, if_not_exists=True)


#: Namespace of the advisory lock that orders a customer's erasure and the history's writes of track rows (the key
#: also hashes the schema name).
ERASURE_LOCK = "storelens.erase:"


def erasure_lock(db: Database, conn: sa.Connection, *, exclusive: bool) -> None:
    """Order an erasure and the history's writes of track rows (call first in the write transaction).

    PostgreSQL (READ COMMITTED): a writer that read the erased tracks before an erasure committed would commit the
    erased tracks' new rows after it. The erasure takes the schema's erasure lock ``exclusive``, a writer of
    track rows ``shared`` (writers do not wait for each other), both ``pg_advisory_xact_lock*`` (released at the
    commit), before their first statement: the erasure waits for the writes in progress, and a write waits for
    the erasure, then reads its tombstones. SQLite: nothing (a write transaction holds the database's write
    lock, ``BEGIN IMMEDIATE``).
    """
    if not db.postgres:
        return
    fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    key = "hashtext(:key)" if db.schema is not None else "hashtext(:key || coalesce(current_schema(), ''))"
    conn.execute(sa.text(f"SELECT {fn}({key})"), {"key": ERASURE_LOCK + (db.schema or "")})


def after_erase(db: Database, conn: sa.Connection, tables: Sequence[sa.Table], *, explicit: bool) -> None:
    """After rows were deleted (outside a transaction): make the deleted bytes go away where possible.

    SQLite (``secure_delete`` already zeroed the pages): push them into the
    database file and truncate the write-ahead log. PostgreSQL: ``VACUUM`` the
    tables after an ``explicit`` erasure (routine deletions are left to
    autovacuum); a failing VACUUM (e.g. no privilege) is only logged.
    """
    if not db.postgres:
        if not db.memory:
            with conn.begin():  # the driver is in autocommit mode: no transaction is opened
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    if not explicit:
        return
    conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with conn.begin():
            conn.exec_driver_sql("VACUUM " + ", ".join(conn.dialect.identifier_preparer.quote(t.name) for t in tables))
    except sa.exc.DBAPIError as exc:  # the deletion is committed; autovacuum will get there
        log.warning("VACUUM after an erasure failed (%s); left to autovacuum", exc.orig)
    finally:
        conn.execution_options(isolation_level=conn.default_isolation_level)


#: How long the checkpoint after a retention purge waits for another connection's write, or a read of an older
#: snapshot, to end (SQLite busy timeout). While it waits it holds up new writers, so only briefly: still busy, it is
#: left to the next purge.
PURGE_CHECKPOINT_WAIT_MS = 1000


def checkpoint_after_purge(db: Database) -> bool:
    """After the retention purge has committed (call it holding no lock of the store): the purged rows leave the
    write-ahead log.

    SQLite file: ``PRAGMA wal_checkpoint(TRUNCATE)`` on a connection of its own, so the store's connection and
    its lock stay free for the pipeline's writes and the readers while the log is copied into the database file.
    ``False`` when another connection was still writing, or reading an older snapshot, after
    :data:`PURGE_CHECKPOINT_WAIT_MS` (SQLite answers busy: the log is copied as far as it can be, not truncated;
    logged at debug, the next purge tries again) or the checkpoint failed (logged as a warning). PostgreSQL
    (left to autovacuum) and an in-memory SQLite: nothing to do, ``True``.
    """
    if db.postgres or db.memory:
        return True
    try:
        with db.engine.connect() as conn, conn.begin():  # the driver is in autocommit mode: no transaction
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(PURGE_CHECKPOINT_WAIT_MS)}")
            busy, log_frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    except sa.exc.DBAPIError as exc:  # the purge is committed; the next one checkpoints again
        log.warning("checkpoint of the SQLite write-ahead log after the retention purge failed (%s); "
                    "the next purge tries again", exc.orig)
        return False
    if busy:
        log.debug("SQLite write-ahead log not truncated after the retention purge: another connection was busy "
                  "(%s of %s frames copied); the next purge tries again", copied, log_frames)
    return not busy


def new_ids(db: Database, conn: sa.Connection, table: sa.Table, n: int) -> list[int]:
    """``n`` fresh, increasing values of ``table.c.id`` that no row has had (reserved now, never reused).

    PostgreSQL takes them from the identity sequence (outside any transaction's
    fate); SQLite from ``sqlite_sequence``, inside the caller's write
    transaction (the explicit ids then advance the sequence).
    """
    if db.postgres:
        rows = conn.execute(sa.text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
                            {"t": table.name, "n": n})
        return sorted(int(r[0]) for r in rows)
    last = conn.execute(sa.text("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = :t), 0), "
                                f"coalesce((SELECT max(id) FROM {table.name}), 0))"), {"t": table.name}).scalar()
    return list(range(int(last) + 1, int(last) + 1 + n))


def upsert_many(db: Database, conn: sa.Connection, stmt: sa.Executable, sql: str, order: Sequence[str],
                rows: list[dict[str, Any]]) -> None:
    """Run the (compiled once) INSERT ``stmt`` for many rows with as little overhead as the backend allows:
    PostgreSQL: SQLAlchemy's multi-row ``VALUES`` (one round trip); SQLite (in process): the driver's
    ``executemany`` of ``sql`` with positional parameters in ``order``, no SQLAlchemy context per call."""
    if db.postgres:
        conn.execute(stmt, rows)
        return
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.executemany(sql, [tuple(r[k] for k in order) for r in rows])
    finally:
        cur.close()


def insert_many(db: Database, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows in the caller's transaction: PostgreSQL streams them with a binary ``COPY``
    (several times faster for bulk loads); SQLite runs an ``executemany``. Column values must be
    of the driver's types (no SQLAlchemy type processing)."""
    if not db.postgres or len(rows) < 100:
        conn.execute(sa.insert(table), rows)
        return
    names = list(rows[0])
    pg_types = [table.c[n].type.compile(dialect=conn.dialect).split(" COLLATE")[0].lower() for n in names]
    quote = conn.dialect.identifier_preparer.quote
    cur = conn.connection.driver_connection.cursor()
    try:
        with cur.copy(f"COPY {quote(table.name)} ({', '.join(map(quote, names))}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(pg_types)
            for r in rows:
                copy.write_row([r[n] for n in names])
    finally:
        cur.close()


def lost(db: Database, conn: sa.Connection) -> bool:
    """``True`` if the driver connection under ``conn`` is gone (after an error raised by the driver itself)."""
    if not db.postgres or conn.invalidated or conn.closed:
        return False
    driver = conn.connection.driver_connection
    return bool(driver.closed or driver.broken)


def gallery_tables(db: Database) -> schema.GalleryTables:
    return schema.POSTGRES_GALLERY if db.postgres else schema.SQLITE_GALLERY


def insertion_order(db: Database, customers: sa.Table) -> sa.ColumnElement[Any]:
    """Increases with each inserted customer: ``seq`` (PostgreSQL identity) or SQLite's ``rowid``."""
    return customers.c.seq if db.postgres else sa.literal_column(f"{customers.name}.rowid")


def distinct_cameras_sql(db: Database, visits: str, customer: str) -> tuple[str, Callable[[Any], Sequence[str]]]:
    """SQL for the distinct cameras of ``customer``'s visits, and the decoder of its value."""
    if db.postgres:
        return (f"ARRAY(SELECT DISTINCT cam FROM {visits} v2, unnest(v2.cameras) AS cam "
                f"WHERE v2.customer_id = {customer} ORDER BY cam)", lambda cams: cams)
    import json

    return (f"(SELECT json_group_array(cam) FROM (SELECT DISTINCT j.value AS cam FROM {visits} v2, "
            f"json_each(v2.cameras) j WHERE v2.customer_id = {customer} ORDER BY 1))", json.loads)
