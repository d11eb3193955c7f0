"""The history store: tracks, crossings, occupancy, count windows and face history, in SQL.

:class:`SqlStorage` implements :class:`Storage` on SQLite (one file, WAL
mode; the embedded mode) and on PostgreSQL (the distributed mode; several
installations can share a database through schemas) with the same SQLAlchemy
Core statements; what differs between the two lives in
:mod:`storelens.storage.dialects`. The tables are created or upgraded when a
store opens (:mod:`storelens.storage.migrations`). Every write is idempotent,
so a message delivered twice never counts twice:

* track points are keyed by ``(camera_id, seq, track_id)`` (a redelivered
  frame replaces its points),
* crossings by their deterministic ``event_id`` (``ON CONFLICT DO NOTHING``;
  :meth:`~SqlStorage.write_crossings` returns how many were new),
* occupancy by ``camera_id`` (the update with the newest ``ts_ms`` wins; the store's own row is camera id
  ``@store``: :data:`~storelens.domain.counting.STORE_OCCUPANCY_ID`),
* count windows by ``(camera_id, line_id, window_start_ms)``,
* face attributes by ``(camera_id, track_id)`` (the highest ``last_seq`` wins,
  so a redelivered older summary is ignored),
* customer matches by their deterministic ``event_id``.

Several items of one kind go to the database as one multi-row statement in
one transaction; :meth:`~SqlStorage.write_batch` writes a whole consumed batch
(any kinds) in one transaction. Time ranges are half-open, ``[start_ms, end_ms)``,
in milliseconds since the Unix epoch. Text ids compare in byte order on both
backends (PostgreSQL columns use the ``"C"`` collation).

Example (``dsn`` is a libpq connection string such as
``"postgresql://storelens:storelens@127.0.0.1:15432/storelens"``; ``schema`` may be ``None``):

    >>> ev = CrossingEvent("cam-1:door:7:12", "cam-1", "door", 7, "in", 61_000, 12)
    >>> answers = []
    >>> for store in (SqlStorage(":memory:"), SqlStorage(dsn, schema=schema)):
    ...     with store:
    ...         answers.append((store.write_crossings([ev]), store.write_crossings([ev]),
    ...                         store.counts("cam-1", start_ms=0, end_ms=120_000, bucket_s=60),
    ...                         store.line_totals("cam-1")))
    >>> answers[0]
    (1, 0, [CountBucket(line_id='door', start_ms=60000, end_ms=120000, count_in=1, count_out=0)], {'door': {'in': 1, 'out': 0}})
    >>> answers[1] == answers[0]  # SQLite and PostgreSQL answer the same
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import (Any, Callable, Hashable, Iterable, Iterator, Mapping, NamedTuple, Protocol, Sequence, TypeVar,
                    runtime_checkable)

import sqlalchemy as sa

import storelens.storage.dialects as dialects
import storelens.storage.migrations as migrations
from storelens.contract import messages as m
from storelens.domain.calendar import BucketGrid
from storelens.domain.counting import CrossingEvent
from storelens.storage.base import SqlStore
from storelens.storage.records import RECORDS
from storelens.storage.schema import (
    count_windows,
    crossings,
    customer_matches,
    erased_tracks,
    frames,
    occupancy,
    staff_tracks,
    track_attributes,
    track_points,
    track_summaries,
    zone_events,
)

T = TypeVar("T")

#: Tables keyed by ``(camera_id, track_id)`` whose rows of an erased customer's track are not written after the
#: erasure (``erased_tracks``, :func:`storelens.storage.privacy.erase_customer`).
ERASABLE_TABLES = frozenset(t.name for t in (track_points, track_attributes, customer_matches, track_summaries,
                                             zone_events))

#: Revisions of the history tables, oldest first; a database records how many it has.
MIGRATIONS: tuple[str, ...] = migrations.revisions("history")
SCHEMA_VERSION = len(MIGRATIONS)
#: Namespace of the advisory lock taken while migrating (PostgreSQL).
_MIGRATION_LOCK = dialects.MIGRATION_LOCK
redact_dsn = dialects.redact_dsn


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


class TrackPages(NamedTuple):
    """The tracks of a range a page at a time (:meth:`SqlStorage.track_pages`)."""

    #: Lists of whole tracks (each page's by track id), read as they are iterated.
    pages: Iterator[list[TrackPath]]
    #: Track points in ``pages``.
    points: int
    #: Every track that began in ``[start_ms, covered_end_ms)`` is in ``pages``: ``end_ms`` unless ``max_points``
    #: left tracks out (then the first point of the first one left out).
    covered_end_ms: int
    truncated: bool


#: Most tracks one page of :meth:`SqlStorage.track_pages` reads (the size of its ``IN`` list).
_PAGE_TRACKS = 1000


@runtime_checkable
class Storage(Protocol):
    """What the pipeline writes and the API reads; every write is idempotent."""

    def write_tracked_frame(self, tf: m.TrackedFrame) -> None: ...

    def write_crossings(self, events: Sequence[CrossingEvent]) -> int: ...

    def write_occupancy(self, update: m.OccupancyUpdate) -> None: ...

    def write_count_window(self, w: m.CountWindow) -> None: ...

    def counts(
        self, camera_id: str, start_ms: int, end_ms: int, bucket_s: int, line_id: str | None = None,
        grid: BucketGrid | None = None,
    ) -> list[CountBucket]: ...

    def line_totals(
        self, camera_id: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, dict[str, int]]: ...

    def crossing_span(self, camera_id: str) -> tuple[int, int] | None: ...

    def occupancy(self, camera_id: str) -> m.OccupancyUpdate | None: ...

    def tracks(self, camera_id: str, start_ms: int, end_ms: int, limit_points: int = 100_000) -> list[TrackPath]: ...

    def track_pages(self, camera_id: str, start_ms: int, end_ms: int, page_points: int = 100_000,
                    max_points: int | None = None, skip_stationary: bool = False) -> TrackPages: ...

    def crossings(self, camera_id: str, start_ms: int, end_ms: int, limit: int = 100_000,
                  offset: int = 0) -> list[CrossingEvent]: ...

    def crossing_count(self, camera_id: str, start_ms: int, end_ms: int) -> int: ...

    def write_track_attributes(self, items: Sequence[m.TrackAttributes]) -> None: ...

    def write_customer_matches(self, items: Sequence[m.CustomerMatch]) -> None: ...

    def customer_tracks(self, customer_id: str) -> list[dict[str, Any]]: ...

    def demographics(
        self, camera_id: str | None = None, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, Any]: ...

    def erase_customer(self, customer_id: str, journeys: Any = None, entrance_lines: Any = None,
                       tracks: Iterable[tuple[str, int]] = (), pending: bool = False) -> int: ...

    def erasure_pending(self, customer_id: str) -> bool: ...

    def erasure_sent(self, customer_id: str) -> None: ...

    def write_batch(self, tracked_frames: Iterable[m.TrackedFrame] = (), crossings: Sequence[CrossingEvent] = (),
                    occupancy_updates: Iterable[m.OccupancyUpdate] = (), count_windows: Iterable[m.CountWindow] = (),
                    *, track_attributes: Iterable[m.TrackAttributes] = (),
                    customer_matches: Iterable[m.CustomerMatch] = (), records: Iterable[Any] = ()) -> int:
        """Many writes of the kinds above in one transaction; returns how many crossings were new."""
        ...

    def write_records(self, records: Sequence[Any]) -> int:
        """Any mix of history records (core kinds and :mod:`storelens.storage.records` kinds), one transaction."""
        ...

    def site_update(self, store_id: str, after_version: int = 0) -> m.SiteUpdate | None:
        """The newest site version edited through the API if newer than ``after_version``
        (:func:`storelens.storage.site.site_update`)."""
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


#: Age bands of :meth:`SqlStorage.demographics`: ``(name, exclusive upper bound in years)``.
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



_TRACK_ATTRIBUTE_COLUMNS = tuple(c.name for c in track_attributes.c)
_CUSTOMER_MATCH_COLUMNS = tuple(c.name for c in customer_matches.c)
#: Attribute columns reported per track (all but the key).
_ATTRIBUTE_FIELDS = _TRACK_ATTRIBUTE_COLUMNS[2:]
_MATCH_FIELDS = ("event_id", "camera_id", "track_id", "seq", "ts_ms", "similarity", "is_new", "is_returning",
                 "visit_no")


def _age_band_sql() -> sa.ColumnElement[str]:
    age = track_attributes.c.age_years
    whens = [(age.is_(None), sa.literal_column("'unknown'"))]
    whens += [(age < upper, sa.literal_column(f"'{name}'")) for name, upper in AGE_BANDS if upper is not None]
    return sa.case(*whens, else_=sa.literal_column(f"'{AGE_BANDS[-1][0]}'"))


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _opt(msg: m.TrackAttributes, field: str) -> float | None:
    return _finite(getattr(msg, field)) if msg.HasField(field) else None


def _track_attributes_row(a: m.TrackAttributes) -> dict[str, Any]:
    return dict(zip(_TRACK_ATTRIBUTE_COLUMNS, (
        a.camera_id, a.track_id, a.first_ts_ms, a.last_ts_ms, a.last_seq, a.n_faces, a.n_used, a.n_rejected,
        _opt(a, "age_years"), _opt(a, "age_low_years"), _opt(a, "age_high_years"),
        m.GENDER_NAMES.get(a.gender, "unknown"), _finite(a.gender_confidence) or 0.0,
        m.EMOTION_NAMES.get(a.emotion, "unknown"), _finite(a.emotion_confidence) or 0.0,
        _opt(a, "attention_share"), bool(a.final),
    )))


def _customer_match_row(c: m.CustomerMatch) -> dict[str, Any]:
    return dict(zip(_CUSTOMER_MATCH_COLUMNS, (
        c.event_id, c.camera_id, c.track_id, c.seq, c.ts_ms, c.customer_id, _finite(c.similarity) or 0.0,
        bool(c.is_new), bool(c.returning), c.visit_no)))


def _customer_track(row: Sequence[Any]) -> dict[str, Any]:
    """One row of :meth:`SqlStorage.customer_tracks`' query -> the dict it returns."""
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
    """Rows ``(age band, gender, emotion, count)`` -> the dict :meth:`SqlStorage.demographics` returns."""
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



def _fold(items: Iterable[T], key: Callable[[T], Hashable],
          replaces: Callable[[T, T], bool] = lambda new, old: True) -> list[T]:
    """One item per key: a later item takes the place of the kept one if ``replaces(new, kept)``.

    One multi-row upsert may not touch a row twice, so a batch is reduced to
    what applying its items one by one, in order, would leave.
    """
    kept: dict[Hashable, T] = {}
    for item in items:
        k = key(item)
        if k not in kept or replaces(item, kept[k]):
            kept[k] = item
    return list(kept.values())


def _point_rows(frames: Iterable[m.TrackedFrame]) -> list[dict[str, Any]]:
    rows = [{"camera_id": tf.camera_id, "seq": tf.seq, "track_id": t.track_id, "ts_ms": tf.ts_ms,
             "x1": t.bbox_xyxy.x1, "y1": t.bbox_xyxy.y1, "x2": t.bbox_xyxy.x2, "y2": t.bbox_xyxy.y2,
             "confidence": t.confidence, "stationary": t.stationary} for tf in frames for t in tf.tracks]
    return _fold(rows, lambda r: (r["camera_id"], r["seq"], r["track_id"]))


def _frame_rows(frames_: Iterable[m.TrackedFrame]) -> list[dict[str, Any]]:
    rows = [{"camera_id": tf.camera_id, "seq": tf.seq, "ts_ms": tf.ts_ms, "width": tf.width, "height": tf.height,
             "source_frame": tf.source_frame, "n_tracks": len(tf.tracks), "end_of_stream": tf.end_of_stream}
            for tf in frames_]
    return _fold(rows, lambda r: (r["camera_id"], r["seq"]))


def _crossing_rows(events: Iterable[CrossingEvent]) -> list[dict[str, Any]]:
    rows = [{"event_id": e.event_id, "camera_id": e.camera_id, "line_id": e.line_id, "track_id": e.track_id,
             "direction": e.direction, "ts_ms": e.ts_ms, "seq": e.seq} for e in events]
    return _fold(rows, lambda r: r["event_id"], lambda new, old: False)  # the first one is stored


def _occupancy_rows(updates: Iterable[m.OccupancyUpdate]) -> list[dict[str, Any]]:
    rows = [{"camera_id": u.camera_id, "ts_ms": u.ts_ms, "occupancy": u.occupancy, "total_in": u.total_in,
             "total_out": u.total_out} for u in updates]
    return _fold(rows, lambda r: r["camera_id"], lambda new, old: new["ts_ms"] >= old["ts_ms"])


def _window_rows(windows: Iterable[m.CountWindow]) -> list[dict[str, Any]]:
    rows = [{"camera_id": w.camera_id, "line_id": w.line_id, "window_start_ms": w.window_start_ms,
             "window_end_ms": w.window_end_ms, "count_in": w.count_in, "count_out": w.count_out} for w in windows]
    return _fold(rows, lambda r: (r["camera_id"], r["line_id"], r["window_start_ms"]))


def _attribute_rows(items: Iterable[m.TrackAttributes]) -> list[dict[str, Any]]:
    return _fold(map(_track_attributes_row, items), lambda r: (r["camera_id"], r["track_id"]),
                 lambda new, old: new["last_seq"] >= old["last_seq"])


def _match_rows(items: Iterable[m.CustomerMatch]) -> list[dict[str, Any]]:
    return _fold(map(_customer_match_row, items), lambda r: r["event_id"])



_CORE_KINDS = {m.TrackedFrame: "tracked_frames", CrossingEvent: "crossings", m.OccupancyUpdate: "occupancy_updates",
               m.CountWindow: "count_windows", m.TrackAttributes: "track_attributes",
               m.CustomerMatch: "customer_matches"}


def _by_kind(records: Iterable[Any]) -> dict[str, list[Any]]:
    """Records -> the keyword arguments of :meth:`SqlStorage.write_batch` (other kinds under ``records``)."""
    kw: dict[str, list[Any]] = {"records": []}
    for r in records:
        kw.setdefault(_CORE_KINDS.get(type(r), "records"), []).append(r)
    return kw


@dataclass(frozen=True)
class _After:
    """A record kind's follow-up in the writing transaction (:attr:`RecordKind.sweep`, then ``after``)."""

    fn: Any
    sweep: Any = None
    items: tuple[Any, ...] = ()


class SqlStorage(SqlStore):
    """:class:`Storage` in SQLite or PostgreSQL, safe to share between threads.

    Args:
        target: SQLite file (created with its directory if missing; ``":memory:"``
            gives a private in-memory database, handy in tests) or PostgreSQL
            libpq DSN / URL, e.g. ``postgresql://storelens:storelens@127.0.0.1:15432/storelens``.
        schema: PostgreSQL schema holding the tables (created if missing);
            ``None`` uses the connection's ``search_path`` (normally ``public``).
        connect_timeout_s: how long one connection attempt (SQLite: a lock) may take.
        upgrade: ``False``: never migrate the tables; behind the head revision:
            :class:`~storelens.storage.migrations.SchemaBehind` (``storage.migrate: wait``).

    Raises:
        StorageError: the server cannot be reached, the tables cannot be
            created (e.g. no privilege), or they were written by a newer StoreLens.

    Example:
        >>> with SqlStorage(":memory:") as store:
        ...     tf = m.TrackedFrame(camera_id="cam-1", seq=3, ts_ms=120, tracks=[
        ...         m.Track(track_id=7, bbox_xyxy=m.BoxXYXY(x1=10, y1=20, x2=50, y2=120), confidence=0.5)])
        ...     store.write_tracked_frame(tf)
        ...     store.write_tracked_frame(tf)  # redelivery: no duplicate point
        ...     [(p.track_id, len(p.points)) for p in store.tracks("cam-1", 0, 1000)]
        [(7, 1)]
    """

    def __init__(self, target: str, schema: str | None = None, *, connect_timeout_s: float = 10.0,
                 upgrade: bool = True) -> None:
        self.path = self.dsn = target
        super().__init__(target, chain="history", schema=schema, connect_timeout_s=connect_timeout_s,
                         upgrade=upgrade)
        upsert = self._upsert
        self._points = upsert(track_points)
        self._frames = upsert(frames)
        ins = dialects.insert(self.db, crossings)
        self._crossings = ins.on_conflict_do_nothing(index_elements=[crossings.c.event_id]).returning(
            crossings.c.event_id)
        self._occupancy = upsert(occupancy, lambda new: new.ts_ms >= occupancy.c.ts_ms)
        self._windows = upsert(count_windows)
        # A redelivered (or reordered) older summary of the track never replaces a newer one.
        self._attributes = upsert(track_attributes, lambda new: new.last_seq >= track_attributes.c.last_seq)
        self._matches = upsert(customer_matches)
        # The per-frame upserts (none of their columns has a bind processor) skip SQLAlchemy's
        # per-call work where the backend allows.
        self._record_stmts: dict[type, Any] = {}
        self._compiled = {id(stmt): _Compiled(self.db, stmt) for stmt in (self._points, self._frames, self._occupancy,
                                                                           self._windows)}

    def schema_version(self) -> int:
        """Version of the history tables in the database (equals :data:`SCHEMA_VERSION`)."""
        return int(self._read(lambda c: c.execute(sa.text("SELECT version FROM schema_version")).scalar_one()))

    def _upsert(self, table: sa.Table, where: Callable[[Any], Any] | None = None, keep: tuple[str, ...] = (),
                coalesce: tuple[str, ...] = (), keep_if: tuple = (), set_as: tuple = ()) -> Any:
        """``INSERT .. ON CONFLICT (primary key) DO UPDATE`` of every other column but ``keep``
        (if ``where(excluded)``); a column of ``coalesce`` only with a value (``COALESCE(excluded.c, c)``), one of
        ``keep_if`` (``(column, condition on excluded)``) kept where its condition holds, one of ``set_as``
        (``(column, expression of excluded)``) set to its expression."""
        ins = dialects.insert(self.db, table)
        key = list(table.primary_key)
        kept, exprs = dict(keep_if), dict(set_as)

        def value(c):
            if c.name in exprs:
                return exprs[c.name](ins.excluded)
            new = sa.func.coalesce(ins.excluded[c.name], c) if c.name in coalesce else ins.excluded[c.name]
            return sa.case((kept[c.name](ins.excluded), c), else_=new) if c.name in kept else new

        return ins.on_conflict_do_update(
            index_elements=key,
            set_={c.name: value(c) for c in table.c if c not in key and c.name not in keep},
            where=where(ins.excluded) if where is not None else None)

    # -- writes ------------------------------------------------------------

    def write_tracked_frame(self, tf: m.TrackedFrame) -> None:
        """Store every track of ``tf`` as one point; a redelivered frame replaces its points."""
        if tf.tracks:
            self.write_batch(tracked_frames=[tf])

    def write_crossings(self, events: Sequence[CrossingEvent]) -> int:
        """Insert crossings not seen before (by ``event_id``), atomically; return how many were new."""
        return self.write_batch(crossings=events)

    def write_occupancy(self, update: m.OccupancyUpdate) -> None:
        """Keep the latest occupancy of ``update.camera_id``; an older update (by ``ts_ms``) is ignored."""
        self.write_batch(occupancy_updates=[update])

    def write_count_window(self, w: m.CountWindow) -> None:
        """Insert or replace the window ``(camera_id, line_id, window_start_ms)``."""
        self.write_batch(count_windows=[w])

    def write_track_attributes(self, items: Sequence[m.TrackAttributes]) -> None:
        """Upsert each track's face attributes by ``(camera_id, track_id)``, in order, atomically.

        A message replaces the stored one only if its ``last_seq`` is at least
        the stored one, so a redelivered or late older summary changes nothing.
        """
        self.write_batch(track_attributes=items)

    def write_customer_matches(self, items: Sequence[m.CustomerMatch]) -> None:
        """Insert or replace customer matches by ``event_id``, atomically."""
        self.write_batch(customer_matches=items)

    def write_batch(
        self,
        tracked_frames: Iterable[m.TrackedFrame] = (),
        crossings: Sequence[CrossingEvent] = (),
        occupancy_updates: Iterable[m.OccupancyUpdate] = (),
        count_windows: Iterable[m.CountWindow] = (),
        *,
        track_attributes: Iterable[m.TrackAttributes] = (),
        customer_matches: Iterable[m.CustomerMatch] = (),
        records: Iterable[Any] = (),
    ) -> int:
        """Apply many writes in one transaction (all or nothing); return how many crossings were new.

        Each item has the same idempotent effect as the single-item method
        (items of one kind apply in the given order, so the newest occupancy
        still wins); each kind is one multi-row statement. Handy for a sink
        that commits a consumed batch at once.

        Example:
            >>> ev = CrossingEvent("cam-3:door:1:5", "cam-3", "door", 1, "in", 200, 5)
            >>> occ = m.OccupancyUpdate(camera_id="cam-3", ts_ms=200, occupancy=1, total_in=1)
            >>> with SqlStorage(":memory:") as store:
            ...     store.write_batch(crossings=[ev], occupancy_updates=[occ]), store.write_batch(crossings=[ev])
            ...     store.occupancy("cam-3").occupancy
            (1, 0)
            1
        """
        batch = self._batch(tracked_frames, crossings, occupancy_updates, count_windows, track_attributes,
                            customer_matches, records)
        if not batch:
            return 0
        return self._write(lambda conn: self._apply(conn, batch))

    def _batch(self, tracked_frames: Iterable[m.TrackedFrame] = (), crossings: Sequence[CrossingEvent] = (),
               occupancy_updates: Iterable[m.OccupancyUpdate] = (), count_windows: Iterable[m.CountWindow] = (),
               track_attributes: Iterable[m.TrackAttributes] = (), customer_matches: Iterable[m.CustomerMatch] = (),
               records: Iterable[Any] = ()) -> list[tuple[Any, list[dict[str, Any]]]]:
        """``(statement, rows)`` of each non-empty kind, in write order."""
        tracked_frames = list(tracked_frames)
        batch = [(self._frames, _frame_rows(tracked_frames)), (self._points, _point_rows(tracked_frames)),
                 (self._crossings, _crossing_rows(crossings)),
                 (self._occupancy, _occupancy_rows(occupancy_updates)), (self._windows, _window_rows(count_windows)),
                 (self._attributes, _attribute_rows(track_attributes)), (self._matches, _match_rows(customer_matches))]
        by_type: dict[type, list[Any]] = {}
        for r in records:
            by_type.setdefault(type(r), []).append(r)
        for type_, items in by_type.items():
            kind = RECORDS.get(type_)
            if kind is None:
                raise TypeError(f"no history table for records of type {type_.__name__}")
            rows = kind.rows(items)
            batch.append((self._record_stmt(type_), rows))
            if kind.after is not None or kind.sweep is not None:
                batch.append((_After(kind.after, kind.sweep, tuple(items)), rows))
        # a sweep runs on its records even when they give no row (a StoreKpiHour announcing an empty window)
        return [(stmt, rows) for stmt, rows in batch if rows or (isinstance(stmt, _After) and stmt.sweep is not None)]

    def _apply(self, conn: sa.Connection, batch: list[tuple[Any, list[dict[str, Any]]]]) -> int:
        new = 0
        for stmt, rows in self._without_erased_tracks(conn, batch):
            if isinstance(stmt, _After):
                gone = stmt.sweep(conn, list(stmt.items)) if stmt.sweep is not None else []
                if stmt.fn is not None:
                    stmt.fn(conn, rows + gone)
                continue
            compiled = self._compiled.get(id(stmt))
            if compiled is not None:
                compiled.executemany(conn, rows)
                continue
            result = conn.execute(stmt, rows)
            if stmt is self._crossings:
                new = len(result.all())
            elif stmt is self._matches:
                self._forget_erased_customers(conn, {r["customer_id"] for r in rows})
        return new

    def _without_erased_tracks(self, conn: sa.Connection, batch: list[tuple[Any, list[dict[str, Any]]]]
                               ) -> list[tuple[Any, list[dict[str, Any]]]]:
        """``batch`` without the rows of erased customers' tracks (``erased_tracks``): track points, face
        attributes, matches, summaries and zone events that come after the erasure (the track was still in view,
        the writer was behind) are not written again. One look-up of the primary key per batch with such rows
        (per 500 track numbers), by the batch's cameras and track numbers, not every tombstone of its cameras;
        under the erasure lock (:func:`~storelens.storage.dialects.erasure_lock`, shared: no erasure commits
        between the look-up and the commit)."""
        keys = {(r["camera_id"], int(r["track_id"])) for stmt, rows in batch
                if getattr(getattr(stmt, "table", None), "name", None) in ERASABLE_TABLES for r in rows}
        if not keys:
            return batch
        dialects.erasure_lock(self.db, conn, exclusive=False)
        e = erased_tracks.c
        cams, tids = sorted({c for c, _ in keys}), sorted({t for _, t in keys})
        gone = {(cam, int(tid)) for i in range(0, len(tids), 500) for cam, tid in conn.execute(
            sa.select(e.camera_id, e.track_id).where(e.camera_id.in_(cams), e.track_id.in_(tids[i:i + 500])))}
        gone &= keys
        if not gone:
            return batch
        out = []
        for stmt, rows in batch:
            if getattr(getattr(stmt, "table", None), "name", None) in ERASABLE_TABLES:
                rows = [r for r in rows if (r["camera_id"], int(r["track_id"])) not in gone]
                if not rows:  # (an INSERT of no row is not a statement)
                    continue
            out.append((stmt, rows))
        return out

    def _write_records_in(self, conn: sa.Connection, records: Sequence[Any]) -> int:
        """:meth:`write_records` inside the caller's transaction ``conn``."""
        return self._apply(conn, self._batch(**_by_kind(records)))

    def _record_stmt(self, type_: type) -> Any:
        stmt = self._record_stmts.get(type_)
        if stmt is None:
            kind = RECORDS[type_]
            stmt = self._record_stmts[type_] = self._upsert(kind.table, kind.newer, kind.keep, kind.coalesce,
                                                                kind.keep_if, kind.set_as)
        return stmt

    def take_outbox(self, wanted: Sequence[str]) -> list[tuple[str, bytes, bytes, tuple]]:
        """The messages of the topics ``wanted`` other processes stored for the embedded pipeline, taken
        (:meth:`storelens.storage.outbox.HistoryOutbox.take`)."""
        from storelens.storage.outbox import HistoryOutbox

        return HistoryOutbox(self).take(wanted)

    def webhook_outbox(self) -> Any:
        """The alert webhook messages waiting for delivery (:class:`storelens.storage.webhook_outbox.WebhookOutbox`),
        which the webhook sink of :mod:`storelens.runtime.webhooks` keeps here until delivered."""
        from storelens.storage.webhook_outbox import WebhookOutbox

        return WebhookOutbox(self)

    def firing_alerts(self) -> list[dict[str, Any]]:
        """The alerts still open (:func:`storelens.storage.alerts.firing_alerts`)."""
        from storelens.storage.alerts import firing_alerts

        return firing_alerts(self)

    def site_update(self, store_id: str, after_version: int = 0) -> m.SiteUpdate | None:
        from storelens.storage.site import site_update

        return site_update(self, store_id, after_version)

    def write_records(self, records: Sequence[Any]) -> int:
        """Write any mix of history records in one transaction (see :meth:`write_batch`).

        Core kinds go to their tables as in :meth:`write_batch`; every other type must be
        registered in :mod:`storelens.storage.records` (else ``TypeError``, nothing written).
        """
        return self.write_batch(**_by_kind(records))

    def _forget_erased_customers(self, conn: sa.Connection, customer_ids: set[str]) -> None:
        """Right to erasure: a match that arrives after its customer was erased from a gallery in the
        same database (PostgreSQL, distributed mode) must not bring the link back."""
        gallery = dialects.gallery_tables(self.db).customers
        if not self.db.postgres or not sa.inspect(conn).has_table(gallery.name):
            return
        cm = customer_matches.c
        conn.execute(sa.delete(customer_matches).where(
            cm.customer_id.in_(sorted(customer_ids)),
            ~sa.exists().where(gallery.c.customer_id == cm.customer_id)))

    def erase_customer(self, customer_id: str, journeys: Any = None, entrance_lines: Any = None,
                       tracks: Iterable[tuple[str, int]] = (), pending: bool = False) -> int:
        """Right to erasure: delete every row derived from the customer; return how many rows went.

        The customer's matches and, per matched track (and per track of ``tracks``: the gallery's decisions
        of the customer), its face attributes, track summary, track
        points and zone events; with ``journeys`` (a ``JourneysConfig``) also the tracks linked to
        them in a journey (cut at the exits of ``entrance_lines``, the site's ``store.entrance_lines``).
        The deleted rows are then gone from the files too (SQLite's write-ahead log is truncated;
        PostgreSQL vacuums the tables), and rows of those tracks written later are dropped. Crossings and
        staff tracks stay (see :func:`storelens.storage.privacy.erase_customer`). When rows went, or with
        ``pending`` (the gallery still holds the customer), the erasure is recorded pending until
        :meth:`erasure_sent`.
        """
        import storelens.storage.privacy as privacy

        return sum(privacy.erase_customer(self, customer_id, journeys, entrance_lines, tracks, pending).values())

    def erasure_pending(self, customer_id: str) -> bool:
        """Whether an erasure of ``customer_id`` was not told to the recognition service yet
        (:func:`storelens.storage.privacy.erasure_pending`)."""
        import storelens.storage.privacy as privacy

        return privacy.erasure_pending(self, customer_id)

    def erasure_sent(self, customer_id: str) -> None:
        """The recognition service was told of the erasure of ``customer_id``: no longer pending."""
        import storelens.storage.privacy as privacy

        privacy.erasure_sent(self, customer_id)

    def customer_track_times(self, customer_id: str) -> dict[tuple[str, int], int]:
        """``(camera_id, track_id) -> ts_ms`` of the tracks matched to ``customer_id`` (the erasure marks them
        erased in the gallery's track decisions: never decided again)."""
        import storelens.storage.privacy as privacy

        return privacy.customer_track_times(self, customer_id)

    def staff_only_customers(self) -> list[str]:
        """Customers every matched track of whom is a staff track (``staff_tracks``: uniform, staff-only zone or
        staff face): staff the reid stage enrolled, left out of the customers the API lists."""
        cm, st = customer_matches.c, staff_tracks.c
        # one grouped pass (no correlated subquery per match): a customer whose matches all join a staff track
        # (staff_tracks' key is the track: at most one row each)
        stmt = (sa.select(cm.customer_id)
                .select_from(customer_matches.outerjoin(staff_tracks, sa.and_(st.camera_id == cm.camera_id,
                                                                              st.track_id == cm.track_id)))
                .group_by(cm.customer_id)
                .having(sa.func.count(st.track_id) == sa.func.count()))
        return sorted(str(c) for (c,) in self._rows(stmt))

    def purge_expired(self, days: Any, now_ms: int, known_customer: Callable[[str], bool] | None = None,
                      camera_now_ms: Mapping[str, int | None] | None = None) -> dict[str, int]:
        """Retention: rows of each kind of personal data older than its period; rows deleted per kind
        (:func:`storelens.storage.privacy.purge_expired`; ``camera_now_ms``: cameras with a "now" of their own)."""
        import storelens.storage.privacy as privacy

        return privacy.purge_expired(self, days, now_ms, known_customer, camera_now_ms)

    def purge_audit_log(self, before_ms: int) -> int:
        """Retention of the audit log: its entries older than ``before_ms``; how many
        (:func:`storelens.storage.auth.purge_audit`)."""
        from storelens.storage.auth import purge_audit

        return purge_audit(self, before_ms)

    def newest_frame_ms(self, camera_id: str | None = None) -> int | None:
        """Time of the newest stored frame, of ``camera_id`` if given (``None`` without frames): the camera clock
        of the retention purge."""
        import storelens.storage.privacy as privacy

        return privacy.newest_frame_ms(self, camera_id)

    # -- reads -------------------------------------------------------------

    def customer_tracks(self, customer_id: str) -> list[dict[str, Any]]:
        """Tracks matched to ``customer_id``, oldest match first, each with its attributes.

        Each dict has ``event_id, camera_id, track_id, seq, ts_ms, similarity,
        is_new, returning, visit_no`` and ``attributes``: ``None`` when none
        were stored for the track, else a dict of the stored attribute fields
        (``first_ts_ms`` .. ``final``, ``gender``/``emotion`` as names) plus ``age_band``.
        """
        c, a = customer_matches.c, track_attributes.c
        stmt = (sa.select(*[c[f] for f in _MATCH_FIELDS], *[a[f] for f in _ATTRIBUTE_FIELDS])
                .select_from(customer_matches.outerjoin(
                    track_attributes, sa.and_(a.camera_id == c.camera_id, a.track_id == c.track_id)))
                .where(c.customer_id == customer_id).order_by(c.ts_ms, c.camera_id, c.track_id))
        return [_customer_track(r) for r in self._rows(stmt)]

    def demographics(
        self, camera_id: str | None = None, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, Any]:
        """Tracks with at least one face, by age band, gender and emotion; staff tracks (``staff_tracks``) left out.

        A track counts when its ``last_ts_ms`` is in ``[start_ms, end_ms)``
        (unbounded where ``None``), on ``camera_id`` if given. Returns
        ``{"camera_id", "start_ms", "end_ms", "tracks": n, "age": {band: n},
        "gender": {name: n}, "emotion": {name: n}}`` with every key of
        :data:`AGE_BAND_KEYS`, :data:`GENDER_KEYS` and :data:`EMOTION_KEYS` present.
        """
        a, st = track_attributes.c, staff_tracks.c
        stmt = (sa.select(_age_band_sql(), a.gender, a.emotion, sa.func.count()).where(
                    a.n_faces > 0, ~sa.exists().where(st.camera_id == a.camera_id, st.track_id == a.track_id))
                .group_by(sa.text("1"), sa.text("2"), sa.text("3")))
        if camera_id is not None:
            stmt = stmt.where(a.camera_id == camera_id)
        stmt = _in_range(stmt, a.last_ts_ms, start_ms, end_ms)
        return _demographics(self._rows(stmt), camera_id, start_ms, end_ms)

    def counts(
        self, camera_id: str, start_ms: int, end_ms: int, bucket_s: int, line_id: str | None = None,
        grid: BucketGrid | None = None,
    ) -> list[CountBucket]:
        """Crossings in ``[start_ms, end_ms)`` per line and bucket of ``bucket_s`` seconds.

        Buckets are laid out by ``grid`` (the store's calendar: local days, see
        :meth:`~storelens.domain.calendar.StoreCalendar.grid`; exact over the crossings of this range:
        a local-day grid may be made for the part holding them), by default
        multiples of ``bucket_s * 1000`` ms since the epoch, and report their full bounds (only
        crossings inside the query range are counted). Only non-empty buckets are returned,
        ordered by ``(start_ms, line_id)``.
        """
        if bucket_s < 1:
            raise ValueError(f"bucket_s must be >= 1, got {bucket_s}")
        grid = grid or BucketGrid.epoch(bucket_s * 1000)
        c = crossings.c
        bucket = _bucket_start(grid, c.ts_ms)
        stmt = (_by_direction(bucket).where(c.camera_id == camera_id)
                .group_by(c.line_id, bucket).order_by(bucket, c.line_id))
        if line_id is not None:
            stmt = stmt.where(c.line_id == line_id)
        stmt = _in_range(stmt, c.ts_ms, start_ms, end_ms)
        return [CountBucket(line, int(b), grid.end_of(int(b)), int(n_in), int(n_out))
                for line, b, n_in, n_out in self._rows(stmt)]

    def line_totals(
        self, camera_id: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, dict[str, int]]:
        """``{line_id: {"in": n, "out": n}}`` over ``[start_ms, end_ms)`` (unbounded where ``None``).

        Only lines with at least one crossing appear.
        """
        c = crossings.c
        stmt = _by_direction().where(c.camera_id == camera_id).group_by(c.line_id).order_by(c.line_id)
        rows = self._rows(_in_range(stmt, c.ts_ms, start_ms, end_ms))
        return {line: {"in": int(n_in), "out": int(n_out)} for line, n_in, n_out in rows}

    def count_window_rows(self, camera_id: str, start_ms: int | None = None) -> list[m.CountWindow]:
        """The camera's stored count windows (``count_windows``) starting at or after ``start_ms`` (all where
        ``None``), ordered by start then line: what an embedded start takes of the windows still open."""
        w = count_windows.c
        stmt = _in_range(sa.select(w.line_id, w.window_start_ms, w.window_end_ms, w.count_in, w.count_out)
                         .where(w.camera_id == camera_id), w.window_start_ms, start_ms, None)
        return [m.CountWindow(camera_id=camera_id, line_id=line, window_start_ms=int(start),
                              window_end_ms=int(end), count_in=int(cin), count_out=int(cout))
                for line, start, end, cin, cout in self._rows(stmt.order_by(w.window_start_ms, w.line_id))]

    def crossing_span(self, camera_id: str) -> tuple[int, int] | None:
        """``(first_ts_ms, last_ts_ms)`` of the camera's crossings, ``None`` if there are none."""
        c = crossings.c
        (row,) = self._rows(sa.select(sa.func.min(c.ts_ms), sa.func.max(c.ts_ms)).where(c.camera_id == camera_id))
        return None if row[0] is None else (int(row[0]), int(row[1]))

    def occupancy(self, camera_id: str) -> m.OccupancyUpdate | None:
        """The latest occupancy written for ``camera_id``, or ``None`` if there is none."""
        o = occupancy.c
        rows = self._rows(sa.select(o.ts_ms, o.occupancy, o.total_in, o.total_out).where(o.camera_id == camera_id))
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
        t = track_points.c
        first = _in_range(sa.select(track_points).where(t.camera_id == camera_id), t.ts_ms, start_ms, end_ms)
        p = first.order_by(t.ts_ms, t.seq, t.track_id).limit(limit_points).subquery("p")
        stmt = (sa.select(p.c.track_id, p.c.ts_ms, p.c.seq, p.c.x1, p.c.y1, p.c.x2, p.c.y2, p.c.confidence)
                .order_by(p.c.track_id, p.c.ts_ms, p.c.seq))
        return _track_paths(self._rows(stmt))

    def track_pages(self, camera_id: str, start_ms: int, end_ms: int, page_points: int = 100_000,
                    max_points: int | None = None, skip_stationary: bool = False) -> TrackPages:
        """The tracks of ``[start_ms, end_ms)``, whole (their points in the range, in time order as
        :meth:`tracks` gives them), a page of about ``page_points`` points at a time (a longer track is a
        page of its own), in the order they began: a whole range is read without holding it. With
        ``max_points`` the tracks stop before the one that would exceed it (the first is always read), and
        :attr:`TrackPages.covered_end_ms` says up to when the tracks that began are all there. One query
        counts the points per track; a page reads its tracks through ``track_points_by_track``. With
        ``skip_stationary`` each track's points up to its last point flagged ``stationary`` in the range are left
        out: detect-track flags a track that stood still since it appeared, once it stood ``stationary.after_s``,
        until it moves (never again after), so they are the standing still, the unflagged start included. A
        mannequin flagged to its end is left out whole; a shopper standing still when their track appeared
        (a cold start, a remembered mannequin's place) keeps the walking after.

        Example:
            >>> with SqlStorage(":memory:") as store:
            ...     _ = store.write_batch(tracked_frames=[m.TrackedFrame(
            ...         camera_id="cam-1", seq=t, ts_ms=100 * t, tracks=[m.Track(track_id=t)]) for t in (3, 1, 2)])
            ...     found = store.track_pages("cam-1", 0, 1000, page_points=2, max_points=2)
            ...     [[p.track_id for p in page] for page in found.pages], found.covered_end_ms
            ([[1, 2]], 300)
        """
        if page_points < 1 or (max_points is not None and max_points < 1):
            raise ValueError(f"page_points and max_points must be >= 1, got {page_points} and {max_points}")
        t = track_points.c
        in_range = (t.camera_id == camera_id, t.ts_ms >= start_ms, t.ts_ms < end_ms)

        def points(columns: tuple[Any, ...], *where: Any) -> sa.Select[Any]:
            """The range's points (``where``); with ``skip_stationary``, those after their track's last flagged one."""
            stmt = sa.select(*columns).where(*in_range, *where)
            if not skip_stationary:
                return stmt
            still = (sa.select(t.track_id, sa.func.max(t.ts_ms).label("until_ms"))
                     .where(*in_range, *where, t.stationary).group_by(t.track_id).subquery("still"))
            return (stmt.outerjoin_from(track_points, still, still.c.track_id == t.track_id)
                    .where(sa.or_(still.c.until_ms.is_(None), t.ts_ms > still.c.until_ms)))

        per_track = points((t.track_id, sa.func.count(), sa.func.min(t.ts_ms))).group_by(t.track_id)
        spans = sorted((int(first), int(tid), int(n)) for tid, n, first in self._rows(per_track))
        pages: list[list[int]] = []
        covered_end, n, total = end_ms, 0, 0
        for first, tid, k in spans:
            if max_points is not None and pages and total + k > max_points:
                covered_end = first
                break
            if pages and n + k <= page_points and len(pages[-1]) < _PAGE_TRACKS:
                pages[-1].append(tid)
                n += k
            else:
                pages.append([tid])
                n = k
            total += k

        def read() -> Iterator[list[TrackPath]]:
            for ids in pages:
                yield _track_paths(self._rows(
                    points((t.track_id, t.ts_ms, t.seq, t.x1, t.y1, t.x2, t.y2, t.confidence), t.track_id.in_(ids))
                    .order_by(t.track_id, t.ts_ms, t.seq)))

        return TrackPages(read(), total, covered_end, covered_end < end_ms)

    def crossings(self, camera_id: str, start_ms: int, end_ms: int, limit: int = 100_000,
                  offset: int = 0) -> list[CrossingEvent]:
        """Crossings in ``[start_ms, end_ms)`` in time order: at most ``limit``, the earliest after the first
        ``offset`` (the order is total, so a position names one crossing: :meth:`crossing_count` gives them)."""
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got {limit} and {offset}")
        c = crossings.c
        stmt = _in_range(sa.select(c.event_id, c.camera_id, c.line_id, c.track_id, c.direction, c.ts_ms, c.seq)
                         .where(c.camera_id == camera_id), c.ts_ms, start_ms, end_ms)
        stmt = stmt.order_by(c.ts_ms, c.seq, c.line_id, c.track_id).limit(limit).offset(offset)
        return [CrossingEvent(*row) for row in self._rows(stmt)]

    def crossing_count(self, camera_id: str, start_ms: int, end_ms: int) -> int:
        """How many crossings :meth:`crossings` has in ``[start_ms, end_ms)`` (counted in the database)."""
        c = crossings.c
        stmt = _in_range(sa.select(sa.func.count()).select_from(crossings).where(c.camera_id == camera_id),
                         c.ts_ms, start_ms, end_ms)
        return int(self._rows(stmt)[0][0])


class _Compiled:
    """A Core statement written for every frame, compiled once for the store (:func:`dialects.upsert_many`)."""

    def __init__(self, db: dialects.Database, stmt: sa.Executable) -> None:
        compiled = stmt.compile(dialect=db.engine.dialect)
        self.db, self.stmt, self.sql = db, stmt, str(compiled)
        self.order = tuple(compiled.positiontup or ())

    def executemany(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        dialects.upsert_many(self.db, conn, self.stmt, self.sql, self.order, rows)


def _in_range(stmt: sa.Select[Any], column: sa.ColumnElement[int], start_ms: int | None,
              end_ms: int | None) -> sa.Select[Any]:
    if start_ms is not None:
        stmt = stmt.where(column >= start_ms)
    if end_ms is not None:
        stmt = stmt.where(column < end_ms)
    return stmt


def _bucket_start(grid: BucketGrid, ts: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """SQL of ``grid.start_of(ts)``: per run ``ts - ((ts - origin) % width + width) % width``, the run found
    by a binary search on the runs' origins written as nested ``CASE``s when there are several (a local-day
    grid: one run per DST change; a row costs log2(runs) comparisons, not a scan of them). Integers are
    inlined: the same SQL in SELECT and GROUP BY, on SQLite and PostgreSQL alike."""
    def lit(v: int) -> sa.ColumnElement[int]:
        return sa.literal_column(str(v) if v >= 0 else f"({v})")

    def start(origin: int, width: int) -> sa.ColumnElement[int]:
        w = lit(width)
        return ts - (((ts if origin == 0 else ts - lit(origin)) % w) + w) % w

    def search(runs: tuple[tuple[int, int], ...]) -> sa.ColumnElement[int]:
        if len(runs) == 1:
            return start(*runs[0])
        mid = len(runs) // 2
        return sa.case((ts < lit(runs[mid][0]), search(runs[:mid])), else_=search(runs[mid:]))

    return search(grid.runs)


def _by_direction(*extra: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """``SELECT line_id, *extra, n_in, n_out FROM crossings`` (to be grouped)."""
    c = crossings.c
    return sa.select(c.line_id, *extra, sa.func.count().filter(c.direction == "in"),
                     sa.func.count().filter(c.direction == "out"))


#: The embedded mode's name of the store (a SQLite file): ``SqliteStorage(path)``.
SqliteStorage = SqlStorage
#: The distributed mode's name of the store: ``PostgresStorage(dsn, schema=None)``.
PostgresStorage = SqlStorage
