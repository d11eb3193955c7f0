"""PostgreSQL backend of :class:`~storelens.storage.Storage` (distributed mode).

:class:`PostgresStorage` has exactly the semantics of
:class:`~storelens.storage.SqliteStorage` (the same contract tests run
against both), so the API and the sinks do not care which one they get from
:func:`~storelens.storage.open_storage`. Every write is idempotent:

* track points are keyed by ``(camera_id, seq, track_id)`` (a redelivered
  frame replaces its points),
* crossings by their deterministic ``event_id`` (``ON CONFLICT DO NOTHING``;
  :meth:`~PostgresStorage.write_crossings` returns how many were new),
* occupancy by ``camera_id`` (the update with the newest ``ts_ms`` wins),
* count windows by ``(camera_id, line_id, window_start_ms)``,
* face attributes by ``(camera_id, track_id)`` (the highest ``last_seq`` wins),
* customer matches by their deterministic ``event_id``.

The schema is created or upgraded when a :class:`PostgresStorage` opens: the
versioned :data:`MIGRATIONS` run in one transaction that first takes a
transaction-scoped advisory lock, so several services starting at once apply
them exactly once. Text columns use the ``"C"`` collation, so ordering by
ids is byte order, as in SQLite, whatever the database's locale.

One connection (autocommit, explicit transactions for writes) is shared by
the threads of a process under a lock. When the server drops it (restart,
failover, idle timeout) the next call reconnects and retries once; every
operation is idempotent, so a retry is safe.

Example (``dsn`` is a connection string such as
``"postgresql://storelens:storelens@127.0.0.1:15432/storelens"``; ``schema``
may be ``None``):

    >>> store = PostgresStorage(dsn, schema=schema)
    >>> ev = CrossingEvent("cam-1:door:7:12", "cam-1", "door", 7, "in", 61_000, 12)
    >>> store.write_crossings([ev]), store.write_crossings([ev])
    (1, 0)
    >>> store.counts("cam-1", start_ms=0, end_ms=120_000, bucket_s=60)
    [CountBucket(line_id='door', start_ms=60000, end_ms=120000, count_in=1, count_out=0)]
    >>> store.line_totals("cam-1")
    {'door': {'in': 1, 'out': 0}}
    >>> store.close()
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Sequence, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from storelens import messages as m
from storelens.counting import CrossingEvent
from storelens.storage import (
    CountBucket,
    StorageError,
    TrackPath,
    _customer_match_row,
    _customer_matches_sql,
    _customer_track,
    _customer_tracks_sql,
    _demographics,
    _demographics_sql,
    _track_attributes_row,
    _track_attributes_sql,
    _track_paths,
)

T = TypeVar("T")

#: Schema migrations: migration ``i`` (0-based) brings the schema to version ``i + 1``.
#: Only ever append; never edit a migration that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE track_points (
            camera_id  TEXT COLLATE "C" NOT NULL,
            seq        BIGINT           NOT NULL,
            track_id   BIGINT           NOT NULL,
            ts_ms      BIGINT           NOT NULL,
            x1 DOUBLE PRECISION NOT NULL, y1 DOUBLE PRECISION NOT NULL,
            x2 DOUBLE PRECISION NOT NULL, y2 DOUBLE PRECISION NOT NULL,
            confidence DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (camera_id, seq, track_id)
        )""",
        # /v1/cameras/{id}/tracks: camera + time range, ordered by time.
        "CREATE INDEX track_points_by_time ON track_points (camera_id, ts_ms, seq, track_id)",
        """CREATE TABLE crossings (
            event_id  TEXT COLLATE "C" PRIMARY KEY,
            camera_id TEXT COLLATE "C" NOT NULL,
            line_id   TEXT COLLATE "C" NOT NULL,
            track_id  BIGINT           NOT NULL,
            direction TEXT COLLATE "C" NOT NULL CHECK (direction IN ('in', 'out')),
            ts_ms     BIGINT           NOT NULL,
            seq       BIGINT           NOT NULL
        )""",
        # counts / line totals / crossing span / crossings: camera + time range;
        # line and direction are included so the aggregates are index-only scans.
        "CREATE INDEX crossings_by_time ON crossings (camera_id, ts_ms) INCLUDE (line_id, direction)",
        """CREATE TABLE occupancy (
            camera_id TEXT COLLATE "C" PRIMARY KEY,
            ts_ms     BIGINT NOT NULL,
            occupancy BIGINT NOT NULL,
            total_in  BIGINT NOT NULL,
            total_out BIGINT NOT NULL
        )""",
        """CREATE TABLE count_windows (
            camera_id       TEXT COLLATE "C" NOT NULL,
            line_id         TEXT COLLATE "C" NOT NULL,
            window_start_ms BIGINT NOT NULL,
            window_end_ms   BIGINT NOT NULL,
            count_in        BIGINT NOT NULL,
            count_out       BIGINT NOT NULL,
            PRIMARY KEY (camera_id, line_id, window_start_ms)
        )""",
    ),
    # 2: face history (per-track attributes, customer matches).
    (
        """CREATE TABLE track_attributes (
            camera_id          TEXT COLLATE "C" NOT NULL,
            track_id           BIGINT           NOT NULL,
            first_ts_ms        BIGINT           NOT NULL,
            last_ts_ms         BIGINT           NOT NULL,
            last_seq           BIGINT           NOT NULL,
            n_faces            BIGINT           NOT NULL,
            n_used             BIGINT           NOT NULL,
            n_rejected         BIGINT           NOT NULL,
            age_years          DOUBLE PRECISION,
            age_low_years      DOUBLE PRECISION,
            age_high_years     DOUBLE PRECISION,
            gender             TEXT COLLATE "C" NOT NULL,
            gender_confidence  DOUBLE PRECISION NOT NULL,
            emotion            TEXT COLLATE "C" NOT NULL,
            emotion_confidence DOUBLE PRECISION NOT NULL,
            attention_share    DOUBLE PRECISION,
            final              BOOLEAN          NOT NULL,
            PRIMARY KEY (camera_id, track_id)
        )""",
        # /v1/demographics: optional camera + time range on the last sighting.
        "CREATE INDEX track_attributes_by_time ON track_attributes (camera_id, last_ts_ms)",
        "CREATE INDEX track_attributes_by_last_ts ON track_attributes (last_ts_ms)",
        """CREATE TABLE customer_matches (
            event_id     TEXT COLLATE "C" PRIMARY KEY,
            camera_id    TEXT COLLATE "C" NOT NULL,
            track_id     BIGINT           NOT NULL,
            seq          BIGINT           NOT NULL,
            ts_ms        BIGINT           NOT NULL,
            customer_id  TEXT COLLATE "C" NOT NULL,
            similarity   DOUBLE PRECISION NOT NULL,
            is_new       BOOLEAN          NOT NULL,
            is_returning BOOLEAN          NOT NULL,
            visit_no     BIGINT           NOT NULL
        )""",
        # /v1/customers/{id} and erasure: by customer, in time order.
        "CREATE INDEX customer_matches_by_customer ON customer_matches (customer_id, ts_ms)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

#: Namespace of the advisory lock taken while migrating (the key also hashes the schema name).
_MIGRATION_LOCK = "storelens.migrate:"

_INSERT_POINTS = """
    INSERT INTO track_points (camera_id, seq, track_id, ts_ms, x1, y1, x2, y2, confidence)
    SELECT %(camera)s, %(seq)s, t.track_id, %(ts)s, t.x1, t.y1, t.x2, t.y2, t.confidence
    FROM unnest(%(track_id)s::bigint[], %(x1)s::float8[], %(y1)s::float8[], %(x2)s::float8[],
                %(y2)s::float8[], %(confidence)s::float8[]) AS t(track_id, x1, y1, x2, y2, confidence)
    ON CONFLICT (camera_id, seq, track_id) DO UPDATE SET
      ts_ms = excluded.ts_ms, x1 = excluded.x1, y1 = excluded.y1,
      x2 = excluded.x2, y2 = excluded.y2, confidence = excluded.confidence"""

_INSERT_CROSSINGS = """
    INSERT INTO crossings (event_id, camera_id, line_id, track_id, direction, ts_ms, seq)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::bigint[], %s::bigint[])
    ON CONFLICT (event_id) DO NOTHING"""

_UPSERT_OCCUPANCY = """
    INSERT INTO occupancy AS o (camera_id, ts_ms, occupancy, total_in, total_out)
    VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (camera_id) DO UPDATE SET
      ts_ms = excluded.ts_ms, occupancy = excluded.occupancy,
      total_in = excluded.total_in, total_out = excluded.total_out
    WHERE excluded.ts_ms >= o.ts_ms"""

_UPSERT_TRACK_ATTRIBUTES = _track_attributes_sql("%s")
_UPSERT_CUSTOMER_MATCHES = _customer_matches_sql("%s")

_UPSERT_WINDOW = """
    INSERT INTO count_windows (camera_id, line_id, window_start_ms, window_end_ms, count_in, count_out)
    VALUES (%s, %s, %s, %s, %s, %s)
    ON CONFLICT (camera_id, line_id, window_start_ms) DO UPDATE SET
      window_end_ms = excluded.window_end_ms,
      count_in = excluded.count_in, count_out = excluded.count_out"""


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (for error messages and logs).

    Example:
        >>> redact_dsn("postgresql://storelens:secret@db:5432/storelens")
        'user=storelens password=*** dbname=storelens host=db port=5432'
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid dsn>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


class PostgresStorage:
    """:class:`~storelens.storage.Storage` in PostgreSQL, safe to share between threads.

    Args:
        dsn: libpq connection string or URI, e.g.
            ``postgresql://storelens:storelens@127.0.0.1:15432/storelens``.
        schema: PostgreSQL schema holding the tables (created if missing);
            ``None`` uses the connection's ``search_path`` (normally ``public``).
            Several StoreLens installations, or tests, can share one database
            through different schemas.
        connect_timeout_s: how long one connection attempt may take.

    Raises:
        StorageError: the server cannot be reached, the schema cannot be
            created (e.g. no privilege), or it was written by a newer StoreLens.

    Example:
        >>> from storelens import messages as m
        >>> with PostgresStorage(dsn, schema=schema) as store:
        ...     tf = m.TrackedFrame(camera_id="cam-2", seq=3, ts_ms=120, tracks=[
        ...         m.Track(track_id=7, bbox_xyxy=m.BoxXYXY(x1=10, y1=20, x2=50, y2=120), confidence=0.5)])
        ...     store.write_tracked_frame(tf)
        ...     store.write_tracked_frame(tf)  # redelivery: no duplicate point
        ...     [(p.track_id, len(p.points)) for p in store.tracks("cam-2", 0, 1000)]
        [(7, 1)]
    """

    def __init__(self, dsn: str, schema: str | None = None, *, connect_timeout_s: float = 10.0) -> None:
        if schema is not None and not schema:
            raise ValueError("schema must be a non-empty name or None")
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._conn: psycopg.Connection | None = None
        try:
            self._conn = self._connect()
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL ({redact_dsn(dsn)}): {exc}".rstrip()) from exc
        try:
            self._migrate()
        except psycopg.Error as exc:
            self._conn.close()
            self._closed = True
            raise StorageError(f"cannot prepare the StoreLens schema ({redact_dsn(dsn)}): {exc}".rstrip()) from exc
        except BaseException:
            self._conn.close()
            self._closed = True
            raise

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "PostgresStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStorage({redact_dsn(self.dsn)!r}, schema={self.schema!r})"

    def close(self) -> None:
        """Close the connection; further calls fail (and :meth:`ping` returns ``False``)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def ping(self) -> bool:
        """``True`` if the server answers a trivial query (readiness probe); reconnects if needed."""
        try:
            return self._run(lambda c: c.execute("SELECT 1").fetchone()) == (1,)
        except (psycopg.Error, StorageError):
            return False

    def schema_version(self) -> int:
        """Version of the schema in the database (equals :data:`SCHEMA_VERSION`)."""
        return self._run(self._version)

    def _connect(self) -> psycopg.Connection:
        params = conninfo_to_dict(self.dsn)
        params.setdefault("connect_timeout", max(1, round(self.connect_timeout_s)))
        params.setdefault("application_name", "storelens")
        conn = psycopg.connect(make_conninfo(**{k: str(v) for k, v in params.items()}), autocommit=True)
        try:
            if self.schema is not None:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """Call ``fn(connection)`` under the lock; reconnect and retry once if the connection broke."""
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    raise StorageError("storage is closed")
                conn = self._conn
                if conn is None or conn.closed or conn.broken:
                    self._conn = None
                    if conn is not None:
                        conn.close()
                    conn = self._conn = self._connect()
                try:
                    return fn(conn)
                except psycopg.OperationalError:
                    # Only a lost connection is retried (every operation is idempotent);
                    # e.g. a cancelled statement on a healthy connection is not.
                    if attempt == 1 and (conn.closed or conn.broken):
                        continue
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _version(conn: psycopg.Connection) -> int:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        def migrate(conn: psycopg.Connection) -> None:
            with conn.transaction():
                key = _MIGRATION_LOCK + (self.schema if self.schema is not None else "")
                if self.schema is None:
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s || coalesce(current_schema(), '')))",
                                 (key,))
                else:
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                current = self._version(conn)
                if current > SCHEMA_VERSION:
                    where = f"schema {self.schema!r}" if self.schema is not None else "the database"
                    raise StorageError(
                        f"{where} ({redact_dsn(self.dsn)}) has schema version {current}, newer than this "
                        f"StoreLens supports ({SCHEMA_VERSION}); upgrade StoreLens"
                    )
                for statements in MIGRATIONS[current:]:
                    for stmt in statements:
                        conn.execute(stmt)  # type: ignore[arg-type]  (trusted, literal SQL)
                if current == 0:
                    conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
                elif current < SCHEMA_VERSION:
                    conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))

        self._run(migrate)

    # -- writes ------------------------------------------------------------

    @staticmethod
    def _points(cur: psycopg.Cursor, tf: m.TrackedFrame) -> None:
        # One row per track id (the last one wins, as SQLite's row-by-row upsert does):
        # a single INSERT .. ON CONFLICT DO UPDATE may not touch a row twice.
        tracks = {t.track_id: t for t in tf.tracks}
        if not tracks:
            return
        ts = list(tracks.values())
        cur.execute(_INSERT_POINTS, {
            "camera": tf.camera_id, "seq": tf.seq, "ts": tf.ts_ms,
            "track_id": [t.track_id for t in ts],
            "x1": [t.bbox_xyxy.x1 for t in ts], "y1": [t.bbox_xyxy.y1 for t in ts],
            "x2": [t.bbox_xyxy.x2 for t in ts], "y2": [t.bbox_xyxy.y2 for t in ts],
            "confidence": [t.confidence for t in ts],
        })

    @staticmethod
    def _crossings(cur: psycopg.Cursor, events: Sequence[CrossingEvent]) -> int:
        if not events:
            return 0
        cur.execute(_INSERT_CROSSINGS, (
            [e.event_id for e in events], [e.camera_id for e in events], [e.line_id for e in events],
            [e.track_id for e in events], [e.direction for e in events], [e.ts_ms for e in events],
            [e.seq for e in events],
        ))
        return max(cur.rowcount, 0)

    @staticmethod
    def _occupancy(cur: psycopg.Cursor, u: m.OccupancyUpdate) -> None:
        cur.execute(_UPSERT_OCCUPANCY, (u.camera_id, u.ts_ms, u.occupancy, u.total_in, u.total_out))

    @staticmethod
    def _window(cur: psycopg.Cursor, w: m.CountWindow) -> None:
        cur.execute(_UPSERT_WINDOW,
                    (w.camera_id, w.line_id, w.window_start_ms, w.window_end_ms, w.count_in, w.count_out))

    @staticmethod
    def _track_attributes(cur: psycopg.Cursor, items: Sequence[m.TrackAttributes]) -> None:
        # Row by row (in order), so several summaries of one track in a batch apply as in SQLite.
        if items:
            cur.executemany(_UPSERT_TRACK_ATTRIBUTES, [_track_attributes_row(a) for a in items])

    @staticmethod
    def _customer_matches(cur: psycopg.Cursor, items: Sequence[m.CustomerMatch]) -> None:
        if items:
            cur.executemany(_UPSERT_CUSTOMER_MATCHES, [_customer_match_row(c) for c in items])
            # Right to erasure: a match that arrives after its customer was erased from the
            # gallery (same database, distributed mode) must not bring the link back.
            cur.execute("SELECT to_regclass('gallery_customers') IS NOT NULL")
            row = cur.fetchone()
            if row is not None and row[0]:
                cur.execute(
                    "DELETE FROM customer_matches c WHERE c.customer_id = ANY(%s) AND NOT EXISTS "
                    "(SELECT 1 FROM gallery_customers g WHERE g.customer_id = c.customer_id)",
                    (sorted({c.customer_id for c in items}),))

    def _write(self, fn: Callable[[psycopg.Cursor], T]) -> T:
        def tx(conn: psycopg.Connection) -> T:
            with conn.transaction(), conn.cursor() as cur:
                return fn(cur)

        return self._run(tx)

    def write_tracked_frame(self, tf: m.TrackedFrame) -> None:
        """Store every track of ``tf`` as one point; a redelivered frame replaces its points."""
        if tf.tracks:
            self._write(lambda cur: self._points(cur, tf))

    def write_crossings(self, events: Sequence[CrossingEvent]) -> int:
        """Insert crossings not seen before (by ``event_id``), atomically; return how many were new."""
        events = list(events)
        if not events:
            return 0
        return self._write(lambda cur: self._crossings(cur, events))

    def write_occupancy(self, update: m.OccupancyUpdate) -> None:
        """Keep the latest occupancy of ``update.camera_id``; an older update (by ``ts_ms``) is ignored."""
        self._write(lambda cur: self._occupancy(cur, update))

    def write_count_window(self, w: m.CountWindow) -> None:
        """Insert or replace the window ``(camera_id, line_id, window_start_ms)``."""
        self._write(lambda cur: self._window(cur, w))

    def write_track_attributes(self, items: Sequence[m.TrackAttributes]) -> None:
        """Upsert each track's face attributes by ``(camera_id, track_id)``, in order, atomically.

        A message replaces the stored one only if its ``last_seq`` is at least
        the stored one, so a redelivered or late older summary changes nothing.
        """
        items = list(items)
        if items:
            self._write(lambda cur: self._track_attributes(cur, items))

    def write_customer_matches(self, items: Sequence[m.CustomerMatch]) -> None:
        """Insert or replace customer matches by ``event_id``, atomically."""
        items = list(items)
        if items:
            self._write(lambda cur: self._customer_matches(cur, items))

    def erase_customer(self, customer_id: str) -> int:
        """Right to erasure: delete the customer's matches; return how many rows went.

        Track attributes stay: without a match they are anonymous demographics.
        """
        def erase(cur: psycopg.Cursor) -> int:
            cur.execute("DELETE FROM customer_matches WHERE customer_id = %s", (customer_id,))
            return max(cur.rowcount, 0)

        return self._write(erase)

    def write_batch(
        self,
        tracked_frames: Iterable[m.TrackedFrame] = (),
        crossings: Sequence[CrossingEvent] = (),
        occupancy_updates: Iterable[m.OccupancyUpdate] = (),
        count_windows: Iterable[m.CountWindow] = (),
        *,
        track_attributes: Iterable[m.TrackAttributes] = (),
        customer_matches: Iterable[m.CustomerMatch] = (),
    ) -> int:
        """Apply many writes in one transaction (all or nothing); return how many crossings were new.

        Each item has the same idempotent effect as the single-item method
        (items of one kind apply in the given order, so the newest occupancy
        still wins). Handy for a sink that commits a consumed batch at once.

        Example:
            >>> from storelens import messages as m
            >>> ev = CrossingEvent("cam-3:door:1:5", "cam-3", "door", 1, "in", 200, 5)
            >>> occ = m.OccupancyUpdate(camera_id="cam-3", ts_ms=200, occupancy=1, total_in=1)
            >>> with PostgresStorage(dsn, schema=schema) as store:
            ...     store.write_batch(crossings=[ev], occupancy_updates=[occ]), store.write_batch(crossings=[ev])
            ...     store.occupancy("cam-3").occupancy
            (1, 0)
            1
        """
        frames, events = list(tracked_frames), list(crossings)
        updates, windows = list(occupancy_updates), list(count_windows)
        attributes, matches = list(track_attributes), list(customer_matches)

        def batch(cur: psycopg.Cursor) -> int:
            for tf in frames:
                self._points(cur, tf)
            new = self._crossings(cur, events)
            for u in updates:
                self._occupancy(cur, u)
            for w in windows:
                self._window(cur, w)
            self._track_attributes(cur, attributes)
            self._customer_matches(cur, matches)
            return new

        if not (frames or events or updates or windows or attributes or matches):
            return 0
        return self._write(batch)

    # -- reads -------------------------------------------------------------

    def _query(self, query: str, params: object) -> list[tuple]:
        return self._run(lambda c: c.execute(query, params).fetchall())  # type: ignore[arg-type]

    def customer_tracks(self, customer_id: str) -> list[dict[str, Any]]:
        """Tracks matched to ``customer_id``, oldest match first, each with its attributes.

        Same dicts as :meth:`storelens.storage.SqliteStorage.customer_tracks`.
        """
        return [_customer_track(r) for r in self._query(_customer_tracks_sql("%s"), (customer_id,))]

    def demographics(
        self, camera_id: str | None = None, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, Any]:
        """Tracks with at least one face by age band, gender and emotion (last sighting in
        ``[start_ms, end_ms)``); same dict as :meth:`storelens.storage.SqliteStorage.demographics`.
        """
        query, params = _demographics_sql("%s", camera_id, start_ms, end_ms)
        return _demographics(self._query(query, params), camera_id, start_ms, end_ms)

    def counts(
        self, camera_id: str, start_ms: int, end_ms: int, bucket_s: int, line_id: str | None = None
    ) -> list[CountBucket]:
        """Crossings in ``[start_ms, end_ms)`` per line and bucket of ``bucket_s`` seconds.

        Buckets are aligned to multiples of ``bucket_s * 1000`` ms since the
        epoch and report their full aligned bounds (only crossings inside the
        query range are counted). Only non-empty buckets are returned, ordered
        by ``(start_ms, line_id)``.
        """
        if bucket_s < 1:
            raise ValueError(f"bucket_s must be >= 1, got {bucket_s}")
        w = bucket_s * 1000
        query = """SELECT line_id, ts_ms - ((ts_ms %% %(w)s) + %(w)s) %% %(w)s AS bucket,
                          count(*) FILTER (WHERE direction = 'in'), count(*) FILTER (WHERE direction = 'out')
                   FROM crossings
                   WHERE camera_id = %(camera)s AND ts_ms >= %(start)s AND ts_ms < %(end)s"""
        params: dict[str, object] = {"w": w, "camera": camera_id, "start": start_ms, "end": end_ms}
        if line_id is not None:
            query += " AND line_id = %(line)s"
            params["line"] = line_id
        query += " GROUP BY line_id, bucket ORDER BY bucket, line_id"
        rows = self._query(query, params)
        return [CountBucket(line, int(b), int(b) + w, int(n_in), int(n_out)) for line, b, n_in, n_out in rows]

    def line_totals(
        self, camera_id: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, dict[str, int]]:
        """``{line_id: {"in": n, "out": n}}`` over ``[start_ms, end_ms)`` (unbounded where ``None``).

        Only lines with at least one crossing appear.
        """
        query = """SELECT line_id, count(*) FILTER (WHERE direction = 'in'),
                          count(*) FILTER (WHERE direction = 'out')
                   FROM crossings WHERE camera_id = %s"""
        params: list[object] = [camera_id]
        if start_ms is not None:
            query += " AND ts_ms >= %s"
            params.append(start_ms)
        if end_ms is not None:
            query += " AND ts_ms < %s"
            params.append(end_ms)
        query += " GROUP BY line_id ORDER BY line_id"
        rows = self._query(query, params)
        return {line: {"in": int(n_in), "out": int(n_out)} for line, n_in, n_out in rows}

    def crossing_span(self, camera_id: str) -> tuple[int, int] | None:
        """``(first_ts_ms, last_ts_ms)`` of the camera's crossings, ``None`` if there are none."""
        rows = self._query("SELECT min(ts_ms), max(ts_ms) FROM crossings WHERE camera_id = %s", (camera_id,))
        row = rows[0] if rows else None
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def occupancy(self, camera_id: str) -> m.OccupancyUpdate | None:
        """The latest occupancy written for ``camera_id``, or ``None`` if there is none."""
        rows = self._query(
            "SELECT ts_ms, occupancy, total_in, total_out FROM occupancy WHERE camera_id = %s", (camera_id,)
        )
        if not rows:
            return None
        ts_ms, occ, total_in, total_out = rows[0]
        return m.OccupancyUpdate(camera_id=camera_id, ts_ms=ts_ms, occupancy=occ, total_in=total_in,
                                 total_out=total_out)

    def tracks(self, camera_id: str, start_ms: int, end_ms: int, limit_points: int = 100_000) -> list[TrackPath]:
        """Track points in ``[start_ms, end_ms)`` grouped by track (ordered by track id, then time).

        At most ``limit_points`` points are returned: the earliest ones in time.
        """
        if limit_points < 0:
            raise ValueError(f"limit_points must be >= 0, got {limit_points}")
        rows = self._query(
            """SELECT track_id, ts_ms, seq, x1, y1, x2, y2, confidence FROM (
                   SELECT * FROM track_points
                   WHERE camera_id = %s AND ts_ms >= %s AND ts_ms < %s
                   ORDER BY ts_ms, seq, track_id LIMIT %s) AS p
               ORDER BY track_id, ts_ms, seq""",
            (camera_id, start_ms, end_ms, limit_points),
        )
        return _track_paths(rows)

    def crossings(self, camera_id: str, start_ms: int, end_ms: int, limit: int = 100_000) -> list[CrossingEvent]:
        """Crossings in ``[start_ms, end_ms)`` in time order (at most ``limit``, the earliest)."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        rows = self._query(
            """SELECT event_id, camera_id, line_id, track_id, direction, ts_ms, seq FROM crossings
               WHERE camera_id = %s AND ts_ms >= %s AND ts_ms < %s
               ORDER BY ts_ms, seq, line_id, track_id LIMIT %s""",
            (camera_id, start_ms, end_ms, limit),
        )
        return [CrossingEvent(*row) for row in rows]
