"""The scheduled retention purge of personal data, run by the runner in both modes.

:class:`RetentionPurge` is a *chore* of :class:`~storelens.runtime.runner.RunnerCore`: the
core runs its due chores between messages (:meth:`RunnerCore.run_chores
<storelens.runtime.runner.RunnerCore.run_chores>`), called by the loop of
:class:`~storelens.runtime.runner.Runner` (embedded mode: the analytics stage's runner, the
thread that writes the history) and by a timer of the analytics service
(:mod:`storelens.runtime.analytics_app`, in its sink thread). Either way one purge function
runs, :meth:`SqlStorage.purge_expired <storelens.storage.history.SqlStorage.purge_expired>`,
every ``privacy.retention.every_s`` seconds (the first right away), and the rows it deleted
are counted per kind in ``storelens_privacy_purged_rows_total{kind}``.

Given the face gallery (``gallery``), the same schedule first drops its embeddings and visits older
than ``faces.reid.retention_days`` (kinds ``gallery_embeddings``, ``gallery_customers``,
``gallery_visits``), even when ``privacy.retention.enabled`` is off: the reid stage also purges
while crops arrive, but a closed store, cameras down or a run without the faces stage send none.
The reid service runs a gallery-only purge on its own loop (``storage=None``).

"Now" is ``privacy.retention.clock``: the wall clock, or the newest stored frame (camera
time), or ``auto`` (wall when any camera is a live stream, else camera time).

Example (see tests/test_privacy.py):
    >>> purge = RetentionPurge(storage, config, wall_ms=lambda: 1_767_225_600_000)  # doctest: +SKIP
    >>> core = RunnerCore(stage, sinks, chores=[purge])                              # doctest: +SKIP
    >>> core.run_chores()  # runs the purge when due                                  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from storelens.backends.video import is_live
from storelens.config import SiteConfig

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


def purge_clock(config: SiteConfig) -> str:
    """``"wall"`` or ``"camera"``: what ``privacy.retention.clock`` means for the site's cameras.

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
    return "wall" if any(is_live(c.source) for c in config.cameras) else "camera"


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
    """

    name = "retention"

    def __init__(self, storage: Any, config: SiteConfig, known_customer: Callable[[str], bool] | None = None,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 monotonic: Callable[[], float] = time.monotonic, gallery: Any = None) -> None:
        self.storage = storage
        self.cfg = config.privacy.retention
        self.clock = purge_clock(config)
        self.known_customer = known_customer
        self.wall_ms = wall_ms
        self.monotonic = monotonic
        days = config.faces.reid.retention_days
        #: The face gallery purged with the history (``None``: none, or its embeddings are kept).
        self.gallery = gallery if days is not None else None
        self.gallery_ms = None if days is None else int(days * DAY_MS)
        self._next_s: float | None = None
        #: Rows deleted per kind by every purge so far.
        self.total: dict[str, int] = {}
        self.runs = 0

    @property
    def history(self) -> bool:
        """Whether the history store is purged (there is one and ``privacy.retention.enabled``)."""
        return self.storage is not None and self.cfg.enabled

    def due(self) -> bool:
        return ((self.history or self.gallery is not None)
                and (self._next_s is None or self.monotonic() >= self._next_s))

    def now_ms(self) -> int | None:
        """The purge's "now": the wall clock, or the newest stored frame (``None``: nothing stored yet)."""
        if self.clock == "wall":
            return self.wall_ms()
        return None if self.storage is None else self.storage.newest_frame_ms()

    def run(self, metrics: Any = None) -> dict[str, int]:
        """Purge now (and schedule the next one): the gallery first (so the history's links to the customers
        it drops go in the same run), then the history; rows deleted per kind."""
        self._next_s = self.monotonic() + self.cfg.every_s
        now = self.now_ms()
        if now is None:
            return {}
        deleted = {}
        if self.gallery is not None:
            res = self.gallery.purge_older_than(now - self.gallery_ms)
            deleted.update(gallery_embeddings=res.embeddings, gallery_customers=res.customers,
                           gallery_visits=res.visits)
        if self.history:
            deleted.update(self.storage.purge_expired(self.cfg.days, now, self.known_customer))
        self.runs += 1
        for kind, n in deleted.items():
            self.total[kind] = self.total.get(kind, 0) + n
            if n and metrics is not None:
                metrics.purged.labels(kind).inc(n)
        if any(deleted.values()):
            log.info("retention purge", extra={"now_ms": now, "clock": self.clock,
                                                **{k: v for k, v in deleted.items() if v}})
        return deleted
