"""The faster journey queries (issue 10: a whole day under 200 ms) answer exactly as the plain definitions do.

* ``Journey.nodes`` / ``TrackInfo.nodes`` (what :func:`flows` and :func:`top_paths` count now) are the
  collapsed nodes of ``Journey.path`` (the definition), on random tracks with tied visit times, empty zone
  ids, zone-less tracks and linked chains cut at exits;
* :func:`build_journeys` (with its shortcut for tracks linked to nothing) gives the chains of the
  previous implementation, copied here as the reference;
* the batched JSON decoding of the stored summaries gives each summary's :func:`track_info` (SQLite and
  PostgreSQL), and the API's camera / zone filters select what the path-based filter selected;
* :func:`gc_paused` leaves the garbage collector as it found it, errors included.
"""
from __future__ import annotations

import gc
import itertools
from collections import Counter

import numpy as np
import pytest

from storelens.config.behaviour import JourneysConfig
from storelens.contract import messages as m
from storelens.domain.journeys import (
    Journey,
    TrackInfo,
    Visit,
    build_journeys,
    collapse,
    flows,
    journey_id,
    link_tracks,
    top_paths,
    track_info,
)
from storelens.storage import journeys as jq

CAMERAS = ("door", "floor", "back")
ZONES = (("hall", "entrance"), ("fruit", "shelf"), ("till", "queue"), ("", "area"))


def _ref_build_journeys(tracks, links) -> list[Journey]:
    """:func:`build_journeys` as it was before the speed-up (the reference)."""
    tracks = sorted(tracks, key=lambda t: (t.first_ms, t.camera_id, t.track_id))
    by_key = {t.key: t for t in tracks}
    nxt = {ln.a: ln for ln in links if ln.a in by_key and ln.b in by_key}
    has_prev = {ln.b for ln in nxt.values()}
    out = []
    for head in tracks:
        if head.key in has_prev:
            continue
        chain, chain_links = [head], []
        cur = head
        while True:
            ln = nxt.get(cur.key)
            if cur.exited or ln is None:
                out.append(Journey(journey_id(chain[0].camera_id, chain[0].track_id), tuple(chain),
                                   tuple(chain_links)))
                if ln is None:
                    break
                chain, chain_links = [], []
            else:
                chain_links.append(ln)
            cur = by_key[ln.b]
            chain.append(cur)
    return sorted(out, key=lambda j: (min(t.first_ms for t in j.tracks), j.journey_id))


def _ref_nodes(j: Journey) -> tuple[str, ...]:
    return tuple(collapse(s.node for s in j.path))


def _random_tracks(seed: int, n: int = 300) -> list[TrackInfo]:
    """Tracks on three cameras over ten minutes, two appearances (so chains form), whole-second times (ties)."""
    rng = np.random.default_rng(seed)
    looks = [np.eye(4)[0], np.eye(4)[1]]
    out = []
    for i in range(n):
        cam = CAMERAS[int(rng.integers(0, 3))]
        first = int(rng.integers(0, 600)) * 1000
        last = first + int(rng.integers(1, 20)) * 1000
        visits = []
        for _ in range(int(rng.integers(0, 4))):
            z, k = ZONES[int(rng.integers(0, len(ZONES)))]
            t0 = first + int(rng.integers(0, 3)) * 1000  # equal enter times: ordered by zone id
            visits.append(Visit(z, k, t0, t0 + 1000))
        crossings = tuple(("entry", str(rng.choice(["in", "out"])), first + 500)
                          for _ in range(int(rng.integers(0, 2))))
        app = looks[int(rng.integers(0, 2))] + rng.normal(0, 0.05, 4)
        out.append(TrackInfo(cam, i + 1, first, last, app, tuple(visits), crossings))
    return out


CONFIG = JourneysConfig.model_validate({"links": [{"from": "door", "to": "floor", "max_s": 30, "both_ways": True},
                                                  {"from": "floor", "to": "back", "min_s": -5, "max_s": 20}],
                                        "min_similarity": 0.9})


def _shape(js: list[Journey]) -> list:
    return [(j.journey_id, [t.key for t in j.tracks], [(ln.a, ln.b) for ln in j.links]) for j in js]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_journeys_flows_and_paths_equal_the_definitions(seed: int) -> None:
    tracks = _random_tracks(seed)
    links = link_tracks(tracks, CONFIG)
    js = build_journeys(tracks, links)
    assert links and any(len(j.tracks) > 1 for j in js) and any(len(j.tracks) == 1 for j in js)  # both kinds
    assert _shape(js) == _shape(_ref_build_journeys(tracks, links))
    assert _shape(build_journeys(tracks, [])) == _shape(_ref_build_journeys(tracks, []))
    for j in js:
        assert j.nodes == _ref_nodes(j)
        assert (j.first_ms, j.last_ms) == (min(t.first_ms for t in j.tracks), max(t.last_ms for t in j.tracks))
    ref_flows: Counter = Counter()
    for j in js:
        nodes = _ref_nodes(j)
        ref_flows.update(set(zip(nodes, nodes[1:])))  # a journey counts once per step (k-anonymity: people)
    assert flows(js) == ref_flows and sum(ref_flows.values()) > 0
    ref_top = sorted(Counter(_ref_nodes(j) for j in js).items(), key=lambda kv: (-kv[1], kv[0]))[:7]
    assert top_paths(js, 7) == ref_top


def test_a_track_path_orders_tied_visits_by_zone_and_shows_empty_zone_ids_as_the_camera() -> None:
    t = TrackInfo("cam", 1, 0, 9_000, zones=(Visit("b", "area", 1_000, 2_000), Visit("a", "area", 1_000, 3_000),
                                             Visit("", "area", 4_000, 5_000), Visit("", "area", 6_000, 7_000)))
    assert t.nodes == ("cam/a", "cam/b", "cam") == _ref_nodes(Journey("1@cam", (t,), ()))
    assert TrackInfo("cam", 2, 0, 1).nodes == ("cam",)


# -- stored summaries -------------------------------------------------------------------------

@pytest.fixture
def storage(history_store):
    """An empty history store, SQLite and PostgreSQL (``history_store`` in conftest.py)."""
    return history_store


def _summaries(tracks: list[TrackInfo]) -> list[m.TrackSummary]:
    out = []
    for t in tracks:
        s = m.TrackSummary(camera_id=t.camera_id, track_id=t.track_id, first_ts_ms=t.first_ms, last_ts_ms=t.last_ms,
                           n_frames=10, appearance=(t.appearance / np.linalg.norm(t.appearance)).tolist())
        for v in t.zones:
            s.zones.add(zone_id=v.zone_id, zone_kind=v.zone_kind, enter_ts_ms=v.enter_ms, exit_ts_ms=v.exit_ms)
        for ln, d, ts in t.crossings:
            s.crossings.add(line_id=ln, direction=m.DIRECTION_IN if d == "in" else m.DIRECTION_OUT, ts_ms=ts)
        out.append(s)
    return out


def test_stored_summaries_read_back_as_their_track_infos(storage) -> None:
    summaries = _summaries(_random_tracks(4, n=120))
    storage.write_records(summaries)
    storage.write_records([m.CustomerMatch(event_id="e1", camera_id=summaries[3].camera_id,
                                           track_id=summaries[3].track_id, seq=1, ts_ms=summaries[3].first_ts_ms,
                                           customer_id="cust-1", similarity=0.9)])
    storage.write_track_attributes([m.TrackAttributes(
        camera_id=summaries[5].camera_id, track_id=summaries[5].track_id, first_ts_ms=summaries[5].first_ts_ms,
        last_ts_ms=summaries[5].last_ts_ms, gender=m.gender_value("female"), age_years=31.0)])
    got = {t.key: t for t in jq.track_infos(storage, 0, 10_000_000)}
    assert len(got) == len(summaries)
    for i, s in enumerate(summaries):
        customer = "cust-1" if i == 3 else None
        attrs = {"age_years": 31.0, "gender": "female"} if i == 5 else {}
        want = track_info(s, customer, attrs)
        t = got[want.key]
        assert (t.first_ms, t.last_ms, t.zones, t.crossings, t.customer_id, t.attributes) == (
            want.first_ms, want.last_ms, want.zones, want.crossings, want.customer_id, want.attributes)
        assert np.allclose(t.appearance, want.appearance, atol=1e-6)
    assert sum(len(t.zones) for t in got.values()) > 100 and any(t.crossings for t in got.values())
    # without appearance (no links configured): the same tracks, no embeddings
    bare = jq.track_infos(storage, 0, 10_000_000, appearance=False)
    assert [(t.key, t.zones) for t in bare] == [(t.key, t.zones) for t in jq.track_infos(storage, 0, 10_000_000)]
    assert all(t.appearance is None for t in bare)


def test_api_camera_and_zone_filters_select_what_the_path_filter_selected(storage) -> None:
    from storelens.api import create_app
    from storelens.api.testing import signed_in_client
    from storelens.config import parse_config

    poly = [[0, 0], [100, 0], [100, 100], [0, 100]]
    config = parse_config({
        "store": {"id": "s"},
        "cameras": [{"id": c, "source": f"/tmp/{c}.mp4", "zones": [{"id": z, "polygon": poly} for z, _ in ZONES[:3]]}
                    for c in CAMERAS],
        "journeys": CONFIG.model_dump(by_alias=True),
        "privacy": {"k_min": 1},
    })
    storage.write_records(_summaries(_random_tracks(5, n=150)))
    everything = jq.journeys(storage, config.journeys, 0, 10_000_000)
    assert len(everything) > 20
    with signed_in_client(create_app(config, storage)) as client:
        for cam, zone in itertools.product([None, *CAMERAS], [None, "hall", "fruit", "till"]):
            want = [j.journey_id for j in everything
                    if (cam is None or cam in j.cameras)
                    and (zone is None or any(s.zone_id == zone and (cam is None or s.camera_id == cam)
                                             for s in j.path))]
            params = {"start_ms": 0, "end_ms": 10_000_000, "limit": 1000,
                      **({"camera_id": cam} if cam else {}), **({"zone_id": zone} if zone else {})}
            r = client.get("/v1/journeys", params=params)
            assert r.status_code == 200, r.text
            assert [j["journey_id"] for j in r.json()["journeys"]] == want, (cam, zone)
            f = client.get("/v1/flows", params=params).json()
            assert f["journeys"] == len(want)
    assert gc.isenabled()


# -- the garbage collector ------------------------------------------------------------------------

def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with jq.gc_paused():
        assert not gc.isenabled()
        with jq.gc_paused():  # nested: the outer block turns it back on
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with jq.gc_paused():
            raise ValueError("the query failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with jq.gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()
