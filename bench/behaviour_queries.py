#!/usr/bin/env python
"""Heatmap and journey queries over one day of one camera from PostgreSQL (issue 10: aim < 200 ms).

A synthetic but full day is written through the analytics stage's record path
(``SqlStorage.write_records``): 5,000 tracks of 200 points each (1M track points' worth), as the
analytics stage stores them: one ``TrackSummary`` per track (256-d appearance, 1-3 zone visits) and one
``HeatmapWindow`` per minute (about 200 cells) plus the running hour rows. Then the API's queries
run through the FastAPI app (in-process ``TestClient``, so routing, validation and JSON are included):
the camera heatmap (JSON and PNG) for the whole day and for one hour, ``/v1/journeys`` (first page),
``/v1/flows`` and ``/v1/paths/top`` for the whole day and for one hour. Median of 5 after one warm-up.

    python bench/behaviour_queries.py   # needs the stack (scripts/stack.sh up; STORELENS_PG_DSN)
"""
from __future__ import annotations

import os
import pathlib
import statistics
import sys
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import benchlib  # noqa: E402
from storelens.config import parse_config  # noqa: E402
from storelens.contract import messages as m  # noqa: E402

DAY0 = 1_767_225_600_000 + 8 * 3_600_000  # 08:00
DAY_MS = 86_400_000
TRACKS, POINTS = 5000, 200
ZONES = ["entrance", "fruit", "bakery", "till-queue", "drinks"]


def summaries(rng) -> list[m.TrackSummary]:
    out = []
    for i in range(TRACKS):
        t0 = DAY0 + int(rng.uniform(0, DAY_MS - 120_000))
        t1 = t0 + POINTS * 100
        app = rng.normal(0, 1, 256).astype(np.float32)
        msg = m.TrackSummary(camera_id="cam", track_id=i + 1, first_ts_ms=t0, last_ts_ms=t1, first_seq=i * 10,
                             last_seq=i * 10 + POINTS, n_frames=POINTS, first_x=100, first_y=900, last_x=1800,
                             last_y=300, appearance=(app / np.linalg.norm(app)).tolist())
        t = t0
        for z in rng.choice(ZONES, size=int(rng.integers(1, 4)), replace=False):
            d = int(rng.integers(1000, 6000))
            msg.zones.add(zone_id=str(z), zone_kind="area", enter_ts_ms=t, exit_ts_ms=t + d)
            t += d
        out.append(msg)
    return out


def heatmaps(rng) -> list[m.HeatmapWindow]:
    out = []
    hour: dict = {}
    for k in range(1440):
        start = DAY0 + k * 60_000
        cells = {}
        for _ in range(200):
            gx, gy = int(rng.integers(0, 120)), int(rng.integers(0, 67))
            cells[(gx, gy)] = (int(rng.integers(100, 5000)), int(rng.integers(0, 2000)))
        out.append(m.HeatmapWindow(camera_id="cam", window_start_ms=start, window_end_ms=start + 60_000, cell_px=16,
                                   width=1920, height=1080, cells=[m.HeatmapCell(gx=gx, gy=gy, occupancy_ms=o,
                                                                                 dwell_ms=d)
                                                                   for (gx, gy), (o, d) in sorted(cells.items())]))
        h0 = start // 3_600_000 * 3_600_000
        acc = hour.setdefault(h0, {})
        for key, (o, d) in cells.items():
            a = acc.get(key, (0, 0))
            acc[key] = (a[0] + o, a[1] + d)
        out.append(m.HeatmapWindow(camera_id="cam", window_start_ms=h0, window_end_ms=h0 + 3_600_000, cell_px=16,
                                   width=1920, height=1080, cells=[m.HeatmapCell(gx=gx, gy=gy, occupancy_ms=o,
                                                                                 dwell_ms=d)
                                                                   for (gx, gy), (o, d) in sorted(acc.items())]))
    return out


def timed(client, path: str, params: dict, n: int = 5) -> tuple[float, int]:
    r = client.get(path, params=params)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), len(r.content)


def main() -> None:
    import psycopg
    from psycopg import sql

    from storelens.api import create_app
    from storelens.api.testing import signed_in_client
    from storelens.storage import SqlStorage

    dsn = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
    schema = f"slbench_{uuid.uuid4().hex[:8]}"
    # the response cache off (api.cache_ttl_s: 0): every query is computed, as the first one after a change
    cfg = parse_config({"store": {"id": "bench"}, "api": {"cache_ttl_s": 0}, "cameras": [{"id": "cam", "source": "x.mp4", "zones": [
        {"id": z, "polygon": [[0, 0], [10, 0], [10, 10]]} for z in ZONES]}]})
    rng = np.random.default_rng(3)
    try:
        with SqlStorage(dsn, schema=schema) as store:
            t0 = time.perf_counter()
            recs: list = summaries(rng) + heatmaps(rng)
            for i in range(0, len(recs), 500):
                store.write_records(recs[i:i + 500])
            load_s = time.perf_counter() - t0
            hour = {"start_ms": DAY0 + 10 * 3_600_000, "end_ms": DAY0 + 11 * 3_600_000}
            day = {"start_ms": DAY0, "end_ms": DAY0 + DAY_MS}
            rows = []
            with signed_in_client(create_app(cfg, store), role="manager") as client:
                for label, path, params in [
                    ("camera heatmap, JSON, whole day", "/v1/cameras/cam/heatmap", {**day, "format": "json"}),
                    ("camera heatmap, JSON, one hour", "/v1/cameras/cam/heatmap", {**hour, "format": "json"}),
                    ("camera heatmap, PNG, whole day", "/v1/cameras/cam/heatmap", {**day, "format": "png"}),
                    ("journeys, first page of 50, one hour", "/v1/journeys", {**hour, "limit": 50}),
                    ("journeys, first page of 50, whole day", "/v1/journeys", {**day, "limit": 50}),
                    ("flows, one hour", "/v1/flows", hour),
                    ("flows, whole day", "/v1/flows", day),
                    ("top paths, whole day", "/v1/paths/top", day),
                ]:
                    ms, size = timed(client, path, params)
                    rows.append((label, ms, size))
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    print("Command: `python bench/behaviour_queries.py`\n")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1 / 5 / 15 min) at the end\n")
    print(f"{benchlib.cpu_model()}, {benchlib.usable_cores()} cores, PostgreSQL (scripts/stack.sh); "
          f"one camera, one day: {TRACKS} track summaries ({TRACKS * POINTS:,} track points' worth), "
          f"1440 minute + 24 hour heatmap rows (~200 cells each); written in {load_s:.1f} s\n")
    print("| query (through the API app) | median of 5 | response bytes |")
    print("|---|---:|---:|")
    for label, ms, size in rows:
        print(f"| {label} | {ms:.0f} ms | {size:,} |")


if __name__ == "__main__":
    main()
