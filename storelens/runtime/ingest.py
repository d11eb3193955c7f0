"""Ingest: one thread per camera publishes its sampled frames (embedded mode and the ingest service).

Example:
    >>> threads = start_ingest(config.cameras, bus_publish, stop.is_set, on_error)   # doctest: +SKIP
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

from storelens.backends.video import camera_frames
from storelens.config import CameraConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import StoreLensError

log = logging.getLogger(__name__)


def pump_camera(cam: CameraConfig, publish: Callable[[bytes, bytes], None], should_stop: Callable[[], bool]) -> int:
    """Publish ``(key, Frame bytes)`` for every frame of ``cam`` until its source ends or a stop; the count.

    Raises :class:`~storelens.errors.StoreLensError` when the source cannot be read.
    """
    key = topics.camera_key(cam.id)
    n = 0
    for frame in camera_frames(cam, should_stop=should_stop):
        publish(key, m.encode(frame))
        n += 1
    log.info("source ended", extra={"camera": cam.id, "frames": n})
    return n


def start_ingest(cameras: Sequence[CameraConfig], publish: Callable[[bytes, bytes], None],
                 should_stop: Callable[[], bool],
                 on_error: Callable[[CameraConfig, StoreLensError], None]) -> list[threading.Thread]:
    """One daemon thread per camera; a camera whose source fails calls ``on_error`` (the others go on)."""
    def run(cam: CameraConfig) -> None:
        try:
            pump_camera(cam, publish, should_stop)
        except StoreLensError as exc:
            on_error(cam, exc)

    threads = [threading.Thread(target=run, args=(c,), name=f"ingest-{c.id}", daemon=True) for c in cameras]
    for t in threads:
        t.start()
    return threads
