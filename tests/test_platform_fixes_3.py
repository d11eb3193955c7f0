"""Platform fixes (review findings), each test failing on the code before its fix.

1. The analytics service reads ``site-config`` without a consumer group, from its beginning at every start: a
   restarted service has the newest site version in force (an API-added camera's tracks are counted, not
   dead-lettered), and with two replicas both apply every new version. Its lag gauge drops the series of a
   partition a rebalance took away (5.).
2. With ``api.workers > 1`` each worker's app (uvicorn's factory ``app_from_env``) publishes to Kafka: a
   ``DELETE /v1/customers/{id}`` puts the ``CustomerErasure`` on ``customer-erasures``.
3. A stage service whose sink is down keeps beating while it retries: ``/healthz`` 200, ``/readyz`` 503.
4. Concurrent API publishes through one producer each get their own delivery result.
6. ``.dockerignore`` keeps what the Dockerfiles copy and leaves local databases (a face gallery) out.

Real Kafka, PostgreSQL (private schemas) of the local stack (``scripts/stack.sh up``); services run as
subprocesses of this tree (``PYTHONPATH``).
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import threading
import time
import uuid

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime import kafka, workers
from storelens.runtime.analytics_app import app_id
from storelens.runtime.service import ServiceRuntime
from storelens.stages.base import Outputs
from test_analytics_app import BOOTSTRAP, T0, Kafka, ServiceProc, free_port, http_get, phase1_frames, wait_until
from test_bus import _kafka_cfg
from test_runtime_readiness import Quiet, _delete_topics, _site
from test_storage_migrations import PG_DSN, pg_schema  # noqa: F401 (a fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]
DOOR = {"id": "door", "a": [0, 300], "b": [640, 300]}
SIDE = {"id": "side", "a": [600, 0], "b": [600, 480]}


def _schema_dsn(schema: str) -> str:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    return make_conninfo(PG_DSN, options=f"-c search_path={schema}")


def _rows(dsn: str, query: str, params: tuple) -> set[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return set(conn.execute(query, params).fetchall())


def _applied(proc: ServiceProc, version: int) -> bool:
    """Whether the service's log says site version ``version`` was applied."""
    for line in proc.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if doc.get("msg") == "site version applied" and doc.get("version") == version:
                return True
    return False


def _lag_partitions(proc: ServiceProc, topic: str) -> set[int]:
    _code, text = http_get(proc.port, "/metrics")
    series = [dict(re.findall(r'(\w+)="([^"]*)"', line)) for line in text.splitlines()
              if line.startswith("storelens_consumer_lag{")]
    return {int(labels["partition"]) for labels in series if labels.get("topic") == topic}


# -- 1 and 5: analytics, site versions at a restart and in every replica; lag of revoked partitions ---------

@pytest.mark.timeout(400)
def test_analytics_restart_and_replicas_have_the_newest_site_version(tmp_path, pg_schema, monkeypatch):  # noqa: F811
    """A version adding a camera is published while analytics runs; the service restarts and the new camera's
    tracks are counted (not dead-lettered as an unknown camera). A second replica joins; a version 2 published then
    is applied by both. After that rebalance the first replica exports no lag for a ``tracks`` partition the second
    one now reads. Before, site-config was read by the app's consumer group: the restart resumed after the committed
    offset and never saw version 1, and only the replica assigned its one partition got version 2; the lag series
    of a revoked partition stayed exported."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the services run this tree
    run = uuid.uuid4().hex[:10]
    cam, added, prefix = f"h11a-{run}", f"h11b-{run}", f"sltest-h11-{run}"
    dsn = _schema_dsn(pg_schema)
    raw = {"store": {"id": f"store-{run}"}, "cameras": [{"id": cam, "source": "/dev/null", "lines": [DOOR, SIDE]}],
           "storage": {"backend": "postgres", "dsn": dsn},
           "kafka": {"bootstrap_servers": BOOTSTRAP, "group_prefix": prefix, "topic_prefix": f"{prefix}.",
                     "partitions": 2}}
    path = tmp_path / "site.yaml"
    path.write_text(json.dumps(raw))
    config = parse_config(raw)
    kfk = Kafka(config.kafka.topic_prefix)
    site_topic = kfk.name(topics.SITE_CONFIG)

    def publish_version(version: int, cameras: list[dict]) -> None:
        update = m.SiteUpdate(version=version, ts_ms=T0 + version, actor="test", store_id=config.store.id,
                              cameras_json=json.dumps(cameras))
        kfk.producer.publish_wait(site_topic, config.store.id.encode(), m.encode(update), None, timeout_s=30,
                                  headers=m.type_headers(update))

    def crossings(camera: str) -> set[tuple]:
        return _rows(dsn, "SELECT line_id, track_id, direction FROM crossings WHERE camera_id = %s", (camera,))

    cams = [c.model_dump(mode="json") for c in config.cameras]
    new_cam = {"id": added, "source": "/dev/null", "lines": [DOOR, SIDE]}
    first = second = None
    proc = ServiceProc(path, tmp_path / "analytics-1.log", free_port())
    try:
        proc.wait_ready()
        publish_version(1, cams + [new_cam])
        wait_until("version 1 applied", lambda: _applied(proc, 1), proc=proc)
        time.sleep(3)  # past a commit of the consumer offsets (faust: every 2.8 s)
        assert proc.stop() == 0, proc.log_tail()

        first = proc = ServiceProc(path, tmp_path / "analytics-2.log", proc.port)
        proc.wait_ready()
        tracks = kfk.name(topics.TRACKS)
        for tf in phase1_frames(added):  # the API-added camera on partition 0, the site file's on 1
            kfk.send(topics.camera_key(added), m.encode(tf), partition=0)
        for tf in phase1_frames(cam):
            kfk.send(topics.camera_key(cam), m.encode(tf), partition=1)
        want = {("door", 7, "in"), ("side", 8, "in")}
        wait_until("the added camera's crossings after the restart", lambda: crossings(added) == want, proc=proc)
        wait_until("the site file camera's crossings", lambda: crossings(cam) == want, proc=proc)
        dead = kfk.read(topics.DEAD_LETTER, {topics.camera_key(added)}, m.DeadLetter)
        assert not dead, [d.reason for d in dead]
        wait_until("lag exported for both tracks partitions", lambda: _lag_partitions(first, tracks) == {0, 1},
                   proc=first)

        second = ServiceProc(path, tmp_path / "analytics-3.log", free_port())  # a second replica
        wait_until("the second replica ready", lambda: http_get(second.port, "/readyz")[0] == 200, timeout_s=120,
                   proc=second)
        publish_version(2, cams + [new_cam, {**new_cam, "id": f"h11c-{run}"}])
        wait_until("version 2 applied by the first replica", lambda: _applied(first, 2), proc=first)
        wait_until("version 2 applied by the second replica", lambda: _applied(second, 2), proc=second)

        def second_reads() -> set[int]:  # frames go on on both partitions until the second replica has read one
            for p, c in ((0, added), (1, cam)):
                kfk.send(topics.camera_key(c), m.encode(m.TrackedFrame(camera_id=c, seq=10_000 + int(time.time()),
                                                                       ts_ms=T0 + 60_000, width=640, height=480)),
                         partition=p)
            return _lag_partitions(second, tracks)
        moved = wait_until("the second replica reads a tracks partition", second_reads, timeout_s=90, every_s=1.0,
                           proc=second)
        time.sleep(2.5)  # the first replica's lag update (every second)
        assert not _lag_partitions(first, tracks) & moved, (_lag_partitions(first, tracks), moved)
    finally:
        for p in (proc, first, second):
            if p is not None:
                p.stop()
        app_topics = [t for t in kfk.admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        with contextlib.suppress(Exception):
            kfk.admin.delete_topics(app_topics, 30)
        with contextlib.suppress(Exception):
            kfk.admin.delete_groups([app_id(config.kafka)], 30)
        kfk.close()


# -- 2: api.workers > 1 publishes erasures --------------------------------------------------------------------

def test_each_api_worker_publishes_a_customer_erasure(tmp_path, pg_schema, monkeypatch):  # noqa: F811
    """The app uvicorn's worker processes build (``app_from_env``, ``api.workers: 2``) deletes a customer with 204
    and puts the ``CustomerErasure`` on ``customer-erasures`` for the reid service. Before, only the one-process
    path of the service's main wired the Kafka publishers: the workers answered 204 and published nothing."""
    from storelens.api.server import app_from_env

    run = uuid.uuid4().hex[:10]
    prefix = f"sltest-h11api-{run}."
    raw = {"store": {"id": f"store-{run}"}, "cameras": [{"id": "door", "source": "/dev/null"}],
           "api": {"workers": 2}, "storage": {"backend": "postgres", "dsn": _schema_dsn(pg_schema)},
           "kafka": {"bootstrap_servers": BOOTSTRAP, "group_prefix": prefix, "topic_prefix": prefix,
                     "partitions": 1}}
    path = tmp_path / "site.yaml"
    path.write_text(json.dumps(raw))
    config = parse_config(raw)
    monkeypatch.setenv("STORELENS_CONFIG", str(path))
    monkeypatch.setenv(config.auth.jwt_secret_env, "h11-shared-session-signing-key-of-the-workers")
    victim = f"cust-{run}"
    try:
        app = app_from_env()  # what each worker process of serve_site's uvicorn.run(..., workers=2) calls
        with signed_in_client(app) as client:  # (entered: the app's shutdown closes its stores and publishers)
            app.state.context.gallery_store.add_customer(victim, T0)
            r = client.delete(f"/v1/customers/{victim}")
            assert r.status_code == 204, r.text
        got = kafka.consume_all(config.kafka, topics.topic_name(topics.CUSTOMER_ERASURES, prefix), timeout_s=20)
        erasures = [m.decode(m.CustomerErasure, x.value) for x in got]
        assert [(x.key, e.customer_id) for x, e in zip(got, erasures)] == [(victim.encode(), victim)]
    finally:
        _delete_topics(config.kafka)


# -- 3: a sink that is down: alive, not ready -------------------------------------------------------------------

class Recorder(Quiet):
    """Frames in; each frame a record for the sinks."""

    name = "h11-recorder"

    def handle(self, topic, frame):
        return Outputs(records=[frame])


class DownFor:
    """A store that refuses connections for ``down_s`` from its first write, then takes every write."""

    name = "storage"

    def __init__(self, down_s: float) -> None:
        self.down_s, self.since, self.written = down_s, None, []

    def write(self, records) -> None:
        self.since = self.since or time.monotonic()
        if time.monotonic() - self.since < self.down_s:
            raise ConnectionRefusedError("connection refused (the database is restarting)")
        self.written.extend(records)


@pytest.mark.timeout(120)
def test_a_service_retrying_a_sink_is_alive_and_not_ready():
    """A stage service (StageWorker, stall_s 2 s) whose sink fails for 5 s: /healthz answers 200 all along, /readyz
    503 (the sink's check) while it fails and 200 once the write went through. Before, the retry loop slept
    without a beat (backoff up to 5 s): /healthz said 503 "stalled" and the liveness probe restarted the pod."""
    cfg = _kafka_cfg()
    config = _site(cfg, [{"id": "cam", "source": "x.mp4"}])
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    rt = ServiceRuntime("h11-recorder", port=0, host="127.0.0.1", stall_s=2.0)
    rt.start()
    sink = DownFor(5.0)
    worker = workers.StageWorker(config, rt, Recorder(config), sinks=[sink])
    thread = threading.Thread(target=worker.run, daemon=True)
    bus = kafka.KafkaBus(cfg, "test")
    try:
        thread.start()
        frame = m.Frame(camera_id="cam", seq=1, ts_ms=T0)
        bus.publish(topics.topic_name(topics.FRAMES, cfg.topic_prefix), b"cam", m.encode(frame),
                    headers=m.type_headers(frame))
        bus.flush()
        base = f"http://127.0.0.1:{rt.port}"
        deadline = time.monotonic() + 60
        while sink.since is None:
            assert time.monotonic() < deadline, "the frame never reached the sink"
            time.sleep(0.05)
        health, ready = [], []
        while not sink.written and time.monotonic() < deadline:
            health.append(httpx.get(f"{base}/healthz", timeout=5).status_code)
            r = httpx.get(f"{base}/readyz", timeout=5)
            ready.append((r.status_code, r.json()["checks"].get("storage")))
            time.sleep(0.2)
        assert sink.written == [frame]
        assert len(health) >= 5 and set(health) == {200}, f"/healthz during the outage: {health}"
        assert (503, False) in ready, ready
        wait_until("ready again", lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, timeout_s=15)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        rt.stopping.set()
        thread.join(60)
        bus.close()
        rt.stop()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        _delete_topics(cfg)


# -- 4: concurrent publishes, each its own result --------------------------------------------------------------

HUGE = base64.b64encode(os.urandom(1_600_000)).decode()  # ~2.1 MB that lz4 cannot shrink: over the 1 MB limit


def _erasure(customer_id: str, request_id: str = "r") -> list[tuple[bytes, m.CustomerErasure]]:
    return [(customer_id.encode(), m.CustomerErasure(customer_id=customer_id, request_id=request_id))]


@pytest.mark.timeout(120)
def test_concurrent_publishes_each_get_their_own_delivery_result():
    """Two API requests publish through one publisher at the same time, one a message the broker refuses (2 MB on
    ``customer-erasures``, whose limit is 1 MB), the other a good one, a dozen times: each request is answered
    about its own message, ok exactly when it is on the topic. Before, both flushed one shared error count: the
    request that flushed first took every failure, the other answered ok (a refused erasure answered 204)."""
    cfg = _kafka_cfg()
    config = _site(cfg, [{"id": "cam", "source": "x.mp4"}])
    publisher = workers.TopicPublisher(config, topics.CUSTOMER_ERASURES)
    rounds, outcomes = 12, []
    try:
        publisher.publish(_erasure("warm-up"))
        for i in range(rounds):
            gate, got = threading.Barrier(2), {}

            def request(name: str, items: list) -> None:
                gate.wait()
                try:
                    publisher.publish(items)
                    got[name] = "ok"
                except kafka.BrokerError as exc:
                    got[name] = f"failed: {exc}"

            both = [threading.Thread(target=request, args=("bad", _erasure(f"bad-{i}", HUGE))),
                    threading.Thread(target=request, args=("good", _erasure(f"good-{i}")))]
            for t in both:
                t.start()
            for t in both:
                t.join(60)
            outcomes.append((got["bad"], got["good"]))
        delivered = {x.key.decode() for x in kafka.consume_all(cfg, publisher.topic, timeout_s=20)}
        answers = [(bad, f"bad-{i}" in delivered, good, f"good-{i}" in delivered)
                   for i, (bad, good) in enumerate(outcomes)]
        # (a good message in flight with a refused one may be refused too, out of sequence: then it says so)
        assert all(b != "ok" and not b_on and (g == "ok") == g_on for b, b_on, g, g_on in answers), answers
        assert "warm-up" in delivered and any(g == "ok" for _b, _b_on, g, _g_on in answers), answers
    finally:
        publisher.close()
        _delete_topics(cfg)


@pytest.mark.timeout(120)
def test_a_publish_after_a_refused_message_is_delivered():
    """The API's publisher after a message the broker refused: the next publish is delivered. Before, the
    idempotent producer refused every later batch of the partition as out of sequence
    (``OutOfOrderSequenceNumber``), so every erasure answered 503 until the API restarted."""
    cfg = _kafka_cfg()
    config = _site(cfg, [{"id": "cam", "source": "x.mp4"}])
    publisher = workers.TopicPublisher(config, topics.CUSTOMER_ERASURES)
    try:
        publisher.publish(_erasure("before"))
        with pytest.raises(kafka.BrokerError):
            publisher.publish(_erasure("refused", HUGE))
        for i in range(3):
            publisher.publish(_erasure(f"after-{i}"))
        delivered = [x.key.decode() for x in kafka.consume_all(cfg, publisher.topic, timeout_s=20)]
        assert delivered == ["before", "after-0", "after-1", "after-2"]
    finally:
        publisher.close()
        _delete_topics(cfg)


# -- 6: .dockerignore --------------------------------------------------------------------------------------------

def _docker_patterns() -> list[tuple[bool, re.Pattern]]:
    """The rules of ``.dockerignore`` as (exception?, regex), in order (Docker's syntax: Go's ``filepath.Match`` per
    path element, ``**`` any number of directories, a leading ``!`` re-includes, the last matching rule wins; a
    pattern that matches a directory matches everything under it)."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(out + "(?:/.*)?")))
    return rules


def _ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    ignored = False
    for negate, rx in rules:
        if rx.fullmatch(path):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_images_copy_and_leaves_local_data_out():
    """Every file the services' Dockerfiles COPY from the build context (the repository root; the tracked files
    under each source) is sent, and local files that must never reach an image are not: a face gallery database
    under ``storelens/`` (what the examples leave), virtualenvs, caches, node_modules. Before, there was no
    ``.dockerignore``: ``COPY storelens ./storelens`` baked any untracked ``storelens/examples/*.db*`` in."""
    assert (REPO / ".dockerignore").is_file(), "no .dockerignore at the repository root (the build context)"
    rules = _docker_patterns()
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    sources = set()
    for dockerfile in sorted(REPO.glob("services/*/Dockerfile")):
        for line in dockerfile.read_text().splitlines():
            words = line.split()
            if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
                sources.update(w for w in words[1:-1] if not w.startswith("--"))
    assert {"storelens", "pyproject.toml", "requirements.txt", "dashboard/src", "services/api"} <= sources, sources
    copied = [f for f in tracked if any(f == s or f.startswith(s.rstrip("/") + "/") for s in sources)]
    assert len(copied) > 100
    assert [f for f in copied if _ignored(f, rules)] == []
    for local in ("storelens/examples/demo.db", "storelens/examples/demo.db.gallery.db",
                  "storelens/examples/demo.db.gallery.db-wal", "storelens/examples/demo.db-journal",
                  "storelens/api/__pycache__/app.cpython-311.pyc", ".venv/bin/python",
                  "dashboard/node_modules/react/index.js", "dashboard/dist/index.html", ".stack/kafka/log",
                  "test-artifacts/run.log", ".git/HEAD", "storelens.db"):
        assert _ignored(local, rules), local
