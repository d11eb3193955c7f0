"""RedisLiveState against a real Redis server: newer-wins occupancy, last seen, cameras, ping.

The server comes from ``STORELENS_REDIS_URL`` (default: the one ``scripts/stack.sh up``
starts). These tests never skip: no server is a failure. Each test uses its
own key prefix and deletes its keys afterwards.
"""
from __future__ import annotations

import doctest
import os
import random
import threading
import uuid
from typing import Iterator

import pytest
import redis

import storelens.storage.live
from storelens.contract import messages as m
from storelens.storage.live import LiveStateError, RedisLiveState

REDIS_URL = os.environ.get("STORELENS_REDIS_URL", "redis://127.0.0.1:16379/0")


def occ(cam: str, ts_ms: int, occupancy: int, total_in: int = 0, total_out: int = 0) -> m.OccupancyUpdate:
    return m.OccupancyUpdate(camera_id=cam, ts_ms=ts_ms, occupancy=occupancy, total_in=total_in,
                             total_out=total_out)


@pytest.fixture
def rclient() -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
    yield r
    r.close()


@pytest.fixture
def prefix(rclient: redis.Redis) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    p = f"storelens-test:{uuid.uuid4().hex[:16]}"
    yield p
    keys = list(rclient.scan_iter(match=f"{p}:*", count=1000))
    if keys:
        rclient.delete(*keys)


@pytest.fixture
def live(prefix: str) -> Iterator[RedisLiveState]:
    s = RedisLiveState(REDIS_URL, prefix=prefix)
    yield s
    s.close()


def test_ping_and_close(prefix: str) -> None:
    s = RedisLiveState(REDIS_URL, prefix=prefix)
    assert s.ping() is True
    s.close()
    s.close()
    assert s.ping() is False
    with pytest.raises(LiveStateError, match="closed"):
        s.occupancy("cam-1")


def test_ping_false_when_redis_is_unreachable() -> None:
    with RedisLiveState("redis://127.0.0.1:1/0", timeout_s=0.5) as s:
        assert s.ping() is False
        with pytest.raises(redis.ConnectionError):
            s.last_seen("cam-1")


def test_empty_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisLiveState(REDIS_URL, prefix="")


def test_occupancy_newer_wins_and_out_of_order_is_ignored(live: RedisLiveState) -> None:
    assert live.occupancy("cam-1") is None
    assert live.set_occupancy(occ("cam-1", 1_000, 2, 2, 0)) is True
    assert live.set_occupancy(occ("cam-1", 3_000, 1, 2, 1)) is True
    # Late or redelivered updates carrying an older timestamp never roll the state back.
    assert live.set_occupancy(occ("cam-1", 2_000, 5, 5, 0)) is False
    assert live.set_occupancy(occ("cam-1", 1_000, 2, 2, 0)) is False
    assert live.occupancy("cam-1") == occ("cam-1", 3_000, 1, 2, 1)
    # The same timestamp replaces (a redelivery of the same state, as in Storage).
    assert live.set_occupancy(occ("cam-1", 3_000, 0, 2, 2)) is True
    assert live.occupancy("cam-1") == occ("cam-1", 3_000, 0, 2, 2)


def test_large_and_negative_timestamps_compare_exactly(live: RedisLiveState) -> None:
    big = 2**53 - 1
    assert live.set_occupancy(occ("cam-1", big - 1, 1))
    assert live.set_occupancy(occ("cam-1", big - 2, 2)) is False
    assert live.set_occupancy(occ("cam-1", big, 3))
    assert live.occupancy("cam-1").ts_ms == big  # type: ignore[union-attr]
    assert live.touch_camera("cam-2", -5)
    assert live.touch_camera("cam-2", -10) is False
    assert live.last_seen("cam-2") == -5


def test_touch_camera_last_seen_only_moves_forward(live: RedisLiveState) -> None:
    assert live.last_seen("cam-1") is None
    assert live.touch_camera("cam-1", 1_000) is True
    assert live.touch_camera("cam-1", 1_040) is True
    assert live.touch_camera("cam-1", 1_000) is False  # older frame: nothing changes
    assert live.last_seen("cam-1") == 1_040
    assert live.camera("cam-1") == {"last_seen_ms": 1_040}
    assert live.camera("cam-9") == {}


def test_multiple_cameras_are_independent(live: RedisLiveState) -> None:
    assert live.cameras() == {}
    live.set_occupancy(occ("cam-2", 5_000, 4, 4, 0))
    live.set_occupancy(occ("cam-1", 9_000, 1, 1, 0))
    live.touch_camera("cam-1", 9_040)
    live.touch_camera("cam-3", 100)
    assert live.set_occupancy(occ("cam-2", 6_000, 3, 4, 1)) is True  # cam-1's newer ts does not matter
    assert live.cameras() == {
        "cam-1": {"occupancy_ts_ms": 9_000, "occupancy": 1, "total_in": 1, "total_out": 0,
                  "last_seen_ms": 9_040},
        "cam-2": {"occupancy_ts_ms": 6_000, "occupancy": 3, "total_in": 4, "total_out": 1},
        "cam-3": {"last_seen_ms": 100},
    }
    assert list(live.cameras()) == ["cam-1", "cam-2", "cam-3"]
    assert live.occupancy("cam-3") is None  # seen, but no occupancy yet
    assert live.last_seen("cam-2") is None


def test_prefixes_isolate_installations(live: RedisLiveState, prefix: str) -> None:
    with RedisLiveState(REDIS_URL, prefix=f"{prefix}:other") as other:
        live.set_occupancy(occ("cam-1", 1_000, 2))
        assert other.occupancy("cam-1") is None
        assert other.cameras() == {}
        other.touch_camera("cam-1", 5)
        assert live.last_seen("cam-1") is None


def test_values_are_plain_integers_in_a_hash_per_camera(live: RedisLiveState, rclient: redis.Redis,
                                                         prefix: str) -> None:
    live.set_occupancy(occ("cam-1", 1_000, 2, 3, 1))
    live.touch_camera("cam-1", 1_040)
    assert live.camera_key("cam-1") == f"{prefix}:camera:cam-1"
    assert rclient.type(live.camera_key("cam-1")) == "hash"
    assert rclient.hgetall(live.camera_key("cam-1")) == {
        "occupancy_ts_ms": "1000", "occupancy": "2", "total_in": "3", "total_out": "1",
        "last_seen_ms": "1040",
    }
    assert rclient.smembers(live.cameras_key) == {"cam-1"}
    assert sorted(rclient.scan_iter(match=f"{prefix}:*")) == sorted([live.cameras_key, live.camera_key("cam-1")])


def test_forget_and_clear(live: RedisLiveState, rclient: redis.Redis, prefix: str) -> None:
    for cam in ("cam-1", "cam-2", "cam-3"):
        live.touch_camera(cam, 1)
    live.forget("cam-2")
    assert list(live.cameras()) == ["cam-1", "cam-3"]
    live.clear()
    assert live.cameras() == {}
    assert list(rclient.scan_iter(match=f"{prefix}:*")) == []


def test_concurrent_out_of_order_writers_keep_the_newest(prefix: str) -> None:
    """Many writers racing with shuffled timestamps: the compare-and-set is atomic, the max wins."""
    updates = [occ(cam, ts, ts % 97, ts, 0) for cam in ("cam-1", "cam-2") for ts in range(1, 401)]
    random.Random(3).shuffle(updates)
    n = 4
    errors: list[BaseException] = []

    def writer(part: list[m.OccupancyUpdate]) -> None:
        try:
            with RedisLiveState(REDIS_URL, prefix=prefix) as s:  # one client per "service"
                for u in part:
                    s.set_occupancy(u)
                    s.touch_camera(u.camera_id, u.ts_ms)
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(updates[i::n],)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with RedisLiveState(REDIS_URL, prefix=prefix) as s:
        for cam in ("cam-1", "cam-2"):
            assert s.occupancy(cam) == occ(cam, 400, 400 % 97, 400, 0)
            assert s.camera(cam)["last_seen_ms"] == 400


def test_shared_between_threads(live: RedisLiveState) -> None:
    errors: list[BaseException] = []

    def worker(cam: str) -> None:
        try:
            for ts in range(200):
                live.touch_camera(cam, ts)
                live.last_seen(cam)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"cam-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {cam: v["last_seen_ms"] for cam, v in live.cameras().items()} == {f"cam-{i}": 199 for i in range(4)}


def test_doctests(prefix: str) -> None:
    result = doctest.testmod(storelens.storage.live, extraglobs={"url": REDIS_URL, "prefix": prefix},
                             optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} doctest example(s) failed (see captured stdout)"
