"""Journeys follow-ups (review of the merged batch):

* ``journeys.links`` naming a camera the site does not have is an error of the site FILE only: a site version
  (an admin removing a camera through ``/v1/site``, or a version saved by an earlier release) replaces the
  cameras, never the links, so a link of a removed camera is left out (logged) and comes back with the camera;
* a track summary ending before the stored one (``last_seq``) never replaces it: a replay that sees a track
  only until the end of its range (``bytereid`` ``fps: 5`` re-finds up to 24 s later) or a first part
  redelivered late keeps the whole stored track, on SQLite and PostgreSQL.
"""
from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import load_config, parse_config, with_site_update
from storelens.config.site import site_file_override, site_version_document
from storelens.contract import messages as m
from storelens.errors import ConfigError
from storelens.storage import SqliteStorage
from storelens.storage import site as sq
from storelens.storage.schema import track_summaries
from test_journey_review_fixes import _empty, _walk  # the same standing person and empty frames

HOUR = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC

SITE = {"store": {"id": "s"},
        "cameras": [{"id": "a", "source": "/tmp/a.mp4"}, {"id": "b", "source": "/tmp/b.mp4"},
                    {"id": "c", "source": "/tmp/c.mp4"}],
        "journeys": {"links": [{"from": "a", "to": "b", "max_s": 30}, {"from": "a", "to": "c", "max_s": 20}]}}


def _links(cfg) -> list[tuple[str, str]]:
    return [(ln.source, ln.target) for ln in cfg.journeys.links]


# -- 1. a site version without a linked camera applies ----------------------------------------------------------

def test_a_site_file_naming_no_such_camera_still_fails(tmp_path) -> None:
    path = tmp_path / "site.yaml"
    links = [{"from": "a", "to": "b"}, {"from": "a", "to": "x"}]
    path.write_text(yaml.safe_dump({**SITE, "journeys": {"links": links}}))
    with pytest.raises(ConfigError, match=r"site\.yaml: .*journeys\.links\.1\.to: no such camera 'x'"):
        load_config(path)


def test_a_version_without_a_linked_camera_applies_and_leaves_the_link_out(caplog) -> None:
    cfg = parse_config(SITE)
    cams = site_version_document(cfg)["cameras"]
    # a version saved (e.g. by the previous release) after an admin removed camera b
    old = m.SiteUpdate(version=3, store_id="s", cameras_json=json.dumps([c for c in cams if c["id"] != "b"]))
    with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
        new = with_site_update(cfg, old)
    assert [c.id for c in new.cameras] == ["a", "c"] and _links(new) == [("a", "c")]
    assert any("'a' to 'b' is left out" in r.getMessage() and "'b'" in r.getMessage() for r in caplog.records)
    # the service that starts with it says the file's cameras are overridden (it did not, the version was invalid)
    assert "differ from site version 3" in (site_file_override(cfg, old) or "")
    # a later version bringing b back brings its link back
    back = with_site_update(new, m.SiteUpdate(version=4, store_id="s", cameras_json=json.dumps(cams)))
    assert _links(back) == [("a", "b"), ("a", "c")]


def test_the_api_removes_a_linked_camera_and_adds_it_back(tmp_path) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    admin = signed_in_client(app)
    cam_b = next(c for c in admin.get("/v1/site").json()["cameras"] if c["id"] == "b")
    r = admin.delete("/v1/site/cameras/b", params={"base_version": 0})
    assert r.status_code == 200, r.text
    ctx = app.state.context
    assert [c.id for c in ctx.config.cameras] == ["a", "c"] and _links(ctx.config) == [("a", "c")]
    # other edits go on
    r = admin.put("/v1/site/cameras/c", json={"id": "c", "source": "/tmp/c2.mp4"}, params={"base_version": 1})
    assert r.status_code == 200, r.text
    r = admin.put("/v1/site/cameras/b", json=cam_b, params={"base_version": 2})
    assert r.status_code == 200, r.text
    assert _links(ctx.config) == [("a", "b"), ("a", "c")]
    storage.close()


def test_the_api_starts_on_a_saved_version_without_a_linked_camera(tmp_path) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    cfg = parse_config(SITE)
    doc = site_version_document(cfg)
    assert sq.save_site(storage, 0, {**doc, "cameras": [c for c in doc["cameras"] if c["id"] != "b"]}, "admin",
                        T0) == 1
    app = create_app(cfg, storage)
    admin = signed_in_client(app)
    assert [c["id"] for c in admin.get("/v1/site").json()["cameras"]] == ["a", "c"]
    r = admin.put("/v1/site/cameras/c", json={"id": "c", "source": "/tmp/c2.mp4"}, params={"base_version": 1})
    assert r.status_code == 200, r.text
    assert _links(app.state.context.config) == [("a", "c")]
    storage.close()


# -- 2. a shorter summary never replaces the stored one ---------------------------------------------------------

@pytest.fixture
def storage(history_store):
    """An empty history store, SQLite and PostgreSQL (``history_store`` in conftest.py)."""
    return history_store


def _site(zone_x: tuple[int, int]):
    x0, x1 = zone_x
    return parse_config({
        "store": {"id": "s"}, "tracker": {"fps": 5},  # the tracker re-finds a track up to 24 s later
        "cameras": [{"id": "cam", "source": "/tmp/x.mp4",
                     "zones": [{"id": "shelf", "kind": "shelf", "polygon": [[x0, 0], [x1, 0], [x1, 480], [x0, 480]]}]}],
    })


def _row(storage) -> tuple:
    s = track_summaries.c
    [row] = storage._rows(sa.select(s.first_ts_ms, s.last_ts_ms, s.last_seq, s.n_frames, s.zones,
                                    s.appearance.is_not(None)).where(s.track_id == 1))
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]), [z[0] for z in json.loads(row[4])], bool(row[5]))


def test_a_replay_that_sees_a_track_in_part_keeps_the_whole_stored_summary(storage) -> None:
    from storelens.stages.analytics import derive
    from storelens.storage.replay import close_delay_ms, replay

    live = _site((0, 200))
    assert close_delay_ms(live, live.cameras[0]) < 18_000  # the replay of the first hour stops before the re-find
    # track 1: seen until 5 s before the hour edge, re-found 23 s later (after the replay's frames)
    frames = (_walk(0, T0 + HOUR - 15_000, 50, 1) + _empty(50, T0 + HOUR - 5_000, 115)
              + _walk(165, T0 + HOUR + 18_000, 50, 1) + _empty(215, T0 + HOUR + 28_000, 60, end=True))
    storage.write_batch(tracked_frames=frames)
    records = derive(live, frames)
    parts = [r for r in records if isinstance(r, m.TrackSummary)]
    assert [p.last_seq for p in parts] == [49, 214]  # the first part, then the whole track
    storage.write_records(records)
    whole = _row(storage)
    assert whole == (T0 + HOUR - 15_000, T0 + HOUR + 18_000 + 49 * 200, 214, 100, ["shelf", "shelf"], True)

    assert replay(live, storage, start_ms=T0, end_ms=T0 + HOUR)[0].counts.get("TrackSummary") == 1  # the first part
    assert _row(storage) == whole
    replay(live, storage, start_ms=T0 + HOUR)  # the next hour: the track was on before it, kept as stored
    assert _row(storage) == whole
    # a late (redelivered) first part, alone or in a batch after the whole one: the whole one stays
    storage.write_records([parts[0]])
    storage.write_records([parts[1], parts[0]])
    assert _row(storage) == whole
    # a replay of the whole track still re-derives its zones (the same last frame)
    replay(_site((300, 400)), storage)
    assert _row(storage) == (*whole[:4], [], True)
