"""Review of the merged batch 34 (b): each fix with a test that fails on the code before it.

1. Floor points that determine no homography, refused since the batch, were refused in a site version saved before
   it too (``with_site_update``): the API's site refresh raised at start and at every check (``GET /v1/site``
   answered version 0, the site file's cameras only, every edit 409), ingest, analytics and retention logged "site
   version not applied" and dropped the cameras, lines and zones the API had added. A stored version now loads
   without that camera's ``floor`` (a warning names it, once); the site file and API edits still refuse such points.
2. With exactly 4 point pairs the rank check of the floor homography looked at the wrong singular value: three of
   four points on one line were accepted, as were three floor points on one line whose image points are not (the
   homography then maps the image onto a line). Now the DLT system must have rank 8 and the homography be regular.
3. A ``/dev/...`` camera a release before read as a file (kept stream ``ended`` at a ``position``), now live: with
   another ``target_fps`` its stream "stayed ended" (its marker only) and the camera never streamed again. Its
   file state is ignored: a new live stream starts, numbered above the file's numbers.
"""
from __future__ import annotations

import json
import logging
import threading

import pytest

from storelens import cli
from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import CameraConfig, parse_config, with_site_update
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.heatmap import fit_homography
from storelens.errors import ConfigError
from storelens.runtime.ingest import CameraSupervisor, StreamStart, stream_id
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage import site as sq
from test_ingest import _served_live_source

SQUARE = [[[100, 100], [0.0, 0.0]], [[300, 100], [2.0, 0.0]], [[300, 300], [2.0, 2.0]], [[100, 300], [0.0, 2.0]]]
#: three of four on one line, in the image and on the floor (the review's example): accepted before (fix 2)
THREE_ON_A_LINE = [[[0, 0], [0, 0]], [[100, 0], [1, 0]], [[200, 0], [2, 0]], [[0, 100], [0, 1]]]
#: three image points on one line, their floor points not
IMAGE_ONLY = [[[0, 0], [0, 0]], [[100, 0], [1, 0]], [[200, 0], [2, 1]], [[0, 100], [0, 1]]]
#: three floor points on one line, their image points not: accepted before (fix 2)
FLOOR_ONLY = [[[0, 0], [0, 0]], [[100, 0], [1, 0]], [[200, 50], [2, 0]], [[0, 100], [0, 1]]]
#: all four on one line: refused before too (fix 1's stored version)
LINE = [[[0, 0], [0.0, 0.0]], [[100, 0], [1.0, 0.0]], [[200, 0], [2.0, 0.0]], [[300, 0], [3.0, 0.0]]]
PERSPECTIVE = [[[10, 20], [0, 0]], [[600, 40], [5, 0]], [[500, 400], [5, 8]], [[50, 450], [0, 8]]]
#: five pairs, not exactly one homography (least squares)
FIVE_NOISY = [*SQUARE, [[200, 201], [1.0, 1.0]]]


def _site(**camera) -> dict:
    return {"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "/tmp/x.mp4", **camera}]}


# -- 1. a stored version with floor points that determine no homography loads without that floor ----------------

def test_a_stored_version_with_an_undetermined_floor_loads_without_it(tmp_path, caplog) -> None:
    cfg = parse_config(_site())
    old = {"cameras": [{"id": "cam", "source": "/tmp/x.mp4", "floor": {"points": LINE}},
                       {"id": "hall", "source": "/tmp/y.mp4"}], "alert_rules": []}
    with SqlStorage(str(tmp_path / "h.db")) as st:
        assert sq.save_site(st, 0, old, "old", 1000) == 1
        update = sq.site_update(st, "s")
        with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
            in_force = with_site_update(cfg, update)
            with_site_update(cfg, update)  # (warned once)
        assert [(c.id, c.floor) for c in in_force.cameras] == [("cam", None), ("hall", None)]
        warned = [r.getMessage() for r in caplog.records if "determine no homography" in r.getMessage()]
        assert len(warned) == 1 and "site version 1: cameras.0.floor.points" in warned[0], warned
        # storelens run --db, and the analytics stage (the site-config topic) put it in force
        assert [c.id for c in cli._site_in_force(cfg, st, say=False)[0].cameras] == ["cam", "hall"]
        stage = AnalyticsStage(cfg)
        assert stage.handle(topics.SITE_CONFIG, update).info["applied"] and stage.cameras == {"cam", "hall"}
        # the API serves the version and edits on from it
        client = signed_in_client(create_app(cfg, st))
        got = client.get("/v1/site").json()
        assert got["version"] == 1 and [c["id"] for c in got["cameras"]] == ["cam", "hall"], got
        assert got["cameras"][0].get("floor") is None
        zone = {"id": "z", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}
        put = client.put("/v1/site/cameras/hall/zones/z", json=zone)
        assert put.status_code == 200 and put.json()["version"] == 2, put.text
        saved = json.loads(sq.site_update(st, "s").cameras_json)
        assert [(c["id"], c.get("floor")) for c in saved] == [("cam", None), ("hall", None)]
        assert client.get("/v1/cameras/cam/heatmap").status_code == 200
        # new input is still refused, naming the field
        bad = client.put("/v1/site/cameras/cam", json={"id": "cam", "source": "/tmp/x.mp4", "floor": {"points": LINE}})
        assert bad.status_code == 422 and "points" in bad.text and "homography" in bad.text
    with pytest.raises(ConfigError, match="floor: points: they determine no homography"):
        parse_config(_site(floor={"points": LINE}))


# -- 2. three of four on one line (image, floor or both) are refused ---------------------------------------------

@pytest.mark.parametrize("points", [THREE_ON_A_LINE, IMAGE_ONLY, FLOOR_ONLY],
                         ids=["image-and-floor", "image-only", "floor-only"])
def test_three_of_four_floor_points_on_one_line_are_refused(points) -> None:
    with pytest.raises(ConfigError, match=r"cameras\.0\.floor: points: they determine no homography"):
        parse_config(_site(floor={"points": points}))
    with pytest.raises(ValueError, match="degenerate floor points"):
        fit_homography(points)


@pytest.mark.parametrize("points", [SQUARE, PERSPECTIVE, FIVE_NOISY], ids=["square", "perspective", "five-noisy"])
def test_floor_points_that_determine_a_homography_are_taken(points) -> None:
    assert parse_config(_site(floor={"points": points})).cameras[0].floor is not None
    H = fit_homography(points)
    u, v = points[0][0]
    x, y, w = H @ [u, v, 1]
    assert abs(x / w - points[0][1][0]) < 0.05 and abs(y / w - points[0][1][1]) < 0.05


# -- 3. a device read as a file before the upgrade streams live ---------------------------------------------------

def test_a_kept_file_state_of_a_now_live_device_does_not_keep_it_ended() -> None:
    cam = CameraConfig(id="c", source="/dev/v4l/by-id/x", target_fps=10)
    kept = StreamStart(stream_id(cam), 0, 0, ended=True, target_fps=5, position=(120, 600))
    sup = CameraSupervisor(lambda k, v: None, lambda: True, lambda c, e: None, streams={"c": kept})
    first, after, start, old_end, ended, _carries = sup._numbering(cam, 0, 0, False)
    assert not ended and start is not None and not start.ended and start.position is None
    assert first == start.first_seq > 120 and after == 0 and old_end is None  # (the file's marker went out)
    # not ended: the file stream's marker first, the live stream numbered after it
    sup = CameraSupervisor(lambda k, v: None, lambda: True, lambda c, e: None,
                           streams={"c": StreamStart(stream_id(cam), 0, 0, target_fps=5, position=(120, 600))})
    first, _, start, old_end, ended, _ = sup._numbering(cam, 0, 0, False)
    assert not ended and old_end is not None and 120 < old_end < first == start.first_seq


def test_a_live_camera_with_a_kept_ended_file_stream_publishes_frames(tmp_path) -> None:
    url, server = _served_live_source(tmp_path)
    cam = CameraConfig(id="door", source=url, target_fps=10)
    got: list[m.Frame] = []
    done = threading.Event()

    def publish(key, value):
        got.append(m.decode(m.Frame, value))
        if not got[-1].end_of_stream:
            done.set()

    kept = StreamStart(stream_id(cam), 0, 0, ended=True, target_fps=5, position=(120, 600))
    sup = CameraSupervisor(publish, done.is_set, lambda c, e: None, streams={cam.id: kept})
    try:
        sup.apply([cam])
        sup.threads()[cam.id].join(60)
    finally:
        sup.stop(timeout_s=10)
        server.shutdown()
    # before: its end-of-stream marker only, and the camera never streamed
    assert got and not got[0].end_of_stream and got[0].seq > 120, got[:1]
