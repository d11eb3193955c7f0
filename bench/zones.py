#!/usr/bin/env python
"""Analytics cost per tracked frame: 10 zones, 20 people (issue 10).

Synthetic but busy: 20 people walk random smooth paths across a 1920x1080 view with
2 counting lines and 10 zones (a 5 x 2 grid of quadrilaterals, one of them a queue with a
service edge, two shelves); people leave and new track ids replace them, so entries,
exits and bucket closes all happen. Timed: ``AnalyticsStage.handle`` per frame (lines,
occupancy, count windows, zones with inertia, dwell, buckets, zone occupancy), against the
same stage with no zones, and against the peer a user would pick for zone occupancy,
supervision's ``PolygonZone.trigger`` for each of the 10 zones (occupancy only: no
inertia, dwell, visits or statistics). Same frames for every row.

    python bench/zones.py [--frames 3000]
    # the supervision row needs it importable, e.g.
    pip install --target /tmp/svpkgs --no-deps supervision==0.27.0 defusedxml
    PYTHONPATH=/tmp/svpkgs python bench/zones.py
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import benchlib  # noqa: E402
from storelens.config import parse_config  # noqa: E402
from storelens.contract import messages as m  # noqa: E402
from storelens.contract import topics  # noqa: E402
from storelens.stages.analytics import AnalyticsStage  # noqa: E402

W, H, PEOPLE, FPS = 1920, 1080, 20, 10


def zones() -> list[dict]:
    out = []
    for i in range(10):
        gx, gy = i % 5, i // 5
        x0, y0 = 40 + gx * 370, 80 + gy * 480
        z = {"id": f"z{i}", "polygon": [[x0, y0], [x0 + 330, y0 + 20], [x0 + 320, y0 + 420], [x0 - 10, y0 + 400]]}
        if i == 0:
            z.update(kind="queue", service_edge=[2, 3])
        elif i in (3, 7):
            z.update(kind="shelf", product=f"p{i}")
        out.append(z)
    return out


def frames(n: int, seed: int = 7) -> list[m.TrackedFrame]:
    rng = np.random.default_rng(seed)
    pos = rng.uniform([0, 0], [W, H], (PEOPLE, 2))
    vel = rng.normal(0, 8, (PEOPLE, 2))
    ids = np.arange(1, PEOPLE + 1)
    next_id = PEOPLE + 1
    out = []
    for seq in range(n):
        vel = 0.9 * vel + rng.normal(0, 3, (PEOPLE, 2))
        pos += vel
        gone = (pos[:, 0] < 0) | (pos[:, 0] > W) | (pos[:, 1] < 0) | (pos[:, 1] > H) | (rng.random(PEOPLE) < 0.002)
        for i in np.flatnonzero(gone):  # leaves; someone new comes in
            pos[i] = rng.uniform([0, 0], [W, H])
            ids[i], next_id = next_id, next_id + 1
        tracks = [m.Track(track_id=int(t), confidence=0.8, bbox_xyxy=m.BoxXYXY(
            x1=float(x - 30), y1=float(y - 160), x2=float(x + 30), y2=float(y))) for t, (x, y) in zip(ids, pos)]
        out.append(m.TrackedFrame(camera_id="cam", seq=seq, ts_ms=1_767_225_600_000 + seq * 1000 // FPS, width=W,
                                  height=H, tracks=tracks))
    return out


def site(with_zones: bool) -> dict:
    return {"store": {"id": "bench"}, "cameras": [{
        "id": "cam", "source": "x.mp4", "zones": zones() if with_zones else [],
        "lines": [{"id": "a", "a": [0, 540], "b": [1920, 540]}, {"id": "b", "a": [960, 0], "b": [960, 1080]}]}]}


def time_stage(cfg, tfs) -> tuple[float, int]:
    stage = AnalyticsStage(cfg)
    out = 0
    t0 = time.perf_counter()
    for tf in tfs:
        out += len(stage.handle(topics.TRACKS, tf).records)
    return (time.perf_counter() - t0) / len(tfs) * 1e6, out


def time_supervision(tfs) -> float | None:
    try:
        import supervision as sv
    except ImportError:
        return None
    zs = [sv.PolygonZone(np.array(z["polygon"], dtype=np.int32)) for z in zones()]
    t0 = time.perf_counter()
    for tf in tfs:
        xyxy = np.array([[t.bbox_xyxy.x1, t.bbox_xyxy.y1, t.bbox_xyxy.x2, t.bbox_xyxy.y2] for t in tf.tracks])
        det = sv.Detections(xyxy=xyxy, tracker_id=np.array([t.track_id for t in tf.tracks]))
        for z in zs:
            z.trigger(det)
    return (time.perf_counter() - t0) / len(tfs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tfs = frames(args.frames)
    with_z, without = parse_config(site(True)), parse_config(site(False))
    rows: dict[str, list[float]] = {"zones": [], "nozones": [], "sv": []}
    records = 0
    for _ in range(args.repeat):  # round robin, so a burst of load does not fall on one row
        us, records = time_stage(with_z, tfs)
        rows["zones"].append(us)
        rows["nozones"].append(time_stage(without, tfs)[0])
        sv_us = time_supervision(tfs)
        if sv_us is not None:
            rows["sv"].append(sv_us)
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    print(f"Command: `python bench/zones.py --frames {args.frames} --repeat {args.repeat}`\n")
    print(f"{benchlib.cpu_model()}, {benchlib.usable_cores()} cores; numpy {benchlib.version('numpy')}, "
          f"supervision {benchlib.version('supervision')}\n")
    print(f"{args.frames} frames at {FPS} fps, {PEOPLE} people per frame, 2 lines, 10 zones; median of {args.repeat}\n")
    print("| what | per tracked frame | frames/s on one core |")
    print("|---|---:|---:|")
    print(f"| StoreLens analytics stage, lines + 10 zones (events, inertia, dwell, buckets) | {med['zones']:.0f} us | "
          f"{1e6 / med['zones']:.0f} |")
    print(f"| StoreLens analytics stage, lines only | {med['nozones']:.0f} us | {1e6 / med['nozones']:.0f} |")
    if "sv" in med:
        print(f"| supervision PolygonZone.trigger x 10 (occupancy only) | {med['sv']:.0f} us | {1e6 / med['sv']:.0f} |")
    else:
        print("| supervision PolygonZone.trigger x 10 | not installed | |")
    print(f"\n{records} records written by the zones run (events, statistics, occupancy changes, frames)")


if __name__ == "__main__":
    main()
