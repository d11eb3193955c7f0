"""k-anonymity holes a review found in the answers a viewer reads (the real API over a real SQLite history).

1. ``/v1/flows`` counted steps, not journeys: one shopper walking pharmacy <-> baby five times made a link of
   5, past ``privacy.k_min`` 5, although it is one person.
2. ``/v1/flows`` named the withheld links (count null) in ``links`` and ``nodes``: over a range holding one
   visit, that person's whole route.
3. ``/v1/demographics`` over one track withheld its one non-zero cell and showed the zeros around it: the
   withheld cell was the only one left, so it was revealed.
4. ``/v1/interest``: ``attention_s`` was gated on the stoppers, not on the stoppers whose face gave an
   attention share (one person's attention shown); ``attending_emotions`` listed only the expressions that
   occurred, so a key told the expression while its count was withheld.
5. The heatmap's ``walking`` statistics counted flagged mannequins (stationary tracks count nowhere) and gave
   one person's distance and speed over a range with one track.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.journeys import Journey, TrackInfo, Visit, flows
from storelens.storage import EMOTION_KEYS, SqlStorage

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
POLY = [[0, 0], [100, 0], [100, 100], [0, 100]]
SQUARE = [[[100, 100], [0.0, 0.0]], [[300, 100], [2.0, 0.0]], [[300, 300], [2.0, 2.0]], [[100, 300], [0.0, 2.0]]]


@contextlib.contextmanager
def client_for(tmp_path, raw: dict, records: list, attributes: list = ()) -> Iterator:
    """A viewer's client of the app over a SQLite history holding ``records`` and ``attributes``."""
    storage = SqlStorage(str(tmp_path / "h.db"))
    storage.write_records(records)
    if attributes:
        storage.write_track_attributes(list(attributes))
    try:
        with signed_in_client(create_app(parse_config(raw), storage), role="viewer") as client:
            yield client
    finally:
        storage.close()


# -- 1 and 2. /v1/flows: a link counts journeys, and a withheld link is not named ---------------------------

SHOP = {"store": {"id": "s"}, "cameras": [{"id": "floor", "source": "/tmp/b.mp4", "zones": [
    {"id": z, "kind": "shelf", "polygon": POLY} for z in ("pharmacy", "baby", "fruit", "wine", "till")]}]}


def summary(track_id: int, t: int, zones: list[str]) -> m.TrackSummary:
    """One track on ``floor`` through ``zones`` in order, 10 s each."""
    return m.TrackSummary(camera_id="floor", track_id=track_id, first_ts_ms=t, last_ts_ms=t + 10_000 * len(zones),
                          n_frames=100, zones=[m.ZoneVisit(zone_id=z, zone_kind="shelf", enter_ts_ms=t + i * 10_000,
                                                           exit_ts_ms=t + i * 10_000 + 9_000)
                                               for i, z in enumerate(zones)])


def test_flows_count_each_step_once_per_journey() -> None:
    one = TrackInfo("floor", 1, 0, 100_000, zones=tuple(
        Visit(z, "shelf", i * 10_000, i * 10_000 + 9_000) for i, z in enumerate(["pharmacy", "baby"] * 5)))
    assert flows([Journey("1@floor", (one,), ())]) == {("floor/pharmacy", "floor/baby"): 1,
                                                      ("floor/baby", "floor/pharmacy"): 1}


@pytest.fixture
def flows_client(tmp_path) -> Iterator:
    # one shopper back and forth pharmacy <-> baby five times; two hours later 6 went fruit -> till, 1 wine -> till
    records = [summary(1, T0, ["pharmacy", "baby"] * 5)]
    records += [summary(10 + i, T0 + 7_200_000 + i * 120_000, ["wine" if i == 6 else "fruit", "till"])
                for i in range(7)]
    with client_for(tmp_path, SHOP, records) as client:
        yield client


def test_one_shopper_pacing_is_not_a_group(flows_client) -> None:
    r = flows_client.get("/v1/flows", params={"start_ms": T0, "end_ms": T0 + 3_600_000})
    assert r.status_code == 200, r.text
    body = r.json()
    # before: pharmacy -> baby 5 (shown: it passed k_min 5), baby -> pharmacy withheld but named
    assert (body["journeys"], body["links"], body["nodes"], body["suppressed"]) == (1, [], [], True)
    # /v1/paths/top agrees: one person's route is not shown
    paths = flows_client.get("/v1/paths/top", params={"start_ms": T0, "end_ms": T0 + 3_600_000}).json()["paths"]
    assert paths == [{"path": [], "count": None, "share": None, "suppressed": True}]


def test_withheld_flow_links_are_left_out(flows_client) -> None:
    later = {"start_ms": T0 + 7_000_000}
    body = flows_client.get("/v1/flows", params=later).json()
    assert body["journeys"] == 7 and body["suppressed"] is True
    # wine -> till (one person) is neither a link nor a node: the others are as they were
    assert body["links"] == [{"source": "floor/fruit", "target": "floor/till", "count": 6, "suppressed": False}]
    assert body["nodes"] == ["floor/fruit", "floor/till"]
    for n in (1, 4, 6):  # min_count filters the counts shown; it never brings a withheld link back
        assert flows_client.get("/v1/flows", params={**later, "min_count": n}).json() == body
    assert flows_client.get("/v1/flows", params={**later, "min_count": 7}).json()["links"] == []
    # a zone filter that leaves one journey shows nothing of it
    wine = flows_client.get("/v1/flows", params={**later, "zone_id": "wine"}).json()
    assert (wine["journeys"], wine["links"], wine["nodes"]) == (1, [], [])
    empty = flows_client.get("/v1/flows", params={"start_ms": T0 + 30_000_000}).json()
    assert (empty["journeys"], empty["links"], empty["suppressed"]) == (0, [], False)
    spec = flows_client.app.openapi()
    assert "left out" in spec["paths"]["/v1/flows"]["get"]["description"]
    assert "suppressed" in spec["components"]["schemas"]["FlowsOut"]["properties"]


# -- 3. /v1/demographics over fewer than k_min tracks: every cell withheld ----------------------------------


def attributes(track_id: int, gender: str, age: float, emotion: str, **kw) -> m.TrackAttributes:
    return m.TrackAttributes(camera_id="floor", track_id=track_id, first_ts_ms=T0, last_ts_ms=T0 + track_id,
                             last_seq=track_id, n_faces=2, gender=m.gender_value(gender), age_years=age,
                             emotion=m.emotion_value(emotion), **kw)


def test_demographics_of_one_track_reveal_nothing(tmp_path) -> None:
    people = [attributes(1, "male", 40.0, "happy")] + [attributes(i, "female", 30.0, "neutral") for i in range(2, 9)]
    with client_for(tmp_path, SHOP, [], people) as client:
        one = client.get("/v1/demographics", params={"end_ms": T0 + 2}).json()
        # before: gender {female: 0, male: null, unknown: 0}, age {"35-44": null, others 0}: the man of 40
        assert one["tracks"] == 1 and one["suppressed"] is True
        for key in ("age", "gender", "emotion"):
            assert set(one[key].values()) == {None}, (key, one[key])
        # from k_min tracks on the breakdown is shown (with its small cells withheld)
        all_ = client.get("/v1/demographics").json()
        assert all_["tracks"] == 8
        assert all_["gender"] == {"female": None, "male": None, "unknown": 0}  # 7 and 1: secondary suppression
        assert (all_["age"]["25-34"], all_["age"]["0-17"]) == (None, 0)
        empty = client.get("/v1/demographics", params={"start_ms": T0 + 1_000}).json()
        assert (empty["tracks"], empty["suppressed"], set(empty["gender"].values())) == (0, False, {0})


# -- 4. /v1/interest: attention over its contributors, expressions without their names -----------------------


def interest_records(n_stoppers: int) -> list:
    return [m.ZoneEvent(event_id=f"x{i}", camera_id="floor", zone_id="fruit", zone_kind="shelf", track_id=i,
                        kind=m.ZONE_EVENT_EXIT, ts_ms=T0 + i * 1_000, seq=i, dwell_ms=10_000)
            for i in range(1, n_stoppers + 1)]


def interest(client) -> dict:
    r = client.get("/v1/interest", params={"start_ms": 0})
    assert r.status_code == 200, r.text
    return {i["key"]: i for i in r.json()["items"]}["floor/fruit"]


def test_attention_of_one_face_among_six_stoppers_is_withheld(tmp_path) -> None:
    # six stoppers; only track 1 had a usable face pose (an attention share), attending and surprised
    faces = [attributes(1, "female", 30.0, "surprise", attention_share=0.8)]
    with client_for(tmp_path, SHOP, interest_records(6), faces) as client:
        row = interest(client)
        assert (row["passers"], row["stoppers"], row["suppressed"]) == (6, 6, False)
        assert row["attention_s"] is None  # before: 8.0, that one person's attention
        assert row["attending_emotions"] is None  # before: {"surprise": null}: the key told the expression
        props = client.app.openapi()["components"]["schemas"]["InterestOut"]["properties"]
        assert "total over the stoppers" in props["attention_s"]["description"].lower()


def test_attending_emotions_are_listed_over_every_expression(tmp_path) -> None:
    # seven stoppers, all with a face: 5 attending (4 happy, 1 sad), 2 looking away
    faces = [attributes(i, "female", 30.0, "sad" if i == 5 else "happy", attention_share=0.9) for i in range(1, 6)]
    faces += [attributes(i, "male", 50.0, "angry", attention_share=0.1) for i in (6, 7)]
    with client_for(tmp_path, SHOP, interest_records(7), faces) as client:
        row = interest(client)
        assert row["attention_s"] == pytest.approx(5 * 0.9 * 10 + 2 * 0.1 * 10)
        emotions = row["attending_emotions"]
        assert list(emotions) == list(EMOTION_KEYS)  # every key, whether it occurred or not
        assert (emotions["happy"], emotions["sad"]) == (None, None)  # 4 and 1 withheld
        assert all(v == 0 for k, v in emotions.items() if k not in ("happy", "sad"))


# -- 5. heatmap walking: no mannequins, nothing of fewer than k_min tracks ------------------------------------


def walkers(n: int, mannequin: bool) -> list:
    """``n`` people walking 2 m in 4 s at once (41 points each, one a row), and a still mannequin flagged
    stationary (as detect-track flags it once it stood ``stationary.after_s``)."""
    frames = []
    for i in range(41):
        x = 100 + i * 5
        tracks = [m.Track(track_id=k + 1, bbox_xyxy=m.BoxXYXY(x1=x - 20, y1=20 + 40 * k, x2=x + 20, y2=120 + 40 * k))
                  for k in range(n)]
        if mannequin:
            tracks.append(m.Track(track_id=99, bbox_xyxy=m.BoxXYXY(x1=400, y1=100, x2=440, y2=300),
                                  stationary=i >= 10))
        frames.append(m.TrackedFrame(camera_id="cam-1", seq=i, ts_ms=T0 + i * 100, tracks=tracks))
    return frames


def walking(tmp_path, n: int, k_min: int = 5) -> dict:
    raw = {"store": {"id": "s"}, "privacy": {"k_min": k_min},
           "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4", "floor": {"points": SQUARE}}]}
    with client_for(tmp_path, raw, walkers(n, mannequin=True)) as client:
        r = client.get("/v1/cameras/cam-1/heatmap", params={"start_ms": T0, "end_ms": T0 + 60_000})
        assert r.status_code == 200, r.text
        return r.json()["walking"]


def test_walking_leaves_mannequins_out(tmp_path) -> None:
    w = walking(tmp_path, 5)
    # before: 6 tracks, the mannequin's 4 s standing still lowering the mean speed
    assert (w["tracks"], w["distance_m"], w["duration_s"], w["mean_speed_m_s"], w["suppressed"]) == (
        5, 10.0, 20.0, 0.5, False)


def test_walking_of_one_person_is_withheld(tmp_path) -> None:
    w = walking(tmp_path, 1)
    # before: that person's 2 m in 4 s at 0.5 m/s
    assert (w["tracks"], w["distance_m"], w["duration_s"], w["mean_speed_m_s"], w["suppressed"]) == (
        1, None, None, None, True)
    assert (w["covered_end_ms"], w["truncated"]) == (T0 + 60_000, False)


def test_walking_follows_k_min(tmp_path) -> None:
    w = walking(tmp_path, 1, k_min=1)
    assert (w["tracks"], w["distance_m"], w["mean_speed_m_s"], w["suppressed"]) == (1, 2.0, 0.5, False)
