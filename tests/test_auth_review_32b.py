"""Review fixes of users, keys and the audit log (read-only security review, batch 32b); each test fails on the code
before its fix.

1. the audit log names the user or key an admin changed, and its role (``users.create``/``users.reset``,
   ``users.delete``, ``api-keys.create``/``api-keys.revoke``), never a password or a key;
2. a signed-in principal's refused writes are audited at most ``ANONYMOUS_AUDIT_PER_MINUTE`` a minute (the rest
   counted in ``storelens_audit_rows_dropped_total``), and the retention purge keeps the audit log to
   ``privacy.retention.audit_log_days`` (wall clock; SQLite and PostgreSQL, the API process's and the analytics
   service's purge);
3. deleting a user revokes the API keys it created, and lowering its role those above the new one (API and CLI);
4. the k8s sites no longer believe a client's own ``X-Forwarded-For`` (``forwarded_allow_ips`` is the ingress
   controller's network, not ``*``): a real uvicorn server records the real address, not the one the client wrote.
"""
from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import threading
import time

import httpx
import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient
from test_k8s import K8S_DIR, TARGETS, _id, expected_services, render
from test_k8s_review_fixes import _api_config
from test_privacy import PG_DSN, pg_schema  # noqa: F401 (a fixture)

from storelens.api import create_app
from storelens.api.app import uvicorn_config
from storelens.api.security import ANONYMOUS_AUDIT_PER_MINUTE
from storelens.api.testing import api_key_for, signed_in_client
from storelens.cli import main
from storelens.config import parse_config
from storelens.errors import ConfigError
from storelens.runtime.localdeploy import free_port
from storelens.runtime.retention import RetentionPurge, api_retention
from storelens.storage import SqliteStorage, SqlStorage
from storelens.storage import auth as store

SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]}
PASSWORD = "a long enough password"
DAY_MS = 86_400_000


@pytest.fixture
def app(tmp_path):
    return create_app(parse_config(SITE), SqliteStorage(str(tmp_path / "h.db")))


def _entries(client: TestClient) -> list[dict]:
    return client.get("/v1/audit", params={"limit": 1000}).json()["entries"]


def _session(app, username: str) -> TestClient:
    token = TestClient(app).post("/v1/auth/login", data={"username": username, "password": PASSWORD})
    return TestClient(app, headers={"Authorization": f"Bearer {token.json()['access_token']}"})


# -- 1. the audit log names the user or key ----------------------------------------------------------------------


def test_user_and_key_changes_are_audited_with_their_user_key_and_role(app) -> None:
    admin = signed_in_client(app, "admin")
    assert admin.post("/v1/users", json={"username": "bob", "password": PASSWORD, "role": "viewer"}).status_code == 200
    assert admin.post("/v1/users", json={"username": "bob", "password": PASSWORD + "!", "role": "admin"}
                      ).status_code == 200  # bob made an admin
    r = admin.post("/v1/api-keys", json={"name": "till 3", "role": "manager"})
    assert r.status_code == 201
    key_id, key = r.json()["key_id"], r.json()["key"]
    assert admin.delete(f"/v1/api-keys/{key_id}").status_code == 204
    assert admin.delete("/v1/users/bob").status_code == 204

    rows = {e["action"]: e for e in _entries(admin) if "." in e["action"]}
    actor = rows["users.create"]["actor"]
    assert actor.startswith("key:")  # the admin's key
    got = {action: (e["target"], e["detail"]) for action, e in rows.items()}
    assert got == {
        "users.create": ("bob", {"role": "viewer", "created": True}),
        "users.reset": ("bob", {"role": "admin", "created": False, "old_role": "viewer"}),
        "api-keys.create": (key_id, {"role": "manager", "name": "till 3"}),
        "api-keys.revoke": (key_id, {"role": "manager", "name": "till 3", "created_by": actor}),
        "users.delete": ("bob", {"role": "admin"}),
    }
    assert all(e["actor"] == actor and e["client"] == "testclient" for e in rows.values())
    everything = json.dumps(_entries(admin))
    secret = key.partition(".")[2]
    assert PASSWORD not in everything and secret not in everything and key not in everything


# -- 2. the audit log's growth: refusals capped, retention ---------------------------------------------------------


def test_refused_writes_of_a_signed_in_principal_are_audited_at_most_a_cap_a_minute(app) -> None:
    viewer = signed_in_client(app, "viewer")
    me = viewer.get("/v1/auth/me").json()["username"]
    for _ in range(300):
        assert viewer.post("/v1/users", json={"username": "x", "password": PASSWORD, "role": "admin"}
                           ).status_code == 403
    rows, total = store.list_audit(app.state.context.storage, actor=me)
    assert total == ANONYMOUS_AUDIT_PER_MINUTE
    metrics = app.state.context.metrics
    assert metrics.audit_dropped.labels("refused")._value.get() == 300 - ANONYMOUS_AUDIT_PER_MINUTE
    # an admin's successful writes are not capped
    admin = signed_in_client(app, "admin")
    n = ANONYMOUS_AUDIT_PER_MINUTE + 5
    for i in range(n):
        assert admin.post("/v1/api-keys", json={"name": f"k{i}", "role": "viewer"}).status_code == 201
    assert store.list_audit(app.state.context.storage, action="POST /v1/api-keys")[1] == n
    assert store.list_audit(app.state.context.storage, action="api-keys.create")[1] == n


NOW = 1_767_225_600_000 + 200 * DAY_MS
AGES_D = (400, 366, 364, 1)  # audit entries this many days before NOW


def _site(**retention) -> object:
    return parse_config({**SITE, "privacy": {"retention": retention}})


@pytest.mark.parametrize(("retention", "kept_ages_d"), [
    ({}, (364, 1)),  # the default: 365 days
    ({"audit_log_days": 30, "clock": "camera"}, (1,)),  # wall clock even when the history counts camera time
    ({"audit_log_days": None}, AGES_D),  # kept for good
    ({"audit_log_days": 30, "enabled": False}, AGES_D),  # no purge at all
], ids=["default", "camera-clock", "kept", "purge-off"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_retention_purge_keeps_the_audit_log_to_its_days(tmp_path, pg_schema, backend, retention,  # noqa: F811
                                                             kept_ages_d) -> None:
    storage = (SqlStorage(str(tmp_path / "h.db")) if backend == "sqlite"
               else SqlStorage(PG_DSN, schema=pg_schema))
    with storage:
        for age in AGES_D:
            store.audit(storage, NOW - age * DAY_MS, "ana", "users.create", f"u{age}", {"role": "viewer"})
        purge = RetentionPurge(storage, _site(**retention), wall_ms=lambda: NOW)
        deleted = purge.run()
        assert deleted.get("audit_log", 0) == len(AGES_D) - len(kept_ages_d)
        rows, _ = store.list_audit(storage)
        assert sorted(int(r["target"][1:]) for r in rows) == sorted(kept_ages_d)


def test_the_audit_log_retention_is_typed() -> None:
    assert _site().privacy.retention.audit_log_days == 365.0
    with pytest.raises(ConfigError, match="privacy.retention.audit_log_days"):
        _site(audit_log_days=0)
    with pytest.raises(ConfigError, match="privacy.retention.audit_log_days"):
        _site(audit_log_days="a year")


def test_the_api_process_purges_the_audit_log_of_its_sqlite_history(tmp_path) -> None:
    """The API process alone on a SQLite history (:func:`api_retention`), with metrics."""
    app = create_app(parse_config({**SITE, "privacy": {"retention": {"audit_log_days": 10}}}),
                     SqliteStorage(str(tmp_path / "h.db")))
    storage, metrics = app.state.context.storage, app.state.context.metrics
    now = int(time.time() * 1000)
    store.audit(storage, now - 11 * DAY_MS, "ana", "users.create", "old")
    store.audit(storage, now - 9 * DAY_MS, "ana", "users.create", "new")
    purge = api_retention(app.state.context.config, storage)
    try:
        assert purge is not None
        assert purge.run(metrics)["audit_log"] == 1
    finally:
        purge.lease.close()
    assert [r["target"] for r in store.list_audit(storage)[0]] == ["new"]
    assert metrics.purged.labels("audit_log")._value.get() == 1


def test_the_analytics_service_purges_the_audit_log(pg_schema) -> None:  # noqa: F811
    """The distributed mode: the analytics service's timer purges the shared PostgreSQL history's audit log."""
    from storelens.runtime.analytics_app import AnalyticsApp
    from storelens.runtime.service import ServiceRuntime

    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "rtsp://cam/1"}]})
    loop = asyncio.new_event_loop()
    with SqlStorage(PG_DSN, schema=pg_schema) as storage:
        now = int(time.time() * 1000)
        store.audit(storage, now - 400 * DAY_MS, "ana", "users.create", "old")
        store.audit(storage, now - DAY_MS, "ana", "users.create", "new")
        rt = ServiceRuntime("analytics", port=0)
        app = AnalyticsApp(cfg, storage, None, rt, loop=loop)
        try:
            loop.run_until_complete(app._chores())
        finally:
            app.close()
            loop.close()
        assert [r["target"] for r in store.list_audit(storage)[0]] == ["new"]
        assert rt.metrics.purged.labels("audit_log")._value.get() == 1


# -- 3. a deleted or demoted user's keys -------------------------------------------------------------------------


def test_a_deleted_admin_keeps_no_access_through_the_keys_it_created(app) -> None:
    auth = app.state.context.auth
    auth.create_user("anna", PASSWORD, "admin")
    auth.create_user("bert", PASSWORD, "admin")
    anna = _session(app, "anna")
    key = anna.post("/v1/api-keys", json={"name": "anna's", "role": "admin"}).json()["key"]
    with_key = TestClient(app, headers={"Authorization": f"Bearer {key}"})
    assert with_key.get("/v1/users").status_code == 200
    bert = _session(app, "bert")
    assert bert.delete("/v1/users/anna").status_code == 204
    assert with_key.get("/v1/users").status_code == 401
    key_id = key[len("slk_"):].partition(".")[0]
    revoked = [e for e in _entries(bert) if e["action"] == "api-keys.revoke"]
    assert [(e["actor"], e["target"], e["detail"]["reason"]) for e in revoked] == [("bert", key_id, "creator deleted")]


@pytest.mark.parametrize(("new_role", "working"), [
    ("manager", {"viewer", "manager"}),
    ("viewer", {"viewer"}),
    ("admin", {"viewer", "manager", "admin"}),
])
def test_a_demoted_admin_keeps_only_the_keys_of_its_new_role(app, new_role: str, working: set[str]) -> None:
    app.state.context.auth.create_user("anna", PASSWORD, "admin")
    anna = _session(app, "anna")
    keys = {role: anna.post("/v1/api-keys", json={"name": role, "role": role}).json()["key"]
            for role in ("viewer", "manager", "admin")}
    admin = signed_in_client(app, "admin")
    assert admin.post("/v1/users", json={"username": "anna", "password": PASSWORD, "role": new_role}
                      ).status_code == 200
    still = {role for role, key in keys.items()
             if TestClient(app, headers={"Authorization": f"Bearer {key}"}).get("/v1/auth/me").status_code == 200}
    assert still == working
    revoked = {e["detail"]["role"] for e in _entries(admin) if e["action"] == "api-keys.revoke"}
    assert revoked == {"viewer", "manager", "admin"} - working


def test_the_cli_revokes_the_keys_of_a_deleted_or_demoted_user(tmp_path, monkeypatch) -> None:
    db = str(tmp_path / "cli.db")
    storage = SqliteStorage(db)
    app = create_app(parse_config(SITE), storage)
    auth = app.state.context.auth
    for name in ("anna", "carl"):
        auth.create_user(name, PASSWORD, "admin")
    anna_key = auth.create_api_key("anna's", "admin", "anna")[1]
    carl_keys = {role: auth.create_api_key(role, role, "carl")[1] for role in ("manager", "admin")}
    other = api_key_for(app, "admin")  # created by someone else: stays
    assert main(["users", "delete", "anna", "--db", db]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "create", "carl", "--role", "manager", "--db", db]) == 0
    fresh = create_app(parse_config(SITE), SqliteStorage(db))  # no cached principals
    status = {name: TestClient(fresh, headers={"Authorization": f"Bearer {k}"}).get("/v1/auth/me").status_code
              for name, k in {"anna": anna_key, "carl-manager": carl_keys["manager"],
                              "carl-admin": carl_keys["admin"], "other": other}.items()}
    assert status == {"anna": 401, "carl-manager": 200, "carl-admin": 401, "other": 200}
    revoked = store.list_audit(fresh.state.context.storage, action="api-keys.revoke")[0]
    assert sorted((e["actor"], e["detail"]["created_by"]) for e in revoked) == [("cli", "anna"), ("cli", "carl")]


# -- 4. the client address behind the Ingress ----------------------------------------------------------------------


def _k8s_forwarded_allow_ips() -> str:
    return yaml.safe_load((K8S_DIR / "base" / "site.yaml").read_text())["api"]["forwarded_allow_ips"]


@pytest.mark.parametrize(("proxy", "forwarded_for", "client"), [
    # the site's value as shipped: the test (127.0.0.1) is no ingress controller, its header is not believed
    ("", "6.6.6.6", "127.0.0.1"),
    ("", "6.6.6.6, 198.51.100.9", "127.0.0.1"),
    # the test stands in for the controller, which appended the address it saw to what the client wrote
    (",127.0.0.1", "6.6.6.6, 198.51.100.9", "198.51.100.9"),
], ids=["not-a-proxy", "not-a-proxy-appended", "proxy-appended"])
def test_a_served_api_with_the_k8s_setting_records_the_real_client(tmp_path, proxy: str, forwarded_for: str,
                                                                   client: str) -> None:
    site = {**SITE, "api": {"forwarded_allow_ips": _k8s_forwarded_allow_ips() + proxy}}
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    key = api_key_for(app, "admin")
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/api-keys", json={"name": "x", "role": "viewer"},
                       headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": forwarded_for})
        assert r.status_code == 201
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    rows, _ = store.list_audit(app.state.context.storage, action="POST /v1/api-keys")
    assert [e["client"] for e in rows] == [client]


@pytest.mark.parametrize("target", [t for t in TARGETS if "api" in expected_services(t)], ids=_id)
def test_no_rendered_k8s_site_believes_any_forwarded_for(target, monkeypatch) -> None:
    _, _, cfg = _api_config(render(target), monkeypatch)
    entries = [h.strip() for h in cfg.api.forwarded_allow_ips.split(",")]
    assert "*" not in entries
    for h in entries:
        ipaddress.ip_network(h)  # addresses or networks only


def test_the_api_warns_at_start_when_any_forwarded_for_is_believed(caplog) -> None:
    from storelens.api.app import warn_forwarded_any

    with caplog.at_level(logging.WARNING, logger="storelens.api.app"):
        warn_forwarded_any("10.0.0.0/8, 127.0.0.1")
        assert not caplog.records
        warn_forwarded_any("*")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "first X-Forwarded-For entry" in caplog.text
