"""Retention and erasure of personal data in the history store (SQLAlchemy Core: SQLite and PostgreSQL).

* :func:`purge_expired` -- the retention purge: every kind of personal data of
  ``privacy.retention.days`` (:data:`RETENTION_TABLES`: table and time column) loses its rows
  older than its period, in one transaction; track-to-customer links whose customer left the
  face gallery (its embeddings expired, ``faces.reid.retention_days``, or were erased) go too.
  The runner calls it on a schedule in both modes (:mod:`storelens.runtime.retention`),
  through :meth:`SqlStorage.purge_expired <storelens.storage.history.SqlStorage.purge_expired>`.
  Every delete is a range search of an index (camera by camera where the time index leads with the
  camera), so the hourly purge reads the expired rows only, however long the history; on SQLite the
  write-ahead log is then checkpointed and truncated (after the commit, outside the store's lock, on a
  connection of its own: :func:`storelens.storage.dialects.checkpoint_after_purge`), so purged rows do
  not stay readable in it; a checkpoint that another connection's write keeps from truncating is
  done at the next purge.
* :func:`erase_customer` -- the right to erasure: every row derived from a customer's tracks
  (matches, face attributes, track summaries, track points, zone events), and with a
  journeys config the tracks linked to them in the same journeys. The deleted bytes are then
  made unreadable where the backend allows (:func:`storelens.storage.dialects.after_erase`:
  SQLite's write-ahead log is checkpointed and truncated; PostgreSQL leaves them to autovacuum: a
  VACUUM of days of track points would hold the API's connection for minutes). Each
  delete searches an index by camera and track (track points: ``track_points_by_track``), so it
  reads the erased tracks' rows, not every row of their cameras.

Line crossings, staff tracks and the per-bucket aggregates (counts, zone statistics, heatmaps)
stay: they keep no link to a person once the tracks' points, summaries and matches are gone
(a staff track is a track number and a cue, and keeps past days' KPIs from counting an erased
staff member's entries as visitors).

Example:
    >>> from storelens.contract import messages as m
    >>> from storelens.storage import SqlStorage
    >>> DAY = 86_400_000
    >>> with SqlStorage(":memory:") as store:
    ...     store.write_tracked_frame(m.TrackedFrame(camera_id="c", seq=1, ts_ms=DAY, tracks=[
    ...         m.Track(track_id=7, bbox_xyxy=m.BoxXYXY(x1=0, y1=0, x2=5, y2=9), confidence=0.9)]))
    ...     purge_expired(store, {"track_points": 7, "frames": None}, now_ms=DAY + 6 * DAY)["track_points"]
    ...     purge_expired(store, {"track_points": 7, "frames": None}, now_ms=DAY + 8 * DAY)["track_points"]
    0
    1
"""
from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Iterable, Mapping

import sqlalchemy as sa

import storelens.storage.dialects as dialects
from storelens.contract import topics
from storelens.storage.schema import (
    crossings,
    customer_matches,
    erased_tracks,
    frames,
    group_crossings,
    pending_erasures,
    staff_tracks,
    track_attributes,
    track_points,
    track_summaries,
    zone_events,
)

DAY_MS = 86_400_000

#: Kind of personal data -> (table, time column the period counts from: the row's last sighting).
RETENTION_TABLES: dict[str, tuple[sa.Table, str]] = {
    "track_points": (track_points, "ts_ms"),
    "frames": (frames, "ts_ms"),
    "track_attributes": (track_attributes, "last_ts_ms"),
    "customer_matches": (customer_matches, "ts_ms"),
    "track_summaries": (track_summaries, "last_ts_ms"),
    "zone_events": (zone_events, "ts_ms"),
    "crossings": (crossings, "ts_ms"),
    "group_crossings": (group_crossings, "ts_ms"),
    "staff_tracks": (staff_tracks, "ts_ms"),
}

#: Tables keyed by ``(camera_id, track_id)`` whose rows are one person's: what erasure deletes per track.
#: Not ``staff_tracks`` (a track number and a cue, kept so past days' KPIs stay as they were).
TRACK_TABLES: tuple[sa.Table, ...] = (track_attributes, track_summaries, track_points, zone_events)
#: How long an erased customer's tracks are remembered (``erased_tracks``, wall clock) so their rows that come
#: later are not written (:meth:`SqlStorage.write_batch <storelens.storage.history.SqlStorage.write_batch>`): a
#: track still in view, or a writer behind, for as long as the topics that carry such rows keep them (7 days).
ERASED_TRACKS_KEPT_MS = max(t.retention_ms for t in topics.TOPICS if t.name in (
    topics.PERSON_CROPS, topics.TRACKS, topics.TRACK_ATTRIBUTES, topics.CUSTOMER_MATCHES, topics.TRACK_SUMMARIES,
    topics.ZONE_EVENTS))


def _days(days: Any) -> dict[str, float | None]:
    """A ``RetentionDays`` model or a plain mapping -> ``{kind: days | None}`` (unknown kinds are an error)."""
    raw = days.model_dump() if hasattr(days, "model_dump") else dict(days)
    unknown = sorted(set(raw) - set(RETENTION_TABLES))
    if unknown:
        raise ValueError(f"no retention for {unknown}; kinds: {', '.join(RETENTION_TABLES)}")
    for kind, d in raw.items():
        if d is not None and not d > 0:
            raise ValueError(f"retention of {kind} must be > 0 days or None (kept), got {d}")
    return raw


def purge_expired(storage: Any, days: Mapping[str, float | None] | Any, now_ms: int,
                  known_customer: Callable[[str], bool] | None = None,
                  camera_now_ms: Mapping[str, int | None] | None = None) -> dict[str, int]:
    """Delete the rows older than their kind's retention, counted back from ``now_ms``; rows deleted per kind.

    Args:
        storage: the history store (:class:`~storelens.storage.history.SqlStorage`).
        days: ``{kind: days or None}`` (a ``privacy.retention.days`` model works too); kinds left
            out or ``None`` are kept.
        now_ms: "now" (ms since the epoch): the wall clock, or the newest frame's time.
        known_customer: whether a customer id is still in the face gallery; links to customers it
            does not know are deleted whatever their age (``orphan_matches`` in the answer). On
            PostgreSQL a gallery in the same schema is checked in SQL without it.
        camera_now_ms: cameras whose rows count back from a "now" of their own instead (a file camera among live
            ones under ``privacy.retention.clock: auto``: its newest frame); ``None`` for one: none of its rows
            is purged (nothing of it stored yet).

    Every kind of :data:`RETENTION_TABLES` is in the answer (0 when kept or nothing expired). After the
    deletion has committed, without the store's lock, SQLite's write-ahead log (which still held the rows)
    is checkpointed and truncated (:func:`~storelens.storage.dialects.checkpoint_after_purge`: when another
    connection is busy writing, at the next purge); on PostgreSQL the space is left to autovacuum (no
    ``VACUUM`` every hour).
    """
    spans = _days(days)
    out = dict.fromkeys(RETENTION_TABLES, 0)
    own = dict(camera_now_ms or {})

    def purge(conn: sa.Connection) -> None:
        for kind, (table, column) in RETENTION_TABLES.items():
            d = spans.get(kind)
            if d is None:
                continue
            cam, ts = table.c.camera_id, table.c[column]

            def cutoff(camera: str | None = None) -> int | None:  # None: nothing of the camera is purged
                now = own.get(camera, now_ms) if camera is not None else now_ms
                return None if now is None else int(now - d * DAY_MS)

            if table.name in PER_CAMERA:
                deletes = [sa.delete(table).where(cam == c, ts < cut) for c in _cameras(conn, table)
                           if (cut := cutoff(c)) is not None]
            else:  # an index that leads with the time column: one range for the cameras of the common "now"
                deletes = [sa.delete(table).where(ts < cutoff(), *([cam.not_in(sorted(own))] if own else []))]
                deletes += [sa.delete(table).where(cam == c, ts < cut) for c in sorted(own)
                            if (cut := cutoff(c)) is not None]
            out[kind] = sum(max(conn.execute(stmt).rowcount, 0) for stmt in deletes)
        out["customer_matches"] += _orphan_matches(storage, conn, known_customer)
        # erased tracks whose late rows can no longer come (wall clock: how long the topics keep them)
        conn.execute(sa.delete(erased_tracks).where(
            erased_tracks.c.ts_ms < int(time.time() * 1000) - ERASED_TRACKS_KEPT_MS))

    storage._write(purge)
    # After the commit, without the store's lock: the pipeline's writes do not wait for the checkpoint (SQLite: the
    # purged rows leave the write-ahead log, after every purge, so one left busy is done at the next; PostgreSQL:
    # left to autovacuum).
    dialects.checkpoint_after_purge(storage.db)
    return out


#: Tables of :data:`RETENTION_TABLES` whose only index on the time column comes after ``camera_id``
#: (``<table>_by_time``): the purge deletes camera by camera, so each delete is a range search of that index
#: rather than a scan of the table. The other tables have an index that leads with the time column.
PER_CAMERA = frozenset({"track_points", "frames", "zone_events", "crossings", "group_crossings"})


def _cameras(conn: sa.Connection, table: sa.Table) -> list[str]:
    """The camera ids that have rows in ``table``, in order: one index search per camera (a "loose index scan"
    of an index that leads with ``camera_id``), where ``SELECT DISTINCT`` would read the whole index."""
    cam = table.c.camera_id
    out: list[str] = []
    nxt = conn.execute(sa.select(sa.func.min(cam))).scalar()
    while nxt is not None:
        out.append(nxt)
        nxt = conn.execute(sa.select(sa.func.min(cam)).where(cam > nxt)).scalar()
    return out


def _orphan_matches(storage: Any, conn: sa.Connection, known_customer: Callable[[str], bool] | None) -> int:
    cm = customer_matches.c
    if known_customer is None:
        gallery = dialects.gallery_tables(storage.db).customers
        if not storage.db.postgres or not sa.inspect(conn).has_table(gallery.name, schema=storage.schema):
            return 0
        stmt = sa.delete(customer_matches).where(~sa.exists().where(gallery.c.customer_id == cm.customer_id))
        return max(conn.execute(stmt).rowcount, 0)
    ids = [cid for (cid,) in conn.execute(sa.select(cm.customer_id).distinct()) if not known_customer(cid)]
    gone = 0
    for i in range(0, len(ids), 500):
        gone += max(conn.execute(sa.delete(customer_matches).where(cm.customer_id.in_(ids[i:i + 500]))).rowcount, 0)
    return gone


def newest_frame_ms(storage: Any, camera_id: str | None = None) -> int | None:
    """Time of the newest stored frame (the "camera clock" of the purge), of ``camera_id`` if given (the
    "now" of ``/v1/queues``), ``None`` without frames.

    Read camera by camera (the newest entry of each camera's part of ``frames_by_time``), not over all frames.
    """
    f = frames.c

    def newest(conn: sa.Connection) -> int | None:
        times = [conn.execute(sa.select(sa.func.max(f.ts_ms)).where(f.camera_id == cam)).scalar()
                 for cam in ([camera_id] if camera_id is not None else _cameras(conn, frames))]
        return max((int(t) for t in times if t is not None), default=None)

    return storage._read(newest)


def customer_track_keys(storage: Any, customer_id: str) -> set[tuple[str, int]]:
    """``(camera_id, track_id)`` of the tracks matched to ``customer_id``."""
    cm = customer_matches.c
    rows = storage._rows(sa.select(cm.camera_id, cm.track_id).where(cm.customer_id == customer_id))
    return {(str(cam), int(tid)) for cam, tid in rows}


def customer_track_times(storage: Any, customer_id: str) -> dict[tuple[str, int], int]:
    """``(camera_id, track_id) -> ts_ms`` of the matches of ``customer_id`` (:func:`customer_track_keys` with the
    match's time)."""
    cm = customer_matches.c
    rows = storage._rows(sa.select(cm.camera_id, cm.track_id, cm.ts_ms).where(cm.customer_id == customer_id))
    return {(str(cam), int(tid)): int(ts) for cam, tid, ts in rows}


def journey_track_keys(storage: Any, journeys_config: Any, customer_id: str, seeds: Iterable[tuple[str, int]],
                       entrance_lines: Iterable[str] | None = None) -> set[tuple[str, int]]:
    """The tracks of the journeys (linked at query time, as the API links them: ``entrance_lines`` is the site's
    ``store.entrance_lines``) that contain one of ``seeds`` or carry the customer."""
    import storelens.storage.journeys as jq

    seeds = set(seeds)
    if not seeds:
        return set()
    s = track_summaries.c
    rows = storage._rows(sa.select(s.camera_id, s.track_id, s.first_ts_ms, s.last_ts_ms).where(
        s.camera_id.in_(sorted({c for c, _ in seeds})), s.track_id.in_(sorted({t for _, t in seeds}))))
    spans = [(int(first), int(last)) for cam, tid, first, last in rows if (cam, int(tid)) in seeds]
    if not spans:
        return set()
    out: set[tuple[str, int]] = set()
    for first, last in sorted(set(spans)):  # one visit each: link around it only, not over months
        for j in jq.journeys(storage, journeys_config, first, last + 1, entrance_lines):
            tracks = {(t.camera_id, t.track_id) for t in j.tracks}
            if tracks & seeds or j.customer_id == customer_id:
                out |= tracks
    return out


def erase_customer(storage: Any, customer_id: str, journeys_config: Any = None,
                   entrance_lines: Iterable[str] | None = None,
                   tracks: Iterable[tuple[str, int]] = (), pending: bool = False) -> dict[str, int]:
    """Right to erasure in the history: every row derived from the customer; rows deleted per table.

    Deletes the customer's track-to-customer links and, for each matched track (those of the links, and
    ``tracks``: the gallery's decisions of the customer, whose links may not be stored yet; with
    ``journeys_config`` also every track linked to one in a journey, cut at the exits of ``entrance_lines``:
    :func:`journey_track_keys`), its face attributes, track summary, track points and zone events, in one
    transaction, and records those tracks in ``erased_tracks``: rows of them written later (the track still in
    view, the history writer behind) are dropped, for :data:`ERASED_TRACKS_KEPT_MS` (on PostgreSQL also those of
    a write in progress: :func:`~storelens.storage.dialects.erasure_lock`). Then, when something was
    deleted, the deleted bytes are made unreadable (SQLite: the write-ahead log, which still held
    the rows, is checkpointed and truncated; PostgreSQL: ``VACUUM`` of the tables that lost rows). The
    track's crossings and its staff recognition (``staff_tracks``) stay.

    When rows were deleted, or with ``pending`` (the gallery still holds the customer), the same transaction records
    the erasure in ``pending_erasures`` until the recognition service was told (:func:`erasure_sent`): a retry of
    the request answers 204 by it (:func:`erasure_pending`), while an id never erased has no row.

    Example:
        >>> from storelens.contract import messages as m
        >>> from storelens.storage import SqlStorage
        >>> with SqlStorage(":memory:") as store:
        ...     store.write_customer_matches([m.CustomerMatch(event_id="e", camera_id="c", track_id=3,
        ...                                                   customer_id="cu-1", ts_ms=5)])
        ...     store.write_track_attributes([m.TrackAttributes(camera_id="c", track_id=3, last_ts_ms=5, n_faces=2)])
        ...     erase_customer(store, "cu-1")
        {'customer_matches': 1, 'track_attributes': 1, 'track_summaries': 0, 'track_points': 0, 'zone_events': 0}
    """
    tracks = customer_track_keys(storage, customer_id) | {(str(c), int(t)) for c, t in tracks}
    if journeys_config is not None:
        tracks |= journey_track_keys(storage, journeys_config, customer_id, tracks, entrance_lines)
    now_ms = int(time.time() * 1000)
    tombstones = dialects.insert(storage.db, erased_tracks)
    tombstones = tombstones.on_conflict_do_update(index_elements=list(erased_tracks.primary_key),
                                                  set_={"ts_ms": tombstones.excluded.ts_ms})

    def erase(conn: sa.Connection) -> dict[str, int]:
        # PostgreSQL: a history write in progress, which read no tombstone of these tracks, commits first (its rows
        # are then deleted here), a later one waits for the tombstones (SQLite: the write lock orders them); a
        # match such a write stored since the look-up above adds its track
        dialects.erasure_lock(storage.db, conn, exclusive=True)
        cm = customer_matches.c
        keys = tracks | {(str(c), int(t)) for c, t in conn.execute(
            sa.select(cm.camera_id, cm.track_id).where(cm.customer_id == customer_id))}
        by_camera: dict[str, list[int]] = {}
        for cam, tid in sorted(keys):
            by_camera.setdefault(cam, []).append(tid)
        out = {"customer_matches": max(conn.execute(sa.delete(customer_matches).where(
            cm.customer_id == customer_id)).rowcount, 0)}
        for table in TRACK_TABLES:
            n = 0
            for cam, tids in by_camera.items():
                for i in range(0, len(tids), 500):
                    n += max(conn.execute(sa.delete(table).where(
                        table.c.camera_id == cam, table.c.track_id.in_(tids[i:i + 500]))).rowcount, 0)
            out[table.name] = n
        if keys:
            conn.execute(tombstones, [{"camera_id": c, "track_id": t, "ts_ms": now_ms} for c, t in sorted(keys)])
        if pending or any(out.values()):  # with the deletion: a retry after any later failure finds it
            conn.execute(dialects.insert(storage.db, pending_erasures)
                         .values(customer_digest=erasure_digest(customer_id), ts_ms=now_ms)
                         .on_conflict_do_nothing(index_elements=["customer_digest"]))
        return out

    with storage._lock:  # the clean-up right after the deletion, as the gallery's
        out = storage._write(erase)
        gone = [t for t in (customer_matches, *TRACK_TABLES) if out.get(t.name)]
        if gone:
            # explicit=False: no VACUUM of the big history tables on PostgreSQL (autovacuum); SQLite truncates its WAL
            storage._run(lambda c: dialects.after_erase(storage.db, c, gone, explicit=False))
    return out


def erasure_pending(storage: Any, customer_id: str) -> bool:
    """Whether an erasure of ``customer_id`` has not been told to the recognition service yet (its row in
    ``pending_erasures``, written by :func:`erase_customer`)."""
    p = pending_erasures.c
    return bool(storage._rows(sa.select(p.customer_digest).where(p.customer_digest == erasure_digest(customer_id))))


def erasure_sent(storage: Any, customer_id: str) -> None:
    """The recognition service was told of the erasure of ``customer_id`` (or none is to be told): its
    ``pending_erasures`` row goes; a later request for the id answers 404."""
    storage._write(lambda c: c.execute(sa.delete(pending_erasures).where(
        pending_erasures.c.customer_digest == erasure_digest(customer_id))))


def erasure_digest(customer_id: str) -> str:
    """The key of ``customer_id``'s row in ``pending_erasures``: a SHA-256 digest, so that the erased id itself is
    not kept in the history (the id is a random pseudonym: only who holds it can find its row).

    >>> erasure_digest("cu-1") == erasure_digest("cu-1") != erasure_digest("cu-2"), len(erasure_digest("cu-1"))
    (True, 64)
    """
    return hashlib.sha256(f"storelens-erasure:{customer_id}".encode()).hexdigest()
