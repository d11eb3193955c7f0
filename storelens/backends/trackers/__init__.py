"""Multi-object tracking behind a small Protocol (:mod:`.base`), one module per backend, chosen by ``tracker.backend``.

* ``deepsort``: :class:`~storelens.backends.trackers.deepsort.DeepSortTracker` (deep-sort-realtime), with
  an appearance embedder from :mod:`storelens.backends.appearance` (``tracker.embedder``).
* ``bytereid``: :class:`~storelens.backends.trackers.bytereid.ByteReidTracker` (BYTE + person re-id).

One tracker per camera: :func:`tracker_factory` makes them; ``bytereid`` trackers share one re-id model.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from storelens.backends.appearance import (
    Embedder,
    OpenVinoMobileNetEmbedder,
    TorchMobileNetEmbedder,
    build_appearance_embedder,
    crop_batch,
)
from storelens.backends.trackers.base import TRACKERS, Tracker, Tracks, iou_matrix, l2_normalize
from storelens.backends.trackers.bytereid import AppearanceTracks, ByteReidTracker
from storelens.backends.trackers.deepsort import DeepSortTracker
from storelens.config.tracker_bytereid import ByteReidTrackerConfig
from storelens.config.trackers import TrackerConfig

__all__ = ["TRACKERS", "AppearanceTracks", "ByteReidTracker", "DeepSortTracker", "Embedder", "OpenVinoMobileNetEmbedder", "TorchMobileNetEmbedder",
           "Tracker", "TrackerConfig", "Tracks", "build_embedder", "build_tracker", "crop_batch", "iou_matrix",
           "l2_normalize", "tracker_factory"]


def build_embedder(cfg: TrackerConfig) -> Embedder:
    """The appearance embedder ``cfg.embedder`` names, with its ``embedder_*`` settings."""
    return build_appearance_embedder(cfg.appearance)


def build_tracker(cfg: TrackerConfig, embedder: Embedder | None = None) -> Tracker:
    """The tracker ``cfg.backend`` names (``embedder``: ``None`` builds the configured one)."""
    return TRACKERS.build(cfg, embedder=embedder)


def tracker_factory(cfg: TrackerConfig, prebuild: bool = False) -> Callable[[], Tracker]:
    """``make() -> Tracker``, called once per camera.

    ``bytereid`` trackers share ONE re-id embedder (built with the first tracker): one model in
    memory however many cameras, and one inference can serve the crops of several cameras
    (:meth:`ByteReidTracker.plan_appearance`, the detect-track stage's batches). Other backends
    build their own embedder with each tracker.

    ``prebuild`` (``bytereid`` only; other backends build every tracker on demand): the first tracker is built
    at once, in a thread of its own, so that compiling its re-id model and importing Ultralytics' tracker code
    (and torch with it) overlap what the caller does next: :func:`~storelens.stages.core.build_detect_track`
    compiles the detector meanwhile (0.4-0.9 s sooner to the first frame on 2 cores, BENCHMARKS.md "tenth pass").
    The first ``make()`` waits for it and raises what building it raised (dropped if ``make()`` is never called);
    interpreter exit waits for the build, as for the re-id model's own background compiles. ``make()`` may be
    called from any thread.

    >>> make = tracker_factory(ByteReidTrackerConfig())
    >>> a, b = make(), make()                                   # doctest: +SKIP
    >>> a.embedder is b.embedder                                # doctest: +SKIP
    True
    """
    shared = isinstance(cfg, ByteReidTrackerConfig)
    lock = threading.Lock()
    embedder: Embedder | None = None  # bytereid: the first tracker builds it
    first: Future | None = None
    if prebuild and shared:
        pool = ThreadPoolExecutor(1, thread_name_prefix="tracker-build")
        first = pool.submit(build_tracker, cfg)
        pool.shutdown(wait=False)  # returns at once; the thread ends with the build

    def make() -> Tracker:
        nonlocal embedder, first
        with lock:
            if first is not None:
                pending, first = first, None
                tracker = pending.result()
            else:
                tracker = build_tracker(cfg, embedder)
            if shared:
                embedder = tracker.embedder
            return tracker

    return make
