"""The face gallery's store: customers, embeddings (float32 vectors, never images) and visits, in SQL.

:class:`SqlGalleryStore` implements :class:`~storelens.backends.face_index.GalleryStore`
on SQLite (a file of its own; tables ``meta``, ``customers``, ``embeddings``,
``visits``) and on PostgreSQL (tables ``gallery_meta``, ``gallery_customers``,
``gallery_embeddings``, ``gallery_visits``, possibly beside the history
tables; several services can share one gallery). The FAISS index
(:class:`~storelens.backends.face_index.FaceGallery`) rebuilds itself from a
store at start; :func:`open_gallery` builds both from a site config.

* ``meta`` records the embedding dimension (``dim``; opening with another one
  is a :class:`~storelens.errors.ConfigError`), the embedder that made the
  embeddings (``embedder``, its model name such as ``dlib-resnet-v1`` or
  ``facenet-inceptionresnetv1-vggface2``: two embedders of the same dimension
  still make vectors that cannot be compared, so opening with another one is a
  :class:`~storelens.errors.ConfigError` too; a gallery from before this key
  opens as before and records the embedder it is first opened with) and the
  tables' version (``layout``, see :mod:`storelens.storage.migrations`);
* ``customers(customer_id, created_ts_ms)`` (PostgreSQL adds ``seq``, the
  insertion order; SQLite has its ``rowid``);
* ``embeddings(id, customer_id, ts_ms, vector)``, ``vector`` the little-endian
  float32 bytes (PostgreSQL checks there are exactly ``4 * dim`` of them);
* ``visits(customer_id, visit_no, first_ts_ms, last_ts_ms, cameras)``;
* ``track_decisions(camera_id, track_id, ts_ms, decision, customer_id, staff_id, output)``: the reid stage's
  decision of each track (``customer``, ``staff``, ``abstained``, ``erased``), so a restarted stage never decides
  a track again (:meth:`~SqlGalleryStore.track_decision`) but publishes the ``CustomerMatch`` / ``StaffTrack`` it
  had published for it again (``output``, protobuf); erasing a customer turns theirs into ``erased`` decisions
  without the customer or the output (and the API adds one for each track the history matched to them:
  :meth:`~SqlGalleryStore.erase_track_decisions`); an end of stream keeps the ``erased`` ones (a rerun of the file
  gives the person the same track id); the retention purge drops them with the embeddings.

Embeddings and visits reference their customer (``ON DELETE CASCADE``).

Erasure and privacy: :meth:`~SqlGalleryStore.delete_customer` deletes the
customer's embeddings, visits and row in one transaction, and
:meth:`~SqlGalleryStore.purge_older_than` applies retention in one
transaction. SQLite overwrites deleted rows (``secure_delete``) and truncates
the write-ahead log after every deletion, so erased vectors do not linger in
the database files. PostgreSQL has no equivalent: a deleted (or updated) row
stays in the table file as a dead tuple until ``VACUUM`` reclaims its space;
the reclaimed space is reused by later rows but not zeroed, and the old bytes
also remain in write-ahead log segments, replicas and base backups until
those are recycled or expire. After an explicit erasure the store therefore
runs ``VACUUM`` on the gallery tables right away (cheap: only pages with dead
rows are visited; ``vacuum_after_erase=False`` leaves it to autovacuum;
without the privilege to vacuum, PostgreSQL skips it with a warning).
Routine replacements and removals (``replace_embedding``, ``remove_embeddings``)
are left to autovacuum. ``VACUUM`` does not zero a page's free space, so bytes
of an erased vector can stay in a table file until new rows reuse the space
(``VACUUM FULL`` rewrites the files, under an exclusive lock). Bound what
lingers with encrypted storage and the retention of WAL archives and backups.

Retries: when a PostgreSQL server drops the connection, the call reconnects
and runs once more. Embedding ids are reserved before the insert, so a retried
insert whose first commit went through (only the reply was lost) is
recognised instead of applied twice, and a retried :meth:`~SqlGalleryStore.add_customer`
ignores the row it already wrote. Only the counts reported by a retried
``delete_customer`` / ``purge_older_than`` may miss what the lost attempt had
already deleted.

Example (``dsn`` is a connection string such as
``"postgresql://storelens:storelens@127.0.0.1:15432/storelens"``, possibly with
``options=-c search_path=...``):

    >>> import numpy as np
    >>> answers = []
    >>> for target in (":memory:", dsn):
    ...     store = SqlGalleryStore(target, dim=4)
    ...     gallery = FaceGallery(GalleryConfig(dim=4, match_threshold=0.9), store=store,
    ...                           id_factory=iter(["alice"]).__next__)
    ...     enrolled = gallery.enroll_or_match(np.array([1, 0, 0, 0], np.float32), ts_ms=1000).customer_id
    ...     tracker = VisitTracker(store, gap_ms=60_000)
    ...     visits = [(v.visit_no, v.returning) for v in (tracker.observe("alice", t, "door") for t in (1000, 90_000))]
    ...     restarted = FaceGallery(GalleryConfig(dim=4, match_threshold=0.9), store=store)  # index rebuilt from the store
    ...     matched = restarted.match(np.array([0.96, 0.28, 0, 0], np.float32)).customer_id
    ...     answers.append((enrolled, visits, matched, store.counts(), restarted.delete("alice"), store.counts()))
    ...     store.close()
    >>> answers[0]
    ('alice', [(1, False), (2, True)], 'alice', {'customers': 1, 'embeddings': 1, 'visits': 2}, True, {'customers': 0, 'embeddings': 0, 'visits': 0})
    >>> answers[1] == answers[0]  # SQLite and PostgreSQL answer the same
    True
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import sqlalchemy as sa

import storelens.storage.dialects as dialects
from storelens.backends.face_index import (  # noqa: F401  (re-exported: the gallery's types)
    CustomerSummary,
    Enrollment,
    FaceGallery,
    GalleryConfig,
    GalleryStore,
    Match,
    PurgeResult,
    TrackDecision,
    Visit,
    VisitTracker,
)
from storelens.config import SiteConfig
from storelens.errors import ConfigError
from storelens.storage.base import SqlStore, open_migrated

log = logging.getLogger(__name__)


def customers_query(db: dialects.Database, customers: sa.Table, visits: sa.Table, *, returning: bool | None,
                    from_ts_ms: int | None, to_ts_ms: int | None, limit: int,
                    offset: int, exclude: Sequence[str] = ()) -> tuple[sa.TextClause, Callable[[Any], Sequence[str]]]:
    """The one-statement query of :meth:`SqlGalleryStore.list_customers`, and the decoder of its cameras
    (``exclude``: customer ids left out, e.g. staff enrolled as customers). ``returning``: the customer's latest
    visit is a second or later one; with a range (``from_ts_ms``/``to_ts_ms``), a visit of the range is (a customer
    first seen in March and back in April is a first-time customer of March); the summary columns cover all visits.

    Rows: ``(total, customer_id, created_ts_ms, visits, first_seen, last_seen, max_visit_no, cameras)``
    (a single row of ``NULL`` columns but the total for an empty page).
    """
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")
    where, having = [], ""
    params: dict[str, object] = {"limit": int(limit), "offset": int(offset)}
    ranged = from_ts_ms is not None or to_ts_ms is not None
    if ranged:
        cond = ["w.customer_id = c.customer_id"]
        if from_ts_ms is not None:
            cond.append("w.last_ts_ms >= :from_ts")
            params["from_ts"] = int(from_ts_ms)
        if to_ts_ms is not None:
            cond.append("w.first_ts_ms < :to_ts")
            params["to_ts"] = int(to_ts_ms)
        in_range = f"SELECT 1 FROM {visits.name} w WHERE {' AND '.join(cond)}"
        where.append(f"EXISTS ({in_range})")
        if returning is not None:  # returning in the range: a visit in it is a second or later one
            where.append(("" if returning else "NOT ") + f"EXISTS ({in_range} AND w.visit_no > 1)")
    left_out = sorted(set(exclude))
    if left_out:
        where.append("c.customer_id NOT IN :exclude")
    if returning is not None and not ranged:
        having = "HAVING COALESCE(MAX(v.visit_no), 0) " + ("> 1" if returning else "<= 1")
    cameras_sql, cameras = dialects.distinct_cameras_sql(db, visits.name, "p.customer_id")
    query = f"""
        WITH s AS (
            SELECT c.customer_id, c.created_ts_ms, COUNT(v.visit_no) AS n,
                   COALESCE(MAX(v.visit_no), 0) AS max_no,
                   COALESCE(MIN(v.first_ts_ms), c.created_ts_ms) AS first_seen,
                   COALESCE(MAX(v.last_ts_ms), c.created_ts_ms) AS last_seen
            FROM {customers.name} c LEFT JOIN {visits.name} v ON v.customer_id = c.customer_id
            {"WHERE " + " AND ".join(where) if where else ""}
            GROUP BY c.customer_id {having}
        ), page AS (
            SELECT * FROM s ORDER BY last_seen DESC, customer_id LIMIT :limit OFFSET :offset
        )
        SELECT t.total, p.customer_id, p.created_ts_ms, p.n, p.first_seen, p.last_seen, p.max_no, {cameras_sql}
        FROM (SELECT COUNT(*) AS total FROM s) t LEFT JOIN page p ON TRUE
        ORDER BY p.last_seen DESC, p.customer_id"""  # noqa: S608 (fixed fragments, bound values)
    stmt = sa.text(query).bindparams(**params)
    if left_out:
        stmt = stmt.bindparams(sa.bindparam("exclude", left_out, expanding=True))
    return stmt, cameras


class SqlGalleryStore(SqlStore):
    """:class:`~storelens.backends.face_index.GalleryStore` in SQLite or PostgreSQL, safe to share between threads.

    Args:
        target: SQLite file (``":memory:"`` for a throw-away one) or PostgreSQL
            libpq DSN / URL; the PostgreSQL tables go to the first schema of
            the connection's ``search_path`` (e.g. ``options=-c search_path=shop1``), unless ``schema`` is given.
        dim: embedding dimension; must match the one the tables were created with.
        embedder: model name of the embedder (``faces.embedder``'s ``model_name``); must match the one
            recorded with the tables (recorded if none is); ``None``: not checked or recorded.
        schema: PostgreSQL schema holding the tables (created if missing).
        connect_timeout_s: how long one connection attempt (SQLite: a lock) may take.
        batch_size: rows per round trip when :meth:`embeddings` and :meth:`customers`
            stream the tables (keyset pagination; the lock is released between batches).
        vacuum_after_erase: PostgreSQL: run ``VACUUM`` on the gallery tables
            after :meth:`delete_customer` and :meth:`purge_older_than` deleted
            something (see the module docstring).
        upgrade: ``False``: never migrate the tables (``storage.migrate: wait``; see :class:`SqlStore`).

    Raises:
        StorageError: the server cannot be reached or the tables cannot be created.
        ConfigError: the tables hold embeddings of another dimension or another embedder.
    """

    _what = "gallery store"

    def __init__(self, target: str | os.PathLike[str], dim: int = 128, *, embedder: str | None = None,
                 schema: str | None = None, connect_timeout_s: float = 10.0, batch_size: int = 10_000,
                 vacuum_after_erase: bool = True, upgrade: bool = True) -> None:
        if int(dim) < 1 or int(batch_size) < 1:
            raise ValueError("dim and batch_size must be >= 1")
        self.path = self.dsn = target = os.fspath(target)
        self.dim = int(dim)
        self.embedder = embedder
        self.batch_size = int(batch_size)
        self.vacuum_after_erase = vacuum_after_erase
        super().__init__(target, chain="gallery", schema=schema, connect_timeout_s=connect_timeout_s,
                         application_name="storelens-gallery", upgrade=upgrade, dim=self.dim)
        self.t = dialects.gallery_tables(self.db)
        meta = self.t.meta
        ins = dialects.insert(self.db, meta).values(key="dim", value=str(self.dim))
        self._write(lambda c: c.execute(ins.on_conflict_do_nothing(index_elements=[meta.c.key])))
        stored = self._rows(sa.select(meta.c.value).where(meta.c.key == "dim"))[0][0]
        if int(stored) != self.dim:
            self.close()
            where = f"in schema {schema!r} ({self.db.where})" if schema else self.db.where
            raise ConfigError(f"gallery store {where} holds {stored}-d embeddings, not {self.dim}-d")
        if embedder is not None:
            self._check_embedder(embedder, schema)
        visit = dialects.insert(self.db, self.t.visits)
        self._save_visit = visit.on_conflict_do_update(
            index_elements=list(self.t.visits.primary_key),
            set_={c: visit.excluded[c] for c in ("first_ts_ms", "last_ts_ms", "cameras")})
        decision = dialects.insert(self.db, self.t.track_decisions)
        self._save_decision = decision.on_conflict_do_update(
            index_elements=list(self.t.track_decisions.primary_key),
            set_={c: decision.excluded[c] for c in ("ts_ms", "decision", "customer_id", "staff_id", "output")})

    def _check_embedder(self, embedder: str, schema: str | None) -> None:
        """Record ``embedder`` if the tables have no embedder yet; :class:`ConfigError` if they have another."""
        meta = self.t.meta
        ins = dialects.insert(self.db, meta).values(key="embedder", value=str(embedder))
        self._write(lambda c: c.execute(ins.on_conflict_do_nothing(index_elements=[meta.c.key])))
        stored = self._rows(sa.select(meta.c.value).where(meta.c.key == "embedder"))[0][0]
        if stored != embedder:
            self.close()
            where = f"in schema {schema!r} ({self.db.where})" if schema else self.db.where
            raise ConfigError(
                f"gallery store {where} holds embeddings of the {stored!r} embedder, not {embedder!r} "
                "(faces.embedder): their vectors cannot be compared. Go back to that embedder, or give the new one "
                "a gallery of its own (faces.reid.sqlite_path, or another PostgreSQL schema)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.where!r}, dim={self.dim}, schema={self.schema!r})"

    def _blob(self, vector: np.ndarray) -> bytes:
        v = np.asarray(vector, "<f4").reshape(-1)
        if v.shape != (self.dim,):
            raise ValueError(f"expected a {self.dim}-d vector, got shape {np.shape(vector)}")
        return v.tobytes()

    def _erased(self, *, explicit: bool) -> None:
        """After a deletion: make the deleted bytes go away where the backend can (module docstring)."""
        if explicit and not self.vacuum_after_erase and self.db.postgres:
            return
        tables = (self.t.embeddings, self.t.visits, self.t.customers, self.t.track_decisions)
        self._run(lambda c: dialects.after_erase(self.db, c, tables, explicit=explicit))

    # -- writes ------------------------------------------------------------------------

    def add_customer(self, customer_id: str, created_ts_ms: int) -> None:
        """Insert a customer (an existing id is the driver's ``IntegrityError``)."""
        self.add_customers([(customer_id, created_ts_ms)])

    def add_customers(self, rows: Sequence[tuple[str, int]]) -> None:
        """Many ``(customer_id, created_ts_ms)`` in one transaction (insertion order as given)."""
        params = [{"customer_id": c, "created_ts_ms": int(t)} for c, t in rows]
        if not params:
            return
        ins = dialects.insert(self.db, self.t.customers)

        def insert(stmt: Any) -> Callable[[sa.Connection], None]:
            def run(conn: sa.Connection) -> None:
                with self._transaction(conn):
                    conn.execute(stmt, params)
            return run

        self._run(insert(ins), retry=insert(ins.on_conflict_do_nothing(index_elements=["customer_id"])))

    def add_embedding(self, customer_id: str, ts_ms: int, vector: np.ndarray) -> int:
        """Returns the new row's id."""
        return self.add_embeddings([(customer_id, ts_ms, vector)])[0]

    def add_embeddings(self, rows: Sequence[tuple[str, int, np.ndarray]]) -> list[int]:
        """Many ``(customer_id, ts_ms, vector)`` in one transaction; returns their ids in order."""
        data = [{"customer_id": cid, "ts_ms": int(ts), "vector": self._blob(vec)} for cid, ts, vec in rows]
        if not data:
            return []
        emb = self.t.embeddings
        ids: list[int] = []  # reserved by the first attempt, so a retry knows them

        def insert(conn: sa.Connection) -> list[int]:
            with self._transaction(conn):
                if not ids:
                    ids.extend(dialects.new_ids(self.db, conn, emb, len(data)))
                dialects.insert_many(self.db, conn, emb, [dict(d, id=i) for i, d in zip(ids, data)])
            return list(ids)

        def insert_unless_committed(conn: sa.Connection) -> list[int]:
            # All or nothing: if the first row is there, the lost attempt committed.
            if ids and conn.execute(sa.select(emb.c.id).where(emb.c.id == ids[0])).first() is not None:
                conn.rollback()
                return list(ids)
            if conn.in_transaction():
                conn.rollback()
            return insert(conn)

        return self._run(insert, retry=insert_unless_committed)

    def replace_embedding(self, row_id: int, ts_ms: int, vector: np.ndarray) -> bool:
        """Overwrite the embedding row ``row_id``; ``False`` when there is no such row (deleted meanwhile, e.g. by
        another process's retention purge): nothing was written."""
        emb = self.t.embeddings
        stmt = sa.update(emb).where(emb.c.id == int(row_id)).values(ts_ms=int(ts_ms), vector=self._blob(vector))
        return self._write(lambda c: c.execute(stmt).rowcount) > 0

    def remove_embeddings(self, row_ids: Sequence[int]) -> None:
        ids = [int(r) for r in row_ids]
        if ids:
            emb = self.t.embeddings
            self._write(lambda c: c.execute(sa.delete(emb).where(emb.c.id.in_(ids))))
            self._erased(explicit=False)

    def delete_customer(self, customer_id: str) -> bool:
        """Remove the customer, their embeddings and visits in one transaction; ``False`` if unknown. The tracks
        decided as the customer keep an ``erased`` decision without them (never decided again)."""
        t = self.t
        d = t.track_decisions.c

        def delete(conn: sa.Connection) -> tuple[int, int]:
            gone = sum(conn.execute(sa.delete(table).where(table.c.customer_id == customer_id)).rowcount
                       for table in (t.embeddings, t.visits))
            gone += conn.execute(sa.update(t.track_decisions).where(d.customer_id == customer_id).values(
                decision="erased", customer_id=None, output=None)).rowcount
            return gone, conn.execute(sa.delete(t.customers).where(t.customers.c.customer_id == customer_id)).rowcount

        with self._lock:
            rows, customers = self._write(delete)
            if rows or customers:
                self._erased(explicit=True)
        return customers > 0

    def purge_older_than(self, ts_ms: int) -> PurgeResult:
        """Drop embeddings and visits (by last sighting) older than ``ts_ms`` and customers left
        without embeddings (with their visits), in one transaction; also the track decisions taken before
        ``ts_ms`` and those of the customers dropped (not counted in the result)."""
        t, ts = self.t, int(ts_ms)
        e, v, c, d = t.embeddings.c, t.visits.c, t.customers.c, t.track_decisions.c

        def purge(conn: sa.Connection) -> PurgeResult:
            ne = conn.execute(sa.delete(t.embeddings).where(e.ts_ms < ts)).rowcount
            nv = conn.execute(sa.delete(t.visits).where(v.last_ts_ms < ts)).rowcount
            nv += conn.execute(sa.delete(t.visits).where(~sa.exists().where(e.customer_id == v.customer_id))).rowcount
            nc = conn.execute(sa.delete(t.customers).where(~sa.exists().where(e.customer_id == c.customer_id))).rowcount
            conn.execute(sa.delete(t.track_decisions).where(d.ts_ms < ts))
            conn.execute(sa.delete(t.track_decisions).where(
                d.customer_id.is_not(None), ~sa.exists().where(c.customer_id == d.customer_id)))
            return PurgeResult(ne, nc, nv)

        with self._lock:
            result = self._write(purge)
            if any(result):
                self._erased(explicit=True)
        return result

    def save_visit(self, visit: Visit) -> None:
        """Insert or update (same customer and visit number); ``KeyError`` for an unknown customer."""
        row = {"customer_id": visit.customer_id, "visit_no": int(visit.visit_no),
               "first_ts_ms": int(visit.first_ts_ms), "last_ts_ms": int(visit.last_ts_ms), "cameras": visit.cameras}

        def save(conn: sa.Connection) -> None:
            try:
                with self._transaction(conn):
                    conn.execute(self._save_visit, row)
            except sa.exc.IntegrityError as exc:
                raise KeyError(f"unknown customer {visit.customer_id!r}") from exc

        self._run(save)

    def save_track_decision(self, camera_id: str, track_id: int, decision: TrackDecision) -> None:
        """Insert or replace the reid decision of ``(camera_id, track_id)``."""
        row = {"camera_id": camera_id, "track_id": int(track_id), "ts_ms": int(decision.ts_ms),
               "decision": decision.decision, "customer_id": decision.customer_id, "staff_id": decision.staff_id,
               "output": None if decision.output is None else bytes(decision.output)}
        self._write(lambda c: c.execute(self._save_decision, row))

    def erase_track_decisions(self, tracks: dict[tuple[str, int], int]) -> int:
        """An ``erased`` decision for each ``(camera_id, track_id) -> ts_ms`` without a decision (a decision already
        stored stays: :meth:`delete_customer` turns the customer's into ``erased``): the tracks an erased customer
        was matched in that the store forgot (their stream ended), so a rerun of the same file never decides them
        again. ``ts_ms`` (the match's) dates the row for the retention purge; returns how many were written."""
        rows = [{"camera_id": str(cam), "track_id": int(tid), "ts_ms": int(ts), "decision": "erased",
                 "customer_id": None, "staff_id": None, "output": None} for (cam, tid), ts in sorted(tracks.items())]
        if not rows:
            return 0
        d = self.t.track_decisions
        ins = dialects.insert(self.db, d).on_conflict_do_nothing(index_elements=list(d.primary_key))
        return self._write(lambda c: sum(max(c.execute(ins, row).rowcount, 0) for row in rows))

    def forget_track_decisions(self, camera_id: str, *, keep_erased: bool = False) -> int:
        """Drop the camera's track decisions (its stream ended), but the ``erased`` ones with ``keep_erased``;
        returns how many."""
        d = self.t.track_decisions
        where = [d.c.camera_id == camera_id, *([d.c.decision != "erased"] if keep_erased else [])]
        return self._write(lambda c: c.execute(sa.delete(d).where(*where)).rowcount)

    # -- reads -------------------------------------------------------------------------

    def track_decision(self, camera_id: str, track_id: int) -> TrackDecision | None:
        """The stored reid decision of ``(camera_id, track_id)``; ``None``: not decided (or forgotten)."""
        d = self.t.track_decisions.c
        rows = self._rows(sa.select(d.decision, d.customer_id, d.staff_id, d.ts_ms, d.output).where(
            d.camera_id == camera_id, d.track_id == int(track_id)))
        if not rows:
            return None
        kind, customer_id, staff_id, ts_ms, output = rows[0]
        return TrackDecision(kind, customer_id, staff_id, int(ts_ms), None if output is None else bytes(output))

    def decided_tracks(self, customer_id: str) -> set[tuple[str, int]]:
        """``(camera_id, track_id)`` of the tracks decided as ``customer_id`` (also those whose match the history
        has not stored yet): what an erasure of the customer erases in the history too."""
        d = self.t.track_decisions.c
        return {(str(cam), int(tid)) for cam, tid in self._rows(
            sa.select(d.camera_id, d.track_id).where(d.customer_id == customer_id))}

    def customer_exists(self, customer_id: str) -> bool:
        c = self.t.customers.c
        return bool(self._rows(sa.select(sa.literal(1)).where(c.customer_id == customer_id)))

    def _pages(self, key: sa.ColumnElement[Any], *columns: sa.ColumnElement[Any]) -> Iterator[sa.Row[Any]]:
        """Rows ``(key, *columns)`` in key order, ``batch_size`` per query (keyset pagination)."""
        last = None
        while True:
            stmt = sa.select(key, *columns).order_by(key).limit(self.batch_size)
            rows = self._rows(stmt if last is None else stmt.where(key > last))
            yield from rows
            if len(rows) < self.batch_size:
                return
            last = rows[-1][0]

    def customers(self) -> Iterator[tuple[str, int]]:
        """``(customer_id, created_ts_ms)`` of every customer, in insertion order (fetched in batches)."""
        c = self.t.customers.c
        for _, cid, created in self._pages(dialects.insertion_order(self.db, self.t.customers),
                                           c.customer_id, c.created_ts_ms):
            yield cid, int(created)

    def embeddings(self) -> Iterator[tuple[int, str, int, np.ndarray]]:
        """``(row_id, customer_id, ts_ms, vector)`` of every embedding, oldest row first.

        Streamed in batches of ``batch_size`` rows (keyset pagination on the
        id), the lock taken per batch; rows committed during the iteration
        may or may not be included.
        """
        e = self.t.embeddings.c
        for rid, cid, ts, blob in self._pages(e.id, e.customer_id, e.ts_ms, e.vector):
            vec = np.frombuffer(blob, "<f4")
            if vec.shape != (self.dim,):
                raise ConfigError(f"gallery store {self.db.where}: embedding {rid} has {vec.size} values, "
                                  f"not {self.dim}")
            yield int(rid), cid, int(ts), vec

    def _visits(self, customer_id: str, newest_only: bool = False) -> list[Visit]:
        v = self.t.visits.c
        stmt = sa.select(v.customer_id, v.visit_no, v.first_ts_ms, v.last_ts_ms, v.cameras).where(
            v.customer_id == customer_id)
        stmt = stmt.order_by(v.visit_no.desc()).limit(1) if newest_only else stmt.order_by(v.visit_no)
        return [Visit(cid, int(no), int(first), int(last), cams) for cid, no, first, last, cams in self._rows(stmt)]

    def last_visit(self, customer_id: str) -> Visit | None:
        found = self._visits(customer_id, newest_only=True)
        return found[0] if found else None

    def visits(self, customer_id: str) -> list[Visit]:
        return self._visits(customer_id)

    def list_customers(self, *, returning: bool | None = None, from_ts_ms: int | None = None,
                       to_ts_ms: int | None = None, limit: int = 50, offset: int = 0,
                       exclude: Sequence[str] = ()) -> tuple[int, list[CustomerSummary]]:
        """See :meth:`GalleryStore.list_customers`: one SQL statement (aggregates, page and total); ``exclude``:
        customer ids left out (staff whose every matched track is a staff track)."""
        query, cameras = customers_query(self.db, self.t.customers, self.t.visits, returning=returning,
                                         from_ts_ms=from_ts_ms, to_ts_ms=to_ts_ms, limit=limit, offset=offset,
                                         exclude=exclude)
        rows = self._rows(query)
        total = int(rows[0][0]) if rows else 0
        return total, [
            CustomerSummary(cid, int(created), int(n), int(first), int(last), int(max_no) > 1,
                            tuple(sorted(cameras(cams))))
            for _, cid, created, n, first, last, max_no, cams in rows if cid is not None
        ]

    def counts(self) -> dict[str, int]:
        """Rows per table: ``{"customers": n, "embeddings": n, "visits": n}`` (for checks and health endpoints)."""
        tables = {"customers": self.t.customers, "embeddings": self.t.embeddings, "visits": self.t.visits}
        (row,) = self._rows(sa.select(*[sa.select(sa.func.count()).select_from(t).scalar_subquery()
                                        for t in tables.values()]))
        return {name: int(n) for name, n in zip(tables, row)}


#: The embedded mode's name of the store: ``SqliteGalleryStore(path, dim)``.
SqliteGalleryStore = SqlGalleryStore
#: The distributed mode's name of the store: ``PostgresGalleryStore(dsn, dim, schema=None)``.
PostgresGalleryStore = SqlGalleryStore


def open_gallery_store(config: SiteConfig) -> SqlGalleryStore:
    """The gallery store of ``config``: PostgreSQL at ``storage.dsn`` with ``storage.backend: postgres``,
    else the SQLite file :func:`storelens.stages.faces.gallery_sqlite_path`; :class:`ConfigError` when it holds
    embeddings of another dimension or another embedder than ``faces.embedder``."""
    from storelens.stages.faces import gallery_sqlite_path

    dim, embedder = config.faces.gallery.dim, config.faces.embedder.model_name
    target = config.storage.dsn if config.storage.backend == "postgres" else gallery_sqlite_path(config)
    return open_migrated(lambda upgrade: SqlGalleryStore(target, dim=dim, embedder=embedder, upgrade=upgrade),
                         config.storage.migrate)


def open_gallery_store_to_purge(config: SiteConfig, storage: Any) -> SqlGalleryStore | None:
    """The gallery store an earlier run left, for the retention purge of a process without the faces stage
    (``faces.enabled`` off); ``None`` when there is none, ``faces.reid.retention_days`` keeps it, or it
    cannot be opened (logged), and with ``faces.enabled``: the reid stage (the embedded run's, or the reid
    service with its own purge) keeps its gallery, whose index in memory another process's deletions would
    leave holding rows the store no longer has. SQLite: the file
    :func:`storelens.stages.faces.gallery_sqlite_path` exists; PostgreSQL: the gallery tables exist beside ``storage`` (the history store). Opened without recording
    an embedder, so a later run with faces on still records its own."""
    from storelens.stages.faces import gallery_sqlite_path

    if config.faces.enabled or config.faces.reid.retention_days is None:
        return None
    if config.storage.backend == "postgres":
        name = dialects.gallery_tables(storage.db).customers.name
        if not storage._read(lambda conn: sa.inspect(conn).has_table(name, schema=storage.schema)):
            return None
        target = config.storage.dsn
    else:
        target = gallery_sqlite_path(config)
        if target == ":memory:" or not os.path.exists(target):
            return None
    try:
        return open_migrated(lambda upgrade: SqlGalleryStore(target, dim=config.faces.gallery.dim, upgrade=upgrade),
                             config.storage.migrate)
    except ConfigError as exc:  # embeddings of another dimension: faces.gallery.dim was changed since
        log.warning("the face gallery left by an earlier run is not purged", extra={"error": str(exc)})
        return None


def open_gallery(config: SiteConfig) -> FaceGallery:
    """The gallery of ``config``: its store (:func:`open_gallery_store`), the index rebuilt from it, with the
    retention ``faces.reid.retention_days`` (a customer another process's purge dropped is no erased one)."""
    days = config.faces.reid.retention_days
    return FaceGallery(config.faces.gallery, store=open_gallery_store(config),
                       retention_ms=None if days is None else int(days * 86_400_000))
