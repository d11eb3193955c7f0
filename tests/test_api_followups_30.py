"""Follow-ups of a read-only review of the API batch (each test fails on the code before):

1. ``/v1/kpis?currency=`` of the store's own history answered 422 for an hour whose sales were only in another
   currency, though the store sells in the one asked for too. Now the own store and a rolled-up one share one rule
   (:func:`storelens.api.routes.business._check_currency`): 422 only for a currency the store did not sell in
   within 8 days of the range; an hour without a sale in it is zeros. Both answer alike.
2. A lone surrogate (or NUL) in a site edit's body was saved (SQLite), then ``/v1/zones`` and ``/v1/site`` answered
   500 for everyone: the site's PUT routes now refuse it (422 naming the field) before saving.
3. ``/v1/queues?at_ms=<now>`` of a live camera down two hours showed its last length as current (``stale`` false):
   an ``at_ms`` over 60 s after the camera's newest frame is now stale, its age ``at_ms`` minus that frame.
4. A user name not matching the users' pattern (``john smith``, a password typed there) answered a 422 echoing it,
   neither counted nor audited as a failed sign-in: it is a failed sign-in now (401, audited, limited).
5. ``/v1/zones/stats`` without ``end_ms`` counted the stored buckets' whole span against the 100,000-bucket limit:
   two buckets 1,100 days apart in 15-minute buckets were a 422; the limit is now over the buckets answered.

Real components: the API app over the SQLite history (and PostgreSQL of the test stack for the bucket count), the
chain roll-up stage for the rolled-up store.
"""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_chain_rollup import roll_into
from test_storage_migrations import PG_DSN, pg_schema  # noqa: F401 (pg_schema: a fixture)
from test_zones_gaps_30 import DT, HOUR, MIN, queue_frames
from test_zones_gaps_30 import site as queue_site

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.stages.analytics import derive
from storelens.storage import SqliteStorage, SqlStorage
from storelens.storage import auth as auth_store
from storelens.storage.rollup import kpi_hours
from storelens.storage.schema import zone_stats

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
DAY = 86_400_000
POLY = [[0, 0], [100, 0], [100, 100], [0, 100]]
SITE = {"store": {"id": "s", "timezone": "UTC"}, "privacy": {"k_min": 1},
        "cameras": [{"id": "c", "source": "c.mp4", "zones": [
            {"id": "area", "kind": "area", "polygon": POLY},
            {"id": "shelf", "kind": "shelf", "polygon": POLY, "product": "wine"}]}]}
HQ = {**SITE, "store": {"id": "hq", "timezone": "UTC"}}  # another deployment, with "s" rolled up


# -- 1. /v1/kpis?currency=: one rule for the own store and a rolled-up one -------------------------------------------

SALES = [{"transaction_id": "e1", "register_id": "r", "ts_ms": T0 + 10 * HOUR, "amount_minor": 500, "currency": "EUR"},
         {"transaction_id": "u1", "register_id": "r", "ts_ms": T0 + 11 * HOUR, "amount_minor": 700, "currency": "USD"}]
FAR = 20 * DAY  # a day 20 days later, without sales


@pytest.mark.parametrize("period, start, end, currency, status, sold", [
    ("hour", 11 * HOUR, 12 * HOUR, "EUR", 200, (0, 0)),  # 422 "reports sales in USD, not EUR" before
    ("hour", 10 * HOUR, 11 * HOUR, "USD", 200, (0, 0)),  # 422 "reports sales in EUR, not USD" before
    ("hour", 11 * HOUR, 12 * HOUR, "USD", 200, (1, 700)),
    ("day", 0, DAY, "EUR", 200, (1, 500)),
    ("hour", 3 * DAY, 3 * DAY + HOUR, "EUR", 200, (0, 0)),  # days later: the store sells in it
    ("hour", 11 * HOUR, 12 * HOUR, "JPY", 422, "store 's' reports sales in EUR, USD, not JPY"),  # never sold
    # nothing sold within 8 days: the store's newest currency (the rolled-up hours' currency then)
    ("hour", FAR + 10 * HOUR, FAR + 11 * HOUR, "EUR", 422, "store 's' reports sales in USD, not EUR"),
    ("hour", FAR + 10 * HOUR, FAR + 11 * HOUR, "USD", 200, (0, 0)),
])
def test_kpis_currency_of_an_hour_without_its_sales(period: str, start: int, end: int, currency: str, status: int,
                                                    sold) -> None:
    with SqliteStorage(":memory:") as own, SqliteStorage(":memory:") as chain:
        cfg = parse_config(SITE)
        c = signed_in_client(create_app(cfg, own), "manager")
        assert c.post("/v1/transactions", json={"transactions": SALES}).status_code == 200
        # the same store rolled up in another deployment: its hours of the day of the sales and of the far day
        roll_into(chain, kpi_hours(cfg, own, T0, T0 + DAY, T0 + DAY)
                  + kpi_hours(cfg, own, T0 + FAR, T0 + FAR + DAY, T0 + FAR + DAY))
        rolled = signed_in_client(create_app(parse_config(HQ), chain), "manager")
        q = {"period": period, "start_ms": T0 + start, "end_ms": T0 + end, "currency": currency}
        for client, extra in ((c, {}), (rolled, {"store": "s"})):
            r = client.get("/v1/kpis", params={**q, **extra})
            assert r.status_code == status, (extra, r.text[:300])
            if status == 422:
                assert r.json()["detail"] == sold
            else:
                totals = r.json()["totals"]
                assert (r.json()["currency"], totals["transactions"], totals["sales_minor"]) == (currency, *sold)


# -- 2. site edits with text the database cannot store ---------------------------------------------------------------

SHELF = '{"id":"shelf","kind":"shelf","polygon":[[0,0],[100,0],[100,100],[0,100]],"product":"wine%s"}'


@pytest.mark.parametrize("path, body, field", [
    ("/v1/site/cameras/c/zones/shelf", SHELF % "\\ud800", "zone.product: must not contain a lone surrogate"),
    ("/v1/site/cameras/c/zones/shelf", SHELF % "\\u0000", "zone.product: must not contain NUL"),
    ("/v1/site/cameras/c", '{"id":"c","source":"c.mp4","zones":[%s]}' % (SHELF % "\\udfff"),
     "camera.zones[0].product: must not contain a lone surrogate"),
])
def test_a_site_edit_with_unstorable_text_is_422_and_the_site_stays_readable(path: str, body: str,
                                                                             field: str) -> None:
    with SqliteStorage(":memory:") as storage:
        c = signed_in_client(create_app(parse_config(SITE), storage), "admin", raise_server_exceptions=False)
        r = c.put(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"].startswith(field), r.text[:300]
        assert c.get("/v1/site").json()["version"] == 0  # nothing saved
        zones = c.get("/v1/zones")
        assert zones.status_code == 200 and {z["product"] for z in zones.json()["zones"]} == {None, "wine"}
        # the same edit with storable text is saved
        ok = c.put(path, content=body.replace("\\ud800", "").replace("\\u0000", "").replace("\\udfff", ""),
                   headers={"content-type": "application/json"})
        assert ok.status_code == 200 and c.get("/v1/zones").status_code == 200


# -- 3. /v1/queues?at_ms= of a live camera down ----------------------------------------------------------------------

@pytest.mark.parametrize("source, at, stale, length, age_s", [
    ("rtsp://cam/c", "now", True, None, 2 * 3600.0),  # down two hours: stale false, length 1 before
    ("rtsp://cam/c", "last", False, 1, None),  # at the newest frame: as before
    ("rtsp://cam/c", "last - 10 s", False, 1, None),  # a time of the history: as before
    ("rtsp://cam/c", "last + 30 s", False, 1, 30.0),  # within 60 s of it
    ("c.mp4", "now", False, 1, None),  # a recorded file answers as it did
])
def test_queues_at_now_of_a_live_camera_down_is_stale(tmp_path, source: str, at: str, stale: bool,
                                                      length: int | None, age_s: float | None) -> None:
    cfg = parse_config(queue_site(source))
    now = int(time.time() * 1000)
    last = now - 2 * HOUR
    frames = queue_frames(last - (5 * MIN - DT), 5)
    at_ms = {"now": now, "last": last, "last - 10 s": last - 10_000, "last + 30 s": last + 30_000}[at]
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records(frames + derive(cfg, frames))
        client = signed_in_client(create_app(cfg, storage))
        [q] = client.get("/v1/queues", params={"at_ms": at_ms}).json()["queues"]
        assert (q["at_ms"], q["stale"], q["length"], q["age_s"]) == (at_ms, stale, length, age_s)
        if stale:
            assert q["predicted_wait_s"] is None


# -- 4. a user name no user can have is a failed sign-in -------------------------------------------------------------

@pytest.mark.parametrize("username", ["john smith", "MyS3cret!pass", "-dash", "nobody"])
def test_a_user_name_no_user_can_have_is_a_counted_failed_sign_in(username: str) -> None:
    with SqliteStorage(":memory:") as storage:
        app = create_app(parse_config(SITE), storage)
        client = TestClient(app)
        answers = [client.post("/v1/auth/login", data={"username": username, "password": "x"}) for _ in range(6)]
        assert [r.status_code for r in answers] == [401] * 5 + [429]  # auth.login_failures_per_minute: 5
        assert answers[0].json() == {"detail": "wrong user name or password"}  # nothing typed is echoed
        rows, _ = auth_store.list_audit(storage, action="auth.login-failed")
        # a name no user has is not kept (a password typed there): the target and actor are redacted
        assert [(e["actor"], e["target"]) for e in rows] == [("(unknown user)", "(unknown user)")] * 5


# -- 5. /v1/zones/stats without end_ms: the limit over the buckets answered ------------------------------------------

def bucket_row(start_ms: int) -> dict:
    return {"camera_id": "c", "zone_id": "area", "bucket_start_ms": start_ms, "bucket_end_ms": start_ms + MIN,
            "visits": 1, "unique_people": 1, "mean_occupancy": 1.0, "max_occupancy": 1, "dwell_median_s": None,
            "dwell_p90_s": None, "visits_ended": 0, "stoppers": 0, "served": 0, "abandoned": 0, "lost": 0,
            "covered_ms": MIN}


FAR_APART = [T0, T0 + 1_100 * DAY]  # 105,601 quarter hours apart
KATHMANDU = [T0, T0 + 1_500 * DAY]  # 108,001 twenty minutes apart


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("tz, rows, params, status, starts", [
    ("UTC", FAR_APART, {"bucket_s": 900}, 200, FAR_APART),  # 422 "spans 105601 buckets" before
    ("UTC", FAR_APART, {"bucket_s": 60}, 200, FAR_APART),
    # +05:45: 20-minute buckets from :45 UTC, the stored minutes in the ones starting 5 min before them
    ("Asia/Kathmandu", KATHMANDU, {"bucket_s": 1200}, 200, [t - 5 * MIN for t in KATHMANDU]),  # (since 1986)
    ("UTC", FAR_APART, {"bucket_s": 900, "end_ms": T0 + 1_100 * DAY + MIN}, 422, None),  # with an end: as before
])
def test_zone_stats_without_end_counts_the_buckets_answered(request, backend: str, tz: str, rows: list[int],
                                                             params: dict, status: int,
                                                             starts: list[int] | None) -> None:
    site = {**SITE, "store": {"id": "s", "timezone": tz}}
    dsn = (PG_DSN, request.getfixturevalue("pg_schema")) if backend == "postgresql" else (":memory:", None)
    with SqlStorage(dsn[0], schema=dsn[1]) as storage:
        storage._write(lambda conn: conn.execute(sa.insert(zone_stats), [bucket_row(t) for t in rows]))
        r = signed_in_client(create_app(parse_config(site), storage), "viewer").get(
            "/v1/zones/stats", params={"camera_id": "c", "start_ms": T0 - DAY, **params})
        assert r.status_code == status, r.text[:300]
        if status == 200:
            assert [(b["start_ms"], b["visits"]) for b in r.json()["buckets"]] == [(t, 1) for t in starts]
        else:
            assert "limit of 100000" in r.json()["detail"]
