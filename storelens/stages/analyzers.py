"""Per-camera analyzers of the analytics stage: one module per kind of analysis, registered here.

The analytics stage (:mod:`storelens.stages.analytics`) counts lines itself and hands
each tracked frame, as a :class:`FrameView` of the people in it (stationary tracks
removed), to every analyzer of the camera: zones, heatmaps, journeys, ... An analyzer
is pure (no I/O) and returns protobuf messages; each is a history record and is also
published on the topic its type maps to in ``topics`` (types without a topic are
records only). Its state is JSON-serialisable, snapshotted with the stage's.

Adding an analysis is one module with a factory ``(config, camera) -> analyzer | None``
and one line in :data:`ANALYZERS`.

Example:
    >>> [name for name, _ in ANALYZERS][:1]
    ['zones']
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from storelens.config import CameraConfig, SiteConfig
from storelens.contract import messages as m


@dataclass(frozen=True)
class FrameView:
    """The people of one tracked frame (stationary tracks removed), in source pixels."""

    camera_id: str
    seq: int
    ts_ms: int
    #: Source frame size.
    width: int
    height: int
    track_ids: list[int]
    #: ``(N, 4)`` float64 x1, y1, x2, y2.
    boxes_xyxy: np.ndarray
    #: The tracks themselves (appearance embeddings, confidences).
    tracks: list[m.Track]
    #: The line crossings the stage counted in this frame (``CrossingEvent``).
    crossings: list[Any] = field(default_factory=list)
    #: What the analyzers before this one returned for this frame (e.g. the zone events), in order:
    #: an analysis that needs another's results reads them here instead of recomputing them.
    prior: list[Any] = field(default_factory=list)
    #: People detected in the frame, stationary tracks included (camera health: ``no_detections``).
    detected: int = 0
    #: The ingest's digest of the image (``TrackedFrame.image_digest``; empty: unknown).
    image_digest: bytes = b""


class CameraAnalyzer:
    """Base of the per-camera analyzers (override what applies)."""

    name = "analyzer"
    #: message type -> base topic it is published on.
    topics: dict[type, str] = {}

    def update(self, view: FrameView) -> list[Any]:
        """One frame in; messages out."""
        return []

    def end(self, seq: int, ts_ms: int, prior: list[Any]) -> list[Any]:
        """The camera's finite source ended after frame ``seq`` at ``ts_ms``: flush everything open.
        ``prior``: what the analyzers before this one returned at the end."""
        return []

    def attach(self, analyzers: dict[str, "CameraAnalyzer"]) -> None:
        """The camera's analyzers, this one among them (:func:`build_analyzers`): one that reads another's state
        (the alerts read who is inside the zones) keeps it here."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


#: (name, "module:factory") in the order the analyzers run.
ANALYZERS: list[tuple[str, str]] = [
    ("zones", "storelens.stages.zones:zone_analyzer"),
    ("alerts", "storelens.stages.alerts:alert_analyzer"),
    ("heatmap", "storelens.stages.heatmap:heatmap_analyzer"),
    ("journeys", "storelens.stages.journeys:journey_analyzer"),
    ("groups", "storelens.stages.groups:group_analyzer"),
    ("staff", "storelens.stages.staff:staff_analyzer"),
]


def build_analyzers(config: SiteConfig, camera: CameraConfig) -> dict[str, CameraAnalyzer]:
    """The analyzers that apply to ``camera`` (each factory may decline with ``None``)."""
    out = {}
    for name, ref in ANALYZERS:
        module, _, attr = ref.partition(":")
        factory: Callable[[SiteConfig, CameraConfig], CameraAnalyzer | None] = getattr(
            importlib.import_module(module), attr)
        analyzer = factory(config, camera)
        if analyzer is not None:
            out[name] = analyzer
    for analyzer in out.values():
        analyzer.attach(out)
    return out
