"""PostgreSQL backend of the face gallery's :class:`~storelens.faces.gallery.GalleryStore`.

:class:`PostgresGalleryStore` has the semantics of
:class:`~storelens.faces.gallery.SqliteGalleryStore` (the same contract tests
run against both), so ``FaceGallery(GalleryConfig(...), store=PostgresGalleryStore(dsn))``
works unchanged and rebuilds its index from PostgreSQL at start. Several
services can share one gallery database.

Tables (created idempotently when a store opens, under a transaction-scoped
advisory lock so that concurrent openers do not race):

* ``gallery_meta(key, value)``: the embedding dimension (``dim``) and the
  layout version; opening with another ``dim`` raises :class:`~storelens.errors.ConfigError`;
* ``gallery_customers(customer_id, created_ts_ms, seq)`` (``seq``: insertion order);
* ``gallery_embeddings(id, customer_id, ts_ms, vector)``, ``vector`` the
  little-endian float32 bytes (``bytea``, exactly ``4 * dim`` of them); never images;
* ``gallery_visits(customer_id, visit_no, first_ts_ms, last_ts_ms, cameras text[])``.

Embeddings and visits reference their customer (``ON DELETE CASCADE``). Ids
use the ``"C"`` collation, so ordering by id is byte order, as in SQLite.

Erasure and privacy: :meth:`~PostgresGalleryStore.delete_customer` deletes
the customer's embeddings, visits and row in one transaction, and
:meth:`~PostgresGalleryStore.purge_older_than` applies retention in one
transaction. PostgreSQL has no equivalent of SQLite's ``secure_delete``: a
deleted (or updated) row stays in the table file as a dead tuple until
``VACUUM`` reclaims its space (autovacuum does so in the background); the
reclaimed space is reused by later rows but not zeroed, and the old bytes also
remain in write-ahead log segments, replicas and base backups until those are
recycled or expire. After an explicit erasure (``delete_customer``,
``purge_older_than``) the store therefore runs ``VACUUM`` on the gallery
tables right away (cheap: only pages with dead rows are visited;
``vacuum_after_erase=False`` leaves it to autovacuum; without the privilege to
vacuum, PostgreSQL skips it with a warning). Routine replacements and removals
(``replace_embedding``, ``remove_embeddings``) are left to autovacuum.
``VACUUM`` compacts the live rows of a page but does not zero its free space,
so bytes of an erased vector can stay in a table file until new rows reuse the
space (``VACUUM FULL`` rewrites the files, under an exclusive lock). Bound what
lingers with encrypted storage and the retention of WAL archives and backups.

Connections: one connection (autocommit; explicit transactions for
multi-statement writes) shared by the threads of a process under a lock. When
the server drops it (restart, failover, idle timeout), the call reconnects and
runs once more. Every retry is safe: embedding ids are taken from the sequence
before the insert, so a retried insert whose first commit went through (only
the reply was lost) is recognised instead of applied twice, and a retried
:meth:`~PostgresGalleryStore.add_customer` ignores the row it already wrote.
Only the counts reported by a retried ``delete_customer`` / ``purge_older_than``
may miss what the lost attempt had already deleted.

Example (``dsn`` is a connection string such as
``"postgresql://storelens:storelens@127.0.0.1:15432/storelens"``, possibly with
``options=-c search_path=...``):

    >>> import numpy as np
    >>> from storelens.faces.gallery import FaceGallery, GalleryConfig, VisitTracker
    >>> store = PostgresGalleryStore(dsn, dim=4)
    >>> gallery = FaceGallery(GalleryConfig(dim=4, match_threshold=0.9), store=store,
    ...                       id_factory=iter(["alice"]).__next__)
    >>> gallery.enroll_or_match(np.array([1, 0, 0, 0], np.float32), ts_ms=1000).customer_id
    'alice'
    >>> VisitTracker(store, gap_ms=60_000).observe("alice", 1000, "door").visit_no
    1
    >>> restarted = FaceGallery(GalleryConfig(dim=4, match_threshold=0.9), store=store)
    >>> restarted.match(np.array([0.96, 0.28, 0, 0], np.float32)).customer_id
    'alice'
    >>> store.list_customers()[0], store.counts()
    (1, {'customers': 1, 'embeddings': 1, 'visits': 1})
    >>> restarted.delete("alice"), store.counts()
    (True, {'customers': 0, 'embeddings': 0, 'visits': 0})
    >>> store.close()
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from storelens.errors import ConfigError
from storelens.faces.gallery import CustomerSummary, PurgeResult, Visit, customer_summaries, customers_query
from storelens.storage import StorageError
from storelens.storage_pg import redact_dsn

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Version of the table layout recorded in ``gallery_meta`` (bump with a migration).
LAYOUT_VERSION = 1

#: Namespace of the advisory lock taken while creating the tables (the key also hashes the schema).
_SETUP_LOCK = "storelens.gallery.setup:"

#: The gallery's tables, children first (the order deletions and VACUUM use).
TABLES = ("gallery_embeddings", "gallery_visits", "gallery_customers", "gallery_meta")


def _schema_sql(dim: int) -> list[sql.Composable]:
    return [
        sql.SQL("""CREATE TABLE IF NOT EXISTS gallery_meta (
            key   TEXT COLLATE "C" PRIMARY KEY,
            value TEXT NOT NULL
        )"""),
        sql.SQL("""CREATE TABLE IF NOT EXISTS gallery_customers (
            customer_id   TEXT COLLATE "C" PRIMARY KEY,
            created_ts_ms BIGINT NOT NULL,
            seq           BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
        )"""),
        sql.SQL("""CREATE TABLE IF NOT EXISTS gallery_embeddings (
            id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            customer_id TEXT COLLATE "C" NOT NULL
                        REFERENCES gallery_customers (customer_id) ON DELETE CASCADE,
            ts_ms       BIGINT NOT NULL,
            vector      BYTEA NOT NULL CHECK (octet_length(vector) = {})
        )""").format(sql.Literal(4 * dim)),
        sql.SQL("CREATE INDEX IF NOT EXISTS gallery_embeddings_customer ON gallery_embeddings (customer_id)"),
        sql.SQL("CREATE INDEX IF NOT EXISTS gallery_embeddings_ts ON gallery_embeddings (ts_ms)"),
        sql.SQL("""CREATE TABLE IF NOT EXISTS gallery_visits (
            customer_id TEXT COLLATE "C" NOT NULL
                        REFERENCES gallery_customers (customer_id) ON DELETE CASCADE,
            visit_no    INTEGER NOT NULL,
            first_ts_ms BIGINT NOT NULL,
            last_ts_ms  BIGINT NOT NULL,
            cameras     TEXT[] NOT NULL,
            PRIMARY KEY (customer_id, visit_no)
        )"""),
        sql.SQL("CREATE INDEX IF NOT EXISTS gallery_visits_last_ts ON gallery_visits (last_ts_ms)"),
    ]


_VISIT_COLUMNS = "customer_id, visit_no, first_ts_ms, last_ts_ms, cameras"

_UPSERT_VISIT = f"""
    INSERT INTO gallery_visits ({_VISIT_COLUMNS}) VALUES (%s, %s, %s, %s, %s::text[])
    ON CONFLICT (customer_id, visit_no) DO UPDATE SET
      first_ts_ms = excluded.first_ts_ms, last_ts_ms = excluded.last_ts_ms, cameras = excluded.cameras"""


class PostgresGalleryStore:
    """:class:`~storelens.faces.gallery.GalleryStore` in PostgreSQL, safe to share between threads.

    Args:
        dsn: libpq connection string or URI. The tables go to the first schema
            of the connection's ``search_path`` (e.g. ``options=-c search_path=shop1``
            in the DSN), unless ``schema`` is given.
        dim: embedding dimension; must match the one the tables were created with.
        schema: schema holding the tables (created if missing); ``None`` uses the ``search_path``.
        connect_timeout_s: how long one connection attempt may take.
        batch_size: rows per round trip when :meth:`embeddings` and
            :meth:`customers` stream the tables (keyset pagination; the lock is
            released between batches).
        vacuum_after_erase: run ``VACUUM`` on the gallery tables after
            :meth:`delete_customer` and :meth:`purge_older_than` deleted
            something (see the module docstring).

    Raises:
        StorageError: the server cannot be reached or the tables cannot be created.
        ConfigError: the tables hold embeddings of another dimension.
    """

    def __init__(self, dsn: str, dim: int = 128, *, schema: str | None = None, connect_timeout_s: float = 10.0,
                 batch_size: int = 10_000, vacuum_after_erase: bool = True) -> None:
        if schema is not None and not schema:
            raise ValueError("schema must be a non-empty name or None")
        if int(dim) < 1 or int(batch_size) < 1:
            raise ValueError("dim and batch_size must be >= 1")
        self.dsn = dsn
        self.dim = int(dim)
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        self.batch_size = int(batch_size)
        self.vacuum_after_erase = vacuum_after_erase
        self._lock = threading.RLock()
        self._closed = False
        self._conn: psycopg.Connection | None = None
        try:
            self._conn = self._connect()
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL ({redact_dsn(dsn)}): {exc}".rstrip()) from exc
        try:
            self._run(self._setup)
        except psycopg.Error as exc:
            self.close()
            raise StorageError(f"cannot create the gallery tables ({redact_dsn(dsn)}): {exc}".rstrip()) from exc
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> "PostgresGalleryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresGalleryStore({redact_dsn(self.dsn)!r}, dim={self.dim}, schema={self.schema!r})"

    def close(self) -> None:
        """Close the connection (idempotent); further calls raise :class:`StorageError`."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connect(self) -> psycopg.Connection:
        params = conninfo_to_dict(self.dsn)
        params.setdefault("connect_timeout", max(1, round(self.connect_timeout_s)))
        params.setdefault("application_name", "storelens-gallery")
        conn = psycopg.connect(make_conninfo(**{k: str(v) for k, v in params.items()}), autocommit=True)
        try:
            if self.schema is not None:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, fn: Callable[[psycopg.Connection], T],
             retry: Callable[[psycopg.Connection], T] | None = None) -> T:
        """Call ``fn(connection)`` under the lock, reconnecting first if the connection broke.

        A call that fails because the connection was lost runs once more on a
        new connection: ``retry`` if given (for writes that must tolerate
        their first attempt having committed), else ``fn`` (idempotent).
        """
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    raise StorageError("gallery store is closed")
                conn = self._conn
                if conn is None or conn.closed or conn.broken:
                    self._conn = None
                    if conn is not None:
                        conn.close()
                    conn = self._conn = self._connect()
                try:
                    return fn(conn) if attempt == 1 or retry is None else retry(conn)
                except psycopg.OperationalError:
                    # Only a lost connection is retried; e.g. a cancelled statement on a healthy one is not.
                    if attempt == 1 and (conn.closed or conn.broken):
                        continue
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _setup(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            if self.schema is not None:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_SETUP_LOCK + self.schema,))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            else:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s || coalesce(current_schema(), '')))",
                             (_SETUP_LOCK,))
            for stmt in _schema_sql(self.dim):
                conn.execute(stmt)
            conn.execute("INSERT INTO gallery_meta (key, value) VALUES ('dim', %s), ('layout', %s) "
                         "ON CONFLICT (key) DO NOTHING", (str(self.dim), str(LAYOUT_VERSION)))
            meta = dict(conn.execute("SELECT key, value FROM gallery_meta").fetchall())
        where = f"schema {self.schema!r}" if self.schema is not None else "the database"
        if int(meta["dim"]) != self.dim:
            raise ConfigError(f"gallery store in {where} ({redact_dsn(self.dsn)}) holds {meta['dim']}-d "
                              f"embeddings, not {self.dim}-d")
        if int(meta["layout"]) > LAYOUT_VERSION:
            raise StorageError(f"gallery tables in {where} have layout version {meta['layout']}, newer than "
                               f"this StoreLens supports ({LAYOUT_VERSION}); upgrade StoreLens")

    def _blob(self, vector: np.ndarray) -> bytes:
        v = np.asarray(vector, "<f4").reshape(-1)
        if v.shape != (self.dim,):
            raise ValueError(f"expected a {self.dim}-d vector, got shape {np.shape(vector)}")
        return v.tobytes()

    def _vacuum(self) -> None:
        """Reclaim the space of just-deleted rows now (the connection is in autocommit mode)."""
        if not self.vacuum_after_erase:
            return

        def vacuum(conn: psycopg.Connection) -> None:
            conn.execute("VACUUM gallery_embeddings, gallery_visits, gallery_customers")

        try:
            self._run(vacuum)
        except psycopg.Error as exc:  # the deletion is committed; autovacuum will get there
            log.warning("face gallery: VACUUM after an erasure failed (%s); left to autovacuum", exc)

    # -- writes ------------------------------------------------------------------------

    def add_customer(self, customer_id: str, created_ts_ms: int) -> None:
        """Insert a customer (an existing id is an :class:`psycopg.IntegrityError`, as in SQLite)."""
        insert = "INSERT INTO gallery_customers (customer_id, created_ts_ms) VALUES (%s, %s)"
        params = (customer_id, int(created_ts_ms))
        self._run(lambda c: c.execute(insert, params),
                  retry=lambda c: c.execute(insert + " ON CONFLICT (customer_id) DO NOTHING", params))

    def add_customers(self, rows: Sequence[tuple[str, int]]) -> None:
        """Many ``(customer_id, created_ts_ms)`` in one statement (``seq`` follows the given order)."""
        rows = list(rows)
        if not rows:
            return
        insert = """INSERT INTO gallery_customers (customer_id, created_ts_ms)
                    SELECT r.customer_id, r.ts FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY
                        AS r(customer_id, ts, ord) ORDER BY r.ord"""
        params = ([c for c, _ in rows], [int(t) for _, t in rows])
        self._run(lambda c: c.execute(insert, params),
                  retry=lambda c: c.execute(insert + " ON CONFLICT (customer_id) DO NOTHING", params))

    def _new_ids(self, n: int) -> list[int]:
        """``n`` fresh embedding ids, increasing (taken from the sequence: never reused, even if unused)."""
        rows = self._query("SELECT nextval(pg_get_serial_sequence('gallery_embeddings', 'id')) "
                           "FROM generate_series(1, %s)", (n,))
        return sorted(int(r[0]) for r in rows)

    def add_embedding(self, customer_id: str, ts_ms: int, vector: np.ndarray) -> int:
        blob = self._blob(vector)
        (rid,) = self._new_ids(1)
        # The id is known beforehand, so a retry after a lost commit reply does not insert twice.
        self._run(lambda c: c.execute(
            "INSERT INTO gallery_embeddings (id, customer_id, ts_ms, vector) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING", (rid, customer_id, int(ts_ms), blob)))
        return rid

    def add_embeddings(self, rows: Sequence[tuple[str, int, np.ndarray]]) -> list[int]:
        """Many ``(customer_id, ts_ms, vector)`` in one transaction (binary ``COPY``); returns their ids in order."""
        data = [(cid, int(ts), self._blob(vec)) for cid, ts, vec in rows]
        if not data:
            return []
        ids = self._new_ids(len(data))  # row i gets ids[i] whatever order the server inserts in

        def insert(conn: psycopg.Connection) -> list[int]:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY gallery_embeddings (id, customer_id, ts_ms, vector) "
                              "FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["bigint", "text", "bigint", "bytea"])
                    for rid, (cid, ts, blob) in zip(ids, data):
                        copy.write_row((rid, cid, ts, blob))
            return ids

        def insert_unless_committed(conn: psycopg.Connection) -> list[int]:
            # All or nothing: if the first row is there, the lost attempt committed.
            if conn.execute("SELECT 1 FROM gallery_embeddings WHERE id = %s", (ids[0],)).fetchone():
                return ids
            return insert(conn)

        return self._run(insert, retry=insert_unless_committed)

    def replace_embedding(self, row_id: int, ts_ms: int, vector: np.ndarray) -> None:
        blob = self._blob(vector)
        self._run(lambda c: c.execute("UPDATE gallery_embeddings SET ts_ms = %s, vector = %s WHERE id = %s",
                                      (int(ts_ms), blob, int(row_id))))

    def remove_embeddings(self, row_ids: Sequence[int]) -> None:
        ids = [int(r) for r in row_ids]
        if ids:
            self._run(lambda c: c.execute("DELETE FROM gallery_embeddings WHERE id = ANY(%s::bigint[])", (ids,)))

    def delete_customer(self, customer_id: str) -> bool:
        """Remove the customer, their embeddings and visits in one transaction; ``False`` if unknown."""

        def delete(conn: psycopg.Connection) -> int:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("DELETE FROM gallery_embeddings WHERE customer_id = %s", (customer_id,))
                cur.execute("DELETE FROM gallery_visits WHERE customer_id = %s", (customer_id,))
                cur.execute("DELETE FROM gallery_customers WHERE customer_id = %s", (customer_id,))
                return cur.rowcount

        with self._lock:
            n = self._run(delete)
            if n > 0:
                self._vacuum()
        return n > 0

    def purge_older_than(self, ts_ms: int) -> PurgeResult:
        """Drop embeddings and visits (by last sighting) older than ``ts_ms`` and customers left
        without embeddings (with their visits), in one transaction."""
        ts = int(ts_ms)

        def purge(conn: psycopg.Connection) -> PurgeResult:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("DELETE FROM gallery_embeddings WHERE ts_ms < %s", (ts,))
                ne = cur.rowcount
                cur.execute("DELETE FROM gallery_visits WHERE last_ts_ms < %s", (ts,))
                nv = cur.rowcount
                cur.execute("""DELETE FROM gallery_visits v WHERE NOT EXISTS
                               (SELECT 1 FROM gallery_embeddings e WHERE e.customer_id = v.customer_id)""")
                nv += cur.rowcount
                cur.execute("""DELETE FROM gallery_customers c WHERE NOT EXISTS
                               (SELECT 1 FROM gallery_embeddings e WHERE e.customer_id = c.customer_id)""")
                return PurgeResult(ne, cur.rowcount, nv)

        with self._lock:
            result = self._run(purge)
            if any(result):
                self._vacuum()
        return result

    def save_visit(self, visit: Visit) -> None:
        """Insert or update (same customer and visit number); ``KeyError`` for an unknown customer."""
        params = (visit.customer_id, int(visit.visit_no), int(visit.first_ts_ms), int(visit.last_ts_ms),
                  list(visit.cameras))
        try:
            self._run(lambda c: c.execute(_UPSERT_VISIT, params))
        except psycopg.errors.ForeignKeyViolation as exc:
            raise KeyError(f"unknown customer {visit.customer_id!r}") from exc

    # -- reads -------------------------------------------------------------------------

    def _query(self, query: str, params: object = None, binary: bool = False) -> list[tuple]:
        def fetch(conn: psycopg.Connection) -> list[tuple]:
            with conn.cursor(binary=binary) as cur:
                return cur.execute(query, params).fetchall()  # type: ignore[arg-type]

        return self._run(fetch)

    def customer_exists(self, customer_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM gallery_customers WHERE customer_id = %s", (customer_id,)))

    def customers(self) -> Iterator[tuple[str, int]]:
        """``(customer_id, created_ts_ms)`` of every customer, in insertion order (fetched in batches)."""
        last = None
        while True:
            rows = self._query(
                "SELECT seq, customer_id, created_ts_ms FROM gallery_customers "
                "WHERE %(last)s::bigint IS NULL OR seq > %(last)s ORDER BY seq LIMIT %(n)s",
                {"last": last, "n": self.batch_size}, binary=True)
            for _, cid, created in rows:
                yield cid, int(created)
            if len(rows) < self.batch_size:
                return
            last = rows[-1][0]

    def embeddings(self) -> Iterator[tuple[int, str, int, np.ndarray]]:
        """``(row_id, customer_id, ts_ms, vector)`` of every embedding, oldest row first.

        Streamed in batches of ``batch_size`` rows (binary results, keyset
        pagination on the id), the lock taken per batch; rows committed
        during the iteration may or may not be included.
        """
        last = 0
        while True:
            rows = self._query(
                "SELECT id, customer_id, ts_ms, vector FROM gallery_embeddings WHERE id > %s ORDER BY id LIMIT %s",
                (last, self.batch_size), binary=True)
            for rid, cid, ts, blob in rows:
                vec = np.frombuffer(blob, "<f4")
                if vec.shape != (self.dim,):
                    raise ConfigError(f"gallery store: embedding {rid} has {vec.size} values, not {self.dim}")
                yield int(rid), cid, int(ts), vec
            if len(rows) < self.batch_size:
                return
            last = rows[-1][0]

    @staticmethod
    def _visit(row: tuple) -> Visit:
        cid, no, first, last, cams = row
        return Visit(cid, int(no), int(first), int(last), tuple(sorted(cams)))

    def last_visit(self, customer_id: str) -> Visit | None:
        rows = self._query(f"SELECT {_VISIT_COLUMNS} FROM gallery_visits WHERE customer_id = %s "
                           "ORDER BY visit_no DESC LIMIT 1", (customer_id,))
        return self._visit(rows[0]) if rows else None

    def visits(self, customer_id: str) -> list[Visit]:
        rows = self._query(f"SELECT {_VISIT_COLUMNS} FROM gallery_visits WHERE customer_id = %s ORDER BY visit_no",
                           (customer_id,))
        return [self._visit(r) for r in rows]

    def list_customers(self, *, returning: bool | None = None, from_ts_ms: int | None = None,
                       to_ts_ms: int | None = None, limit: int = 50,
                       offset: int = 0) -> tuple[int, list[CustomerSummary]]:
        """See :meth:`GalleryStore.list_customers`: one SQL statement (aggregates, page and total)."""
        query, params = customers_query(
            customers="gallery_customers", visits="gallery_visits", param=lambda name: f"%({name})s", true="true",
            cameras_sql="""ARRAY(SELECT DISTINCT cam FROM gallery_visits v2, unnest(v2.cameras) AS cam
                         WHERE v2.customer_id = p.customer_id ORDER BY cam)""",
            returning=returning, from_ts_ms=from_ts_ms, to_ts_ms=to_ts_ms, limit=limit, offset=offset)
        return customer_summaries(self._query(query, params), lambda cams: cams)

    def counts(self) -> dict[str, int]:
        """Rows per table (for checks and health endpoints)."""
        row = self._query("SELECT (SELECT count(*) FROM gallery_customers), (SELECT count(*) FROM gallery_embeddings),"
                          " (SELECT count(*) FROM gallery_visits)")[0]
        return {"customers": int(row[0]), "embeddings": int(row[1]), "visits": int(row[2])}
