"""Fixes of a read-only review of the HTTP API (real SQLite, the real app through its test client).

* ``PUT .../lines/l?rederive=true`` (and ``storelens replay``) read the camera's whole stored history into memory
  (every frame with its track points): the replay now reads it a page of frames at a time
  (:func:`~storelens.storage.replay.iter_stored_frames`), its peak memory does not grow with the history, and what it
  derives is the same as from the whole history at once;
* a camera password in the URL path, a ``;``-parameter or a query key not named like a password reached every
  viewer through ``GET /v1/site`` (:func:`~storelens.config.cameras.redact_source`);
* revoking an API key left the keys it had made working;
* a camera sent back as ``GET /v1/site`` shows it overwrote its credentials with the mask.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

import storelens.storage.replay as rp
from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.storage import SqlStorage

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
HOUR_MS = 3_600_000
ROOT = pathlib.Path(__file__).resolve().parents[1]


# -- 1. the replay reads the history a page at a time -------------------------------------------------------------


def _store(db: str, n: int, step_ms: int, tracks) -> None:
    """``n`` frames of camera ``c`` every ``step_ms`` from :data:`T0`, ``tracks(i)`` the tracks of frame ``i``."""
    with SqlStorage(db) as st:
        for a in range(0, n, 2000):
            st.write_batch(tracked_frames=[m.TrackedFrame(camera_id="c", seq=i, ts_ms=T0 + i * step_ms, width=1920,
                                                          height=1080, tracks=tracks(i))
                                           for i in range(a, min(n, a + 2000))])


def _still(i: int) -> list[m.Track]:
    """Ten people standing about (no crossing, no zone): what a frame holds, not what it derives."""
    return [m.Track(track_id=k, bbox_xyxy=m.BoxXYXY(x1=150.0 * k + i % 7, y1=100.0 + i % 5, x2=150.0 * k + 80 + i % 7,
                                                    y2=300.0 + i % 5)) for k in range(10)]


#: Run in a fresh interpreter (what earlier tests of a pytest worker leave behind, a log handler, a warnings
#: registry, must not be measured): the peak traced memory of replaying each history given, after a warm-up.
_PEAK_SCRIPT = """
import json, logging, sys, tracemalloc
import storelens.storage.replay as rp
from storelens.config import parse_config
from storelens.storage import SqlStorage
logging.disable(logging.INFO)
rp.PAGE_FRAMES = 50
config = parse_config(json.loads(sys.argv[1]))
peaks = []
for db in sys.argv[2:]:
    with SqlStorage(db) as st:
        tracemalloc.start()
        try:
            [res] = rp.replay(config, st)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert res.frames > 0
print(json.dumps(peaks[1:]))
"""


def _peak_replay_bytes(site: dict, *dbs: str) -> list[int]:
    """The peak traced memory of replaying each of ``dbs`` (a fresh process; the first replay, of ``dbs[0]``, a
    warm-up: the analytics' first imports are not the replay's memory)."""
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, json.dumps(site), *dbs], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_replay_peak_memory_does_not_grow_with_the_history(tmp_path) -> None:
    # a frame every 15 s (kept short: the analytics run over every frame), tracks going on across the gaps
    site = {"store": {"id": "s"}, "heatmap": {"enabled": False}, "journeys": {"track_end_after_s": 60},
            "cameras": [{"id": "c", "source": "x.mp4", "lines": [{"id": "l", "a": [0, 900], "b": [1920, 900]}]}]}
    step = 15_000
    dbs = {}
    for hours in (0, 1, 4):  # 0: the warm-up
        dbs[hours] = str(tmp_path / f"h{hours}.db")
        _store(dbs[hours], max(10, hours * HOUR_MS // step), step, _still)
    one, four = _peak_replay_bytes(site, dbs[0], dbs[1], dbs[4])
    # before: every frame of the history at once, 4 h ~ 3.5x 1 h
    assert four < 1.5 * one, (one, four)


def _walkers(i: int) -> list[m.Track]:
    """People walking down across the line at y=600 (one every 40 frames, 60 frames each, two at a time), through
    the zone on the left half; now and then a gap (no tracks)."""
    if i % 500 in range(200, 230):
        return []
    out = []
    for p in range(max(0, (i - 60) // 40 + 1), i // 40 + 1):
        t = i - 40 * p
        x = 200.0 + (p % 5) * 300
        y = 100.0 + 15 * t
        out.append(m.Track(track_id=p + 1, bbox_xyxy=m.BoxXYXY(x1=x, y1=y - 200, x2=x + 80, y2=y), confidence=0.9))
    return out


DERIVED = ["crossings", "count_windows", "zone_events", "zone_stats", "group_crossings", "heatmap_windows",
           "track_summaries", "alerts"]


def _dump(db: str) -> dict[str, list[tuple]]:
    con = sqlite3.connect(db)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in DERIVED}
    finally:
        con.close()


@pytest.mark.parametrize("source", ["x.mp4", "rtsp://10.0.0.5/live"], ids=["file", "live-stopped"])
def test_replay_by_pages_derives_what_the_whole_history_at_once_derives(tmp_path, monkeypatch, source) -> None:
    config = parse_config({"store": {"id": "s"}, "cameras": [{
        "id": "c", "source": source, "lines": [{"id": "l", "a": [0, 600], "b": [1920, 600]}],
        "zones": [{"id": "left", "polygon": [[0, 0], [960, 0], [960, 1080], [0, 1080]]}]}]})
    db = str(tmp_path / "h.db")
    _store(db, 3000, 1500, _walkers)  # 75 min, a frame every 1.5 s: two hours of the replay
    copy = str(tmp_path / "copy.db")
    shutil.copy(db, copy)
    now = T0 + 5 * HOUR_MS  # a live camera with no frame since: stopped, closed at its newest frame
    out = {}
    for name, page, path in (("whole", 10**9, db), ("pages", 97, copy)):
        monkeypatch.setattr(rp, "PAGE_FRAMES", page, raising=False)
        with SqlStorage(path) as st:
            [res] = rp.replay(config, st, now_ms=now)
        out[name] = (res, _dump(path))
    (whole, rows), (pages, rows_pages) = out["whole"], out["pages"]
    assert whole.counts.get("CrossingEvent", 0) > 50 and whole.counts.get("ZoneEvent", 0) > 50, whole.counts
    assert (whole.frames, whole.counts, whole.stopped_at_ms, whole.note) == (
        pages.frames, pages.counts, pages.stopped_at_ms, pages.note)
    assert whole.stopped_at_ms == (T0 + 2999 * 1500 if source.startswith("rtsp") else None)
    assert rows == rows_pages


# -- 2. no camera credential reaches a viewer ----------------------------------------------------------------------

#: (camera source, its secrets): none may be in a viewer's GET /v1/site.
SOURCES = [
    ("rtsp://192.168.1.10:554/user=admin&password=tlJwpbo6&channel=1&stream=0.sdp", ["tlJwpbo6"]),
    ("rtsp://192.168.1.10:554/user=admin_password=tlJwpbo6_channel=1_stream=0.sdp", ["tlJwpbo6"]),
    ("http://192.168.1.12/videostream.cgi?loginuse=admin&loginpas=hunter22", ["hunter22"]),
    ("http://192.168.1.11:88/cgi-bin/CGIStream.cgi?cmd=GetMJStream&usr=admin&pwd=x1yz9", ["x1yz9"]),
    ("rtsp://h/x;password=abc987", ["abc987"]),
    ("rtsp://h/live;pw=q7q7q7?channel=2", ["q7q7q7"]),
    ("http://h/snap?ch=1&passwd=Zz9Zz9&stream_pwd=Yy8Yy8", ["Zz9Zz9", "Yy8Yy8"]),
    ("rtsp://h/p?url=http://x/y&password=ab/cd12", ["ab/cd12", "cd12"]),
    # masked before too
    ("rtsp://admin:S3cretPw@10.0.0.5:554/live?channel=1&password=S3cretPw", ["S3cretPw"]),
    ("rtsp://10.0.0.5/live?token=tok123456&auth=au7654", ["tok123456", "au7654"]),
]


def test_a_viewer_sees_no_camera_credential() -> None:
    app = create_app(parse_config({"store": {"id": "s"}, "cameras": [
        {"id": f"c{i}", "source": source} for i, (source, _) in enumerate(SOURCES)]}), SqlStorage(":memory:"))
    shown = {c["id"]: c["source"] for c in signed_in_client(app, "viewer").get("/v1/site").json()["cameras"]}
    for i, (source, secrets) in enumerate(SOURCES):
        leaked = [s for s in secrets if s in shown[f"c{i}"]]
        assert not leaked, (source, shown[f"c{i}"])
        assert "***" in shown[f"c{i}"] or "@" in source, shown[f"c{i}"]
    # what is not a credential stays: the stream stays told apart
    assert shown["c0"] == "rtsp://192.168.1.10:554/user=***&password=***&channel=1&stream=0.sdp"
    assert shown["c5"] == "rtsp://h/live;pw=***?channel=2"


# -- 3. revoking an API key revokes the keys it made -------------------------------------------------------------


def test_revoking_a_key_revokes_the_keys_it_made_each_audited() -> None:
    app = create_app(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}),
                     SqlStorage(":memory:"))
    admin = signed_in_client(app)
    k1 = admin.post("/v1/api-keys", json={"name": "integration", "role": "admin"}).json()
    as_k1 = TestClient(app, headers={"Authorization": f"Bearer {k1['key']}"})
    k2 = as_k1.post("/v1/api-keys", json={"name": "made-by-k1", "role": "admin"}).json()
    as_k2 = TestClient(app, headers={"Authorization": f"Bearer {k2['key']}"})
    k3 = as_k2.post("/v1/api-keys", json={"name": "made-by-k2", "role": "viewer"}).json()
    other = admin.post("/v1/api-keys", json={"name": "other", "role": "viewer"}).json()
    as_k3 = TestClient(app, headers={"Authorization": f"Bearer {k3['key']}"})
    as_other = TestClient(app, headers={"Authorization": f"Bearer {other['key']}"})
    assert as_k2.get("/v1/users").status_code == 200 and as_k3.get("/v1/site").status_code == 200

    assert admin.delete(f"/v1/api-keys/{k1['key_id']}").status_code == 204
    assert as_k1.get("/v1/users").status_code == 401
    assert as_k2.get("/v1/users").status_code == 401
    assert as_k2.post("/v1/users", json={"username": "eve", "password": "x" * 12, "role": "admin"}).status_code == 401
    assert as_k3.get("/v1/site").status_code == 401
    assert as_other.get("/v1/site").status_code == 200  # not made by k1
    keys = {k["key_id"]: k for k in admin.get("/v1/api-keys").json()["keys"]}
    assert [kid for kid, k in keys.items() if k["revoked_ts_ms"] is not None] == [k1["key_id"], k2["key_id"],
                                                                                   k3["key_id"]]
    entries = admin.get("/v1/audit", params={"action": "api-keys.revoke"}).json()["entries"]
    revoked = {e["target"]: e for e in entries}
    assert set(revoked) == {k1["key_id"], k2["key_id"], k3["key_id"]}
    assert revoked[k2["key_id"]]["detail"]["created_by"] == f"key:{k1['key_id']}"
    assert revoked[k3["key_id"]]["detail"]["created_by"] == f"key:{k2['key_id']}"
    assert "revoked" in revoked[k2["key_id"]]["detail"]["reason"]


# -- 4. a camera sent back as shown keeps its credentials ----------------------------------------------------------


@pytest.mark.parametrize("source", [
    "rtsp://admin:S3cret@10.0.0.5/live?channel=1&password=S3cret",
    "rtsp://10.0.0.5:554/user=admin&password=tlJwpbo6&channel=1&stream=0.sdp",
    "rtsp://admin:${CAM_PW_33}@10.0.0.5/live",
], ids=["userinfo-and-query", "path", "template"])
def test_a_camera_sent_back_as_shown_keeps_its_credentials(monkeypatch, source) -> None:
    monkeypatch.setenv("CAM_PW_33", "Tpl-Secret")
    app = create_app(parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": source},
                                                                     {"id": "till", "source": "till.mp4"}]}),
                     SqlStorage(":memory:"))
    ctx = app.state.context
    before = ctx.config.camera("door").source
    admin = signed_in_client(app)
    cam = next(c for c in admin.get("/v1/site").json()["cameras"] if c["id"] == "door")
    assert cam["source"] != source
    cam["target_fps"] = 5
    r = admin.put("/v1/site/cameras/door", json=cam)
    assert r.status_code == 200, r.text
    assert r.json()["camera"]["source"] == cam["source"]  # the answer shows it as before
    assert ctx.config.camera("door").target_fps == 5
    assert ctx.config.camera("door").source == before  # the credentials in force, as before
    version = ctx.site_version

    # the mask in a source that is not the one shown: refused, nothing saved
    moved = cam["source"].replace("10.0.0.5", "10.0.0.6")  # another host, the mask kept (when shown with one)
    for bad in [moved] * ("***" in moved) + ["rtsp://10.0.0.5/live?password=***"]:
        r = admin.put("/v1/site/cameras/door", json={**cam, "source": bad})
        assert r.status_code == 422 and "cameras.0.source" in r.text and "***" in r.text, r.text
        r = admin.put("/v1/site/cameras/new", json={**cam, "id": "new", "source": bad})
        assert r.status_code == 422, r.text
    assert ctx.site_version == version and ctx.config.camera("door").source == before
    # a new source in full is taken as given
    r = admin.put("/v1/site/cameras/door", json={**cam, "source": "rtsp://admin:N3w@10.0.0.7/live"})
    assert r.status_code == 200 and ctx.config.camera("door").source == "rtsp://admin:N3w@10.0.0.7/live"
