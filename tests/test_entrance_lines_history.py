"""Removing an entrance camera (or its line) through ``/v1/site`` leaves past reports as they were.

A site version leaves the entrance lines of the cameras (lines) it removed out of its ``store.entrance_lines``
only so that it validates (and ``storelens site export`` writes a file that loads). Every reader counts with the
site file's (``entrance_lines_of``): the stored crossings of a removed line keep the meaning the site file gave
them (``/v1/kpis`` visitors and buying units, ``/v1/journeys``' ``entered``, the chain roll-up ``kpis publish``),
and a removed line adds no new crossings, so the live store occupancy counts the lines left. ``site export`` of
such a version says on stderr which lines the file leaves out.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.cli import main
from storelens.config import entrance_lines_of, load_config, parse_config, with_site_update
from storelens.config.site import site_version_document
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import STORE_OCCUPANCY_ID, CrossingEvent
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqliteStorage
from storelens.storage.rollup import kpi_hours
from test_alerts import IN, walk

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC: "last week"


def _line(line_id: str) -> dict:
    return {"id": line_id, "a": [0, 300], "b": [640, 300]}  # moving down the image = in


# door: the front door (and a side line that is no entrance); hall: a department line; back: a back door
SITE = {"store": {"id": "s", "entrance_lines": ["door/entry", "back/gate"]},
        "cameras": [{"id": "door", "source": "/tmp/door.mp4", "lines": [_line("entry"), _line("side")]},
                    {"id": "hall", "source": "/tmp/hall.mp4", "lines": [_line("dept")]},
                    {"id": "back", "source": "/tmp/back.mp4", "lines": [_line("gate")]}],
        "privacy": {"k_min": 1}}

# last week's crossings: (camera, line, track, direction, seconds after T0)
CROSSINGS = [("door", "entry", 1, "in", 60), ("door", "entry", 2, "in", 120), ("door", "side", 5, "in", 130),
             ("hall", "dept", 3, "in", 200), ("back", "gate", 4, "in", 300), ("door", "entry", 1, "out", 900)]
VISITORS = 3  # door/entry 1 and 2, back/gate 4; the side and department lines are no entrance
ENTERED = {"1@door": True, "2@door": True, "5@door": False, "3@hall": False, "4@back": True}


def _fill(storage) -> None:
    storage.write_crossings([CrossingEvent(f"{cam}:{line}:{tid}:{d}", cam, line, tid, d, T0 + s * 1000, k)
                             for k, (cam, line, tid, d, s) in enumerate(CROSSINGS)])
    storage.write_records([  # buying units: a pair through the front door, one through the department line
        m.GroupCrossing(event_id="door:entry:group:1", camera_id="door", line_id="entry", direction=m.DIRECTION_IN,
                        ts_ms=T0 + 60_000, seq=1, last_ts_ms=T0 + 120_000, track_ids=[1, 2]),
        m.GroupCrossing(event_id="hall:dept:group:3", camera_id="hall", line_id="dept", direction=m.DIRECTION_IN,
                        ts_ms=T0 + 200_000, seq=2, last_ts_ms=T0 + 200_000, track_ids=[3])])
    summaries = []
    for tid, cam in sorted({(tid, cam) for cam, _, tid, _, _ in CROSSINGS}):
        mine = [(line, d, s) for c, line, t, d, s in CROSSINGS if (c, t) == (cam, tid)]
        s = m.TrackSummary(camera_id=cam, track_id=tid, first_ts_ms=T0 + (mine[0][2] - 5) * 1000,
                           last_ts_ms=T0 + (mine[-1][2] + 5) * 1000, n_frames=10)
        s.appearance.extend(np.eye(8)[tid])
        for line, d, sec in mine:
            s.crossings.add(line_id=line, direction=m.DIRECTION_IN if d == "in" else m.DIRECTION_OUT,
                            ts_ms=T0 + sec * 1000)
        summaries.append(s)
    storage.write_records(summaries)


def _report(client) -> tuple:
    """Last week's (visitors, buying units, {journey id: entered}, entered of /v1/journeys/1@door)."""
    r = client.get("/v1/kpis", params={"period": "day", "start_ms": T0, "end_ms": T0 + DAY})
    assert r.status_code == 200, r.text
    totals = r.json()["totals"]
    r = client.get("/v1/journeys", params={"start_ms": T0, "end_ms": T0 + DAY})
    assert r.status_code == 200, r.text
    entered = {j["journey_id"]: j["entered"] for j in r.json()["journeys"]}
    return totals["visitors"], totals["buying_units"], entered, client.get("/v1/journeys/1@door").json()["entered"]


def _rollup_visitors(storage) -> int:
    """What ``storelens kpis publish`` sends the chain for that day (it reads the site file)."""
    return sum(h.visitors for h in kpi_hours(parse_config(SITE), storage, T0, T0 + DAY, T0 + DAY))


def test_removing_the_door_camera_through_the_api_leaves_last_weeks_reports_as_they_were(tmp_path) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    try:
        _fill(storage)
        app = create_app(parse_config(SITE), storage)
        admin = signed_in_client(app)
        before = _report(admin)
        assert before == (VISITORS, 1, ENTERED, True) and _rollup_visitors(storage) == VISITORS
        # the front door camera removed, then the back door's line: no entrance line left in the version
        r = admin.delete("/v1/site/cameras/door", params={"base_version": 0})
        assert r.status_code == 200, r.text
        assert app.state.context.config.store.entrance_lines == ["back/gate"]  # the version validates
        assert entrance_lines_of(app.state.context.config) == ["door/entry", "back/gate"]
        assert _report(admin) == before and _rollup_visitors(storage) == VISITORS
        r = admin.delete("/v1/site/cameras/back/lines/gate", params={"base_version": 1})
        assert r.status_code == 200, r.text
        assert app.state.context.config.store.entrance_lines == []
        assert _report(admin) == before
        # a restart on the saved versions reads the same
        fresh = signed_in_client(create_app(parse_config(SITE), storage))
        assert fresh.get("/v1/site").json()["version"] == 2 and _report(fresh) == before
    finally:
        storage.close()


def _update(version: int, edit) -> m.SiteUpdate:
    cams = copy.deepcopy(site_version_document(parse_config(SITE))["cameras"])
    edit(cams)
    return m.SiteUpdate(version=version, store_id="s", cameras_json=json.dumps(cams))


def _without_door(cams: list[dict]) -> None:
    cams[:] = [c for c in cams if c["id"] != "door"]


def test_the_stage_after_a_version_without_the_door_counts_the_back_door_and_never_the_department_line() -> None:
    stage = AnalyticsStage(parse_config(SITE))

    def store_row(frames) -> tuple[int, int, int]:
        rows = [r for tf in frames for r in stage.handle(topics.TRACKS, tf).records
                if isinstance(r, m.OccupancyUpdate) and r.camera_id == STORE_OCCUPANCY_ID]
        return rows[-1].occupancy, rows[-1].total_in, rows[-1].total_out

    assert store_row(walk("door", 1, IN, 0, T0)) == (1, 1, 0)
    assert stage.handle(topics.SITE_CONFIG, _update(1, _without_door)).info["applied"]
    assert stage.entrance_lines == [("door", "entry"), ("back", "gate")]  # the site file's, as every reader's
    # the removed camera's counts are gone with it; the department line's crossing is no store entrance
    assert store_row(walk("hall", 2, IN, 0, T0 + 10_000)) == (0, 0, 0)
    assert store_row(walk("back", 3, IN, 0, T0 + 20_000)) == (1, 1, 0)
    # the door camera back: its line counts again
    assert stage.handle(topics.SITE_CONFIG, _update(2, lambda cams: None)).info["applied"]
    assert store_row(walk("door", 4, IN, 100, T0 + 30_000)) == (2, 2, 0)


def export_of_version(tmp_path, capsys, site_doc: dict, update_of, ts_ms: int):
    """``storelens site export`` of a history whose site version 1 is ``update_of(<the site file's config>)`` saved
    at ``ts_ms``; returns the exported file's config (it must load) and what the command wrote to stderr."""
    from storelens.storage import site as sq

    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(site_doc))
    db = tmp_path / "h.db"
    storage = SqliteStorage(str(db))
    try:
        cfg = load_config(site)
        assert sq.save_site(storage, 0, site_version_document(with_site_update(cfg, update_of(cfg))), "test",
                            ts_ms) == 1
    finally:
        storage.close()
    out = tmp_path / "export.yaml"
    assert main(["site", "export", "--config", str(site), "--db", str(db), "--out", str(out)]) == 0
    return load_config(out), capsys.readouterr().err


@pytest.mark.parametrize("edit, left_out", [
    pytest.param(_without_door, ["door/entry"], id="door camera removed"),
    pytest.param(lambda cams: None, [], id="nothing removed"),
])
def test_site_export_of_a_reduced_version_says_which_entrance_lines_the_file_leaves_out(tmp_path, capsys, edit,
                                                                                       left_out) -> None:
    exported, err = export_of_version(tmp_path, capsys, SITE, lambda cfg: _update(1, edit), T0)  # the file loads
    assert exported.store.entrance_lines == [x for x in SITE["store"]["entrance_lines"] if x not in left_out]
    if left_out:
        assert "warning: store.entrance_lines: 'door/entry' left out of the exported file" in err
        assert "site version 1" in err and "does not bring them back" in err
    else:
        assert "warning" not in err
