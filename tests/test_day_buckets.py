"""Buckets of whole days are the store's local days: ``/v1/counts`` and ``/v1/zones/stats`` split a day at the
store's local midnight (``store.timezone``), a DST day is 23 or 25 hours long, totals equal the buckets' sum;
shorter buckets stay aligned on the epoch in a whole-hour zone and on local hours in a +05:30 one.

Real app (TestClient), real storage: SQLite and PostgreSQL (``history_store`` in conftest.py).
"""
from __future__ import annotations

import datetime as dt
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from storelens.api import MAX_BUCKETS, create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent, crossing_event_id
from storelens.storage import SqliteStorage

HOUR = 3_600_000


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


def site(tz: str) -> dict:
    return {"store": {"id": "s1", "timezone": tz},
            "cameras": [{"id": "door", "source": "/tmp/x.mp4",
                         "lines": [{"id": "entry", "a": [0, 300], "b": [640, 300]}],
                         "zones": [{"id": "till", "polygon": [[0, 0], [100, 0], [100, 100]]}]}],
            "privacy": {"k_min": 1}}  # the dwell of single exits (k-anonymity: tests/test_api_security_fixes_2.py)


def crossings(times: list[tuple[str, str]]) -> list[CrossingEvent]:
    return [CrossingEvent(crossing_event_id("door", "entry", k, k), "door", "entry", k, d, ms(t), k)  # type: ignore[arg-type]
            for k, (t, d) in enumerate(times)]


# Berlin around the spring-forward day 2026-03-29 (23 h: 02:00 CET is 03:00 CEST).
BERLIN = [("2026-03-27T23:59:59+01:00", "in"), ("2026-03-28T00:00:01+01:00", "in"),
          ("2026-03-28T23:59:59+01:00", "out"), ("2026-03-29T00:00:00+01:00", "in"),
          ("2026-03-29T01:59:59+01:00", "in"), ("2026-03-29T03:00:00+02:00", "out"),
          ("2026-03-29T23:59:59+02:00", "in"), ("2026-03-30T00:00:00+02:00", "in")]
BERLIN_DAYS = [  # (local day start, next local midnight, in, out)
    ("2026-03-27T00:00:00+01:00", "2026-03-28T00:00:00+01:00", 1, 0),
    ("2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00", 1, 1),
    ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", 3, 1),  # 23 hours
    ("2026-03-30T00:00:00+02:00", "2026-03-31T00:00:00+02:00", 1, 0)]
# New York around the fall-back day 2026-11-01 (25 h: 01:30 happens twice).
NEW_YORK = [("2026-10-31T23:59:59-04:00", "in"), ("2026-11-01T00:00:00-04:00", "in"),
            ("2026-11-01T01:30:00-04:00", "out"), ("2026-11-01T01:30:00-05:00", "out"),
            ("2026-11-01T23:59:59-05:00", "in"), ("2026-11-02T00:00:00-05:00", "in")]
NEW_YORK_DAYS = [
    ("2026-10-31T00:00:00-04:00", "2026-11-01T00:00:00-04:00", 1, 0),
    ("2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00", 2, 2),  # 25 hours
    ("2026-11-02T00:00:00-05:00", "2026-11-03T00:00:00-05:00", 1, 0)]


@pytest.fixture
def store_client(history_store) -> Iterator:
    """``make(tz, times) -> client``: the API app of a store in ``tz`` over the crossings ``times``."""
    def make(tz: str, times: list[tuple[str, str]]) -> TestClient:
        history_store.write_crossings(crossings(times))
        return signed_in_client(create_app(parse_config(site(tz)), history_store))

    yield make


def get_counts(client: TestClient, start: str, end: str, bucket_s: int, **params: object) -> dict:
    r = client.get("/v1/counts", params={"camera_id": "door", "start_ms": ms(start), "end_ms": ms(end),
                                         "bucket_s": bucket_s, **params})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("tz,times,days,start,end", [
    pytest.param("Europe/Berlin", BERLIN, BERLIN_DAYS, "2026-03-27T12:00:00+01:00", "2026-03-30T12:00:00+02:00",
                 id="berlin-spring-forward"),
    pytest.param("America/New_York", NEW_YORK, NEW_YORK_DAYS, "2026-10-31T12:00:00-04:00",
                 "2026-11-02T12:00:00-05:00", id="new-york-fall-back"),
])
def test_day_buckets_split_at_local_midnight(store_client, tz, times, days, start, end) -> None:
    client = store_client(tz, times)
    body = get_counts(client, start, end, 86_400)
    got = [(b["start_ms"], b["end_ms"], b["in"], b["out"]) for b in body["buckets"]]
    assert got == [(ms(a), ms(b), n_in, n_out) for a, b, n_in, n_out in days]
    assert (body["aligned_to"], body["timezone"], body["bucket_s"]) == ("store_local_day", tz, 86_400)
    assert [(b - a) // HOUR for a, b, _, _ in got] == [(ms(b) - ms(a)) // HOUR for a, b, _, _ in days]
    assert {23, 25} & {(b - a) // HOUR for a, b, _, _ in got}  # the DST day has its real length
    assert body["totals"]["entry"] == {"in": sum(g[2] for g in got), "out": sum(g[3] for g in got)}
    assert body["totals"]["entry"] == {"in": sum(d == "in" for _, d in times),
                                       "out": sum(d == "out" for _, d in times)}


def test_sub_day_buckets_keep_epoch_alignment_in_a_whole_hour_zone(store_client) -> None:
    client = store_client("Europe/Berlin", BERLIN)
    for bucket_s in (60, 900, 3600, 7200):
        w = bucket_s * 1000
        body = get_counts(client, "2026-03-27T12:00:00+01:00", "2026-03-30T12:00:00+02:00", bucket_s)
        assert body["aligned_to"] == "epoch"
        expected: dict[int, list[int]] = {}
        for t, d in BERLIN:
            expected.setdefault(ms(t) // w * w, [0, 0])[d == "out"] += 1
        assert [(b["start_ms"], b["end_ms"], b["in"], b["out"]) for b in body["buckets"]] == [
            (s, s + w, n_in, n_out) for s, (n_in, n_out) in sorted(expected.items())]


def test_a_half_hour_zone_keeps_local_hours_and_days(store_client) -> None:
    # Asia/Kolkata is +05:30 all year: epoch hours would run from :30 to :30 on the local clock.
    times = [("2026-06-01T23:59:00+05:30", "in"), ("2026-06-02T00:00:00+05:30", "in"),
             ("2026-06-02T00:59:00+05:30", "in"), ("2026-06-02T01:00:00+05:30", "out")]
    client = store_client("Asia/Kolkata", times)
    hours = get_counts(client, "2026-06-01T12:00:00+05:30", "2026-06-02T12:00:00+05:30", 3600)
    assert hours["aligned_to"] == "store_local_hour"
    assert [(b["start_ms"], b["end_ms"] - b["start_ms"], b["in"], b["out"]) for b in hours["buckets"]] == [
        (ms("2026-06-01T23:00:00+05:30"), HOUR, 1, 0), (ms("2026-06-02T00:00:00+05:30"), HOUR, 2, 0),
        (ms("2026-06-02T01:00:00+05:30"), HOUR, 0, 1)]
    days = get_counts(client, "2026-06-01T12:00:00+05:30", "2026-06-02T12:00:00+05:30", 86_400)
    assert [(b["start_ms"], b["end_ms"], b["in"], b["out"]) for b in days["buckets"]] == [
        (ms("2026-06-01T00:00:00+05:30"), ms("2026-06-02T00:00:00+05:30"), 1, 0),
        (ms("2026-06-02T00:00:00+05:30"), ms("2026-06-03T00:00:00+05:30"), 2, 1)]


def test_week_buckets_are_seven_local_days(store_client) -> None:
    client = store_client("Europe/Berlin", BERLIN)
    body = get_counts(client, "2026-03-20T00:00:00+01:00", "2026-04-06T00:00:00+02:00", 7 * 86_400)
    # 7-day buckets are ISO weeks, Monday to Sunday (as /v1/kpis?period=week), from local midnight.
    assert [(b["start_ms"], b["end_ms"], b["in"], b["out"]) for b in body["buckets"]] == [
        (ms("2026-03-23T00:00:00+01:00"), ms("2026-03-30T00:00:00+02:00"), 5, 2),  # 167 hours
        (ms("2026-03-30T00:00:00+02:00"), ms("2026-04-06T00:00:00+02:00"), 1, 0)]


def test_buying_units_follow_the_local_days(store_client, history_store) -> None:
    client = store_client("Europe/Berlin", BERLIN)
    history_store.write_records([
        m.GroupCrossing(event_id=f"door:entry:group:{k}", camera_id="door", line_id="entry",
                        direction=m.DIRECTION_IN, ts_ms=ms(t), seq=k, last_ts_ms=ms(t), track_ids=[k])
        for k, t in enumerate(["2026-03-28T23:59:59+01:00", "2026-03-29T00:00:00+01:00"])])
    body = get_counts(client, "2026-03-28T12:00:00+01:00", "2026-03-29T12:00:00+02:00", 86_400, groups="true")
    assert [(b["start_ms"], b["groups_in"]) for b in body["buckets"]] == [
        (ms("2026-03-28T00:00:00+01:00"), 1), (ms("2026-03-29T00:00:00+01:00"), 1)]
    assert body["totals"]["entry"]["groups_in"] == 2


def test_zone_stats_day_buckets_split_at_local_midnight(store_client, history_store) -> None:
    client = store_client("Europe/Berlin", [])
    minutes = ["2026-03-28T23:59:00+01:00", "2026-03-29T00:00:00+01:00", "2026-03-29T23:59:00+02:00",
               "2026-03-30T00:00:00+02:00"]
    history_store.write_records(
        [m.ZoneStats(camera_id="door", zone_id="till", bucket_start_ms=ms(t), bucket_end_ms=ms(t) + 60_000,
                     visits=k + 1, unique_people=1, mean_occupancy=1.0, max_occupancy=1) for k, t in enumerate(minutes)]
        + [m.ZoneEvent(event_id=f"x{k}", camera_id="door", zone_id="till", zone_kind="area", track_id=k,
                       kind=m.ZONE_EVENT_EXIT, ts_ms=ms(t) + 30_000, seq=k, dwell_ms=1000 * (k + 1), how="other")
           for k, t in enumerate(minutes)])
    for end in (None, ms("2026-03-31T00:00:00+02:00")):
        r = client.get("/v1/zones/stats", params={"camera_id": "door", "start_ms": ms("2026-03-28T00:00:00+01:00"),
                                                  "bucket_s": 86_400, **({} if end is None else {"end_ms": end})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["aligned_to"], body["timezone"]) == ("store_local_day", "Europe/Berlin")
        assert [(b["start_ms"], b["end_ms"], b["visits"], b["dwell_s"]["n"]) for b in body["buckets"]] == [
            (ms("2026-03-28T00:00:00+01:00"), ms("2026-03-29T00:00:00+01:00"), 1, 1),
            (ms("2026-03-29T00:00:00+01:00"), ms("2026-03-30T00:00:00+02:00"), 2 + 3, 2),  # 23 hours
            (ms("2026-03-30T00:00:00+02:00"), ms("2026-03-31T00:00:00+02:00"), 4, 1)]
        assert sum(b["visits"] for b in body["buckets"]) == 1 + 2 + 3 + 4
    hours = client.get("/v1/zones/stats", params={"camera_id": "door", "start_ms": 0, "bucket_s": 3600}).json()
    assert hours["aligned_to"] == "epoch" and all(b["start_ms"] % HOUR == 0 for b in hours["buckets"])


def test_day_bucket_limits_hold() -> None:
    storage = SqliteStorage(":memory:")
    with signed_in_client(create_app(parse_config(site("Europe/Berlin")), storage)) as client:
        start = ms("2000-01-01T00:00:00+01:00")
        last = dt.datetime.combine(dt.date(2000, 1, 1) + dt.timedelta(days=MAX_BUCKETS), dt.time(),
                                   ZoneInfo("Europe/Berlin")).timestamp() * 1000  # the local midnight
        params = {"camera_id": "door", "start_ms": start, "bucket_s": 86_400}
        r = client.get("/v1/counts", params={**params, "end_ms": int(last)})
        assert r.status_code == 200 and r.json()["aligned_to"] == "store_local_day"
        r = client.get("/v1/counts", params={**params, "end_ms": int(last) + 1})
        assert r.status_code == 422 and f"spans {MAX_BUCKETS + 1} buckets" in r.text
        r = client.get("/v1/counts", params={**params, "start_ms": ms("9999-06-01T00:00:00+00:00"),
                                             "end_ms": ms("9999-12-31T00:00:00+00:00")})
        assert r.status_code == 422 and "past the calendar's last day" in r.text
        r = client.get("/v1/zones/stats", params={**params, "end_ms": int(last) + 1})
        assert r.status_code == 422 and "more than the limit" in r.text
    storage.close()
