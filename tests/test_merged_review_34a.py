"""Review of the merged batch 34 (part a); each test fails on the code before:

1. Writes from another origin: the exemption of ``SameOriginWritesMiddleware`` was any ``Authorization`` header, but
   the credential check (HTTPBearer) ignores a scheme other than Bearer and takes the cookie: a page of another
   port could send ``Authorization: Basic x`` with the user's cookie. Only a ``Bearer`` credential exempts now.
   (The README and the middleware say that the refusal needs HTTPS or localhost: browsers send ``Sec-Fetch-*``
   only there.)
2. With ``api.workers > 1`` the open ``/v1/live`` streams did not end at SIGTERM: the workers run uvicorn's own
   server, which waited ``SHUTDOWN_GRACE_S`` (20 s) and then cancelled them ("Cancel N running task(s)"). Each
   worker now ends its streams at the signal, as the single-process server does.
3. ``LiveHub.subscribe``: a stream that subscribed while the first read was running, when the hub closed during
   that read, was added to the listeners afterwards and never ended.
4. ``$STORELENS_LOG_LEVEL`` that is no level (``trace``) or an alias (``WARN``) made the CLI exit 2 while the
   services log at INFO: the Kubernetes initContainers (``storelens db upgrade``, same ConfigMap) crash-looped.
   The CLI takes it as the services do, at its default level WARNING, saying so (``--log-level`` keeps its
   choices).
5. Migration 0023 records the erasures that answered 503 before it (the audit log's newest entry of the id): their
   retry after the upgrade answers 204, not 404.
6. The API service's ``$STORELENS_API_PORT`` that is no port number was a traceback (exit 1), a taken port
   uvicorn's exit 3: now one ``error:`` line naming the variable, exit 2.

Real components: the API app over SQLite (TestClient; uvicorn worker processes of the API service), SQLite files
and the PostgreSQL of ``scripts/stack.sh``, the CLI and the services in processes of their own.
"""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import uuid
from typing import Iterator

import httpx
import psycopg
import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.api.routes.live import LiveHub
from storelens.api.testing import signed_in_client, sse_events
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.runtime.localdeploy import free_port
from storelens.storage import PostgresStorage, SqliteStorage
from storelens.storage import alerts as aq
from storelens.storage.gallery import SqlGalleryStore
from storelens.storage.migrations import revisions
from test_review_fixes_7 import downgrade_to

REPO = pathlib.Path(__file__).resolve().parents[1]
PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
BEFORE_0023 = revisions("history").index("0023")  # the history chain's version before revision 0023
CAMERA_SITE = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "/tmp/x.mp4"}]}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORELENS_") or k == "STORELENS_ASSETS"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


# -- 1. only a Bearer credential exempts a write from another origin ---------------------------------------------

@pytest.mark.parametrize("authorization, status", [
    ("Basic x", 403),  # ignored by the credential check: the cookie signs the request in
    ("Bearer", 403),  # no credential: the cookie again
    ("Bearer ", 403),
    ("Token abc", 403),
    ("bearer {token}", 200),  # the caller's own token (the scheme in any case, as HTTPBearer takes it)
])
def test_only_a_bearer_credential_exempts_a_cross_site_write(tmp_path, authorization, status) -> None:
    with SqliteStorage(str(tmp_path / "h.db")) as st:
        st.write_records([m.Alert(alert_id="r:c:0", rule_id="r", kind="camera_occupancy", severity="warning",
                                  camera_id="c", state="firing", ts_ms=1000, seq=0, fired_ts_ms=1000, fired_seq=0,
                                  value=3, threshold=2, message="crowd")])
        app = create_app(parse_config(CAMERA_SITE), st)
        app.state.context.auth.create_user("ann", "ann's long password", "manager")
        client = TestClient(app)
        login = client.post("/v1/auth/login", data={"username": "ann", "password": "ann's long password"})
        assert login.status_code == 200
        r = client.post("/v1/alerts/r:c:0/resolve", headers={
            "Sec-Fetch-Site": "cross-site", "Authorization": authorization.format(token=login.json()["access_token"])})
        assert r.status_code == status, r.text
        assert aq.get_alert(st, "r:c:0")["state"] == ("firing" if status == 403 else "resolved")


# -- 2. api.workers > 1: SIGTERM ends the live streams -----------------------------------------------------------

@pytest.mark.timeout(180)
def test_sigterm_ends_the_live_streams_of_worker_processes(tmp_path) -> None:
    port = free_port()
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({**CAMERA_SITE, "api": {"workers": 2}, "storage": {"path": str(tmp_path / "h.db")}}))
    env = _env(STORELENS_CONFIG=str(site), STORELENS_API_HOST="127.0.0.1", STORELENS_API_PORT=str(port),
               STORELENS_JWT_SECRET="merged-34a-shared-session-signing-key", STORELENS_ADMIN_USERNAME="admin",
               STORELENS_ADMIN_PASSWORD="admin's long password")
    proc = subprocess.Popen([sys.executable, str(REPO / "services" / "api" / "main.py")], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(600):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    pytest.fail(f"the API exited with {proc.returncode}: {proc.stderr.read()}")
                threading.Event().wait(0.1)
            login = client.post("/v1/auth/login", data={"username": "admin", "password": "admin's long password"})
            assert login.status_code == 200, login.text
            with client.stream("GET", "/v1/live", headers={"Authorization": f"Bearer {login.json()['access_token']}"},
                               timeout=httpx.Timeout(30, read=None)) as stream:
                events = sse_events(stream.iter_lines(), keepalives=True)
                assert next(events)["event"] == "counts"  # the stream is open
                proc.send_signal(signal.SIGTERM)
                assert next(events, None) is None  # it ends (before: a keepalive 15 s later, cancelled at 20 s)
        _, err = proc.communicate(timeout=15)  # below SHUTDOWN_GRACE_S (20 s)
        assert proc.returncode == 0, err
        assert "Cancel" not in err and "timeout graceful shutdown exceeded" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- 3. a hub closed during a subscriber's first read ------------------------------------------------------------

class _GatedHub(LiveHub):
    """A hub whose read waits for ``gate`` (``reading`` is set when it started)."""

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]  # the read below uses no context
        self.reading, self.gate = asyncio.Event(), asyncio.Event()

    async def _read_or_error(self):
        self.reading.set()
        await self.gate.wait()
        self.counts = {"in": 1}
        return [("counts", self.counts)]


def test_a_subscription_ends_when_the_hub_closes_during_its_first_read() -> None:
    async def scenario() -> tuple[bool, int, list[str]]:
        hub = _GatedHub()
        got: list[str] = []

        async def listen() -> None:
            async for kind, _ in hub.subscribe():
                got.append(kind)
                if kind == "end":
                    return

        task = asyncio.get_running_loop().create_task(listen())
        await hub.reading.wait()
        hub.close()  # the server shuts down while the first read runs
        hub.gate.set()
        while not task.done() and not hub.listeners:  # the subscription ends, or waits as a listener
            await asyncio.sleep(0)
        done, listeners = task.done(), len(hub.listeners)
        for t in (task, hub._task):
            if t is not None and not t.done():
                t.cancel()
        return done, listeners, got

    done, listeners, got = asyncio.run(scenario())
    assert (done, listeners) == (True, 0), got  # before: a listener no close() ever told


# -- 4. the CLI takes $STORELENS_LOG_LEVEL as the services do -----------------------------------------------------

@pytest.mark.parametrize("level, said", [
    ("trace", "$STORELENS_LOG_LEVEL='trace' is not a log level: logging at WARNING"),  # the CLI's default level
    ("WARN", None),  # Python's alias of WARNING
    ("warning", None),
])
def test_cli_db_upgrade_with_an_unknown_log_level_runs(tmp_path, level, said) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({**CAMERA_SITE, "storage": {"path": str(tmp_path / "h.db")}}))
    run = subprocess.run([sys.executable, "-m", "storelens.cli", "db", "upgrade", "--create", "--config", str(site)],
                         env=_env(STORELENS_LOG_LEVEL=level), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "history" in run.stdout and "(head)" in run.stdout, run.stdout
    errors = [d for d in (json.loads(ln) for ln in run.stderr.splitlines() if ln.startswith("{"))
              if d.get("level") == "error"]
    assert [d["msg"].split(" (use")[0] for d in errors] == ([said] if said else []), run.stderr


def test_cli_log_level_flag_keeps_its_choices(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "storelens.cli", "--log-level", "trace", "db", "current"],
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "argument --log-level: invalid choice" in run.stderr, run.stderr


# -- 5. migration 0023 keeps the retry of an erasure answered 503 before it ---------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def store_at_0022(request, tmp_path) -> Iterator[tuple[str, dict]]:
    """``(kind, how to open it)`` of a history store as revision 0022 left it."""
    if request.param == "sqlite":
        path = str(tmp_path / "h.db")
        with SqliteStorage(path) as st:
            st._write(lambda c: downgrade_to(c, BEFORE_0023))
        yield "sqlite", {"path": path}
        return
    schema = f"test_m34a_{uuid.uuid4().hex[:12]}"
    with PostgresStorage(PG_DSN, schema=schema) as st:
        st._write(lambda c: downgrade_to(c, BEFORE_0023))
    yield "postgres", {"schema": schema}
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _open(kind: str, where: dict):
    return SqliteStorage(where["path"]) if kind == "sqlite" else PostgresStorage(PG_DSN, schema=where["schema"])


def test_erasures_answered_503_before_0023_are_204_on_their_retry(store_at_0022, tmp_path) -> None:
    kind, where = store_at_0022
    # the audit rows the release before wrote (0022: no pending_erasures table yet), written without migrating
    engine = (sa.create_engine(f"sqlite:///{where['path']}") if kind == "sqlite" else sa.create_engine(
        "postgresql+psycopg://", poolclass=sa.pool.NullPool,
        creator=lambda: psycopg.connect(PG_DSN, options=f"-c search_path={where['schema']}")))
    action = "DELETE /v1/customers/{customer_id}"
    rows = [  # (ts_ms, target, status)
        (1000, "/v1/customers/cust-503", 503),  # answered 503: its retry must find the erasure pending
        (1000, "/v1/customers/cust-ok", 503), (2000, "/v1/customers/cust-ok", 204),  # retried with success
        (1000, "/v1/customers/cust-404", 404),
        (1500, "/v1/customers/cust-late", 204), (2500, "/v1/customers/cust-late", 503),  # newest is the 503
        (1000, "/v1/customers/bad id!", 503),  # no id the route takes: skipped
    ]
    with engine.begin() as c:
        for ts_ms, target, status in rows:
            c.execute(sa.text("INSERT INTO audit_log (ts_ms, actor, action, target, detail, client) "
                              "VALUES (:ts, 'admin', :action, :target, :detail, '127.0.0.1')"),
                      {"ts": ts_ms, "action": action, "target": target, "detail": json.dumps({"status": status})})
        c.execute(sa.text("INSERT INTO audit_log (ts_ms, actor, action, target, detail, client) VALUES "
                          "(1000, 'admin', 'POST /v1/alerts/{alert_id}/resolve', '/v1/customers/x', "
                          "'{\"status\": 503}', '')"))
    engine.dispose()
    st = _open(kind, where)  # migrates to head (0023 and later)
    gallery = SqlGalleryStore(tmp_path / "g.db", dim=4) if kind == "sqlite" else SqlGalleryStore(
        PG_DSN, dim=4, schema=where["schema"])
    try:
        pending = {c for c in ("cust-503", "cust-ok", "cust-404", "cust-late", "bad id!", "x")
                   if st.erasure_pending(c)}
        assert pending == {"cust-503", "cust-late"}
        sent: list[str] = []
        client = signed_in_client(create_app(parse_config(CAMERA_SITE), st, gallery_store=gallery,
                                             on_erasure=sent.append))
        assert [client.delete(f"/v1/customers/{c}").status_code
                for c in ("cust-503", "cust-503", "cust-ok")] == [204, 404, 404]
        assert "cust-503" in sent and not st.erasure_pending("cust-503")
    finally:
        gallery.close()
        st.close()


# -- 6. the API service's port from the environment --------------------------------------------------------------

def _api_service(tmp_path, **env: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({**CAMERA_SITE, "storage": {"path": str(tmp_path / "h.db")}}))
    return subprocess.run([sys.executable, str(REPO / "services" / "api" / "main.py")],
                          env=_env(STORELENS_CONFIG=str(site), **env), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("port", ["abc", "70000", "-1"])
def test_api_service_with_a_bad_port_says_so(tmp_path, port) -> None:
    run = _api_service(tmp_path, STORELENS_API_PORT=port)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == \
        f"error: STORELENS_API_PORT={port!r} is not a port number (0 to 65535)", run.stderr


def test_api_service_on_a_taken_port_says_so(tmp_path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        run = _api_service(tmp_path, STORELENS_API_PORT=str(port), STORELENS_API_HOST="127.0.0.1")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: api: cannot serve on 127.0.0.1:{port}: "), run.stderr
    assert last.endswith("set STORELENS_API_PORT to a free port of this host"), last
