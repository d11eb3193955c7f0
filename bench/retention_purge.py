#!/usr/bin/env python
"""The retention purge (privacy.retention) on a filled history: SQLite and PostgreSQL.

Two weeks of one store are written through the analytics stage's record path
(``SqlStorage.write_records``): CAMERAS cameras at FPS frames per second for HOURS_PER_DAY
hours a day, PEOPLE people in every frame (track points, frames), and per track its face
attributes, customer link, track summary and zone exit. Then the purge runs with the default
periods (``privacy.retention.days``) from the end of the two weeks: the first run deletes
what is older (track points and frames older than 7 days: half of them), the second finds
nothing (the hourly steady state). Median of 3 for the second; the first runs once.

    python bench/retention_purge.py            # needs the stack for PostgreSQL (STORELENS_PG_DSN)
"""
from __future__ import annotations

import os
import pathlib
import statistics
import sys
import tempfile
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import benchlib  # noqa: E402
from storelens.config.privacy import RetentionDays  # noqa: E402
from storelens.contract import messages as m  # noqa: E402

DAY0 = 1_767_225_600_000
DAY_MS = 86_400_000
DAYS, CAMERAS, FPS, PEOPLE = 14, 2, 2, 4
#: Seconds of recording per day (kept small so the fill takes minutes, not hours).
SECONDS_PER_DAY = 6000
TRACK_S = 60  # each person stays a minute: a new track per person per minute


def day_records(day: int) -> list:
    out: list = []
    box = m.BoxXYXY(x1=10, y1=20, x2=50, y2=120)
    for cam in range(CAMERAS):
        cid = f"cam-{cam}"
        for f in range(SECONDS_PER_DAY * FPS):
            seq = day * SECONDS_PER_DAY * FPS + f
            ts = DAY0 + day * DAY_MS + f * 1000 // FPS
            tracks = [seq // (TRACK_S * FPS) * PEOPLE + p for p in range(PEOPLE)]
            out.append(m.TrackedFrame(camera_id=cid, seq=seq, ts_ms=ts, width=640, height=480,
                                      tracks=[m.Track(track_id=t, bbox_xyxy=box, confidence=0.9) for t in tracks]))
            if f % (TRACK_S * FPS) == TRACK_S * FPS - 1:  # the tracks end: their per-track rows
                for t in tracks:
                    out += [m.TrackAttributes(camera_id=cid, track_id=t, first_ts_ms=ts - TRACK_S * 1000,
                                              last_ts_ms=ts, last_seq=seq, n_faces=3),
                            m.CustomerMatch(event_id=f"{cid}:{t}", camera_id=cid, track_id=t, seq=seq, ts_ms=ts,
                                            customer_id=f"c{t % 500}"),
                            m.TrackSummary(camera_id=cid, track_id=t, first_ts_ms=ts - TRACK_S * 1000, last_ts_ms=ts,
                                           n_frames=TRACK_S * FPS),
                            m.ZoneEvent(event_id=f"{cid}:z:{t}", camera_id=cid, zone_id="z", zone_kind="area",
                                        track_id=t, kind=m.ZONE_EVENT_EXIT, ts_ms=ts, seq=seq, dwell_ms=30_000)]
    return out


def run(store, name: str) -> tuple[str, int, float, dict[str, int], float]:
    t0 = time.perf_counter()
    for day in range(DAYS):
        recs = day_records(day)
        for i in range(0, len(recs), 2000):
            store.write_records(recs[i:i + 2000])
    fill_s = time.perf_counter() - t0
    points = store._read(lambda c: c.exec_driver_sql("SELECT COUNT(*) FROM track_points").scalar())
    now = DAY0 + DAYS * DAY_MS
    t0 = time.perf_counter()
    deleted = store.purge_expired(RetentionDays(), now)
    first_s = time.perf_counter() - t0
    again = []
    for _ in range(3):
        t0 = time.perf_counter()
        assert not any(store.purge_expired(RetentionDays(), now).values())
        again.append(time.perf_counter() - t0)
    print(f"  {name}: filled {points} points in {fill_s:.0f} s", file=sys.stderr)
    return name, points, first_s, deleted, statistics.median(again)


def main() -> None:
    from storelens.storage import SqlStorage

    rows = []
    with tempfile.TemporaryDirectory() as tmp, SqlStorage(os.path.join(tmp, "h.db")) as store:
        rows.append(run(store, "SQLite (file, WAL)"))
    dsn = os.environ.get("STORELENS_PG_DSN")
    if dsn:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            with SqlStorage(dsn, schema=schema) as store:
                rows.append(run(store, "PostgreSQL 16 (local)"))
        finally:
            import psycopg

            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"`python bench/retention_purge.py` ({DAYS} days x {CAMERAS} cameras x {SECONDS_PER_DAY} s a day at "
          f"{FPS} fps, {PEOPLE} people per frame; default periods)\n")
    print(benchlib.cpu_line())
    print(benchlib.python_line())
    print()
    print("| store | track points | first purge (deletes) | rows deleted | purge with nothing expired (median of 3) |")
    print("|---|---:|---:|---|---:|")
    for name, points, first_s, deleted, again_s in rows:
        gone = ", ".join(f"{k} {v}" for k, v in deleted.items() if v)
        print(f"| {name} | {points:,} | {first_s * 1000:.0f} ms | {gone} | {again_s * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
