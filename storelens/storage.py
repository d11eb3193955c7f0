"""Persistence of tracks, crossings, occupancy and count windows.

:class:`Storage` is the interface the pipeline writes to and the API reads
from; :class:`SqliteStorage` implements it with the standard library's
``sqlite3``; :class:`storelens.storage_pg.PostgresStorage` implements it on PostgreSQL.
Every write is idempotent, so a message delivered twice never counts twice:

* track points are keyed by ``(camera_id, seq, track_id)``,
* crossings by their deterministic ``event_id``,
* occupancy by ``camera_id`` (the latest state by ``ts_ms`` wins),
* count windows by ``(camera_id, line_id, window_start_ms)``,
* face attributes of a track by ``(camera_id, track_id)`` (the message with
  the highest ``last_seq`` wins, so a redelivered older summary is ignored),
* customer matches by their deterministic ``event_id``.

Time ranges are half-open, ``[start_ms, end_ms)``, in milliseconds since the
Unix epoch.

Example:
    >>> from storelens.counting import CrossingEvent
    >>> store = SqliteStorage(":memory:")
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

import contextlib
import pathlib
import sqlite3
import math
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple, Protocol, Sequence, runtime_checkable

from storelens import messages as m
from storelens.config import StorageConfig
from storelens.counting import CrossingEvent
from storelens.errors import ConfigError, StoreLensError


class StorageError(StoreLensError):
    """The database cannot be used (e.g. it was written by a newer StoreLens)."""


@dataclass(frozen=True)
class CountBucket:
    """Crossings of one line in one aligned time bucket ``[start_ms, end_ms)``."""

    line_id: str
    start_ms: int
    end_ms: int
    count_in: int
    count_out: int


class TrackPoint(NamedTuple):
    """One observation of a track: the box (source pixels) at frame ``seq``."""

    ts_ms: int
    seq: int
    bbox_xyxy: tuple[float, float, float, float]
    confidence: float


@dataclass(frozen=True)
class TrackPath:
    """The points of one track in time order."""

    track_id: int
    points: list[TrackPoint]


@runtime_checkable
class Storage(Protocol):
    """What the pipeline writes and the API reads; every write is idempotent."""

    def write_tracked_frame(self, tf: m.TrackedFrame) -> None: ...

    def write_crossings(self, events: Sequence[CrossingEvent]) -> int: ...

    def write_occupancy(self, update: m.OccupancyUpdate) -> None: ...

    def write_count_window(self, w: m.CountWindow) -> None: ...

    def counts(
        self, camera_id: str, start_ms: int, end_ms: int, bucket_s: int, line_id: str | None = None
    ) -> list[CountBucket]: ...

    def line_totals(
        self, camera_id: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, dict[str, int]]: ...

    def crossing_span(self, camera_id: str) -> tuple[int, int] | None: ...

    def occupancy(self, camera_id: str) -> m.OccupancyUpdate | None: ...

    def tracks(self, camera_id: str, start_ms: int, end_ms: int, limit_points: int = 100_000) -> list[TrackPath]: ...

    def crossings(self, camera_id: str, start_ms: int, end_ms: int, limit: int = 100_000) -> list[CrossingEvent]: ...

    def write_track_attributes(self, items: Sequence[m.TrackAttributes]) -> None: ...

    def write_customer_matches(self, items: Sequence[m.CustomerMatch]) -> None: ...

    def customer_tracks(self, customer_id: str) -> list[dict[str, Any]]: ...

    def demographics(
        self, camera_id: str | None = None, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, Any]: ...

    def erase_customer(self, customer_id: str) -> int: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


#: Schema migrations: migration ``i`` (0-based) brings the schema to version ``i + 1``.
#: Only ever append; never edit a migration that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE track_points (
            camera_id  TEXT    NOT NULL,
            seq        INTEGER NOT NULL,
            track_id   INTEGER NOT NULL,
            ts_ms      INTEGER NOT NULL,
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            confidence REAL    NOT NULL,
            PRIMARY KEY (camera_id, seq, track_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX track_points_by_time ON track_points (camera_id, ts_ms)",
        """CREATE TABLE crossings (
            event_id  TEXT    PRIMARY KEY,
            camera_id TEXT    NOT NULL,
            line_id   TEXT    NOT NULL,
            track_id  INTEGER NOT NULL,
            direction TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
            ts_ms     INTEGER NOT NULL,
            seq       INTEGER NOT NULL
        )""",
        "CREATE INDEX crossings_by_time ON crossings (camera_id, ts_ms)",
        """CREATE TABLE occupancy (
            camera_id TEXT    PRIMARY KEY,
            ts_ms     INTEGER NOT NULL,
            occupancy INTEGER NOT NULL,
            total_in  INTEGER NOT NULL,
            total_out INTEGER NOT NULL
        )""",
        """CREATE TABLE count_windows (
            camera_id       TEXT    NOT NULL,
            line_id         TEXT    NOT NULL,
            window_start_ms INTEGER NOT NULL,
            window_end_ms   INTEGER NOT NULL,
            count_in        INTEGER NOT NULL,
            count_out       INTEGER NOT NULL,
            PRIMARY KEY (camera_id, line_id, window_start_ms)
        ) WITHOUT ROWID""",
    ),
    # 2: face history (per-track attributes, customer matches).
    (
        """CREATE TABLE track_attributes (
            camera_id          TEXT    NOT NULL,
            track_id           INTEGER NOT NULL,
            first_ts_ms        INTEGER NOT NULL,
            last_ts_ms         INTEGER NOT NULL,
            last_seq           INTEGER NOT NULL,
            n_faces            INTEGER NOT NULL,
            n_used             INTEGER NOT NULL,
            n_rejected         INTEGER NOT NULL,
            age_years          REAL,
            age_low_years      REAL,
            age_high_years     REAL,
            gender             TEXT    NOT NULL,
            gender_confidence  REAL    NOT NULL,
            emotion            TEXT    NOT NULL,
            emotion_confidence REAL    NOT NULL,
            attention_share    REAL,
            final              INTEGER NOT NULL,
            PRIMARY KEY (camera_id, track_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX track_attributes_by_time ON track_attributes (camera_id, last_ts_ms)",
        "CREATE INDEX track_attributes_by_last_ts ON track_attributes (last_ts_ms)",
        """CREATE TABLE customer_matches (
            event_id     TEXT    PRIMARY KEY,
            camera_id    TEXT    NOT NULL,
            track_id     INTEGER NOT NULL,
            seq          INTEGER NOT NULL,
            ts_ms        INTEGER NOT NULL,
            customer_id  TEXT    NOT NULL,
            similarity   REAL    NOT NULL,
            is_new       INTEGER NOT NULL,
            is_returning INTEGER NOT NULL,
            visit_no     INTEGER NOT NULL
        )""",
        "CREATE INDEX customer_matches_by_customer ON customer_matches (customer_id, ts_ms)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


# -- face history: SQL and row mapping shared by both backends ---------------------------
# The statements below are plain SQL that SQLite and PostgreSQL both accept; ``ph`` is
# the driver's placeholder ("?" for sqlite3, "%s" for psycopg).

#: Age bands of :meth:`SqliteStorage.demographics`: ``(name, exclusive upper bound in years)``.
AGE_BANDS: tuple[tuple[str, float | None], ...] = (
    ("0-17", 18), ("18-24", 25), ("25-34", 35), ("35-44", 45), ("45-54", 55), ("55-64", 65), ("65+", None),
)
#: Keys of the ``age``, ``gender`` and ``emotion`` counts of a demographics answer, in order.
AGE_BAND_KEYS: tuple[str, ...] = tuple(name for name, _ in AGE_BANDS) + ("unknown",)
GENDER_KEYS: tuple[str, ...] = ("female", "male", "unknown")
EMOTION_KEYS: tuple[str, ...] = tuple(n for n in m.EMOTION_NAMES.values() if n != "unknown") + ("unknown",)


def age_band(age_years: float | None) -> str:
    """The :data:`AGE_BANDS` name of an age (``"unknown"`` for ``None``).

    Example:
        >>> age_band(17.9), age_band(18), age_band(64.5), age_band(90), age_band(None)
        ('0-17', '18-24', '55-64', '65+', 'unknown')
    """
    if age_years is None:
        return "unknown"
    for name, upper in AGE_BANDS:
        if upper is None or age_years < upper:
            return name
    raise AssertionError("unreachable")  # pragma: no cover (the last band is open)


_AGE_BAND_SQL = (
    "CASE WHEN age_years IS NULL THEN 'unknown' "
    + " ".join(f"WHEN age_years < {upper} THEN '{name}'" for name, upper in AGE_BANDS if upper is not None)
    + f" ELSE '{AGE_BANDS[-1][0]}' END"
)

_TRACK_ATTRIBUTE_COLUMNS = (
    "camera_id", "track_id", "first_ts_ms", "last_ts_ms", "last_seq", "n_faces", "n_used", "n_rejected",
    "age_years", "age_low_years", "age_high_years", "gender", "gender_confidence", "emotion",
    "emotion_confidence", "attention_share", "final",
)
_CUSTOMER_MATCH_COLUMNS = (
    "event_id", "camera_id", "track_id", "seq", "ts_ms", "customer_id", "similarity", "is_new",
    "is_returning", "visit_no",
)
#: Attribute columns reported per track (all but the key).
_ATTRIBUTE_FIELDS = _TRACK_ATTRIBUTE_COLUMNS[2:]
_MATCH_FIELDS = ("event_id", "camera_id", "track_id", "seq", "ts_ms", "similarity", "is_new", "is_returning",
                 "visit_no")


def _upsert_sql(table: str, columns: Sequence[str], key: Sequence[str], ph: str, where: str = "") -> str:
    """``INSERT .. ON CONFLICT (key) DO UPDATE`` of every non-key column (``t`` names the stored row)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} AS t ({', '.join(columns)}) VALUES ({', '.join([ph] * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}" + (f" WHERE {where}" if where else ""))


def _track_attributes_sql(ph: str) -> str:
    # A redelivered (or reordered) older summary of the track never replaces a newer one.
    return _upsert_sql("track_attributes", _TRACK_ATTRIBUTE_COLUMNS, ("camera_id", "track_id"), ph,
                       where="excluded.last_seq >= t.last_seq")


def _customer_matches_sql(ph: str) -> str:
    return _upsert_sql("customer_matches", _CUSTOMER_MATCH_COLUMNS, ("event_id",), ph)


def _customer_tracks_sql(ph: str) -> str:
    cols = ", ".join([f"c.{c}" for c in _MATCH_FIELDS] + [f"a.{c}" for c in _ATTRIBUTE_FIELDS])
    return (f"SELECT {cols} FROM customer_matches c LEFT JOIN track_attributes a "
            f"ON a.camera_id = c.camera_id AND a.track_id = c.track_id "
            f"WHERE c.customer_id = {ph} ORDER BY c.ts_ms, c.camera_id, c.track_id")


def _demographics_sql(ph: str, camera_id: str | None, start_ms: int | None,
                      end_ms: int | None) -> tuple[str, list[object]]:
    query = f"SELECT {_AGE_BAND_SQL}, gender, emotion, COUNT(*) FROM track_attributes WHERE n_faces > 0"
    params: list[object] = []
    for cond, value in (("camera_id =", camera_id), ("last_ts_ms >=", start_ms), ("last_ts_ms <", end_ms)):
        if value is not None:
            query += f" AND {cond} {ph}"
            params.append(value)
    return query + " GROUP BY 1, 2, 3", params


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _opt(msg: m.TrackAttributes, field: str) -> float | None:
    return _finite(getattr(msg, field)) if msg.HasField(field) else None


def _track_attributes_row(a: m.TrackAttributes) -> tuple:
    return (
        a.camera_id, a.track_id, a.first_ts_ms, a.last_ts_ms, a.last_seq, a.n_faces, a.n_used, a.n_rejected,
        _opt(a, "age_years"), _opt(a, "age_low_years"), _opt(a, "age_high_years"),
        m.GENDER_NAMES.get(a.gender, "unknown"), _finite(a.gender_confidence) or 0.0,
        m.EMOTION_NAMES.get(a.emotion, "unknown"), _finite(a.emotion_confidence) or 0.0,
        _opt(a, "attention_share"), bool(a.final),
    )


def _customer_match_row(c: m.CustomerMatch) -> tuple:
    return (c.event_id, c.camera_id, c.track_id, c.seq, c.ts_ms, c.customer_id, _finite(c.similarity) or 0.0,
            bool(c.is_new), bool(c.returning), c.visit_no)


def _customer_track(row: Sequence[Any]) -> dict[str, Any]:
    """One row of :func:`_customer_tracks_sql` -> the dict :meth:`SqliteStorage.customer_tracks` returns."""
    match = dict(zip(_MATCH_FIELDS, row[: len(_MATCH_FIELDS)]))
    track = {k: match[k] for k in ("event_id", "camera_id", "track_id", "seq", "ts_ms")}
    track.update(similarity=float(match["similarity"]), is_new=bool(match["is_new"]),
                 returning=bool(match["is_returning"]), visit_no=int(match["visit_no"]))
    attrs = dict(zip(_ATTRIBUTE_FIELDS, row[len(_MATCH_FIELDS):]))
    if attrs["last_seq"] is None:  # no attributes stored for the track (yet)
        track["attributes"] = None
        return track
    attrs["final"] = bool(attrs["final"])
    attrs["age_band"] = age_band(attrs["age_years"])
    track["attributes"] = attrs
    return track


def _demographics(rows: Iterable[Sequence[Any]], camera_id: str | None, start_ms: int | None,
                  end_ms: int | None) -> dict[str, Any]:
    """Rows ``(age band, gender, emotion, count)`` -> the dict :meth:`SqliteStorage.demographics` returns."""
    out: dict[str, Any] = {
        "camera_id": camera_id, "start_ms": start_ms, "end_ms": end_ms, "tracks": 0,
        "age": dict.fromkeys(AGE_BAND_KEYS, 0), "gender": dict.fromkeys(GENDER_KEYS, 0),
        "emotion": dict.fromkeys(EMOTION_KEYS, 0),
    }
    for band, gender, emotion, n in rows:
        n = int(n)
        out["tracks"] += n
        out["age"][band] += n
        out["gender"][gender if gender in out["gender"] else "unknown"] += n
        out["emotion"][emotion if emotion in out["emotion"] else "unknown"] += n
    return out


def _track_paths(rows: Iterable[Sequence[Any]]) -> list[TrackPath]:
    """Rows ``(track_id, ts_ms, seq, x1, y1, x2, y2, confidence)`` ordered by track -> paths."""
    paths: list[TrackPath] = []
    for track_id, ts_ms, seq, x1, y1, x2, y2, conf in rows:
        if not paths or paths[-1].track_id != track_id:
            paths.append(TrackPath(track_id, []))
        paths[-1].points.append(TrackPoint(ts_ms, seq, (x1, y1, x2, y2), conf))
    return paths


class SqliteStorage:
    """:class:`Storage` in one SQLite file (WAL mode), safe to share between threads.

    The schema is created or upgraded when the file is opened. ``":memory:"``
    gives a private in-memory database (handy in tests).

    Example:
        >>> from storelens import messages as m
        >>> with SqliteStorage(":memory:") as store:
        ...     tf = m.TrackedFrame(camera_id="cam-1", seq=3, ts_ms=120, tracks=[
        ...         m.Track(track_id=7, bbox_xyxy=m.BoxXYXY(x1=10, y1=20, x2=50, y2=120), confidence=0.5)])
        ...     store.write_tracked_frame(tf)
        ...     store.write_tracked_frame(tf)  # redelivery: no duplicate point
        ...     [(p.track_id, len(p.points)) for p in store.tracks("cam-1", 0, 1000)]
        [(7, 1)]
    """

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:" and not path.startswith("file:"):
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: no implicit transactions; each write opens its own.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "SqliteStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; further calls fail (and :meth:`ping` returns ``False``)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def ping(self) -> bool:
        """``True`` if the database answers a trivial query (readiness probe)."""
        try:
            with self._lock:
                return self._conn.execute("SELECT 1").fetchone() == (1,)
        except sqlite3.Error:
            return False

    def schema_version(self) -> int:
        """Version of the schema in the open file (equals :data:`SCHEMA_VERSION`)."""
        with self._lock:
            return self._version()

    def _version(self) -> int:
        row = self._conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        with self._lock, self._tx():
            self._conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = self._version()
            if current > SCHEMA_VERSION:
                raise StorageError(
                    f"database {self.path} has schema version {current}, newer than this "
                    f"StoreLens supports ({SCHEMA_VERSION}); upgrade StoreLens"
                )
            for statements in MIGRATIONS[current:]:
                for sql in statements:
                    self._conn.execute(sql)
            if current == 0:
                self._conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif current < SCHEMA_VERSION:
                self._conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (caller holds the lock); rolled back on error."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- writes ------------------------------------------------------------

    def write_tracked_frame(self, tf: m.TrackedFrame) -> None:
        """Store every track of ``tf`` as one point; a redelivered frame replaces its points."""
        rows = [
            (tf.camera_id, tf.seq, t.track_id, tf.ts_ms,
             t.bbox_xyxy.x1, t.bbox_xyxy.y1, t.bbox_xyxy.x2, t.bbox_xyxy.y2, t.confidence)
            for t in tf.tracks
        ]
        if not rows:
            return
        with self._lock, self._tx() as c:
            c.executemany(
                """INSERT INTO track_points (camera_id, seq, track_id, ts_ms, x1, y1, x2, y2, confidence)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (camera_id, seq, track_id) DO UPDATE SET
                     ts_ms = excluded.ts_ms, x1 = excluded.x1, y1 = excluded.y1,
                     x2 = excluded.x2, y2 = excluded.y2, confidence = excluded.confidence""",
                rows,
            )

    def write_crossings(self, events: Sequence[CrossingEvent]) -> int:
        """Insert crossings not seen before (by ``event_id``); return how many were new."""
        if not events:
            return 0
        rows = [(e.event_id, e.camera_id, e.line_id, e.track_id, e.direction, e.ts_ms, e.seq) for e in events]
        with self._lock, self._tx() as c:
            before = c.total_changes
            c.executemany(
                """INSERT INTO crossings (event_id, camera_id, line_id, track_id, direction, ts_ms, seq)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (event_id) DO NOTHING""",
                rows,
            )
            return c.total_changes - before

    def write_occupancy(self, update: m.OccupancyUpdate) -> None:
        """Keep the latest occupancy of ``update.camera_id``; an older update (by ``ts_ms``) is ignored."""
        with self._lock, self._tx() as c:
            c.execute(
                """INSERT INTO occupancy (camera_id, ts_ms, occupancy, total_in, total_out)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (camera_id) DO UPDATE SET
                     ts_ms = excluded.ts_ms, occupancy = excluded.occupancy,
                     total_in = excluded.total_in, total_out = excluded.total_out
                   WHERE excluded.ts_ms >= occupancy.ts_ms""",
                (update.camera_id, update.ts_ms, update.occupancy, update.total_in, update.total_out),
            )

    def write_count_window(self, w: m.CountWindow) -> None:
        """Insert or replace the window ``(camera_id, line_id, window_start_ms)``."""
        with self._lock, self._tx() as c:
            c.execute(
                """INSERT INTO count_windows
                     (camera_id, line_id, window_start_ms, window_end_ms, count_in, count_out)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (camera_id, line_id, window_start_ms) DO UPDATE SET
                     window_end_ms = excluded.window_end_ms,
                     count_in = excluded.count_in, count_out = excluded.count_out""",
                (w.camera_id, w.line_id, w.window_start_ms, w.window_end_ms, w.count_in, w.count_out),
            )

    def write_track_attributes(self, items: Sequence[m.TrackAttributes]) -> None:
        """Upsert each track's face attributes by ``(camera_id, track_id)``, in order.

        A message replaces the stored one only if its ``last_seq`` is at least
        the stored one, so a redelivered or late older summary changes nothing.
        """
        rows = [_track_attributes_row(a) for a in items]
        if rows:
            with self._lock, self._tx() as c:
                c.executemany(_track_attributes_sql("?"), rows)

    def write_customer_matches(self, items: Sequence[m.CustomerMatch]) -> None:
        """Insert or replace customer matches by ``event_id``."""
        rows = [_customer_match_row(cm) for cm in items]
        if rows:
            with self._lock, self._tx() as c:
                c.executemany(_customer_matches_sql("?"), rows)

    def erase_customer(self, customer_id: str) -> int:
        """Right to erasure: delete the customer's matches; return how many rows went.

        Track attributes stay: without a match they are anonymous demographics.
        """
        with self._lock, self._tx() as c:
            return c.execute("DELETE FROM customer_matches WHERE customer_id = ?", (customer_id,)).rowcount

    # -- reads -------------------------------------------------------------

    def customer_tracks(self, customer_id: str) -> list[dict[str, Any]]:
        """Tracks matched to ``customer_id``, oldest match first, each with its attributes.

        Each dict has ``event_id, camera_id, track_id, seq, ts_ms, similarity,
        is_new, returning, visit_no`` and ``attributes``: ``None`` when none
        were stored for the track, else a dict of the stored attribute fields
        (``first_ts_ms`` .. ``final``, ``gender``/``emotion`` as names) plus ``age_band``.
        """
        with self._lock:
            rows = self._conn.execute(_customer_tracks_sql("?"), (customer_id,)).fetchall()
        return [_customer_track(r) for r in rows]

    def demographics(
        self, camera_id: str | None = None, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, Any]:
        """Tracks with at least one face, by age band, gender and emotion.

        A track counts when its ``last_ts_ms`` is in ``[start_ms, end_ms)``
        (unbounded where ``None``), on ``camera_id`` if given. Returns
        ``{"camera_id", "start_ms", "end_ms", "tracks": n, "age": {band: n},
        "gender": {name: n}, "emotion": {name: n}}`` with every key of
        :data:`AGE_BAND_KEYS`, :data:`GENDER_KEYS` and :data:`EMOTION_KEYS` present.
        """
        query, params = _demographics_sql("?", camera_id, start_ms, end_ms)
        with self._lock:
            rows = self._conn.execute(query, params).fetchall()
        return _demographics(rows, camera_id, start_ms, end_ms)

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
        sql = """SELECT line_id, ts_ms - ((ts_ms % :w) + :w) % :w AS bucket,
                        SUM(direction = 'in'), SUM(direction = 'out')
                 FROM crossings
                 WHERE camera_id = :camera AND ts_ms >= :start AND ts_ms < :end"""
        params: dict[str, object] = {"w": w, "camera": camera_id, "start": start_ms, "end": end_ms}
        if line_id is not None:
            sql += " AND line_id = :line"
            params["line"] = line_id
        sql += " GROUP BY line_id, bucket ORDER BY bucket, line_id"
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [CountBucket(line, b, b + w, int(n_in), int(n_out)) for line, b, n_in, n_out in rows]

    def line_totals(
        self, camera_id: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, dict[str, int]]:
        """``{line_id: {"in": n, "out": n}}`` over ``[start_ms, end_ms)`` (unbounded where ``None``).

        Only lines with at least one crossing appear.
        """
        sql = """SELECT line_id, SUM(direction = 'in'), SUM(direction = 'out')
                 FROM crossings WHERE camera_id = ?"""
        params: list[object] = [camera_id]
        if start_ms is not None:
            sql += " AND ts_ms >= ?"
            params.append(start_ms)
        if end_ms is not None:
            sql += " AND ts_ms < ?"
            params.append(end_ms)
        sql += " GROUP BY line_id ORDER BY line_id"
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return {line: {"in": int(n_in), "out": int(n_out)} for line, n_in, n_out in rows}

    def crossing_span(self, camera_id: str) -> tuple[int, int] | None:
        """``(first_ts_ms, last_ts_ms)`` of the camera's crossings, ``None`` if there are none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MIN(ts_ms), MAX(ts_ms) FROM crossings WHERE camera_id = ?", (camera_id,)
            ).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def occupancy(self, camera_id: str) -> m.OccupancyUpdate | None:
        """The latest occupancy written for ``camera_id``, or ``None`` if there is none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT ts_ms, occupancy, total_in, total_out FROM occupancy WHERE camera_id = ?",
                (camera_id,),
            ).fetchone()
        if row is None:
            return None
        ts_ms, occ, total_in, total_out = row
        return m.OccupancyUpdate(camera_id=camera_id, ts_ms=ts_ms, occupancy=occ, total_in=total_in,
                                 total_out=total_out)

    def tracks(self, camera_id: str, start_ms: int, end_ms: int, limit_points: int = 100_000) -> list[TrackPath]:
        """Track points in ``[start_ms, end_ms)`` grouped by track (ordered by track id, then time).

        At most ``limit_points`` points are returned: the earliest ones in time.
        """
        if limit_points < 0:
            raise ValueError(f"limit_points must be >= 0, got {limit_points}")
        with self._lock:
            rows = self._conn.execute(
                """SELECT track_id, ts_ms, seq, x1, y1, x2, y2, confidence FROM (
                       SELECT * FROM track_points
                       WHERE camera_id = ? AND ts_ms >= ? AND ts_ms < ?
                       ORDER BY ts_ms, seq, track_id LIMIT ?)
                   ORDER BY track_id, ts_ms, seq""",
                (camera_id, start_ms, end_ms, limit_points),
            ).fetchall()
        return _track_paths(rows)

    def crossings(self, camera_id: str, start_ms: int, end_ms: int, limit: int = 100_000) -> list[CrossingEvent]:
        """Crossings in ``[start_ms, end_ms)`` in time order (at most ``limit``, the earliest)."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        with self._lock:
            rows = self._conn.execute(
                """SELECT event_id, camera_id, line_id, track_id, direction, ts_ms, seq FROM crossings
                   WHERE camera_id = ? AND ts_ms >= ? AND ts_ms < ?
                   ORDER BY ts_ms, seq, line_id, track_id LIMIT ?""",
                (camera_id, start_ms, end_ms, limit),
            ).fetchall()
        return [CrossingEvent(*row) for row in rows]


def open_storage(cfg: StorageConfig) -> Storage:
    """Open the backend named by ``cfg``: :class:`SqliteStorage` for ``"sqlite"``,
    :class:`~storelens.storage_pg.PostgresStorage` on ``cfg.dsn`` for ``"postgres"``.

    Example:
        >>> store = open_storage(StorageConfig(backend="sqlite", path=":memory:"))
        >>> store.ping()
        True
    """
    if cfg.backend == "sqlite":
        return SqliteStorage(cfg.path)
    if cfg.backend == "postgres":
        if not cfg.dsn:  # pragma: no cover (config requires it)
            raise ConfigError("storage.dsn is required when storage.backend is 'postgres'")
        from storelens.storage_pg import PostgresStorage  # lazy: psycopg only where it is used

        return PostgresStorage(cfg.dsn)
    raise ConfigError(f"unknown storage backend {cfg.backend!r}")  # pragma: no cover (config forbids it)
