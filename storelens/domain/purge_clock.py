"""The "now" of a retention purge that goes by the cameras' time, never past the host's clock.

A frame or crop dated far ahead (a camera clock set wrong, a file camera's ``start_ts_ms`` a year ahead) would
otherwise make a purge by camera time delete every customer of the face gallery and every other camera's history.
One rule for the reid stage's own purge, the scheduled retention purge (:mod:`storelens.runtime.retention`) and the
gallery's "purged or erased" call (:meth:`FaceGallery._gone <storelens.backends.face_index.FaceGallery._gone>`):
a camera "now" more than :data:`CLOCK_AHEAD_TOLERANCE_MS` ahead of the host's clock is replaced by the host's clock
(and the caller counts :data:`CLOCK_AHEAD` in ``storelens_errors_total``).

Example:
    >>> host_clamped_ms(1_000, wall_ms=10_000)
    (1000, False)
    >>> host_clamped_ms(10_000 + 400 * 86_400_000, wall_ms=10_000)
    (10000, True)
"""
from __future__ import annotations

import time

#: ``storelens_errors_total`` reason of a camera time more than :data:`CLOCK_AHEAD_TOLERANCE_MS` ahead of the host.
CLOCK_AHEAD = "clock_ahead"
#: How far ahead of the host's clock a camera time may be (clock drift, time zones set wrong by less) (ms).
CLOCK_AHEAD_TOLERANCE_MS = 3_600_000


def host_clamped_ms(camera_now_ms: int, wall_ms: int | None = None) -> tuple[int, bool]:
    """``camera_now_ms``, or the host's clock ``wall_ms`` (default: ``time.time()``) when it is more than
    :data:`CLOCK_AHEAD_TOLERANCE_MS` ahead of it; and whether it was (the caller counts :data:`CLOCK_AHEAD`)."""
    wall = int(time.time() * 1000) if wall_ms is None else int(wall_ms)
    if int(camera_now_ms) > wall + CLOCK_AHEAD_TOLERANCE_MS:
        return wall, True
    return int(camera_now_ms), False
