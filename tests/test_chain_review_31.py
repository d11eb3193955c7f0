"""Review of the chain / KPIs / POS path (batch 31), each fix with a test that fails on the code before.

1. A store whose clock is its newest stored frame re-publishes an hour with the same ``computed_ms`` after a
   POS import: first without sales (currency ""), then in EUR. Both rows stayed: the chain's day had 20
   visitors instead of 10 and 2 open hours. The hour's rows in currencies it no longer has go.
2. A store with sales but no visitors (no entrance camera yet) made its region's conversion 2.2 (A: 100
   visitors 20 sales, B: 200 sales, no visitor): its sales stay out of conversion and sales per visitor.
3. ``privacy.retention.days.crossings: 1`` with ``rollup.lookback_h: 48``: after the purge the hours 24-48 h
   old were sent again at 0 and replaced the chain's figures. The look-back is clipped to the retention.
4. A stray quote in a POS CSV swallowed the rows after it silently (or aborted a big file with "field larger
   than field limit"): it is one bad row naming its lines.
5. The default ``chain.topic_pattern`` matched no store topic without a dotted prefix.
6. A corrected POS re-import changed nothing and said "duplicates": a differing copy is a conflict, and
   ``--replace`` (``replace=true``) stores it.
7. Docs: ``pos-transactions`` is read by no service; the chain-rollup service has a README.
"""
from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml
from test_chain_rollup import CHAIN, roll_into

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.cli import main
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain import pos
from storelens.domain.counting import CrossingEvent
from storelens.runtime import rollup as publishing
from storelens.storage import SqliteStorage, open_storage
from storelens.storage import business as bq
from storelens.storage.privacy import purge_expired
from storelens.storage.rollup import hour_rows, kpi_publisher

REPO = pathlib.Path(__file__).resolve().parents[1]
H = 1767261600000  # 2026-01-01T10:00Z, a Thursday
HOUR = 3_600_000


def store_config(tmp: pathlib.Path, **extra) -> object:
    return parse_config({"store": {"id": "s1", "region": "north", "timezone": "UTC"}, "privacy": {"k_min": 1},
                         "storage": {"backend": "sqlite", "path": str(tmp / "s1.db")},
                         "cameras": [{"id": "door", "source": "x.mp4",
                                      "lines": [{"id": "in", "a": [0, 5], "b": [9, 5]}]}], **extra})


def visitors_at(storage, start_ms: int, n: int, tag: str = "") -> None:
    storage.write_crossings([CrossingEvent(f"door:in:{tag}{i}", "door", "in", 1000 * len(tag) + i, "in",
                                           start_ms + i * 1000, i) for i in range(n)])


def publisher(config, storage, chain, now_ms: int):
    """The store's real publisher into ``chain``, its clock fixed at ``now_ms`` (a recorded video's newest frame:
    unchanged between runs)."""
    pub = kpi_publisher(config, storage, lambda items: roll_into(chain, [h for _, h in items]))
    pub.now_ms = lambda: now_ms
    return pub


# -- 1. the same computation, re-published in another currency ----------------------------------------------


def test_an_hour_republished_with_the_same_computed_ms_in_another_currency_counts_once(history_store, tmp_path):
    config = store_config(tmp_path)
    storage = open_storage(config.storage)
    try:
        visitors_at(storage, H, 10)
        pub = publisher(config, storage, history_store, H + HOUR)
        assert pub.run() >= 1  # the hour without sales: currency ""
        bq.write_transactions(storage, [pos.transaction("t1", "s1", "r1", H + 60_000, 1000, "EUR", 1)])
        assert pub.run() >= 1  # the same hour, same computed_ms, now in EUR
    finally:
        storage.close()
    hours = [r for r in hour_rows(history_store, stores=["s1"]) if r.day == "2026-01-01"]
    assert len(hours) == len({r.start_ms for r in hours}) == 12  # 00:00 to 11:00, one row each
    (day,) = [r for r in hour_rows(history_store, stores=["s1"], per="day") if r.day == "2026-01-01"]
    assert (day.kpis.visitors, day.kpis.transactions, day.kpis.hours) == (10, 1, 12.0)  # before: 20, 1, 24.0
    app = create_app(parse_config(CHAIN), history_store)
    with signed_in_client(app, role="viewer") as c:
        r = c.get("/v1/kpis", params={"store": "s1", "start_ms": H, "end_ms": H + HOUR, "period": "hour"})
        assert r.status_code == 200, r.text
        (b,) = r.json()["buckets"]
        assert (b["visitors"], b["transactions"], b["conversion"]) == (10, 1, 0.1)  # before: 20, 1, 0.05
        chain = c.get("/v1/chain/kpis", params={"from_day": "2026-01-01", "to_day": "2026-01-01"}).json()
        assert (chain["chain"]["visitors"], chain["chain"]["hours"]) == (10, 12.0)


# -- 2. sales without visitors ----------------------------------------------------------------------------


def kpi_hour(store: str, visitors: int, transactions: int, sales_minor: int, start_ms: int = H,
             region: str = "north") -> m.StoreKpiHour:
    return m.StoreKpiHour(store_id=store, store_name=store.upper(), region=region, timezone="UTC",
                          start_ms=start_ms, end_ms=start_ms + HOUR, day="2026-01-01",
                          label=f"2026-01-01T{(start_ms - H) // HOUR + 10:02d}:00+00:00", hours=1.0, computed_ms=1,
                          visitors=visitors, transactions=transactions, sales_minor=sales_minor, currency="EUR",
                          buying_units=-1)


@pytest.mark.parametrize("period", ["day", "hour"])
def test_a_store_with_sales_but_no_visitors_adds_nothing_to_conversion(history_store, period) -> None:
    roll_into(history_store, [kpi_hour("a", 100, 20, 40_000), kpi_hour("b", 0, 200, 100_000),
                              # c: no visitor in its first hour, 50 in its second: its store total counts all
                              kpi_hour("c", 0, 5, 1_000), kpi_hour("c", 50, 5, 1_000, start_ms=H + HOUR)])
    app = create_app(parse_config(CHAIN), history_store)
    q = {"from_day": "2026-01-01", "to_day": "2026-01-01", "period": period}
    with signed_in_client(app, role="viewer") as c:
        region = c.get("/v1/chain/kpis", params={**q, "group_by": "region"}).json()
        stores = c.get("/v1/chain/kpis", params={**q, "group_by": "store"}).json()
    (north,) = region["groups"]
    tot = north["totals"]
    assert (tot["visitors"], tot["transactions"], tot["sales_minor"]) == (150, 230, 142_000)  # every sale counted
    assert tot["conversion"] == pytest.approx(30 / 150)  # before: 230 / 150 (over 100 %)
    assert tot["sales_per_visitor_minor"] == pytest.approx(42_000 / 150)
    assert region["chain"]["conversion"] == pytest.approx(30 / 150)
    by = {g["group"]: g["totals"] for g in stores["groups"]}
    assert (by["a"]["conversion"], by["b"]["conversion"], by["c"]["conversion"]) == (0.2, None, 0.2)
    if period == "hour":  # b's hour with a's and c's: b adds nothing; c counts visitors over the range (its 11:00),
        # so its 10:00 sales count in its bucket too (review 31c: the buckets add up to the total, 25 + 5 = 30)
        (h10,) = [b for b in north["buckets"] if b["key"].endswith("T10:00")]
        assert h10["conversion"] == pytest.approx((20 + 5) / 100)


# -- 3. a retention shorter than the look-back --------------------------------------------------------------


@pytest.mark.parametrize(("days", "lookback_h", "field"), [
    ({}, 48.0, None),
    ({"crossings": 1}, 24.0, "crossings"),
    ({"group_crossings": 1.5}, 36.0, "group_crossings"),
    ({"zone_events": 1}, 24.0, "zone_events"),
    ({"staff_tracks": 2}, 24.0, "staff_tracks"),  # a staff track excludes its crossings of the next day
    ({"crossings": 30, "staff_tracks": 30}, 48.0, None),
    ({"track_points": 1}, 48.0, None),  # not read by the KPIs
])
def test_the_lookback_is_clipped_to_the_retention(tmp_path, days, lookback_h, field) -> None:
    config = store_config(tmp_path, privacy={"k_min": 1, "retention": {"days": days}})
    named = None if field is None else f"privacy.retention.days.{field}"
    assert publishing.retained_lookback_h(config) == (lookback_h, named)


def test_hours_whose_data_were_purged_are_not_sent_again_at_zero(history_store, tmp_path, caplog) -> None:
    now = H + 40 * HOUR
    old = now - 30 * HOUR  # an hour 30 h before now: kept by the chain, purged at the store after a day
    config = store_config(tmp_path, privacy={"k_min": 1, "retention": {"days": {"crossings": 1}}})
    storage = open_storage(config.storage)
    try:
        visitors_at(storage, old, 12, "old")
        visitors_at(storage, now - 2 * HOUR, 7, "new")
        before = store_config(tmp_path)  # the store before the retention was set (or before the purge ran)
        assert publisher(before, storage, history_store, now).run() > 0
        assert purge_expired(storage, config.privacy.retention.days, now)["crossings"] == 12
        visitors_at(storage, now - 2 * HOUR + 5000, 1, "late")  # a change the store sends
        with caplog.at_level("WARNING", logger="storelens.runtime.rollup"):
            pub = publisher(config, storage, history_store, now)
            assert pub.run() > 0
    finally:
        storage.close()
    got = {r.start_ms: r.kpis.visitors for r in hour_rows(history_store, stores=["s1"])}
    assert got[old] == 12  # before: 0 (recomputed from the purged history)
    assert got[now - 2 * HOUR] == 8
    assert len([r for r in caplog.records if "clipped" in r.getMessage()]) == 1, "logged once, at start"


# -- 4. a stray quote in a POS CSV --------------------------------------------------------------------------


def pos_site(tmp: pathlib.Path) -> pathlib.Path:
    cfg = tmp / "site.yaml"
    cfg.write_text(yaml.safe_dump({"store": {"id": "s1", "timezone": "UTC"},
                                   "storage": {"backend": "sqlite", "path": str(tmp / "h.db")},
                                   "cameras": [{"id": "door", "source": "x.mp4"}]}))
    return cfg


def csv_rows(n: int, stray_at: int | None = None, ids: str = "t") -> str:
    rows = ["transaction_id,register_id,time,amount,items"]
    for i in range(n):
        amount = '"1.00' if i == stray_at else "1.00"
        rows.append(f"{ids}{i},r1,2026-01-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z,{amount},1")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize(("n", "stray_at"), [
    (10, 2),     # the quote swallowed the file to its end
    (5000, 2),   # ... past the csv module's field limit (131072 characters): it aborted
])
def test_a_stray_quote_is_one_bad_row_naming_its_lines(tmp_path, capsys, n, stray_at) -> None:
    # since review 31b each physical line is parsed on its own: the stray quote spoils its line only
    cfg, db, f = pos_site(tmp_path), tmp_path / "pos.db", tmp_path / "pos.csv"
    f.write_text(csv_rows(n, stray_at))
    assert main(["pos", "import", str(f), "--config", str(cfg), "--db", str(db), "--json"]) == 1
    out, err = capsys.readouterr()
    line = stray_at + 2  # the header is line 1
    assert re.search(rf"line {line}: unclosed quote", err), err
    assert "unexpected" not in err
    result = json.loads(out)
    assert result["bad"] == 1
    with SqliteStorage(str(db)) as s:
        stored = len(bq.sales(s, "s1", 0, 2**53))
    assert stored == result["new"] == result["rows"] - 1 == n - 1


# -- 5. the default topic pattern ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "store-berlin-01.", "berlin_", "berlin-", "berlin", "a.b-c_"])
def test_the_default_topic_pattern_matches_a_store_with_any_prefix(prefix) -> None:
    store = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                          "rollup": {"enabled": True}, "kafka": {"topic_prefix": prefix}})
    chain = parse_config(CHAIN)
    topic = topics.topic_name(topics.STORE_KPIS, store.kafka.topic_prefix)
    assert re.match(chain.chain.topic_pattern, topic), (topic, chain.chain.topic_pattern)  # as aiokafka matches
    for other in (topics.topic_name(topics.POS_TRANSACTIONS, prefix), f"{prefix}store-kpis-old", "store kpis"):
        assert not re.match(chain.chain.topic_pattern, other)


# -- 6. correcting a POS import ------------------------------------------------------------------------------


def test_a_corrected_reimport_is_a_conflict_until_replace(tmp_path, capsys) -> None:
    cfg, db = pos_site(tmp_path), tmp_path / "pos.db"
    first, fixed = tmp_path / "first.csv", tmp_path / "fixed.csv"
    head = "transaction_id,register_id,time,amount,items\n"
    first.write_text(head + "t1,r1,2026-01-01T10:00:00Z,100.00,1\nt2,r1,2026-01-01T10:01:00Z,5.00,1\n")
    fixed.write_text(head + "t1,r1,2026-01-01T10:00:00Z,10.00,1\nt2,r1,2026-01-01T10:01:00Z,5.00,1\n")
    args = ["--config", str(cfg), "--db", str(db), "--json"]

    def amounts() -> dict:
        with SqliteStorage(str(db)) as s:
            return {x.ts_ms: x.amount_minor for x in bq.sales(s, "s1", 0, 2**53)}

    assert main(["pos", "import", str(first), *args]) == 0
    capsys.readouterr()
    assert main(["pos", "import", str(fixed), *args]) == 1  # before: 0, "2 duplicates"
    out, err = capsys.readouterr()
    assert "transaction_id t1: conflict" in err and "t2" not in err
    assert json.loads(out) == {"rows": 2, "new": 0, "duplicates": 1, "bad": 1, "conflicts": 1, "replaced": 0}
    assert amounts()[H] == 10_000  # unchanged
    assert main(["pos", "import", str(fixed), *args, "--replace"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "rows": 2, "new": 0, "duplicates": 1, "bad": 0, "conflicts": 0, "replaced": 1}
    assert amounts()[H] == 1_000
    # the same id twice in one file, differently: a conflict, neither copy stored, also with --replace
    twice = tmp_path / "twice.csv"
    twice.write_text(head + "t3,r1,2026-01-01T10:02:00Z,1.00,1\nt4,r1,2026-01-01T10:03:00Z,1.00,1\n"
                            "t3,r2,2026-01-01T10:02:00Z,1.00,1\nt4,r1,2026-01-01T10:03:00Z,1.00,1\n")
    assert main(["pos", "import", str(twice), *args, "--replace"]) == 1
    out, err = capsys.readouterr()
    assert "transaction_id t3: conflict" in err
    assert json.loads(out) == {"rows": 4, "new": 1, "duplicates": 1, "bad": 2, "conflicts": 1, "replaced": 0}
    assert H + 120_000 not in amounts() and amounts()[H + 180_000] == 100


def test_the_api_reports_conflicts_and_replaces_on_request(history_store) -> None:
    site = {"store": {"id": "s1", "timezone": "UTC"}, "cameras": [{"id": "door", "source": "x.mp4"}]}
    sale = {"transaction_id": "t1", "register_id": "r1", "ts_ms": H, "amount_minor": 10_000, "currency": "EUR"}
    # admin: replace=true needs it since review 31b (tests/test_chain_review_31b.py)
    with signed_in_client(create_app(parse_config(site), history_store), role="admin") as c:
        assert c.post("/v1/transactions", json={"transactions": [sale]}).json()["new"] == 1
        fixed = {**sale, "amount_minor": 1_000}
        r = c.post("/v1/transactions", json={"transactions": [fixed]}).json()
        assert (r["new"], r["duplicates"], r["conflicts"], r["replaced"]) == (0, 0, ["t1"], 0)
        assert [x.amount_minor for x in bq.sales(history_store, "s1", 0, 2**53)] == [10_000]
        r = c.post("/v1/transactions", params={"replace": "true"}, json={"transactions": [fixed]}).json()
        assert (r["conflicts"], r["replaced"]) == ([], 1)
        assert [x.amount_minor for x in bq.sales(history_store, "s1", 0, 2**53)] == [1_000]
        r = c.post("/v1/transactions", json={"transactions": [fixed]}).json()
        assert (r["duplicates"], r["conflicts"]) == (1, [])


# -- 7. docs ------------------------------------------------------------------------------------------------


def test_docs_say_what_reads_pos_transactions_and_the_chain_rollup_service_has_a_readme() -> None:
    readme = (REPO / "README.md").read_text()
    assert "from the POS to the history" not in readme
    assert "no StoreLens service reads the topic" in readme
    service = (REPO / "services" / "chain-rollup" / "README.md").read_text()
    for what in ("Topics in", "Topics out", "State", "Config", "/healthz", parse_config(CHAIN).chain.topic_pattern):
        assert what in service, what
