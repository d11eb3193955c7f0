"""What changed between two camera lists (a site version edited through the API against the one in force).

Ingest and the stages share it: ingest starts the added cameras, stops the removed ones and
restarts those whose stream settings changed; the stages accept the added cameras' messages and
forget the removed ones.

Example:
    >>> a = CameraConfig(id="door", source="door.mp4")
    >>> d = diff_cameras([a], [a.model_copy(update={"target_fps": 5.0}), CameraConfig(id="till", source="rtsp://t")])
    >>> [c.id for c in d.added], d.removed, [c.id for c in d.restarted], [c.id for c in d.updated]
    (['till'], (), ['door'], [])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from storelens.config.redact import MASK, redact_source, redact_url  # noqa: F401 (re-exported: their home before)
from storelens.config.site import CameraConfig

#: The camera settings ingest reads (source and sampling): changing one restarts the camera's stream.
STREAM_FIELDS = ("source", "target_fps", "resize_width", "jpeg_quality", "start_ts_ms")


def stream_settings(cam: CameraConfig) -> tuple:
    """The values of :data:`STREAM_FIELDS` of ``cam``."""
    return tuple(getattr(cam, f) for f in STREAM_FIELDS)


@dataclass(frozen=True)
class CameraDiff:
    """Cameras of the new list not in the old one (``added``), ids gone (``removed``), cameras whose
    :data:`STREAM_FIELDS` changed (``restarted``, new settings) and cameras where only other settings
    changed (``updated``: lines, zones, floor; no restart of the stream)."""

    added: tuple[CameraConfig, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[CameraConfig, ...] = ()
    updated: tuple[CameraConfig, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.restarted or self.updated)


def diff_cameras(old: Sequence[CameraConfig], new: Sequence[CameraConfig]) -> CameraDiff:
    """Compare two camera lists by camera id (order does not matter; ids are unique in a valid site).

    >>> a, b = CameraConfig(id="a", source="a.mp4"), CameraConfig(id="b", source="b.mp4")
    >>> diff_cameras([a, b], [b]).removed
    ('a',)
    >>> diff_cameras([a], [a]).empty
    True
    """
    before = {c.id: c for c in old}
    after_ids = {c.id for c in new}
    added, restarted, updated = [], [], []
    for cam in new:
        prev = before.get(cam.id)
        if prev is None:
            added.append(cam)
        elif stream_settings(prev) != stream_settings(cam):
            restarted.append(cam)
        elif prev != cam:
            updated.append(cam)
    removed = tuple(c.id for c in old if c.id not in after_ids)
    return CameraDiff(tuple(added), removed, tuple(restarted), tuple(updated))
