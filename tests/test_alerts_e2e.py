"""Alerts on real footage: a ``camera_occupancy`` rule on TUD-Stadtmitte (MOT16-style GT, 25 fps).

1. On the ground-truth boxes (``derive`` over the GT frames) the rule fires exactly at the frames an
   independent reference computes from the GT counts (first frame where the count has exceeded
   ``max`` continuously for ``hold_s``), and resolves where the reference says.
2. The embedded pipeline (YOLO + tracker + analytics stage -> SQLite ``alerts`` table) fires within
   ``hold_s + TOLERANCE_S`` of every GT firing. The tolerance covers the tracker's confirmation delay
   (bytereid, the default: a track started after the first frame is reported from its second matched
   frame) and short detection misses. ``max`` is the GT count's minimum (5): the
   detector misses the most occluded person of the crowd, so its count is about one below the GT's, and
   the rule the issue suggests (max = GT 75th percentile = 7, i.e. 8 people) never fires on detections:
   that case is checked on the GT only. The stationary filter is off (see :func:`site`).
"""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.alerts import first_fire
from storelens.domain.mot import read_mot
from storelens.paths import asset
from storelens.stages.analytics import derive
from storelens.storage import SqlStorage
from test_alert_webhooks import Server

pytestmark = pytest.mark.slow

VIDEO = asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")
GT = asset("mot", "TUD-Stadtmitte", "gt", "gt.txt")
FPS = 25.0
START_TS_MS = 1_767_225_600_000
HOLD_S = 0.4
TOLERANCE_S = 0.3


def gt_counts() -> tuple[list[m.TrackedFrame], list[int], list[int]]:
    gt = read_mot(GT, evaluated_only=True)
    n = max(gt)
    frames, counts, times = [], [], []
    for f in range(1, n + 1):
        boxes = gt.get(f, [])
        ts = START_TS_MS + round((f - 1) * 1000 / FPS)
        frames.append(m.TrackedFrame(camera_id="cam", seq=f - 1, ts_ms=ts, width=640, height=480, source_frame=f,
                                     tracks=[m.Track(track_id=b.track_id, confidence=1.0, bbox_xyxy=m.BoxXYXY(
                                         x1=b.left, y1=b.top, x2=b.left + b.width, y2=b.top + b.height))
                                         for b in boxes]))
        counts.append(len(boxes))
        times.append(ts)
    return frames, counts, times


def reference(times: list[int], counts: list[int], max_: int, hold_ms: int) -> list[tuple[int, int | None]]:
    """(fire index, resolve index or None) of every alert, cooldown 0, from :func:`first_fire` alone."""
    over = [c > max_ for c in counts]
    out: list[tuple[int, int | None]] = []
    pos = 0
    while True:
        f = first_fire(times[pos:], over[pos:], hold_ms)
        if f is None:
            return out
        f += pos
        r = first_fire(times[f + 1:], [not o for o in over[f + 1:]], hold_ms)
        out.append((f, None if r is None else r + f + 1))
        if r is None:
            return out
        pos = r + f + 2


def site(max_: int, db: str = ":memory:") -> dict:
    # No stationary filter: a man in TUD-Stadtmitte stands still long enough (with a new track id after an
    # occlusion) to be taken for a mannequin, and camera_occupancy excludes stationary tracks.
    return {"store": {"id": "alerts"}, "faces": {"enabled": False}, "storage": {"path": db},
            "stationary": {"enabled": False},
            "cameras": [{"id": "cam", "source": str(VIDEO), "start_ts_ms": START_TS_MS}],
            "alerts": {"rules": [{"kind": "camera_occupancy", "id": "crowd", "camera": "cam", "max": max_,
                                  "hold_s": HOLD_S, "cooldown_s": 0}]}}


@pytest.mark.parametrize("pick", ["p75", "min"])
def test_fires_exactly_at_the_ground_truth_frames(pick: str) -> None:
    if not GT.exists():
        pytest.skip(f"asset missing: {GT}")
    frames, counts, times = gt_counts()
    max_ = int(np.percentile(counts, 75)) if pick == "p75" else min(counts)
    want = reference(times, counts, max_, round(HOLD_S * 1000))
    assert want, "the rule must fire on the GT"
    if pick == "p75":  # GT: 8 people at indices 5..21 -> fires 10 frames (0.4 s) later, resolves at 32
        assert max_ == 7 and want == [(15, 32)]
    alerts = [r for r in derive(parse_config(site(max_)), frames) if isinstance(r, m.Alert)]
    got_fire = [a.seq for a in alerts if a.state == "firing"]
    got_resolve = [a.seq for a in alerts if a.state == "resolved"]
    assert got_fire == [f for f, _ in want]
    assert got_resolve == [r for _, r in want if r is not None]
    first = next(a for a in alerts if a.state == "firing")
    assert first.value > max_ and first.ts_ms == times[want[0][0]] and first.alert_id == f"crowd:cam:{want[0][0]}"


def test_pipeline_fires_within_the_hold_time_of_the_ground_truth(tmp_path) -> None:
    from storelens.runtime.embedded import EmbeddedPipeline

    if not VIDEO.exists():
        pytest.skip(f"asset missing: {VIDEO}")
    _, counts, times = gt_counts()
    max_ = min(counts)
    want = reference(times, counts, max_, round(HOLD_S * 1000))
    assert len(want) >= 2  # a firing at the start and one after the quiet frames 122..134
    db = tmp_path / "live.db"
    hook = Server([500])  # the first delivery fails once, then is retried
    raw = site(max_, str(db))
    raw["alerts"]["webhooks"] = [{"url": hook.url, "secret": "k", "backoff_s": 0.05}]
    cfg = parse_config(raw)
    try:
        with SqlStorage(str(db)) as storage:
            EmbeddedPipeline(cfg, storage=storage).run()
    finally:
        hook.close()
    with sqlite3.connect(db) as c:
        fired = [r[0] for r in c.execute("SELECT fired_ts_ms FROM alerts WHERE rule_id = 'crowd' ORDER BY 1")]
        assert c.execute("SELECT DISTINCT kind, camera_id, zone_id FROM alerts").fetchall() == [
            ("camera_occupancy", "cam", "")]
    assert fired
    posted = [json.loads(body) for _, body in hook.requests]
    delivered = {(p["alert_id"], p["state"]): p for p in posted}
    assert len(posted) == len(delivered) + 1  # the first one was retried once
    assert sorted(p["fired_ts_ms"] for p in delivered.values() if p["state"] == "firing") == fired
    tol_ms = (HOLD_S + TOLERANCE_S) * 1000
    for f, _ in want:
        nearest = min(fired, key=lambda t: abs(t - times[f]))
        assert abs(nearest - times[f]) <= tol_ms, (f, times[f] - START_TS_MS, [t - START_TS_MS for t in fired])


# -- store occupancy over two cameras, frozen camera (issue 12 item 5) -----------------------------

CAMPUS_VIDEO = asset("mot", "TUD-Campus", "TUD-Campus.mp4")
CAMPUS_GT = asset("mot", "TUD-Campus", "gt", "gt.txt")
#: A vertical door line per camera (x of the line): walking right is ``in`` (A at the bottom, B at the top).
DOOR_X = {"stadtmitte": 400, "campus": 320}
STORE_MAX = 4


def gt_frames(cam: str, gt_path) -> list[m.TrackedFrame]:
    gt = read_mot(gt_path, evaluated_only=True)
    return [m.TrackedFrame(camera_id=cam, seq=f - 1, ts_ms=START_TS_MS + round((f - 1) * 1000 / FPS), width=640,
                           height=480, source_frame=f,
                           tracks=[m.Track(track_id=b.track_id, confidence=1.0, bbox_xyxy=m.BoxXYXY(
                               x1=b.left, y1=b.top, x2=b.left + b.width, y2=b.top + b.height)) for b in gt.get(f, [])])
            for f in range(1, max(gt) + 1)]


def gt_store_occupancy(frames: list[m.TrackedFrame]) -> list[int]:
    """Reference, independent of the line counter: a GT track's box centre changing side of the door's x is a
    crossing; each camera's occupancy is ins minus outs (never below 0); the store's is their sum, per frame."""
    side: dict[tuple[str, int], bool] = {}
    occ = {cam: 0 for cam in DOOR_X}
    out = []
    for tf in frames:
        for t in tf.tracks:
            right = (t.bbox_xyxy.x1 + t.bbox_xyxy.x2) / 2 > DOOR_X[tf.camera_id]
            key = (tf.camera_id, t.track_id)
            if key in side and side[key] != right:
                occ[tf.camera_id] = occ[tf.camera_id] + 1 if right else max(0, occ[tf.camera_id] - 1)
            side[key] = right
        out.append(sum(occ.values()))
    return out


def store_site(db: str = ":memory:", rules: list | None = None, sources: dict | None = None) -> dict:
    sources = sources or {"stadtmitte": str(VIDEO), "campus": str(CAMPUS_VIDEO)}
    return {"store": {"id": "two-doors"}, "faces": {"enabled": False}, "storage": {"path": db},
            "stationary": {"enabled": False},
            "cameras": [{"id": cam, "source": src, "start_ts_ms": START_TS_MS,
                         "lines": [{"id": "door", "a": [DOOR_X[cam], 479], "b": [DOOR_X[cam], 0]}]}
                        for cam, src in sources.items()],
            "alerts": {"rules": rules if rules is not None else [
                {"kind": "store_occupancy", "id": "full", "max": STORE_MAX, "hold_s": HOLD_S, "cooldown_s": 0}]}}


def test_store_occupancy_fires_where_the_ground_truth_exceeds_the_limit() -> None:
    """Two cameras (TUD-Stadtmitte, TUD-Campus), a door line on each; neither camera alone ever has more than
    4 people in, together they reach 6: the store rule (max 4) fires within the hold time of the frame at which
    the GT store occupancy has exceeded 4 for ``hold_s``, and resolves likewise."""
    if not (GT.exists() and CAMPUS_GT.exists()):
        pytest.skip("asset missing: TUD GT")
    frames = sorted(gt_frames("stadtmitte", GT) + gt_frames("campus", CAMPUS_GT), key=lambda f: (f.ts_ms, f.camera_id))
    occ = gt_store_occupancy(frames)
    per_cam = {cam: max(gt_store_occupancy([f for f in frames if f.camera_id == cam])) for cam in DOOR_X}
    assert max(occ) > STORE_MAX and all(v <= STORE_MAX for v in per_cam.values()), (max(occ), per_cam)
    times = [f.ts_ms for f in frames]
    want = reference(times, occ, STORE_MAX, round(HOLD_S * 1000))
    assert len(want) == 1 and want[0][1] is not None
    alerts = [r for r in derive(parse_config(store_site()), frames) if isinstance(r, m.Alert)]
    assert [a.state for a in alerts] == ["firing", "resolved"]
    fired, resolved = alerts
    hold_ms = HOLD_S * 1000
    assert abs(fired.ts_ms - times[want[0][0]]) <= hold_ms, (fired.ts_ms - START_TS_MS, times[want[0][0]] - START_TS_MS)
    assert abs(resolved.ts_ms - times[want[0][1]]) <= hold_ms
    assert fired.value > STORE_MAX and fired.camera_id == "" and fired.alert_id == f"full:two-doors:{fired.ts_ms}"


def frozen_clip(tmp_path, first: int = 20, last: int = 50):
    """TUD-Campus re-encoded as Motion-JPEG (each frame stands alone, so a repeated picture decodes identically)
    with decoded frames ``first..last`` (0-based) all replaced by frame ``first``: a camera frozen for 31 frames."""
    import cv2

    cap = cv2.VideoCapture(str(CAMPUS_VIDEO))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    path = tmp_path / "campus_frozen.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (frames[0].shape[1], frames[0].shape[0]))
    for i, img in enumerate(frames):
        w.write(frames[first] if first <= i <= last else img)
    w.release()
    return path, len(frames)


def test_camera_frozen_on_a_clip_with_repeated_frames(tmp_path) -> None:
    """The ingest's digests (real decode of a real clip) are equal exactly over the repeated frames; the embedded
    pipeline (YOLO + tracker; detect-track passes the digest on) fires ``camera_frozen`` at the frame where the
    picture has been the same for ``after_s`` and resolves at the first new picture."""
    from storelens.backends.video import camera_frames
    from storelens.runtime.embedded import EmbeddedPipeline

    if not CAMPUS_VIDEO.exists():
        pytest.skip(f"asset missing: {CAMPUS_VIDEO}")
    clip, n = frozen_clip(tmp_path)
    db = tmp_path / "frozen.db"
    rules = [{"kind": "camera_frozen", "id": "frozen", "camera": "campus", "after_s": 0.4, "cooldown_s": 0},
             {"kind": "camera_frozen", "id": "never", "camera": "campus", "after_s": 1.3}]
    cfg = parse_config(store_site(str(db), rules, {"campus": str(clip)}))
    digests = [f.image_digest for f in camera_frames(cfg.cameras[0]) if not f.end_of_stream]
    assert len(digests) == n and all(len(d) == 8 for d in digests)
    same = [i for i in range(1, n) if digests[i] == digests[i - 1]]
    assert same == list(range(21, 51))  # exactly the repeats; every real frame differs from the one before
    with SqlStorage(str(db)) as storage:
        EmbeddedPipeline(cfg, storage=storage).run()
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT alert_id, kind, camera_id, state, fired_seq, fired_ts_ms, cleared_ts_ms FROM alerts"
                         ).fetchall()
    # frozen from frame 20 (800 ms); 0.4 s later = frame 30; the new picture at frame 51 clears it
    assert rows == [("frozen:campus:30", "camera_frozen", "campus", "resolved", 30, START_TS_MS + 1200,
                     START_TS_MS + 2040)]
