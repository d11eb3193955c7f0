"""The distributed mode end to end: six services as separate processes on real Kafka,
PostgreSQL and Redis (started by ``scripts/stack.sh up``, which ``make test`` runs).

Every scenario ingests ``mot/TUD-Stadtmitte`` and must end with exactly the counts
and tracks the embedded mode produces for the same input and configuration:
undisturbed (with bad messages injected, which must land in the dead-letter topic),
detect-track SIGKILLed mid-stream and restarted, the analytics worker restarted, and
the Kafka broker restarted mid-stream.
"""
from __future__ import annotations

import signal
import subprocess
import threading
import time

import httpx
import pytest

from storelens.config import KafkaConfig
from storelens.contract import messages as m
from storelens.runtime.localdeploy import KAFKA, REPO, SERVICES, LocalDeployment
from storelens.paths import asset

pytestmark = pytest.mark.slow

VIDEO = asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")
N_FRAMES = 179
START_TS_MS = 1_767_225_600_000
LAST_TS_MS = START_TS_MS + (N_FRAMES - 1) * 40
CAMERA = "stadtmitte"
LINES = {"x200": ([200, 0], [200, 480]), "x320": ([320, 0], [320, 480]), "x440": ([440, 0], [440, 480])}
SITE = {
    "store": {"id": "tud"},
    "cameras": [{"id": CAMERA, "source": str(VIDEO), "start_ts_ms": START_TS_MS,
                 "lines": [{"id": k, "a": a, "b": b} for k, (a, b) in LINES.items()]}],
}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """What the embedded mode produces for the same video and configuration."""
    from storelens.config import parse_config
    from storelens.runtime.embedded import EmbeddedPipeline
    from storelens.storage import SqliteStorage

    tmp = tmp_path_factory.mktemp("embedded")
    cfg = parse_config({**SITE, "storage": {"backend": "sqlite", "path": str(tmp / "e.db")}})
    storage = SqliteStorage(str(tmp / "e.db"))
    result = EmbeddedPipeline(cfg, storage=storage).run()
    tracks = storage.tracks(CAMERA, 0, 2**53 - 1)
    return {"counts": result.line_counts[CAMERA],
            "tracks": {t.track_id: [(p.ts_ms, p.seq, tuple(round(v, 2) for v in p.bbox_xyxy)) for p in t.points]
                       for t in tracks}}


def _api_tracks(dep: LocalDeployment) -> dict:
    body = dep.api.get(f"/v1/cameras/{CAMERA}/tracks",
                     params={"start_ms": 0, "end_ms": 2**53 - 1, "limit_points": 100_000}, timeout=30).json()
    return {t["track_id"]: [(p["ts_ms"], p["seq"], tuple(round(v, 2) for v in p["bbox_xyxy"])) for p in t["points"]]
            for t in body["tracks"]}


def _assert_same_as_embedded(dep: LocalDeployment, counts: dict, embedded: dict) -> None:
    totals = {k: {"in": v["in"], "out": v["out"]} for k, v in counts["totals"].items()}
    assert totals == embedded["counts"]
    assert sum(c["in"] + c["out"] for c in totals.values()) >= 5  # the lines are really crossed
    assert _api_tracks(dep) == embedded["tracks"]


def _dead_letters(dep: LocalDeployment, expect: int, timeout_s: float = 30) -> list:
    from storelens.runtime.kafka import consume_all

    msgs = consume_all(KafkaConfig(bootstrap_servers=KAFKA), dep.dead_topic, timeout_s=timeout_s, expect=expect)
    return [m.decode(m.DeadLetter, msg.value) for msg in msgs[:expect]]


@pytest.fixture
def deployment(tmp_path):
    dep = LocalDeployment(tmp_path, SITE)
    try:
        yield dep
    finally:
        for proc in dep.procs.values():
            if proc.poll() is None:
                proc.kill()


def test_undisturbed_with_bad_input(deployment, embedded):
    from storelens.runtime.kafka import KafkaBus

    dep = deployment
    dep.start_all()
    dep.wait_metric("detect-track", "storelens_messages_out_total", "tracks", 20)
    good = m.Frame(camera_id=CAMERA, seq=999_999, ts_ms=START_TS_MS, jpeg=b"\xff\xd8\xff\xe0 corrupt", width=640,
                   height=480)
    p = KafkaBus(KafkaConfig(bootstrap_servers=KAFKA), f"{dep.uid}-test")
    p.publish(dep.frames_topic, CAMERA.encode(), m.encode(good))
    p.publish(dep.frames_topic, CAMERA.encode(), m.encode(m.Frame(camera_id=CAMERA, jpeg=b"x" * 64))[:-20])
    p.publish(dep.frames_topic, b"lobby", m.encode(m.Frame(camera_id="lobby", jpeg=b"\xff\xd8")))
    p.close(30)

    counts = dep.wait_done(CAMERA, LAST_TS_MS)
    _assert_same_as_embedded(dep, counts, embedded)
    letters = _dead_letters(dep, 3)
    reasons = sorted(dl.reason for dl in letters)
    assert len(letters) == 3, reasons
    assert any("corrupt JPEG" in r for r in reasons) and any("unknown camera 'lobby'" in r for r in reasons)
    assert any("cannot decode storelens.v1.Frame" in r for r in reasons)
    assert dep.metric("detect-track", "storelens_dead_letters_total", "frames") == 3
    # every service is healthy, ready, exports metrics, and stops cleanly on SIGTERM
    for name in SERVICES:
        assert httpx.get(dep.url(name, "/healthz")).status_code == 200
        assert httpx.get(dep.url(name, "/readyz")).status_code == 200
    assert "storelens_consumer_lag" in httpx.get(dep.url("detect-track", "/metrics")).text
    dep.shutdown()


def test_detect_track_sigkill_and_restart(deployment, embedded):
    dep = deployment
    dep.start_all()
    dep.wait_metric("detect-track", "storelens_messages_out_total", "tracks", 80)
    assert dep.stop("detect-track", signal.SIGKILL) == -signal.SIGKILL
    dep.start("detect-track")
    dep.wait_ready("detect-track")
    counts = dep.wait_done(CAMERA, LAST_TS_MS)
    _assert_same_as_embedded(dep, counts, embedded)
    assert "restored tracker state" in dep.log("detect-track")


def test_analytics_restart(deployment, embedded):
    dep = deployment
    dep.start_all()
    dep.wait_metric("analytics", "storelens_messages_in_total", "tracks", 70)
    assert dep.stop("analytics") == 0
    dep.start("analytics")
    dep.wait_ready("analytics")
    counts = dep.wait_done(CAMERA, LAST_TS_MS)
    _assert_same_as_embedded(dep, counts, embedded)


@pytest.mark.serial  # stops the broker every other test shares
def test_kafka_broker_restart(deployment, embedded):
    dep = deployment
    dep.start_all()
    dep.wait_metric("detect-track", "storelens_messages_out_total", "tracks", 60)
    # detect-track's probes while the broker is away: alive throughout (a flush waiting for the broker
    # beats the heartbeat), not ready at some point (the flush's wait, or the failed ping, says so)
    seen: dict[str, set[int | str]] = {"/healthz": set(), "/readyz": set()}
    done = threading.Event()

    def probe() -> None:
        while not done.wait(0.5):
            for path, codes in seen.items():
                try:
                    codes.add(httpx.get(dep.url("detect-track", path), timeout=5).status_code)
                except httpx.HTTPError as exc:  # no answer: recorded, fails the liveness assertion below
                    codes.add(repr(exc))

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    stack = str(REPO / "scripts" / "stack.sh")
    try:  # away for 30 s at least, whatever the machine's speed: past a flush slice and a ping interval
        subprocess.run([stack, "stop", "kafka"], check=True, timeout=120)
        time.sleep(30)
    finally:
        subprocess.run([stack, "start", "kafka"], check=True, timeout=180)
        done.set()
        prober.join(10)
    assert seen["/healthz"] == {200}, seen
    assert any(code != 200 for code in seen["/readyz"]), seen
    counts = dep.wait_done(CAMERA, LAST_TS_MS)
    _assert_same_as_embedded(dep, counts, embedded)
    dep.wait_ready("detect-track")
