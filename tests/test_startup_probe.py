"""The startup probe means something: ``/startupz`` says "starting" until the service's loop has beaten
once, which the services do only after loading their models and building their stage, while ``/healthz``
(liveness) passes from the process' start on the heartbeat of its start. Every Deployment's
startupProbe asks the started condition (``/startupz``; the api's ``/healthz``, answered only once the
api has started), so Kubernetes holds the liveness probe back, and reports the pod started, only then.

The service test runs the real detect-track service (``services/detect-track/main.py``, real models) on
the local stack's Kafka (``scripts/stack.sh up``), in a topic namespace of its own.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import yaml

from storelens.runtime.localdeploy import KAFKA, PG_DSN, REPO, free_port, distributed_config
from storelens.runtime.service import ServiceRuntime
from test_k8s import PORTS, TARGETS, _id, component, deployments, render
from test_runtime_readiness import _kafka_up

#: The started condition of each Deployment's startupProbe: the services on ServiceRuntime serve /startupz;
#: the api (FastAPI) answers only once create_app has run, so any answer of its /healthz means started.
STARTED = {"api": "/healthz"}
STARTUPZ = "/startupz"


@pytest.fixture
def runtime():
    """A started ServiceRuntime on a free local port; pytest's own signal handlers are put back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    rt = ServiceRuntime("startup-test", port=0, host="127.0.0.1", stall_s=0.5)
    rt.start()
    try:
        yield rt
    finally:
        rt.stop()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _get(port: int, path: str) -> tuple[int, dict]:
    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    return r.status_code, r.json()


def test_started_only_after_the_first_beat_and_for_good(runtime):
    port = runtime.port
    assert _get(port, "/healthz")[0] == 200, "liveness passes from the start (the heartbeat of the process' start)"
    assert _get(port, STARTUPZ) == (503, {"service": "startup-test", "status": "starting"})
    runtime.beat()  # what a service's loop does, once the stage is built
    assert _get(port, STARTUPZ) == (200, {"service": "startup-test", "status": "started"})
    time.sleep(0.7)  # past stall_s without a beat: liveness fails as before, started stays started
    assert _get(port, "/healthz")[0] == 503
    assert _get(port, STARTUPZ)[0] == 200


def test_the_detect_track_service_is_started_only_once_its_stage_runs(tmp_path):
    """While the models load, /healthz is 200 (what the startupProbe asked before) and /readyz reports the model
    not loaded: /startupz is 503. Once /startupz is 200, the stage is built (the model check passes)."""
    if not _kafka_up():
        pytest.skip(f"no Kafka at {KAFKA} (scripts/stack.sh up)")
    from storelens.paths import asset

    uid = "startup" + uuid.uuid4().hex[:8]
    site = {"store": {"id": uid}, "cameras": [{"id": "cam", "source": str(asset("mot", "TUD-Stadtmitte",
                                                                                   "TUD-Stadtmitte.mp4"))}]}
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(distributed_config(site, uid, PG_DSN, redis_db=0)))  # neither is used
    port, log = free_port(), tmp_path / "detect-track.log"
    env = {**os.environ, "STORELENS_CONFIG": str(config), "STORELENS_HTTP_PORT": str(port),
           "STORELENS_HTTP_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1",
           # this checkout's storelens, whatever checkout the environment's editable install points to
           "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "services" / "detect-track" / "main.py")], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    loading = started = None
    try:
        deadline = time.monotonic() + 180
        while started is None:
            assert proc.poll() is None, f"detect-track exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not started after 180 s:\n{log.read_text()[-3000:]}"
            try:
                code, doc = _get(port, STARTUPZ)
                health = _get(port, "/healthz")[0]
                ready = _get(port, "/readyz")[1]
            except httpx.TransportError:  # the health server is not up yet
                time.sleep(0.02)
                continue
            assert code in (200, 503), (code, doc)
            if code == 503 and health == 200 and ready["checks"].get("model") is False:
                loading = (code, health, ready)
            if code == 200:
                started = ready
            time.sleep(0.02)
        assert loading is not None, "never seen loading (/healthz 200, /startupz 503, model not loaded)"
        assert started["checks"]["model"] is True, started
        deadline = time.monotonic() + 60  # then ready as before: the broker answers and the consumer joined
        while _get(port, "/readyz")[0] != 200:
            assert time.monotonic() < deadline, f"not ready 60 s after the start:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        assert _get(port, STARTUPZ)[0] == 200 and _get(port, "/healthz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("target", TARGETS, ids=_id)
def test_every_startup_probe_asks_the_started_condition(target):
    for dep in deployments(render(target)):
        comp = component(dep)
        port_name, port = PORTS[comp]
        for c in dep["spec"]["template"]["spec"]["containers"]:
            get = c.get("startupProbe", {}).get("httpGet")
            assert get, f"{comp}: no HTTP startupProbe (the liveness probe would judge a loading service)"
            assert get.get("path") == STARTED.get(comp, STARTUPZ) and get.get("port") in (port_name, port), \
                f"{comp}: startupProbe {get.get('path')} on {get.get('port')}, expected " \
                f"{STARTED.get(comp, STARTUPZ)} on {port_name}"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
