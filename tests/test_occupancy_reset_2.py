"""The daily occupancy reset, second pass: the store's number over entrance lines and rows older than a reset.

1. The store's occupancy over ``store.entrance_lines`` runs clamped at 0 at each entrance crossing, as each
   camera's own does: with ``occupancy_reset: closing`` the staff who leave after closing are outs of the new day;
   the next day's visitors then count in full (``max(0, ins - outs)`` of the day's counts showed 0 all day). The
   clamped outs live in each entrance camera's state, so a stage rebuilt from the states (the analytics service
   after a restart) and a replay give the same numbers.
2. The API shows a row (a camera's or the store's) older than the latest reset as 0, at its "now" (the wall clock
   for live cameras, else the newest camera time): a camera without a frame since the reset is not yesterday's
   number in ``/v1/occupancy`` and ``/v1/live`` (the stage's alert already counted it 0).
"""
from __future__ import annotations

import datetime as dt
import time

from storelens.api import create_app
from storelens.api.routes.live import counts_snapshot
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import STORE_OCCUPANCY_ID
from storelens.stages.analytics import AnalyticsStage, derive
from storelens.storage import SqlStorage
from test_alerts import IN, OUT, restarted_records, tframe, two_cameras, walk
from test_occupancy_reset import ms
from test_store_occupancy import live as live_state  # noqa: F401 (the module's fixture: no live state, or Redis)

HOURS = {"mon": ["09:00", "20:00"], "tue": ["09:00", "20:00"]}
MON, TUE = "2026-05-04", "2026-05-05"  # Berlin: closing (the reset) Monday 20:00


def people(cam: str, ys: list[int], tracks: range, seq0: int, ts0: int) -> list[m.TrackedFrame]:
    """One after the other, each walking ``ys`` (4 frames, 0.4 s apart) with a 0.4 s gap."""
    return [f for i, t in enumerate(tracks) for f in walk(cam, t, ys, seq0 + 4 * i, ts0 + 2000 * i)]


def site(entrance: list[str], rules=()) -> dict:
    raw = two_cameras(list(rules), entrance)
    raw["store"].update(timezone="Europe/Berlin", opening_hours=HOURS, occupancy_reset="closing")
    return raw


def store_rows(records) -> list[tuple[int, int, int]]:
    return [(r.occupancy, r.total_in, r.total_out) for r in records
            if isinstance(r, m.OccupancyUpdate) and r.camera_id == STORE_OCCUPANCY_ID]


# Monday 18:00: 8 staff come in through c's door (the store: 8); after closing (the reset) they leave (8 outs of
# the new day, the store already 0); Tuesday 09:30 5 visitors come in.
STAFF_IN = people("c", IN, range(1, 9), 0, ms(f"{MON}T18:00:00+02:00"))
STAFF_OUT = people("c", OUT, range(1, 9), 32, ms(f"{MON}T20:30:00+02:00"))
VISITORS = people("c", IN, range(11, 16), 64, ms(f"{TUE}T09:30:00+02:00"))
FRAMES = STAFF_IN + STAFF_OUT + VISITORS
FULL = [{"kind": "store_occupancy", "id": "full", "max": 4, "hold_s": 0, "cooldown_s": 0}]


def test_staff_leaving_after_closing_do_not_hide_the_next_days_visitors() -> None:
    cfg = parse_config(site(["c/door"], FULL))
    stage = AnalyticsStage(cfg)
    records = [r for tf in FRAMES for r in stage.handle(topics.TRACKS, tf).records]
    # the store's number as the camera's own: 8 at closing, 0 after the staff left, 5 the next day
    assert stage.store_totals() == (5, 5, 8) and stage.store_occupancy() == 5
    assert (stage.occupancy["c"].value, stage.occupancy["c"].total_in, stage.occupancy["c"].total_out) == (5, 5, 8)
    rows = store_rows(records)
    assert rows[7] == (8, 8, 0) and rows[8] == (0, 0, 0)  # the evening, the reset (first frame after closing)
    assert rows[-6:] == [(0, 0, 8), (1, 1, 8), (2, 2, 8), (3, 3, 8), (4, 4, 8), (5, 5, 8)]
    # the alert (max 4) reads it: fires in the evening, resolves at the reset, fires again at the 5th visitor
    alerts = [(a.state, a.ts_ms >= ms(f"{TUE}T00:00:00+02:00"), a.value) for a in records if isinstance(a, m.Alert)]
    assert alerts == [("firing", False, 5.0), ("resolved", False, 0.0), ("firing", True, 5.0)]
    # the analytics service (each camera rebuilt from its saved state before each frame) and a replay: the same
    assert store_rows(restarted_records(cfg, FRAMES)) == rows == store_rows(derive(cfg, FRAMES))


def test_two_entrances_clamp_in_time_order() -> None:
    """After the reset, d's door: 2 out (nobody inside: 0), c's: 1 in, d's: 1 out, c's: 2 in -> 2, not
    max(0, 3 in - 3 out) = 0."""
    t = ms(f"{TUE}T10:00:00+02:00")
    frames = ([tframe("c", 0, t - 86_400_000), tframe("d", 0, t - 86_400_000 + 10)]  # Monday: before the reset
              + people("d", OUT, range(1, 3), 1, t) + people("c", IN, range(3, 4), 1, t + 5000)
              + people("d", OUT, range(4, 5), 9, t + 7000) + people("c", IN, range(5, 7), 5, t + 9000))
    cfg = parse_config(site(["c/door", "d/door"]))
    stage = AnalyticsStage(cfg)
    records = [r for tf in frames for r in stage.handle(topics.TRACKS, tf).records]
    assert stage.store_totals() == (2, 3, 3)
    assert [o for o, _, _ in store_rows(records)][-6:] == [0, 0, 1, 0, 1, 2]
    assert store_rows(restarted_records(cfg, frames)) == store_rows(records)


def test_a_state_saved_before_the_clamped_outs() -> None:
    """An entrance camera's state without them (ins 2, outs 5 since the reset) loads; the store is 0 and the next
    visitor is 1 (the running value from 0), not max(0, 3 - 5) = 0."""
    cfg = parse_config(site(["c/door"]))
    stage = AnalyticsStage(cfg)
    t = ms(f"{TUE}T10:00:00+02:00")
    stage.handle(topics.TRACKS, tframe("c", 0, t))
    state = stage.camera_state("c")
    state["counter"]["counts"] = {"door": {"in": 2, "out": 5}}
    state.pop("store_clamped", None)
    stage = AnalyticsStage(cfg)
    stage.load_camera_state("c", state)
    assert stage.store_totals() == (0, 2, 5)
    for tf in walk("c", 1, IN, 1, t + 1000):
        stage.handle(topics.TRACKS, tf)
    assert stage.store_totals() == (1, 3, 5)


# -- the API: rows older than the latest reset ------------------------------------------------------------------

BERLIN = {"timezone": "Europe/Berlin"}  # the default reset: 04:00
SOMEONE = [(1, 320, 100)]  # a stored frame (frames without anyone are not stored)


def row(cam: str, iso: str, occupancy: int, total_in: int, total_out: int = 0) -> m.OccupancyUpdate:
    return m.OccupancyUpdate(camera_id=cam, ts_ms=ms(iso), occupancy=occupancy, total_in=total_in,
                             total_out=total_out)


def shown(app) -> tuple[int, dict, dict]:
    client = signed_in_client(app, role="viewer")
    api = client.get("/v1/occupancy").json()
    cams = {c["camera_id"]: (c["occupancy"], c["total_in"], c["total_out"], c["ts_ms"]) for c in api["cameras"]}
    for cam, got in cams.items():  # one camera's endpoint says the same
        one = client.get(f"/v1/occupancy/{cam}").json()
        assert (one["occupancy"], one["total_in"], one["total_out"], one["ts_ms"]) == got
    return api["occupancy"], cams, counts_snapshot(app.state.context)["store"]


def test_a_camera_without_a_frame_since_the_reset_shows_0(tmp_path) -> None:
    """Files (the embedded mode): "now" is the newest camera time. c restarted this morning and 1 came in; d's last
    frame was yesterday evening (3 inside then)."""
    raw = two_cameras([])
    raw["store"].update(BERLIN)
    cfg = parse_config(raw)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        st.write_records([row("c", f"{MON}T21:00:00+02:00", 2, 2), row("d", f"{MON}T22:00:00+02:00", 3, 3),
                          row("c", f"{TUE}T08:00:00+02:00", 0, 0), row("c", f"{TUE}T08:05:00+02:00", 1, 1)])
        store, cams, live = shown(create_app(cfg, st))
        assert cams == {"c": (1, 1, 0, ms(f"{TUE}T08:05:00+02:00")), "d": (0, 0, 0, ms(f"{TUE}T04:00:00+02:00"))}
        assert store == 1 and live == {"occupancy": 1, "in": 1, "out": 0}
        # before the reset (the newest camera time Monday night) yesterday's rows are today's
        with SqlStorage(str(tmp_path / "h2.db")) as before:
            before.write_records([row("c", f"{MON}T21:00:00+02:00", 2, 2), row("d", f"{MON}T22:00:00+02:00", 3, 3)])
            before.write_tracked_frame(tframe("c", 7, ms(f"{TUE}T03:59:00+02:00"), SOMEONE))
            assert shown(create_app(cfg, before))[0] == 5
            # a stored frame after it (no row since): the newest camera time is past the reset
            before.write_tracked_frame(tframe("c", 8, ms(f"{TUE}T04:00:30+02:00"), SOMEONE))
            store, cams, live = shown(create_app(cfg, before))
            assert store == 0 and {c[:3] for c in cams.values()} == {(0, 0, 0)} and live["occupancy"] == 0


def test_the_store_row_older_than_the_reset_shows_0(tmp_path) -> None:
    """With entrance lines the store's row (``@store``) too."""
    raw = two_cameras([], ["c/door", "d/door"])
    raw["store"].update(BERLIN)
    cfg = parse_config(raw)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        st.write_records([row("d", f"{MON}T22:00:00+02:00", 3, 3),
                          row(STORE_OCCUPANCY_ID, f"{MON}T22:00:00+02:00", 3, 3)])
        assert shown(create_app(cfg, st))[0] == 3
        st.write_tracked_frame(tframe("c", 1, ms(f"{TUE}T09:00:00+02:00"), SOMEONE))
        store, cams, live = shown(create_app(cfg, st))
        assert store == 0 and live == {"occupancy": 0, "in": 0, "out": 0} and cams["d"][:3] == (0, 0, 0)


def test_live_cameras_are_checked_at_the_wall_clock(tmp_path, live_state) -> None:  # noqa: F811
    """Live cameras: "now" is the wall clock (no camera's frame needed). The reset is 2 hours ahead of now, so
    the latest one was 22 hours ago: c's row of an hour ago stands, d's of 23 hours ago is yesterday's."""
    now = int(time.time() * 1000)
    at = dt.datetime.fromtimestamp(now / 1000 + 2 * 3600, dt.timezone.utc).strftime("%H:%M")
    raw = two_cameras([], source_d="rtsp://cam/d")
    raw["cameras"][0]["source"] = "rtsp://cam/c"
    raw["store"]["occupancy_reset"] = at
    cfg = parse_config(raw)
    rows = [m.OccupancyUpdate(camera_id="c", ts_ms=now - 3_600_000, occupancy=2, total_in=4, total_out=2),
            m.OccupancyUpdate(camera_id="d", ts_ms=now - 23 * 3_600_000, occupancy=3, total_in=3)]
    with SqlStorage(str(tmp_path / "h.db")) as st:
        if live_state is None:
            st.write_records(rows)
        else:
            for r in rows:
                live_state.set_occupancy(r)
                live_state.touch_camera(r.camera_id, r.ts_ms)
        store, cams, live = shown(create_app(cfg, st, live_state))
    assert cams["c"][:3] == (2, 4, 2) and cams["d"][:3] == (0, 0, 0)
    assert store == 2 and live == {"occupancy": 2, "in": 4, "out": 2}
