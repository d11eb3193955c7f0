"""The rate a camera's frames really come at, from their timestamps (pure).

Trackers count some settings in frames (how long a lost track is kept); a camera sampled at
``target_fps: 5``, a 10 fps stream or a file at 12.5 fps delivers another rate than the one those
settings were tuned at. :class:`FrameRate` follows the rate and reports it only when it moved
enough to matter, so a tracker is told a few times per stream, not every frame.
"""
from __future__ import annotations

import math

#: An interval more than this many times the current mean is a break in the stream (a reconnect, a stalled
#: camera), not its rate: it is left out of the mean. A second such interval in a row is a new rate (a camera
#: re-sampled from 25 to 2 fps): the mean starts again from it.
BREAK_FACTOR = 5.0
#: ... and longer than this: frames of a live camera stamped when read come in bursts (3 ms, then 77 ms apart
#: at 25 fps), whose long intervals are no break (a shorter long interval counts; two in a row: a new rate).
BREAK_MIN_MS = 1000.0


class FrameRate:
    """Frames per second from successive ``ts_ms`` (the mean interval of the first ``1 / smoothing``
    intervals, then an exponential average: a 25 fps file sampled to 10 fps alternates 80 and 120 ms).

    :meth:`update` returns the rate when it first becomes known and whenever it then moves by more than
    ``tolerance`` (a share) from the last one returned; ``None`` otherwise. A gap (an interval above
    :data:`BREAK_FACTOR` times the mean and :data:`BREAK_MIN_MS`: a reconnect) does not count; the intervals
    after it go on from the rate before it.

    >>> r = FrameRate()
    >>> [r.update(t) for t in (0, 200, 400, 600)]            # a 5 fps camera: told once
    [None, 5.0, None, None]
    >>> told = [r.update(600 + 100 * k) for k in range(1, 40)]  # then 10 fps: told on the way, not every frame
    >>> [round(f, 1) for f in told if f is not None]
    [5.7, 6.7, 7.5, 8.4, 9.2]
    """

    def __init__(self, smoothing: float = 0.1, tolerance: float = 0.1) -> None:
        self.smoothing, self.tolerance = smoothing, tolerance
        self._last_ts_ms: int | None = None
        self._interval_ms = 0.0  # the first interval replaces it (weight 1 / n = 1)
        self._n = 0
        self._gap = False  # the last interval was a break (BREAK_FACTOR)
        self.reported: float | None = None

    @property
    def last_ts_ms(self) -> int | None:
        """The time of the last frame given (``None``: none yet)."""
        return self._last_ts_ms

    @property
    def interval_ms(self) -> float | None:
        """The mean interval between frames (breaks left out); ``None`` until one is known."""
        return self._interval_ms if self._n else None

    @classmethod
    def resumed(cls, last_ts_ms: int, interval_ms: float | None) -> "FrameRate":
        """A rate that goes on from a saved :attr:`last_ts_ms` and :attr:`interval_ms` (a restarted service).

        >>> r = FrameRate.resumed(1000, 200.0)
        >>> r.interval_ms, r.update(1200), r.update(9000)  # known at once; a break is a break
        (200.0, None, None)
        """
        rate = cls()
        rate._last_ts_ms = int(last_ts_ms)
        if interval_ms:
            rate._interval_ms, rate._n = float(interval_ms), math.ceil(1.0 / rate.smoothing)
            rate.reported = 1000.0 / rate._interval_ms
        return rate

    def update(self, ts_ms: int) -> float | None:
        last, self._last_ts_ms = self._last_ts_ms, int(ts_ms)
        if last is None or ts_ms <= last:
            return None  # the first frame, or a clock that did not move (or went back): nothing learnt
        dt = float(ts_ms - last)
        if self._n and dt > BREAK_FACTOR * self._interval_ms:
            self._gap, gap = True, self._gap
            if gap:
                self._n = 0  # the second in a row: a new rate, learnt afresh from this interval
            elif dt > BREAK_MIN_MS:
                return None  # a break in the stream: its rate is the one before
            # else one long interval under BREAK_MIN_MS (frames in bursts): counted
        else:
            self._gap = False
        self._n += 1  # the plain mean of the first intervals, then the exponential average
        weight = max(self.smoothing, 1.0 / self._n)
        self._interval_ms += weight * (dt - self._interval_ms)
        fps = 1000.0 / self._interval_ms
        if self.reported is not None and abs(fps - self.reported) <= self.tolerance * self.reported:
            return None
        self.reported = fps
        return fps
