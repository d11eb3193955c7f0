"""The analytics service (faust app) end to end on real Kafka, PostgreSQL and Redis.

The servers come from ``STORELENS_KAFKA_BOOTSTRAP``, ``STORELENS_PG_DSN`` and
``STORELENS_REDIS_URL`` (defaults: the ones ``scripts/stack.sh up`` starts).
Like the other stack tests these never skip: no server is a failure.

``services/analytics/main.py`` runs as a subprocess with a site config of its
own: a unique ``kafka.topic_prefix`` and ``kafka.group_prefix`` (so every topic,
the consumer group and the changelog are new and private to the run) and
unique camera ids (the database tables and the Redis keys are shared with
other tests, so those assertions filter by these ids). Everything the test
created is removed afterwards: rows, Redis keys, topics and consumer group.

Scenario: hand-made TrackedFrames of one camera with two lines; track 7
crosses ``door`` and track 8 crosses ``side`` (plus redelivered frames, a
truncated protobuf and an unknown camera); track 9 stops just above ``door``.
The service is then restarted (SIGTERM) and track 9 walks on across ``door``:
that crossing only exists if the restarted process recovered track 9's line
side from the table's changelog. An :class:`AnalyticsStage` fed the same
frames in-process is the oracle for the expected events.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Callable, Iterator

import psycopg
import pytest
import yaml

from storelens.api.testing import signed_in_client
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.analytics_app import app_id, changelog_topic
from storelens.config import KafkaConfig, SiteConfig, parse_config
from storelens.errors import DecodeError
from storelens.runtime.kafka import KafkaAdmin, KafkaBus, commit_offsets, consume_all, end_offsets
from storelens.storage.live import RedisLiveState
from storelens.stages import AnalyticsStage
from storelens.runtime.localdeploy import free_port

BOOTSTRAP = os.environ.get("STORELENS_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
REDIS_URL = os.environ.get("STORELENS_REDIS_URL", "redis://127.0.0.1:16379/0")
REPO = pathlib.Path(__file__).resolve().parents[1]
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PG_TABLES = ("track_points", "crossings", "occupancy", "count_windows")


def wait_until(what: str, fn: Callable[[], object], timeout_s: float = 45.0, every_s: float = 0.25,
               proc: "ServiceProc | None" = None) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if proc is not None and proc.p.poll() is not None:
            pytest.fail(f"analytics exited ({proc.p.returncode}) while waiting for {what}\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}"
                        + (f"\n{proc.log_tail()}" if proc else ""))
        time.sleep(every_s)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


class ServiceProc:
    """``services/analytics/main.py`` as a subprocess; its output goes to a log file."""

    def __init__(self, config_path: pathlib.Path, log_path: pathlib.Path, port: int) -> None:
        self.port, self.log_path = port, log_path
        env = {**os.environ, "STORELENS_CONFIG": str(config_path), "STORELENS_HTTP_PORT": str(port),
               "STORELENS_HTTP_HOST": "127.0.0.1",
               "STORELENS_FAUST_DATADIR": str(log_path.parent / "faust-data"), "PYTHONUNBUFFERED": "1"}
        self._log = open(log_path, "ab")
        self.p = subprocess.Popen([sys.executable, str(REPO / "services/analytics/main.py")], cwd=REPO, env=env,
                                  stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "---- analytics log (tail) ----\n" + "\n".join(lines[-n:])

    def wait_ready(self, timeout_s: float = 60.0) -> dict:
        body = wait_until("/readyz 200", lambda: (lambda r: r[0] == 200 and r[1])(http_get(self.port, "/readyz")),
                          timeout_s=timeout_s, proc=self)
        return json.loads(body)  # type: ignore[arg-type]

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
                pytest.fail(f"analytics did not stop within {timeout_s:.0f}s of SIGTERM\n{self.log_tail()}")
        self._log.close()
        return self.p.returncode


def box(track_id: int, cx: float, bottom: float) -> m.Track:
    """A person 40x100 px whose anchor (bottom centre) is (cx, bottom)."""
    return m.Track(track_id=track_id, bbox_xyxy=m.BoxXYXY(x1=cx - 20, y1=bottom - 100, x2=cx + 20, y2=bottom),
                   confidence=0.9, class_id=0)


def frame(cam: str, seq: int, tracks: list[m.Track]) -> m.TrackedFrame:
    return m.TrackedFrame(camera_id=cam, seq=seq, ts_ms=T0 + seq * 100, width=640, height=480, tracks=tracks)


def phase1_frames(cam: str) -> list[m.TrackedFrame]:
    """seq 1..12: 7 walks down across ``door`` (in), 8 walks left across ``side`` (in), 9 comes down to ``door``.

    Track 9 ends on the line (y 298, inside the hysteresis band): its committed side
    is still "above", which only the table state remembers across the restart.
    """
    out = []
    for seq in range(1, 13):
        tracks = []
        if seq <= 10:
            i = seq - 1
            tracks.append(box(7, 320, 240 + 13 * i))  # y 240 -> 357: crosses y=300 downwards
            tracks.append(box(8, 650 - 10 * i, 150))  # x 650 -> 560: crosses x=600 leftwards
        if seq >= 8:
            tracks.append(box(9, 100, min(262 + 10 * (seq - 8), 298)))  # y 262 -> 298: down to the line
        out.append(frame(cam, seq, tracks))
    return out


def phase2_frames(cam: str) -> list[m.TrackedFrame]:
    """seq 13..18: 9 walks on from y 310 to 360: it crossed ``door`` at seq 13, if its side above is known.

    Without the recovered state, track 9 would be new at y 310 (below the line) and never count.
    """
    return [frame(cam, seq, [box(9, 100, 310 + 10 * (seq - 13))]) for seq in range(13, 19)]


class Kafka:
    def __init__(self, topic_prefix: str) -> None:
        self.prefix = topic_prefix
        self.cfg = KafkaConfig(bootstrap_servers=BOOTSTRAP)
        self.producer = KafkaBus(self.cfg, f"{topic_prefix}test")  # idempotent, acks=all
        self.admin = KafkaAdmin(self.cfg)

    def name(self, base: str) -> str:
        return topics.topic_name(base, self.prefix)

    def send(self, key: bytes, value: bytes, partition: int | None = None) -> int:
        """Produce to ``tracks`` and wait for the ack; return the partition it went to."""
        return self.producer.publish_wait(self.name(topics.TRACKS), key, value, partition, timeout_s=30)[0]

    def read(self, base: str, keys: set[bytes], cls, timeout_s: float = 10.0) -> list:
        """Every message of topic ``base`` (prefixed) whose key is in ``keys``, decoded as ``cls``, in order."""
        msgs = consume_all(self.cfg, self.name(base), timeout_s=timeout_s)
        return [m.decode(cls, msg.value) for msg in sorted(msgs, key=lambda x: (x.partition, x.offset))
                if msg.key in keys]

    def close(self) -> None:
        self.producer.close()
        self.admin.close()


def pg_rows(query: str, params: tuple) -> list[tuple]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture
def env(tmp_path: pathlib.Path) -> Iterator[dict]:
    run = uuid.uuid4().hex[:10]
    cam, unknown = f"an-{run}", f"an-{run}-unknown"
    prefix = f"sltest-{run}"  # group prefix; topics are "sltest-<run>." + base name
    raw = {
        "store": {"id": f"store-{run}"},
        "cameras": [{"id": cam, "source": "/dev/null", "lines": [
            {"id": "door", "a": [0, 300], "b": [640, 300]},
            {"id": "side", "a": [600, 0], "b": [600, 480]},
        ]}],
        "storage": {"backend": "postgres", "dsn": PG_DSN},
        "live": {"redis_url": REDIS_URL},
        "kafka": {"bootstrap_servers": BOOTSTRAP, "group_prefix": prefix, "topic_prefix": f"{prefix}.",
                  "partitions": 6},
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = parse_config(raw)
    kafka = Kafka(config.kafka.topic_prefix)
    live = RedisLiveState(REDIS_URL)
    yield {"cam": cam, "unknown": unknown, "config": config, "config_path": path, "kafka": kafka, "live": live,
           "tmp": tmp_path}
    # -- cleanup: rows, keys, the app's topics and group ---------------------------------------
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for table in PG_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE camera_id = ANY(%s)", ([cam, unknown],))  # noqa: S608
    live.forget(cam)
    live.close()
    app_topics = [t for t in kafka.admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    try:
        kafka.admin.delete_topics(app_topics, 30)
    except Exception:  # noqa: BLE001 (a topic that was never created)
        pass
    try:
        kafka.admin.delete_groups([app_id(config.kafka)], 30)
    except Exception:  # noqa: BLE001
        pass
    kafka.close()


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


def test_analytics_service_counts_once_and_recovers_state_after_restart(env: dict) -> None:
    cam, unknown, kafka, live = env["cam"], env["unknown"], env["kafka"], env["live"]
    config: SiteConfig = env["config"]
    key = topics.camera_key(cam)
    keys = {key, topics.camera_key(unknown)}
    tracks_topic = kafka.name(topics.TRACKS)
    oracle = AnalyticsStage(config)
    expected: dict[str, tuple[str, int, str]] = {}
    expected_occupancy: list[tuple[int, int, int]] = []
    expected_windows: list[tuple[str, int, int, int]] = []
    sent_points: set[tuple[int, int]] = set()

    def send(tf: m.TrackedFrame) -> int:
        out = oracle.process(tf)
        for ev in out.crossings:
            expected[ev.event_id] = (ev.line_id, ev.track_id, ev.direction)
        if out.occupancy is not None:
            expected_occupancy.append((out.occupancy.occupancy, out.occupancy.total_in, out.occupancy.total_out))
        expected_windows.extend((w.line_id, w.window_start_ms, w.count_in, w.count_out) for w in out.windows)
        sent_points.update((tf.seq, t.track_id) for t in tf.tracks)
        return kafka.send(key, m.encode(tf))

    def crossings_in_pg() -> dict[str, tuple]:
        rows = pg_rows("SELECT event_id, line_id, track_id, direction FROM crossings WHERE camera_id = %s", (cam,))
        return {r[0]: tuple(r[1:]) for r in rows}

    def dead_letters() -> list[m.DeadLetter]:
        return kafka.read(topics.DEAD_LETTER, keys, m.DeadLetter)

    def metrics() -> str:
        status, text = http_get(proc.port, "/metrics")
        assert status == 200
        return text

    t_start = time.monotonic()
    proc = ServiceProc(env["config_path"], env["tmp"] / "analytics.log", free_port())
    try:
        ready = proc.wait_ready()
        assert ready["checks"] == {"broker": True, "tables": True, "storage": True, "live": True}
        t_ready = time.monotonic()
        assert changelog_topic(config.kafka) == f"{config.kafka.topic_prefix}{config.kafka.group_prefix}" \
            "-analytics-camera-state-changelog"
        assert changelog_topic(config.kafka) in kafka.admin.list_topics(timeout=10).topics
        frames1 = phase1_frames(cam)
        partition = [send(tf) for tf in frames1][0]
        for tf in frames1[3:6]:  # redelivery of seq 4..6
            send(tf)
        truncated = m.encode(frames1[5])[:-7]
        with pytest.raises(DecodeError):
            m.decode(m.TrackedFrame, truncated)
        kafka.send(key, truncated)
        kafka.send(topics.camera_key(unknown), m.encode(frame(unknown, 1, [box(1, 10, 10)])))

        assert sorted(expected.values()) == [("door", 7, "in"), ("side", 8, "in")]
        wait_until("frame 12 in Redis", lambda: live.last_seen(cam) == T0 + 1200, proc=proc)
        wait_until("2 dead letters", lambda: len(dead_letters()) == 2, proc=proc)
        assert crossings_in_pg() == expected
        occ = live.occupancy(cam)
        assert (occ.occupancy, occ.total_in, occ.total_out) == (2, 2, 0)
        wait_until("consumer lag 0", lambda: metric(metrics(), "storelens_consumer_lag", topic=tracks_topic,
                                                    partition=str(partition)) == 0, proc=proc)
        text = metrics()
        assert metric(text, "storelens_messages_in_total", topic=tracks_topic) == 17  # 12 + 3 again + 2 bad
        assert metric(text, "storelens_duplicates_total", topic=tracks_topic) == 3
        assert metric(text, "storelens_dead_letters_total", topic=tracks_topic) == 2
        assert metric(text, "storelens_messages_out_total", topic=kafka.name(topics.CROSSINGS)) == 2
        assert metric(text, "storelens_processing_seconds_count", topic=tracks_topic) == 17
        status, body = http_get(proc.port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"

        # -- restart: track 9's side of the door line now lives only in the changelog --------
        t_stop = time.monotonic()
        assert proc.stop() == 0, proc.log_tail()
        stop_s = time.monotonic() - t_stop
        proc = ServiceProc(env["config_path"], env["tmp"] / "analytics.log", proc.port)
        proc.wait_ready()
        restart_s = time.monotonic() - t_stop
        for tf in frames1[:2]:  # redelivery across the restart: the recovered last seq skips them
            send(tf)
        for tf in phase2_frames(cam):
            send(tf)
        assert sorted(expected.values()) == [("door", 7, "in"), ("door", 9, "in"), ("side", 8, "in")]
        wait_until("frame 18 in Redis", lambda: live.last_seen(cam) == T0 + 1800, proc=proc)

        # -- every sink has each crossing exactly once -------------------------------------
        assert crossings_in_pg() == expected
        occ = live.occupancy(cam)
        assert (occ.occupancy, occ.total_in, occ.total_out) == (3, 3, 0) == expected_occupancy[-1]
        assert pg_rows("SELECT occupancy, total_in, total_out FROM occupancy WHERE camera_id = %s",
                       (cam,)) == [(3, 3, 0)]
        assert pg_rows("SELECT line_id, count_in, count_out FROM count_windows WHERE camera_id = %s "
                       "ORDER BY line_id", (cam,)) == [("door", 2, 0), ("side", 1, 0)]
        assert sorted(pg_rows("SELECT seq, track_id FROM track_points WHERE camera_id = %s", (cam,))) == \
            sorted(sent_points)

        crossings = kafka.read(topics.CROSSINGS, keys, m.LineCrossing)
        assert sorted(c.event_id for c in crossings) == sorted(expected)  # each exactly once
        assert all(c.camera_id == cam for c in crossings)
        occupancy = kafka.read(topics.OCCUPANCY, keys, m.OccupancyUpdate)
        assert [(u.occupancy, u.total_in, u.total_out) for u in occupancy] == expected_occupancy
        counts = kafka.read(topics.COUNTS, keys, m.CountWindow)
        assert [(w.line_id, w.window_start_ms, w.count_in, w.count_out) for w in counts] == expected_windows
        letters = dead_letters()
        assert len(letters) == 2 and {d.service for d in letters} == {"analytics"}, letters
        by_key = {d.key: d for d in letters}
        assert "cannot decode storelens.v1.TrackedFrame" in by_key[key].reason
        assert by_key[key].payload == truncated and by_key[key].source_topic == tracks_topic
        assert f"unknown camera {unknown!r}" in by_key[topics.camera_key(unknown)].reason

        # -- the restarted process: health, readiness, metrics --------------------------------
        status, body = http_get(proc.port, "/healthz")
        assert status == 200
        status, body = http_get(proc.port, "/readyz")
        assert status == 200 and json.loads(body)["status"] == "ready"
        text = metrics()
        assert metric(text, "storelens_duplicates_total", topic=tracks_topic) == 2  # seq 1, 2 again
        assert metric(text, "storelens_messages_in_total", topic=tracks_topic) == 8
        assert metric(text, "storelens_messages_out_total", topic=kafka.name(topics.CROSSINGS)) == 1
        assert metric(text, "storelens_dead_letters_total", topic=tracks_topic) == 0
        assert proc.stop() == 0, proc.log_tail()
        print(f"\nanalytics: ready after {t_ready - t_start:.1f}s, SIGTERM->exit {stop_s:.1f}s, "
              f"SIGTERM->ready again {restart_s:.1f}s, total {time.monotonic() - t_start:.1f}s")
    finally:
        proc.stop()


def test_analytics_rewinds_when_the_committed_offset_is_ahead_of_its_state(env: dict) -> None:
    """faust can commit offsets of events it skipped (flow control off while stopping or
    rebalancing). Simulated here by committing the group past frames the stopped service
    never saw: the restarted service must notice that its recovered state is behind the
    committed offset and process the frames in between (track 9's crossing is in them)."""
    cam, kafka, live = env["cam"], env["kafka"], env["live"]
    config: SiteConfig = env["config"]
    key = topics.camera_key(cam)
    tracks_topic = kafka.name(topics.TRACKS)
    oracle = AnalyticsStage(config)
    expected: dict[str, tuple] = {}

    def send(tf: m.TrackedFrame) -> int:
        for ev in oracle.process(tf).crossings:
            expected[ev.event_id] = (ev.line_id, ev.track_id, ev.direction)
        return kafka.send(key, m.encode(tf))

    proc = ServiceProc(env["config_path"], env["tmp"] / "analytics.log", free_port())
    try:
        proc.wait_ready()
        partition = [send(tf) for tf in phase1_frames(cam)][0]
        wait_until("frame 12 in Redis", lambda: live.last_seen(cam) == T0 + 1200, proc=proc)
        assert proc.stop() == 0, proc.log_tail()
        later = phase2_frames(cam)
        for tf in later[:3]:  # seq 13..15 (track 9 crosses the door at 13), never seen by the service
            send(tf)
        end = end_offsets(kafka.cfg, tracks_topic, timeout_s=10)[partition]
        commit_offsets(kafka.cfg, app_id(config.kafka), {(tracks_topic, partition): end})
        for tf in later[3:]:
            send(tf)
        assert ("door", 9, "in") in expected.values()
        proc = ServiceProc(env["config_path"], env["tmp"] / "analytics.log", proc.port)
        proc.wait_ready()
        wait_until("frame 18 in Redis", lambda: live.last_seen(cam) == T0 + 1800, proc=proc)
        rows = pg_rows("SELECT event_id, line_id, track_id, direction FROM crossings WHERE camera_id = %s", (cam,))
        assert {r[0]: tuple(r[1:]) for r in rows} == expected
        assert proc_metric(proc, "storelens_errors_total", reason="offset_rewind") == 1
        assert "re-reading the gap" in proc.log_path.read_text()
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.stop()


def proc_metric(proc: ServiceProc, name: str, **labels: str) -> float:
    status, text = http_get(proc.port, "/metrics")
    return metric(text, name, **labels) if status == 200 else 0.0


def test_api_reads_live_state_from_redis_and_falls_back_to_postgres() -> None:
    """``create_app(config, storage, live)``: Redis first (with last seen), PostgreSQL when Redis has nothing."""
    from psycopg import sql

    from storelens.api import create_app
    from storelens.storage import PostgresStorage

    run = uuid.uuid4().hex[:10]
    cam1, cam2 = f"api-{run}-1", f"api-{run}-2"
    schema = f"sltest_api_{run}"
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": cam1, "source": "/dev/null"},
                                                            {"id": cam2, "source": "/dev/null"}]})
    store = PostgresStorage(PG_DSN, schema=schema)
    live = RedisLiveState(REDIS_URL, prefix=f"storelens-test:{run}")
    dead = RedisLiveState("redis://127.0.0.1:1/0", timeout_s=0.5)
    try:
        store.write_occupancy(m.OccupancyUpdate(camera_id=cam1, ts_ms=T0, occupancy=1, total_in=1))
        store.write_occupancy(m.OccupancyUpdate(camera_id=cam2, ts_ms=T0, occupancy=4, total_in=5, total_out=1))
        live.set_occupancy(m.OccupancyUpdate(camera_id=cam1, ts_ms=T0 + 5_000, occupancy=3, total_in=4, total_out=1))
        live.touch_camera(cam1, T0 + 5_040)
        client = signed_in_client(create_app(cfg, store, live))
        assert client.get(f"/v1/occupancy/{cam1}").json() == {
            "camera_id": cam1, "occupancy": 3, "total_in": 4, "total_out": 1, "ts_ms": T0 + 5_000,
            "last_seen_ts_ms": T0 + 5_040, "stale": False}
        assert client.get(f"/v1/occupancy/{cam2}").json() == {  # nothing in Redis: PostgreSQL, no last seen
            "camera_id": cam2, "occupancy": 4, "total_in": 5, "total_out": 1, "ts_ms": T0, "stale": False}
        live.touch_camera(cam2, T0 + 7_000)  # seen, but no occupancy in Redis yet
        assert client.get(f"/v1/occupancy/{cam2}").json()["last_seen_ts_ms"] == T0 + 7_000
        assert client.get(f"/v1/occupancy/{cam2}").json()["occupancy"] == 4
        body = client.get("/v1/occupancy").json()
        assert body["occupancy"] == 7 and [c["camera_id"] for c in body["cameras"]] == [cam1, cam2]
        assert client.get("/readyz").status_code == 200

        # Redis unreachable: still ready (history, KPIs and sign-in need no Redis), said in the body, and
        # occupancy answers from PostgreSQL
        client = signed_in_client(create_app(cfg, store, dead))
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["live_state"] == "unavailable", ready.text
        assert client.get(f"/v1/occupancy/{cam1}").json() == {
            "camera_id": cam1, "occupancy": 1, "total_in": 1, "total_out": 0, "ts_ms": T0, "stale": False}
    finally:
        live.clear()
        live.close()
        dead.close()
        store.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_analytics_service_applies_a_site_edit_without_restart(env: dict) -> None:
    """A ``SiteUpdate`` on the compacted ``site-config`` topic (what the API publishes after a /v1/site edit)
    puts a new line in force in the running service: the next frames count on it."""
    cam, kafka = env["cam"], env["kafka"]
    config: SiteConfig = env["config"]
    cams = [c.model_dump(mode="json") for c in config.cameras]
    cams[0]["lines"].append({"id": "upper", "a": [0, 250], "b": [640, 250]})
    update = m.SiteUpdate(version=1, ts_ms=T0, actor="test", store_id=config.store.id,
                          cameras_json=json.dumps(cams))
    proc = ServiceProc(env["config_path"], env["tmp"] / "analytics.log", free_port())
    try:
        proc.wait_ready()
        kafka.producer.publish_wait(kafka.name(topics.SITE_CONFIG), config.store.id.encode(), m.encode(update),
                                    None, timeout_s=30)
        wait_until("site version 1 applied", lambda: "site version applied" in proc.log_path.read_text(errors="replace"),
                   proc=proc)
        for tf in phase1_frames(cam):
            kafka.send(topics.camera_key(cam), m.encode(tf))
        want = {("door", 7, "in"), ("side", 8, "in"), ("upper", 7, "in")}  # 9 starts below the new line
        got = lambda: {r for r in pg_rows(  # noqa: E731
            "SELECT line_id, track_id, direction FROM crossings WHERE camera_id = %s", (cam,))}
        wait_until("crossings of the new line and the old ones", lambda: got() == want, proc=proc)
    finally:
        assert proc.stop() == 0
