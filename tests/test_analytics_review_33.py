"""Fixes of a review of the Kafka analytics service (batch 33); each test fails on the code before.

1. An input message whose handling fails for good (here: a crossing the broker refuses, ``crossings``'
   ``max.message.bytes`` lowered after the start) is a dead letter ``handle_failed`` and the service goes on
   (batch 33c; a failure that may pass stops the service with exit code 1: tests/test_merged_review_33c.py).
   Before batch 33, faust's supervisor restarted the agent, which went on with the next frame silently.
2. A gap the broker does not give whole (unreachable) is read again until it is, never stepped over: before,
   ``read_range`` returned ``[]`` and ``_in_order`` moved its expected offset past the gap.
3. A sink write hung on a PostgreSQL lock makes the service not ready (``storage``, with a detail) and, longer than
   the runtime's ``stall_s``, not alive; both back once the lock is gone. Before, both stayed 200.
4. Redis down: the live state's writes are skipped (breaker) and counted, the history, the outputs and the alerts
   go on, ``live`` not ready with a detail. Before, the one retry loop of every sink held every partition back.

Real components: the stack's Kafka, PostgreSQL (a private schema) and a Redis URL nothing answers; (1) runs
``services/analytics/main.py`` as a subprocess (the faust worker), the others drive :class:`AnalyticsApp` in-process.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
import weakref

import psycopg
import pytest
from faust.events import Event
from faust.streams import _current_event
from faust.types import TP
from faust.types.tuples import Message
from psycopg import sql

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime import analytics_app, kafka
from storelens.runtime.analytics_app import AnalyticsApp
from storelens.runtime.localdeploy import free_port
from storelens.runtime.service import ServiceRuntime
from storelens.storage import PostgresStorage, SqlStorage
from storelens.storage.live import RedisLiveState
from test_alerts import IN, kafka_site, two_cameras, walk
from test_analytics_app import env  # noqa: F401 (the analytics service's site, topics, stores; cleaned up after)
from test_analytics_app import PG_DSN, ServiceProc, pg_rows, phase1_frames, wait_until
from test_runtime_readiness import _delete_topics

T0 = 1_767_225_600_000


def _errors(rt: ServiceRuntime, reason: str) -> float:
    return rt.metrics.errors.labels(reason)._value.get()


class LoopThread:
    """An event loop running in a thread of its own (the app's loop; the test thread waits with deadlines)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _handle_frames(app: AnalyticsApp, frames: list[m.TrackedFrame], offset0: int = 0) -> None:
    """``frames`` handled as the agent does, each in a faust event of ``tracks`` partition 0."""
    tracks = app.topic_names[topics.TRACKS]
    for i, tf in enumerate(frames):
        offset, key, value = offset0 + i, topics.camera_key(tf.camera_id), m.encode(tf)
        event = Event(app.app, key, value, {}, Message(tracks, 0, offset, time.time(), 0, {}, key, value, None))
        token = _current_event.set(weakref.ref(event))
        try:
            await app.handle(key, value, tracks, m.type_headers(tf), source=(TP(tracks, 0), offset))
        finally:
            _current_event.reset(token)


def _started(app: AnalyticsApp, lt: LoopThread) -> AnalyticsApp:
    app._tables_ready = True  # no worker here: the table is "recovered"
    app._assigned = lambda: {0}  # and partition 0 of tracks assigned to it
    lt.submit(app.app.maybe_start_producer()).result(60)
    return app


def _stop(app: AnalyticsApp, lt: LoopThread) -> None:
    try:
        lt.submit(app.app.producer.stop()).result(30)
    finally:
        app.close()
        lt.close()


# -- 1. a failed frame stops the service; the restarted one publishes its crossings ------------------------------

def test_a_frame_whose_crossing_the_broker_refuses_for_good_is_a_dead_letter_and_the_service_goes_on(
        env):  # noqa: F811 (the fixture)
    # (batch 33c: a size refusal is permanent for that message, so it is a dead letter, not a stop: before, the
    # service stopped with exit code 1 and handled the same frame again after every restart, a crash loop)
    cam, bus = env["cam"], env["kafka"]
    key = topics.camera_key(cam)
    crossings_topic = bus.name(topics.CROSSINGS)

    def crossings() -> list[tuple[str, int]]:
        return sorted((c.line_id, c.track_id) for c in bus.read(topics.CROSSINGS, {key}, m.LineCrossing))

    def failed_letters() -> list[m.DeadLetter]:
        return [d for d in bus.read(topics.DEAD_LETTER, {key}, m.DeadLetter) if d.reason.startswith("handle_failed")]

    def set_limit(max_bytes: int) -> None:
        conf = bus.admin.topic_configs([crossings_topic])[crossings_topic]
        bus.admin.alter_topic_configs(crossings_topic, conf, {"max.message.bytes": str(max_bytes)})

    log_path = env["tmp"] / "analytics.log"
    proc = ServiceProc(env["config_path"], log_path, free_port())
    try:
        proc.wait_ready()  # the topics' limits were read at the start: a crossing fits
        set_limit(64)  # lowered afterwards (by hand, another tool): the broker now refuses every crossing
        frames = phase1_frames(cam)  # track 7 crosses door, track 8 side; 12 frames
        for tf in frames:
            bus.send(key, m.encode(tf))
        # the frames whose crossing is refused are dead letters; the service goes on to the last frame
        wait_until("frame 12 handled", lambda: pg_rows(
            "SELECT 1 FROM track_points WHERE camera_id = %s AND seq = 12", (cam,)), timeout_s=60, proc=proc)
        wait_until("the failed frames dead-lettered", lambda: failed_letters(), timeout_s=30, proc=proc)
        assert proc.p.poll() is None  # still running
        letters = failed_letters()
        assert all("MessageSizeTooLargeError" in d.reason for d in letters), [d.reason for d in letters]
        assert {m.decode(m.TrackedFrame, d.payload).camera_id for d in letters} == {cam}
        assert crossings() == []  # none went out
        set_limit(1024 * 1024)
        text = log_path.read_text(errors="replace")
        assert "message failed for good: dead letter, going on" in text
        assert "message failed: stopping the service" not in text
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.stop()


# -- 2. a gap the broker does not give whole is read again -------------------------------------------------------

def test_a_gap_the_broker_does_not_give_is_read_again_never_stepped_over(monkeypatch, tmp_path):
    monkeypatch.setattr(analytics_app, "REWIND_TIMEOUT_S", 0.3)  # each read gives up fast on the closed port
    raw = two_cameras([])
    raw["kafka"] = {"bootstrap_servers": f"127.0.0.1:{free_port()}", "partitions": 1}  # nothing listens there
    cfg = parse_config(raw)
    loop = asyncio.new_event_loop()
    rt = ServiceRuntime("analytics", port=0)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        app = AnalyticsApp(cfg, st, None, rt, loop=loop, limits={})
        try:
            tracks = app.topic_names[topics.TRACKS]
            tp = TP(tracks, 0)
            app._gen_of[tp], app._expected[tp] = app.app.consumer_generation_id, 5  # offsets 0-4 handled
            msg = Message(tracks, 0, 10, time.time(), 0, {}, b"c", b"", None)  # faust hands over offset 10

            async def go():
                task = asyncio.ensure_future(app._in_order(msg))
                deadline = time.monotonic() + 30
                while not task.done() and _errors(rt, "gap_reread") < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                rt.stopping.set()  # the service stops while the broker is still away
                return (await asyncio.gather(task, return_exceptions=True))[0]

            result = loop.run_until_complete(go())
            # before: returned after one failed read, expecting offset 11: offsets 5-9 lost for good
            assert isinstance(result, kafka.BrokerError), result
            assert app._expected[tp] == 5
            assert _errors(rt, "gap_reread") >= 2  # tried again
            assert _errors(rt, "gap_unread") == 5  # given up only when stopping, by messages
        finally:
            app.close()
            loop.close()


# -- 3. a sink write hung on a PostgreSQL lock: not ready, then not alive ----------------------------------------

@pytest.fixture
def pg_schema():
    schema = f"test_rta33_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _probe(rt: ServiceRuntime, timeout_s: float = 5.0) -> dict | None:
    """``/readyz``'s document as a probe with a timeout gets it; ``None``: no answer in time (a failed probe)."""
    out: list[dict] = []
    threading.Thread(target=lambda: out.append(rt.readiness()[1]), daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not out and time.monotonic() < deadline:
        time.sleep(0.05)
    return out[0] if out else None


def test_a_write_hung_on_a_postgres_lock_makes_analytics_not_ready_then_not_alive(pg_schema, monkeypatch):
    cfg = kafka_site(two_cameras([]), "t-rta33-pg")
    rt = ServiceRuntime("analytics", port=0, stall_s=2.0)  # (defaults: 60 s and 120 s)
    lt = LoopThread()
    st = PostgresStorage(PG_DSN, schema=pg_schema)
    app = _started(AnalyticsApp(cfg, st, None, rt, loop=lt.loop, limits={}, sink_stall_s=0.5), lt)  # small bounds
    locker = psycopg.connect(PG_DSN, connect_timeout=10)  # another session (a migration, a long report)
    pending = None
    try:
        frames = walk("c", 1, IN, 0, T0)  # one crossing "in" of line door
        lt.submit(_handle_frames(app, frames[:2])).result(60)
        lt.submit(app._heartbeat()).result(30)
        assert rt.readiness()[1]["checks"]["storage"] is True and rt.health()[0]
        locker.execute(sql.SQL("LOCK TABLE {}.crossings IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(pg_schema)))
        pending = lt.submit(_handle_frames(app, frames[2:], 2))

        def storage_check() -> tuple[bool | None, str]:
            doc = _probe(rt)
            if doc is None:
                return None, "no answer"
            return doc["checks"]["storage"], doc.get("details", {}).get("storage", "")

        # before: the probe hung (the history's ping waited for the hung write), /healthz stayed 200; now the probe
        # answers at once, not ready, saying why
        wait_until("storage not ready", lambda: storage_check()[0] is False, timeout_s=20)
        assert "storage write has waited" in storage_check()[1]

        def beaten_alive() -> bool:
            lt.submit(app._heartbeat()).result(30)
            return not rt.health()[0]
        wait_until("/healthz failing", beaten_alive, timeout_s=20)
        assert _errors(rt, "sink_stuck") == 1
        assert not pending.done()  # still held by the lock
        locker.rollback()  # the lock is gone: the write goes through
        pending.result(30)
        lt.submit(app._heartbeat()).result(30)
        assert storage_check() == (True, "") and rt.health()[0]
        assert [c.line_id for c in st.crossings("c", 0, 2**62)] == ["door"]
    finally:
        locker.close()
        if pending is not None:
            pending.exception(60)
        _stop(app, lt)
        st.close()
        _delete_topics(cfg.kafka)


# -- 4. Redis down: the history, the outputs and the alerts go on ------------------------------------------------

def test_analytics_goes_on_while_redis_is_down(tmp_path):
    cfg = kafka_site(two_cameras([]), "t-rta33-live")
    dead = RedisLiveState(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)  # as main.py makes it, nothing there
    rt = ServiceRuntime("analytics", port=0)
    lt = LoopThread()
    st = SqlStorage(str(tmp_path / "h.db"))
    app = _started(AnalyticsApp(cfg, st, dead, rt, loop=lt.loop, limits={}), lt)
    try:
        frames = walk("c", 1, IN, 0, T0)
        fut = lt.submit(_handle_frames(app, frames))
        try:
            fut.result(30)
        except concurrent.futures.TimeoutError:
            rt.stopping.set()  # before: the sink thread retried Redis for ever, the frames held back
            fut.exception(30)
            pytest.fail("the frames waited for Redis")
        assert [c.line_id for c in st.crossings("c", 0, 2**62)] == ["door"]  # the history has the crossing
        published = kafka.read_to_end(cfg.kafka, app.topic_names[topics.CROSSINGS], 0, "check", 30)
        assert [m.decode(m.LineCrossing, v).line_id for _, v, _ in published] == ["door"]
        assert _errors(rt, "live_skipped") == len(frames)  # every frame's live records skipped, counted
        assert _errors(rt, "live") == 1  # Redis asked once; then the breaker's ping, not the frames
        ok, doc = rt.readiness()
        assert not ok and doc["checks"]["live"] is False
        assert "live state's writes are skipped" in doc["details"]["live"]
    finally:
        _stop(app, lt)
        dead.close()
        st.close()
        _delete_topics(cfg.kafka)
