"""Sign-in: passwords, sessions (token and cookie), API keys, the rate limit, the audit log, the CLI."""
from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.api.security import UNKNOWN_USER
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.storage import SqliteStorage
from storelens.storage import auth as store

SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}],
        "auth": {"login_failures_per_minute": 3, "login_attempts_per_minute": 10}}
PASSWORD = "a long enough password"


@pytest.fixture
def app(tmp_path):
    app = create_app(parse_config(SITE), SqliteStorage(str(tmp_path / "h.db")))
    app.state.context.auth.create_user("mia", PASSWORD, "manager")
    return app


def _login(client: TestClient, user: str = "mia", password: str = PASSWORD):
    return client.post("/v1/auth/login", data={"username": user, "password": password})


def test_password_is_stored_as_argon2_hash_only(app) -> None:
    row = store.get_user(app.state.context.storage, "mia")
    assert row["password_hash"].startswith("$argon2id$") and PASSWORD not in row["password_hash"]


def test_login_gives_a_token_and_an_httponly_cookie(app) -> None:
    client = TestClient(app)
    r = _login(client)
    assert r.status_code == 200 and r.json()["role"] == "manager" and r.json()["expires_in_s"] == 900
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "storelens_session=" in cookie
    assert client.get("/v1/auth/me").json() == {"username": "mia", "role": "manager", "kind": "user"}  # cookie
    bearer = TestClient(app, headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert bearer.get("/v1/auth/me").json()["username"] == "mia"
    assert client.post("/v1/auth/logout").status_code == 204
    assert client.get("/v1/auth/me").status_code == 401


@pytest.mark.parametrize(("user", "password"), [("mia", "wrong password!!"), ("nobody", PASSWORD), ("mia", "")])
def test_wrong_credentials_are_401_and_audited(app, user: str, password: str) -> None:
    r = _login(TestClient(app), user, password)
    assert r.status_code in (401, 422)
    if r.status_code == 401:
        rows, _ = store.list_audit(app.state.context.storage, action="auth.login-failed")
        # a name no user has is not kept (it may be a password typed in the wrong field)
        assert [e["target"] for e in rows] == [user if user == "mia" else UNKNOWN_USER]


def test_tampered_expired_and_foreign_tokens_are_refused(app) -> None:
    token = _login(TestClient(app)).json()["access_token"]
    head, payload, sig = token.split(".")
    for bad in (f"{head}.{payload}.{sig[:-2]}xx", "not-a-token", "slk_abc.def"):
        assert TestClient(app, headers={"Authorization": f"Bearer {bad}"}).get("/v1/auth/me").status_code == 401
    other = create_app(parse_config(SITE), SqliteStorage(":memory:"))  # another signing key
    other.state.context.auth.create_user("mia", PASSWORD, "manager")
    assert TestClient(other, headers={"Authorization": f"Bearer {token}"}).get("/v1/auth/me").status_code == 401


def test_login_rate_limit_per_user_then_429(app) -> None:
    client = TestClient(app)
    statuses = [_login(client, "mia", f"wrong password {i}").status_code for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    r = _login(client)  # even the right password waits for the window
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_deleted_user_and_revoked_key_lose_access_at_once(app) -> None:
    admin = signed_in_client(app)
    token = _login(TestClient(app)).json()["access_token"]
    mia = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert mia.get("/v1/cameras").status_code == 200
    assert admin.delete("/v1/users/mia").status_code == 204
    assert mia.get("/v1/cameras").status_code == 401
    key = admin.post("/v1/api-keys", json={"name": "till 3", "role": "manager"}).json()
    till = TestClient(app, headers={"Authorization": f"Bearer {key['key']}"})
    assert till.get("/v1/auth/me").json()["role"] == "manager"
    assert key["key_id"] in {k["key_id"] for k in admin.get("/v1/api-keys").json()["keys"]}
    assert "key" not in admin.get("/v1/api-keys").json()["keys"][0]  # the secret is shown once only
    assert admin.delete(f"/v1/api-keys/{key['key_id']}").status_code == 204
    assert till.get("/v1/auth/me").status_code == 401
    assert admin.delete("/v1/users/mia").status_code == 404


def test_sign_out_and_a_password_reset_end_every_session_of_the_user(app) -> None:
    """A stolen token is worth nothing once its user signs out (on any device) or an admin resets the password."""
    admin = signed_in_client(app)

    def as_(token: str) -> TestClient:
        return TestClient(app, headers={"Authorization": f"Bearer {token}"})

    phone, laptop = (_login(TestClient(app)).json()["access_token"] for _ in range(2))
    assert as_(phone).get("/v1/auth/me").status_code == as_(laptop).get("/v1/auth/me").status_code == 200
    assert as_(phone).post("/v1/auth/logout").status_code == 204
    assert as_(phone).get("/v1/auth/me").status_code == 401 and as_(laptop).get("/v1/auth/me").status_code == 401
    assert any(e["actor"] == "mia" and e["action"] == "POST /v1/auth/logout"
               for e in admin.get("/v1/audit").json()["entries"])
    fresh = _login(TestClient(app)).json()["access_token"]
    assert as_(fresh).get("/v1/auth/me").status_code == 200  # signing in again works
    assert admin.post("/v1/users", json={"username": "mia", "password": "another long password",
                                         "role": "manager"}).status_code == 200
    assert as_(fresh).get("/v1/auth/me").status_code == 401
    assert _login(TestClient(app), "mia", "another long password").status_code == 200
    assert TestClient(app).post("/v1/auth/logout").status_code == 204  # no session: only clears the cookie


def test_the_cookie_is_renewed_but_never_past_session_max_s_after_the_sign_in(app) -> None:
    import time

    import jwt

    from storelens.api.security import COOKIE_NAME

    auth = app.state.context.auth
    ttl, cap = auth.cfg.session_ttl_s, auth.cfg.session_max_s
    now = int(time.time())
    epoch = store.get_user(app.state.context.storage, "mia")["session_epoch"]  # of mia's sessions

    def cookie(signed_in_s_ago: int) -> str:  # a token past half its lifetime, of a sign-in that long ago
        claims = {"sub": "mia", "role": "manager", "typ": "session", "iat": now - ttl // 2 - 10,
                  "exp": now + ttl // 2 - 10, "iat_ms": (now - ttl // 2 - 10) * 1000,
                  "auth_ms": (now - signed_in_s_ago) * 1000, "sep": epoch}
        return jwt.encode(claims, auth._secret, algorithm="HS256")

    client = TestClient(app)
    client.cookies.set(COOKIE_NAME, cookie(3600))
    r = client.get("/v1/auth/me")
    assert r.status_code == 200 and COOKIE_NAME in r.headers.get("set-cookie", "")  # renewed in use
    renewed = jwt.decode(r.cookies[COOKIE_NAME], auth._secret, algorithms=["HS256"])
    assert renewed["auth_ms"] == (now - 3600) * 1000 and renewed["exp"] - renewed["iat"] == ttl
    near_cap = jwt.decode(auth.renew(cookie(cap - 100), auth.authenticate(cookie(cap - 100))), auth._secret,
                          algorithms=["HS256"])
    assert near_cap["exp"] <= now - cap + 100 + cap  # the renewal stops at the cap
    late = TestClient(app)
    late.cookies.set(COOKIE_NAME, cookie(cap + 10))
    assert late.get("/v1/auth/me").status_code == 401  # past the cap: sign in again


def test_a_renewal_on_a_replica_that_missed_the_sign_out_does_not_revive_the_session(app) -> None:
    """Another API replica signs the user out; this one still trusts its cached user for a few seconds and renews
    the old cookie meanwhile. The renewed token keeps the session's epoch, so it dies with the old one."""
    import time

    import jwt

    auth = app.state.context.auth
    now, ttl = int(time.time()), auth.cfg.session_ttl_s
    epoch = store.get_user(app.state.context.storage, "mia")["session_epoch"]  # mia's creation time (ms)
    old = jwt.encode({"sub": "mia", "role": "manager", "typ": "session", "iat": now - ttl // 2 - 10,
                      "exp": now + ttl // 2 - 10, "iat_ms": (now - ttl // 2 - 10) * 1000,
                      "auth_ms": (now - 3600) * 1000, "sep": epoch}, auth._secret, algorithm="HS256")
    assert auth.authenticate(old) is not None  # cached: the epoch mia was created with
    assert store.end_sessions(app.state.context.storage, "mia")  # the other replica's sign-out
    renewed = auth.renew(old, auth.authenticate(old))  # still within this replica's cache time
    assert renewed is not None
    auth._forget("user:mia")  # the cache time is over
    assert auth.authenticate(old) is None and auth.authenticate(renewed) is None
    fresh = auth.issue(auth.login("mia", PASSWORD, "127.0.0.1"))[0]
    assert auth.authenticate(fresh) is not None  # a new sign-in works at once


def test_every_write_is_audited_with_its_actor(app) -> None:
    admin = signed_in_client(app)
    admin.post("/v1/users", json={"username": "vic", "password": PASSWORD, "role": "viewer"})
    admin.delete("/v1/customers/cust-1")  # faces disabled: 503, still audited
    entries = admin.get("/v1/audit").json()["entries"]
    # (the routes' own entries naming a user or key have no status: tests/test_auth_review_32b.py)
    got = [(e["action"], e["target"], e["detail"].get("status")) for e in entries if e["actor"].startswith("key:")]
    assert ("POST /v1/users", "/v1/users", 200) in got
    assert ("DELETE /v1/customers/{customer_id}", "/v1/customers/cust-1", 503) in got
    assert signed_in_client(app, role="manager").get("/v1/audit").status_code == 403


def test_weak_password_and_bad_username_are_422(app) -> None:
    admin = signed_in_client(app)
    assert admin.post("/v1/users", json={"username": "ok", "password": "short", "role": "viewer"}).status_code == 422
    r = admin.post("/v1/users", json={"username": "has space", "password": PASSWORD, "role": "viewer"})
    assert r.status_code == 422 and "username" in r.text
    assert admin.post("/v1/users", json={"username": "x", "password": PASSWORD, "role": "root"}).status_code == 422


def test_first_admin_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("STORELENS_ADMIN_USERNAME", "boss")
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", PASSWORD)
    storage = SqliteStorage(str(tmp_path / "a.db"))
    app = create_app(parse_config(SITE), storage)
    assert _login(TestClient(app), "boss").json()["role"] == "admin"
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", "another long password")
    create_app(parse_config(SITE), storage)  # users exist: the environment changes nothing
    assert _login(TestClient(app), "boss").status_code == 200


def test_cli_create_admin_reads_the_password_from_stdin(tmp_path) -> None:
    db = tmp_path / "cli.db"
    run = lambda *a, stdin="": subprocess.run([sys.executable, "-m", "storelens.cli", "users", *a, "--db", str(db)],  # noqa: E731
                                              input=stdin, capture_output=True, text=True, timeout=120,
                                              env={"PATH": "/usr/bin:/bin"})
    r = run("create-admin", stdin=PASSWORD + "\n")
    assert r.returncode == 0 and "created admin 'admin'" in r.stdout, r.stderr
    r = run("create", "vic", "--role", "viewer", stdin="short\n")
    assert r.returncode == 2 and "at least 10 characters" in r.stderr
    key = run("api-key", "till 1", "--role", "manager").stdout.strip()
    assert key.startswith("slk_")
    assert run("list").stdout.split() == ["admin", "admin"]
    app = create_app(parse_config(SITE), SqliteStorage(str(db)))
    assert _login(TestClient(app), "admin").json()["role"] == "admin"
    assert TestClient(app, headers={"Authorization": f"Bearer {key}"}).get("/v1/auth/me").json()["role"] == "manager"


@pytest.mark.parametrize(("trusted", "shared"), [("10.9.9.9", True), ("*", False)])
def test_the_sign_in_limit_is_per_client_behind_a_trusted_proxy_only(tmp_path, trusted: str, shared: bool) -> None:
    """Behind the Ingress every request comes from the proxy: with ``api.forwarded_allow_ips`` naming it, the
    sign-in rate limit counts each client of ``X-Forwarded-For`` apart (one client's wrong passwords do not lock
    out the others); from an untrusted peer the header is ignored. A real uvicorn server (serve()'s settings)."""
    import httpx

    from storelens.api.testing import served_app

    site = {**SITE, "api": {"forwarded_allow_ips": trusted}}
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    app.state.context.auth.create_user("mia", PASSWORD, "manager")
    with served_app(app) as (base, _server):
        def login(client_ip: str) -> int:
            return httpx.post(f"{base}/v1/auth/login", headers={"X-Forwarded-For": client_ip},
                              data={"username": "mia", "password": PASSWORD}).status_code

        assert [login("203.0.113.7") for _ in range(10)] == [200] * 10  # login_attempts_per_minute: 10
        assert login("203.0.113.7") == 429
        assert login("198.51.100.2") == (429 if shared else 200)
        rows, _ = store.list_audit(app.state.context.storage, action="auth.login")
        assert {e["client"] for e in rows} == ({"127.0.0.1"} if shared else {"203.0.113.7", "198.51.100.2"})


def test_a_flood_of_anonymous_writes_cannot_fill_the_audit_log(app) -> None:
    """Anonymous writes (401) are audited, but at most ANONYMOUS_AUDIT_PER_MINUTE per client and minute; a
    signed-in user's writes always are."""
    from storelens.api.security import ANONYMOUS_AUDIT_PER_MINUTE

    anonymous, admin = TestClient(app), signed_in_client(app)
    for _ in range(ANONYMOUS_AUDIT_PER_MINUTE + 20):
        assert anonymous.post("/v1/alerts/x/ack").status_code == 401
    rows, _ = store.list_audit(app.state.context.storage, limit=1000)
    assert sum(e["actor"] == "anonymous" for e in rows) == ANONYMOUS_AUDIT_PER_MINUTE
    admin.post("/v1/users", json={"username": "vic", "password": PASSWORD, "role": "viewer"})
    rows, _ = store.list_audit(app.state.context.storage, limit=1000)
    assert any(e["actor"].startswith("key:") and e["action"] == "POST /v1/users" for e in rows)


def test_a_second_api_worker_starting_does_not_reset_the_first_admin(tmp_path, monkeypatch) -> None:
    """``api.workers`` start together: both may see no user yet. The one that comes second must not reset the admin
    the first created (a reset ends every session: a token just issued would be refused)."""
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("STORELENS_JWT_SECRET", "k" * 40)
    storage = SqliteStorage(str(tmp_path / "h.db"))
    first, second = (create_app(parse_config(SITE), storage).state.context.auth for _ in range(2))
    token = first.issue(first.login("admin", PASSWORD, "127.0.0.1"))[0]
    # the second worker checked "no user yet" before the first created one: it creates, it does not reset
    assert second.create_user("admin", "another long password", "admin", reset=False) is False
    assert second.authenticate(token) is not None and first.authenticate(token) is not None
    assert second.login("admin", PASSWORD, "127.0.0.1") is not None  # the first worker's password stands
