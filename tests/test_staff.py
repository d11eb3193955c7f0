"""Staff exclusion and buying units in the KPIs and counts (issue 11 items 3-4).

1. Staff-only zones: the staff analyzer turns the zone analyzer's entries into ``StaffTrack``
   records (once per track), through the real analytics stage.
2. The KPI rules of :mod:`storelens.domain.staff` as a table.
3. ``GET /v1/kpis`` and ``GET /v1/counts?groups=true`` over stored records equal hand-computed
   values (visitors without staff, ``staff_in``, buying units, conversion per unit, the ratio).
"""
from __future__ import annotations

import datetime as dt
import doctest
import importlib
import json
import os
import uuid

import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain import staff as ST
from storelens.domain.counting import CrossingEvent
from storelens.stages.analytics import AnalyticsStage, derive
from storelens.storage import SqliteStorage

DT = 40
DOOR = {"id": "door", "a": [0, 300], "b": [640, 300]}
BACK = {"id": "back", "kind": "staff_only", "polygon": [[500, 0], [640, 0], [640, 200], [500, 200]]}


def site(**kw) -> dict:
    return {"store": {"id": "s1", "entrance_lines": ["cam/door"]},
            "cameras": [{"id": "cam", "source": "x.mp4", "lines": [DOOR], "zones": [BACK]}],
            "zones": {"enter_after_ms": 200, "exit_after_ms": 200}, **kw}


def tracked(people_per_frame: list[dict[int, tuple[float, float]]]) -> list[m.TrackedFrame]:
    out = [m.TrackedFrame(camera_id="cam", seq=i, ts_ms=i * DT, width=640, height=480, tracks=[
        m.Track(track_id=t, bbox_xyxy=m.BoxXYXY(x1=x - 20, y1=y - 100, x2=x + 20, y2=y)) for t, (x, y) in p.items()])
        for i, p in enumerate(people_per_frame)]
    return out + [m.TrackedFrame(camera_id="cam", seq=len(out), ts_ms=len(out) * DT, end_of_stream=True)]


# -- the staff analyzer -------------------------------------------------------------------------


def test_a_track_entering_a_staff_only_zone_is_staff_once() -> None:
    # track 1 comes in through the door, walks into the back room, out and in again; track 2 only shops
    path1 = [(300, 250 + 10 * i) for i in range(10)] + [(560, 150)] * 10 + [(300, 400)] * 10 + [(560, 150)] * 10
    path2 = [(100, 250 + 10 * i) for i in range(40)]
    records = derive(parse_config(site()), tracked([{1: a, 2: b} for a, b in zip(path1, path2)]))
    staff = [r for r in records if isinstance(r, m.StaffTrack)]
    assert [(s.track_id, s.cue, s.detail, s.seq) for s in staff] == [(1, "zone", "back", 10)]
    assert {c.track_id for c in records if isinstance(c, CrossingEvent)} == {1, 2}  # both crossed the door


@pytest.mark.parametrize("raw,present", [
    (site(), True),
    (site(staff={"zones": False}), False),
    ({**site(), "cameras": [{"id": "cam", "source": "x.mp4", "lines": [DOOR]}]}, False),
    ({**site(staff={"uniform": {"colours": [{"name": "red", "hsv": [0, 200, 160]}]}}),
      "cameras": [{"id": "cam", "source": "x.mp4", "lines": [DOOR]}]}, True),
])
def test_staff_analyzer_only_where_a_cue_can_apply(raw: dict, present: bool) -> None:
    assert ("staff" in AnalyticsStage(parse_config(raw)).analyzers["cam"]) is present


def test_staff_state_round_trip_reports_nobody_twice() -> None:
    cfg = parse_config(site())
    frames = tracked([{1: (560, 150)}] * 20 + [{}] * 5 + [{1: (560, 150)}] * 20)
    a = AnalyticsStage(cfg)
    out = []
    from storelens.contract import topics
    for tf in frames[:15]:
        out += a.handle(topics.TRACKS, tf).records
    b = AnalyticsStage(cfg)
    b.load_camera_state("cam", json.loads(json.dumps(a.camera_state("cam"))))
    for tf in frames[15:]:
        out += b.handle(topics.TRACKS, tf).records
    assert [(s.track_id, s.cue) for s in out if isinstance(s, m.StaffTrack)] == [(1, "zone")]


# -- the KPI rules ------------------------------------------------------------------------------

DAY = ST.STAFF_DAY_MS
STAFF = {("cam", 7): 10 * 3_600_000}


@pytest.mark.parametrize("entries,visitors,staff_in", [
    pytest.param([(9 * 3_600_000, "cam", 7)], [], [9 * 3_600_000], id="staff_before_recognition_is_staff"),
    pytest.param([(11 * 3_600_000, "cam", 7)], [], [11 * 3_600_000], id="staff_after_recognition_is_staff"),
    pytest.param([(10 * 3_600_000 + DAY, "cam", 7)], [10 * 3_600_000 + DAY], [], id="a_day_later_is_a_visitor"),
    pytest.param([(11 * 3_600_000, "other", 7)], [11 * 3_600_000], [], id="track_ids_are_per_camera"),
    pytest.param([(5, "cam", 8)], [5], [], id="others_are_visitors"),
])
def test_split_entries(entries, visitors, staff_in) -> None:
    assert ST.split_entries(entries, STAFF) == (visitors, staff_in)


@pytest.mark.parametrize("groups,units", [
    pytest.param([(1, "cam", [7])], [], id="staff_alone_is_no_unit"),
    pytest.param([(1, "cam", [7, 8])], [1], id="staff_with_a_shopper_is_a_unit"),
    pytest.param([(1, "cam", [8, 9]), (2, "cam", [10])], [1, 2], id="shoppers"),
])
def test_unit_entries(groups, units) -> None:
    assert ST.unit_entries(groups, STAFF) == units


# -- the API over stored records ----------------------------------------------------------------


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


def at(hhmm: str) -> int:
    return ms(f"2026-10-24T{hhmm}:00+00:00")


PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request):
    """The same history store on SQLite and on the real PostgreSQL of ``scripts/stack.sh`` (a fresh schema)."""
    if request.param == "sqlite":
        yield SqliteStorage(":memory:")
        return
    import psycopg
    from psycopg import sql

    from storelens.storage import PostgresStorage

    schema = f"test_{uuid.uuid4().hex[:16]}"
    s = PostgresStorage(PG_DSN, schema=schema)
    try:
        yield s
    finally:
        s.close()
        with psycopg.connect(PG_DSN, autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def client(storage):
    app = create_app(parse_config(site()), storage)
    # 10:00-11:00: a couple (1, 2), a family of three (3, 4, 5), one alone (6), staff member 7 (its own unit),
    # and a shopper (8) who came in with staff member 9. 11:00-12:00: one alone (10). One out.
    ins = [(1, "10:01"), (2, "10:01"), (3, "10:10"), (4, "10:10"), (5, "10:11"), (6, "10:20"), (7, "10:30"),
           (8, "10:40"), (9, "10:40"), (10, "11:05")]
    storage.write_crossings([CrossingEvent(f"cam:door:{t}:{k}", "cam", "door", t, "in", at(hm), k)
                             for k, (t, hm) in enumerate(ins)]
                            + [CrossingEvent("cam:door:1:99", "cam", "door", 1, "out", at("10:50"), 99)])
    units = [([1, 2], "10:01", "in"), ([3, 4, 5], "10:10", "in"), ([6], "10:20", "in"), ([7], "10:30", "in"),
             ([8, 9], "10:40", "in"), ([10], "11:05", "in"), ([1], "10:50", "out")]
    storage.write_records([
        m.GroupCrossing(event_id=f"cam:door:group:{ids[0]}:{k}", camera_id="cam", line_id="door",
                        direction=m.DIRECTION_IN if d == "in" else m.DIRECTION_OUT, ts_ms=at(hm), seq=k,
                        last_ts_ms=at(hm), track_ids=ids) for k, (ids, hm, d) in enumerate(units)]
        + [m.StaffTrack(camera_id="cam", track_id=t, ts_ms=at("12:00"), seq=500, cue="zone", detail="back")
           for t in (7, 9)]
        + [m.StaffTrack(camera_id="cam", track_id=7, ts_ms=at("13:00"), seq=600, cue="uniform", detail="red")])
    body = {"transactions": [{"transaction_id": f"r{k}", "register_id": "t1", "time": f"2026-10-24T{hm}:00+00:00",
                              "amount_minor": 1000} for k, hm in enumerate(["10:30", "10:45", "10:55", "11:30"])]}
    with signed_in_client(app) as c:
        assert c.post("/v1/transactions", json=body).status_code == 200
        c.storage = storage  # type: ignore[attr-defined]
        yield c


def test_kpis_exclude_staff_and_count_buying_units(client) -> None:
    r = client.get("/v1/kpis", params={"period": "hour", "start_ms": at("10:00"), "end_ms": at("12:00")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["staff_excluded"] is True
    h10, h11 = out["buckets"]
    assert (h10["label"], h11["label"]) == ("2026-10-24T10:00+00:00", "2026-10-24T11:00+00:00")
    assert (h10["visitors"], h10["staff_in"], h10["buying_units"], h10["transactions"]) == (7, 2, 4, 3)
    assert h10["conversion"] == pytest.approx(3 / 7) and h10["conversion_per_buying_unit"] == 0.75
    assert h10["shopper_to_staff_ratio"] == 3.5
    assert (h11["visitors"], h11["staff_in"], h11["buying_units"], h11["conversion_per_buying_unit"],
            h11["shopper_to_staff_ratio"]) == (1, 0, 1, 1.0, None)
    t = out["totals"]
    assert (t["visitors"], t["staff_in"], t["buying_units"], t["transactions"]) == (8, 2, 5, 4)
    assert t["conversion_per_buying_unit"] == 0.8 and t["shopper_to_staff_ratio"] == 4.0
    # the first cue is kept: track 7 stays a zone recognition
    rows = client.storage._rows(__import__("sqlalchemy").text(  # type: ignore[attr-defined]
        "SELECT track_id, cue FROM staff_tracks ORDER BY track_id"))
    assert [tuple(r) for r in rows] == [(7, "zone"), (9, "zone")]


def test_kpis_without_groups_have_no_buying_units() -> None:
    storage = SqliteStorage(":memory:")
    app = create_app(parse_config(site(groups={"enabled": False})), storage)
    with signed_in_client(app) as c:
        t = c.get("/v1/kpis", params={"period": "day", "start_ms": at("00:00")}).json()["totals"]
    assert (t["buying_units"], t["conversion_per_buying_unit"], t["staff_in"]) == (None, None, 0)


def test_counts_with_groups_true_has_buying_units_next_to_in(client) -> None:
    params = {"camera_id": "cam", "start_ms": at("10:00"), "end_ms": at("12:00"), "bucket_s": 3600}
    plain = client.get("/v1/counts", params=params).json()
    assert plain["totals"] == {"door": {"in": 10, "out": 1}}  # unchanged without groups=true
    body = client.get("/v1/counts", params={**params, "groups": "true"}).json()
    assert body["totals"] == {"door": {"in": 10, "out": 1, "groups_in": 6, "groups_out": 1}}
    assert [(b["start_ms"], b["in"], b["groups_in"], b["out"], b["groups_out"]) for b in body["buckets"]] == [
        (at("10:00"), 9, 5, 1, 1), (at("11:00"), 1, 1, 0, 0)]
    one = client.get("/v1/counts", params={**params, "groups": "true", "line_id": "door",
                                           "start_ms": at("11:00")}).json()
    assert one["totals"] == {"door": {"in": 1, "out": 0, "groups_in": 1, "groups_out": 0}}


@pytest.mark.parametrize("module", ["storelens.domain.staff"])
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
