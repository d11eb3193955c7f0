"""Review of the chain roll-up / POS (batch 31c), each fix with a test that fails on the code before.

4. A sale replaced (``pos import --replace``, ``POST /v1/transactions?replace=true``) in an hour older than the
   store's effective KPI look-back never reached HQ, and nothing said so: the CLI warns and the API answers
   ``older_than_lookback`` / ``republish_lookback_h`` / ``warning``, naming ``storelens kpis publish --lookback-h N``
   (and that hours past the retention cannot be sent again).
5. Conversion's "no visitors" hold-out was decided per bucket: a counting store's quiet hour (door closed, 30 paid)
   left its sales out of that hour's conversion while the day counted them. It is decided per store over the
   whole request: the buckets' conversion numerators add up to the total's.
"""
from __future__ import annotations

import json
import re
import time

import pytest
import yaml
from test_chain_review_31 import H, HOUR, kpi_hour
from test_chain_rollup import CHAIN, roll_into

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.cli import main
from storelens.config import parse_config
from storelens.domain.rollup import roll_up
from storelens.storage import SqliteStorage
from storelens.storage import business as bq
from storelens.storage.rollup import hour_rows

# a live camera: the store's "now" is the wall clock (a recorded video's would be its newest stored frame)
SITE = {"store": {"id": "s1", "timezone": "UTC"}, "cameras": [{"id": "door", "source": "rtsp://cam/1"}],
        "rollup": {"lookback_h": 48}}


# -- 4. a replaced sale older than the look-back ------------------------------------------------------------


def csv_of(*rows: tuple[str, int, str]) -> str:
    return "transaction_id,register_id,time,amount,items\n" + "".join(f"{t},r1,{ts},{amount},1\n"
                                                                     for t, ts, amount in rows)


@pytest.mark.parametrize(("case", "warned"), [
    ("old amount", True),    # t1, 72 h old: its hour is outside the 48 h look-back
    ("moved", True),         # t2 moved from 2 h to 72 h ago: the old hour is sent, the new one not
    ("recent amount", False),  # t2, 2 h old: the publisher sends its hour again by itself
])
def test_pos_import_replace_warns_when_a_sale_is_older_than_the_lookback(tmp_path, capsys, case, warned) -> None:
    now = int(time.time() * 1000)
    old, recent = now - 72 * HOUR, now - 2 * HOUR
    cfg, db = tmp_path / "site.yaml", tmp_path / "pos.db"
    cfg.write_text(yaml.safe_dump({**SITE, "storage": {"backend": "sqlite", "path": str(tmp_path / "h.db")}}))
    first, fixed = tmp_path / "first.csv", tmp_path / "fixed.csv"
    first.write_text(csv_of(("t1", old, "100.00"), ("t2", recent, "5.00")))
    fixed.write_text({"old amount": csv_of(("t1", old, "10.00"), ("t2", recent, "5.00")),
                      "moved": csv_of(("t1", old, "100.00"), ("t2", old + 60_000, "5.00")),
                      "recent amount": csv_of(("t1", old, "100.00"), ("t2", recent, "6.00"))}[case])
    args = ["--config", str(cfg), "--db", str(db)]
    assert main(["pos", "import", str(first), *args, "--json"]) == 0
    capsys.readouterr()
    assert main(["pos", "import", str(fixed), *args, "--json", "--replace"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["replaced"] == 1  # the JSON result as before
    found = re.search(r"`storelens kpis publish --lookback-h (\d+(?:\.\d+)?)`", err)
    if not warned:
        assert "warning" not in err and found is None, err
        return
    assert found is not None, err  # before: nothing said
    assert "48 h" in err and ("t1" if case == "old amount" else "t2") in err
    n = float(found.group(1))
    assert 73 <= n <= 75  # the hour 72 h back and a margin (75 when the hour turns between the sale and the run)
    # the N named sends the hour again (the default look-back does not)
    with SqliteStorage(str(db)) as s:
        new_amount = {x.ts_ms: x.amount_minor for x in bq.sales(s, "s1", 0, 2**53)}[old if case == "old amount"
                                                                                     else old + 60_000]

    def published(*extra: str) -> dict[int, int]:
        assert main(["kpis", "publish", *args, "--json", *extra]) == 0
        hours = json.loads(capsys.readouterr().out)["hours"]
        return {int(h["start_ms"]): int(h.get("sales_minor", 0)) for h in hours
                if int(h["start_ms"]) <= old < int(h["end_ms"])}

    assert published() == {}
    (sales_minor,) = published("--lookback-h", found.group(1)).values()
    assert sales_minor >= new_amount


@pytest.mark.parametrize(("days", "age_h", "older", "n_range", "says"), [
    ({}, 72, True, (73, 75), "storelens kpis publish --lookback-h"),
    ({}, 2, False, None, None),
    ({"crossings": 4}, 72, True, (73, 75), "storelens kpis publish --lookback-h"),  # within the retention: sendable
    ({"crossings": 1}, 20, False, None, None),  # the look-back clipped to 24 h: still inside
    ({"crossings": 1}, 30, True, None, "privacy.retention.days.crossings"),  # purged data: cannot be sent again
])
def test_the_api_answer_carries_the_lookback_warning(history_store, days, age_h, older, n_range, says) -> None:
    site = {**SITE, "privacy": {"k_min": 1, "retention": {"days": days}}}
    ts = int(time.time() * 1000) - age_h * HOUR
    sale = {"transaction_id": "t1", "register_id": "r1", "ts_ms": ts, "amount_minor": 10_000, "currency": "EUR"}
    with signed_in_client(create_app(parse_config(site), history_store), role="admin") as c:
        assert c.post("/v1/transactions", json={"transactions": [sale]}).json()["new"] == 1
        r = c.post("/v1/transactions", params={"replace": "true"},
                   json={"transactions": [{**sale, "amount_minor": 1_000}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["replaced"] == 1
    if not older:
        assert (body["older_than_lookback"], body["republish_lookback_h"], body["warning"]) == ([], None, None)
        return
    assert body["older_than_lookback"] == ["t1"]  # before: no such field
    assert says in body["warning"]
    if n_range is None:
        assert body["republish_lookback_h"] is None
        assert "cannot be sent again" in body["warning"]
    else:
        assert n_range[0] <= body["republish_lookback_h"] <= n_range[1]
        assert f"--lookback-h {body['republish_lookback_h']:g}`" in body["warning"]


def test_readme_states_the_lookback_limit_of_a_replace() -> None:
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    i = readme.index("how a wrong import is corrected")
    nearby = readme[i:i + 1200]
    assert "rollup.lookback_h" in nearby and "storelens kpis publish --lookback-h N" in nearby
    assert "cannot be sent again" in nearby


# -- 5. conversion's "no visitors" hold-out over the whole request --------------------------------------------


def quiet_hour_day(history_store) -> None:
    roll_into(history_store, [
        kpi_hour("a", 0, 30, 3_000), kpi_hour("a", 10, 1, 100, start_ms=H + HOUR),  # door closed at 10, 30 paid
        kpi_hour("b", 100, 10, 1_000), kpi_hour("b", 100, 10, 1_000, start_ms=H + HOUR),
        kpi_hour("c", 0, 200, 20_000),  # no visitor in the whole range: no counting camera
    ])


@pytest.mark.parametrize("group_by", ["chain", "region", "store"])
def test_hourly_conversion_numerators_add_up_to_the_total(history_store, group_by) -> None:
    quiet_hour_day(history_store)
    rolled = roll_up(hour_rows(history_store, stores=["a", "b", "c"]), "hour", group_by)
    for g, (per, total) in rolled.items():
        assert sum(k.transactions_with_visitors for k in per.values()) == total.transactions_with_visitors, g
        assert sum(k.sales_with_visitors_minor for k in per.values()) == total.sales_with_visitors_minor, g
    if group_by != "store":
        (per, total) = rolled["chain" if group_by == "chain" else "north"]
        assert total.transactions_with_visitors == 30 + 1 + 10 + 10  # c's 200 still out
        assert [k.transactions_with_visitors for k in per.values()] == [40, 11]  # before: [10, 11]
    else:
        assert rolled["c"][1].transactions_with_visitors == 0
        assert [k.transactions_with_visitors for k in rolled["a"][0].values()] == [30, 1]  # before: [0, 1]


def test_the_chain_api_buckets_add_up_to_the_total(history_store) -> None:
    quiet_hour_day(history_store)
    app = create_app(parse_config(CHAIN), history_store)
    with signed_in_client(app, role="viewer") as c:
        r = c.get("/v1/chain/kpis", params={"from_day": "2026-01-01", "to_day": "2026-01-01", "period": "hour",
                                            "group_by": "region"})
    assert r.status_code == 200, r.text
    body = r.json()
    (north,) = body["groups"]
    tot = north["totals"]
    assert (tot["visitors"], tot["transactions"]) == (210, 251)
    assert tot["conversion"] == pytest.approx(51 / 210)  # c's sales left out, a's quiet hour in
    buckets = {b["key"][-5:]: b for b in north["buckets"] if b["visitors"]}
    assert buckets["10:00"]["conversion"] == pytest.approx(40 / 100)  # before: 10 / 100
    numerators = sum(b["conversion"] * b["visitors"] for b in buckets.values())
    assert numerators == pytest.approx(tot["conversion"] * tot["visitors"])
    assert body["chain"]["conversion"] == pytest.approx(51 / 210)
