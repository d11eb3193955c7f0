"""``storelens audit`` on real footage with ground truth (issue 11 item 9).

The real pipeline (YOLO + tracker) counts a shop door line on two CAVIAR entrance clips
(EnterExitCrossingPaths1front: 1 in, 1 out; OneLeaveShop1front: 0 in, 1 out, as CAVIAR's
hand counts say) into a SQLite history. The "person" who
tallies the clips is the ground truth: its trajectories replayed through the same line rules
over each clip's time window (``--answers``). The accuracy and the Wilson interval are
checked against a direct computation from the stored crossings and the ground truth.
"""
from __future__ import annotations

import csv
import json
import math
import pathlib

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from test_door_counts import DOOR  # across the shop door, where the detector sees the feet

from storelens.cli import main
from storelens.config import CountingConfig, LineConfig, load_config
from storelens.domain.audit import parse_answers, wilson_interval
from storelens.domain.counting import LineCounter
from storelens.domain.mot import read_mot
from storelens.errors import ConfigError
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.stages.snapshots import HEAD_FRACTION
from storelens.storage import open_storage
from storelens.storage.audit import sample_clips
from storelens.storage.schema import alerts, count_audits, frames

T0 = 1_700_000_000_000
CAMERAS = {
    "eecp": (asset("video", "caviar", "EnterExitCrossingPaths1front", "EnterExitCrossingPaths1front.mp4"),
             asset("video", "caviar", "EnterExitCrossingPaths1front", "gt", "gt.txt"), DOOR),
    "ols": (asset("video", "caviar", "OneLeaveShop1front", "OneLeaveShop1front.mp4"),
            asset("video", "caviar", "OneLeaveShop1front", "gt", "gt.txt"), DOOR),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"id": "audit"}, "faces": {"enabled": False}, "storage": {"path": str(tmp / "history.sqlite")},
        "audit": {"min_accuracy": 0.5, "clip_before_s": 1.5, "clip_after_s": 1.5},
        "cameras": [{"id": cam, "source": str(video), "start_ts_ms": T0, "lines": [line]}
                    for cam, (video, _, line) in CAMERAS.items()]}))
    config = load_config(path)
    storage = open_storage(config.storage)
    try:
        EmbeddedPipeline(config, storage=storage).run()
    finally:
        storage.close()
    return path, config


def _sharpness(img) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def gt_crossings(cam: str) -> list[tuple[int, str]]:
    """``(ts_ms, direction)`` of the ground-truth crossings, timed as the ingest times the frames (25 fps)."""
    _, gt_path, line = CAMERAS[cam]
    gt = read_mot(gt_path, evaluated_only=True)
    counter = LineCounter(cam, [LineConfig.model_validate(line)], CountingConfig())
    out = []
    for f in range(1, max(gt) + 1):
        boxes = gt.get(f, [])
        events = counter.update(seq=f - 1, ts_ms=T0 + round((f - 1) * 40), track_ids=[b.track_id for b in boxes],
                                anchors=[b.anchor for b in boxes], heights=[b.height for b in boxes])
        out += [(e.ts_ms, e.direction) for e in events]
    return out


def gt_answers(config, out: pathlib.Path) -> tuple[list[list], pathlib.Path]:
    """Cut the clips (seed 7, every crossing) and tally each from the ground truth: ``(rows, answers.csv)``."""
    storage = open_storage(config.storage)
    try:
        clips = sample_clips(config, storage, out, n=50, seed=7)
    finally:
        storage.close()
    rows = []
    for c in clips:
        ev = [d for ts, d in gt_crossings(c.camera_id) if c.start_ms <= ts < c.end_ms]
        rows.append([c.clip_id, ev.count("in"), ev.count("out")])
    path = out.parent / "answers.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["clip_id", "in", "out"], *rows])
    return rows, path


def _audit(site_path, out, answers_path, threshold, capsys):
    capsys.readouterr()
    rc = main(["audit", "--config", str(site_path), "--out", str(out), "--seed", "7", "--clips", "50",
               "--answers", str(answers_path), "--min-accuracy", str(threshold), "--json"])
    assert rc == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_accuracy_and_interval_match_a_direct_computation(site, tmp_path, capsys):
    site_path, config = site
    storage = open_storage(config.storage)
    n_events = sum(len(storage.crossings(c, 0, 2**62)) for c in CAMERAS)
    storage.close()
    assert n_events == 3  # the pipeline counts the 3 hand-counted crossings (1 in + 1 out, 1 out)
    out = tmp_path / "clips"
    answers, ans = gt_answers(config, out)
    assert len(answers) == n_events  # fewer crossings than --clips: every one is sampled
    doc = _audit(site_path, out, ans, 0.0, capsys)
    # direct computation: the system's crossings of the clip's line in its window against the GT tally
    storage = open_storage(config.storage)
    with (out / "clips.csv").open() as f:
        clips = list(csv.DictReader(f))
    correct = 0
    sys_in = sys_out = 0
    for c, (_, p_in, p_out) in zip(clips, answers):
        ev = [e for e in storage.crossings(c["camera_id"], int(c["start_ms"]), int(c["end_ms"]))
              if e.line_id == c["line_id"]]
        s_in, s_out = sum(e.direction == "in" for e in ev), sum(e.direction == "out" for e in ev)
        sys_in, sys_out = sys_in + s_in, sys_out + s_out
        correct += (s_in, s_out) == (p_in, p_out)
    n = len(clips)
    z = 1.959963984540054
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert doc["n_clips"] == n and doc["n_correct"] == correct
    assert doc["accuracy"] == pytest.approx(p)
    assert doc["ci_low"] == pytest.approx(max(0, centre - half)) and doc["ci_high"] == pytest.approx(min(1, centre + half))
    assert doc["method"] == "wilson" and (doc["system_in"], doc["system_out"]) == (sys_in, sys_out)
    assert doc["alerted"] is False
    rows = storage._rows(sa.select(count_audits))
    assert len(rows) == 1 and rows[0].n_correct == correct and len(json.loads(rows[0].clips)) == n
    storage.close()
    print(f"audit: {correct}/{n} clips exact, accuracy {p:.3f}, Wilson 95% [{doc['ci_low']:.3f}, {doc['ci_high']:.3f}], "
          f"system {sys_in}/{sys_out}, GT {doc['person_in']}/{doc['person_out']}")
    # the clips: readable video of the window, the sampled crossing inside it
    cap = cv2.VideoCapture(clips[0]["path"])
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert 30 <= n_frames <= 76  # 3 s at 25 fps (less at the start or end of the video)
    # heads blurred in the clip: sharpness of each stored head box against the source frame
    storage = open_storage(config.storage)
    c = clips[0]
    rows = storage._rows(sa.select(frames.c.seq, frames.c.source_frame).where(
        frames.c.camera_id == c["camera_id"], frames.c.ts_ms >= int(c["start_ms"]),
        frames.c.ts_ms < int(c["end_ms"])).order_by(frames.c.seq))
    paths = storage.tracks(c["camera_id"], int(c["start_ms"]), int(c["end_ms"]))
    storage.close()
    clip_cap, src_cap = cv2.VideoCapture(c["path"]), cv2.VideoCapture(str(CAMERAS[c["camera_id"]][0]))
    src_cap.set(cv2.CAP_PROP_POS_FRAMES, rows[0][1] - 1)
    ratios = []
    for seq, _ in rows:
        (ok1, clip_img), (ok2, src_img) = clip_cap.read(), src_cap.read()
        assert ok1 and ok2
        for p in paths:
            for pt in p.points:
                x1, y1, x2, y2 = (int(round(v)) for v in pt.bbox_xyxy)
                if pt.seq == seq and x2 - x1 >= 15 and y1 > 25:  # the clip id is written at the top left
                    sl = (slice(max(0, y1), y1 + int((y2 - y1) * HEAD_FRACTION)), slice(max(0, x1), x2))
                    ratios.append(_sharpness(clip_img[sl]) / max(1e-6, _sharpness(src_img[sl])))
    clip_cap.release()
    src_cap.release()
    assert len(ratios) > 20 and float(np.median(ratios)) < 0.2, sorted(ratios)[-5:]


def test_alert_fires_below_the_threshold_only(site, tmp_path, capsys):
    site_path, config = site
    out = tmp_path / "clips"
    answers, ans = gt_answers(config, out)
    doc = _audit(site_path, out, ans, 0.0, capsys)
    measured = doc["accuracy"]
    storage = open_storage(config.storage)

    def n_alerts() -> int:
        return len(storage._rows(sa.select(alerts).where(alerts.c.kind == "count_accuracy")))

    before = n_alerts()
    below = _audit(site_path, out, ans, max(0.0, measured - 0.01), capsys)
    assert below["alerted"] is False and n_alerts() == before
    if measured < 1.0:
        above = _audit(site_path, out, ans, min(1.0, measured + 0.01), capsys)
        assert above["alerted"] is True and n_alerts() == before + 1
        row = storage._rows(sa.select(alerts).where(alerts.c.kind == "count_accuracy"))[-1]
        assert row.state == "firing" and row.value == pytest.approx(measured) and row.threshold == pytest.approx(
            min(1.0, measured + 0.01)) and "counting accuracy" in row.message
    # a "person" who disagrees with every clip drives the accuracy to 0: the configured threshold (0.5) fires
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("".join(f"{a[0]},{a[1] + 1},{a[2]}\n" for a in answers))
    capsys.readouterr()
    assert main(["audit", "--config", str(site_path), "--out", str(out), "--seed", "7", "--clips", "50",
                 "--answers", str(wrong), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["accuracy"] == 0.0 and doc["alerted"] is True
    storage.close()


@pytest.mark.parametrize("extra, message", [
    (["--camera", "nope"], "unknown camera"),
    (["--answers", "/nonexistent.csv"], "no such file"),
    (["--from", "0", "--to", "1000"], "no line crossings"),
    (["--clips", "0"], ">= 1"),
    # --min-accuracy out of [0, 1] is refused by argparse, before any clip is cut: tests/test_cli_review_32b.py
])
def test_bad_audit_input_is_one_clear_error(site, tmp_path, capsys, extra, message):
    site_path, _ = site
    all_ = tmp_path / "all.csv"
    all_.write_text("".join(f"c{i:03d},0,0\n" for i in range(1, 4)))
    extra = [str(all_) if x == "{all}" else x for x in extra]
    capsys.readouterr()
    assert main(["audit", "--config", str(site_path), "--out", str(tmp_path / "o"), "--seed", "7", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err, err


@pytest.mark.parametrize("k, n, lo, hi", [
    (9, 10, 0.5958, 0.9821), (10, 10, 0.7225, 1.0), (0, 5, 0.0, 0.4345), (50, 100, 0.4038, 0.5962),
])
def test_wilson_interval_table(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


@pytest.mark.parametrize("text, error", [
    ("c1,1\n", "3 columns"), ("c1,a,0\n", "whole numbers"), ("c1,-1,0\n", "negative"), ("c1,1,0\nc1,0,0\n", "twice"),
])
def test_bad_answers_are_clear_errors(text, error):
    with pytest.raises(ConfigError, match=error):
        parse_answers(text)


# -- the audit through the API (what the dashboard's audit view calls) ---------------------------------------------


def _api(site, tmp_path, source_of=None):
    """The app over a copy of the fixture's history (the CLI tests count their audits); a manager and a viewer
    signed in. ``source_of``: replace camera sources (e.g. a live stream)."""
    import shutil

    from fastapi.testclient import TestClient

    from storelens.api import create_app

    site_path, config = site
    raw = yaml.safe_load(pathlib.Path(site_path).read_text())
    shutil.copy(raw["storage"]["path"], tmp_path / "history.sqlite")
    raw["storage"]["path"] = str(tmp_path / "history.sqlite")
    for cam in raw["cameras"]:
        cam["source"] = (source_of or {}).get(cam["id"], cam["source"])
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "site.yaml")
    storage = open_storage(cfg.storage)
    app = create_app(cfg, storage)
    clients = {}
    for role in ("manager", "viewer"):
        app.state.context.auth.create_user(role, f"{role}-pass-123", role)
        c = TestClient(app)
        r = c.post("/v1/auth/login", data={"username": role, "password": f"{role}-pass-123"})
        r.raise_for_status()
        c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        clients[role] = c
    return cfg, storage, clients


def _frame_url(c: dict, index: int) -> str:
    return f"/v1/audits/clips/{c['camera_id']}/{c['line_id']}/{c['crossing_ts_ms']}/frames/{index}.jpg"


def test_api_audit_sample_frames_submit_and_alert(site, tmp_path):
    from storelens.storage.audit import clip_frames

    cfg, storage, clients = _api(site, tmp_path)
    api, viewer = clients["manager"], clients["viewer"]
    try:
        r = api.post("/v1/audits/sample", json={"clips": 50, "seed": 7})
        assert r.status_code == 200, r.text
        doc = r.json()
        clips = doc["clips"]
        stored = [(e.camera_id, e.line_id, e.ts_ms) for cam in CAMERAS for e in storage.crossings(cam, 0, 2**62)]
        assert sorted((c["camera_id"], c["line_id"], c["crossing_ts_ms"]) for c in clips) == sorted(stored)
        for c in clips:  # the person tallies blind: no system count in the sample
            assert not {k for k in c if k.startswith("system") or k in ("in", "out")}, c
            assert c["start_ms"] == c["crossing_ts_ms"] - 1500 and c["end_ms"] == c["crossing_ts_ms"] + 1501
            assert 30 <= c["frames"] <= 76 and c["fps"] == pytest.approx(25, abs=0.1)
        assert doc["min_accuracy"] == 0.5 and doc["confidence"] == 0.95
        # frames: JPEGs of the source's size, the same pixels as the renderer's (heads blurred, line drawn)
        c = clips[0]
        cam = next(x for x in cfg.cameras if x.id == c["camera_id"])
        rendered = list(clip_frames(cam, storage, c["line_id"], c["start_ms"], c["end_ms"]))
        assert len(rendered) == c["frames"]
        for index in (0, c["frames"] // 2, c["frames"] - 1):
            r = api.get(_frame_url(c, index))
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (288, 384, 3)  # CAVIAR's frames
            ok, jpeg = cv2.imencode(".jpg", rendered[index], [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok and np.array_equal(img, cv2.imdecode(jpeg, cv2.IMREAD_COLOR))  # the renderer's pixels
            assert np.abs(img[135, 200:280].astype(int) - (0, 255, 255)).max() < 60  # the door line, yellow
        # validation: past the end, unknown camera / line / crossing, malformed, and the viewer's refusal
        assert api.get(_frame_url(c, c["frames"])).status_code == 404
        assert api.get(_frame_url({**c, "camera_id": "nope"}, 0)).status_code == 404
        assert api.get(_frame_url({**c, "line_id": "nope"}, 0)).status_code == 404
        assert api.get(_frame_url({**c, "crossing_ts_ms": c["crossing_ts_ms"] + 1}, 0)).status_code == 404
        assert api.get(_frame_url({**c, "line_id": "a b"}, 0)).status_code in (404, 422)
        assert api.get(_frame_url(c, -1)).status_code == 422
        assert viewer.get(_frame_url(c, 0)).status_code == 403
        assert viewer.post("/v1/audits/sample", json={}).status_code == 403
        assert api.post("/v1/audits/sample", json={"clips": 0}).status_code == 422
        assert api.post("/v1/audits/sample", json={"clips": 51}).status_code == 422
        assert api.post("/v1/audits/sample", json={"cameras": ["nope"]}).status_code == 422
        assert api.post("/v1/audits/sample", json={"start_ms": 0, "end_ms": 1000}).status_code == 404

        # submit the ground truth's tallies: the accuracy of a direct computation
        tallies, correct = [], 0
        for c in clips:
            gt = [d for ts, d in gt_crossings(c["camera_id"]) if c["start_ms"] <= ts < c["end_ms"]]
            ev = [e for e in storage.crossings(c["camera_id"], c["start_ms"], c["end_ms"]) if e.line_id == c["line_id"]]
            sys_io = (sum(e.direction == "in" for e in ev), sum(e.direction == "out" for e in ev))
            correct += sys_io == (gt.count("in"), gt.count("out"))
            tallies.append({"camera_id": c["camera_id"], "line_id": c["line_id"],
                            "crossing_ts_ms": c["crossing_ts_ms"], "in": gt.count("in"), "out": gt.count("out")})
        assert viewer.post("/v1/audits", json={"clips": tallies}).status_code == 403
        r = api.post("/v1/audits", json={"clips": tallies})
        assert r.status_code == 200, r.text
        res = r.json()
        n = len(clips)
        assert (res["n_clips"], res["n_correct"]) == (n, correct) and res["accuracy"] == pytest.approx(correct / n)
        assert (res["ci_low"], res["ci_high"]) == pytest.approx(wilson_interval(correct, n))
        assert res["auditor"] == "manager" and res["alerted"] is (correct / n < 0.5)
        assert [(x["person_in"], x["person_out"]) for x in res["clips"]] == [(t["in"], t["out"]) for t in tallies]
        assert sum(x["correct"] for x in res["clips"]) == correct
        print(f"API audit: {correct}/{n} exact, Wilson [{res['ci_low']:.3f}, {res['ci_high']:.3f}]")

        # a low tally (nobody crossed): every clip wrong, accuracy 0 below audit.min_accuracy, the alert fires
        low = [{**t, "in": 0, "out": 0} for t in tallies]
        before = {row.alert_id for row in storage._rows(sa.select(alerts).where(alerts.c.kind == "count_accuracy"))}
        # (the copied history may hold the CLI tests' alerts, and the first audit's when it was below)
        r = api.post("/v1/audits", json={"clips": low})
        assert r.status_code == 200, r.text
        assert r.json()["accuracy"] == 0.0 and r.json()["alerted"] is True
        fired = [row for row in storage._rows(sa.select(alerts).where(alerts.c.kind == "count_accuracy"))
                 if row.alert_id not in before]
        assert len(fired) == 1 and fired[0].state == "firing" and fired[0].value == 0.0
        assert fired[0].alert_id.endswith(r.json()["audit_id"])
        # the past audits, newest first, for every role (the copied history may hold the CLI tests' too)
        past = viewer.get("/v1/audits").json()["audits"]
        assert [(a["auditor"], a["n_clips"], a["alerted"]) for a in past[:2]] == [("manager", n, True),
                                                                                ("manager", n, res["alerted"])]
        assert past[1]["accuracy"] == pytest.approx(res["accuracy"])
        # malformed submissions: one clear 422 each
        for bad in ([], [{**tallies[0], "in": -1}], [tallies[0], tallies[0]],
                    [{**tallies[0], "crossing_ts_ms": tallies[0]["crossing_ts_ms"] + 1}],
                    [{**tallies[0], "camera_id": "nope"}]):
            assert api.post("/v1/audits", json={"clips": bad}).status_code == 422, bad
    finally:
        storage.close()


def test_api_audit_of_a_live_camera_is_409_like_the_cli(site, tmp_path):
    _, storage, clients = _api(site, tmp_path, {"eecp": "rtsp://admin:S3cret@cam.local/stream",
                                                "ols": "rtsp://cam.local/s2?password=S3cret"})
    try:
        r = clients["manager"].post("/v1/audits/sample", json={"seed": 7})
        assert r.status_code == 409 and "is a live stream" in r.json()["detail"], r.text
        assert "S3cret" not in r.text and "cam.local" in r.text, "the camera's password is not in the answer"
        e = storage.crossings("eecp", 0, 2**62)[0]
        r = clients["manager"].get(_frame_url({"camera_id": "eecp", "line_id": e.line_id, "crossing_ts_ms": e.ts_ms}, 0))
        assert r.status_code == 409 and "is a live stream" in r.json()["detail"]
        assert "S3cret" not in r.text and "rtsp://cam.local/stream" in r.text
    finally:
        storage.close()


def test_the_clip_draw_is_a_sample_of_every_crossing_without_loading_them(tmp_path):
    """``pick_crossings`` draws positions among the range's crossings (counted in the database) and reads only
    those rows (a store's years of crossings are not loaded to pick 20 clips): the same crossings as
    ``random.sample`` over all of them in memory, per seed."""
    import random

    from storelens.config import parse_config
    from storelens.domain.counting import CrossingEvent
    from storelens.storage import SqlStorage
    from storelens.storage.audit import pick_crossings

    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": c, "source": "/tmp/x.mp4"} for c in ("a", "b")]})
    events = [CrossingEvent(f"{cam}-{i}", cam, "door", i, "in" if i % 3 else "out", 1_000 + 10 * i, i)
              for cam, n in (("a", 700), ("b", 300)) for i in range(n)]
    with SqlStorage(str(tmp_path / "h.db")) as st:
        st.write_batch(crossings=events)
        for seed, n, (lo, hi) in [(7, 20, (None, None)), (3, 5, (2_000, 5_000)), (1, 2000, (None, None))]:
            got = pick_crossings(cfg, st, n=n, start_ms=lo, end_ms=hi, seed=seed)
            inside = [e for e in events if (lo is None or e.ts_ms >= lo) and (hi is None or e.ts_ms < hi)]
            want = sorted(random.Random(seed).sample(inside, min(n, len(inside))),
                          key=lambda e: (e.camera_id, e.ts_ms))
            assert [e.event_id for e in got] == [e.event_id for e in want]
        with pytest.raises(ConfigError, match="no line crossings"):
            pick_crossings(cfg, st, n=3, start_ms=10**9, seed=1)
        assert st.crossing_count("a", 2_000, 5_000) == 300 and st.crossing_count("b", 0, 10**9) == 300
        assert [e.event_id for e in st.crossings("a", 0, 10**9, limit=5, offset=698)] == ["a-698", "a-699"]
        with pytest.raises(ValueError, match="offset"):
            st.crossings("a", 0, 10**9, offset=-1)
