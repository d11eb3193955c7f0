"""Journeys built right (review fixes), on real history stores (SQLite, and PostgreSQL when it is up):

* only the store's entrance lines (``store.entrance_lines``) start and end a visit: a department line crossed
  ``in`` and ``out`` on an aisle camera cuts no journey (``/v1/journeys``, ``/v1/flows``, the erasure);
  without entrance lines every line still decides;
* a track the ``bytereid`` tracker re-finds after ``journeys.track_end_after_s`` (its window is 12 s at
  ``fps: 5``) goes on with its summary: the stored row keeps its entrance ``in``, first zones and start;
* a replay (``rederive=true``) re-derives the stored summaries' zones and keeps their appearance; a track
  already on the camera before the replayed range keeps its stored summary;
* ``journeys.links`` naming a camera the site does not have is a config error naming the field.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa

from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import ConfigError
from storelens.storage import journeys as jq
from storelens.storage.schema import track_summaries

HOUR = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


@pytest.fixture
def storage(history_store):
    """An empty history store, SQLite and PostgreSQL (``history_store`` in conftest.py)."""
    return history_store


def _summary(cam: str, tid: int, first_s: float, last_s: float, emb, zones=(), crossings=()) -> m.TrackSummary:
    s = m.TrackSummary(camera_id=cam, track_id=tid, first_ts_ms=T0 + int(first_s * 1000),
                       last_ts_ms=T0 + int(last_s * 1000), n_frames=10)
    s.appearance.extend(np.asarray(emb, np.float64) / np.linalg.norm(emb))
    for z, k, t0, t1 in zones:
        s.zones.add(zone_id=z, zone_kind=k, enter_ts_ms=T0 + int(t0 * 1000), exit_ts_ms=T0 + int(t1 * 1000))
    for ln, d, t in crossings:
        s.crossings.add(line_id=ln, direction=m.DIRECTION_IN if d == "in" else m.DIRECTION_OUT,
                        ts_ms=T0 + int(t * 1000))
    return s


# -- 1. entrance lines decide where a visit starts and ends ----------------------------------------------------

def _two_camera_site(entrance_lines):
    poly = [[0, 0], [100, 0], [100, 100], [0, 100]]
    store = {"id": "s"} | ({"entrance_lines": entrance_lines} if entrance_lines is not None else {})
    return parse_config({
        "store": store,
        "cameras": [{"id": "door", "source": "/tmp/a.mp4", "lines": [{"id": "entry", "a": [0, 50], "b": [100, 50]}]},
                    {"id": "aisle", "source": "/tmp/b.mp4", "lines": [{"id": "dept", "a": [0, 50], "b": [100, 50]}],
                     "zones": [{"id": "fruit", "kind": "shelf", "polygon": poly}]}],
        "journeys": {"links": [{"from": "door", "to": "aisle", "max_s": 30, "both_ways": True}]},
        "privacy": {"k_min": 1},
    })


def _door_aisle_door(storage) -> None:
    """One shopper: in through the entrance on ``door``, into and out of the department on ``aisle``, out again."""
    storage.write_records([
        _summary("door", 1, 0, 5, [1, 0, 0], crossings=[("entry", "in", 3)]),
        _summary("aisle", 3, 10, 60, [0.95, 0.05, 0], zones=[("fruit", "shelf", 20, 40)],
                 crossings=[("dept", "in", 12), ("dept", "out", 58)]),
        _summary("door", 2, 65, 70, [1, 0.05, 0], crossings=[("entry", "out", 68)]),
    ])
    storage.write_records([m.CustomerMatch(event_id="e1", camera_id="door", track_id=1, seq=1, ts_ms=T0 + 1000,
                                           customer_id="cust-1", similarity=0.9)])


@pytest.mark.parametrize("entrance_lines", [["door/entry"], None])
def test_only_entrance_lines_start_and_end_a_visit(storage, entrance_lines) -> None:
    from storelens.api import create_app

    _door_aisle_door(storage)
    config = _two_camera_site(entrance_lines)
    with signed_in_client(create_app(config, storage)) as client:
        body = client.get("/v1/journeys").json()
        got = [(j["journey_id"], j["entered"], j["exited"], [(s["camera_id"], s["track_id"]) for s in j["path"]])
               for j in body["journeys"]]
        flows = {(x["source"], x["target"]): x["count"] for x in client.get("/v1/flows").json()["links"]}
        one = client.get("/v1/journeys/1@door").json()
    if entrance_lines is not None:  # the department's out ends no visit: one journey, door to door
        assert got == [("1@door", True, True, [("door", 1), ("aisle", 3), ("door", 2)])]
        assert flows == {("door", "aisle/fruit"): 1, ("aisle/fruit", "door"): 1}
        assert one["exited"] and [s["track_id"] for s in one["path"]] == [1, 3, 2]
    else:  # no entrance lines: every line is one (as before), the department's out ends the visit
        assert got == [("1@door", True, True, [("door", 1), ("aisle", 3)]), ("2@door", False, True, [("door", 2)])]
        assert flows == {("door", "aisle/fruit"): 1}
    # the erasure cuts the journeys as the API does: the customer's whole visit goes
    assert storage.erase_customer("cust-1", config.journeys, config.store.entrance_lines) > 0
    left = {int(t) for (t,) in storage._rows(sa.select(track_summaries.c.track_id))}
    assert left == (set() if entrance_lines is not None else {2})


# -- 2. a track re-found after its summary was sent ------------------------------------------------------------

def _stage_site():
    return parse_config({
        "store": {"id": "s"},
        "tracker": {"backend": "bytereid", "fps": 5},  # track_buffer 60 frames at 5 fps: re-found up to 12 s
        "cameras": [{"id": "cam", "source": "/tmp/x.mp4", "lines": [{"id": "door", "a": [0, 100], "b": [400, 100]}],
                     "zones": [{"id": "shelf", "kind": "shelf",
                                "polygon": [[0, 150], [400, 150], [400, 300], [0, 300]]}]}],
    })


def _tf(seq: int, ts_ms: int, people: list[tuple[int, float]]) -> m.TrackedFrame:
    tf = m.TrackedFrame(camera_id="cam", seq=seq, ts_ms=ts_ms, width=400, height=400)
    for tid, y in people:
        t = tf.tracks.add(track_id=tid, bbox_xyxy=m.BoxXYXY(x1=90, y1=y - 60, x2=110, y2=y), confidence=0.9)
        t.appearance.extend([1.0, 0.0])
    return tf


@pytest.mark.parametrize("snapshot", [False, True])
def test_a_track_refound_after_its_summary_was_sent_keeps_its_start(storage, snapshot) -> None:
    from storelens.stages.analytics import AnalyticsStage

    stage = AnalyticsStage(_stage_site())
    sent: list[m.TrackSummary] = []

    def feed(seq: int, people) -> None:
        out = stage.handle(topics.TRACKS, _tf(seq, seq * 200, people))
        sent.extend(p.message for p in out.publish if p.topic == topics.TRACK_SUMMARIES)
        storage.write_records(list(out.records))  # as the history sink does

    seq = 0
    for i in range(30):  # 6 s: down over the door line (in) and into the shelf zone
        feed(seq, [(1, 50 + i * 6)])
        seq += 1
    for _ in range(55):  # 11 s unseen: the summary is sent (10 s), the tracker still holds the person (12 s)
        feed(seq, [])
        seq += 1
    assert [(s.track_id, s.first_ts_ms) for s in sent] == [(1, 0)]
    if snapshot:  # the analytics service restarts from its snapshot meanwhile
        state = json.loads(json.dumps(stage.camera_state("cam")))
        stage = AnalyticsStage(_stage_site())
        stage.load_camera_state("cam", state)
    for _ in range(20):  # re-found by the tracker, in the shelf zone
        feed(seq, [(1, 250)])
        seq += 1
    for _ in range(60):
        feed(seq, [])
        seq += 1
    assert len(sent) == 2
    whole = sent[-1]
    assert (whole.first_ts_ms, whole.first_seq, whole.n_frames) == (0, 0, 50)
    assert [(c.line_id, m.direction_name(c.direction)) for c in whole.crossings] == [("door", "in")]
    [info] = jq.track_infos(storage, 0, 10**9)
    assert (info.first_ms, info.last_ms) == (0, (30 + 55 + 19) * 200)
    assert info.entered and info.crossings[0][:2] == ("door", "in") and info.zones[0].zone_id == "shelf"
    assert info.zones[0].enter_ms < 30 * 200  # the first visit of the zone, before the track was lost
    assert info.appearance is not None


# -- 3. a replay re-derives the summaries' zones ----------------------------------------------------------------

def _zone_site(zone_x: tuple[int, int]):
    x0, x1 = zone_x
    return parse_config({
        "store": {"id": "s"},
        "cameras": [{"id": "cam", "source": "/tmp/x.mp4",
                     "zones": [{"id": "shelf", "kind": "shelf", "polygon": [[x0, 0], [x1, 0], [x1, 480], [x0, 480]]},
                               {"id": "till", "kind": "area", "polygon": [[500, 0], [640, 0], [640, 480],
                                                                          [500, 480]]}]}],
    })


def _walk(seq0: int, ts0: int, n: int, track_id: int) -> list[m.TrackedFrame]:
    """A person standing at x = 100 (a box 60 px wide), 5 frames a second, with an appearance vector (live)."""
    out = []
    for i in range(n):
        tf = m.TrackedFrame(camera_id="cam", seq=seq0 + i, ts_ms=ts0 + i * 200, width=640, height=480)
        t = tf.tracks.add(track_id=track_id, confidence=0.9, bbox_xyxy=m.BoxXYXY(x1=70, y1=100, x2=130, y2=400))
        t.appearance.extend([0.6, 0.8])
        out.append(tf)
    return out


def _empty(seq0: int, ts0: int, n: int, end: bool = False) -> list[m.TrackedFrame]:
    return [m.TrackedFrame(camera_id="cam", seq=seq0 + i, ts_ms=ts0 + i * 200, width=640, height=480,
                           end_of_stream=end and i == n - 1) for i in range(n)]


def _rows(storage) -> dict[int, tuple]:
    s = track_summaries.c
    return {int(r[0]): (json.loads(r[1]), r[2] is not None, int(r[3]))
            for r in storage._rows(sa.select(s.track_id, s.zones, s.appearance, s.first_ts_ms))}


def test_a_replay_rederives_the_summaries_zones_and_keeps_their_appearance(storage) -> None:
    from storelens.stages.analytics import derive
    from storelens.storage.replay import replay

    # track 1 straddles the hour edge at T0 + HOUR, track 2 is wholly after it
    frames = (_walk(0, T0 + HOUR - 10_000, 100, 1) + _empty(100, T0 + HOUR + 10_000, 5)
              + _walk(105, T0 + HOUR + 11_000, 50, 2) + _empty(155, T0 + HOUR + 21_000, 60, end=True))
    live = _zone_site((0, 200))  # the person stands in the shelf
    storage.write_batch(tracked_frames=frames)
    storage.write_records(derive(live, frames))
    before = _rows(storage)
    assert {t: [z[0] for z in v[0]] for t, v in before.items()} == {1: ["shelf"], 2: ["shelf"]}
    assert all(v[1] for v in before.values())  # live: with their appearance

    moved = _zone_site((300, 400))  # an admin moves the shelf away from where the person stands
    [res] = replay(moved, storage, start_ms=T0 + HOUR)
    after = _rows(storage)
    assert after[2][0] == [] and after[2][1]  # zones re-derived, appearance kept
    assert res.start_ms == T0 + HOUR and res.counts.get("TrackSummary") == 1  # track 2's; track 1 began before
    assert after[1] == before[1]  # seen in part by the replay: its stored summary stays whole
    [res] = replay(moved, storage)  # the whole stored history: track 1 too
    after = _rows(storage)
    assert after[1][0] == [] and after[1][1] and after[1][2] == T0 + HOUR - 10_000
    # what the journeys read: no shelf any more
    js = jq.journeys(storage, moved.journeys, 0, T0 + 2 * HOUR)
    assert [j.nodes for j in js] == [("cam",), ("cam",)]


# -- 4. journeys.links name cameras of the site ----------------------------------------------------------------

def test_journey_links_must_name_cameras_of_the_site(tmp_path) -> None:
    site = {"store": {"id": "s"}, "cameras": [{"id": "cam-A", "source": "/tmp/a.mp4"},
                                              {"id": "cam-B", "source": "/tmp/b.mp4"}]}
    assert parse_config({**site, "journeys": {"links": [{"from": "cam-A", "to": "cam-B"}]}}).journeys.links
    with pytest.raises(ConfigError, match=r"journeys\.links\.0\.to: no such camera 'camb'"):
        parse_config({**site, "journeys": {"links": [{"from": "cam-A", "to": "camb"}]}})
    with pytest.raises(ConfigError, match=r"journeys\.links\.1\.from: no such camera 'cam-C'"):
        parse_config({**site, "journeys": {"links": [{"from": "cam-A", "to": "cam-A"},
                                                     {"from": "cam-C", "to": "cam-A"}]}})
    # a CLI run on one clip replaces the cameras: the links that name them go with them
    import yaml

    from storelens.cli import single_source_config

    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({**site, "journeys": {"links": [{"from": "cam-A", "to": "cam-B"}],
                                                         "min_similarity": 0.7}}))
    cfg = single_source_config(str(tmp_path / "clip.mp4"), [], str(path))
    assert [c.id for c in cfg.cameras] == ["cam"] and cfg.journeys.links == [] and cfg.journeys.min_similarity == 0.7
