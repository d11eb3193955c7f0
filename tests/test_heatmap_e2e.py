"""Heatmaps on a real video: the embedded pipeline -> history -> API, and the ``storelens heatmap`` command.

The API's person-seconds are checked against the stored track points: each point counts
for the time to the camera's next frame (capped at ``heatmap.max_gap_ms``), the last frame
for the interval before it -- the rule of :mod:`storelens.domain.heatmap`.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
import sqlalchemy as sa

from storelens.api.testing import signed_in_client
from storelens.api import create_app
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.storage import SqlStorage
from storelens.storage import heatmaps as hm
from storelens.storage.schema import track_points

pytestmark = pytest.mark.slow

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
VIDEO = asset("mot", "TUD-Campus", "TUD-Campus.mp4")
# the 71 frames (~2.8 s) cross a minute boundary after 1.5 s
START = 1_767_225_600_000 + 58_500


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    if not VIDEO.is_file():
        pytest.fail(f"missing test video {VIDEO}: set STORELENS_ASSETS to the shared assets folder")
    tmp = tmp_path_factory.mktemp("heatmap")
    config = parse_config({"store": {"id": "s"}, "heatmap": {"cell_px": 16},
                           "cameras": [{"id": "cam", "source": str(VIDEO), "start_ts_ms": START}]})
    store = SqlStorage(str(tmp / "h.db"))
    frame_ts: dict[int, int] = {}

    def on_tracked(tf: m.TrackedFrame) -> None:
        if not tf.end_of_stream:
            frame_ts[tf.seq] = tf.ts_ms

    pipe = EmbeddedPipeline(config, storage=store, on_tracked=on_tracked)
    result = pipe.run()
    yield config, store, frame_ts, result
    store.close()


def expected_ms(store: SqlStorage, frame_ts: dict[int, int], max_gap_ms: int = 1_000) -> int:
    """Person-milliseconds from the stored track points (non-stationary) and the frame times."""
    times = sorted(frame_ts.values())
    weight = {t: min(n - t, max_gap_ms) for t, n in zip(times, times[1:])}
    weight[times[-1]] = min(times[-1] - times[-2], max_gap_ms)
    tp = track_points.c
    rows = store._rows(sa.select(tp.ts_ms).where(tp.camera_id == "cam", tp.stationary == sa.false()))
    assert rows, "no track points stored"
    return sum(weight[int(r[0])] for r in rows)


def test_api_totals_equal_the_stored_track_time(pipeline_run) -> None:
    config, store, frame_ts, result = pipeline_run
    assert result.frames == len(frame_ts) == 71
    want = expected_ms(store, frame_ts)
    with signed_in_client(create_app(config, store)) as client:
        r = client.get("/v1/cameras/cam/heatmap", params={"start_ms": START - 60_000, "end_ms": START + 120_000})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total_ms"] == want
        assert sum(c["occupancy_ms"] for c in body["cells"]) == want
        assert (body["width"], body["height"], body["cell_px"], body["minutes"]) == (640, 480, 16, 2)
        assert 0 < sum(c["dwell_ms"] for c in body["cells"]) < want  # people walk and stand
        assert body["snapshot_ts_ms"] == START
        # each minute apart adds up to the whole
        first = client.get("/v1/cameras/cam/heatmap", params={"start_ms": START - 60_000, "end_ms": START + 1_500})
        second = client.get("/v1/cameras/cam/heatmap", params={"start_ms": START + 1_500, "end_ms": START + 61_500})
        assert first.json()["total_ms"] > 0 and first.json()["total_ms"] + second.json()["total_ms"] == want
        png = client.get("/v1/cameras/cam/heatmap", params={"start_ms": START - 60_000, "end_ms": START + 120_000,
                                                             "format": "png", "kind": "dwell"})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        img = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (480, 640, 3)


def test_reference_frame_has_the_heads_blurred(pipeline_run) -> None:
    _, store, _, _ = pipeline_run
    snap = hm.snapshot(store, "cam")
    assert snap is not None and snap.ts_ms == START and (snap.width, snap.height) == (640, 480)
    assert snap.blurred >= 1
    frame = cv2.VideoCapture(str(VIDEO)).read()[1]
    img = cv2.imdecode(np.frombuffer(snap.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == frame.shape
    # the snapshot differs from the raw first frame (the blurred heads) in a small part of it only
    diff = np.abs(img.astype(int) - frame.astype(int)).max(axis=2) > 40
    assert 0.001 < diff.mean() < 0.2


def test_cli_heatmap(pipeline_run, tmp_path: pathlib.Path) -> None:
    _, store, frame_ts, _ = pipeline_run
    out, js = tmp_path / "h.png", tmp_path / "h.json"
    proc = subprocess.run([sys.executable, "-m", "storelens.cli", "heatmap", str(VIDEO), "--out", str(out),
                           "--json", str(js), "--cell", "32"], capture_output=True, text=True, timeout=600,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "person-seconds" in proc.stdout
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (480, 640, 3)
    body = json.loads(js.read_text())
    assert (body["cell_px"], body["cols"], body["rows"], body["frames"]) == (32, 20, 15, 71)
    assert sum(c["occupancy_ms"] for c in body["cells"]) == body["total_occupancy_ms"]
    # the same video, the same tracks: the same person-time (the frame times may round differently)
    assert body["total_occupancy_ms"] == pytest.approx(expected_ms(store, frame_ts), rel=0.02)


def test_cli_heatmap_missing_output_folder(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "storelens.cli", "heatmap", str(VIDEO), "--out",
                           str(tmp_path / "nope" / "h.png")], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)
    assert proc.returncode == 2 and "output folder does not exist" in proc.stderr
