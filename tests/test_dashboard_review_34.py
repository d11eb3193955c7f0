"""Review of the dashboard's live view, sign-in and stores (batch 34); each test fails on the code before:

1. An open dashboard kept the API from stopping: uvicorn waits at SIGTERM/Ctrl-C for every response to end, and a
   ``/v1/live`` stream never does (the process hung until a SIGKILL; its shutdown never ran). The streams now end
   when the server shuts down (the dashboards reconnect), and uvicorn cancels what is still in flight after
   ``SHUTDOWN_GRACE_S``.
2. The session cookie is SameSite=Strict, but a page of the same site (another port or subdomain of the host) still
   sends it: such a page could sign the user out everywhere, or acknowledge and resolve alerts, with a plain form.
   Writes the browser marks ``Sec-Fetch-Site: same-site``/``cross-site`` without an ``Authorization`` header are
   now refused (403).
3. The API not answering when the page opened (down, a proxy's 503) showed the sign-in form, as if signed out (and
   signing in there failed with "Failed to fetch"): the page now says the API cannot be reached and asks again.
4. The stores' comparison left a store without figures in the range (its roll-up stopped) out unsaid: the page now
   names the stores without figures and their last roll-up; "or storelens kpis publish" lacked its space.
5. Signed out and in again, the live view showed the last session's numbers as "live" until the new feed answered
   (for as long as it did not): the feed starts from nothing.

Real components: the API app over SQLite served by uvicorn (``storelens.api.app.serve`` in a process of its own),
and the built dashboard in Chromium.
"""
from __future__ import annotations

import datetime as dt
import functools
import http.server
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from storelens.api import create_app
from storelens.api.testing import sse_events
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.runtime.localdeploy import free_port
from storelens.storage import SqliteStorage
from storelens.storage import alerts as aq
from test_business_review_fixes import roll_into
from test_dashboard_browser import USERS, browser, open_view, serve_site, sign_in  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # a hung browser or server fails the test

VIEWER = ("viewer", "viewer-pass-123")
CAMERA_SITE = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "/tmp/x.mp4"}]}


# -- 1. SIGTERM with a dashboard open -------------------------------------------------------------------------------

SERVE = """
from storelens.api import create_app
from storelens.api.app import serve
from storelens.config import parse_config
from storelens.storage import SqliteStorage

app = create_app(parse_config({{"store": {{"id": "s"}}, "cameras": [{{"id": "c", "source": "/tmp/x.mp4"}}]}}),
                 SqliteStorage({db!r}))
app.state.context.auth.create_user({user!r}, {password!r}, "viewer")
serve(app, "127.0.0.1", {port})
print("serve returned", flush=True)
"""


def test_sigterm_stops_the_api_while_a_live_stream_is_open(tmp_path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    code = textwrap.dedent(SERVE.format(db=str(tmp_path / "h.db"), user=VIEWER[0], password=VIEWER[1], port=port))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(300):
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if proc.poll() is not None:
                        pytest.fail(f"the API exited with {proc.returncode}")
                    threading.Event().wait(0.1)
            token = client.post("/v1/auth/login", data=dict(zip(("username", "password"), VIEWER))).json()
            with client.stream("GET", "/v1/live", headers={"Authorization": f"Bearer {token['access_token']}"},
                               timeout=httpx.Timeout(30, read=None)) as stream:
                events = sse_events(stream.iter_lines(), keepalives=True)
                assert next(events)["event"] == "counts"  # the stream is open
                proc.send_signal(signal.SIGTERM)
                # it ends (it went on with a keepalive every 15 s for ever)
                assert next(events, None) is None
        out, _ = proc.communicate(timeout=15)  # SHUTDOWN_GRACE_S (20 s) does not end it: the stream did
        assert proc.returncode == 0 and "serve returned" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- 2. writes sent by a page of the same site (another port or subdomain) ------------------------------------------

def _firing_alert(aid: str) -> m.Alert:
    return m.Alert(alert_id=aid, rule_id="r", kind="camera_occupancy", severity="warning", camera_id="c",
                   state="firing", ts_ms=1000, seq=0, fired_ts_ms=1000, fired_seq=0, value=3, threshold=2,
                   message="crowd")


@pytest.mark.parametrize("fetch_site, bearer, status", [
    ("same-site", False, 403),  # a page on another port of the host, with the user's cookie
    ("cross-site", False, 403),
    ("same-origin", False, 200),  # the dashboard itself
    ("none", False, 200),
    (None, False, 200),  # not a browser
    ("same-site", True, 200),  # a bearer token is the caller's own, not a cookie the browser adds
])
def test_a_write_from_another_origin_with_the_cookie_is_refused(tmp_path, fetch_site, bearer, status) -> None:
    with SqliteStorage(str(tmp_path / "h.db")) as st:
        st.write_records([_firing_alert("r:c:0")])
        app = create_app(parse_config(CAMERA_SITE), st)
        app.state.context.auth.create_user("ann", "ann's long password", "manager")
        client = TestClient(app)
        login = client.post("/v1/auth/login", data={"username": "ann", "password": "ann's long password"})
        assert login.status_code == 200
        headers = {} if fetch_site is None else {"Sec-Fetch-Site": fetch_site}
        if bearer:
            headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        r = client.post("/v1/alerts/r:c:0/resolve", headers=headers)
        assert r.status_code == status, r.text
        assert aq.get_alert(st, "r:c:0")["state"] == ("firing" if status == 403 else "resolved")


def test_a_page_on_another_port_cannot_sign_the_user_out(tmp_path, browser) -> None:  # noqa: F811
    """A page served on another port of the dashboard's host (the same site: the SameSite=Strict cookie goes with
    its requests) posts a form to ``/v1/auth/logout``: the user stays signed in (it ended every session of the
    user, on every device)."""
    with serve_site(CAMERA_SITE, SqliteStorage(str(tmp_path / "h.db"))) as served, \
            _static_page(tmp_path, f'<iframe name="sink"></iframe><form id="f" method="post" target="sink" '
                                   f'action="{served.url}/v1/auth/logout"></form><script>f.submit()</script>') as evil:
        page = sign_in(browser, served, "manager")
        try:
            with page.expect_response(f"{served.url}/v1/auth/logout") as answer:
                page.goto(evil, wait_until="commit")
            assert answer.value.status == 403
            page.goto(served.url + "/")
            expect(page.get_by_test_id("role")).to_have_text("manager")  # still signed in
        finally:
            page.close()


@contextmanager
def _static_page(tmp_path, html: str) -> Iterator[str]:
    """``html`` served at ``http://127.0.0.1:<another free port>/`` (the dashboard's host); its URL."""
    root = tmp_path / "other-site"
    root.mkdir()
    (root / "index.html").write_text(html)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# -- 3. the API not answering when the page opens --------------------------------------------------------------------

@pytest.mark.parametrize("down", ["503", "refused"])
def test_the_api_down_when_the_page_opens_is_said_not_shown_as_signed_out(tmp_path, browser, down) -> None:  # noqa: F811
    with serve_site(CAMERA_SITE, SqliteStorage(str(tmp_path / "h.db"))) as served:
        page = sign_in(browser, served, "manager", clock_s=time.time())
        try:
            def route(r) -> None:
                if down == "503":  # a proxy in front of a stopped API
                    r.fulfill(status=503, content_type="application/json", body='{"detail": "no upstream"}')
                else:
                    r.abort("connectionrefused")

            page.route("**/v1/auth/me", route)
            page.reload()
            expect(page.get_by_test_id("api-unreachable")).to_be_visible()
            expect(page.get_by_test_id("signin-form")).to_have_count(0)
            page.screenshot(path=f"/tmp/rv-dash/api-unreachable-{down}.png")
            page.unroute("**/v1/auth/me")
            page.clock.run_for(5_000)  # it asks again: the session holds
            expect(page.get_by_test_id("role")).to_have_text("manager")
        finally:
            page.close()


# -- 4. a store without figures in the range -------------------------------------------------------------------------

HOSTILE = '<img src=x onerror="window.__hostile=1">'


def _kpi_hour(store: str, name: str, day: str) -> m.StoreKpiHour:
    start = int(dt.datetime.fromisoformat(f"{day}T10:00+00:00").timestamp() * 1000)
    return m.StoreKpiHour(store_id=store, store_name=name, timezone="UTC", start_ms=start, end_ms=start + 3_600_000,
                          day=day, label=f"{day}T10:00", hours=1.0, computed_ms=start + 3_600_000, visitors=10,
                          transactions=2, sales_minor=2500, currency="EUR", buying_units=-1)


def test_the_stores_page_names_a_store_without_figures_in_the_range(tmp_path, browser) -> None:  # noqa: F811
    db = tmp_path / "chain.db"
    storage = SqliteStorage(str(db))
    # eur-02 stopped rolling up a month before the range (the newest day, 2026-12-04, and the 6 before it)
    roll_into(storage, [_kpi_hour("eur-01", "Berlin Mitte", d) for d in ("2026-12-03", "2026-12-04")]
              + [_kpi_hour("eur-02", HOSTILE, "2026-11-02")])
    raw = {"store": {"id": "hq"}, "cameras": [], "chain": {}, "privacy": {"k_min": 1}, "storage": {"path": str(db)}}
    with serve_site(raw, storage) as served:
        page = sign_in(browser, served, "viewer", locale="en-US")
        try:
            open_view(page, "stores")
            expect(page.get_by_test_id("stores-row-eur-01")).to_be_visible()
            expect(page.get_by_test_id("stores-row-eur-02")).to_have_count(0)
            silent = page.get_by_test_id("stores-without-data")
            expect(silent).to_contain_text("2026-11-28 to 2026-12-04")
            expect(silent).to_contain_text(f"{HOSTILE} (last roll-up 2026-11-02 11:00:00)")  # as text
            assert page.evaluate("window.__hostile") is None
            page.screenshot(path="/tmp/rv-dash/stores-without-data.png", full_page=True)
        finally:
            page.close()


# -- 5. the last session's numbers after signing in again -----------------------------------------------------------

def test_signed_in_again_the_last_sessions_numbers_are_not_shown_as_live(tmp_path, browser) -> None:  # noqa: F811
    with serve_site(CAMERA_SITE, SqliteStorage(str(tmp_path / "h.db"))) as served:
        page = sign_in(browser, served, "viewer")
        try:
            expect(page.get_by_test_id("live-status")).to_have_text("live")
            expect(page.get_by_test_id("store-occupancy")).to_have_text("0")
            page.get_by_test_id("sign-out").click()
            held = []
            page.route("**/v1/live", lambda r: held.append(r))  # the new feed does not answer (yet)
            page.get_by_test_id("username").fill("viewer")
            page.get_by_test_id("password").fill(USERS["viewer"])
            page.get_by_test_id("signin-submit").click()
            expect(page.get_by_test_id("role")).to_have_text("viewer")
            expect(page.get_by_test_id("live-status")).to_have_text("connecting")
            expect(page.get_by_test_id("live-store")).to_have_count(0)  # no numbers before the feed's
            for r in held:
                r.continue_()
            page.unroute("**/v1/live")
            expect(page.get_by_test_id("live-status")).to_have_text("live")
        finally:
            page.close()
