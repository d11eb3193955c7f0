"""Two older known problems: a store's emptied window in the chain, and zones' lost wait following the tracker.

1. A store whose publication window holds no hour at all (its new calendar closes it for the whole
   window) published nothing, so the chain kept the window's old hours and added them up forever: the
   vanished-hours rule rode on the hours of the window, and there were none. Now the store publishes the
   window alone (a ``StoreKpiHour`` without an hour, key ``<store>/window``) and the chain deletes the
   store's hours in it. The path is the real one: the Berlin store of tests/test_chain_rollup.py (the
   pipeline on CAVIAR footage plus sales), its ``KpiPublisher`` over its history, the chain's
   ``ChainRollupStage`` and history sink, in SQLite and PostgreSQL.
2. ``zones.lost_after_ms`` was a fixed 2400 ms whatever ``tracker.track_buffer`` / ``tracker.fps`` said, so
   with a longer buffer a visit was split while the tracker still held the hidden person. Unset, it now
   follows the tracker's re-find window; a set value wins.
"""
from __future__ import annotations


import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.rollup import hour_key
from storelens.stages.analytics import derive
from storelens.stages.rollup import ChainRollupStage, check_hour
from storelens.storage import open_storage
from storelens.storage.rollup import hour_rows
from storelens.errors import DecodeError
from test_chain_rollup import CHAIN, DAY, local_ms, roll_into, stores  # noqa: F401 (stores: the module's fixture)
from test_chain_window import BERLIN, chain_hours, publisher

# -- 1. an emptied window leaves the chain ------------------------------------------------------------


def test_a_store_closed_for_its_whole_window_leaves_no_hour_in_the_chain(stores, history_store) -> None:  # noqa: F811
    chain = history_store
    storages = {s: open_storage(config.storage) for s, (_, config) in stores.items()}
    try:
        calendars: dict[str, dict] = {s: {} for s in stores}
        sent: dict[str, list] = {s: [] for s in stores}
        pubs = {s: publisher(config, storages[s], calendars[s], sent[s]) for s, (_, config) in stores.items()}
        for s, pub in pubs.items():  # both stores open 09:00-20:00 on Saturday, the window (24 h) that day
            assert pub.run() == 11
            roll_into(chain, [h for _, h in sent[s]])
        nyc_before = chain_hours(chain, "nyc-01")
        assert set(chain_hours(chain, "berlin-01")) == {local_ms(BERLIN, f"{h:02d}:00") for h in range(9, 20)}
        assert sum(chain_hours(chain, "berlin-01").values()) > 0 and len(nyc_before) == 11

        # Berlin now opens on Sundays only: its window (the Saturday) holds no hour at all
        _, config = stores["berlin-01"]
        store = config.store.model_copy(update={"opening_hours": {"sun": ("10:00", "18:00")}})
        calendars["berlin-01"]["config"] = calendars["berlin-01"]["config"].model_copy(update={"store": store})
        sent["berlin-01"].clear()
        assert pubs["berlin-01"].run() == 1  # the window alone
        [(key, w)] = sent["berlin-01"]
        assert key == b"berlin-01/window" == hour_key(w) and m.window_only(w)
        assert (w.window_end_ms - w.window_start_ms, list(w.window_hour_starts_ms)) == (24 * 3_600_000 + 1, [])
        check_hour(m.decode(m.StoreKpiHour, m.encode(w)))  # what the chain's stage takes
        roll_into(chain, [w])

        assert chain_hours(chain, "berlin-01") == {}
        assert hour_rows(chain, stores=["berlin-01"], from_day=DAY, to_day=DAY, per="day") == []
        assert chain_hours(chain, "nyc-01") == nyc_before  # the other store's hours untouched
        assert pubs["berlin-01"].run() == 0  # not again while the window stays empty

        # a restarted publisher does not know what it sent: it announces the empty window once more, harmlessly
        sent["berlin-01"].clear()
        again = publisher(config, storages["berlin-01"], calendars["berlin-01"], sent["berlin-01"])
        assert again.run() == 1 and m.window_only(sent["berlin-01"][0][1])
        roll_into(chain, [h for _, h in sent["berlin-01"]])
        assert chain_hours(chain, "berlin-01") == {} and chain_hours(chain, "nyc-01") == nyc_before

        # open on Saturday again: the hours come back (and the next empty window would be announced again)
        calendars["berlin-01"]["config"] = calendars["berlin-01"]["config"].model_copy(update={"store": config.store})
        sent["berlin-01"].clear()
        assert again.run() == 11
        roll_into(chain, [h for _, h in sent["berlin-01"]])
        assert len(chain_hours(chain, "berlin-01")) == 11
    finally:
        for s in storages.values():
            s.close()


def test_the_window_alone_is_checked_and_stores_no_hour() -> None:
    stage = ChainRollupStage(parse_config(CHAIN))
    w = m.StoreKpiHour(store_id="s1", computed_ms=5, window_start_ms=0, window_end_ms=4 * 3_600_000)
    assert [type(r).__name__ for r in stage.handle(topics.STORE_KPIS, w).records] == ["StoreKpiHour"]
    bad = m.StoreKpiHour()
    bad.CopyFrom(w)
    bad.window_hour_starts_ms.append(0)
    with pytest.raises(DecodeError, match="lists hours"):
        check_hour(bad)
    with pytest.raises(DecodeError, match="not a window"):
        check_hour(m.StoreKpiHour(store_id="s1", computed_ms=5))


# -- 2. zones.lost_after_ms follows tracker.track_buffer / tracker.fps ----------------------------------

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]


def site(tracker: dict | None = None, zones: dict | None = None, **zone_kw) -> dict:
    raw = {"store": {"id": "s"}, "zones": zones or {},
           "cameras": [{"id": "c", "source": "c.mp4", "zones": [{"id": "a", "polygon": SQUARE, **zone_kw}]}]}
    if tracker is not None:
        raw["tracker"] = tracker
    return raw


def lost_ms(raw: dict) -> tuple[int | None, int]:
    cfg = parse_config(raw)
    return cfg.zones.lost_after_ms, cfg.cameras[0].zones[0].rules(cfg.zones).lost_ms


@pytest.mark.parametrize("raw, expected", [
    (site(), (2400, 2400)),  # the defaults: 60 frames at 25 fps
    (site({"track_buffer": 60, "fps": 5}), (12000, 12000)),
    (site({"track_buffer": 150}), (6000, 6000)),
    (site({"track_buffer": 30}), (1200, 1200)),  # a shorter buffer: the tracker forgets sooner, so does the zone
    (site({"track_buffer": 10}), (1000, 1000)),  # ... never below exit_after_ms
    (site({"track_buffer": 60, "fps": 5}, exit_after_ms=20_000), (12000, 20000)),  # a zone's longer exit
    (site({"track_buffer": 60, "fps": 5}, {"lost_after_ms": 3000}), (3000, 3000)),  # set: kept
    (site({"track_buffer": 60, "fps": 5}, lost_after_ms=5000), (12000, 5000)),  # set on the zone: kept
    (site({"backend": "deepsort"}), (None, 2400)),  # a tracker without that window: the fixed default
])
def test_lost_after_ms_follows_the_trackers_window_unless_set(raw: dict, expected: tuple) -> None:
    assert lost_ms(raw) == expected


def test_the_followed_value_stays_unset() -> None:
    cfg = parse_config(site({"track_buffer": 60, "fps": 5}))
    assert "lost_after_ms" not in cfg.zones.model_fields_set
    assert "lost_after_ms" not in cfg.model_dump(exclude_unset=True).get("zones", {})
    cam = {**site()["cameras"][0], "target_fps": 5}  # the camera's own rate does not change the window's time
    assert parse_config({**site(), "cameras": [cam]}).zones.lost_after_ms == 2400


def test_a_hidden_person_the_tracker_still_holds_keeps_one_visit() -> None:
    """8 s hidden inside the zone at 5 fps: with ``track_buffer: 60, fps: 5`` the tracker keeps the person 12 s
    under the same id, so the zone keeps the visit; with the defaults (2.4 s) the visit ends lost."""
    box = lambda x: m.BoxXYXY(x1=x - 10, y1=20, x2=x + 10, y2=50)  # noqa: E731 (feet at y 50: inside)
    x = lambda t: 50 if t < 36_000 else 200  # noqa: E731 (inside, then gone out at 36 s)
    frames = [m.TrackedFrame(camera_id="c", seq=i, ts_ms=t, tracks=[] if 20_000 < t < 28_000 else [
        m.Track(track_id=7, bbox_xyxy=box(x(t)))]) for i, t in ((i, i * 200) for i in range(0, 250))]

    def visits(tracker: dict | None) -> list[tuple[str, str]]:
        out = derive(parse_config(site(tracker)), frames)
        return [(m.ZONE_EVENT_KIND_NAMES[e.kind], e.how) for e in out if isinstance(e, m.ZoneEvent)]

    assert visits({"track_buffer": 60, "fps": 5}) == [("enter", ""), ("exit", "other")]
    assert visits(None) == [("enter", ""), ("exit", "lost"), ("enter", ""), ("exit", "other")]
