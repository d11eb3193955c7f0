"""Day buckets, second round: zone statistics keep their stored buckets whole in a +05:30 zone (the local hour
or day is used only when its edges are stored buckets' edges, else the epoch's, and ``aligned_to`` says so),
and whole days over a long range cost the days holding data, not the range (same buckets, a small SQL).

Real app (TestClient), real storage: SQLite and PostgreSQL (``history_store`` in conftest.py).
"""
from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.api.routes.counts import bucket_grid
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.calendar import StoreCalendar
from test_day_buckets import BERLIN, HOUR, crossings, ms, site

DAY = 24 * HOUR


def kolkata_client(history_store, stored_s: int) -> TestClient:
    """A Kolkata (+05:30) store whose zone statistics are stored in buckets of ``stored_s`` since the epoch, with
    three buckets in a row from 22:00 UTC (03:30 local) and one exit in each."""
    config = {**site("Asia/Kolkata"), "zones": {"bucket_s": stored_s}}
    w = stored_s * 1000
    first = ms("2026-06-01T22:00:00+00:00") // w * w  # 03:30 local on 06-02
    starts = [first + k * w for k in range(3)]
    history_store.write_records(
        [m.ZoneStats(camera_id="door", zone_id="till", bucket_start_ms=s, bucket_end_ms=s + w, visits=k + 1,
                     unique_people=1, mean_occupancy=1.0, max_occupancy=1) for k, s in enumerate(starts)]
        + [m.ZoneEvent(event_id=f"x{k}", camera_id="door", zone_id="till", zone_kind="area", track_id=k,
                       kind=m.ZONE_EVENT_EXIT, ts_ms=s + 1000, seq=k, dwell_ms=1000, how="other")
           for k, s in enumerate(starts)])
    return signed_in_client(create_app(parse_config(config), history_store))


def zone_stats(client: TestClient, **params: object) -> dict:
    r = client.get("/v1/zones/stats", params={"camera_id": "door", "start_ms": ms("2026-06-01T00:00:00+00:00"),
                                              **params})
    assert r.status_code == 200, r.text
    return r.json()


def spans(body: dict) -> list[tuple[int, int, int]]:
    return [(b["start_ms"], b["end_ms"], b["visits"]) for b in body["buckets"]]


def test_zone_stats_keep_stored_hours_whole_in_a_half_hour_zone(history_store) -> None:
    # zones.bucket_s 3600: the stored buckets are UTC hours, 00:30-01:30 on a Kolkata clock; a local hour would
    # cut each in two and date it 30 minutes early.
    client = kolkata_client(history_store, 3600)
    first = ms("2026-06-01T22:00:00+00:00")
    for end in ({}, {"end_ms": ms("2026-06-03T00:00:00+00:00")}):
        body = zone_stats(client, **end)  # bucket_s: the stored width
        assert body["aligned_to"] == "epoch"
        assert spans(body) == [(first + k * HOUR, first + (k + 1) * HOUR, k + 1) for k in range(3)]
        assert [b["dwell_s"]["n"] for b in body["buckets"]] == [1, 1, 1]
        # Whole days: Kolkata's midnight (18:30 UTC) is inside a stored hour: UTC days.
        days = zone_stats(client, bucket_s=86_400, **end)
        assert days["aligned_to"] == "epoch"
        assert spans(days) == [(ms("2026-06-01T00:00:00+00:00"), ms("2026-06-02T00:00:00+00:00"), 1 + 2),
                               (ms("2026-06-02T00:00:00+00:00"), ms("2026-06-03T00:00:00+00:00"), 3)]


def test_zone_stats_keep_local_hours_over_minute_buckets_in_a_half_hour_zone(history_store) -> None:
    # zones.bucket_s 60: every local hour and midnight is a stored bucket's edge (as before).
    client = kolkata_client(history_store, 60)
    body = zone_stats(client, bucket_s=3600)
    assert body["aligned_to"] == "store_local_hour"
    assert spans(body) == [(ms("2026-06-02T03:00:00+05:30"), ms("2026-06-02T04:00:00+05:30"), 1 + 2 + 3)]
    days = zone_stats(client, bucket_s=86_400, end_ms=ms("2026-06-05T00:00:00+00:00"))
    assert days["aligned_to"] == "store_local_day"
    assert spans(days) == [(ms("2026-06-02T00:00:00+05:30"), ms("2026-06-03T00:00:00+05:30"), 1 + 2 + 3)]


def test_day_buckets_over_decades_cost_the_days_of_data(history_store) -> None:
    # Berlin's spring-forward weekend (days of 24, 24, 23 and 24 hours) queried from 1970 to 2027.
    history_store.write_crossings(crossings(BERLIN))
    client = signed_in_client(create_app(parse_config(site("Europe/Berlin")), history_store))
    history_store.write_records([
        m.GroupCrossing(event_id=f"door:entry:group:{k}", camera_id="door", line_id="entry",
                        direction=m.DIRECTION_IN, ts_ms=ms(t), seq=k, last_ts_ms=ms(t), track_ids=[k])
        for k, (t, d) in enumerate(BERLIN) if d == "in"])
    start, end = 0, ms("2027-01-01T00:00:00+01:00")
    full = StoreCalendar("Europe/Berlin").grid(86_400, start, end)  # every day of the range: a run per DST change
    assert len(full.runs) > 100
    expected: dict[int, list[int]] = {}
    for t, d in BERLIN:
        expected.setdefault(full.start_of(ms(t)), [0, 0])[d == "out"] += 1
    sql: list[str] = []
    sa.event.listen(history_store.db.engine, "before_cursor_execute", lambda *a: sql.append(a[2]))
    r = client.get("/v1/counts", params={"camera_id": "door", "start_ms": start, "end_ms": end, "bucket_s": 86_400,
                                         "groups": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["aligned_to"] == "store_local_day"
    assert [(b["start_ms"], b["end_ms"], b["in"], b["out"], b["groups_in"]) for b in body["buckets"]] == [
        (s, full.end_of(s), n_in, n_out, n_in) for s, (n_in, n_out) in sorted(expected.items())]
    assert {full.end_of(s) - s for s in expected} == {24 * HOUR, 23 * HOUR}
    (counts_sql,) = [q for q in sql if "GROUP BY" in q and "crossings" in q and "CASE" in q]
    # The bucket's expression (in SELECT, GROUP BY and ORDER BY) picks among 3 runs; over the full grid: 189.
    assert counts_sql.count("WHEN") <= 3 * 2 and len(counts_sql) < 4000, (counts_sql.count("WHEN"), len(counts_sql))
    # Zone statistics: the same grid over the stored buckets only.
    history_store.write_records([
        m.ZoneStats(camera_id="door", zone_id="till", bucket_start_ms=ms(t), bucket_end_ms=ms(t) + 60_000, visits=1,
                    unique_people=1, mean_occupancy=1.0, max_occupancy=1) for t, _ in BERLIN])
    zones = client.get("/v1/zones/stats", params={"camera_id": "door", "start_ms": start, "end_ms": end,
                                                  "bucket_s": 86_400}).json()
    assert [(b["start_ms"], b["end_ms"], b["visits"]) for b in zones["buckets"]] == [
        (s, full.end_of(s), n_in + n_out) for s, (n_in, n_out) in sorted(expected.items())]
    # The grid of the answers is laid out over the data only, and still counts the range's buckets.
    config = parse_config(site("Europe/Berlin"))
    grid = bucket_grid(config, start, end, 86_400, data=(ms(BERLIN[0][0]), ms(BERLIN[-1][0])))
    assert len(grid.runs) <= 3 and all(grid.start_of(ms(t)) == full.start_of(ms(t)) for t, _ in BERLIN)
    assert StoreCalendar("Europe/Berlin").bucket_count(86_400, start, end) == full.count(start, end)
