"""``store.entrance_lines`` follow the cameras of a site version, as ``journeys.links`` do.

The entrance lines are set in the site file only (a site version, ``/v1/site`` or ``storelens site import``,
replaces the cameras and alert rules, never the store section). The site file must name existing lines; a
version that removes an entrance camera, or only its line, applies: the entrance line is left out (a warning
names it) and comes back with the camera and line. Entrance lines all left out are ``[]`` ("these lines only",
none left), never ``None`` (which would count every line, a department's too). The readers count with the site
file's list all the same (``entrance_lines_of``: tests/test_entrance_lines_history.py).
"""
from __future__ import annotations

import copy
import json
import logging

import pytest
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import load_config, parse_config, with_site_update
from storelens.config.site import site_document, site_version_document
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import STORE_OCCUPANCY_ID
from storelens.errors import ConfigError
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqliteStorage
from storelens.storage import site as sq
from test_alerts import IN, walk

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def _line(line_id: str) -> dict:
    return {"id": line_id, "a": [0, 300], "b": [640, 300]}  # moving down the image = in


# door: the store's front door (and a side line that is no entrance); hall: a department line; back: a back door
SITE = {"store": {"id": "s", "entrance_lines": ["door/entry", "back/gate"]},
        "cameras": [{"id": "door", "source": "/tmp/door.mp4", "lines": [_line("entry"), _line("side")]},
                    {"id": "hall", "source": "/tmp/hall.mp4", "lines": [_line("dept")]},
                    {"id": "back", "source": "/tmp/back.mp4", "lines": [_line("gate")]}]}


def _cameras(edit=None) -> list[dict]:
    """The site file's cameras as a version holds them, with ``edit(cams)`` applied."""
    cams = copy.deepcopy(site_version_document(parse_config(SITE))["cameras"])
    if edit is not None:
        edit(cams)
    return cams


def _cam(cams: list[dict], cam_id: str) -> dict:
    return next(c for c in cams if c["id"] == cam_id)


def _drop_camera(cam_id):
    return lambda cams: cams.remove(_cam(cams, cam_id))


def _drop_line(cam_id, line_id):
    def edit(cams):
        cam = _cam(cams, cam_id)
        cam["lines"] = [ln for ln in cam["lines"] if ln["id"] != line_id]
    return edit


def _rename_line(cam_id, line_id, new_id):
    def edit(cams):
        next(ln for ln in _cam(cams, cam_id)["lines"] if ln["id"] == line_id)["id"] = new_id
    return edit


def _both(*edits):
    def edit(cams):
        for e in edits:
            e(cams)
    return edit


def _update(version: int, cams: list[dict]) -> m.SiteUpdate:
    return m.SiteUpdate(version=version, store_id="s", cameras_json=json.dumps(cams))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith("store.entrance_lines")]


# -- the site version's entrance lines, table-driven ------------------------------------------------------------

@pytest.mark.parametrize("edit, in_force, left_out", [
    pytest.param(_drop_camera("door"), ["back/gate"], ["door/entry"], id="door camera removed"),
    pytest.param(_drop_line("door", "entry"), ["back/gate"], ["door/entry"], id="only the entrance line removed"),
    pytest.param(_rename_line("door", "entry", "front"), ["back/gate"], ["door/entry"], id="entrance line renamed"),
    pytest.param(_drop_line("door", "side"), ["door/entry", "back/gate"], [], id="a line that is no entrance"),
    pytest.param(_drop_camera("hall"), ["door/entry", "back/gate"], [], id="a camera without entrance"),
    pytest.param(_both(_drop_camera("door"), _drop_line("back", "gate")), [], ["door/entry", "back/gate"],
                 id="every entrance removed"),
])
def test_a_version_leaves_out_the_entrance_lines_it_removed_and_brings_them_back(caplog, edit, in_force,
                                                                                left_out) -> None:
    cfg = parse_config(SITE)
    with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
        new = with_site_update(cfg, _update(2, _cameras(edit)))
    # "these lines only" kept: an empty list, never None (every line, the department's too, an entrance)
    assert new.store.entrance_lines == in_force
    warned = _warnings(caplog)
    if not left_out:
        assert warned == []
    else:
        [msg] = warned
        assert all(repr(x) in msg for x in left_out) and "site version 2" in msg and "comes back" in msg
        assert ("No entrance line is left" in msg and "never every line" in msg) == (in_force == [])
    # a next version that changes something else warns no more (once, when left out) and keeps them out
    caplog.clear()
    other = _cameras(edit)
    other[0]["source"] = "/tmp/moved.mp4"
    with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
        again = with_site_update(new, _update(3, other))
    assert again.store.entrance_lines == in_force and _warnings(caplog) == []
    # the camera and line back: the entrance lines back, in the site file's order
    back = with_site_update(again, _update(4, _cameras()))
    assert back.store.entrance_lines == ["door/entry", "back/gate"]


def test_a_site_without_entrance_lines_keeps_every_line() -> None:
    raw = copy.deepcopy(SITE)
    del raw["store"]["entrance_lines"]
    new = with_site_update(parse_config(raw), _update(2, _cameras(_drop_camera("door"))))
    assert new.store.entrance_lines is None


@pytest.mark.parametrize("entrance, message", [
    (["door/entry", "door/nope"], r"store\.entrance_lines: no such camera line\(s\) \['door/nope'\]"),
    (["gone/entry"], r"store\.entrance_lines: no such camera line\(s\) \['gone/entry'\]"),
])
def test_the_site_file_must_still_name_existing_lines(tmp_path, entrance, message) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({**SITE, "store": {"id": "s", "entrance_lines": entrance}}))
    with pytest.raises(ConfigError, match=r"site\.yaml: .*" + message):
        load_config(path)


def test_the_exported_site_of_a_reduced_version_is_a_valid_site_file() -> None:
    """``storelens site export`` writes the site in force (as journeys.links: the lines left out are not in it):
    the file it writes loads, and with none left it still says "no entrance line" ([]), not every line."""
    new = with_site_update(parse_config(SITE), _update(2, _cameras(_both(_drop_camera("door"),
                                                                         _drop_line("back", "gate")))))
    doc = site_document(new, exclude_defaults=True)
    assert doc["store"]["entrance_lines"] == [] and parse_config(doc).store.entrance_lines == []
    assert set(site_version_document(new)) == {"cameras", "alert_rules"}  # a version never holds the store's


# -- the analytics stage: "these lines only", none left --------------------------------------------------------

def test_the_stage_counts_no_entrance_once_every_entrance_is_removed_and_again_when_back() -> None:
    """With every entrance camera line removed the store's occupancy is 0 (a department line's people are not
    visitors; the stage keeps the site file's entrance lines, which count nothing new); before, the version did not
    apply (ConfigError)."""
    stage = AnalyticsStage(parse_config(SITE))

    def store_row(frames) -> m.OccupancyUpdate:
        rows = [r for tf in frames for r in stage.handle(topics.TRACKS, tf).records
                if isinstance(r, m.OccupancyUpdate) and r.camera_id == STORE_OCCUPANCY_ID]
        return rows[-1]

    no_door = _cameras(_both(_drop_camera("door"), _drop_line("back", "gate")))
    assert stage.handle(topics.SITE_CONFIG, _update(1, no_door)).info["applied"]
    assert stage.entrance_lines == [("door", "entry"), ("back", "gate")]  # the site file's (no counts of them now)
    row = store_row(walk("hall", 1, IN, 0, T0))  # someone crosses the department line: the store row says 0
    assert (row.occupancy, row.total_in, row.total_out) == (0, 0, 0)
    assert stage.handle(topics.SITE_CONFIG, _update(2, _cameras())).info["applied"]
    assert stage.entrance_lines == [("door", "entry"), ("back", "gate")]
    row = store_row(walk("door", 2, IN, 0, T0 + 10_000))
    assert (row.occupancy, row.total_in, row.total_out) == (1, 1, 0)


# -- through the API (SQLite) ----------------------------------------------------------------------------------

def test_the_api_removes_the_door_camera_and_its_entrance_line_comes_back_with_it(tmp_path, caplog) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    admin = signed_in_client(app)
    ctx = app.state.context
    cams = {c["id"]: c for c in admin.get("/v1/site").json()["cameras"]}
    with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
        r = admin.delete("/v1/site/cameras/door", params={"base_version": 0})
    assert r.status_code == 200, r.text
    assert ctx.config.store.entrance_lines == ["back/gate"]
    assert any("'door/entry' left out" in w for w in _warnings(caplog))
    # the back door's line removed too: no entrance left, still "these lines only"
    r = admin.delete("/v1/site/cameras/back/lines/gate", params={"base_version": 1})
    assert r.status_code == 200, r.text
    assert ctx.config.store.entrance_lines == []
    # a restart on the saved versions (the site file's entrance lines, the newest version's cameras) applies it
    storage.close()
    storage = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    admin, ctx = signed_in_client(app), app.state.context
    assert admin.get("/v1/site").json()["version"] == 2 and ctx.config.store.entrance_lines == []
    # the door camera back: its entrance line back; then the back door's line
    r = admin.put("/v1/site/cameras/door", json=cams["door"], params={"base_version": 2})
    assert r.status_code == 200, r.text
    assert ctx.config.store.entrance_lines == ["door/entry"]
    r = admin.put("/v1/site/cameras/back/lines/gate", json=_line("gate"), params={"base_version": 3})
    assert r.status_code == 200, r.text
    assert ctx.config.store.entrance_lines == ["door/entry", "back/gate"]
    assert sq.site_update(storage, "s").version == 4
    storage.close()
