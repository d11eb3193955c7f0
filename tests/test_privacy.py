"""Privacy by construction (issue 11 item 7): k-anonymity of the aggregates, retention, erasure.

* the k rule (:mod:`storelens.domain.privacy`), table-driven;
* every aggregate route withholds groups of fewer than ``privacy.k_min`` people (the real API
  over a real SQLite history);
* the retention purge (:mod:`storelens.storage.privacy`) on SQLite and PostgreSQL, and its
  schedule in both modes: the embedded runner loop (real analytics stage over the in-process
  bus) and the analytics service's timer (its runner core, on PostgreSQL);
* erasure after a real run: tests/test_faces_pipeline.py::test_erasure_removes_every_derived_row.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Iterator

import numpy as np
import psycopg
import pytest
from psycopg import sql
from pydantic import ValidationError

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.config.privacy import RETENTION_KINDS, PrivacyConfig, RetentionDays
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import CrossingEvent
from storelens.domain.privacy import is_suppressed, keep, suppress_counts
from storelens.runtime.bus import InProcessBus
from storelens.runtime.retention import RetentionPurge, purge_clock
from storelens.runtime.runner import Runner, RunnerCore
from storelens.runtime.transports import END_OF_TOPIC, InProcessTransport
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage.gallery import SqlGalleryStore
from storelens.storage.privacy import RETENTION_TABLES, purge_expired

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
DAY = 86_400_000
NOW = 1_767_225_600_000 + 200 * DAY  # 2026-07-20


# -- the k rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k", "suppressed"), [
    (0, 5, False), (1, 5, True), (4, 5, True), (5, 5, False), (100, 5, False), (1, 1, False), (2, 3, True),
])
def test_is_suppressed(n: int, k: int, suppressed: bool) -> None:
    assert is_suppressed(n, k) is suppressed
    assert keep("v", n, k) == (None if suppressed else "v")


@pytest.mark.parametrize(("counts", "k", "expected", "any_"), [
    ({}, 5, {}, False),
    ({"a": 0, "b": 0}, 5, {"a": 0, "b": 0}, False),
    ({"a": 5, "b": 9}, 5, {"a": 5, "b": 9}, False),
    # one small cell: the next smallest non-empty one is withheld too (else total - others gives it away)
    ({"f": 7, "m": 2, "u": 12}, 5, {"f": None, "m": None, "u": 12}, True),
    ({"f": 9, "m": 4, "u": 9}, 5, {"f": None, "m": None, "u": 9}, True),  # tie: the first in order
    # two small cells protect each other
    ({"a": 1, "b": 2, "c": 30, "d": 6}, 5, {"a": None, "b": None, "c": 30, "d": 6}, True),
    # a lone small cell and nothing else: the total is small too, so every cell is withheld, the empty ones as
    # well (a 0 beside the one withheld cell would tell whose it is)
    ({"a": 3, "b": 0}, 5, {"a": None, "b": None}, True),
    ({"a": 3, "b": 1}, 1, {"a": 3, "b": 1}, False),  # k = 1: nothing withheld
])
def test_suppress_counts(counts: dict, k: int, expected: dict, any_: bool) -> None:
    assert suppress_counts(counts, k) == (expected, any_)
    assert list(suppress_counts(counts, k)[0]) == list(counts)  # key order kept


@pytest.mark.parametrize(("n", "k"), [(-1, 5), (3, 0)])
def test_k_rule_rejects_nonsense(n: int, k: int) -> None:
    with pytest.raises(ValueError):
        is_suppressed(n, k)


# -- config ------------------------------------------------------------------------------------


def test_privacy_config_defaults_and_errors() -> None:
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}).privacy
    assert cfg.k_min == 5 and cfg.retention.enabled and cfg.retention.clock == "auto"
    assert cfg.retention.days.model_dump() == {
        "track_points": 7.0, "frames": 7.0, "track_attributes": 90.0, "customer_matches": 30.0,
        "track_summaries": 30.0, "zone_events": 90.0, "crossings": None, "group_crossings": None,
        "staff_tracks": None}
    assert set(RETENTION_KINDS) == set(RETENTION_TABLES)
    for bad in ({"k_min": 0}, {"retention": {"days": {"track_points": 0}}},
                {"retention": {"days": {"crops": 3}}}, {"retention": {"every_s": 0}},
                {"retention": {"clock": "sundial"}}):
        with pytest.raises(ValidationError):
            PrivacyConfig.model_validate(bad)


@pytest.mark.parametrize(("sources", "clock", "expected"), [
    (["a.mp4"], "auto", "camera"), (["a.mp4", "rtsp://cam/2"], "auto", "wall"), (["0"], "auto", "wall"),
    (["a.mp4"], "wall", "wall"), (["rtsp://cam/1"], "camera", "camera"),
])
def test_purge_clock(sources: list[str], clock: str, expected: str) -> None:
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": f"c{i}", "source": s} for i, s in enumerate(sources)],
                        "privacy": {"retention": {"clock": clock}}})
    assert purge_clock(cfg) == expected


# -- retention purge: SQLite and PostgreSQL ----------------------------------------------------------


def admin() -> psycopg.Connection:
    return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    with admin() as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path, pg_schema) -> Iterator[SqlStorage]:
    s = SqlStorage(str(tmp_path / "h.db")) if request.param == "sqlite" else SqlStorage(PG_DSN, schema=pg_schema)
    yield s
    s.close()


def person_rows(track_id: int, ts_ms: int, cam: str = "cam") -> list:
    """One row of every kind of personal data for one track seen at ``ts_ms``."""
    box = m.BoxXYXY(x1=10, y1=20, x2=50, y2=120)
    return [
        m.TrackedFrame(camera_id=cam, seq=track_id, ts_ms=ts_ms, width=640, height=480,
                       tracks=[m.Track(track_id=track_id, bbox_xyxy=box, confidence=0.9)]),
        m.TrackAttributes(camera_id=cam, track_id=track_id, first_ts_ms=ts_ms - 1000, last_ts_ms=ts_ms,
                          last_seq=track_id, n_faces=2, gender=m.gender_value("female"), age_years=30.0),
        m.CustomerMatch(event_id=f"{cam}:{track_id}", camera_id=cam, track_id=track_id, seq=track_id, ts_ms=ts_ms,
                        customer_id=f"cust-{track_id}", similarity=0.9),
        m.TrackSummary(camera_id=cam, track_id=track_id, first_ts_ms=ts_ms - 1000, last_ts_ms=ts_ms, n_frames=3),
        m.ZoneEvent(event_id=f"{cam}:z:{track_id}", camera_id=cam, zone_id="z", zone_kind="area",
                    track_id=track_id, kind=m.ZONE_EVENT_EXIT, ts_ms=ts_ms, seq=track_id, dwell_ms=900),
        CrossingEvent(f"{cam}:door:{track_id}", cam, "door", track_id, "in", ts_ms, track_id),
        m.GroupCrossing(event_id=f"{cam}:door:g{track_id}", camera_id=cam, line_id="door", direction=m.DIRECTION_IN,
                        ts_ms=ts_ms, seq=track_id, last_ts_ms=ts_ms, track_ids=[track_id]),
        m.StaffTrack(camera_id=cam, track_id=track_id, ts_ms=ts_ms, seq=track_id, cue="zone", detail="z"),
    ]


def count_rows(store: SqlStorage) -> dict[str, int]:
    import sqlalchemy as sa

    return {kind: store._read(lambda c, t=table: c.execute(sa.select(sa.func.count()).select_from(t)).scalar())
            for kind, (table, _) in RETENTION_TABLES.items()}


def test_purge_expired_per_kind(store: SqlStorage) -> None:
    days = RetentionDays()
    # per kind one track just inside its period and one just past it: track ids 1.., ages in days
    ages = [1, 6.9, 7.1, 29, 31, 89, 91, 400]
    for i, age in enumerate(ages, 1):
        store.write_records(person_rows(i, int(NOW - age * DAY)))
    assert set(count_rows(store).values()) == {len(ages)}
    deleted = store.purge_expired(days, NOW)
    older_than = {kind: sum(a > d for a in ages) if d is not None else 0 for kind, d in days.model_dump().items()}
    assert deleted == older_than == {"track_points": 6, "frames": 6, "track_attributes": 2, "customer_matches": 4,
                                     "track_summaries": 4, "zone_events": 2, "crossings": 0, "group_crossings": 0,
                                     "staff_tracks": 0}
    assert count_rows(store) == {k: len(ages) - n for k, n in older_than.items()}
    # what is left is the recent part: the customer links of the tracks seen in the last 30 days
    assert [t["track_id"] for c in (1, 2, 3, 4) for t in store.customer_tracks(f"cust-{c}")] == [1, 2, 3, 4]
    assert store.customer_tracks("cust-5") == []
    assert store.purge_expired(days, NOW) == dict.fromkeys(RETENTION_TABLES, 0)  # idempotent
    # null keeps a kind; a mapping with only some kinds works too
    assert store.purge_expired({"crossings": 100}, NOW)["crossings"] == 1
    assert store.newest_frame_ms() == NOW - DAY


def test_purge_rejects_unknown_kinds_and_bad_periods(store: SqlStorage) -> None:
    for bad in ({"crops": 3}, {"track_points": 0}, {"frames": -1}):
        with pytest.raises(ValueError):
            purge_expired(store, bad, NOW)


def test_purge_drops_links_of_customers_gone_from_the_gallery(store: SqlStorage, tmp_path, pg_schema) -> None:
    """The gallery expired (or erased) a customer: its track links go with it, whatever their age."""
    for i in (1, 2, 3):
        store.write_records(person_rows(i, NOW - DAY))
    if store.db.postgres:  # the distributed mode: the gallery's tables next to the history, checked in SQL
        gallery = SqlGalleryStore(PG_DSN, dim=4, schema=pg_schema)
        known = None
    else:  # the embedded mode: a gallery file of its own, asked per customer
        gallery = SqlGalleryStore(tmp_path / "gallery.db", dim=4)
        known = gallery.customer_exists
    with gallery:
        for cid in ("cust-1", "cust-3"):
            gallery.add_customer(cid, NOW - DAY)
            gallery.add_embedding(cid, NOW - DAY, np.ones(4, np.float32))
        deleted = store.purge_expired({"customer_matches": 30}, NOW, known)
    assert deleted["customer_matches"] == 1
    assert [bool(store.customer_tracks(f"cust-{i}")) for i in (1, 2, 3)] == [True, False, True]


def test_erasure_follows_the_journey(store: SqlStorage) -> None:
    """Erasing a customer also erases the tracks linked to their matched track in a journey (by appearance
    across cameras), and nobody else's rows; on SQLite and PostgreSQL."""
    from storelens.config.behaviour import JourneysConfig

    journeys = JourneysConfig.model_validate({"links": [{"from": "door", "to": "floor", "max_s": 30}]})
    t0 = NOW - DAY

    def summary(cam: str, tid: int, first: int, last: int, emb) -> m.TrackSummary:
        s = m.TrackSummary(camera_id=cam, track_id=tid, first_ts_ms=first, last_ts_ms=last, n_frames=10)
        s.appearance.extend(np.asarray(emb, np.float64) / np.linalg.norm(emb))
        return s

    rows = person_rows(1, t0, "door")[:1] + person_rows(7, t0 + 20_000, "floor") + person_rows(3, t0, "door")
    storage_rows = [r for r in rows if not isinstance(r, m.TrackSummary)]
    store.write_records(storage_rows + [summary("door", 1, t0, t0 + 5_000, [1, 0, 0]),
                                        summary("floor", 7, t0 + 10_000, t0 + 20_000, [0.95, 0.1, 0]),
                                        summary("door", 3, t0 - 60_000, t0, [0, 0, 1])])
    before = count_rows(store)
    assert store.erase_customer("cust-7", journeys) > 0
    after = count_rows(store)
    gone = {k: before[k] - after[k] for k in before}
    # floor/7 (matched) and door/1 (its journey's first track) lose their points, summaries, ...; door/3 stays
    assert gone["track_summaries"] == 2 and gone["track_points"] == 2 and gone["customer_matches"] == 1
    assert gone["track_attributes"] == 1 and gone["zone_events"] == 1
    assert gone["staff_tracks"] == 0  # a track number and a cue, kept so past days' visitor counts stay
    assert gone["crossings"] == 0 and gone["frames"] == 0
    assert [p.track_id for p in store.tracks("door", 0, NOW)] == [3]
    assert store.customer_tracks("cust-3") != []


# -- the schedule: embedded runner loop and the analytics service -----------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def site(**privacy) -> object:
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "clip.mp4"}],
                         "privacy": {"retention": privacy}})


def test_retention_chore_schedule_and_metrics(tmp_path) -> None:
    clock = Clock()
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        purge = RetentionPurge(storage, site(every_s=600, clock="wall"), wall_ms=lambda: NOW, monotonic=clock)
        core = RunnerCore(AnalyticsStage(site()), chores=[purge])
        storage.write_records(person_rows(1, NOW - 10 * DAY))
        assert purge.due()
        core.run_chores()
        assert purge.total["track_points"] == 1 and purge.runs == 1
        assert core.metrics.purged.labels("track_points")._value.get() == 1
        assert core.metrics.purged.labels("frames")._value.get() == 1
        storage.write_records(person_rows(2, NOW - 10 * DAY))
        clock.t = 599.0
        core.run_chores()  # not due yet
        assert purge.runs == 1 and len(storage.tracks("cam", 0, NOW)) == 1
        clock.t = 600.0
        core.run_chores()
        assert purge.runs == 2 and storage.tracks("cam", 0, NOW) == []
        assert core.metrics.purged.labels("track_points")._value.get() == 2


def test_retention_chore_failure_is_counted_not_fatal(tmp_path) -> None:
    storage = SqlStorage(str(tmp_path / "h.db"))
    purge = RetentionPurge(storage, site(clock="wall"), wall_ms=lambda: NOW, monotonic=Clock())
    core = RunnerCore(AnalyticsStage(site()), chores=[purge])
    storage.close()  # the store is gone: the purge fails, the runner goes on
    core.run_chores()
    assert core.errors == {"chore_retention": 1}


def test_embedded_runner_purges_on_camera_time(tmp_path) -> None:
    """The analytics stage's runner (embedded mode) purges between messages: frames of a recorded clip
    that are newer than the history's old rows make "now" (camera clock) move past their retention."""
    cfg = site(every_s=3600)
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records(person_rows(1, NOW - 30 * DAY))  # an earlier run of the store
        from storelens.runtime.sinks import HistorySink

        stage = AnalyticsStage(cfg)
        bus = InProcessBus()
        transport = InProcessTransport(bus, list(stage.inputs), ending=[topics.TRACKS], outputs=stage.outputs)
        clock = Clock()
        purge = RetentionPurge(storage, cfg, monotonic=clock)
        core = RunnerCore(stage, [HistorySink(storage)], chores=[purge])
        box = m.BoxXYXY(x1=10, y1=20, x2=50, y2=120)
        for seq in range(100, 105):
            bus.publish(topics.TRACKS, b"cam", m.encode(m.TrackedFrame(
                camera_id="cam", seq=seq, ts_ms=NOW + seq * 40, width=640, height=480,
                tracks=[m.Track(track_id=9, bbox_xyxy=box, confidence=0.9)])))
        bus.publish(topics.TRACKS, b"", END_OF_TOPIC)
        assert Runner(core, transport).run() is None
        # the first purge ran before any frame of this run was stored: "now" was the old run's newest frame
        assert purge.runs == 1 and purge.total["track_points"] == 0
        clock.t = 3600.0  # the next period has come (the scheduling clock is injected: no sleeping in tests)
        core.run_chores()
        assert purge.runs == 2
        assert (purge.total["track_points"], purge.total["frames"], purge.total["track_summaries"]) == (1, 1, 1)
        assert [p.track_id for p in storage.tracks("cam", 0, NOW + 10_000)] == [9]  # this run's track stays


def test_analytics_service_purges_on_its_timer(pg_schema) -> None:
    """The Kafka analytics service runs the same chore from a faust timer, in its sink thread (PostgreSQL)."""
    from storelens.runtime.analytics_app import AnalyticsApp
    from storelens.runtime.service import ServiceRuntime

    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "rtsp://cam/1"}]})
    loop = asyncio.new_event_loop()
    with SqlStorage(PG_DSN, schema=pg_schema) as storage:
        now = int(time.time() * 1000)
        storage.write_records(person_rows(1, now - 40 * DAY))
        storage.write_records(person_rows(2, now - DAY))
        rt = ServiceRuntime("analytics", port=0)
        app = AnalyticsApp(cfg, storage, None, rt, loop=loop)
        try:
            assert app.retention is not None and app.retention.clock == "wall"
            loop.run_until_complete(app._chores())
        finally:
            app.close()
            loop.close()
        assert app.retention.runs == 1
        assert [t.track_id for t in storage.tracks("cam", 0, 2 ** 62)] == [2]
        assert rt.metrics.purged.labels("track_points")._value.get() == 1
        assert rt.metrics.purged.labels("customer_matches")._value.get() == 1


# -- k-anonymity in the API ----------------------------------------------------------------------------

T0 = 1_767_225_600_000
POLY = [[0, 0], [100, 0], [100, 100], [0, 100]]


@pytest.fixture
def api(tmp_path):
    config = parse_config({
        "store": {"id": "s"},
        "cameras": [{"id": "floor", "source": "/tmp/b.mp4", "zones": [
            {"id": "fruit", "kind": "shelf", "polygon": POLY, "product": "apples"},
            {"id": "wine", "kind": "shelf", "polygon": POLY, "product": "wine"},
            {"id": "till", "kind": "queue", "polygon": POLY, "service_edge": [0, 1]}]}],
    })
    storage = SqlStorage(str(tmp_path / "h.db"))
    records = []
    # 7 shoppers: 6 went fruit -> till, 1 went wine -> till (each its own journey, 2 minutes apart)
    for i in range(7):
        t = T0 + i * 120_000
        shelf = "fruit" if i < 6 else "wine"
        records.append(m.TrackSummary(camera_id="floor", track_id=i + 1, first_ts_ms=t, last_ts_ms=t + 60_000,
                                      n_frames=100, zones=[m.ZoneVisit(zone_id=shelf, zone_kind="shelf",
                                                                       enter_ts_ms=t, exit_ts_ms=t + 20_000),
                                                           m.ZoneVisit(zone_id="till", zone_kind="queue",
                                                                       enter_ts_ms=t + 25_000,
                                                                       exit_ts_ms=t + 50_000)]))
        records.append(m.ZoneEvent(event_id=f"x{i}", camera_id="floor", zone_id=shelf, zone_kind="shelf",
                                   track_id=i + 1, kind=m.ZONE_EVENT_EXIT, ts_ms=t + 20_000, seq=i,
                                   dwell_ms=20_000 if i % 2 else 1_000))
    storage.write_records(records)
    # faces: 6 tracks, 5 women and 1 man; emotions 3 happy, 3 neutral
    storage.write_track_attributes([
        m.TrackAttributes(camera_id="floor", track_id=i + 1, first_ts_ms=T0, last_ts_ms=T0 + i, last_seq=i,
                          n_faces=2, gender=m.gender_value("male" if i == 5 else "female"), age_years=30.0 + i,
                          emotion=m.emotion_value("happy" if i < 3 else "neutral")) for i in range(6)])
    client = signed_in_client(create_app(config, storage), role="viewer")
    yield client, storage
    storage.close()


def test_demographics_withhold_small_groups(api) -> None:
    client, _ = api
    d = client.get("/v1/demographics").json()
    assert d["tracks"] == 6 and d["suppressed"] is True and d["k_min"] == 5
    # 5 women, 1 man: the man is withheld, and so are the women (6 - 0 - 5 would give him away)
    assert d["gender"] == {"female": None, "male": None, "unknown": 0}
    # ages 30-34 (5) and 35 (1): the one is withheld, and the five with it
    assert d["age"] == {"0-17": 0, "18-24": 0, "25-34": None, "35-44": None, "45-54": 0, "55-64": 0, "65+": 0,
                        "unknown": 0}
    assert (d["emotion"]["happy"], d["emotion"]["neutral"]) == (None, None)  # 3 and 3
    # a narrow range: three people, every band withheld, the empty ones too (a 0 would tell the others apart)
    narrow = client.get("/v1/demographics", params={"end_ms": T0 + 3}).json()
    assert narrow["tracks"] == 3 and narrow["suppressed"]
    assert all(v is None for key in ("age", "gender", "emotion") for v in narrow[key].values())
    described = client.app.openapi()["paths"]["/v1/demographics"]["get"]["description"]
    assert "k_min" in described and "suppressed" in described


def test_interest_flows_and_paths_withhold_small_groups(api) -> None:
    client, _ = api
    items = {i["key"]: i for i in client.get("/v1/interest", params={"start_ms": 0, "group_by": "product"}
                                             ).json()["items"]}
    apples, wine = items["apples"], items["wine"]
    assert (apples["passers"], apples["stoppers"], apples["suppressed"]) == (6, 3, False)
    assert apples["dwell_s"]["n"] == 6
    assert apples["dwell_histogram"]["0-3"] is None and apples["dwell_histogram"]["10-30"] is None  # 3 and 3
    assert wine == {"key": "wine", "zones": ["floor/wine"], "passers": None, "stoppers": None,
                    "interest_rate": None, "dwell_s": None, "dwell_histogram": None, "attention_s": None,
                    "attention_suppressed": False, "attending_emotions": None, "suppressed": True}
    flows = client.get("/v1/flows").json()
    links = {(x["source"], x["target"]): (x["count"], x["suppressed"]) for x in flows["links"]}
    assert flows["journeys"] == 7 and flows["suppressed"] is True
    # wine -> till (one journey) is left out: its name would show that person's step
    assert links == {("floor/fruit", "floor/till"): (6, False)} and "floor/wine" not in flows["nodes"]
    paths = client.get("/v1/paths/top").json()["paths"]
    assert [(p["path"][:1], p["count"], p["suppressed"]) for p in paths][:2] == [
        (["floor/fruit"], 6, False), ([], None, True)]  # a rare path is not shown: it is one person's route
    assert paths[1]["share"] is None
    spec = client.app.openapi()["paths"]
    for route in ("/v1/interest", "/v1/flows", "/v1/paths/top"):
        assert "k_min" in spec[route]["get"]["description"], route


def test_k_min_is_configurable(tmp_path) -> None:
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "/tmp/x.mp4"}],
                        "privacy": {"k_min": 1}})
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_track_attributes([m.TrackAttributes(camera_id="c", track_id=1, last_ts_ms=T0, n_faces=1,
                                                          gender=m.gender_value("male"))])
        d = signed_in_client(create_app(cfg, storage), role="viewer").get("/v1/demographics").json()
    assert (d["gender"]["male"], d["suppressed"], d["k_min"]) == (1, False, 1)


# -- faces blurred in every stored or served image ------------------------------------------------------

def sharpness(image: np.ndarray, box) -> float:
    """Variance of the Laplacian inside ``box`` (detail: eyes, mouth, edges; a blurred patch has almost none)."""
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box)
    return float(cv2.Laplacian(cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def faces_left(probe, image: np.ndarray, faces_xyxy: np.ndarray) -> int:
    """Faces ``probe`` finds in ``image`` whose centre lies in one of the true faces ``faces_xyxy``
    (a watch found elsewhere is not a face left unblurred)."""
    found = probe.detect(image).bbox_xyxy
    cx, cy = (found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2
    return int(sum(((x1 <= cx) & (cx <= x2) & (y1 <= cy) & (cy <= y2)).any() for x1, y1, x2, y2 in faces_xyxy))


PEOPLE = [("obama", "obama.jpg"), ("biden", "biden.jpg"), ("kit_harington", "john1.jpeg"),
          ("alex_lacamoire", "img1.jpg"), ("rose_leslie", "img1.jpg")]


def test_reference_frames_and_heatmap_pngs_show_no_face(tmp_path) -> None:
    """The reference frames (the only images stored) and the heatmap PNGs drawn on them (served) show no face
    the face detector can find, also for a person the people detector missed (no box to blur the head of)."""
    import cv2

    from storelens.backends.face_detectors import build_face_detector
    from storelens.config.faces import YuNetFaceDetectorConfig
    from storelens.paths import asset
    from storelens.stages.snapshots import Snapshotter

    base = {"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "x.mp4"}]}
    cfg = parse_config(base)
    head_only = parse_config({**base, "heatmap": {"snapshot_blur_faces": False}})
    # the face detector of the recognition pipeline: a face it finds could be recognised
    probe = build_face_detector(YuNetFaceDetectorConfig())
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        client = signed_in_client(create_app(cfg, storage), role="viewer")
        for i, (person, photo) in enumerate(PEOPLE):
            img = cv2.imread(str(asset("faces", "identities", person, photo)))
            truth = probe.detect(img).bbox_xyxy
            assert img is not None and len(truth) >= 1, person
            frame = m.Frame(camera_id="cam", seq=i, ts_ms=T0 + i * 3_600_000)
            no_boxes = np.zeros((0, 4), np.float32)
            shots = []
            for c in (cfg, head_only):
                snapper = Snapshotter(c)
                snapper.offer(frame, img, no_boxes)
                shots += snapper.pop()
            blurred, unblurred = (cv2.imdecode(np.frombuffer(s.jpeg, np.uint8), cv2.IMREAD_COLOR) for s in shots)
            assert faces_left(probe, unblurred, truth) >= 1, f"{person}: the missed person's face stays without"
            assert faces_left(probe, blurred, truth) == 0 and shots[0].blurred >= 1, person
            for box in truth:  # and nothing of the face's detail survives
                assert sharpness(blurred, box) < 0.1 * sharpness(img, box), person
            storage.write_records([shots[0]])
            # served: the stored reference frame and the heatmap drawn over it
            r = client.get("/v1/cameras/cam/heatmap", params={"format": "png", "start_ms": T0,
                                                              "end_ms": frame.ts_ms + 1})
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
            png = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
            assert faces_left(probe, png, truth) == 0, person
            r = client.get("/v1/cameras/cam/snapshot", params={"at_ms": frame.ts_ms + 1})
            if r.status_code != 404:  # the route exists (dashboard work)
                served = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
                assert faces_left(probe, served, truth) == 0, person


def test_kpis_withhold_medians_of_few_people(tmp_path) -> None:
    """/v1/kpis: counts and sales stay; the medians of people's dwell and queue wait need k_min visits."""
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "/tmp/x.mp4", "zones": [
        {"id": "floor", "kind": "area", "polygon": POLY}]}]})
    hour = 3_600_000
    exits = [(T0 + 10 * hour + i * 60_000, 30_000 * (i + 1)) for i in range(2)]  # 2 visits at 10:00
    exits += [(T0 + 11 * hour + i * 60_000, 10_000 * (i + 1)) for i in range(5)]  # 5 visits at 11:00
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records([m.ZoneEvent(event_id=f"e{i}", camera_id="cam", zone_id="floor", zone_kind="area",
                                           track_id=i, kind=m.ZONE_EVENT_EXIT, ts_ms=t, seq=i, dwell_ms=d)
                               for i, (t, d) in enumerate(exits)])
        out = signed_in_client(create_app(cfg, storage), role="viewer").get(
            "/v1/kpis", params={"period": "hour", "start_ms": T0 + 10 * hour, "end_ms": T0 + 12 * hour}).json()
    ten, eleven = out["buckets"]
    assert (ten["median_dwell_s"], ten["suppressed"]) == (None, True)
    assert (eleven["median_dwell_s"], eleven["suppressed"]) == (30.0, False)
    assert (out["totals"]["median_dwell_s"], out["totals"]["suppressed"]) == (30.0, False)  # 7 visits: 10 20 30 30 40 50 60 s
