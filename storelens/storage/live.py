"""Live state of the cameras in Redis (distributed mode): occupancy and last-seen frames.

The analytics service writes it (its :class:`~storelens.runtime.sinks.LiveSink`): each camera's latest
:class:`~storelens.contract.messages.OccupancyUpdate` and zone occupancy, and the timestamp of every tracked frame
it handles (:meth:`RedisLiveState.touch_camera`); the API reads them without querying the history database.

Layout (``P`` is the prefix, ``storelens`` by default); every value is a
plain decimal integer, never a pickle, so ``redis-cli`` shows it as is:

* ``P:camera:<camera_id>``: a hash with the fields ``occupancy_ts_ms``,
  ``occupancy``, ``total_in``, ``total_out`` (see :meth:`RedisLiveState.set_occupancy`)
  ``last_seen_ms`` (see :meth:`RedisLiveState.touch_camera`), ``zones_ts_ms`` and ``zone:<zone_id>``
  (see :meth:`RedisLiveState.set_zone_occupancy`);
* ``P:camera:@store``: the store's occupancy (the analytics stage's row, over ``store.entrance_lines``, else
  every line; :data:`~storelens.domain.counting.STORE_OCCUPANCY_ID`, no camera id), occupancy fields only;
* ``P:cameras``: the set of camera ids that have a hash (``@store`` too once written).

The writes are atomic compare-and-set Lua scripts that only move a camera
forward in time: a redelivered or reordered message carrying an older
timestamp leaves the state alone, so consumers may replay freely.

Example (``url`` is a Redis URL such as ``"redis://127.0.0.1:16379/0"``):
    >>> from storelens.contract import messages as m
    >>> live = RedisLiveState(url, prefix=prefix)
    >>> live.set_occupancy(m.OccupancyUpdate(camera_id="cam-1", ts_ms=2_000, occupancy=3, total_in=4, total_out=1))
    True
    >>> live.set_occupancy(m.OccupancyUpdate(camera_id="cam-1", ts_ms=1_000, occupancy=9))  # older: ignored
    False
    >>> live.occupancy("cam-1").occupancy
    3
    >>> live.touch_camera("cam-1", 2_040)
    True
    >>> live.last_seen("cam-1"), live.last_seen("cam-9")
    (2040, None)
    >>> live.close()
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping, TypeVar

import redis

from storelens.contract import messages as m
from storelens.errors import StoreLensError
from storelens.runtime.policy import Breaker
from storelens.storage.base import Closing

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Hash fields written by :meth:`RedisLiveState.set_occupancy`.
OCCUPANCY_FIELDS = ("occupancy_ts_ms", "occupancy", "total_in", "total_out")
#: Hash fields written by :meth:`RedisLiveState.touch_camera`.
SEEN_FIELDS = ("last_seen_ms",)

# KEYS[1] camera hash, KEYS[2] camera set; ARGV[1] camera id, ARGV[2] ts field,
# ARGV[3] new ts, then field/value pairs to set. Writes only when new ts >= stored ts
# (equal: a redelivery of the same state, or a correction at the same instant).
# Timestamps are compared as Lua numbers (doubles): exact for |ts| < 2^53.
_SET_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if cur and tonumber(cur) > tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""


class LiveStateError(StoreLensError):
    """The live state cannot be used (e.g. it was closed)."""


class LiveStateUnavailable(LiveStateError, redis.ConnectionError):
    """Redis failed and has not answered a ping since (the ``retry_s`` of :class:`RedisLiveState`)."""


class RedisLiveState(Closing):
    """Per-camera live state in Redis; safe to share between threads.

    Args:
        url: Redis URL, e.g. ``redis://127.0.0.1:16379/0`` (``rediss://`` for TLS).
        prefix: prefix of every key, so several installations (or tests) can
            share one Redis database.
        timeout_s: socket connect/read timeout.
        retry_s: with it, a circuit breaker (:class:`~storelens.runtime.policy.Breaker`): after a call fails
            to reach Redis (refused, or no answer within ``timeout_s``: a hung node), the calls raise
            :class:`LiveStateUnavailable` at once (:meth:`ping`: ``False``) without asking it, while a ping in a
            thread of its own asks it again after ``first_retry_s`` (default ``retry_s``), doubling with each
            failed ping up to ``retry_s``; once it answers, the calls use Redis again. No call ever waits for a
            Redis that failed. For readers with a fallback (the API answers from storage); writers (the
            services) leave it out and retry on their own.
        first_retry_s: the first wait of the breaker (see ``retry_s``).
        thread_factory: makes the breaker's ping thread (``threading.Thread``'s arguments); one that cannot start
            is counted (:meth:`count_errors`) and the ping tried again after the next wait.

    Connection errors of Redis calls propagate as :class:`redis.RedisError`
    (the client retries briefly on its own); :meth:`ping` never raises.

    Example:
        >>> with RedisLiveState(url, prefix=prefix) as live:
        ...     live.touch_camera("cam-2", 1_000)
        ...     live.touch_camera("cam-2", 960)  # an older frame: ignored
        ...     live.cameras()["cam-2"]
        True
        False
        {'last_seen_ms': 1000}
    """

    def __init__(self, url: str, prefix: str = "storelens", *, timeout_s: float = 5.0,
                 retry_s: float | None = None, first_retry_s: float | None = None,
                 thread_factory: Callable[..., threading.Thread] = threading.Thread) -> None:
        if not prefix:
            raise ValueError("prefix must not be empty")
        self.url = url
        self.prefix = prefix
        self._closed = False
        self._breaker = Breaker(retry_s, first_retry_s=first_retry_s, probe=self._probe,
                                name="live state (Redis)", thread_factory=thread_factory) \
            if retry_s is not None else None
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        self._set_if_newer = self._redis.register_script(_SET_IF_NEWER)

    # -- lifecycle ---------------------------------------------------------

    def __repr__(self) -> str:
        return f"RedisLiveState(prefix={self.prefix!r})"

    def count_errors(self, count: Callable[[str], object]) -> None:
        """Count this live state's errors outside a call with ``count(reason)`` (``storelens_errors_total``: the
        API's :meth:`~storelens.api.metrics.Metrics.count_error`): its breaker's ping that could not start
        (``breaker_probe_not_started``)."""
        if self._breaker is not None:
            self._breaker.count_error = count

    def close(self) -> None:
        """Release the connections; further calls raise :class:`LiveStateError`, :meth:`ping` is ``False``."""
        if not self._closed:
            self._closed = True
            self._redis.close()

    def ping(self) -> bool:
        """``True`` if Redis answers (readiness probe).

        Example:
            >>> with RedisLiveState(url, prefix=prefix) as live:
            ...     live.ping()
            True
        """
        if self._closed:
            return False
        try:
            return bool(self._call(lambda r: r.ping()))
        except redis.RedisError:
            return False

    def _probe(self) -> bool:
        """The breaker's ping (in its own thread): Redis answers, past the breaker. Never once closed: a ping then
        would open a pooled connection again, left open (one that :meth:`close` raced with is closed again)."""
        if self._closed:
            return False
        try:
            return bool(self._redis.ping())
        finally:
            if self._closed:  # closed meanwhile: release the connection the ping may have opened again
                self._redis.connection_pool.disconnect()

    def _client(self) -> redis.Redis:
        if self._closed:
            raise LiveStateError("live state is closed")
        return self._redis

    def _call(self, op: Callable[[redis.Redis], T]) -> T:
        """``op(client)``, through the breaker when there is one (see ``retry_s``)."""
        r = self._client()
        if self._breaker is None:
            return op(r)
        if not self._breaker.allow():
            raise LiveStateUnavailable("Redis failed and has not answered a ping since")
        try:
            out = op(r)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if self._breaker.failed():
                log.warning("live state (Redis) unreachable (%s): not asked until it answers a ping (the first "
                            "%g s after, then up to %g s apart)", exc, self._breaker.first_retry_s,
                            self._breaker.retry_s)
            raise
        if self._breaker.succeeded():
            log.warning("live state (Redis) answers again")
        return out

    # -- keys --------------------------------------------------------------

    def camera_key(self, camera_id: str) -> str:
        """Key of the hash of ``camera_id``, e.g. ``storelens:camera:cam-1``."""
        return f"{self.prefix}:camera:{camera_id}"

    @property
    def cameras_key(self) -> str:
        """Key of the set of camera ids, e.g. ``storelens:cameras``."""
        return f"{self.prefix}:cameras"

    # -- writes ------------------------------------------------------------

    def _set(self, camera_id: str, ts_field: str, ts_ms: int, fields: Mapping[str, int]) -> bool:
        args: list[object] = [camera_id, ts_field, int(ts_ms)]
        for k, v in fields.items():
            args += [k, int(v)]
        return bool(self._call(lambda r: self._set_if_newer(keys=[self.camera_key(camera_id), self.cameras_key],
                                                            args=args, client=r)))

    def set_occupancy(self, update: m.OccupancyUpdate) -> bool:
        """Store ``update`` unless the camera already has a newer one (by ``ts_ms``).

        Returns ``True`` if it was stored (an update with the same ``ts_ms``
        replaces the stored one, as in :class:`~storelens.storage.Storage`).
        """
        return self._set(update.camera_id, "occupancy_ts_ms", update.ts_ms,
                         {"occupancy": update.occupancy, "total_in": update.total_in,
                          "total_out": update.total_out})

    def set_zone_occupancy(self, update: m.ZoneOccupancy) -> bool:
        """Store the people inside each zone of ``update.camera_id`` (fields ``zone:<id>``) unless newer is stored."""
        return self._set(update.camera_id, "zones_ts_ms", update.ts_ms,
                         {f"zone:{z}": n for z, n in update.occupancy.items()})

    def zone_occupancy(self, camera_id: str) -> dict[str, int] | None:
        """Zone id -> people inside, as last stored for the camera (``None`` when nothing is)."""
        h = self.camera(camera_id)
        if "zones_ts_ms" not in h:
            return None
        return {k[5:]: int(v) for k, v in h.items() if k.startswith("zone:")}

    def touch_camera(self, camera_id: str, ts_ms: int) -> bool:
        """Record that a frame of ``camera_id`` stamped ``ts_ms`` was handled: ``last_seen_ms``, which only moves
        forward. Returns ``True`` if stored.
        """
        return self._set(camera_id, "last_seen_ms", ts_ms, {})

    def forget(self, camera_id: str) -> None:
        """Drop everything stored for ``camera_id``."""
        def op(r: redis.Redis) -> None:
            with r.pipeline() as p:
                p.delete(self.camera_key(camera_id))
                p.srem(self.cameras_key, camera_id)
                p.execute()

        self._call(op)

    def clear(self) -> None:
        """Drop every camera under this prefix."""
        def op(r: redis.Redis) -> None:
            ids = r.smembers(self.cameras_key)
            with r.pipeline() as p:
                for camera_id in ids:
                    p.delete(self.camera_key(camera_id))
                p.delete(self.cameras_key)
                p.execute()

        self._call(op)

    # -- reads -------------------------------------------------------------

    def occupancy(self, camera_id: str) -> m.OccupancyUpdate | None:
        """The latest occupancy stored for ``camera_id``, ``None`` if there is none."""
        vals = self._call(lambda r: r.hmget(self.camera_key(camera_id), list(OCCUPANCY_FIELDS)))
        if vals[0] is None:
            return None
        ts_ms, occ, total_in, total_out = (int(v) if v is not None else 0 for v in vals)
        return m.OccupancyUpdate(camera_id=camera_id, ts_ms=ts_ms, occupancy=occ, total_in=total_in,
                                 total_out=total_out)

    def last_seen(self, camera_id: str) -> int | None:
        """Timestamp (ms) of the newest frame recorded for ``camera_id``, ``None`` if none."""
        v = self._call(lambda r: r.hget(self.camera_key(camera_id), "last_seen_ms"))
        return None if v is None else int(v)

    def camera(self, camera_id: str) -> dict[str, int]:
        """Every field stored for ``camera_id`` (``{}`` if none), as ints."""
        return {k: int(v) for k, v in self._call(lambda r: r.hgetall(self.camera_key(camera_id))).items()}

    def cameras(self) -> dict[str, dict[str, int]]:
        """``{camera_id: {field: int}}`` for every camera with live state, ordered by id.

        Fields are those of the module docstring that have been written, e.g.
        ``{"cam-1": {"last_seen_ms": 2040, "occupancy_ts_ms": 2000,
        "occupancy": 3, "total_in": 4, "total_out": 1}}``.
        """
        def op(r: redis.Redis) -> tuple[list[str], list]:
            ids = sorted(r.smembers(self.cameras_key))
            if not ids:
                return [], []
            with r.pipeline(transaction=False) as p:
                for camera_id in ids:
                    p.hgetall(self.camera_key(camera_id))
                return ids, p.execute()

        ids, hashes = self._call(op)
        return {cid: {k: int(v) for k, v in h.items()} for cid, h in zip(ids, hashes) if h}
