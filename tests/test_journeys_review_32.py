"""Review fixes (32nd batch) of journeys, history routes of a removed camera and returning customers, on real
history and gallery stores (SQLite, and PostgreSQL of the test stack):

1. staff are no customer journeys: ``/v1/journeys``, ``/v1/flows`` and ``/v1/paths/top`` leave out the journeys
   with a track recognised as staff (``staff_tracks``) within ``STAFF_DAY_MS`` of it, as ``/v1/kpis`` leaves
   staff out of the visitors;
2. a camera removed through ``/v1/site`` keeps its history: ``/v1/counts``, ``/v1/zones/stats``,
   ``/v1/zones/events``, ``/v1/flows``/``/v1/journeys`` and ``/v1/demographics`` with its ``camera_id`` answer
   from the stored rows as before the removal (404 only for a camera neither configured nor stored);
3. ``/v1/customers?returning=&start_ms=&end_ms=``: returning in the range (a visit of the range is the second or
   later), not over the customer's lifetime.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

import numpy as np
import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.domain.staff import STAFF_DAY_MS
from storelens.storage.gallery import PostgresGalleryStore, SqliteGalleryStore, Visit

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
DAY = 86_400_000
PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]


@pytest.fixture
def storage(history_store):
    """An empty history store, SQLite and PostgreSQL (``history_store`` in conftest.py)."""
    return history_store


def _summary(cam: str, tid: int, first_ms: int, last_ms: int, emb=None, zones=(), crossings=()) -> m.TrackSummary:
    s = m.TrackSummary(camera_id=cam, track_id=tid, first_ts_ms=first_ms, last_ts_ms=last_ms, n_frames=10)
    if emb is not None:
        s.appearance.extend(np.asarray(emb, np.float64) / np.linalg.norm(emb))
    for z, k, t0, t1 in zones:
        s.zones.add(zone_id=z, zone_kind=k, enter_ts_ms=t0, exit_ts_ms=t1)
    for ln, d, t in crossings:
        s.crossings.add(line_id=ln, direction=m.DIRECTION_IN if d == "in" else m.DIRECTION_OUT, ts_ms=t)
    return s


# -- 1. staff journeys are left out -----------------------------------------------------------------------------

STAFF_SITE = {"store": {"id": "s"},
              "cameras": [{"id": "floor", "source": "/tmp/floor.mp4",
                           "zones": [{"id": "stockroom", "kind": "staff_only", "polygon": SQUARE},
                                     {"id": "shelf1", "kind": "shelf", "polygon": SQUARE},
                                     {"id": "till", "kind": "area", "polygon": SQUARE}]}]}  # privacy.k_min: 5


def _staff_and_shoppers(storage) -> None:
    """Five staff (stockroom -> shelf1, recognised in the stockroom) and five shoppers (shelf1 -> till); shopper 15
    has the id of a staff track recognised two days later (another tracker run: not this track)."""
    summaries, staff = [], []
    for i, tid in enumerate([1, 2, 3, 4, 5]):
        t = T0 + i * 100_000
        summaries.append(_summary("floor", tid, t, t + 30_000,
                                  zones=[("stockroom", "staff_only", t, t + 10_000),
                                         ("shelf1", "shelf", t + 12_000, t + 30_000)]))
        staff.append(m.StaffTrack(camera_id="floor", track_id=tid, ts_ms=t + 5_000, seq=tid, cue="zone",
                                  detail="stockroom"))
    for i, tid in enumerate([11, 12, 13, 14, 15]):
        t = T0 + 1_000_000 + i * 100_000
        summaries.append(_summary("floor", tid, t, t + 30_000,
                                  zones=[("shelf1", "shelf", t, t + 10_000), ("till", "area", t + 12_000, t + 30_000)]))
    staff.append(m.StaffTrack(camera_id="floor", track_id=15, ts_ms=T0 + 1_400_000 + 2 * DAY, seq=99, cue="uniform",
                              detail="red"))
    assert 2 * DAY > STAFF_DAY_MS
    storage.write_records(summaries)
    storage.write_records(staff)


def test_flows_top_paths_and_journeys_leave_staff_out(storage) -> None:
    _staff_and_shoppers(storage)
    span = {"start_ms": T0, "end_ms": T0 + DAY}
    with signed_in_client(create_app(parse_config(STAFF_SITE), storage)) as client:
        flows = client.get("/v1/flows", params=span).json()
        top = client.get("/v1/paths/top", params=span).json()
        listed = client.get("/v1/journeys", params=span).json()
        staff_one = client.get("/v1/journeys/1@floor")
        shopper_one = client.get("/v1/journeys/15@floor")
    assert flows["journeys"] == 5
    assert {(x["source"], x["target"]): x["count"] for x in flows["links"]} == {("floor/shelf1", "floor/till"): 5}
    assert "floor/stockroom" not in flows["nodes"]
    assert (top["journeys"], [(p["path"], p["count"]) for p in top["paths"]]) == (
        5, [(["floor/shelf1", "floor/till"], 5)])
    assert (listed["total"], sorted(j["journey_id"] for j in listed["journeys"])) == (
        5, ["11@floor", "12@floor", "13@floor", "14@floor", "15@floor"])
    assert staff_one.status_code == 404, staff_one.text
    assert shopper_one.status_code == 200 and shopper_one.json()["journey_id"] == "15@floor"


# -- 2. a removed camera's history still answers ----------------------------------------------------------------

REMOVAL_SITE = {"store": {"id": "s", "entrance_lines": ["door/entry"]},
                "cameras": [{"id": "door", "source": "/tmp/door.mp4",
                             "lines": [{"id": "entry", "a": [0, 300], "b": [640, 300]}],
                             "zones": [{"id": "hall", "kind": "area", "polygon": SQUARE}]},
                            {"id": "floor", "source": "/tmp/floor.mp4",
                             "zones": [{"id": "shelf1", "kind": "shelf", "polygon": SQUARE}]}],
                "journeys": {"links": [{"from": "door", "to": "floor", "max_s": 30, "both_ways": True}]},
                "privacy": {"k_min": 1}}
PEOPLE = 6


def _door_history(storage) -> None:
    """Last week: six people in through the door (crossing, hall zone visit, face), then to shelf1 on floor."""
    crossings, records, attributes = [], [], []
    for i in range(PEOPLE):
        t = T0 + i * 120_000
        tid = i + 1
        emb = np.eye(PEOPLE)[i]
        crossings.append(CrossingEvent(f"door:entry:{tid}:in", "door", "entry", tid, "in", t + 2_000, tid))
        records += [
            _summary("door", tid, t, t + 10_000, emb, zones=[("hall", "area", t + 1_000, t + 9_000)],
                     crossings=[("entry", "in", t + 2_000)]),
            _summary("floor", 100 + tid, t + 20_000, t + 60_000, emb,
                     zones=[("shelf1", "shelf", t + 25_000, t + 55_000)]),
            m.ZoneEvent(event_id=f"door:hall:{tid}:enter", camera_id="door", zone_id="hall", zone_kind="area",
                        track_id=tid, kind=m.ZONE_EVENT_ENTER, ts_ms=t + 1_000, seq=2 * tid),
            m.ZoneEvent(event_id=f"door:hall:{tid}:exit", camera_id="door", zone_id="hall", zone_kind="area",
                        track_id=tid, kind=m.ZONE_EVENT_EXIT, ts_ms=t + 9_000, seq=2 * tid + 1, dwell_ms=8_000,
                        how="other")]
        attributes.append(m.TrackAttributes(camera_id="door", track_id=tid, first_ts_ms=t, last_ts_ms=t + 10_000,
                                            last_seq=tid, n_faces=2, gender=m.gender_value("female")))
    records.append(m.ZoneStats(camera_id="door", zone_id="hall", bucket_start_ms=T0, bucket_end_ms=T0 + 3_600_000,
                               visits=PEOPLE, unique_people=PEOPLE, visits_ended=PEOPLE, mean_occupancy=0.1,
                               max_occupancy=1))
    storage.write_crossings(crossings)
    storage.write_records(records)
    storage.write_track_attributes(attributes)


WEEK = {"start_ms": T0, "end_ms": T0 + 7 * DAY}
# (route, params): each answers for the removed camera ``door`` as before its removal
HISTORY = [
    ("/v1/counts", {"camera_id": "door", "bucket_s": 3600}),
    ("/v1/counts", {"camera_id": "door", "bucket_s": 3600, "line_id": "entry"}),
    ("/v1/zones/stats", {"camera_id": "door", "bucket_s": 3600}),
    ("/v1/zones/stats", {"camera_id": "door", "zone_id": "hall", "bucket_s": 3600}),
    ("/v1/zones/events", {"camera_id": "door"}),
    ("/v1/zones/events", {"camera_id": "door", "zone_id": "hall", "kind": "exit"}),
    ("/v1/flows", {"camera_id": "door"}),
    ("/v1/paths/top", {"camera_id": "door"}),
    ("/v1/journeys", {"camera_id": "door", "zone_id": "hall"}),
    ("/v1/flows", {"zone_id": "hall"}),
    ("/v1/demographics", {"camera_id": "door"}),
]
# still unknown: neither configured nor stored
UNKNOWN = [
    ("/v1/counts", {"camera_id": "nope"}, "unknown camera 'nope'"),
    ("/v1/counts", {"camera_id": "door", "line_id": "side"}, "unknown line 'side' of camera 'door'"),
    ("/v1/zones/stats", {"camera_id": "nope"}, "unknown camera 'nope'"),
    ("/v1/zones/stats", {"camera_id": "door", "zone_id": "shelf1"}, "unknown zone 'shelf1' of camera 'door'"),
    ("/v1/zones/events", {"camera_id": "nope"}, "unknown camera 'nope'"),
    ("/v1/zones/events", {"camera_id": "door", "zone_id": "nope"}, "unknown zone 'nope' of camera 'door'"),
    ("/v1/flows", {"camera_id": "nope"}, "unknown camera 'nope'"),
    ("/v1/journeys", {"camera_id": "door", "zone_id": "shelf1"}, "unknown zone 'shelf1'"),
    ("/v1/demographics", {"camera_id": "nope"}, "unknown camera 'nope'"),
]


def _answers(client) -> list:
    out = []
    for path, params in HISTORY:
        r = client.get(path, params={**WEEK, **params})
        assert r.status_code == 200, (path, params, r.text)
        out.append(r.json())
    return out


def test_a_removed_cameras_history_still_answers(storage) -> None:
    _door_history(storage)
    app = create_app(parse_config(REMOVAL_SITE), storage)
    admin = signed_in_client(app)
    before = _answers(admin)
    counts, by_line, stats, hall, events, exits, flows, top, journeys, hall_flows, faces = before
    assert counts["totals"] == {"entry": {"in": PEOPLE, "out": 0}} and by_line["totals"] == counts["totals"]
    assert sum(b["visits"] for b in stats["buckets"]) == PEOPLE and hall["buckets"] == stats["buckets"]
    assert len(events["events"]) == 2 * PEOPLE and len(exits["events"]) == PEOPLE
    assert flows["journeys"] == PEOPLE and top["journeys"] == PEOPLE and journeys["total"] == PEOPLE
    assert {(x["source"], x["target"]): x["count"] for x in flows["links"]} == {("door/hall", "floor/shelf1"): PEOPLE}
    assert hall_flows["journeys"] == PEOPLE and faces["tracks"] == PEOPLE
    r = admin.delete("/v1/site/cameras/door", params={"base_version": 0})
    assert r.status_code == 200, r.text
    assert "door" not in app.state.context.cameras
    assert _answers(admin) == before
    for path, params, detail in UNKNOWN:
        r = admin.get(path, params={**WEEK, **params})
        assert (r.status_code, r.json()) == (404, {"detail": detail}), (path, params)


# -- 3. returning customers of a range ------------------------------------------------------------------------

MAR, APR, FEB = T0 + 59 * DAY, T0 + 90 * DAY, T0 + 31 * DAY  # 2026-03-01, 04-01, 02-01
# customer -> visits (visit_no, first_ts_ms)
VISITS = {"mar-apr": [(1, MAR + DAY), (2, APR + DAY)],  # first seen in March, back in April
          "mar-twice": [(1, MAR + 2 * DAY), (2, MAR + 9 * DAY)],
          "feb-mar": [(1, FEB + DAY), (2, MAR + 3 * DAY)],
          "apr-only": [(1, APR + 2 * DAY)]}


@contextlib.contextmanager
def _gallery(kind: str, tmp_path) -> Iterator:
    if kind == "sqlite":
        g = SqliteGalleryStore(str(tmp_path / "gallery.db"), dim=4)
        try:
            yield g
        finally:
            g.close()
        return
    psycopg = pytest.importorskip("psycopg")
    from psycopg.conninfo import make_conninfo

    schema = f"test_journeys_review_32_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
    g = PostgresGalleryStore(make_conninfo(PG_DSN, options=f"-c search_path={schema}"), dim=4)
    try:
        yield g
    finally:
        g.close()
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_returning_customers_of_a_range_are_returning_in_it(kind, tmp_path) -> None:
    from storelens.storage import SqliteStorage

    cases = [  # (returning, range) -> customers, most recently seen first
        (True, (MAR, APR), ["mar-twice", "feb-mar"]),  # not mar-apr: first-time in March
        (False, (MAR, APR), ["mar-apr"]),
        (True, (APR, APR + 30 * DAY), ["mar-apr"]),
        (False, (APR, APR + 30 * DAY), ["apr-only"]),
        (True, (FEB, MAR), []),
        (False, (FEB, MAR), ["feb-mar"]),
        (True, None, ["mar-apr", "mar-twice", "feb-mar"]),  # no range: the latest visit, as before
        (False, None, ["apr-only"]),
    ]
    history = SqliteStorage(":memory:")
    with _gallery(kind, tmp_path) as g:
        g.add_customers([(cid, vs[0][1]) for cid, vs in VISITS.items()])
        for cid, vs in VISITS.items():
            for no, first in vs:
                g.save_visit(Visit(cid, no, first, first + 600_000, ("door",)))
        for returning, span, expected in cases:
            lo, hi = span if span is not None else (None, None)
            total, items = g.list_customers(returning=returning, from_ts_ms=lo, to_ts_ms=hi)
            assert (total, [c.customer_id for c in items]) == (len(expected), expected), (returning, span)
        with signed_in_client(create_app(parse_config({"store": {"id": "s"}, "cameras": [
                {"id": "door", "source": "/tmp/door.mp4"}]}), history, gallery_store=g)) as client:
            body = client.get("/v1/customers", params={"returning": "true", "start_ms": MAR, "end_ms": APR}).json()
    history.close()
    assert [c["customer_id"] for c in body["items"]] == ["mar-twice", "feb-mar"]
    assert [c["returning"] for c in body["items"]] == [True, True]  # the items' summaries: all visits
