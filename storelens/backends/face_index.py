"""Returning-customer recognition: a FAISS index of face embeddings (the ``backends`` layer).

:class:`FaceGallery` holds one identity per customer with up to
``max_embeddings_per_customer`` L2-normalised embeddings each (different
views, lighting, hair styles). A query matches the customer owning the most
similar embedding (cosine similarity, i.e. inner product of unit vectors) if
that similarity reaches ``match_threshold``:

* :meth:`FaceGallery.match` -> ``(customer_id | None, similarity)``;
* :meth:`FaceGallery.search` -> the best ``k`` *customers* (each one's best
  embedding; the index is searched with more neighbours than ``k`` and the
  hits reduced by identity);
* :meth:`FaceGallery.enroll_or_match` -> ``(customer_id, similarity, is_new)``:
  the matched customer learns the embedding (from ``learn_threshold`` on), an
  unmatched face becomes a new customer; a match that beats the second most
  similar customer by less than ``match_margin`` abstains (``customer_id`` None);
* :meth:`FaceGallery.add`, :meth:`FaceGallery.delete` (right to erasure: every
  embedding and visit of the customer, in memory, in the index and in the
  store), :meth:`FaceGallery.purge_older_than` (retention).

Erasure by another process (the API deletes a customer's rows from the shared
store while a pipeline's gallery still holds the vectors): a gallery with a
store never matches a face to a customer the store no longer has. Before a
match is returned the store is asked (``customer_exists``); a customer it has lost is
dropped from this gallery's memory and index and the face is matched again
(another customer, or none). :meth:`FaceGallery.add` to such a customer drops it
the same way and raises :class:`CustomerErased`; so does
:meth:`FaceGallery.enroll_or_match` when the face's best match was found erased and
no other customer matches: a face of the erased person (maybe captured before the
request) never becomes a new customer. The API sends the erasure request after
deleting the rows: the dropped embeddings wait in memory for it
(:meth:`FaceGallery.take_erased`, the reid stage's erasure), at most
:data:`ERASED_KEPT_S` (:meth:`FaceGallery.expire_erased`) and for at most
:data:`ERASED_KEPT_MAX` customers.

Embeddings of a customer stay diverse and recent: a new one at least
``duplicate_similarity`` similar to one the customer already has *replaces*
it (same view, newer capture); otherwise it is added and, past the cap, the
customer's oldest embedding is dropped.

Index: exact search (``IndexFlatIP`` behind an ``IndexIDMap``) until the
gallery holds ``approximate_from`` embeddings, then an inverted file
(``IndexIVFFlat``, inner product, ``nlist`` ~ 4 sqrt(N) spherical k-means
centroids, ``ivf_nprobe`` lists visited per query), retrained when the gallery
has grown ``retrain_growth`` times since the last training. IVF rather than
HNSW: it builds much faster (the index is rebuilt from the store at every
start) and removes vectors in place (``remove_ids``), which erasure and
replacing a customer's embedding need; FAISS' HNSW cannot remove a vector
without rebuilding the graph. ``bench/bench_gallery.py`` has the numbers.
Labels in the index are row numbers of the gallery's own arrays; freed rows
are reused, so the index never needs compacting.

Persistence: any :class:`GalleryStore` (the SQL one is
:class:`storelens.storage.gallery.SqlGalleryStore`, on SQLite or PostgreSQL;
:func:`storelens.storage.open_gallery` builds index + store from a site config)
keeps customers, embeddings (float32 vectors, never face images) and visits;
a gallery given a store rebuilds its index from it at start.

:class:`VisitTracker` turns sightings into visits: a customer seen again after
more than ``gap_ms`` starts a new visit; a customer with a visit number above
1 is *returning*.

Thread safety: a gallery and a store each serialise their own calls with a lock.

Example (in memory only):
    >>> import numpy as np
    >>> gallery = FaceGallery(GalleryConfig(dim=4, match_threshold=0.9), id_factory=iter(["alice", "bob"]).__next__)
    >>> gallery.enroll_or_match(np.array([1, 0, 0, 0], np.float32), ts_ms=1000)
    Enrollment(customer_id='alice', similarity=0.0, is_new=True)
    >>> cid, sim, is_new = gallery.enroll_or_match(np.array([0.96, 0.28, 0, 0], np.float32), ts_ms=2000)
    >>> cid, round(sim, 2), is_new
    ('alice', 0.96, False)
    >>> cid, sim = gallery.match(np.array([0, 1, 0, 0], np.float32))
    >>> cid, round(sim, 2)
    (None, 0.28)
    >>> gallery.delete("alice"), gallery.match(np.array([1, 0, 0, 0], np.float32)).customer_id
    (True, None)
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, NamedTuple, Protocol, Sequence

import numpy as np

from storelens.config.faces import GalleryConfig  # noqa: F401  (defined there, re-exported)
from storelens.contract import topics
from storelens.domain.purge_clock import host_clamped_ms
from storelens.errors import ConfigError

log = logging.getLogger(__name__)

#: How long the embeddings of a customer found erased by another process wait in memory for that erasure's request
#: (:meth:`FaceGallery.take_erased`): the ``person-crops`` topic's retention (1 h), the longest a crop captured
#: before the erasure can still come; also how long the reid stage keeps an erasure's embeddings.
ERASED_KEPT_S = next(t.retention_ms for t in topics.TOPICS if t.name == topics.PERSON_CROPS) / 1000
#: At most this many customers' embeddings wait so (the first found erased go first).
ERASED_KEPT_MAX = 1_000


class Match(NamedTuple):
    customer_id: str | None
    similarity: float


class Enrollment(NamedTuple):
    customer_id: str | None  # None: abstained (``match_margin``)
    similarity: float
    is_new: bool


class CustomerErased(LookupError):
    """The customer is no longer in the gallery's store (erased by another process); it was dropped here too."""


class _CustomerPurged(CustomerErased):
    """The customer is no longer in the store because every embedding of theirs was past the retention (another
    process's retention purge, e.g. the analytics service's): forgotten here, not erased (:meth:`FaceGallery._gone`)."""


class PurgeResult(NamedTuple):
    embeddings: int
    customers: int
    visits: int


class TrackDecision(NamedTuple):
    """The reid stage's decision of one track, as a store keeps it (:meth:`GalleryStore.track_decision`)."""

    #: ``customer``, ``staff``, ``abstained`` (no decision can be taken) or ``erased`` (its person was erased).
    decision: str
    customer_id: str | None = None
    staff_id: str | None = None
    #: Camera time of the decision (ms).
    ts_ms: int = 0
    #: A customer's or staff member's decision: the message the stage published (``CustomerMatch`` /
    #: ``StaffTrack``, protobuf bytes), which a restarted stage publishes again (the same bytes, the same
    #: ``event_id``: idempotent downstream) in case the first one never left the process. ``None`` otherwise.
    output: bytes | None = None


@dataclass(frozen=True)
class Visit:
    """One visit of a customer: sightings no more than the tracker's gap apart."""

    customer_id: str
    visit_no: int  # 1, 2, ... per customer
    first_ts_ms: int
    last_ts_ms: int
    cameras: tuple[str, ...]  # sorted

    @property
    def returning(self) -> bool:
        """The customer had an earlier visit (that is still retained)."""
        return self.visit_no > 1


@dataclass(frozen=True)
class CustomerSummary:
    """One customer as listed by :meth:`GalleryStore.list_customers` (ids, times, visits; no biometrics).

    ``visits`` counts the customer's retained visits; ``first_seen_ts_ms`` /
    ``last_seen_ts_ms`` span them (both ``created_ts_ms`` for a customer with
    no visit yet); ``returning`` is :attr:`Visit.returning` of the latest
    visit (visit number above 1, so it stays true after retention dropped the
    first visit); ``cameras`` is every camera of the retained visits, sorted.
    """

    customer_id: str
    created_ts_ms: int
    visits: int
    first_seen_ts_ms: int
    last_seen_ts_ms: int
    returning: bool
    cameras: tuple[str, ...]  # sorted


# -- persistence ---------------------------------------------------------------------


class GalleryStore(Protocol):
    """Where a gallery keeps customers, embeddings and visits (never face images)."""

    def add_customer(self, customer_id: str, created_ts_ms: int) -> None: ...

    def add_embedding(self, customer_id: str, ts_ms: int, vector: np.ndarray) -> int:
        """Returns the new row's id."""
        ...

    def add_customers(self, rows: Sequence[tuple[str, int]]) -> None:
        """Many ``(customer_id, created_ts_ms)`` in one transaction."""
        ...

    def add_embeddings(self, rows: Sequence[tuple[str, int, np.ndarray]]) -> list[int]:
        """Many ``(customer_id, ts_ms, vector)`` in one transaction; returns their row ids."""
        ...

    def replace_embedding(self, row_id: int, ts_ms: int, vector: np.ndarray) -> bool:
        """``False`` when the row is gone (nothing written)."""
        ...

    def remove_embeddings(self, row_ids: Sequence[int]) -> None: ...

    def delete_customer(self, customer_id: str) -> bool:
        """Remove the customer, their embeddings and visits; ``False`` if unknown."""
        ...

    def purge_older_than(self, ts_ms: int) -> PurgeResult:
        """Remove embeddings and visits (by last sighting) older than ``ts_ms``, and customers left without
        embeddings."""
        ...

    def customers(self) -> Iterator[tuple[str, int]]:
        """``(customer_id, created_ts_ms)`` of every customer."""
        ...

    def embeddings(self) -> Iterator[tuple[int, str, int, np.ndarray]]:
        """``(row_id, customer_id, ts_ms, vector)`` of every embedding, oldest row first."""
        ...

    def last_visit(self, customer_id: str) -> Visit | None: ...

    def save_visit(self, visit: Visit) -> None:
        """Insert or update (same customer and visit number)."""
        ...

    def visits(self, customer_id: str) -> list[Visit]: ...

    def customer_exists(self, customer_id: str) -> bool: ...

    def list_customers(self, *, returning: bool | None = None, from_ts_ms: int | None = None,
                       to_ts_ms: int | None = None, limit: int = 50, offset: int = 0,
                       exclude: Sequence[str] = ()) -> tuple[int, list[CustomerSummary]]:
        """``(total matching, one page)`` of customers, most recently seen first (ties: by id).

        ``returning`` keeps only returning (``True``) or only first-time
        (``False``, including customers with no visit) customers;
        ``from_ts_ms`` / ``to_ts_ms`` keep customers with a visit overlapping
        ``[from_ts_ms, to_ts_ms)`` (a visit spans ``[first_ts_ms, last_ts_ms]``;
        a customer without visits never passes a time filter). With a range,
        ``returning`` is of the range: a visit overlapping it is a second or
        later one (visit number above 1); ``False``: none is. The summaries
        always cover all the customer's retained visits, not only those in the
        range. ``ValueError`` for a negative ``limit`` or ``offset``.
        """
        ...

    def counts(self) -> dict[str, int]:
        """Rows per table: ``{"customers": n, "embeddings": n, "visits": n}``."""
        ...

    # Optional (the reid stage asks with ``getattr``): each track's decision, so a restarted stage decides a track
    # once. ``delete_customer`` turns the customer's decisions into ``erased`` ones and ``purge_older_than`` drops
    # those older than ``ts_ms`` (and those of customers it purged).

    def save_track_decision(self, camera_id: str, track_id: int, decision: TrackDecision) -> None:
        """Insert or replace the decision of ``(camera_id, track_id)``."""
        ...

    def track_decision(self, camera_id: str, track_id: int) -> TrackDecision | None: ...

    def forget_track_decisions(self, camera_id: str, *, keep_erased: bool = False) -> int:
        """Drop the camera's decisions (its stream ended: its track ids never come back), but the ``erased`` ones
        with ``keep_erased``; returns how many."""
        ...

    def close(self) -> None: ...


# -- the gallery ---------------------------------------------------------------------


def _unit(embedding: np.ndarray, dim: int) -> np.ndarray:
    v = np.asarray(embedding, np.float32).reshape(-1)
    if v.shape != (dim,):
        raise ValueError(f"expected a {dim}-d embedding, got shape {np.shape(embedding)}")
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n < 1e-6:
        raise ValueError("embedding is zero or not finite")
    return v / n


def _default_id() -> str:
    return "cust-" + uuid.uuid4().hex[:20]


class FaceGallery:
    """Customers' face embeddings in a FAISS index; see the module docstring.

    Args:
        config: thresholds, caps and index settings.
        store: persistence; the index is rebuilt from it now. ``None`` keeps
            everything in memory only.
        id_factory: makes the id of a new customer in :meth:`enroll_or_match`
            (default ``cust-`` + 20 random hex digits: pseudonymous, not derived from the face).
        retention_ms: the store's retention (``faces.reid.retention_days``; ``None``: kept): a customer the store
            lost whose embeddings here are all older than this before the face at hand was purged by another
            process's retention (forgotten, the face enrolled as anyone's), not erased (:class:`CustomerErased`).
    """

    def __init__(self, config: GalleryConfig | None = None, store: GalleryStore | None = None,
                 id_factory: Callable[[], str] | None = None, retention_ms: int | None = None) -> None:
        self.cfg = config or GalleryConfig()
        self.retention_ms = retention_ms
        store_dim = getattr(store, "dim", self.cfg.dim)
        if store_dim != self.cfg.dim:
            raise ConfigError(f"gallery store holds {store_dim}-d embeddings, "
                              f"the gallery is configured for {self.cfg.dim}")
        self.store = store
        self._new_id = id_factory or _default_id
        self._lock = threading.RLock()
        #: customer found erased elsewhere -> (its dropped embeddings, monotonic time they go), oldest first
        self._erased: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self._reset()
        if store is not None:
            self.rebuild()

    # -- state ------------------------------------------------------------------------

    def _reset(self) -> None:
        d = self.cfg.dim
        self._vecs = np.zeros((0, d), np.float32)  # row -> vector (zeros when free)
        self._owner = np.zeros((0,), np.int64)  # row -> customer slot, -1 when free
        self._ts = np.zeros((0,), np.int64)
        self._rowid = np.zeros((0,), np.int64)  # row -> store row id (-1 without store)
        self._n = 0  # rows ever used (high-water mark)
        self._free: list[int] = []
        self._slot_of: dict[str, int] = {}
        self._cid_of: list[str | None] = []
        self._rows_of: dict[int, list[int]] = {}
        self._created: dict[str, int] = {}
        self._kind: Literal["flat", "ivf"] = "flat"
        self._trained_on = 0
        self._index = self._flat_index()

    @contextlib.contextmanager
    def _search_threads(self) -> Iterator[None]:
        want = self.cfg.search_threads
        if want is None:
            yield
            return
        import faiss

        before = faiss.omp_get_max_threads()
        if before == want:
            yield
            return
        faiss.omp_set_num_threads(want)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)

    def _flat_index(self):
        import faiss

        return faiss.IndexIDMap(faiss.IndexFlatIP(self.cfg.dim))

    def __len__(self) -> int:
        """Number of customers."""
        return len(self._slot_of)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self._slot_of

    @property
    def num_embeddings(self) -> int:
        return self._n - len(self._free)

    @property
    def index_kind(self) -> str:
        """``"flat"`` (exact) or ``"ivf"`` (approximate)."""
        return self._kind

    def customers(self) -> list[str]:
        return list(self._slot_of)

    def embeddings_of(self, customer_id: str) -> tuple[np.ndarray, np.ndarray]:
        """A customer's ``(vectors (n, D), ts_ms (n,))``, oldest first; ``KeyError`` if unknown."""
        with self._lock:
            rows = sorted(self._rows_of[self._slot_of[customer_id]], key=lambda r: self._ts[r])
            return self._vecs[rows].copy(), self._ts[rows].copy()

    def _grow(self, extra: int) -> None:
        need = self._n + extra
        if need <= len(self._owner):
            return
        cap = max(need, 2 * len(self._owner), 1024)
        d = self.cfg.dim
        for name, dtype, fill in (("_owner", np.int64, -1), ("_ts", np.int64, 0), ("_rowid", np.int64, -1)):
            arr = np.full((cap,), fill, dtype)
            arr[: self._n] = getattr(self, name)[: self._n]
            setattr(self, name, arr)
        vecs = np.zeros((cap, d), np.float32)
        vecs[: self._n] = self._vecs[: self._n]
        self._vecs = vecs

    def _take_rows(self, count: int) -> np.ndarray:
        reuse = [self._free.pop() for _ in range(min(count, len(self._free)))]
        fresh = count - len(reuse)
        self._grow(fresh)
        rows = np.array(reuse + list(range(self._n, self._n + fresh)), np.int64)
        self._n += fresh
        return rows

    def _slot(self, customer_id: str, created_ts_ms: int, persist: bool = True) -> int:
        slot = self._slot_of.get(customer_id)
        if slot is None:
            if not isinstance(customer_id, str) or not customer_id:
                raise ValueError("customer_id must be a non-empty string")
            if persist and self.store is not None:
                self.store.add_customer(customer_id, created_ts_ms)
            slot = len(self._cid_of)
            self._cid_of.append(customer_id)
            self._slot_of[customer_id] = slot
            self._rows_of[slot] = []
            self._created[customer_id] = int(created_ts_ms)
        return slot

    def _free_rows(self, rows: Sequence[int]) -> None:
        if not len(rows):
            return
        rows = np.asarray(rows, np.int64)
        self._index.remove_ids(rows)
        self._vecs[rows] = 0.0  # the biometric vector is gone from memory too
        self._owner[rows] = -1
        self._rowid[rows] = -1
        self._free.extend(int(r) for r in rows)

    # -- index --------------------------------------------------------------------------

    def _nlist(self, n: int) -> int:
        if self.cfg.ivf_nlist is not None:
            return max(1, min(self.cfg.ivf_nlist, n // 39 or 1))
        return max(1, min(int(4 * math.sqrt(n)), n // 39))

    def _build_index(self) -> None:
        """Make the index for the current rows: exact below ``approximate_from``, else IVF."""
        import faiss

        rows = np.flatnonzero(self._owner[: self._n] >= 0).astype(np.int64)
        x = np.ascontiguousarray(self._vecs[rows])
        if len(rows) < self.cfg.approximate_from:
            index = self._flat_index()
            kind = "flat"
        else:
            nlist = self._nlist(len(rows))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.cfg.dim), self.cfg.dim, nlist,
                                       faiss.METRIC_INNER_PRODUCT)
            sample = x
            if len(x) > 64 * nlist:
                pick = np.random.default_rng(0).choice(len(x), 64 * nlist, replace=False)
                sample = x[np.sort(pick)]
            index.train(sample)
            index.nprobe = min(self.cfg.ivf_nprobe, nlist)
            kind = "ivf"
            self._trained_on = len(rows)
            log.info("face gallery: IVF index with %d lists trained on %d of %d embeddings",
                     nlist, len(sample), len(rows))
        if len(rows):
            index.add_with_ids(x, rows)
        self._index, self._kind = index, kind

    def _maybe_reindex(self) -> None:
        n = self.num_embeddings
        if self._kind == "flat" and n >= self.cfg.approximate_from:
            self._build_index()
        elif self._kind == "ivf" and n >= self.cfg.retrain_growth * self._trained_on:
            self._build_index()

    # -- writes -------------------------------------------------------------------------

    def add(self, customer_id: str, embedding: np.ndarray, ts_ms: int) -> None:
        """Add an embedding to a customer (created if unknown, ``created_ts_ms = ts_ms``).

        A near-duplicate (``duplicate_similarity``) of one of the customer's
        embeddings replaces it; past ``max_embeddings_per_customer`` the oldest is dropped.
        """
        v = _unit(embedding, self.cfg.dim)
        with self._lock:
            slot = self._slot(customer_id, ts_ms)
            rows = self._rows_of[slot]
            if rows:
                sims = self._vecs[rows] @ v
                j = int(np.argmax(sims))
                if sims[j] >= self.cfg.duplicate_similarity:
                    r = rows[j]
                    if self.store is not None:
                        # an UPDATE of an erased customer's row changes nothing and says nothing: ask first
                        if self._erased_elsewhere(customer_id):
                            raise self._gone(customer_id, ts_ms)
                        if not self.store.replace_embedding(int(self._rowid[r]), ts_ms, v):
                            # the row was deleted behind the index (another process's purge): stored anew
                            self._rowid[r] = self._store_embedding(customer_id, ts_ms, v)
                    self._index.remove_ids(np.array([r], np.int64))
                    self._vecs[r], self._ts[r] = v, ts_ms
                    self._index.add_with_ids(v[None], np.array([r], np.int64))
                    return
            rowid = -1 if self.store is None else self._store_embedding(customer_id, ts_ms, v)
            (r,) = self._take_rows(1)
            self._vecs[r], self._owner[r], self._ts[r], self._rowid[r] = v, slot, ts_ms, rowid
            self._index.add_with_ids(v[None], np.array([r], np.int64))
            rows.append(int(r))
            if len(rows) > self.cfg.max_embeddings_per_customer:
                oldest = min(rows, key=lambda q: (self._ts[q], q))
                if self.store is not None:
                    self.store.remove_embeddings([int(self._rowid[oldest])])
                rows.remove(oldest)
                self._free_rows([oldest])
            self._maybe_reindex()

    def _store_embedding(self, customer_id: str, ts_ms: int, v: np.ndarray) -> int:
        """A new embedding row in the store (under the lock); :class:`CustomerErased` when the customer row is gone."""
        try:
            return self.store.add_embedding(customer_id, ts_ms, v)
        except Exception as exc:  # the store's foreign key: the customer row is gone
            if not self._erased_elsewhere(customer_id, default=False):
                raise
            raise self._gone(customer_id, ts_ms) from exc

    def bulk_load(self, customer_ids: Sequence[str], vectors: np.ndarray, ts_ms: Sequence[int] | np.ndarray) -> None:
        """Add many embeddings at once, as they are (no near-duplicate or cap policy).

        For imports and benchmarks; persisted if the gallery has a store. The
        index is rebuilt once at the end.
        """
        x = np.asarray(vectors, np.float32)
        if x.ndim != 2 or x.shape[1] != self.cfg.dim or len(x) != len(customer_ids) or len(x) != len(ts_ms):
            raise ValueError("bulk_load needs N customer ids, N timestamps and (N, dim) vectors")
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        ts = np.asarray(ts_ms, np.int64)
        with self._lock:
            new = {}
            for cid, t in zip(customer_ids, ts):
                if cid not in self._slot_of and cid not in new:
                    new[cid] = int(t)
            if self.store is not None:
                self.store.add_customers(list(new.items()))
            for cid, t in new.items():
                self._slot(cid, t, persist=False)
            rowids = (self.store.add_embeddings(list(zip(customer_ids, ts.tolist(), x)))
                      if self.store is not None else [-1] * len(x))
            self._ingest(customer_ids, x, ts, np.asarray(rowids, np.int64))
            self._build_index()

    def _ingest(self, customer_ids: Sequence[str], x: np.ndarray, ts: np.ndarray, rowids: np.ndarray) -> None:
        """Put rows into the arrays (not the index)."""
        rows = self._take_rows(len(x))
        slots = np.fromiter((self._slot_of[c] for c in customer_ids), np.int64, len(x))
        self._vecs[rows], self._owner[rows], self._ts[rows], self._rowid[rows] = x, slots, ts, rowids
        for r, s in zip(rows.tolist(), slots.tolist()):
            self._rows_of[s].append(r)

    def enroll_or_match(self, embedding: np.ndarray, ts_ms: int, learn: bool = True) -> Enrollment:
        """Match a face; if it matches, the customer learns it, else it becomes a new customer.

        ``similarity`` is the best similarity to an existing customer (0.0 for
        an empty gallery); ``is_new`` tells whether a customer was created. A match
        within ``match_margin`` of the second most similar customer abstains:
        ``customer_id`` is ``None`` (nothing matched, learnt or created). The matched
        customer learns the face at or above ``learn_threshold`` only, and never with
        ``learn=False`` (a face the caller does not trust to be one person).

        Raises :class:`CustomerErased` (nothing created) when the face's best match was found erased by another
        process meanwhile and no other customer matches: the erased person's face is no new customer.
        """
        v = _unit(embedding, self.cfg.dim)
        learn_at = self.cfg.learn_at if learn else math.inf
        erased: str | None = None
        with self._lock:
            while True:  # each round that finds the customer erased elsewhere drops one: it ends
                [(cid, sim)], [gone] = self._match_checked(v[None], ts_ms)
                erased = erased or gone
                if cid is None:
                    break
                if self.cfg.match_margin > 0 and sim - self._runner_up(v, cid) < self.cfg.match_margin:
                    return Enrollment(None, sim, False)  # too close a call between two customers: abstain
                if sim >= learn_at:
                    try:
                        self.add(cid, v, ts_ms)
                    except _CustomerPurged:  # past retention: forgotten, the face matched again as anyone's
                        continue
                    except CustomerErased:
                        erased = erased or cid
                        continue
                return Enrollment(cid, sim, False)
            if erased is not None:
                raise CustomerErased(erased)
            for _ in range(100):
                new_id = self._new_id()
                if new_id not in self._slot_of:
                    break
            else:
                raise RuntimeError("id_factory keeps returning existing customer ids")
            self.add(new_id, v, ts_ms)
            return Enrollment(new_id, sim, True)

    def _runner_up(self, v: np.ndarray, best: str) -> float:
        """Similarity of the most similar customer other than ``best`` (-1.0: none)."""
        return next((m.similarity for m in self.search(v, k=2) if m.customer_id != best), -1.0)

    def delete(self, customer_id: str) -> bool:
        """Right to erasure: forget a customer, every embedding and every visit.

        Removed from the index, zeroed in memory, deleted from the store (its
        pages overwritten). ``False`` if the customer is unknown here and in the store.
        """
        with self._lock:
            in_store = self.store.delete_customer(customer_id) if self.store is not None else False
            self._discard_erased(customer_id)
            return self._forget(customer_id) or in_store

    def _forget(self, customer_id: str) -> bool:
        """Drop a customer from memory and the index only (the store is not touched); ``False`` if unknown here."""
        slot = self._slot_of.pop(customer_id, None)
        if slot is None:
            return False
        self._free_rows(self._rows_of.pop(slot))
        self._cid_of[slot] = None
        self._created.pop(customer_id, None)
        return True

    def _gone(self, customer_id: str, now_ms: int | None) -> CustomerErased:
        """The store lost ``customer_id``: purged (every embedding here older than :attr:`retention_ms` before
        ``now_ms``: forgotten, :class:`_CustomerPurged`) or erased by another process (:meth:`_drop_erased`,
        :class:`CustomerErased`); the exception to raise. ``now_ms`` (a crop's time) never goes past the host's
        clock (:func:`~storelens.domain.purge_clock.host_clamped_ms`): a crop dated ahead makes no erased customer
        one "purged"."""
        slot = self._slot_of.get(customer_id)
        if slot is not None and self.retention_ms is not None and now_ms is not None:
            now_ms = host_clamped_ms(now_ms)[0]
            ts = self._ts[self._rows_of[slot]]
            if len(ts) and int(ts.max()) < int(now_ms) - int(self.retention_ms):
                log.info("face gallery: customer purged by another process's retention, forgotten",
                         extra={"customer": customer_id})
                self._forget(customer_id)
                return _CustomerPurged(customer_id)
        self._drop_erased(customer_id)
        return CustomerErased(customer_id)

    def _drop_erased(self, customer_id: str) -> None:
        """Forget a customer the store has lost (erased by another process); its embeddings wait for the erasure
        request (:meth:`take_erased`)."""
        slot = self._slot_of.get(customer_id)
        if slot is not None:
            self.expire_erased()
            self._discard_erased(customer_id)
            self._erased[customer_id] = (self._vecs[self._rows_of[slot]].copy(), time.monotonic() + ERASED_KEPT_S)
            while len(self._erased) > ERASED_KEPT_MAX:
                self._erased.popitem(last=False)[1][0].fill(0.0)
        self._forget(customer_id)

    def _discard_erased(self, customer_id: str) -> None:
        got = self._erased.pop(customer_id, None)
        if got is not None:
            got[0].fill(0.0)  # the biometric vectors are gone from memory too

    def take_erased(self, customer_id: str) -> np.ndarray | None:
        """The embeddings (rows) this gallery dropped when it found ``customer_id`` erased by another process
        (the API deletes the rows, then sends the request), for the erasure request (the reid stage's
        :meth:`~storelens.stages.faces.ReidStage.erase`); they leave the gallery now. ``None``: none kept here."""
        with self._lock:
            self.expire_erased()
            got = self._erased.pop(customer_id, None)
            return None if got is None else got[0]

    def expire_erased(self) -> None:
        """Drop the embeddings of customers found erased elsewhere more than :data:`ERASED_KEPT_S` ago."""
        with self._lock:
            now = time.monotonic()
            for cid in [c for c, (_, until) in self._erased.items() if until <= now]:
                self._discard_erased(cid)

    def _erased_elsewhere(self, customer_id: str, default: bool | None = None) -> bool:
        """``True`` when the store no longer has the customer (another process erased it).

        ``False`` without a store or a store that cannot tell; ``default`` (if given) when asking fails.
        """
        exists = getattr(self.store, "customer_exists", None)
        if exists is None:
            return False
        try:
            gone = not exists(customer_id)
        except Exception:
            if default is None:
                raise
            return default
        if gone:
            log.warning("face gallery: customer gone from the store (erased, or purged, by another process), dropped "
                        "from the index",
                        extra={"customer": customer_id})
        return gone

    def purge_older_than(self, ts_ms: int) -> PurgeResult:
        """Retention: drop embeddings captured before ``ts_ms`` and visits last seen before it.

        Customers left without embeddings are deleted with all their visits.
        Counts are the store's when there is one (they include visits).
        """
        with self._lock:
            old = np.flatnonzero((self._owner[: self._n] >= 0) & (self._ts[: self._n] < ts_ms))
            gone = []
            for r in old.tolist():
                self._rows_of[int(self._owner[r])].remove(r)
            owners = set(self._owner[old].tolist())
            self._free_rows(old)
            for slot in owners:
                if not self._rows_of[slot]:
                    cid = self._cid_of[slot]
                    gone.append(cid)
                    del self._slot_of[cid], self._rows_of[slot]
                    self._created.pop(cid, None)
                    self._cid_of[slot] = None
            if self.store is not None:
                return self.store.purge_older_than(ts_ms)
            return PurgeResult(len(old), len(gone), 0)

    def rebuild(self) -> None:
        """Reload everything from the store (if any) and build a fresh index.

        Without a store, only the index is rebuilt (and free rows compacted).
        """
        with self._lock:
            if self.store is None:
                rows = np.flatnonzero(self._owner[: self._n] >= 0)
                cids = [self._cid_of[s] for s in self._owner[rows]]
                x, ts, created = self._vecs[rows].copy(), self._ts[rows].copy(), dict(self._created)
                rowids = self._rowid[rows].copy()
            else:
                created = dict(self.store.customers())
                data = list(self.store.embeddings())
                rowids = np.fromiter((d[0] for d in data), np.int64, len(data))
                cids = [d[1] for d in data]
                ts = np.fromiter((d[2] for d in data), np.int64, len(data))
                x = (np.stack([d[3] for d in data]).astype(np.float32) if data
                     else np.zeros((0, self.cfg.dim), np.float32))
            self._reset()
            for cid, t in created.items():
                self._slot(cid, t, persist=False)
            if len(x):
                self._ingest(cids, x, ts, rowids)
            self._build_index()
            log.info("face gallery: %d customers, %d embeddings, %s index", len(self), self.num_embeddings, self._kind)

    # -- reads --------------------------------------------------------------------------

    def match(self, embedding: np.ndarray) -> Match:
        """The customer owning the most similar embedding, if at least ``match_threshold``.

        Returns ``(customer_id, similarity)``, or ``(None, best similarity)``
        below the threshold (``(None, 0.0)`` for an empty gallery).
        """
        return self.match_many(_unit(embedding, self.cfg.dim)[None])[0]

    def match_many(self, embeddings: np.ndarray) -> list[Match]:
        """:meth:`match` for (N, D) embeddings in one index search (e.g. all faces of a frame)."""
        q = np.asarray(embeddings, np.float32).reshape(-1, self.cfg.dim)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        with self._lock:
            return self._match_checked(q)[0]

    def _match_checked(self, q: np.ndarray, now_ms: int | None = None) -> tuple[list[Match], list[str | None]]:
        """:meth:`match_many` of unit rows ``q``, and per row the customer its best match was found erased
        elsewhere (dropped) before the answer, or ``None``; one purged by another process's retention as of
        ``now_ms`` (:meth:`_gone`) is forgotten and not reported."""
        out = self._best(q)
        erased: list[str | None] = [None] * len(out)
        if self.store is None:
            return out, erased
        while True:  # a matched customer the store lost (erased elsewhere) is dropped, its faces matched again
            # a store that cannot answer (down) does not stop matching: the index decides, as before
            gone = {c for c in {x.customer_id for x in out} - {None}
                    if self._erased_elsewhere(c, default=False)}
            if not gone:
                return out, erased
            purged = {c for c in gone if isinstance(self._gone(c, now_ms), _CustomerPurged)}
            again = [i for i, x in enumerate(out) if x.customer_id in gone]
            for i in again:
                if out[i].customer_id not in purged:
                    erased[i] = erased[i] or out[i].customer_id
            for i, x in zip(again, self._best(q[again])):
                out[i] = x

    def _best(self, q: np.ndarray) -> list[Match]:
        """The nearest customer of each unit row of ``q`` (``None`` below the threshold), from the index only."""
        if self.num_embeddings == 0:
            return [Match(None, 0.0) for _ in range(len(q))]
        with self._search_threads():
            sims, labels = self._index.search(q, 1)
        out = []
        for s, r in zip(sims[:, 0].tolist(), labels[:, 0].tolist()):
            if r < 0:
                out.append(Match(None, 0.0))
                continue
            cid = self._cid_of[int(self._owner[r])]
            out.append(Match(cid if s >= self.cfg.match_threshold else None, float(s)))
        return out

    def search(self, embedding: np.ndarray, k: int = 5) -> list[Match]:
        """The ``k`` most similar customers (best embedding each), most similar first, any similarity."""
        q = _unit(embedding, self.cfg.dim)[None]
        with self._lock:
            total = self.num_embeddings
            if total == 0 or k <= 0:
                return []
            fetch = min(max(self.cfg.search_k, k), total)
            while True:
                with self._search_threads():
                    sims, labels = self._index.search(q, fetch)
                best: dict[str, float] = {}
                for s, r in zip(sims[0].tolist(), labels[0].tolist()):
                    if r < 0:
                        continue
                    cid = self._cid_of[int(self._owner[r])]
                    if cid is not None and cid not in best:
                        best[cid] = float(s)
                if len(best) >= k or fetch >= total:
                    break
                fetch = min(fetch * 4, total)
            return [Match(c, s) for c, s in list(best.items())[:k]]


# -- visits ---------------------------------------------------------------------------


class VisitTracker:
    """Sightings of known customers -> visits, kept in the gallery's store.

    A sighting more than ``gap_ms`` after the customer's last one starts a new
    visit (visit number + 1); otherwise it extends the current visit. A
    customer is *returning* from their second visit on. Visits are read from
    and written to the store on every call (nothing cached), so deleting or
    purging through the gallery is immediately reflected. Sightings should
    arrive roughly in time order: a late one within the gap joins the current visit
    (example: :mod:`storelens.storage.gallery`). A sighting may span a time range
    (:meth:`record`'s ``since_ts_ms``: one track seen from its first crop to its decision).
    """

    def __init__(self, store: GalleryStore, gap_ms: int = 30 * 60 * 1000) -> None:
        if gap_ms < 0:
            raise ValueError("gap_ms must be >= 0")
        self.store = store
        self.gap_ms = int(gap_ms)

    def observe(self, customer_id: str, ts_ms: int, camera_id: str | None = None) -> Visit:
        """Record a sighting; returns the visit it belongs to (``KeyError`` for an unknown customer)."""
        return self.record(customer_id, ts_ms, camera_id)[0]

    def record(self, customer_id: str, ts_ms: int, camera_id: str | None = None,
               since_ts_ms: int | None = None) -> tuple[Visit, bool]:
        """:meth:`observe`, and whether the sighting started the visit (a new visit number: a second track of a
        visit in progress, on another camera or after an id switch, is the same visit, not a second return).
        ``since_ts_ms``: the customer was seen all along from then to ``ts_ms`` (one track's crops): the visit is
        continued, or started, from then, but never from before the end of the customer's visit before the one it
        joins: visits never overlap. (A range that bridges the gap between two visits does not merge them: the
        later one's number, and ``returning``, went out with the decisions that started it, ``CustomerMatch.visit_no``,
        kept in the history; renumbering would leave those naming a visit that is no more.)"""
        last = self.store.last_visit(customer_id)
        cams = {camera_id} if camera_id else set()
        start = int(ts_ms) if since_ts_ms is None else min(int(since_ts_ms), int(ts_ms))
        if last is not None and last.visit_no > 1 and start < last.first_ts_ms:
            earlier = [v.last_ts_ms for v in self.store.visits(customer_id) if v.visit_no < last.visit_no]
            start = max(start, *earlier) if earlier else start
        if last is None or start - last.last_ts_ms > self.gap_ms:
            visit = Visit(customer_id, (last.visit_no + 1) if last else 1, start, int(ts_ms), tuple(sorted(cams)))
        else:
            visit = Visit(customer_id, last.visit_no, min(last.first_ts_ms, start),
                          max(last.last_ts_ms, int(ts_ms)), tuple(sorted(set(last.cameras) | cams)))
        if visit != last:
            self.store.save_visit(visit)
        return visit, last is None or visit.visit_no != last.visit_no

    def visits(self, customer_id: str) -> list[Visit]:
        return self.store.visits(customer_id)

    def is_returning(self, customer_id: str) -> bool:
        last = self.store.last_visit(customer_id)
        return last is not None and last.returning
