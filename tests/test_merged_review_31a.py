"""Review of the merged batch (storage.migrate wait, `storelens db upgrade`, the k8s db-upgrade initContainer; staff
left out of face analytics), each fix with a test that fails on the code before:

1. The services that wait for the schema do it in a `db-wait` initContainer (`storelens db wait`), not under their
   startup probe (a long migration got them killed: CrashLoopBackOff).
2. ``staff_only_customers`` is one grouped query (was quadratic on SQLite: a correlated nested NOT EXISTS).
3. A staff exit is no passer of ``/v1/interest`` (the staff filter sat in the LEFT JOIN's ON).
4. A SIGTERM during the wait is a clean stop (exit 0), also when it lands during the api's last look.
5. One answer to "which stores does the api open" (build_app, wait_for_schema, `db upgrade`).
6. `db upgrade --db typo.db` refuses a missing SQLite file (unless --create); `db current` exits 1 when behind;
   the api's port serves no /metrics (it needs the metrics token) while it waits.

Real PostgreSQL of the test stack (a fresh schema per test) and SQLite files; the k8s manifests rendered with
kustomize.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
import storelens.errors as errors
from storelens.runtime import service
from storelens.runtime.localdeploy import free_port
from storelens.storage import base, upgrade
from storelens.storage.history import SqlStorage
from storelens.storage import zones as zq
from test_db_upgrade_31 import HEAD, REPO, dsn, run_cli, schema, site, tables  # noqa: F401 (a fixture)
from test_k8s import (DB, TARGETS, _id, _load_site, container_env, deployments, pod_spec, render, secret_refs,
                      site_yaml)
from test_storage_migrations import legacy

psycopg = pytest.importorskip("psycopg")

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture
def stop(monkeypatch):
    """A fresh ``service.STOP`` (set by a test as a SIGTERM would), and the signal handlers put back afterwards
    (the services' runtime installs its own)."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(service, "STOP", threading.Event())
    yield service.STOP
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def config_of(path: pathlib.Path):
    return parse_config(yaml.safe_load(path.read_text()), open_cameras=False)


def wait_site(tmp_path: pathlib.Path, storage: dict, **extra) -> pathlib.Path:
    path = tmp_path / "site.yaml"
    path.write_text(json.dumps({"store": {"id": "s"}, "storage": {"migrate": "wait", **storage},
                                "cameras": [{"id": "c", "source": "x.mp4",
                                             "lines": [{"id": "l", "a": [0, 5], "b": [9, 5]}]}], **extra}))
    return path


# 1 -- the services wait in an initContainer ------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS, ids=_id)
def test_every_deployment_that_opens_the_database_waits_in_an_init_container(target, monkeypatch):
    """With `storage.migrate: wait`, a Deployment with the database's credentials (what opening the storage needs:
    the api, analytics, reid, chain-rollup; ingest, detect-track and attributes have none) runs `db upgrade` or
    `db wait` in an initContainer: the startup probe is not running yet, however long the migration takes."""
    docs = render(target)
    text = site_yaml(docs)
    assert yaml.safe_load(text)["storage"]["migrate"] == "wait"
    opening = [d for d in deployments(docs) if secret_refs(pod_spec(d)["containers"][0]) & DB]
    names = {d["metadata"]["name"] for d in opening}
    assert names & {"storelens-analytics", "storelens-reid", "storelens-chain-rollup", "storelens-api"} == names
    assert names or target.name.endswith("-edge"), names
    upgrade_sc = [c["securityContext"] for d in opening for c in pod_spec(d).get("initContainers", [])
                  if c["name"] == "db-upgrade"]
    for dep in opening:
        (main,) = pod_spec(dep)["containers"]
        inits = pod_spec(dep).get("initContainers", [])
        assert [c["name"] for c in inits] in (["db-upgrade"], ["db-wait"]), (dep["metadata"]["name"], inits)
        (init,) = inits
        verb = init["name"].removeprefix("db-")
        assert init["command"] == ["storelens", "db", verb, "--config", "/etc/storelens/site.yaml"]
        assert init["image"] == main["image"] and "startupProbe" not in init
        assert secret_refs(init) == DB
        assert init["securityContext"] == main["securityContext"]
        assert all(sc == init["securityContext"] for sc in upgrade_sc)  # one hardened definition
        with monkeypatch.context() as mp:  # the site loads with the init container's environment alone
            cfg = _load_site(mp, docs, text, container_env(docs, init))
        assert cfg.storage.migrate == "wait" and cfg.storage.backend == "postgres"


def _wait_proc(cfg: pathlib.Path) -> tuple[subprocess.Popen, str]:
    """`storelens db wait` started, and the line it says while it waits (read before anything else runs)."""
    proc = subprocess.Popen([sys.executable, "-m", "storelens.cli", "db", "wait", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    for line in proc.stderr:
        if line.startswith("waiting for `storelens db upgrade`"):
            return proc, line
    proc.wait(timeout=60)
    pytest.fail(f"db wait ended without waiting: {proc.returncode} {proc.stdout.read()}")


def test_db_wait_returns_only_after_db_upgrade(schema, tmp_path):
    cfg = wait_site(tmp_path, {"backend": "postgres", "dsn": dsn(schema)})
    proc, said = _wait_proc(cfg)
    try:
        assert "history (" in said and "at revision 0 (base), head" in said, said
        assert proc.poll() is None  # still waiting: nothing migrated it
        assert tables(schema) == set()  # and it created nothing
        assert run_cli("db", "upgrade", "--config", str(cfg)).returncode == 0
        out, err = proc.communicate(timeout=120)  # generous: its next look is at most WAIT_POLL_S[1] away
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "history (" in out and out.count("(head)") == 2, out  # the history and the gallery (PostgreSQL)


def test_db_wait_ends_quietly_on_sigterm_and_refuses_a_newer_schema(schema, tmp_path):
    cfg = wait_site(tmp_path, {"backend": "postgres", "dsn": dsn(schema)})
    proc, _ = _wait_proc(cfg)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "error" not in err.lower(), err
    assert run_cli("db", "upgrade", "--config", str(cfg)).returncode == 0
    with psycopg.connect(dsn(schema), autocommit=True) as c:
        c.execute("UPDATE schema_version SET version = %s", (HEAD["history"] + 1,))
    res = subprocess.run([sys.executable, "-m", "storelens.cli", "db", "wait", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "newer than this StoreLens" in line and f"revision {HEAD['history'] + 1}" in line, line


# 2 -- staff_only_customers: one grouped query ----------------------------------------------------------------------

def test_staff_only_customers_is_right_and_has_no_correlated_subquery(tmp_path, capsys):
    with SqlStorage(str(tmp_path / "h.db")) as store:
        matches, staff = [], []
        for c in range(20):  # 20 staff customers x 1,200 matches, each on a staff track
            for i in range(1200):
                track = c * 10_000 + i
                matches.append(m.CustomerMatch(event_id=f"e{track}", camera_id="door", track_id=track, seq=i,
                                               ts_ms=T0 + i, customer_id=f"staff-{c:02d}", is_new=i == 0))
                staff.append(m.StaffTrack(camera_id="door", track_id=track, ts_ms=T0 + i, seq=i, cue="uniform"))
        for cid, track in (("mixed", 1), ("mixed", 900_001), ("shopper", 900_002)):  # 1: staff-00's staff track
            matches.append(m.CustomerMatch(event_id=f"x{cid}{track}", camera_id="door", track_id=track, seq=1,
                                           ts_ms=T0, customer_id=cid, is_new=False))
        store.write_customer_matches(matches)
        store.write_records(staff)
        seen: list[str] = []
        listen = lambda conn, cursor, statement, params, context, many: seen.append((statement, params))  # noqa: E731
        sa.event.listen(store.db.engine, "before_cursor_execute", listen)
        t = time.perf_counter()
        try:
            got = store.staff_only_customers()
        finally:
            sa.event.remove(store.db.engine, "before_cursor_execute", listen)
        took = time.perf_counter() - t
        assert got == [f"staff-{c:02d}" for c in range(20)]
        ((statement, params),) = [s for s in seen if "customer_matches" in s[0]]
        plan = store._read(lambda conn: conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all())
    text = "\n".join(str(r[-1]) for r in plan)
    assert "CORRELATED" not in text.upper(), text
    with capsys.disabled():
        print(f"\nstaff_only_customers, 20 x 1,200 staff matches on SQLite: {took * 1000:.0f} ms")


# 3 -- a staff exit is no passer ------------------------------------------------------------------------------------

def test_a_staff_exit_is_no_passer_of_interest(tmp_path):
    poly = [[0, 0], [10, 0], [10, 10], [0, 10]]
    cfg = parse_config({"store": {"id": "s"}, "storage": {"path": str(tmp_path / "h.db")}, "privacy": {"k_min": 1},
                        "cameras": [{"id": "door", "source": "x.mp4",
                                     "zones": [{"id": "shelf", "kind": "shelf", "polygon": poly}]}]})
    with SqlStorage(str(tmp_path / "h.db")) as history:
        history.write_records([
            m.StaffTrack(camera_id="door", track_id=3, ts_ms=T0, seq=1, cue="uniform", detail="red"),
            *[m.ZoneEvent(event_id=f"z{t}", camera_id="door", zone_id="shelf", zone_kind="shelf", track_id=t,
                          kind=m.ZONE_EVENT_EXIT, ts_ms=T0 + 1_000 * t, seq=t, dwell_ms=2_000) for t in (2, 3)],
        ])
        keys = [("door", "shelf")]
        assert zq.count_ended_visits(history, keys, T0, T0 + 60_000) == 1
        assert [v.track_id for v in zq.ended_visits(history, keys, T0, T0 + 60_000)] == [2]
        with signed_in_client(create_app(cfg, history)) as c:
            res = c.get("/v1/interest", params={"start_ms": T0, "end_ms": T0 + 60_000})
            assert res.status_code == 200, res.text
            (row,) = res.json()["items"]
        assert row["passers"] == 1 and row["dwell_s"]["n"] == 1, row


# 4 -- SIGTERM during the wait: a clean stop ------------------------------------------------------------------------

def _main(service_dir: str):
    spec = importlib.util.spec_from_file_location(f"_main_{service_dir.replace('-', '_')}",
                                                  REPO / "services" / service_dir / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("service_dir", ["analytics", "chain-rollup", "reid"])
def test_sigterm_while_a_service_waits_for_the_schema_exits_0(service_dir, schema, tmp_path, monkeypatch, stop):
    cfg = wait_site(tmp_path, {"backend": "postgres", "dsn": dsn(schema)},
                    faces={"enabled": service_dir == "reid"})
    monkeypatch.setenv("STORELENS_CONFIG", str(cfg))
    monkeypatch.setenv("STORELENS_HTTP_PORT", str(free_port()))
    monkeypatch.setenv("STORELENS_HTTP_HOST", "127.0.0.1")
    stop.set()  # the SIGTERM: the first pause of the wait ends it
    assert _main(service_dir)() == 0
    assert tables(schema) == set()  # it waited (never migrated), then stopped


def test_sigterm_during_the_apis_last_look_serves_nothing(tmp_path, monkeypatch, stop):
    from storelens.api import server

    cfg = wait_site(tmp_path, {"backend": "sqlite", "path": str(tmp_path / "h.db")})
    SqlStorage(str(tmp_path / "h.db")).close()  # at head

    def build_app(config):
        raise AssertionError("built the app after a SIGTERM")

    monkeypatch.setattr(server, "build_app", build_app)
    stop.set()  # landed while the last look found the schema at head
    assert server.serve_site(str(cfg), host="127.0.0.1", port=free_port()) == 0


def test_sigterm_while_the_api_waits_is_a_stop_and_its_port_serves_no_metrics(schema, tmp_path, monkeypatch, stop):
    from storelens.api.server import serve_site

    cfg = wait_site(tmp_path, {"backend": "postgres", "dsn": dsn(schema)})
    monkeypatch.setattr(base, "SCHEMA_POLL_S", (0.05, 0.05))
    port = free_port()
    seen: dict = {}

    def get(path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def operator() -> None:  # once the api waits: /metrics, then the SIGTERM
        try:
            for _ in range(600):
                if get("/readyz") == 503:
                    seen["metrics"] = get("/metrics")
                    return
                stop.wait(0.05)
        finally:
            stop.set()

    t = threading.Thread(target=operator)
    t.start()
    try:
        code = serve_site(str(cfg), host="127.0.0.1", port=port)
    finally:
        t.join()
    assert code == 0 and seen == {"metrics": 404}, (code, seen)


# 5 -- one answer to "which stores does the api open" --------------------------------------------------------------

def test_the_api_waits_for_a_gallery_an_earlier_release_left(tmp_path, stop):
    """SQLite, migrate: wait, faces off, and a gallery file an earlier release left (behind): build_app opens it
    for the retention purge, so the api's wait (with its probe server) covers it; `db upgrade` migrates it."""
    from storelens.api.server import build_app, wait_for_schema

    history, gallery = tmp_path / "h.db", tmp_path / "h.db.gallery.db"
    SqlStorage(str(history)).close()  # the history at head
    with contextlib.closing(sqlite3.connect(gallery)) as c, c:  # the gallery as the release before Alembic left it
        c.executescript(";\n".join(legacy("sqlite_gallery")))
    config = config_of(wait_site(tmp_path, {"backend": "sqlite", "path": str(history)}))
    assert [(s.chain, s.target, s.purge_only) for s in upgrade.site_stores(config)] == [
        ("history", str(history), False), ("gallery", str(gallery), True)]
    stop.set()
    with pytest.raises(errors.WaitStopped, match="gallery schema"):  # the gallery too, not the history alone
        wait_for_schema(config, "127.0.0.1", free_port())
    assert [(b.chain, b.current < b.head, a.current == a.head) for b, a in upgrade.upgrade(config)] == [
        ("history", False, True), ("gallery", True, True)]
    wait_for_schema(config, "127.0.0.1", free_port())  # at head: returns (STOP is only read while waiting)
    app = build_app(config)  # opens without a wait (STOP set: a wait would raise)
    for close in app.router.on_shutdown:
        close()


# 6 -- db upgrade refuses a typo, db current's exit code ------------------------------------------------------------

def test_db_upgrade_refuses_a_missing_sqlite_file_unless_create_and_current_exits_1_when_behind(tmp_path):
    cfg = site(tmp_path, {"backend": "sqlite", "path": str(tmp_path / "h.db")})  # faces on: a gallery file too
    typo = tmp_path / "typo.db"
    res = run_cli("db", "upgrade", "--config", str(cfg), "--db", str(typo))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no history database at" in res.stderr and "--create" in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == []  # nothing created
    res = run_cli("db", "current", "--config", str(cfg), "--db", str(typo))
    assert res.returncode == 1 and "behind" in res.stdout, res.stdout + res.stderr
    res = run_cli("db", "upgrade", "--config", str(cfg), "--db", str(typo), "--create")
    assert res.returncode == 0 and "creating a new history database" in res.stderr, res.stdout + res.stderr
    assert typo.exists() and pathlib.Path(f"{typo}.gallery.db").exists()
    res = run_cli("db", "current", "--config", str(cfg), "--db", str(typo))
    assert res.returncode == 0 and res.stdout.count("up to date") == 2, res.stdout + res.stderr
