"""Review fixes of the business figures: what a store manager or a chain analyst would have seen wrong.

1. Currencies: a store that published hours without sales (currency "") kept its sales in the chain's
   euro figures (1000 EUR cents + 50000 JPY came out as 51000) and hid its currency.
3. Conversion per buying unit / shoppers per staff member of a chain: a store that counts no buying
   units (or recognises no staff) added its transactions (visitors) to the numerator only.
4. POS times in seconds or microseconds were stored in 1970 or the year ~57000, never in a KPI.
5. Staff tracks were counted in the median dwell and queue wait.
6. The repeated hour of a fall-back day was merged into one double hour (period=hour).
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain import pos
from storelens.domain import rollup as R
from storelens.runtime.bus import BusMessage
from storelens.runtime.rollup import hour_key
from storelens.runtime.runner import RunnerCore
from storelens.runtime.sinks import HistorySink
from storelens.stages.rollup import ChainRollupStage
from storelens.storage import SqliteStorage
from storelens.storage import business as bq
from storelens.storage.kpis import calendar, store_kpis
from storelens.storage.rollup import kpi_hours

CHAIN = {"store": {"id": "chain", "name": "The chain"}, "cameras": [], "chain": {}, "privacy": {"k_min": 1}}
TZ = {"eur-01": "Europe/Berlin", "jpy-01": "Asia/Tokyo", "units-01": "Europe/Berlin", "plain-01": "Europe/Berlin"}


def local(store: str, iso: str) -> tuple[int, str]:
    """Start ms and label of the local hour ``iso`` (YYYY-MM-DDTHH:MM) of ``store``."""
    t = dt.datetime.fromisoformat(iso).replace(tzinfo=zoneinfo.ZoneInfo(TZ[store]))
    return int(t.timestamp() * 1000), t.isoformat(timespec="minutes")


def hour(store: str, iso: str, computed_ms: int = 1, **figures) -> m.StoreKpiHour:
    start, label = local(store, iso)
    return m.StoreKpiHour(store_id=store, store_name=store.upper(), timezone=TZ[store], start_ms=start,
                          end_ms=start + 3_600_000, day=iso[:10], label=label, hours=1.0, computed_ms=computed_ms,
                          **figures)


def roll_into(chain: SqliteStorage, hours: list[m.StoreKpiHour]) -> None:
    core = RunnerCore(ChainRollupStage(parse_config(CHAIN)), [HistorySink(chain)])
    for i, h in enumerate(hours):
        core.write_sinks(core.process(BusMessage(f"{h.store_id}.{topics.STORE_KPIS}", hour_key(h), m.encode(h), i),
                                      topics.STORE_KPIS))


# -- 1. currencies ---------------------------------------------------------------------------------


@pytest.fixture
def two_currencies() -> SqliteStorage:
    """A euro store and a yen store; the yen store's newest hour had no sale (currency "")."""
    chain = SqliteStorage(":memory:")
    roll_into(chain, [
        hour("eur-01", "2026-10-20T10:00", visitors=10, transactions=1, sales_minor=1000, currency="EUR",
             buying_units=-1),
        hour("jpy-01", "2026-10-20T10:00", visitors=5, transactions=1, sales_minor=50000, currency="JPY",
             buying_units=-1),
        hour("jpy-01", "2026-10-21T10:00", computed_ms=2, visitors=4, currency="", buying_units=-1),
    ])
    return chain


@pytest.mark.parametrize("period", ["day", "hour", "week"])
def test_chain_euro_figures_leave_out_a_yen_store_whose_last_hour_had_no_sale(two_currencies, period) -> None:
    with signed_in_client(create_app(parse_config(CHAIN), two_currencies)) as c:
        eur = c.get("/v1/chain/kpis", params={"from_day": "2026-10-20", "to_day": "2026-10-21", "currency": "EUR",
                                              "period": period, "group_by": "chain"})
        mixed = c.get("/v1/chain/kpis", params={"from_day": "2026-10-20", "to_day": "2026-10-21", "period": period})
    assert eur.status_code == 200, eur.text
    assert eur.json()["currency"] == "EUR"
    assert (eur.json()["chain"]["sales_minor"], eur.json()["chain"]["visitors"], eur.json()["chain"]["stores"]) == \
        (1000, 10, 1)
    assert mixed.status_code == 422 and "EUR, JPY" in mixed.json()["detail"]


def test_a_store_keeps_its_currency_after_an_hour_without_sales(two_currencies) -> None:
    with signed_in_client(create_app(parse_config(CHAIN), two_currencies)) as c:
        stores = {s["store_id"]: s["currency"] for s in c.get("/v1/stores").json()["stores"]}
        start, _ = local("jpy-01", "2026-10-20T00:00")
        span = {"store": "jpy-01", "start_ms": start, "end_ms": start + 2 * 86_400_000}
        as_eur = c.get("/v1/kpis", params={**span, "currency": "EUR"})
        own = c.get("/v1/kpis", params=span).json()
    assert stores == {"eur-01": "EUR", "jpy-01": "JPY"}
    assert as_eur.status_code == 422 and "JPY" in as_eur.json()["detail"]
    assert own["currency"] == "JPY" and own["totals"]["sales_minor"] == 50000 and own["totals"]["visitors"] == 9


def test_a_store_publishes_hours_without_sales_in_the_currency_it_sold_in_last() -> None:
    config = parse_config({"store": {"id": "jpy-01", "timezone": "Asia/Tokyo"},
                           "cameras": [{"id": "c", "source": "x.mp4"}]})
    storage = SqliteStorage(":memory:")
    sold, _ = local("jpy-01", "2026-10-20T10:00")
    bq.write_transactions(storage, [pos.transaction("r1", "jpy-01", "till", sold, 50000, "JPY", 1)])
    later, _ = local("jpy-01", "2026-10-23T10:00")  # the look-back holds no sale
    hours = kpi_hours(config, storage, later, later + 2 * 3_600_000, later + 2 * 3_600_000)
    assert len(hours) == 2 and {(h.currency, h.sales_minor) for h in hours} == {("JPY", 0)}


# -- 3. ratios of the stores that count their denominator ------------------------------------------


def test_chain_ratios_count_only_the_stores_that_count_units_and_staff() -> None:
    chain = SqliteStorage(":memory:")
    roll_into(chain, [  # units-01 counts buying units and recognises staff; plain-01 does neither
        hour("units-01", "2026-10-20T10:00", visitors=20, staff_in=2, buying_units=10, transactions=2),
        hour("units-01", "2026-10-20T11:00", visitors=5, staff_in=0, buying_units=0, transactions=0),
        hour("plain-01", "2026-10-20T10:00", visitors=100, staff_in=0, buying_units=-1, transactions=3),
    ])
    with signed_in_client(create_app(parse_config(CHAIN), chain)) as c:
        for period in ("day", "hour"):
            out = c.get("/v1/chain/kpis", params={"from_day": "2026-10-20", "to_day": "2026-10-20",
                                                  "group_by": "chain", "period": period}).json()
            total = out["chain"]
            assert (total["transactions"], total["buying_units"], total["visitors"], total["staff_in"]) == \
                (5, 10, 125, 2), period
            assert total["conversion_per_buying_unit"] == 0.2, period  # 2 / 10, not 5 / 10
            assert total["shopper_to_staff_ratio"] == 12.5, period  # 25 / 2, not 125 / 2
        ten = out["groups"][0]["buckets"][0]
        assert ten["key"] == "2026-10-20T10:00" and ten["conversion_per_buying_unit"] == 0.2
        assert ten["shopper_to_staff_ratio"] == 10.0


# -- 4. POS times in seconds or microseconds -------------------------------------------------------

NOW = 1_767_225_600_000  # 2026-01-01T00:00Z (before the wall clock; sales later than a day after it are refused)


def test_the_future_is_a_day_after_now() -> None:
    assert pos.check_sale_ms(NOW + 86_400_000, now_ms=NOW) == NOW + 86_400_000
    with pytest.raises(ValueError, match="future"):
        pos.parse_ts(str(NOW + 86_400_001), now_ms=NOW)


def test_csv_rejects_times_in_seconds_and_microseconds_naming_the_row() -> None:
    rows, errors = pos.read_csv([
        "transaction_id,register_id,time,amount,items",
        f"t1,till-1,{NOW - 60_000},1.00,1",
        f"t2,till-1,{NOW // 1000},1.00,1",        # seconds
        f"t3,till-1,{NOW * 1000},1.00,1",         # microseconds
        "t4,till-1,2099-01-03T10:00:00+01:00,1.00,1",  # the future
    ], "s1")
    assert [r.transaction_id for r in rows] == ["t1"]
    assert len(errors) == 3
    assert errors[0].startswith("line 3: time:") and "seconds" in errors[0]
    assert errors[1].startswith("line 4: time:") and "microseconds" in errors[1]
    assert errors[2].startswith("line 5: time:") and "future" in errors[2]


@pytest.mark.parametrize("when, hint", [
    ({"ts_ms": 1_767_225_600}, "seconds"),
    ({"ts_ms": 1_767_225_600_000_000}, "microseconds"),
    ({"time": "2099-01-01T10:00:00+01:00"}, "future"),
])
def test_post_rejects_times_in_seconds_and_microseconds_naming_the_field(when, hint) -> None:
    storage = SqliteStorage(":memory:")
    app = create_app(parse_config({"store": {"id": "s1"}, "cameras": [{"id": "c", "source": "x.mp4"}]}), storage)
    t = {"transaction_id": "r1", "register_id": "till-1", "amount_minor": 100, **when}
    with signed_in_client(app) as c:
        r = c.post("/v1/transactions", json={"transactions": [t]})
        ok = c.post("/v1/transactions", json={"transactions": [{**t, "transaction_id": "r2", "time": None,
                                                                 "ts_ms": NOW}]})
    assert r.status_code == 422, r.text
    field = next(iter(when))
    assert any(d["loc"][:4] == ["body", "transactions", 0, field] and hint in d["msg"] for d in r.json()["detail"])
    assert ok.status_code == 200 and [s.ts_ms for s in bq.sales(storage, "s1", 0, 2**53)] == [NOW]


# -- 5. staff in the dwell and queue medians -------------------------------------------------------


def test_staff_exits_are_not_in_the_dwell_and_queue_medians() -> None:
    config = parse_config({"store": {"id": "s1"}, "privacy": {"k_min": 1},
                           "cameras": [{"id": "cam", "source": "x.mp4"}, {"id": "other", "source": "y.mp4"}]})
    storage = SqliteStorage(":memory:")
    t0 = NOW + 10 * 3_600_000
    exits = [("cam", 1, "area", 60_000, "other"), ("cam", 2, "area", 120_000, "other"),
             ("cam", 7, "area", 3_000_000, "other"),          # staff member 7 in the shop all morning
             ("other", 7, "area", 90_000, "other"),           # track 7 of another camera: a shopper
             ("cam", 3, "queue", 30_000, "service_edge"), ("cam", 7, "queue", 600_000, "service_edge"),
             ("cam", 7, "queue", 20_000, "other")]             # staff leaving the queue area: no abandonment
    storage.write_records(
        [m.ZoneEvent(event_id=f"e{k}", camera_id=cam, zone_id=kind, zone_kind=kind, track_id=tid,
                     kind=m.ZONE_EVENT_EXIT, ts_ms=t0 + k * 60_000, seq=k, dwell_ms=dwell, how=how)
         for k, (cam, tid, kind, dwell, how) in enumerate(exits)]
        + [m.StaffTrack(camera_id="cam", track_id=7, ts_ms=t0 + 3_600_000, seq=99, cue="zone", detail="back")])
    days = calendar(config).buckets("day", t0, t0 + 1)
    k = store_kpis(config, storage, days, t0, t0 + 1).total
    assert k.median_dwell_s == 90.0  # of 60, 90, 120 s; not 105 with the staff member's 3000 s
    assert k.queue_wait_median_s == 30.0 and k.queue_served == 1 and k.abandonments == 0


# -- 6. the repeated hour of a fall-back day -------------------------------------------------------


def test_the_repeated_hour_of_a_fall_back_day_is_two_hours_and_zones_still_meet_on_local_hours() -> None:
    def row(store: str, start_ms: int, label: str, visitors: int) -> R.HourRow:
        return R.HourRow(store, "", start_ms, "2026-10-25", label, R.ChainKpis(visitors=visitors, stores={store}))

    berlin_first = 1_792_886_400_000  # 2026-10-25T02:00+02:00 (00:00Z)
    rows = [row("berlin", berlin_first, "2026-10-25T02:00+02:00", 5),
            row("berlin", berlin_first + 3_600_000, "2026-10-25T02:00+01:00", 5),
            row("lisbon", berlin_first + 3_600_000, "2026-10-25T01:00+00:00", 1),
            row("nyc", berlin_first + 7 * 3_600_000, "2026-10-25T03:00-04:00", 1),
            row("nyc", berlin_first + 6 * 3_600_000, "2026-10-25T02:00-04:00", 2)]
    per, total = R.roll_up(rows, "hour", "chain")["chain"]
    assert {k: v.visitors for k, v in per.items()} == {
        "2026-10-25T01:00": 1, "2026-10-25T02:00": 7, "2026-10-25T02:00+01:00": 5, "2026-10-25T03:00": 1}
    assert list(per) == sorted(per) and total.visitors == 14
