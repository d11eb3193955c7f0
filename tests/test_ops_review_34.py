"""Review of what a platform engineer sees running StoreLens (batch 34): logs, health server, service start.

1. The API's logs are JSON lines, uvicorn's too: a request that fails (500) logs one JSON object with the
   traceback under ``exc`` (before: uvicorn's own plain-text handler, one log entry per traceback line), and an
   ``api.workers`` worker process (uvicorn's factory, :func:`storelens.api.server.app_from_env`) logs JSON as well
   (before: no handler there, Python's plain last-resort output, INFO lost).
2. A stage that fails with the ``stop`` policy (detect-track's model failure) logs its traceback (before: only the
   exception's repr: nothing to find the failing line of a crash loop with).
3. A service's environment that cannot work is one ``error:`` line naming the variable and exit 2, not a
   traceback: ``$STORELENS_HTTP_PORT`` that is no port number or a port taken (two services on one host),
   ``$STORELENS_LOG_LEVEL`` that is no level (logs at INFO, saying so, instead of crash-looping).
4. ``storelens count``/``zones`` on a camera URL show it without its credentials (as the logs do; before: the
   table's title showed the user's password and the URL's ``password=`` value).
5. An exception nothing caught (a service's bug, a thread's) is one JSON log line with its traceback, not Python's
   plain multi-line print.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import signal

import pytest
import yaml

from storelens.logs import JsonFormatter
from storelens.paths import asset
from storelens.runtime.localdeploy import free_port

REPO = pathlib.Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORELENS_") or k == "STORELENS_ASSETS"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _json_lines(text: str) -> list[dict]:
    """Every line of ``text`` as a JSON object (fails on a line that is not one)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                pytest.fail(f"not a JSON log line: {line!r}\n--- whole output:\n{text}")
    return out


# -- 1. the API's logs ------------------------------------------------------------------------------------------

_FAILING_ROUTE = textwrap.dedent("""
    import socket, sys, httpx
    from storelens.logs import setup_logging
    setup_logging("WARNING")
    from storelens.api import create_app
    from storelens.api.testing import served_app
    from storelens.config import parse_config
    from storelens.storage import SqliteStorage

    app = create_app(parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]}),
                     SqliteStorage(":memory:"))

    @app.get("/fails")
    def fails():
        raise RuntimeError("route bug")

    with served_app(app) as (url, _server):
        print(httpx.get(url + "/fails").status_code)
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:  # not HTTP at all
            s.sendall(b"\\x00\\x01 garbage\\r\\n\\r\\n")
            s.recv(1024)
""")


def test_api_request_failure_is_one_json_log_line_with_its_traceback() -> None:
    run = subprocess.run([sys.executable, "-c", _FAILING_ROUTE], env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["500"]
    docs = _json_lines(run.stderr)
    failed = [d for d in docs if d["logger"] == "uvicorn.error" and d["level"] == "error"]
    assert len(failed) == 1 and "RuntimeError: route bug" in failed[0]["exc"], docs
    assert any(d["logger"] == "uvicorn.error" and "Invalid HTTP request" in d["msg"] for d in docs), docs


def test_api_worker_process_logs_json(tmp_path: pathlib.Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"store": {"id": "s1"}, "storage": {"path": str(tmp_path / "h.db")},
                                    "cameras": [{"id": "cam-1", "source": str(asset("video", "people_street.mp4"))}]}))
    code = ("import logging\nfrom storelens.api.server import app_from_env\napp_from_env()\n"
            "logging.getLogger('storelens.api.probe').info('worker up', extra={'worker': 1})\n")
    run = subprocess.run([sys.executable, "-c", code], env=_env(STORELENS_CONFIG=str(site)), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    docs = _json_lines(run.stderr)
    assert {"logger": "storelens.api.probe", "msg": "worker up", "worker": 1}.items() <= docs[-1].items(), docs


# -- 2. a stage that stops the service keeps its traceback -------------------------------------------------------

class _FailingStage:
    """A stage whose ``handle`` has a bug, with detect-track's policy: a failure stops the service."""

    name = "failing"
    inputs = {"in": None}
    outputs = ("out",)
    on_error = "stop"

    def decode(self, topic: str, value: bytes) -> bytes:
        return value

    def handle(self, topic: str, value: bytes):
        return self._model_call(value)

    def _model_call(self, value: bytes):
        raise IndexError("inference output shape")


def test_stage_stop_logs_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    from storelens.runtime.bus import InProcessBus
    from storelens.runtime.runner import Runner, RunnerCore
    from storelens.runtime.transports import InProcessTransport

    bus = InProcessBus()
    transport = InProcessTransport(bus, ["in"], ending=["in"], outputs=["out"])
    bus.publish("in", b"cam", b"frame")
    with caplog.at_level(logging.ERROR, logger="storelens.runtime.runner"):
        failure = Runner(RunnerCore(_FailingStage(), []), transport).run()
    assert isinstance(failure, IndexError)
    [record] = [r for r in caplog.records if r.getMessage().startswith("stage failed; stopping")]
    doc = json.loads(JsonFormatter().format(record))
    assert "in _model_call" in doc["exc"] and "IndexError: inference output shape" in doc["exc"], doc


# -- 3. a service's environment ----------------------------------------------------------------------------------

def _site(tmp_path: pathlib.Path) -> pathlib.Path:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"store": {"id": "s1"},
                                    "cameras": [{"id": "cam-1", "source": str(asset("video", "people_street.mp4"))}]}))
    return site


def _service(name: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "services" / name / "main.py")], env=_env(**env),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("service,port,said", [
    ("ingest", "abc", "STORELENS_HTTP_PORT='abc' is not a port number"),
    ("ingest", "70000", "STORELENS_HTTP_PORT='70000' is not a port number"),
    ("chain-rollup", "9100x", "STORELENS_HTTP_PORT='9100x' is not a port number"),  # made before the site is read
])
def test_service_with_a_bad_http_port_says_so(tmp_path: pathlib.Path, service: str, port: str, said: str) -> None:
    run = _service(service, STORELENS_CONFIG=str(_site(tmp_path)), STORELENS_HTTP_PORT=port)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {said}"), run.stderr


def test_service_on_a_taken_http_port_says_so(tmp_path: pathlib.Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        run = _service("ingest", STORELENS_CONFIG=str(_site(tmp_path)), STORELENS_HTTP_PORT=str(port),
                       STORELENS_HTTP_HOST="127.0.0.1")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: ingest: cannot serve /healthz, /readyz and /metrics on 127.0.0.1:{port}: ")
    assert "set STORELENS_HTTP_PORT" in last, last


def test_service_with_an_unknown_log_level_logs_at_info(tmp_path: pathlib.Path) -> None:
    run = _service("ingest", STORELENS_CONFIG=str(tmp_path / "missing.yaml"), STORELENS_LOG_LEVEL="trace")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr  # the config's error, not the level's
    lines = run.stderr.strip().splitlines()
    assert lines[-1] == f"error: config file not found: {tmp_path / 'missing.yaml'}", run.stderr
    [said] = _json_lines("\n".join(lines[:-1]))
    assert said["level"] == "error"
    assert "$STORELENS_LOG_LEVEL='trace' is not a log level: logging at INFO" in said["msg"], said


# -- 4. the CLI's output of a camera URL -------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["count", "--line", "0,100,300,100"], ["zones", "--zone", "0,0,100,0,100,100"]])
def test_cli_output_of_a_camera_url_hides_its_credentials(argv: list[str]) -> None:
    port = free_port()  # nothing listens: the live source is retried until the stop
    source = f"rtsp://admin:s3cret@127.0.0.1:{port}/live?channel=1&password=p4ss"
    proc = subprocess.Popen([sys.executable, "-m", "storelens.cli", argv[0], source, *argv[1:]], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:  # the pipeline runs (models loaded) once the source is being retried
            seen.append(line)
            if "source unavailable, retrying" in line:
                break
        proc.send_signal(signal.SIGINT)  # how a run of a live camera ends (Ctrl-C)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen) + err
    assert proc.returncode == 0, err
    title = "".join(out.split())  # (the table's title wraps at the table's width)
    assert f"rtsp://127.0.0.1:{port}/live?channel=1&password=***:0frames" in title, out
    assert "s3cret" not in out + err and "p4ss" not in out + err, out + err


# -- 5. an exception nothing caught ------------------------------------------------------------------------------

_UNCAUGHT = textwrap.dedent("""
    import threading
    from storelens.logs import setup_logging
    setup_logging("INFO")

    def camera_loop():
        raise ValueError("in a thread")

    t = threading.Thread(target=camera_loop, name="camera-1")
    t.start()
    t.join()
    raise RuntimeError("in the main thread")
""")


def test_an_uncaught_exception_is_one_json_log_line() -> None:
    run = subprocess.run([sys.executable, "-c", _UNCAUGHT], env=_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    thread, main = _json_lines(run.stderr)
    assert thread["level"] == "error" and thread["thread_name"] == "camera-1", thread
    assert "in camera_loop" in thread["exc"] and "ValueError: in a thread" in thread["exc"], thread
    assert main["level"] == "critical" and "RuntimeError: in the main thread" in main["exc"], main


# -- 6. a Ctrl-C while the embedded run starts its cameras ------------------------------------------------------

def test_a_ctrl_c_while_the_cameras_start_stops_the_run(tmp_path: pathlib.Path, monkeypatch) -> None:
    """A Ctrl-C (KeyboardInterrupt) that reaches the main thread right after the camera threads started (the CLI's
    test above sends it once a camera reports its first try) escaped ``run()`` before its stop handling: the run
    did not stop what it had started (under load the CLI kept retrying the source past its Ctrl-C). It is a stop."""
    import threading

    from storelens.config import parse_config
    from storelens.runtime import ingest
    from storelens.runtime.embedded import EmbeddedPipeline

    config = parse_config({"store": {"id": "ctrl-c"}, "storage": {"backend": "sqlite", "path": str(tmp_path / "h.db")},
                           "cameras": [{"id": "door", "source": f"rtsp://127.0.0.1:{free_port()}/live"}]})
    started = ingest.CameraSupervisor.apply

    def apply_then_ctrl_c(self, cameras):  # the cameras start, then the Ctrl-C arrives (before the run's loop)
        started(self, cameras)
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest.CameraSupervisor, "apply", apply_then_ctrl_c)
    pipe = EmbeddedPipeline(config)
    result = pipe.run()  # (before: KeyboardInterrupt raised here, the camera threads left running)
    assert result.interrupted
    assert not [t.name for t in threading.enumerate() if t.name.startswith("ingest-door") and t.is_alive()]
