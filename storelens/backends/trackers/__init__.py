"""Multi-object tracking behind a small Protocol (:mod:`.base`), one module per backend, chosen by ``tracker.backend``.

* ``deepsort``: :class:`~storelens.backends.trackers.deepsort.DeepSortTracker` (deep-sort-realtime), with
  an appearance embedder from :mod:`storelens.backends.appearance` (``tracker.embedder``).
"""
from __future__ import annotations

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
from storelens.config.trackers import TrackerConfig

__all__ = ["TRACKERS", "AppearanceTracks", "ByteReidTracker", "DeepSortTracker", "Embedder", "OpenVinoMobileNetEmbedder", "TorchMobileNetEmbedder",
           "Tracker", "TrackerConfig", "Tracks", "build_embedder", "build_tracker", "crop_batch", "iou_matrix",
           "l2_normalize"]


def build_embedder(cfg: TrackerConfig) -> Embedder:
    """The appearance embedder ``cfg.embedder`` names, with its ``embedder_*`` settings."""
    return build_appearance_embedder(cfg.appearance)


def build_tracker(cfg: TrackerConfig, embedder: Embedder | None = None) -> Tracker:
    """The tracker ``cfg.backend`` names (``embedder``: ``None`` builds the configured one)."""
    return TRACKERS.build(cfg, embedder=embedder)
