"""Hostile requests to the HTTP API (a read-only review of ``storelens/api``):

1. ``/v1/zones/stats`` without ``end_ms`` had no size limit (100,001 one-minute buckets answered 200, tens of MB):
   it now takes the end from the stored buckets and applies the bucket limit (422 naming it); ``/v1/interest``
   reads at most ``MAX_INTEREST_VISITS`` ended visits (422 before reading more).
2. Text the database cannot store (NUL, lone surrogates) answered 500 (SQLite: a surrogate in a JSON body;
   PostgreSQL: NUL anywhere): every free-text parameter is now validated (422), a refused 422 echoing a surrogate
   is encoded, and a driver's ``DataError`` that gets through is a 422, logged and counted.
3. Unknown filters answered an empty 200 that looked like zero customers: ``/v1/chain/kpis?store=`` /
   ``region=`` and ``/v1/alerts?camera_id=`` now answer 404 naming what is unknown.
4. ``/v1/kpis`` of the store's own history with a currency it never sold in the range answered zeros: now the
   422 of a rolled-up store; a rolled-up store's range is checked for too many buckets before its hours are read.
5. Request bodies had no size limit (parsed before the sign-in): over ``api.max_body_bytes`` is a 413.
"""
from __future__ import annotations

import datetime as dt
import pathlib
import zoneinfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_chain_rollup import CHAIN, roll_into
from test_storage_migrations import PG_DSN, pg_schema  # noqa: F401 (pg_schema: a fixture)

from storelens.api import create_app
from storelens.api.routes import zones as zones_route
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.errors import ConfigError
from storelens.storage import SqliteStorage, SqlStorage
from storelens.storage.schema import alerts, zone_events, zone_stats

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MIN, HOUR, DAY_MS = 60_000, 3_600_000, 86_400_000
POLY = [[0, 0], [100, 0], [100, 100], [0, 100]]
SITE = {"store": {"id": "s", "timezone": "UTC"}, "privacy": {"k_min": 1},
        "cameras": [{"id": "c", "source": "c.mp4", "zones": [
            {"id": "area", "kind": "area", "polygon": POLY},
            {"id": "shelf", "kind": "shelf", "polygon": POLY, "product": "wine"}]}]}


def app_of(storage, site: dict | None = None):
    return create_app(parse_config(site or SITE), storage)


# -- 1. open-ended ranges are bounded -----------------------------------------------------------------------------

def minute_rows(n: int) -> list[dict]:
    return [{"camera_id": "c", "zone_id": "area", "bucket_start_ms": T0 + i * MIN, "bucket_end_ms": T0 + (i + 1) * MIN,
             "visits": 1, "unique_people": 1, "mean_occupancy": 1.0, "max_occupancy": 1, "dwell_median_s": None,
             "dwell_p90_s": None, "visits_ended": 0, "stoppers": 0, "served": 0, "abandoned": 0, "lost": 0,
             "covered_ms": MIN} for i in range(n)]


@pytest.fixture(scope="module")
def many_minutes(tmp_path_factory) -> str:
    """A history with 100,001 one-minute buckets of one zone (one more than the bucket limit), bulk inserted."""
    path = str(tmp_path_factory.mktemp("minutes") / "h.db")
    with SqliteStorage(path) as storage:
        storage._write(lambda conn: conn.execute(sa.insert(zone_stats), minute_rows(100_001)))
    return path


@pytest.mark.parametrize("params, status, buckets", [
    ({}, 422, None),  # 100,001 minutes: one over the limit (200 with every bucket before)
    ({"zone_id": "area"}, 422, None),
    ({"bucket_s": 3600}, 200, 1667),  # the same data in hours: within it
    ({"end_ms": T0 + 100_001 * MIN}, 422, None),  # as with an end (unchanged)
])
def test_zone_stats_without_end_ms_has_the_bucket_limit(many_minutes: str, params: dict, status: int,
                                                          buckets: int | None) -> None:
    with SqliteStorage(many_minutes) as storage:
        client = signed_in_client(app_of(storage), "viewer")
        r = client.get("/v1/zones/stats", params={"camera_id": "c", "start_ms": 0, **params})
        assert r.status_code == status, r.text[:300]
        if status == 422:
            assert "limit of 100000" in r.json()["detail"]
        else:
            assert len(r.json()["buckets"]) == buckets


def exits(n: int) -> list[dict]:
    return [{"event_id": f"e{i}", "camera_id": "c", "zone_id": "shelf", "zone_kind": "shelf", "track_id": i,
             "kind": "exit", "ts_ms": T0 + i * 1000, "seq": i, "dwell_ms": 5000, "how": "left"} for i in range(n)]


@pytest.mark.parametrize("limit, params, status", [
    (50, {}, 422),  # 60 ended visits over a limit of 50, without end_ms
    (50, {"end_ms": T0 + 40_000}, 200),  # 40 of them
    (60, {}, 200),  # at the limit
])
def test_interest_reads_at_most_the_visit_limit(monkeypatch, limit: int, params: dict, status: int) -> None:
    monkeypatch.setattr(zones_route, "MAX_INTEREST_VISITS", limit)  # the real limit is 1,000,000 rows
    with SqliteStorage(":memory:") as storage:
        storage._write(lambda conn: conn.execute(sa.insert(zone_events), exits(60)))
        r = signed_in_client(app_of(storage), "viewer").get("/v1/interest", params={"start_ms": 0, **params})
        assert r.status_code == status, r.text[:300]
        if status == 422:
            assert f"limit of {limit}" in r.json()["detail"] and "60 ended shelf visits" in r.json()["detail"]
        else:
            [item] = r.json()["items"]
            assert item["passers"] == (40 if "end_ms" in params else 60)


# -- 2. text the database cannot store ----------------------------------------------------------------------------

JSON = {"content-type": "application/json"}
SURROGATE_CASES = [  # (role, method, path, request keywords): each answered 500 before
    ("manager", "POST", "/v1/audits", {"content": b'{"clips":[{"camera_id":"c","line_id":"\\ud800",'
                                                  b'"crossing_ts_ms":1,"in":0,"out":0}]}', "headers": JSON}),
    ("admin", "POST", "/v1/api-keys", {"content": b'{"name":"\\ud800","role":"viewer"}', "headers": JSON}),
    ("admin", "POST", "/v1/api-keys", {"content": b'{"name":"till \\udfff","role":"viewer"}', "headers": JSON}),
    # refused for another reason, the 422 echoing the surrogate could not be encoded
    ("admin", "POST", "/v1/api-keys", {"content": b'{"name":"\\ud800","role":"emperor"}', "headers": JSON}),
    ("admin", "POST", "/v1/users", {"content": b'{"username":"bob","password":"\\ud800","role":"viewer"}',
                                    "headers": JSON}),
]
NUL_CASES = [  # on SQLite these were stored or answered 200/404; on PostgreSQL a 500 (see below)
    ("viewer", "GET", "/v1/alerts?camera_id=a%00", {}),
    ("admin", "GET", "/v1/audit?actor=a%00", {}),
    ("manager", "POST", "/v1/alerts/a%00/ack", {}),
    ("viewer", "GET", "/v1/counts?camera_id=c&line_id=a%00", {}),
    ("viewer", "GET", "/v1/interest?start_ms=0&product=a%00", {}),
    ("viewer", "GET", "/v1/chain/kpis?region=a%00", {}),
    ("manager", "GET", "/v1/journeys/1@a%00", {}),
    (None, "POST", "/v1/auth/login", {"data": {"username": "a\x00", "password": "x"}}),
]


@pytest.fixture(scope="module")
def clients():
    """Role (``None``: anonymous) -> a client of one app over an empty SQLite history."""
    with SqliteStorage(":memory:") as storage:
        app = app_of(storage)
        yield {None: TestClient(app, raise_server_exceptions=False),
               **{role: signed_in_client(app, role, raise_server_exceptions=False)
                  for role in ("viewer", "manager", "admin")}}


@pytest.mark.parametrize("role, method, path, kwargs", SURROGATE_CASES + NUL_CASES)
def test_text_the_database_cannot_store_is_422(clients, role: str | None, method: str, path: str,
                                               kwargs: dict) -> None:
    r = clients[role].request(method, path, **kwargs)
    assert r.status_code == 422, r.text[:300]
    assert r.json()["detail"]  # a JSON answer, the refused input escaped


@pytest.mark.parametrize("method, path, kwargs, allowed", [
    ("POST", "/v1/auth/login", {"data": {"username": "a\x00", "password": "x"}}, {401, 422}),
    ("POST", "/v1/auth/login", {"data": {"username": "admin", "password": "x\x00"}}, {401, 422}),
    ("GET", "/v1/alerts?camera_id=a%00", {}, {422}),
    ("GET", "/v1/audit?actor=a%00", {}, {422}),
    ("POST", "/v1/alerts/a%00/ack", {}, {422}),
    ("GET", "/v1/journeys/1@a%00", {}, {422}),
])
def test_nul_on_postgresql_is_no_500(pg_schema: str, method: str, path: str, kwargs: dict,  # noqa: F811
                                     allowed: set[int]) -> None:
    with SqlStorage(PG_DSN, schema=pg_schema) as storage:
        app = app_of(storage)
        client = (TestClient(app, raise_server_exceptions=False) if path == "/v1/auth/login"
                  else signed_in_client(app, "admin", raise_server_exceptions=False))
        r = client.request(method, path, **kwargs)
        assert r.status_code in allowed, r.text[:300]
        if method == "POST" and path != "/v1/auth/login":  # the refused write is in the audit log, its NUL as text
            [entry] = [e for e in client.get("/v1/audit").json()["entries"] if e["action"].startswith("POST")]
            assert entry["target"] == path.replace("%00", "\\x00") and entry["detail"]["status"] == 422


def test_a_driver_data_error_is_a_counted_422(pg_schema: str) -> None:  # noqa: F811
    """The safety net: a value PostgreSQL refuses that no validation caught (a route of the test's own reading
    with one) is a 422, logged and counted, not a 500."""
    with SqlStorage(PG_DSN, schema=pg_schema) as storage:
        app = app_of(storage)
        app.add_api_route("/v1/test-probe", lambda: storage._rows(
            sa.select(alerts.c.alert_id).where(alerts.c.camera_id == "a\x00")))
        client = signed_in_client(app, "admin", raise_server_exceptions=False)
        r = client.get("/v1/test-probe")
        assert r.status_code == 422 and "cannot be stored" in r.json()["detail"]
        assert 'storelens_errors_total{reason="data_error"} 1.0' in client.get("/metrics").text


# -- 3. unknown filters are 404 -----------------------------------------------------------------------------------

def kpi_hour(store: str, region: str, day: str, currency: str = "EUR", sales_minor: int = 1000) -> m.StoreKpiHour:
    t = dt.datetime.fromisoformat(f"{day}T10:00").replace(tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))
    start = int(t.timestamp() * 1000)
    return m.StoreKpiHour(
        store_id=store, store_name=store.upper(), region=region, timezone="Europe/Berlin", start_ms=start,
        end_ms=start + HOUR, day=day, label=t.isoformat(timespec="minutes"), hours=1.0, computed_ms=1,
        visitors=10, transactions=1, sales_minor=sales_minor, currency=currency, buying_units=-1)


@pytest.mark.parametrize("query, status, named", [
    ("store=nope", 404, ["'nope'"]),
    ("region=nope", 404, ["'nope'"]),
    ("store=a&store=typo", 404, ["'typo'"]),  # silently dropped before
    ("store=zz&store=typo", 404, ["'typo'", "'zz'"]),  # each named
    ("store=a&store=b", 200, []),
    ("region=de", 200, []),
    ("region=", 200, []),  # the stores without a region (b)
])
def test_chain_kpis_unknown_store_or_region_is_404(query: str, status: int, named: list[str]) -> None:
    with SqliteStorage(":memory:") as storage:
        roll_into(storage, [kpi_hour("a", "de", "2026-03-02"), kpi_hour("b", "", "2026-03-02")])
        c = signed_in_client(create_app(parse_config(CHAIN), storage), "viewer")
        r = c.get(f"/v1/chain/kpis?from_day=2026-03-02&to_day=2026-03-02&{query}")
        assert r.status_code == status, r.text[:300]
        if status == 404:
            assert all(n in r.json()["detail"] for n in named), r.json()
        else:
            assert r.json()["chain"]["transactions"] >= 1


def alert_row(alert_id: str, camera_id: str) -> dict:
    return {"alert_id": alert_id, "rule_id": "r", "kind": "camera_occupancy", "severity": "warning",
            "camera_id": camera_id, "zone_id": "", "state": "firing", "fired_ts_ms": T0, "fired_seq": 1,
            "ts_ms": T0, "cleared_ts_ms": None, "value": 9.0, "threshold": 5.0, "message": "busy"}


@pytest.mark.parametrize("camera_id, status, total", [
    ("nope", 404, None),  # 200 with total 0 before
    ("c", 200, 1),  # configured
    ("gone", 200, 1),  # removed from the site: its alerts stay readable
    ("", 200, 1),  # the store-wide alerts
])
def test_alerts_of_an_unknown_camera_are_404(camera_id: str, status: int, total: int | None) -> None:
    with SqliteStorage(":memory:") as storage:
        rows = [alert_row("a1", "c"), alert_row("a2", "gone"), alert_row("a3", "")]
        storage._write(lambda conn: conn.execute(sa.insert(alerts), rows))
        r = signed_in_client(app_of(storage), "viewer").get("/v1/alerts", params={"camera_id": camera_id})
        assert r.status_code == status, r.text[:300]
        if status == 404:
            assert "'nope'" in r.json()["detail"]
        else:
            assert r.json()["total"] == total


# -- 4. /v1/kpis: a currency not sold, a rolled-up store's range --------------------------------------------------

@pytest.mark.parametrize("currency, status", [("USD", 422), ("EUR", 200), (None, 200)])
def test_own_kpis_in_a_currency_not_sold_is_422(currency: str | None, status: int) -> None:
    with SqliteStorage(":memory:") as storage:
        c = signed_in_client(app_of(storage), "manager")
        sale = {"transaction_id": "t1", "register_id": "r", "ts_ms": T0 + 10 * HOUR, "amount_minor": 1999,
                "currency": "EUR"}
        assert c.post("/v1/transactions", json={"transactions": [sale]}).status_code == 200
        q = {"start_ms": T0, "end_ms": T0 + DAY_MS, **({"currency": currency} if currency else {})}
        r = c.get("/v1/kpis", params=q)
        assert r.status_code == status, r.text[:300]
        if status == 422:  # the rolled-up store's answer
            assert r.json()["detail"] == "store 's' reports sales in EUR, not USD"
        else:
            assert r.json()["totals"]["sales_minor"] == 1999 and r.json()["currency"] == "EUR"
        # no sale in the range, the EUR sale 2 days before: zeros in EUR, USD still never sold (the rolled-up rule)
        empty = c.get("/v1/kpis", params={**q, "start_ms": T0 + 2 * DAY_MS, "end_ms": T0 + 3 * DAY_MS})
        assert empty.status_code == status and (status == 422 or empty.json()["totals"]["transactions"] == 0)


@pytest.mark.parametrize("days, period, status", [
    (3000, "day", 422),  # 200 before: the store's few hours were read, then counted
    (1900, "day", 200),
    (3000, "week", 200),
    (100, "hour", 422),
])
def test_rolled_up_kpis_refuse_a_range_of_too_many_buckets(days: int, period: str, status: int) -> None:
    with SqliteStorage(":memory:") as storage:
        roll_into(storage, [kpi_hour("other", "de", "2026-03-02")])
        c = signed_in_client(app_of(storage), "viewer")
        start = int(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
        r = c.get("/v1/kpis", params={"store": "other", "period": period, "start_ms": start,
                                      "end_ms": start + days * DAY_MS})
        assert r.status_code == status, r.text[:300]
        if status == 422:
            assert r.json()["detail"] == f"the range has more than 2000 {period} buckets: narrow it"
        else:
            assert r.json()["source"] == "rollup" and r.json()["totals"]["transactions"] == 1


# -- 5. request body size -----------------------------------------------------------------------------------------

def chunks(body: bytes, size: int = 65_536):
    for i in range(0, len(body), size):
        yield body[i:i + size]


BIG = b'{"transactions":[' + b",".join([b'{"transaction_id":"x","register_id":"r","ts_ms":1,"amount_minor":1}'] *
                                      32_000) + b"]}"  # 2.2 MB


@pytest.mark.parametrize("site_api, path, body, headers", [
    ({}, "/v1/transactions", BIG, JSON),  # Content-Length over the default 1 MiB (401 after parsing it before)
    ({}, "/v1/transactions", chunks(BIG), JSON),  # no Content-Length: counted as it arrives
    ({}, "/v1/auth/login", chunks(b"username=" + b"a" * (2 << 20)), {"content-type": "application/x-www-form-"
                                                                                      "urlencoded"}),
    ({"max_body_bytes": 2048}, "/v1/transactions", BIG[:4096], JSON),  # the setting
])
def test_a_body_over_the_limit_is_413(tmp_path: pathlib.Path, site_api: dict, path: str, body, headers) -> None:
    with SqliteStorage(":memory:") as storage:
        app = app_of(storage, {**SITE, "api": site_api})
        r = TestClient(app, raise_server_exceptions=False).post(path, content=body, headers=headers)
        assert r.status_code == 413, r.text[:300]
        assert "api.max_body_bytes" in r.json()["detail"]
        metrics = signed_in_client(app, "admin").get("/metrics").text
        assert 'storelens_errors_total{reason="body_too_large"} 1.0' in metrics


def test_a_body_within_the_limit_is_read() -> None:
    with SqliteStorage(":memory:") as storage:
        app = app_of(storage, {**SITE, "api": {"max_body_bytes": 2048}})
        sale = {"transaction_id": "t1", "register_id": "r", "ts_ms": T0, "amount_minor": 1}
        assert TestClient(app).post("/v1/transactions", json={"transactions": [sale]}).status_code == 401
        assert signed_in_client(app, "manager").post("/v1/transactions",
                                                     json={"transactions": [sale]}).json()["new"] == 1
    with pytest.raises(ConfigError, match="api.max_body_bytes"):
        parse_config({**SITE, "api": {"max_body_bytes": 10}})
