"""`storelens db upgrade` / `db current`, `storage.migrate: wait` and the k8s `db-upgrade` initContainer.

Real PostgreSQL of the test stack (a fresh schema per test, named in the DSN's search_path as the services
would have it) and SQLite files; the k8s manifests rendered with kustomize.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid

import pytest
import yaml

from storelens.config import StorageConfig, parse_config
from storelens.errors import ConfigError, StorageError
from storelens.runtime import service
from storelens.runtime.localdeploy import free_port
from storelens.runtime.service import ServiceRuntime
from storelens.storage import base, open_storage
from storelens.storage.history import SqlStorage
import storelens.storage.migrations as migrations
from storelens.storage.migrations import revisions
from test_k8s import (DB, TARGETS, _id, _load_site, container_env, deployments, dummy_secret,
                      pod_spec, render, secret_refs, site_yaml)
from test_storage_migrations import PG_DSN

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
HEAD = {chain: len(revisions(chain)) for chain in ("history", "gallery")}
HEAD_ID = {chain: revisions(chain)[-1] for chain in ("history", "gallery")}


@pytest.fixture
def schema():
    """A fresh, empty PostgreSQL schema (created: what a DBA gives a store), dropped afterwards."""
    name = f"test_db31_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as c:
            c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {PG_DSN}: {exc}")
    yield name
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def dsn(schema: str) -> str:
    return make_conninfo(PG_DSN, options=f"-c search_path={schema}")


def tables(schema: str) -> set[str]:
    with psycopg.connect(PG_DSN) as c:
        return {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}


def site(tmp_path: pathlib.Path, storage: dict) -> pathlib.Path:
    path = tmp_path / f"site-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(json.dumps({"store": {"id": "s"}, "storage": storage, "faces": {"enabled": True},
                                "cameras": [{"id": "c", "source": "${CAM_URL}",  # never opened by `db`
                                             "lines": [{"id": "l", "a": [0, 5], "b": [9, 5]}]}]}))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "storelens.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def storage_of(backend: str, tmp_path: pathlib.Path, schema_name: str | None) -> dict:
    if backend == "postgres":
        return {"backend": "postgres", "dsn": dsn(schema_name), "migrate": "wait"}
    return {"backend": "sqlite", "path": str(tmp_path / "h.db"), "migrate": "wait"}


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request):
    return request.param


@pytest.fixture
def store(backend, tmp_path, request) -> dict:
    """The storage section of a site of ``backend`` (PostgreSQL: a fresh schema), ``migrate: wait``."""
    return storage_of(backend, tmp_path, request.getfixturevalue("schema") if backend == "postgres" else None)


# 1 -- storelens db upgrade / db current ------------------------------------------------------------------------


def probe_json(port: int, path: str) -> tuple[int, dict]:
    """GET ``path`` of a local server: its status and JSON body ((0, {}) when nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return 0, {}

def test_db_upgrade_brings_an_empty_store_to_head_and_prints_the_revisions(store, tmp_path):
    cfg = site(tmp_path, store)
    res = run_cli("db", "current", "--config", str(cfg))
    assert res.returncode == 1, res.stderr  # behind
    assert "history (" in res.stdout and f"revision 0 (base); head {HEAD['history']} ({HEAD_ID['history']}): " \
        "behind" in res.stdout, res.stdout
    res = run_cli("db", "upgrade", "--config", str(cfg), "--create")
    assert res.returncode == 0, res.stderr
    for chain in ("history", "gallery"):
        assert f"revision 0 (base) -> {HEAD[chain]} ({HEAD_ID[chain]}) (head)" in \
            [ln.split("): ", 1)[1] for ln in res.stdout.splitlines() if ln.startswith(chain)], res.stdout
    assert {"schema_version", "track_points"} <= tables_of(store)
    with SqlStorage(store.get("dsn") or store["path"], upgrade=False) as s:  # at head: opens without migrating
        assert s.schema_version() == HEAD["history"]
    res = run_cli("db", "current", "--config", str(cfg))
    assert res.returncode == 0 and res.stdout.count(": up to date") == 2, res.stdout + res.stderr
    res = run_cli("db", "upgrade", "--config", str(cfg), "--create")  # again: nothing to do
    assert res.returncode == 0 and f"{HEAD['history']} ({HEAD_ID['history']}) -> {HEAD['history']}" in res.stdout


def _schema(store: dict) -> str:
    return store["dsn"].split("search_path=")[1].rstrip("'")


def tables_of(store: dict) -> set[str]:
    """The tables of the store's history (PostgreSQL: its schema; SQLite: its file, none when there is none)."""
    if store["backend"] == "postgres":
        return tables(_schema(store))
    import sqlite3

    if not pathlib.Path(store["path"]).exists():
        return set()
    with sqlite3.connect(store["path"]) as c:
        return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_db_upgrade_reads_storelens_config_and_names_an_unreachable_database(tmp_path):
    cfg = site(tmp_path, {"backend": "postgres", "dsn": "postgresql://u:secret@127.0.0.1:1/db?connect_timeout=2"})
    res = subprocess.run([sys.executable, "-m", "storelens.cli", "db", "upgrade"], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env={**os.environ, "STORELENS_CONFIG": str(cfg)})
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "cannot connect to PostgreSQL" in line and "port=1" in line and "secret" not in res.stderr, res.stderr


# 2 -- storage.migrate: wait --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, ok", [("auto", True), ("wait", True), ("later", False)])
def test_migrate_is_a_typed_setting(value, ok):
    if ok:
        assert StorageConfig(migrate=value).migrate == value
    else:
        with pytest.raises(ConfigError, match="storage.migrate: Input should be .auto. or .wait."):
            parse_config({"store": {"id": "s"}, "cameras": [], "storage": {"migrate": value}})
    assert StorageConfig().migrate == "auto"  # the embedded mode and the tests: as before


def test_wait_does_not_migrate_is_not_ready_then_ready_after_db_upgrade(store, tmp_path, monkeypatch):
    cfg = site(tmp_path, store)
    target = store.get("dsn") or store["path"]
    rt = ServiceRuntime("analytics", port=0)  # its checks, as /readyz answers them (no server needed)
    monkeypatch.setattr(base, "SCHEMA_POLL_S", (0.0, 0.0))  # the next look at once
    looks: list[tuple[bool, dict, bool]] = []

    def open_(upgrade: bool) -> SqlStorage:
        if len(looks) == 1:  # the second look: the first one found the tables behind
            ready, doc = rt.readiness()
            looks.append((ready, doc, rt.health()[0]))
            assert tables_of(store) == set()  # nothing created by the first look
            res = run_cli("db", "upgrade", "--config", str(cfg), "--create")  # what the initContainer does meanwhile
            assert res.returncode == 0, res.stderr
        else:
            looks.append((upgrade, {}, True))
        return SqlStorage(target, upgrade=upgrade)

    with base.open_migrated(open_, "wait") as s:
        assert s.schema_version() == HEAD["history"]
    (first, _, _), (ready, doc, healthy) = looks
    assert first is False  # never asked to migrate
    assert not ready and healthy, doc
    detail = doc["details"]["schema"]
    assert f"at revision 0 (base), waiting for revision {HEAD['history']} ({HEAD_ID['history']})" in detail, detail
    assert "storelens db upgrade" in detail
    assert rt.readiness() == (True, {"status": "ready", "checks": {}})  # the wait is over


def test_open_storage_with_wait_waits_instead_of_migrating(store, monkeypatch):
    """open_storage (every service's way in) waits; a SIGTERM (service.STOP) ends the wait with a clear error."""
    monkeypatch.setattr(service, "STOP", threading.Event())
    service.STOP.set()  # the first pause ends the wait at once
    with pytest.raises(StorageError, match=r"stopped while waiting: history schema .* at revision 0 \(base\)"):
        open_storage(StorageConfig(**store))
    assert tables_of(store) == set()
    assert "schema" not in service.WAITS
    with pytest.raises(migrations.SchemaBehind, match="waiting for revision"):
        SqlStorage(store.get("dsn") or store["path"], upgrade=False)


def test_the_api_serves_healthz_and_a_not_ready_readyz_while_it_waits(schema, tmp_path, monkeypatch):
    from storelens.api.server import wait_for_schema

    store = {"backend": "postgres", "dsn": dsn(schema), "migrate": "wait"}
    cfg_path = site(tmp_path, store)
    config = parse_config(yaml.safe_load(cfg_path.read_text()), open_cameras=False)
    monkeypatch.setattr(base, "SCHEMA_POLL_S", (0.05, 0.05))
    monkeypatch.setattr(service, "STOP", threading.Event())
    port = free_port()
    seen: dict = {}

    def probe(path: str) -> tuple[int, dict]:
        return probe_json(port, path)

    def operator() -> None:  # probes the waiting api, then migrates
        try:
            for _ in range(600):
                code, doc = probe("/readyz")
                if code == 503 and "schema" in doc.get("details", {}):
                    seen["readyz"] = doc
                    seen["healthz"] = probe("/healthz")[0]
                    seen["upgrade"] = run_cli("db", "upgrade", "--config", str(cfg_path)).returncode
                    return
                service.STOP.wait(0.05)
        finally:
            if "upgrade" not in seen:
                service.STOP.set()  # never hang the test: end the wait

    t = threading.Thread(target=operator)
    t.start()
    try:
        wait_for_schema(config, "127.0.0.1", port)  # returns once the schema is at head
    finally:
        t.join()
    assert seen["healthz"] == 200 and seen["upgrade"] == 0, seen
    assert "waiting for revision" in seen["readyz"]["details"]["schema"], seen
    assert probe("/healthz")[0] == 0  # the probe server is gone: the port is the app's now


# 3 -- a schema newer than the code (a rollback) ------------------------------------------------------------------

def test_a_newer_schema_is_a_clear_error_and_no_wait(schema, tmp_path):
    store = {"backend": "postgres", "dsn": dsn(schema), "migrate": "wait"}
    cfg = site(tmp_path, store)
    assert run_cli("db", "upgrade", "--config", str(cfg), "--create").returncode == 0
    with psycopg.connect(dsn(schema), autocommit=True) as c:
        c.execute("UPDATE schema_version SET version = %s", (HEAD["history"] + 5,))
    with pytest.raises(StorageError, match="newer than this StoreLens") as err:
        open_storage(StorageConfig(**store))  # at once: not a wait (STOP is not set)
    assert not isinstance(err.value, migrations.SchemaBehind) and f"revision {HEAD['history'] + 5}" in str(err.value)
    res = run_cli("db", "upgrade", "--config", str(cfg), "--create")
    assert res.returncode == 2 and "newer than this StoreLens" in res.stderr, res.stdout + res.stderr
    res = run_cli("db", "current", "--config", str(cfg))
    assert res.returncode == 1 and "NEWER than this StoreLens" in res.stdout, res.stdout + res.stderr


# 4 -- Kubernetes: the db-upgrade initContainer and storage.migrate: wait ------------------------------------------

@pytest.mark.parametrize("target", TARGETS, ids=_id)
def test_the_api_migrates_in_an_init_container_and_the_services_wait(target, monkeypatch):
    docs = render(target)
    text = site_yaml(docs)
    assert yaml.safe_load(text)["storage"]["migrate"] == "wait"
    apis = [d for d in deployments(docs) if d["metadata"]["name"] == "storelens-api"]
    if target.name.endswith("-edge"):  # the edge half runs no api and opens no database
        assert not apis
        return
    (api,) = apis
    (init,) = pod_spec(api)["initContainers"]
    (main,) = pod_spec(api)["containers"]
    assert init["name"] == "db-upgrade" and init["image"] == main["image"]
    assert init["command"] == ["storelens", "db", "upgrade", "--config", "/etc/storelens/site.yaml"]
    assert "startupProbe" not in init and secret_refs(init) == DB
    assert init["securityContext"] == main["securityContext"]
    with monkeypatch.context() as mp:  # the site loads with the init container's environment alone
        cfg = _load_site(mp, docs, text, container_env(docs, init))
    assert cfg.storage.migrate == "wait"
    assert f"{dummy_secret('storelens-db', 'username')}:{dummy_secret('storelens-db', 'password')}@" in cfg.storage.dsn

