"""Readiness, liveness and metrics of the Kafka services say what is going on.

* ingest: ``/readyz`` has a ``cameras`` check (a live camera that gives no frame is not ready, named, and its
  outage counted in ``storelens_camera_outages_total``; a file camera that ended is fine);
* a publish the producer cannot take (its partition's batches full, the broker silent) beats the heartbeat
  while it waits and gives up with :class:`UndeliveredError` after the bound a flush has (before: it waited for
  ever without a beat, and the liveness probe restarted the service after ``stall_s``);
* a failed delivery is counted in ``storelens_delivery_errors_total{topic}``;
* a consumer whose partitions are revoked is not ready until it has an assignment again, and the lag gauge
  drops the partitions it no longer owns.

Real Kafka of the local stack (``scripts/stack.sh up``), topics of a namespace of their own; the silent broker
of the publish test is a real TCP server that answers the producer's metadata requests and never a produce.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time

import httpx
import pytest
from prometheus_client import generate_latest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime import kafka, workers
from storelens.runtime.localdeploy import KAFKA
from storelens.runtime.service import ServiceRuntime
from storelens.stages.base import Outputs, decode_input
from test_bus import _kafka_cfg

CAMPUS = asset("mot", "TUD-Campus", "TUD-Campus.mp4")  # 640x480, 25 fps, 71 frames


def _kafka_up() -> bool:
    host, port = KAFKA.split(",")[0].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


needs_kafka = pytest.mark.skipif(not _kafka_up(), reason=f"no Kafka at {KAFKA} (scripts/stack.sh up)")


def _site(cfg, cameras: list[dict]):
    return parse_config({"store": {"id": cfg.group_prefix}, "cameras": cameras, "kafka": cfg.model_dump()})


def _delete_topics(cfg) -> None:
    admin = kafka.KafkaAdmin(cfg)
    try:
        admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(cfg.topic_prefix)])
    finally:
        admin.close()


def _metric(rt: ServiceRuntime, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in generate_latest(rt.registry).decode().splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait(cond, timeout_s: float, what: str, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while not (got := cond()):
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(every_s)
    return got


@pytest.fixture
def started_runtime():
    """A started ServiceRuntime named ingest on a free local port (pytest's signal handlers put back after)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    rt = ServiceRuntime("ingest", port=0, host="127.0.0.1")
    rt.start()
    try:
        yield rt
    finally:
        rt.stop()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _readyz(rt: ServiceRuntime) -> tuple[int, dict]:
    r = httpx.get(f"http://127.0.0.1:{rt.port}/readyz", timeout=5)
    return r.status_code, r.json()


def _frames_ended(cfg, camera_id: str) -> bool:
    got = kafka.consume_all(cfg, topics.topic_name(topics.FRAMES, cfg.topic_prefix), timeout_s=10)
    return any(f.camera_id == camera_id and f.end_of_stream for f in (m.decode(m.Frame, x.value) for x in got))


def _run_ingest(config, rt: ServiceRuntime) -> threading.Thread:
    result: list = []
    t = threading.Thread(target=lambda: result.append(workers.run_ingest(config, rt)), name="ingest-main",
                         daemon=True)
    t.start()
    return t


@needs_kafka
@pytest.mark.timeout(120)
def test_ingest_is_not_ready_while_a_live_camera_gives_nothing_and_counts_its_outage(started_runtime, monkeypatch):
    """A live camera whose source is missing (a closed port) keeps reconnecting: past its frame timeout /readyz
    answers 503 naming it (the file camera beside it, whose file ended, is not named) and the outage is counted
    once. Before, /readyz checked the broker only and said ready."""
    monkeypatch.setattr(workers, "CAMERA_FRAME_TIMEOUT_S", 2.0, raising=False)
    rt, cfg = started_runtime, _kafka_cfg()
    config = _site(cfg, [{"id": "gone", "source": "rtsp://127.0.0.1:1/none", "target_fps": 5},
                         {"id": "clip", "source": str(CAMPUS), "target_fps": 5}])
    thread = _run_ingest(config, rt)
    try:
        _wait(lambda: _frames_ended(cfg, "clip"), 30, "the file camera's end of stream", every_s=0.5)
        time.sleep(2.5)  # past the live camera's frame timeout (2 s from its start)
        code, doc = _readyz(rt)
        assert code == 503 and doc["checks"]["cameras"] is False and doc["checks"]["broker"] is True, doc
        assert set(doc["details"]["cameras"]) == {"gone"}, doc  # the ended file camera is fine
        assert "no frame published" in doc["details"]["cameras"]["gone"], doc
        assert _wait(lambda: _metric(rt, "storelens_camera_outages_total", camera="gone"), 5, "outage counted") == 1
        assert _metric(rt, "storelens_camera_outages_total", camera="clip") is None
    finally:
        rt.stopping.set()
        thread.join(60)
        _delete_topics(cfg)
    assert not thread.is_alive()


@needs_kafka
@pytest.mark.timeout(120)
def test_ingest_with_an_ended_file_camera_is_ready(started_runtime, monkeypatch):
    """A file camera whose file ended leaves ingest ready (its thread has ended, without failing)."""
    monkeypatch.setattr(workers, "CAMERA_FRAME_TIMEOUT_S", 2.0, raising=False)
    rt, cfg = started_runtime, _kafka_cfg()
    thread = _run_ingest(_site(cfg, [{"id": "clip", "source": str(CAMPUS), "target_fps": 5}]), rt)
    try:
        _wait(lambda: _frames_ended(cfg, "clip"), 30, "the file camera's end of stream", every_s=0.5)
        time.sleep(2.5)
        code, doc = _readyz(rt)
        assert code == 200 and doc["checks"]["cameras"] is True and "details" not in doc, doc
    finally:
        rt.stopping.set()
        thread.join(60)
        _delete_topics(cfg)


class SilentBroker:
    """A Kafka "broker" on a local port that answers what a producer asks at its start (API versions,
    metadata: one partition, led by itself; a producer id) and no produce request until :meth:`answer`: the
    producer's batches fill up as they do while a real broker is away."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.produce_requests = 0
        self._conns: list[socket.socket] = []
        self._held: list[tuple[socket.socket, int]] = []
        self._answering = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            got = conn.recv(n - len(buf))
            if not got:
                raise EOFError
            buf += got
        return buf

    def _serve(self, conn: socket.socket) -> None:
        from aiokafka.protocol.admin import ApiVersionResponse_v0
        from aiokafka.protocol.metadata import MetadataResponse_v1
        from aiokafka.protocol.transaction import InitProducerIdResponse_v0

        try:
            while True:
                (size,) = struct.unpack(">i", self._read(conn, 4))
                api_key, _version, correlation = struct.unpack(">hhi", self._read(conn, size)[:8])
                if api_key == 18:  # ApiVersions: these requests, one version each
                    resp = ApiVersionResponse_v0(error_code=0, api_versions=[(18, 0, 0), (3, 1, 1), (22, 0, 0),
                                                                             (0, 3, 3)])
                elif api_key == 3:  # Metadata
                    resp = MetadataResponse_v1(brokers=[(0, "127.0.0.1", self.port, None)], controller_id=0,
                                               topics=[(0, self.topic, False, [(0, 0, 0, [0], [0])])])
                elif api_key == 22:  # InitProducerId (idempotence)
                    resp = InitProducerIdResponse_v0(throttle_time_ms=0, error_code=0, producer_id=1, producer_epoch=0)
                else:  # Produce: held until answer()
                    with self._lock:
                        self.produce_requests += 1
                        if not self._answering:
                            self._held.append((conn, correlation))
                            continue
                    resp = self._produced()
                self._send(conn, correlation, resp)
        except (EOFError, OSError):
            return

    def _produced(self):
        from aiokafka.protocol.produce import ProduceResponse_v3

        return ProduceResponse_v3(topics=[(self.topic, [(0, 0, 0, -1)])], throttle_time_ms=0)

    @staticmethod
    def _send(conn: socket.socket, correlation: int, resp) -> None:
        body = struct.pack(">i", correlation) + resp.encode()
        conn.sendall(struct.pack(">i", len(body)) + body)

    def answer(self) -> None:
        """Acknowledge the produce requests held and every later one (the producer can then stop at once)."""
        with self._lock:
            self._answering, held, self._held = True, self._held, []
        for conn, correlation in held:
            self._send(conn, correlation, self._produced())

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            conn.close()


@pytest.mark.timeout(90)
def test_a_blocked_publish_beats_and_gives_up_after_the_flush_bound(monkeypatch):
    """Frames published while the broker takes nothing: once the partition's batches are full, publish() waits,
    beating the service's heartbeat every slice (/healthz stays alive past stall_s) with the bus marked as
    waiting (/readyz: broker not ready), and raises UndeliveredError after FLUSH_WAIT_S, as a flush does.
    Before, it waited aiokafka's request timeout (120 s) over and over, without a beat."""
    monkeypatch.setattr(kafka, "FLUSH_WAIT_S", 6.0)
    monkeypatch.setattr(kafka, "FLUSH_SLICE_S", 1.0)
    from storelens.config import KafkaConfig

    broker = SilentBroker("frames")
    rt = ServiceRuntime("detect-track", port=0, stall_s=2.5)
    bus = kafka.KafkaBus(KafkaConfig(bootstrap_servers=f"127.0.0.1:{broker.port}"), "test", heartbeat=rt.beat)
    probe = workers.BrokerProbe(bus, rt)
    state: dict = {"published": 0}

    def publish() -> None:
        try:
            for _ in range(100):  # 100 KB frames: two 1 MB batches (one in flight) take ~20
                bus.publish("frames", b"cam-1", bytes(100_000))
                state["published"] += 1
                state["last"] = time.monotonic()
        except kafka.UndeliveredError as exc:
            state["error"], state["raised"] = exc, time.monotonic()

    try:
        t = threading.Thread(target=publish, daemon=True)
        t.start()
        _wait(lambda: "last" in state and time.monotonic() - state["last"] > 0.5, 10, "publish blocks")
        assert 0 < state["published"] < 100 and broker.produce_requests >= 1
        health, waiting = [], []
        while t.is_alive() and time.monotonic() - state["last"] < 12:
            health.append(rt.health()[0])
            waiting.append(bus.waiting_since is not None and not probe.ready())
            time.sleep(0.2)
        t.join(1)
        assert "error" in state, "publish still blocked after 12 s, past FLUSH_WAIT_S (6 s)"
        assert 5.0 <= state["raised"] - state["last"] <= 8.0, state
        assert all(health), "the heartbeat stopped while publish waited (liveness would restart the service)"
        assert sum(waiting) > len(waiting) // 2, "the bus was not marked as waiting for the broker"
        assert bus.waiting_since is None and "did not take the message" in str(state["error"])
    finally:
        broker.answer()  # (else the producer's stop waits for its batches up to aiokafka's request timeout)
        bus.close(timeout_s=10)
        broker.close()


class Quiet:
    """A stage that reads frames and publishes nothing."""

    name = "quiet"
    inputs = {topics.FRAMES: m.Frame}
    outputs = ()
    on_error = "dead_letter"

    def __init__(self, config) -> None:
        self.cameras = {c.id for c in config.cameras}

    def decode(self, topic, value):
        return decode_input(self, topic, value)

    def handle(self, topic, frame):
        return Outputs()


def _lag_partitions(rt: ServiceRuntime) -> set[int]:
    return {int(s.labels["partition"]) for metric in rt.registry.collect() if metric.name == "storelens_consumer_lag"
            for s in metric.samples}


@needs_kafka
@pytest.mark.timeout(120)
def test_a_stage_whose_partitions_are_revoked_is_not_ready_and_drops_their_lag(monkeypatch):
    """A stage worker reading both partitions of ``frames``: a second member joins, the worker keeps one partition
    and the lag gauge only that one; a third member joins and the second one holds the rebalance in its revoke
    hook (as detect-track's snapshot does, its group membership kept meanwhile), so the worker has nothing: its
    broker check fails and no lag is exported. Once the hook returns, the worker is a member with its assignment
    again and ready. Before, ``connected`` stayed True and the gauge kept every partition it ever had."""
    monkeypatch.setattr(workers, "LAG_EVERY_S", 0.2)
    cfg = _kafka_cfg()
    cams = [f"cam-{i}" for i in range(8)]
    config = _site(cfg, [{"id": c, "source": "x.mp4"} for c in cams])
    kafka.ensure_topics(cfg, [s for s in topics.TOPICS if s.name == topics.FRAMES])
    frames = topics.topic_name(topics.FRAMES, cfg.topic_prefix)
    bus = kafka.KafkaBus(cfg, "test")

    def publish(seqs: range) -> None:
        for i in seqs:
            bus.publish(frames, cams[i % 8].encode(), m.encode(m.Frame(camera_id=cams[i % 8], seq=i, ts_ms=i)))
        bus.flush()

    publish(range(40))
    rt = ServiceRuntime("quiet", port=0)
    worker = workers.StageWorker(config, rt, Quiet(config))
    consumer = worker.transport.consumers[-1]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    release, done = threading.Event(), threading.Event()
    second = third = poller = None
    try:
        _wait(lambda: _lag_partitions(rt) == {0, 1} and rt.readiness()[0], 30, "the worker reads both partitions")
        second = kafka.KafkaConsumer(cfg, "quiet", [frames], on_revoke=lambda parts: release.wait(30))

        def poll_second() -> None:
            while not done.is_set():
                second.poll(0.1)

        poller = threading.Thread(target=poll_second, daemon=True)
        poller.start()
        mine = _wait(lambda: len(consumer.assigned) == 1 and set(consumer.assigned), 30, "the worker keeps one")
        publish(range(40, 56))  # read on the partition kept (its lag is exported again)
        _wait(lambda: _lag_partitions(rt) == {p for _t, p in mine}, 10, f"lag of {mine} only")
        time.sleep(0.5)
        assert _lag_partitions(rt) == {p for _t, p in mine} and rt.readiness()[0]
        third = kafka.KafkaConsumer(cfg, "quiet", [frames])  # a rebalance, held by the second member's hook
        _wait(lambda: rt.readiness()[1]["checks"]["broker"] is False, 10, "not ready while nothing is assigned",
              every_s=0.05)
        _wait(lambda: not _lag_partitions(rt), 5, f"no lag exported: {_lag_partitions(rt)}", every_s=0.05)
        assert not consumer.assigned
        release.set()  # the rebalance completes: the worker has its assignment (one partition, or none: idle)
        _wait(lambda: rt.readiness()[0], 30, "ready again")
    finally:
        release.set()
        done.set()
        if poller is not None:
            poller.join(30)
        for c in (second, third):
            if c is not None:
                c.close()
        rt.stopping.set()
        thread.join(60)
        bus.close()
        _delete_topics(cfg)


@needs_kafka
@pytest.mark.timeout(120)
def test_failed_deliveries_are_counted_by_topic():
    """A message the broker refuses (2 MB on ``tracks``, whose limit is 1 MB) is counted in
    ``storelens_delivery_errors_total{topic}`` by a stage worker (before: only ``KafkaBus.errors``, never
    exported)."""
    cfg = _kafka_cfg()
    config = _site(cfg, [{"id": "cam", "source": "x.mp4"}])
    rt = ServiceRuntime("quiet", port=0)
    worker = workers.StageWorker(config, rt, Quiet(config))
    try:
        tracks = worker.transport.publish(topics.TRACKS, b"cam", os.urandom(2 * 1024**2))  # lz4 leaves it 2 MB
        worker.transport.publish(topics.TRACKS, b"cam", b"small")
        _wait(lambda: _metric(rt, "storelens_delivery_errors_total", topic=tracks), 20, "the failure counted")
        with pytest.raises(kafka.BrokerError, match="1 messages failed delivery"):
            worker.transport.bus.flush(10)
        assert _metric(rt, "storelens_delivery_errors_total", topic=tracks) == 1
    finally:
        worker.transport.close()
        _delete_topics(cfg)


def test_readiness_answers_the_details_of_a_failing_check():
    rt = ServiceRuntime("x", port=0)
    rt.add_check("plain", lambda: True)
    rt.add_check("cameras", lambda: (False, {"gone": "no frame published for 31 s"}))
    rt.add_check("fine", lambda: (True, {}))
    assert rt.readiness() == (False, {"status": "not ready", "checks": {"plain": True, "cameras": False,
                                                                        "fine": True},
                                      "details": {"cameras": {"gone": "no frame published for 31 s"}}})
