"""The scheduled retention purge of personal data, run by the runner in both modes.

:class:`RetentionPurge` is a *chore* of :class:`~storelens.runtime.runner.RunnerCore`: the
core runs its due chores between messages (:meth:`RunnerCore.run_chores
<storelens.runtime.runner.RunnerCore.run_chores>`), called by the loop of
:class:`~storelens.runtime.runner.Runner` (embedded mode: the analytics stage's runner, the
thread that writes the history) and by a timer of the analytics service
(:mod:`storelens.runtime.analytics_app`, in its sink thread). Either way one purge function
runs, :meth:`SqlStorage.purge_expired <storelens.storage.history.SqlStorage.purge_expired>`,
every ``privacy.retention.every_s`` seconds (the first right away), and the rows it deleted
are counted per kind in ``storelens_privacy_purged_rows_total{kind}``. The same run keeps the audit log
(``audit_log``) to ``privacy.retention.audit_log_days`` by the wall clock (:meth:`SqlStorage.purge_audit_log
<storelens.storage.history.SqlStorage.purge_audit_log>`).

Given the face gallery (``gallery``), the same schedule first drops its embeddings and visits older
than ``faces.reid.retention_days`` (kinds ``gallery_embeddings``, ``gallery_customers``,
``gallery_visits``), even when ``privacy.retention.enabled`` is off: the reid stage also purges
while crops arrive, but a closed store, cameras down or a run without the faces stage send none.
The reid service runs a gallery-only purge on its own loop (``storage=None``).

The API process (``services/api``, ``api.workers`` processes, ``storelens demo`` once its pipeline has
ended) purges a SQLite history it serves when no other process does (:func:`api_retention`, run by a
:class:`ChoreThread` of the app): an embedded pipeline holds a shared lock on ``<storage.path>.purge.lock``
while it runs (:meth:`PurgeLease.hold_for_pipeline`), and of the API processes of a history one purges,
only while no pipeline holds that lock (:meth:`PurgeLease.api_turn`). The locks are the operating system's
(``flock``): a process that ends or dies releases them. With PostgreSQL (distributed mode) the analytics and
reid services purge, never the API. The chain's deployment (an API on PostgreSQL, no analytics) has users and
their audit log but no personal data: its ``chain-rollup`` service purges the audit log alone
(``RetentionPurge(audit_log_only=True)``, :func:`storelens.runtime.workers.chain_rollup_worker`).

"Now" is ``privacy.retention.clock``: the wall clock, or the newest stored frame (camera
time), or ``auto`` (wall when any camera is a live stream, else camera time; with live and file cameras, the
history rows of each file camera count back from its own newest frame, the face gallery, whose customers are
the site's, from the wall clock: a warning at the start names those cameras). The cameras are those in force at
each purge: the newest site version saved through ``/v1/site`` in the history store, else the site file's.

Example (see tests/test_privacy.py):
    >>> purge = RetentionPurge(storage, config, wall_ms=lambda: 1_767_225_600_000)  # doctest: +SKIP
    >>> core = RunnerCore(stage, sinks, chores=[purge])                              # doctest: +SKIP
    >>> core.run_chores()  # runs the purge when due                                  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from storelens.backends.video import is_live
from storelens.config import SiteConfig, with_site_update
from storelens.domain.purge_clock import CLOCK_AHEAD, host_clamped_ms

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


def purge_clock(config: SiteConfig, cameras: Sequence[Any] | None = None) -> str:
    """``"wall"`` or ``"camera"``: what ``privacy.retention.clock`` means for the site's cameras (``cameras``: those
    in force when a saved site version has others than the site file).

    Example:
        >>> from storelens.config import parse_config
        >>> purge_clock(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "clip.mp4"}]}))
        'camera'
        >>> purge_clock(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "rtsp://cam/1"}]}))
        'wall'
    """
    clock = config.privacy.retention.clock
    if clock != "auto":
        return clock
    return "wall" if any(is_live(c.source) for c in (config.cameras if cameras is None else cameras)) else "camera"


class RetentionPurge:
    """Deletes expired personal data from the history store every ``privacy.retention.every_s`` seconds.

    Args:
        storage: the history store (``purge_expired``, ``newest_frame_ms``; duck-typed); ``None``: the
            gallery only.
        config: the site (``privacy.retention``, the cameras for the ``auto`` clock, ``faces.reid.retention_days``).
        known_customer: whether a customer is still in the face gallery (embedded mode: the
            gallery store's ``customer_exists``); links to the others are deleted.
        wall_ms: the wall clock (ms since the epoch).
        monotonic: the scheduling clock (seconds).
        gallery: the face gallery (:class:`~storelens.backends.face_index.FaceGallery`, or its store alone:
            ``purge_older_than(ts_ms)``), purged to ``faces.reid.retention_days`` (not when that is ``None``).
        lease: the API process's :class:`PurgeLease`: a due purge runs only on its turn (else it is skipped,
            and asked again when next due); ``None``: always (the pipeline, the services).
    """

    name = "retention"

    def __init__(self, storage: Any, config: SiteConfig, known_customer: Callable[[str], bool] | None = None,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 monotonic: Callable[[], float] = time.monotonic, gallery: Any = None,
                 lease: PurgeLease | None = None, audit_log_only: bool = False) -> None:
        self.storage = storage
        #: Only the audit log is purged (the chain's roll-up database: users and their audit log, no personal data).
        self.audit_log_only = audit_log_only
        self.lease = lease
        self.cfg = config.privacy.retention
        self.config = config
        #: The site version whose cameras :attr:`clock` and :attr:`own_clock` were taken from (0: the site file's).
        self.site_version = 0
        self._set_clock(config.cameras)
        self._warned: tuple[str, ...] = ()
        self.known_customer = known_customer
        self.wall_ms = wall_ms
        self.monotonic = monotonic
        days = config.faces.reid.retention_days
        #: The face gallery purged with the history (``None``: none, or its embeddings are kept).
        self.gallery = gallery if days is not None and not audit_log_only else None
        self.gallery_ms = None if days is None else int(days * DAY_MS)
        self._next_s: float | None = None
        #: Rows deleted per kind by every purge so far.
        self.total: dict[str, int] = {}
        self.runs = 0
        #: Runs whose camera-clock "now" was over an hour ahead of the host's clock (they went by the host's).
        self.clock_ahead_runs = 0
        self._ahead = False

    def _set_clock(self, cameras: Sequence[Any]) -> None:
        self.clock = purge_clock(self.config, cameras)
        #: Under ``clock: auto`` with live cameras, the file cameras: their history rows count back from their own
        #: newest frame (their frames are dated from the file's start, maybe months behind the wall clock).
        self.own_clock = sorted(c.id for c in cameras if not is_live(c.source)) \
            if self.cfg.clock == "auto" and self.clock == "wall" and not self.audit_log_only else []

    def _follow_site_versions(self, metrics: Any) -> None:
        """Take :attr:`clock` and :attr:`own_clock` from the cameras in force: those of the newest site version
        saved through ``/v1/site`` (``storelens site import``) in the history store when there is one, else the
        site file's. A file camera added by a version beside live ones keeps its own clock; its rows are not
        dated against the wall clock."""
        site_update = getattr(self.storage, "site_update", None)
        if self.cfg.clock != "auto" or site_update is None:
            return
        try:
            update = site_update(self.config.store.id, after_version=self.site_version)
            if update is None:
                return
            cameras = with_site_update(self.config, update).cameras
        except Exception as exc:  # noqa: BLE001 (the cameras taken before stay; the next purge asks again)
            errors = getattr(metrics, "errors", None)
            if errors is not None:
                errors.labels("purge_site_version").inc()
            log.warning("retention purge: the cameras of the newest site version not read, the purge clock stays "
                        "that of %s", f"site version {self.site_version}" if self.site_version else "the site file",
                        extra={"error": repr(exc)})
            return
        self.site_version = update.version
        self._set_clock(cameras)

    @property
    def history(self) -> bool:
        """Whether the history store is purged (there is one and ``privacy.retention.enabled``)."""
        return self.storage is not None and self.cfg.enabled

    def due(self) -> bool:
        if self.audit_log_only:
            return (self.history and self.cfg.audit_log_days is not None
                    and (self._next_s is None or self.monotonic() >= self._next_s))
        return ((self.history or self.gallery is not None)
                and (self._next_s is None or self.monotonic() >= self._next_s))

    def now_ms(self) -> int | None:
        """The purge's "now": the wall clock, or the newest stored frame (``None``: nothing stored yet), never
        past the host's clock (:meth:`_camera_now_ms`)."""
        if self.clock == "wall":
            return self.wall_ms()
        return None if self.storage is None else self._camera_now_ms(self.storage.newest_frame_ms())

    def _camera_now_ms(self, ts_ms: int | None) -> int | None:
        """A camera-clock "now" (a stored frame's time) or the wall clock when it is more than an hour ahead of it
        (a camera clock or a file camera's ``start_ts_ms`` set wrong would purge every customer and every other
        camera's history; :func:`~storelens.domain.purge_clock.host_clamped_ms`): noted for :meth:`_purge`, which
        counts it (``clock_ahead``) once per run."""
        if ts_ms is None:
            return None
        now, ahead = host_clamped_ms(ts_ms, self.wall_ms())
        self._ahead |= ahead
        return now

    def run(self, metrics: Any = None) -> dict[str, int]:
        """Purge now (and schedule the next one): the gallery first (so the history's links to the customers
        it drops go in the same run), then the history; rows deleted per kind. With a :attr:`lease`, only on its
        turn (nothing deleted otherwise: another process purges this history)."""
        self._next_s = self.monotonic() + self.cfg.every_s
        if self.lease is None:
            return self._purge(metrics)
        with self.lease.api_turn() as mine:
            if not mine:
                log.debug("retention purge left to another process", extra={"lock": self.lease.path})
                return {}
            return self._purge(metrics)

    def _warn_mixed_clocks(self, metrics: Any) -> None:
        """Once: file cameras among live ones keep their history by their own clock, not the face gallery."""
        if not self.own_clock or self.gallery is None or set(self.own_clock) <= set(self._warned):
            return
        self._warned = tuple(sorted({*self._warned, *self.own_clock}))
        errors = getattr(metrics, "errors", None)
        if errors is not None:
            errors.labels("purge_clock_mixed").inc()
        log.warning("privacy.retention.clock auto with live and file cameras: the history of the file cameras %s "
                    "is purged by their own newest frame, the face gallery (faces.reid.retention_days) by the "
                    "wall clock: their customers older than that are dropped; set clock: camera or wall, or run "
                    "the files on a site of their own", ", ".join(self.own_clock),
                    extra={"cameras": self.own_clock})

    def _purge(self, metrics: Any) -> dict[str, int]:
        if not self.audit_log_only:
            self._follow_site_versions(metrics)
        self._warn_mixed_clocks(metrics)
        deleted: dict[str, int] = {}
        self._ahead = False
        now = None if self.audit_log_only else self.now_ms()  # None: nothing stored yet (the audit log only)
        if now is not None:
            camera_now = {cam: self._camera_now_ms(self.storage.newest_frame_ms(cam))
                          for cam in self.own_clock} if self.history else {}
            self._count_clock_ahead(metrics)
            if self.gallery is not None:
                res = self.gallery.purge_older_than(now - self.gallery_ms)
                deleted.update(gallery_embeddings=res.embeddings, gallery_customers=res.customers,
                               gallery_visits=res.visits)
            if self.history and self.own_clock:
                deleted.update(self.storage.purge_expired(self.cfg.days, now, self.known_customer,
                                                          camera_now_ms=camera_now))
            elif self.history:
                deleted.update(self.storage.purge_expired(self.cfg.days, now, self.known_customer))
        if self.history and self.cfg.audit_log_days is not None:  # after the personal data, which a failure here
            try:  # must not hold up; by the wall clock: the API writes it, not the cameras
                deleted["audit_log"] = self.storage.purge_audit_log(
                    int(self.wall_ms() - self.cfg.audit_log_days * DAY_MS))
            except Exception as exc:  # noqa: BLE001 (the next run tries again)
                errors = getattr(metrics, "errors", None)
                if errors is not None:
                    errors.labels("purge_audit_log").inc()
                log.warning("audit log purge failed", extra={"error": repr(exc)})
        return self._counted(deleted, metrics, now, ran=now is not None)

    def _count_clock_ahead(self, metrics: Any) -> None:
        """Once per run: a stored frame dated ahead of the host's clock; the purge went by the host's clock."""
        if not self._ahead:
            return
        self.clock_ahead_runs += 1
        errors = getattr(metrics, "errors", None)
        if errors is not None:
            errors.labels(CLOCK_AHEAD).inc()
        log.warning("retention purge: a stored frame is dated over an hour ahead of this host's clock (a camera "
                    "clock or a file camera's start_ts_ms set wrong): the purge goes by the host's clock instead",
                    extra={"wall_ms": self.wall_ms()})

    def _counted(self, deleted: dict[str, int], metrics: Any, now: int | None, ran: bool = True) -> dict[str, int]:
        self.runs += ran
        for kind, n in deleted.items():
            self.total[kind] = self.total.get(kind, 0) + n
            if n and metrics is not None:
                metrics.purged.labels(kind).inc(n)
        if any(deleted.values()):
            log.info("retention purge", extra={"now_ms": now, "clock": self.clock,
                                                **{k: v for k, v in deleted.items() if v}})
        return deleted


class PurgeLease:
    """Which process purges a SQLite history that several processes use: locks (``flock``) on files beside the
    database, released by the operating system when the process holding them ends or dies.

    * An embedded pipeline holds ``<db>.purge.lock`` shared while it runs (:meth:`hold_for_pipeline`) and purges
      on its own schedule (it also keeps its gallery's index in memory, which another process's deletions would
      leave behind).
    * An API process purges only on its turn (:meth:`api_turn`): the first API process of the history to ask keeps
      ``<db>.purge-api.lock`` until it ends (of ``api.workers`` processes one purges), and it purges while it holds
      ``<db>.purge.lock`` exclusively, i.e. while no pipeline runs; a pipeline that starts meanwhile waits for the
      end of that purge.

    The lock files stay (empty) beside the database.
    """

    def __init__(self, db_path: str) -> None:
        self.path = f"{db_path}.purge.lock"
        self.api_path = f"{db_path}.purge-api.lock"
        self._pipeline: int | None = None
        self._api: int | None = None

    @staticmethod
    def _lock(path: str, mode: int) -> int | None:
        """A descriptor of ``path`` holding the lock ``mode`` (``LOCK_NB`` in it: ``None`` when it is held)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def hold_for_pipeline(self) -> None:
        """An embedded pipeline runs on this history: no API process purges it until :meth:`close` (or the end of
        this process). Waits for an API's purge in progress."""
        if self._pipeline is not None:
            return
        fd = self._lock(self.path, fcntl.LOCK_SH | fcntl.LOCK_NB)
        if fd is None:
            log.info("waiting for the API's retention purge to end", extra={"lock": self.path})
            fd = self._lock(self.path, fcntl.LOCK_SH)
        self._pipeline = fd

    @contextlib.contextmanager
    def api_turn(self) -> Iterator[bool]:
        """Whether this API process purges now (held until the ``with`` block ends): it is the API process that
        purges this history and no pipeline runs on it."""
        if self._api is None:
            self._api = self._lock(self.api_path, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fd = None if self._api is None else self._lock(self.path, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        """Release the locks held (a pipeline's end; the API's shutdown; a lease no longer referenced)."""
        for name in ("_pipeline", "_api"):
            fd = getattr(self, name, None)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)

    __del__ = close


def purge_lease(storage: Any) -> PurgeLease | None:
    """The :class:`PurgeLease` of a history store: of its SQLite file; ``None`` for PostgreSQL, an in-memory
    database or none (no other process can use it)."""
    db = getattr(storage, "db", None)
    if db is None or db.postgres or db.memory or db.where.startswith("file:"):
        return None
    return PurgeLease(db.where)


def api_retention(config: SiteConfig, storage: Any, gallery: Any = None) -> RetentionPurge | None:
    """The API process's scheduled purge of the SQLite history it serves (``privacy.retention``) and of the face
    gallery store (``gallery``, ``faces.reid.retention_days``), on its turn (:class:`PurgeLease`: not while an
    embedded pipeline runs on the history, one API process of several); ``None`` with PostgreSQL (the analytics
    and reid services purge) or nothing to purge."""
    if config.storage.backend != "sqlite":
        return None
    purge = RetentionPurge(storage, config, gallery=gallery, lease=purge_lease(storage),
                           known_customer=gallery.customer_exists if gallery is not None else None)
    if not (purge.history or purge.gallery is not None):
        if purge.lease is not None:
            purge.lease.close()
        return None
    return purge


class ChoreThread:
    """Runs chores (``name``, ``due()``, ``run(metrics)``, e.g. a :class:`RetentionPurge`) in a thread of their own,
    looking every ``check_s`` seconds (at most the shortest ``every_s`` of a purge) whether one is due: the API
    process's, which has no runner loop. A failing chore is logged, never fatal (it runs again when next due)."""

    def __init__(self, chores: Sequence[Any], metrics: Any = None, check_s: float = 1.0) -> None:
        self.chores = list(chores)
        self.metrics = metrics
        periods = [c.cfg.every_s for c in self.chores if hasattr(c, "cfg")]
        self.check_s = min([check_s, *periods])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="chores", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            for chore in self.chores:
                if self._stop.is_set():
                    return
                try:
                    if chore.due():
                        chore.run(self.metrics)
                except Exception as exc:  # noqa: BLE001 (the next due run tries again)
                    log.warning("chore failed", extra={"chore": chore.name, "error": repr(exc)})
            if self._stop.wait(self.check_s):
                return

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the chore in hand (before the stores it uses are closed); release the chores' leases."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        for chore in self.chores:
            lease = getattr(chore, "lease", None)
            if lease is not None:
                lease.close()
