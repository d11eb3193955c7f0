"""POS transactions (POST /v1/transactions, `storelens pos import`) and store KPIs (GET /v1/kpis)."""
from __future__ import annotations

import datetime as dt
import os
import pathlib
import uuid
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from storelens.api.testing import signed_in_client
from storelens.api import create_app
from storelens.cli import main
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.storage import SqliteStorage
from storelens.storage import business as bq
from storelens.storage.history import SqlStorage

SITE = {
    "store": {"id": "s1", "timezone": "Europe/Berlin", "entrance_lines": ["door/entry"],
              "opening_hours": {d: ["09:00", "20:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")}},
    "cameras": [{"id": "door", "source": "/tmp/x.mp4",
                 "lines": [{"id": "entry", "a": [0, 300], "b": [640, 300]},
                           {"id": "inner", "a": [0, 100], "b": [640, 100]}]}],
    "privacy": {"k_min": 1},  # hand-computed medians of two visits (k-anonymity: tests/test_privacy.py)
}


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


def at(hhmm: str) -> int:
    """A time on Saturday 2026-10-24 in Berlin (CEST)."""
    return ms(f"2026-10-24T{hhmm}:00+02:00")


def tx(tid: str, hhmm: str, amount: int, currency: str = "EUR", **kw: Any) -> dict[str, Any]:
    return {"transaction_id": tid, "register_id": "till-1", "time": f"2026-10-24T{hhmm}:00+02:00",
            "amount_minor": amount, "currency": currency, "items_count": 2, **kw}


def fill(storage: SqlStorage) -> None:
    """Counting and zone data of one Saturday, written through the storage API."""
    crossings = [("entry", "in", t) for t in ("10:05", "10:06", "10:07", "10:08", "11:10", "11:12")]
    crossings += [("entry", "out", "10:30"), ("inner", "in", "10:40"), ("entry", "in", "08:30"),
                  ("entry", "in", "20:15")]  # inner line: not an entrance; 08:30 / 20:15: closed
    storage.write_crossings([CrossingEvent(f"door:{line}:{k}:{k}", "door", line, k, d, at(t), k)
                             for k, (line, d, t) in enumerate(crossings)])
    exits = [("floor", "area", "10:30", 60_000, "other"), ("floor", "area", "10:45", 120_000, "other"),
             ("floor", "area", "10:50", 300_000, "lost"),
             ("tills", "queue", "10:40", 30_000, "service_edge"), ("tills", "queue", "10:55", 90_000, "service_edge"),
             ("tills", "queue", "10:58", 20_000, "other"), ("tills", "queue", "11:05", 40_000, "lost"),
             ("shelf-1", "shelf", "10:20", 999_000, "other")]
    storage.write_records([
        m.ZoneEvent(event_id=f"e{k}", camera_id="door", zone_id=z, zone_kind=kind, track_id=k,
                    kind=m.ZONE_EVENT_EXIT, ts_ms=at(t), seq=k, dwell_ms=dwell, how=how)
        for k, (z, kind, t, dwell, how) in enumerate(exits)])


BATCH = [tx("r-1", "10:20", 1250), tx("r-2", "10:50", 2500), tx("r-3", "11:30", 999),
         tx("r-4", "08:45", 500),  # before opening: counts nowhere
         tx("r-5", "10:30", 7000, "USD")]


@pytest.fixture
def client() -> Iterator[TestClient]:
    storage = SqliteStorage(":memory:")
    published: list[m.PosTransaction] = []
    app = create_app(parse_config(SITE), storage, on_transactions=published.extend)
    with signed_in_client(app) as c:
        c.published = published  # type: ignore[attr-defined]
        c.storage = storage  # type: ignore[attr-defined]
        yield c


#: The answer's fields about replaced sales older than the KPI look-back (tests/test_chain_review_31c.py): none here.
NO_REPLACE_NOTE = {"older_than_lookback": [], "republish_lookback_h": None, "warning": None}


def test_post_is_idempotent(client: TestClient) -> None:
    r = client.post("/v1/transactions", json={"transactions": BATCH})
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 5, "new": 5, "duplicates": 0, "conflicts": [], "replaced": 0, **NO_REPLACE_NOTE}
    r = client.post("/v1/transactions", json={"transactions": BATCH})
    assert r.json() == {"received": 5, "new": 0, "duplicates": 5, "conflicts": [], "replaced": 0, **NO_REPLACE_NOTE}
    # a resent id with another amount changes nothing (a conflict); a repeat inside one batch is a duplicate
    r = client.post("/v1/transactions", json={"transactions": [tx("r-1", "12:00", 1), tx("r-9", "12:00", 1),
                                                               tx("r-9", "12:00", 1)]})
    assert r.json() == {"received": 3, "new": 1, "duplicates": 1, "conflicts": ["r-1"], "replaced": 0,
                        **NO_REPLACE_NOTE}
    stored = bq.sales(client.storage, "s1", 0, 2**53)  # type: ignore[attr-defined]
    assert len(stored) == 6 and [s.amount_minor for s in stored if s.ts_ms == at("10:20")] == [1250]
    published = [t.transaction_id for t in client.published]  # type: ignore[attr-defined]
    assert published == ["r-1", "r-2", "r-3", "r-4", "r-5"] * 2 + ["r-1", "r-9", "r-9"]  # at least once
    assert {t.store_id for t in client.published} == {"s1"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("body,field", [
    ({"transactions": [tx("a", "10:00", -1)]}, ["body", "transactions", 0, "amount_minor"]),
    ({"transactions": [tx("a", "10:00", 10**13)]}, ["body", "transactions", 0, "amount_minor"]),
    ({"transactions": [tx("a", "10:00", 1)] * 1001}, ["body", "transactions"]),
    ({"transactions": []}, ["body", "transactions"]),
    ({"transactions": [{**tx("a", "10:00", 1), "time": "yesterday"}]}, ["body", "transactions", 0, "time"]),
    ({"transactions": [{**tx("a", "10:00", 1), "time": "2026-10-24T10:00:00"}]},
     ["body", "transactions", 0, "time"]),
    ({"transactions": [{**tx("a", "10:00", 1), "ts_ms": 5}]}, ["body", "transactions", 0]),
    ({"transactions": [{**tx("a", "10:00", 1), "time": None}]}, ["body", "transactions", 0]),
    ({"transactions": [{**tx("a", "10:00", 1), "time": None, "ts_ms": 2**60}]},
     ["body", "transactions", 0, "ts_ms"]),
    ({"transactions": [tx("a b; DROP TABLE", "10:00", 1)]}, ["body", "transactions", 0, "transaction_id"]),
    ({"transactions": [tx("a", "10:00", 1, "euro")]}, ["body", "transactions", 0, "currency"]),
    ({"transactions": [tx("a", "10:00", 1, items_count=-2)]}, ["body", "transactions", 0, "items_count"]),
    ({"transactions": [{**tx("a", "10:00", 1), "discount": 5}]}, ["body", "transactions", 0, "discount"]),
    ({"transactions": [{**tx("a", "10:00", 1), "amount_minor": 12.5}]}, ["body", "transactions", 0, "amount_minor"]),
])
def test_post_rejects_hostile_input_naming_the_field(client: TestClient, body: dict, field: list) -> None:
    r = client.post("/v1/transactions", json=body)
    assert r.status_code == 422, r.text
    assert any(d["loc"][:len(field)] == field for d in r.json()["detail"]), r.json()
    assert bq.sales(client.storage, "s1", 0, 2**53) == []  # type: ignore[attr-defined]


def test_kpis_equal_hand_computed_values(client: TestClient) -> None:
    fill(client.storage)  # type: ignore[attr-defined]
    assert client.post("/v1/transactions", json={"transactions": BATCH}).status_code == 200
    day = ms("2026-10-24T00:00:00+02:00")
    r = client.get("/v1/kpis", params={"period": "hour", "start_ms": day, "end_ms": day + 86_400_000})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["store_id"] == "s1" and out["timezone"] == "Europe/Berlin" and out["currency"] == "EUR"
    assert out["staff_excluded"] is False and out["opening_hours"] is True
    hours = {b["label"]: b for b in out["buckets"]}
    assert list(hours)[0] == "2026-10-24T09:00+02:00" and len(hours) == 11  # 09:00-20:00 only
    h10, h11 = hours["2026-10-24T10:00+02:00"], hours["2026-10-24T11:00+02:00"]
    assert h10 == {
        "label": "2026-10-24T10:00+02:00", "day": "2026-10-24", "start_ms": at("10:00"), "end_ms": at("11:00"),
        "hours": 1.0, "visitors": 4, "transactions": 2, "sales_minor": 3750, "conversion": 0.5,
        "staff_in": 0, "buying_units": 0,  # no staff recognised, no group records written here (tests/test_groups*.py)
        "conversion_per_buying_unit": None, "atv_minor": 1875.0, "sales_per_visitor_minor": 937.5,
        "median_dwell_s": 120.0, "queue_wait_median_s": 60.0, "queue_served": 2, "abandonments": 1,
        "suppressed": False, "shopper_to_staff_ratio": None}
    assert (h11["visitors"], h11["transactions"], h11["sales_minor"], h11["conversion"], h11["atv_minor"],
            h11["sales_per_visitor_minor"], h11["median_dwell_s"], h11["abandonments"]) == (2, 1, 999, 0.5, 999.0,
                                                                                            499.5, None, 0)
    h9 = hours["2026-10-24T09:00+02:00"]
    assert h9["visitors"] == 0 and h9["conversion"] is None and h9["atv_minor"] is None
    t = out["totals"]
    assert (t["visitors"], t["transactions"], t["sales_minor"], t["conversion"], t["atv_minor"],
            t["sales_per_visitor_minor"], t["median_dwell_s"], t["queue_wait_median_s"]) == \
        (6, 3, 4749, 0.5, 1583.0, 791.5, 120.0, 60.0)

    # days of a weekend: Sunday is closed, so Saturday is the only bucket
    r = client.get("/v1/kpis", params={"period": "day", "start_ms": day, "end_ms": day + 2 * 86_400_000,
                                       "store": "s1"})
    days = r.json()["buckets"]
    assert [(b["label"], b["hours"], b["visitors"], b["transactions"], b["conversion"]) for b in days] == \
        [("2026-10-24", 11.0, 6, 3, 0.5)]
    usd = client.get("/v1/kpis", params={"period": "day", "start_ms": day, "end_ms": day + 86_400_000,
                                         "currency": "USD"})
    assert (usd.json()["totals"]["transactions"], usd.json()["totals"]["sales_minor"]) == (1, 7000)
    week = client.get("/v1/kpis", params={"period": "week", "start_ms": day, "end_ms": day + 1}).json()
    assert [(b["label"], b["hours"], b["visitors"]) for b in week["buckets"]] == [("2026-W43", 66.0, 6)]


def test_kpis_on_a_dst_day_without_opening_hours() -> None:
    site = {"store": {"id": "ny", "timezone": "America/New_York"}, "cameras": [{"id": "door", "source": "/tmp/x.mp4"}]}
    storage = SqliteStorage(":memory:")
    # one entrance crossing in each of the two 01:00 hours of 2026-11-01
    storage.write_crossings([CrossingEvent("a", "door", "l", 1, "in", ms("2026-11-01T01:30:00-04:00"), 1),
                             CrossingEvent("b", "door", "l", 2, "in", ms("2026-11-01T01:30:00-05:00"), 2)])
    with signed_in_client(create_app(parse_config(site), storage)) as c:
        start = ms("2026-11-01T00:00:00-04:00")
        out = c.get("/v1/kpis", params={"period": "hour", "start_ms": start, "end_ms": start + 25 * 3_600_000}).json()
        assert len(out["buckets"]) == 25 and out["opening_hours"] is False and out["currency"] is None
        ones = [(b["label"], b["visitors"]) for b in out["buckets"] if "T01:" in b["label"]]
        assert ones == [("2026-11-01T01:00-04:00", 1), ("2026-11-01T01:00-05:00", 1)]
        day = c.get("/v1/kpis", params={"period": "day", "start_ms": start, "end_ms": start + 1}).json()
        assert [(b["hours"], b["visitors"], b["transactions"]) for b in day["buckets"]] == [(25.0, 2, 0)]


def test_kpis_refusals(client: TestClient) -> None:
    assert client.get("/v1/kpis", params={"start_ms": 0, "end_ms": 1, "store": "other"}).status_code == 404
    assert client.get("/v1/kpis", params={"start_ms": 0, "end_ms": 1, "period": "month"}).status_code == 422
    assert client.get("/v1/kpis", params={"start_ms": 10, "end_ms": 5}).status_code == 422
    r = client.get("/v1/kpis", params={"start_ms": 0, "end_ms": 10**12, "period": "hour"})
    assert r.status_code == 422 and "buckets" in r.text
    assert client.get("/v1/kpis", params={"start_ms": 0, "end_ms": 1, "currency": "eur"}).status_code == 422


def test_openapi_documents_the_definitions(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/transactions", "/v1/kpis"} <= set(spec["paths"])
    props = spec["components"]["schemas"]["KpiValues"]["properties"]
    assert "transactions / visitors" in props["conversion"]["description"]
    assert "not recognised as staff" in props["visitors"]["description"]
    assert "buying_units" in props["conversion_per_buying_unit"]["description"]


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_import_reports_bad_rows_and_is_idempotent(tmp_path: pathlib.Path, capsys) -> None:
    import yaml

    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump({**SITE, "storage": {"backend": "sqlite", "path": str(tmp_path / "h.db")}}))
    csv = tmp_path / "pos.csv"
    csv.write_text(
        "transaction_id,register_id,time,amount,items,currency\n"
        "t1,till-1,2026-10-24T10:20:00+02:00,12.50,3,EUR\n"
        "t2,till-2,1793089200000,25,1,\n"                    # ms, default currency
        "t3,till-1,2026-10-24T10:20:00,1.00,1,EUR\n"          # no offset
        "t4,till-1,2026-10-24T10:21:00+02:00,-3.00,1,EUR\n"   # negative
        "t5,till-1,2026-10-24T10:22:00+02:00,1.005,1,EUR\n"   # too many decimals
        "t6,till-1,2026-10-24T10:23:00+02:00,1500,2,JPY\n"
        "t7,till-1,2026-10-24T10:23:00+02:00,1,x,EUR\n"       # items
        "t8,till-1\n")
    db = tmp_path / "other.db"
    assert main(["pos", "import", str(csv), "--config", str(cfg), "--db", str(db)]) == 1
    out, err = capsys.readouterr()
    assert "3 new transactions, 0 duplicates, 5 bad rows" in out
    for line, what in ((4, "time"), (5, "amount"), (6, "amount"), (8, "items"), (9, "fields")):
        assert f"line {line}: {what}" in err or f"line {line}: 2 {what}" in err, err
    assert main(["pos", "import", str(csv), "--config", str(cfg), "--db", str(db), "--json"]) == 1
    assert '"new": 0, "duplicates": 3, "bad": 5' in capsys.readouterr().out
    with SqliteStorage(str(db)) as s:
        got = {(x.ts_ms, x.amount_minor, x.currency, x.register_id) for x in bq.sales(s, "s1", 0, 2**53)}
    assert got == {(at("10:20"), 1250, "EUR", "till-1"), (1793089200000, 2500, "EUR", "till-2"),
                   (at("10:23"), 1500, "JPY", "till-1")}
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("id,time\n1,2\n")
    assert main(["pos", "import", str(bad_header), "--config", str(cfg), "--db", str(db)]) == 1
    assert "line 1: header must be" in capsys.readouterr().err
    assert main(["pos", "import", str(tmp_path / "missing.csv"), "--config", str(cfg)]) == 2


# -- PostgreSQL ----------------------------------------------------------------------------------

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")


@pytest.fixture
def pg_storage() -> Iterator[SqlStorage]:
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    name = f"test_{uuid.uuid4().hex[:16]}"
    s = SqlStorage(PG_DSN, schema=name)
    try:
        yield s
    finally:
        s.close()
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_postgres_transactions_and_kpis(pg_storage: SqlStorage) -> None:
    fill(pg_storage)
    with signed_in_client(create_app(parse_config(SITE), pg_storage)) as c:
        assert c.post("/v1/transactions", json={"transactions": BATCH}).json()["new"] == 5
        assert c.post("/v1/transactions", json={"transactions": BATCH}).json() == \
            {"received": 5, "new": 0, "duplicates": 5, "conflicts": [], "replaced": 0, **NO_REPLACE_NOTE}
        day = ms("2026-10-24T00:00:00+02:00")
        t = c.get("/v1/kpis", params={"period": "day", "start_ms": day, "end_ms": day + 86_400_000}).json()["totals"]
    assert (t["visitors"], t["transactions"], t["sales_minor"], t["conversion"], t["median_dwell_s"],
            t["queue_wait_median_s"], t["abandonments"]) == (6, 3, 4749, 0.5, 120.0, 60.0, 1)
    assert bq.write_transactions(pg_storage, []) == (0, 0)
