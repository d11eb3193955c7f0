"""Review of the dashboard (issue 9 follow-ups, batch 33); each test fails on the code before:

1. Zone statistics merged stored buckets (zones.bucket_s, 60 s) into 15 min / 1 h / 1 day buckets by summing their
   distinct people: one shopper staying 10 min counted 10. Merged buckets now count each track once from the
   stored zone events (visits entering in the bucket and those open at its start), in SQL (SQLite, PostgreSQL),
   between the stored buckets' largest count and their sum.
2. ``GET /v1/site`` of an API replica served its copy of the site refreshed at most every 2 s: the editor re-read
   the geometry from before its own save (and its next save, based on the saved version, overwrote the first edit
   without a 409). It now looks for a newer version at each read; the page draws a saved camera from its save's
   answer until the re-read site is at that version.
3. A sign-out whose ending of the sessions failed (the database) was a 500, and the page showed the sign-in form as
   if signed out. Now 503 (the cookie kept, for a retry), and the page says it failed; a retry signs out.
4. Camera health showed "unknown" for a live camera that never sent a frame (the API says stale).
5. An erasure answered 503 (the notification to the recognition service failed; the stores erased) was shown as
   "Not available on this installation", the list not read again, and the retry it asks for answered 404 (though
   it sent the notification). The retry now answers 204 (by the pending-erasure record, tests/test_mend_review_34.py).
6. The zone statistics' bucket picker offered 15 min over stored hours (a 422): ``GET /v1/site`` gives
   ``zones_bucket_s``, the page offers its multiples.

Real components: the analytics stage (zones), the SQLite / PostgreSQL history, the face gallery (SQLite), the API
app, and the built dashboard in Chromium (one browser session for 3-6).
"""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.backends.face_index import Visit
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqliteStorage
from storelens.storage.gallery import SqliteGalleryStore
from storelens.storage.schema import zone_events
from test_dashboard_browser import browser, open_view, serve_site, sign_in  # noqa: F401 (fixture)

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MIN = 60_000
SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]
INSIDE = m.BoxXYXY(x1=40, y1=20, x2=60, y2=80)
OUTSIDE = m.BoxXYXY(x1=400, y1=20, x2=420, y2=80)


def zone_site(**zones):
    return parse_config({"store": {"id": "s"}, "zones": zones, "cameras": [
        {"id": "c", "source": "shop.mp4", "start_ts_ms": T0, "zones": [{"id": "z", "polygon": SQUARE}]}]})


def run_visits(st, config, visits: dict[int, tuple[int, int]], until_ms: int, step_ms: int = 10_000) -> None:
    """The analytics stage over frames every ``step_ms`` from T0 to ``until_ms`` (then the end of the stream): track
    ``tid`` inside the zone over ``[from, to)`` of ``visits`` (ms after T0), in view outside it a minute either
    side; its records written to the history as the service does."""
    stage = AnalyticsStage(config)
    for seq, ts in enumerate(range(T0, until_ms, step_ms)):
        tracks = [m.Track(track_id=tid, bbox_xyxy=INSIDE if a <= ts - T0 < b else OUTSIDE)
                  for tid, (a, b) in visits.items() if a - MIN <= ts - T0 < b + MIN]
        tf = m.TrackedFrame(camera_id="c", seq=seq, ts_ms=ts, width=640, height=480, tracks=tracks)
        st.write_records(stage.handle(topics.TRACKS, m.decode(m.TrackedFrame, m.encode(tf))).records)
    end = m.TrackedFrame(camera_id="c", seq=seq + 1, ts_ms=until_ms, end_of_stream=True)
    st.write_records(stage.handle(topics.TRACKS, m.decode(m.TrackedFrame, m.encode(end))).records)


# -- 1. distinct people of merged zone buckets ---------------------------------------------------------------------

# track -> inside over [from, to) (ms after T0): 1 stays 10 min, 2 five, 3 from 0:40 to 1:20 (over the hour's
# edge, through whole 15 min buckets), 4 five minutes while 3 is inside
VISITS = {1: (0, 10 * MIN), 2: (20 * MIN, 25 * MIN), 3: (40 * MIN, 80 * MIN), 4: (65 * MIN, 70 * MIN)}


@pytest.mark.parametrize("bucket_s,people", [
    pytest.param(3600, {T0: 3, T0 + 60 * MIN: 2}, id="hours"),  # 3 counted in both hours (open at 1:00)
    pytest.param(86_400, {T0: 4}, id="day"),
    pytest.param(900, {T0: 1, T0 + 15 * MIN: 1, T0 + 30 * MIN: 1, T0 + 45 * MIN: 1, T0 + 60 * MIN: 2,
                       T0 + 75 * MIN: 1}, id="quarters"),
])
def test_merged_zone_buckets_count_each_person_once(history_store, bucket_s: int, people: dict[int, int]) -> None:
    config = zone_site()
    run_visits(history_store, config, VISITS, T0 + 90 * MIN)
    c = signed_in_client(create_app(config, history_store), role="viewer")
    r = c.get("/v1/zones/stats", params={"camera_id": "c", "start_ms": T0, "bucket_s": bucket_s})
    assert r.status_code == 200, r.text
    assert {b["start_ms"]: b["unique_people"] for b in r.json()["buckets"]} == people
    # the stored buckets themselves (bucket_s = zones.bucket_s): each one's own count, a track in each minute it
    # was inside
    stored = c.get("/v1/zones/stats", params={"camera_id": "c", "start_ms": T0}).json()["buckets"]
    assert sum(b["unique_people"] for b in stored) > sum(people.values())
    assert {b["unique_people"] for b in stored} <= {0, 1, 2}


def test_merged_zone_buckets_without_their_events(history_store) -> None:
    """Zone events purged (retention): a merged bucket's people are between its stored buckets' largest count and
    their sum (here: one person in every stored bucket, so at least 1)."""
    config = zone_site()
    run_visits(history_store, config, {1: (0, 10 * MIN)}, T0 + 15 * MIN)
    history_store._write(lambda conn: conn.execute(sa.delete(zone_events)))
    c = signed_in_client(create_app(config, history_store), role="viewer")
    r = c.get("/v1/zones/stats", params={"camera_id": "c", "start_ms": T0, "bucket_s": 3600}).json()
    assert [b["unique_people"] for b in r["buckets"]] == [1]


# -- 2. the site in force through another API replica -------------------------------------------------------------

def test_site_read_through_another_replica_has_the_version_just_saved(tmp_path) -> None:
    """Two API replicas on one database: a zone saved through one is what ``GET /v1/site`` of the other answers at
    once (it looked for a newer version at most every 2 s: the editor re-read the geometry before the save)."""
    db = str(tmp_path / "h.db")
    raw = {"store": {"id": "s"}, "storage": {"path": db}, "cameras": [
        {"id": "c", "source": "shop.mp4", "zones": [{"id": "z", "polygon": SQUARE}]}]}
    one, two = (signed_in_client(create_app(parse_config(raw), SqliteStorage(db)), role="admin") for _ in range(2))
    first = two.get("/v1/site").json()  # the replica has looked now: its next look is 2 s away
    zone = first["cameras"][0]["zones"][0]
    moved = [[10.0, 10.0], [100.0, 0.0], [100.0, 100.0], [0.0, 100.0]]
    r = one.put(f"/v1/site/cameras/c/zones/z?base_version={first['version']}", json={**zone, "polygon": moved})
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["camera"]["zones"][0]["polygon"] == moved  # the page draws from the save's answer
    again = two.get("/v1/site").json()
    assert (again["version"], again["cameras"][0]["zones"][0]["polygon"]) == (saved["version"], moved)
    # a save based on it through the other replica keeps the first edit
    both = [[10.0, 10.0], [100.0, 0.0], [90.0, 90.0], [0.0, 100.0]]
    r = two.put(f"/v1/site/cameras/c/zones/z?base_version={again['version']}", json={**zone, "polygon": both})
    assert r.status_code == 200, r.text
    assert one.get("/v1/site").json()["cameras"][0]["zones"][0]["polygon"] == both


# -- 3. signing out when the sessions cannot be ended --------------------------------------------------------------

PASSWORD = "a long enough password"


def test_sign_out_is_503_and_keeps_the_cookie_when_the_sessions_cannot_be_ended(tmp_path) -> None:
    """The database refuses the change that ends the sessions (a trigger: as a read-only or full database would):
    503 (it was a 500), the cookie kept so that a retry from this browser can end them (test_merged_review_33b)."""
    st = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "shop.mp4"}]}), st)
    app.state.context.auth.create_user("mia", PASSWORD, "manager")
    tab = TestClient(app, raise_server_exceptions=False)
    token = tab.post("/v1/auth/login", data={"username": "mia", "password": PASSWORD}).json()["access_token"]
    st._write(lambda conn: conn.exec_driver_sql(
        "CREATE TRIGGER refuse_sign_out BEFORE UPDATE OF session_epoch ON users "
        "BEGIN SELECT RAISE(ABORT, 'database is read-only'); END"))
    r = tab.post("/v1/auth/logout")
    assert r.status_code == 503 and "could not be ended" in r.json()["detail"]
    assert "set-cookie" not in r.headers and "storelens_session" in tab.cookies
    bearer = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert bearer.get("/v1/auth/me").status_code == 200  # the session is still valid: what the 503 says
    assert tab.get("/v1/auth/me").status_code == 200  # this browser is still signed in
    st._write(lambda conn: conn.exec_driver_sql("DROP TRIGGER refuse_sign_out"))
    assert tab.post("/v1/auth/logout").status_code == 204  # the retry sends the cookie: the sessions end
    assert "storelens_session" not in tab.cookies
    assert bearer.get("/v1/auth/me").status_code == 401


# -- 5. a customer erasure retried after its notification failed ---------------------------------------------------

def test_erasure_retried_after_a_failed_notification_is_204(tmp_path) -> None:
    """The notification to the recognition service fails once (503: the stores are erased); the retry the answer
    asks for sends it and answers 204 (it answered 404, the id no longer in the stores); a repeat after that 204, and
    an id never erased, are 404."""
    gallery = SqliteGalleryStore(str(tmp_path / "g.db"), dim=4)
    gallery.add_customer("cust-1", T0)
    gallery.save_visit(Visit("cust-1", 1, T0, T0 + 2_000, ("c",)))
    sent: list[str] = []

    def on_erasure(customer_id: str) -> None:
        sent.append(customer_id)
        if len(sent) == 1:
            raise ConnectionError("the broker did not answer")

    app = create_app(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "shop.mp4"}]}),
                     SqliteStorage(str(tmp_path / "h.db")), gallery_store=gallery, on_erasure=on_erasure)
    c = signed_in_client(app, role="admin")
    first = c.delete("/v1/customers/cust-1")
    assert first.status_code == 503 and "retry" in first.json()["detail"]
    assert c.get("/v1/customers").json()["total"] == 0
    assert [c.delete("/v1/customers/cust-1").status_code for _ in range(2)] == [204, 404]  # then erased with a 204
    assert sent == ["cust-1"] * 3
    assert c.delete("/v1/customers/cust-2").status_code == 404  # a typo is not taken for done


# -- 6. the bucket widths the zone statistics take -------------------------------------------------------------------

@pytest.mark.parametrize("stored_s", [60, 3600, 7200])
def test_site_names_the_stored_zone_bucket_width(stored_s: int) -> None:
    """``GET /v1/site`` gives ``zones_bucket_s``: the dashboard offers only widths ``/v1/zones/stats`` takes (its
    15 min were a 422 over stored hours)."""
    c = signed_in_client(create_app(zone_site(bucket_s=stored_s), SqliteStorage(":memory:")), role="viewer")
    assert c.get("/v1/site").json()["zones_bucket_s"] == stored_s
    r = c.get("/v1/zones/stats", params={"camera_id": "c", "start_ms": T0, "bucket_s": 900})
    assert r.status_code == (200 if 900 % stored_s == 0 else 422)


# -- the dashboard in a browser: health, zone bucket widths, a retried erasure, a failed sign-out --------------------

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dashboard_shows_the_fixes(tmp_path, browser) -> None:  # noqa: F811 (the browser fixture)
    """One browser session on a served site (a live camera that never sent a frame, zone statistics stored hourly,
    a customer gallery whose erasure notification fails once, a database that refuses a sign-out):

    * camera health says "stale (no frame yet)", not "unknown";
    * the zone statistics offer 1 hour and 1 day (not 15 min, a 422) and answer;
    * an erasure answered 503 says "Temporarily unavailable" (not "Not available on this installation"), the list is
      read again (the customer gone) and its retry answers 204;
    * a failed sign-out says so and the page stays signed in (it showed the sign-in page), also at its next
      requests; a retry once the database takes it signs out.
    """
    from playwright.sync_api import expect

    gallery = SqliteGalleryStore(str(tmp_path / "g.db"), dim=4)
    gallery.add_customer("cust-1", T0)
    gallery.save_visit(Visit("cust-1", 1, T0, T0 + 2_000, ("door",)))
    sent: list[str] = []

    def on_erasure(customer_id: str) -> None:
        sent.append(customer_id)
        if len(sent) == 1:
            raise ConnectionError("the broker did not answer")

    raw = {"store": {"id": "s"}, "zones": {"bucket_s": 3600}, "cameras": [
        {"id": "door", "source": "rtsp://10.0.0.9/stream1", "zones": [{"id": "z", "polygon": SQUARE}]}]}
    st = SqliteStorage(str(tmp_path / "h.db"))
    with serve_site(raw, st, gallery_store=gallery, on_erasure=on_erasure) as served:
        page = sign_in(browser, served, "admin")
        open_view(page, "health")
        expect(page.get_by_test_id("health-door").get_by_test_id("status")).to_have_text("stale (no frame yet)")

        open_view(page, "zones")
        bucket = page.get_by_test_id("bucket")
        expect(bucket).to_have_value("3600")
        assert bucket.locator("option").evaluate_all("os => os.map(o => o.value)") == ["3600", "86400"]
        stats = page.get_by_test_id("zone-stats")
        expect(stats).to_contain_text("No zone statistics in this range.")
        expect(stats.get_by_test_id("problem")).to_have_count(0)

        open_view(page, "customers")
        page.get_by_test_id("erase").click()
        page.get_by_test_id("erase-confirm").click()
        problem = page.get_by_test_id("problem")
        expect(problem).to_have_attribute("data-status", "503")
        expect(problem).to_contain_text("Temporarily unavailable.")
        expect(page.get_by_test_id("customers")).to_contain_text("Customers (0)")  # read again: erased from the stores
        page.get_by_test_id("erase-retry").click()
        expect(page.get_by_role("status")).to_have_text("Customer cust-1 erased.")
        expect(problem).to_have_count(0)
        assert sent == ["cust-1", "cust-1"]

        st._write(lambda conn: conn.exec_driver_sql(
            "CREATE TRIGGER refuse_sign_out BEFORE UPDATE OF session_epoch ON users "
            "BEGIN SELECT RAISE(ABORT, 'database is read-only'); END"))
        page.get_by_test_id("sign-out").click()
        expect(page.get_by_test_id("sign-out-error")).to_contain_text("Sign-out failed: you are still signed in.")
        expect(page.get_by_test_id("role")).to_have_text("admin")
        open_view(page, "health")  # the page's next requests still carry the session: no 401 hides the warning
        expect(page.get_by_test_id("health-door").get_by_test_id("status")).to_have_text("stale (no frame yet)")
        expect(page.get_by_test_id("sign-out-error")).to_be_visible()
        st._write(lambda conn: conn.exec_driver_sql("DROP TRIGGER refuse_sign_out"))
        page.get_by_test_id("sign-out").click()  # the retry ends the sessions
        page.get_by_test_id("signin-submit").wait_for()
        page.close()
