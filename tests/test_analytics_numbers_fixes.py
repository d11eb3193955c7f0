"""Review findings on analytics numbers (H7): flows' min_count and k-anonymity, weekly count buckets, the
heatmap's walking statistics over a whole range, chain hours in every currency of a store.

* ``/v1/flows?min_count=`` filtered links by their count before suppression, so a suppressed link that showed
  at min_count=2 and vanished at 3 had a count of 2: now the answer does not depend on a withheld count;
* ``/v1/counts`` buckets of whole weeks ran Thursday to Wednesday (from the local 1970-01-01) while
  ``/v1/kpis?period=week`` runs ISO weeks, Monday to Sunday: now both are ISO weeks;
* the camera heatmap's ``walking`` statistics came from the first 100,000 track points of the range only
  (about 17 minutes of a busy camera's day), with no sign of it: now from every track of the range, read a
  page of whole tracks at a time, up to a bound past which the answer says ``truncated`` and what it covers;
* a store's chain hours kept the sales of one currency (the look-back's most frequent) and dropped the
  others: now an hour carries every currency's sales (``other_sales``) and the chain stores a row per
  (store, hour, currency) (migration 0017).

Real app (TestClient), real storage (SQLite and PostgreSQL where the ``history_store`` fixture runs), the real
chain stage and history sink.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from storelens.api import create_app
from storelens.api.routes import heatmap as heatmap_route
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain import pos
from storelens.domain.calendar import StoreCalendar
from storelens.domain.counting import CrossingEvent, crossing_event_id
from storelens.domain.heatmap import fit_homography, walking_stats
from storelens.runtime.bus import BusMessage
from storelens.runtime.rollup import hour_key
from storelens.runtime.runner import RunnerCore
from storelens.runtime.sinks import HistorySink
from storelens.stages.rollup import ChainRollupStage
from storelens.storage import SqliteStorage, SqlStorage
from storelens.storage import business as bq
from storelens.storage.migrations import _scripts, revisions
from storelens.storage.rollup import hour_rows, kpi_hours
from storelens.storage.schema import chain_kpi_hours
from test_chain_rollup import CHAIN, roll_into

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
POLY = [[0, 0], [100, 0], [100, 100], [0, 100]]


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


# -- 1. /v1/flows: min_count never looks at a withheld count ---------------------------------------


@pytest.fixture
def flows_client(tmp_path):
    """Journeys of one camera: 6 went fruit -> till, 2 wine -> till, 3 bread -> till (k_min 5)."""
    zones = [{"id": z, "kind": "shelf", "polygon": POLY} for z in ("fruit", "wine", "bread")]
    config = parse_config({"store": {"id": "s"}, "cameras": [{"id": "floor", "source": "/tmp/b.mp4", "zones": [
        *zones, {"id": "till", "kind": "queue", "polygon": POLY, "service_edge": [0, 1]}]}]})
    storage = SqlStorage(str(tmp_path / "h.db"))
    shelves = ["fruit"] * 6 + ["wine"] * 2 + ["bread"] * 3
    storage.write_records([
        m.TrackSummary(camera_id="floor", track_id=i + 1, first_ts_ms=T0 + i * 120_000,
                       last_ts_ms=T0 + i * 120_000 + 60_000, n_frames=100, zones=[
                           m.ZoneVisit(zone_id=shelf, zone_kind="shelf", enter_ts_ms=T0 + i * 120_000,
                                       exit_ts_ms=T0 + i * 120_000 + 20_000),
                           m.ZoneVisit(zone_id="till", zone_kind="queue", enter_ts_ms=T0 + i * 120_000 + 25_000,
                                       exit_ts_ms=T0 + i * 120_000 + 50_000)])
        for i, shelf in enumerate(shelves)])
    yield signed_in_client(create_app(config, storage), role="viewer")
    storage.close()


def test_flows_min_count_does_not_depend_on_suppressed_counts(flows_client) -> None:
    def flows(min_count: int) -> dict:
        r = flows_client.get("/v1/flows", params={"min_count": min_count})
        assert r.status_code == 200, r.text
        return r.json()

    # wine -> till (2) and bread -> till (3) are withheld: every min_count below k_min gives the same answer,
    # so stepping min_count 1, 2, 3, 4 tells nothing of their counts (before: wine vanished at 3, bread at 4).
    # They are left out whatever min_count (tests/test_privacy_review_fixes.py: a name would show a route).
    first = flows(1)
    assert first["journeys"] == 11 and first["suppressed"] is True
    assert [(x["source"], x["target"], x["count"], x["suppressed"]) for x in first["links"]] == [
        ("floor/fruit", "floor/till", 6, False)]
    for n in (2, 3, 4, 5, 6):
        assert flows(n) == first, n
    assert flows(5)["nodes"] == ["floor/fruit", "floor/till"]
    assert flows(7)["links"] == [] and flows(7)["nodes"] == []
    assert "min_count" in flows_client.app.openapi()["paths"]["/v1/flows"]["get"]["description"]


# -- 2. /v1/counts weeks are ISO weeks, as /v1/kpis?period=week ---------------------------------------


def test_week_buckets_of_counts_are_the_iso_weeks_of_kpis(tmp_path) -> None:
    tz = "Europe/Berlin"
    config = parse_config({"store": {"id": "s1", "timezone": tz}, "cameras": [{
        "id": "door", "source": "/tmp/x.mp4", "lines": [{"id": "entry", "a": [0, 300], "b": [640, 300]}]}]})
    # around the spring-forward Sunday 2026-03-29 (its week is 167 hours); Monday 00:00 and Sunday 23:59
    times = ["2026-03-19T12:00:00+01:00", "2026-03-22T23:59:59+01:00", "2026-03-23T00:00:00+01:00",
             "2026-03-26T10:00:00+01:00", "2026-03-29T23:59:59+02:00", "2026-03-30T00:00:00+02:00",
             "2026-04-02T10:00:00+02:00", "2026-04-05T12:00:00+02:00"]
    storage = SqliteStorage(str(tmp_path / "h.db"))
    storage.write_crossings([CrossingEvent(crossing_event_id("door", "entry", k, k), "door", "entry", k, "in",
                                           ms(t), k) for k, t in enumerate(times)])
    start, end = ms("2026-03-16T00:00:00+01:00"), ms("2026-04-13T00:00:00+02:00")
    with signed_in_client(create_app(config, storage)) as client:
        counts = client.get("/v1/counts", params={"camera_id": "door", "start_ms": start, "end_ms": end,
                                                  "bucket_s": 7 * 86_400}).json()
        kpis = client.get("/v1/kpis", params={"period": "week", "start_ms": start, "end_ms": end}).json()
        two = client.get("/v1/counts", params={"camera_id": "door", "start_ms": start, "end_ms": end,
                                               "bucket_s": 14 * 86_400}).json()
    storage.close()
    got = [(b["start_ms"], b["end_ms"], b["in"]) for b in counts["buckets"]]
    weeks = [(b["start_ms"], b["end_ms"], b["visitors"]) for b in kpis["buckets"] if b["visitors"]]
    assert got == weeks == [
        (ms("2026-03-16T00:00:00+01:00"), ms("2026-03-23T00:00:00+01:00"), 2),
        (ms("2026-03-23T00:00:00+01:00"), ms("2026-03-30T00:00:00+02:00"), 3),  # 167 hours
        (ms("2026-03-30T00:00:00+02:00"), ms("2026-04-06T00:00:00+02:00"), 3)]
    berlin = zoneinfo.ZoneInfo(tz)
    for body in (counts, two):
        assert all(dt.datetime.fromtimestamp(b["start_ms"] / 1000, berlin).weekday() == 0
                   and dt.datetime.fromtimestamp(b["start_ms"] / 1000, berlin).time() == dt.time()
                   for b in body["buckets"]), body
    assert counts["aligned_to"] == "store_local_day"
    # two-week buckets: pairs of ISO weeks (counted from the Monday 1969-12-29)
    assert sum(b["in"] for b in two["buckets"]) == len(times)
    cal = StoreCalendar(tz)
    assert cal.bucket_count(7 * 86_400, start, end) == 4 == len(cal.buckets("week", start, end - 1))
    assert cal.grid(7 * 86_400, start, end).count(start, end) == 4


# -- 3. the heatmap's walking statistics cover the whole range -----------------------------------------

SQUARE = [[[100, 100], [0.0, 0.0]], [[300, 100], [2.0, 0.0]], [[300, 300], [2.0, 2.0]], [[100, 300], [0.0, 2.0]]]


def walkers(storage) -> None:
    """Three people walking 2 m in 4 s at once (41 points each), then one walking 2 m in 6 s (61 points)."""
    frames = []
    for i in range(41):
        x = 100 + i * 5
        frames.append(m.TrackedFrame(camera_id="cam-1", seq=i, ts_ms=T0 + i * 100, tracks=[
            m.Track(track_id=k, bbox_xyxy=m.BoxXYXY(x1=x - 20, y1=y - 100, x2=x + 20, y2=y))
            for k, y in ((1, 120), (2, 200), (3, 280))]))
    for i in range(61):
        y = 100 + i * 200 / 60
        frames.append(m.TrackedFrame(camera_id="cam-1", seq=100 + i, ts_ms=T0 + 60_000 + i * 100, tracks=[
            m.Track(track_id=4, bbox_xyxy=m.BoxXYXY(x1=130, y1=y - 100, x2=170, y2=y))]))
    storage.write_batch(tracked_frames=frames)


def test_track_pages_read_whole_tracks_a_page_at_a_time_in_the_order_they_began(history_store) -> None:
    walkers(history_store)
    everything = history_store.tracks("cam-1", T0, T0 + 120_000, limit_points=10_000)
    found = history_store.track_pages("cam-1", T0, T0 + 120_000, page_points=90)
    assert (found.points, found.covered_end_ms, found.truncated) == (3 * 41 + 61, T0 + 120_000, False)
    pages = list(found.pages)
    assert [[t.track_id for t in page] for page in pages] == [[1, 2], [3], [4]]  # 4: 61 points, a page alone
    assert [t for page in pages for t in page] == everything
    part = [t for page in history_store.track_pages("cam-1", T0 + 2_000, T0 + 61_000, page_points=1).pages
            for t in page]
    assert [(t.track_id, len(t.points)) for t in part] == [(1, 21), (2, 21), (3, 21), (4, 10)]
    # a bound: the tracks stop before the one that would pass it, and the answer says from when
    bounded = history_store.track_pages("cam-1", T0, T0 + 120_000, page_points=90, max_points=150)
    assert (bounded.points, bounded.covered_end_ms, bounded.truncated) == (123, T0 + 60_000, True)
    assert [t.track_id for page in bounded.pages for t in page] == [1, 2, 3]
    with pytest.raises(ValueError):
        history_store.track_pages("cam-1", T0, T0 + 1, page_points=0)


@pytest.fixture
def walking_client(tmp_path, monkeypatch):
    # 50 points a read instead of 100,000, at most 200 an answer (the range holds 184; a busy camera's day millions)
    monkeypatch.setattr(heatmap_route, "WALK_POINTS", 50)
    monkeypatch.setattr(heatmap_route, "MAX_WALK_POINTS", 200, raising=False)
    # k_min 3: the answers of 3 and 4 walkers are shown (fewer would be withheld: test_privacy_review_fixes.py)
    config = parse_config({"store": {"id": "s"}, "privacy": {"k_min": 3}, "cameras": [
        {"id": "cam-1", "source": "/tmp/x.mp4", "floor": {"points": SQUARE}}]})
    storage = SqlStorage(str(tmp_path / "h.db"))
    walkers(storage)
    with signed_in_client(create_app(config, storage), role="viewer") as client:
        yield config, storage, client
    storage.close()


def test_heatmap_walking_covers_every_track_of_the_range(walking_client) -> None:
    config, storage, client = walking_client
    expected = walking_stats(fit_homography(config.cameras[0].floor.points), [
        ([p.ts_ms for p in t.points], np.array([p.bbox_xyxy for p in t.points]))
        for t in storage.tracks("cam-1", T0, T0 + 120_000, limit_points=10_000)])
    assert (expected.tracks, round(expected.distance_m, 3), round(expected.duration_s, 3)) == (4, 8.0, 18.0)
    r = client.get("/v1/cameras/cam-1/heatmap", params={"start_ms": T0, "end_ms": T0 + 120_000})
    assert r.status_code == 200, r.text
    # before: the first 50 points in time, 1.6 s of each of the first three walkers and nothing of the fourth
    assert r.json()["walking"] == {"tracks": 4, "distance_m": 8.0, "duration_s": 18.0,
                                   "mean_speed_m_s": round(8.0 / 18.0, 3), "covered_end_ms": T0 + 120_000,
                                   "truncated": False, "suppressed": False}


def test_heatmap_walking_past_its_bound_says_what_it_covers(walking_client, monkeypatch) -> None:
    _, _, client = walking_client
    monkeypatch.setattr(heatmap_route, "MAX_WALK_POINTS", 150, raising=False)  # the fourth walker would pass it
    r = client.get("/v1/cameras/cam-1/heatmap", params={"start_ms": T0, "end_ms": T0 + 120_000})
    assert r.json()["walking"] == {"tracks": 3, "distance_m": 6.0, "duration_s": 12.0, "mean_speed_m_s": 0.5,
                                   "covered_end_ms": T0 + 60_000, "truncated": True, "suppressed": False}
    assert "truncated" in client.app.openapi()["components"]["schemas"]["WalkingOut"]["properties"]


# -- 4. chain hours keep the sales of every currency of a store -----------------------------------------

ZURICH = "Europe/Zurich"
DAY = "2026-10-24"
SALES = [  # (local time, cents, currency): EUR is the most frequent, CHF the minority
    ("10:05", 1000, "EUR"), ("10:20", 2000, "EUR"), ("10:40", 500, "CHF"),  # a mixed hour
    ("11:10", 700, "EUR"), ("12:30", 900, "CHF"), ("12:45", 100, "CHF"),  # an hour in CHF only
    ("14:00", 300, "EUR")]


def local(hhmm: str) -> int:
    return int(dt.datetime.fromisoformat(f"{DAY}T{hhmm}:00").replace(tzinfo=zoneinfo.ZoneInfo(ZURICH)).timestamp()
               * 1000)


@pytest.fixture
def zurich(tmp_path):
    """A store in Zurich taking euros and francs: its history (sales, and an entrance crossing an hour)."""
    config = parse_config({"store": {"id": "zurich-01", "name": "Zurich", "region": "alps", "timezone": ZURICH},
                           "privacy": {"k_min": 1},
                           "cameras": [{"id": "door", "source": "/tmp/x.mp4",
                                        "lines": [{"id": "entry", "a": [0, 300], "b": [640, 300]}]}]})
    storage = SqliteStorage(str(tmp_path / "store.db"))
    bq.write_transactions(storage, [pos.transaction(f"t{i}", "zurich-01", "till-1", local(t), cents, cur, 1)
                                    for i, (t, cents, cur) in enumerate(SALES)])
    storage.write_crossings([CrossingEvent(crossing_event_id("door", "entry", k, k), "door", "entry", k, "in",
                                           local(f"{h:02d}:30"), k) for k, h in enumerate(range(9, 17))])
    yield config, storage
    storage.close()


def totals(currency: str) -> tuple[int, int]:
    mine = [cents for _, cents, cur in SALES if cur == currency]
    return len(mine), sum(mine)


def test_store_hours_carry_every_currencys_sales(zurich) -> None:
    config, storage = zurich
    start = local("00:00")
    hours = kpi_hours(config, storage, start, start + 86_400_000, start + 86_400_000)
    assert {h.currency for h in hours} == {"EUR"}
    got: dict[str, list[int]] = {"EUR": [0, 0], "CHF": [0, 0]}
    for h in hours:
        got[h.currency][0] += h.transactions
        got[h.currency][1] += h.sales_minor
        for o in h.other_sales:
            got[o.currency][0] += o.transactions
            got[o.currency][1] += o.sales_minor
    assert {c: tuple(v) for c, v in got.items()} == {"EUR": totals("EUR"), "CHF": totals("CHF")}  # before: no CHF
    by_start = {h.start_ms: h for h in hours}
    mixed, francs = by_start[local("10:00")], by_start[local("12:00")]
    assert (mixed.transactions, mixed.sales_minor, [(o.currency, o.transactions, o.sales_minor)
                                                    for o in mixed.other_sales]) == (2, 3000, [("CHF", 1, 500)])
    assert (francs.transactions, [(o.currency, o.transactions, o.sales_minor) for o in francs.other_sales]) == (
        0, [("CHF", 2, 1000)])
    assert sum(h.visitors for h in hours) == 8


def test_chain_adds_up_every_currency_once_and_a_newer_hour_replaces_all_its_rows(zurich, history_store) -> None:
    config, storage = zurich
    start = local("00:00")
    hours = kpi_hours(config, storage, start, start + 86_400_000, start + 86_400_000)
    chain = history_store
    roll_into(chain, hours)
    for cur in ("EUR", "CHF"):
        rows = hour_rows(chain, stores=["zurich-01"], from_day=DAY, to_day=DAY, currency=cur)
        assert (sum(r.kpis.transactions for r in rows), sum(r.kpis.sales_minor for r in rows)) == totals(cur), cur
        day = hour_rows(chain, stores=["zurich-01"], from_day=DAY, to_day=DAY, currency=cur, per="day")
        assert [(r.kpis.transactions, r.kpis.sales_minor) for r in day] == [totals(cur)], cur
    # visitors and open hours count once (in the EUR rows), also in the day totals of every currency
    days = hour_rows(chain, stores=["zurich-01"], from_day=DAY, to_day=DAY, per="day")
    assert [(r.kpis.visitors, r.kpis.hours, r.kpis.transactions) for r in days] == [(8, 24.0, len(SALES))]
    with signed_in_client(create_app(parse_config(CHAIN), chain), role="viewer") as client:
        q = {"from_day": DAY, "to_day": DAY, "group_by": "chain"}
        assert client.get("/v1/chain/kpis", params=q).status_code == 422  # two currencies: pick one
        chf = client.get("/v1/chain/kpis", params={**q, "currency": "CHF"}).json()
        own = client.get("/v1/kpis", params={"store": "zurich-01", "start_ms": start, "end_ms": start + 86_400_000,
                                             "currency": "CHF"}).json()
    assert (chf["chain"]["transactions"], chf["chain"]["sales_minor"]) == totals("CHF")
    assert (own["totals"]["transactions"], own["totals"]["sales_minor"]) == totals("CHF")

    def stored(hour: int) -> list[tuple[str, int, int]]:
        c = chain_kpi_hours.c
        return [tuple(r) for r in chain._rows(sa.select(c.currency, c.transactions, c.computed_ms).where(
            c.store_id == "zurich-01", c.start_ms == hour).order_by(c.currency))]

    mixed = next(h for h in hours if h.start_ms == local("10:00"))
    assert stored(mixed.start_ms) == [("CHF", 1, mixed.computed_ms), ("EUR", 2, mixed.computed_ms)]
    # a newer computation of the hour without the franc sale (it moved): the hour's CHF row goes with it
    newer = m.StoreKpiHour()
    newer.CopyFrom(mixed)
    newer.computed_ms += 1
    del newer.other_sales[:]
    roll_into(chain, [newer])
    assert stored(mixed.start_ms) == [("EUR", 2, newer.computed_ms)]
    # an older computation arriving late changes nothing, not even in a currency the newer one lacks
    roll_into(chain, [mixed])
    assert stored(mixed.start_ms) == [("EUR", 2, newer.computed_ms)]
    days = hour_rows(chain, stores=["zurich-01"], from_day=DAY, to_day=DAY, per="day")
    assert [(r.kpis.visitors, r.kpis.transactions) for r in days] == [(8, len(SALES) - 1)]  # the day totals follow


@pytest.mark.parametrize("mutate, reason", [
    (lambda h: h.other_sales.add(currency="EUR", transactions=1, sales_minor=1), "other_sales"),  # its currency
    (lambda h: h.other_sales.add(currency="chf", transactions=1, sales_minor=1), "other_sales"),
    (lambda h: h.other_sales.add(currency="CHF", transactions=-1, sales_minor=1), "other_sales: negative"),
])
def test_malformed_other_sales_are_dead_letters(zurich, mutate, reason) -> None:
    config, storage = zurich
    start = local("00:00")
    hour = kpi_hours(config, storage, start, start + 86_400_000, start + 86_400_000)[0]
    bad = m.StoreKpiHour()
    bad.CopyFrom(hour)
    mutate(bad)
    chain = SqliteStorage(":memory:")
    core = RunnerCore(ChainRollupStage(parse_config(CHAIN)), [HistorySink(chain)])
    handled = core.write_sinks(core.process(BusMessage("zurich-01.store-kpis", hour_key(bad), m.encode(bad), 0),
                                            topics.STORE_KPIS))
    assert handled.dead_letter is not None and reason in handled.dead_letter.reason
    assert chain._rows(sa.select(sa.func.count()).select_from(chain_kpi_hours))[0][0] == 0
    chain.close()


def test_chain_rows_of_before_the_currency_key_survive_the_migration(tmp_path) -> None:
    """A chain database at revision 0016 (key (store_id, start_ms)) with an hour opens at 0017 with it."""
    path = tmp_path / "chain.db"
    SqlStorage(str(path)).close()
    engine = sa.create_engine(f"sqlite:///{path}")
    at = revisions("history").index("0017")
    with engine.begin() as conn:
        with Operations.context(MigrationContext.configure(connection=conn)):
            for rev in reversed(revisions("history")[at:]):
                _scripts().get_revision(rev).module.downgrade()
        conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": at})
        assert sa.inspect(conn).get_pk_constraint("chain_kpi_hours")["constrained_columns"] == ["store_id",
                                                                                                 "start_ms"]
    engine.dispose()
    hour = m.StoreKpiHour(store_id="zurich-01", start_ms=3_600_000, end_ms=7_200_000, day="1970-01-01",
                          label="1970-01-01T02:00+01:00", hours=1.0, visitors=4, transactions=1, sales_minor=250,
                          currency="EUR", computed_ms=5)
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # written as 0016 wrote it
        conn.execute(sa.insert(sa.table("chain_kpi_hours", *(sa.column(c) for c in (
            "store_id", "start_ms", "end_ms", "day", "label", "hours", "visitors", "staff_in", "buying_units",
            "transactions", "sales_minor", "abandonments", "currency", "computed_ms")))).values(
            store_id=hour.store_id, start_ms=hour.start_ms, end_ms=hour.end_ms, day=hour.day, label=hour.label,
            hours=1.0, visitors=4, staff_in=0, buying_units=-1, transactions=1, sales_minor=250, abandonments=0,
            currency="EUR", computed_ms=5))
    engine.dispose()
    store = SqlStorage(str(path))  # upgrades to 0017
    try:
        assert store.schema_version() == len(revisions("history"))
        assert [(r.kpis.visitors, r.kpis.sales_minor) for r in hour_rows(store, currency="EUR")] == [(4, 250)]
        newer = m.StoreKpiHour()
        newer.CopyFrom(hour)
        newer.computed_ms = 6
        newer.other_sales.add(currency="CHF", transactions=2, sales_minor=900)
        roll_into(store, [newer])
        assert [(r.kpis.visitors, r.kpis.sales_minor) for r in hour_rows(store, currency="CHF")] == [(0, 900)]
        assert [(r.kpis.visitors, r.kpis.sales_minor) for r in hour_rows(store, currency="EUR")] == [(4, 250)]
    finally:
        store.close()
