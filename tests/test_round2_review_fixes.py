"""Review of the follow-ups to the seventh batch (sign-in ceiling, queue coverage from stored buckets, merged
zone dwell):

1. While the shared rate-limit store (Redis) is down, this process's memory does not know which clients
   signed in lately, so the per-account ceiling would hold the real admin with the attackers: it is not applied
   then (each address is still held by its own failures).
2. A long ``/v1/queues`` window with a bucket missing from ``zone_stats`` between two stored ones (an analytics
   restart, a purge) counted that time as not shown: the frames of every gap between stored buckets are read.
3. A ``/v1/zones/stats`` range ending inside a stored bucket read only that bucket's exits before the end and
   took the bucket for purged (``dwell_source: bucket``): the exits of the stored buckets are read whole.
"""
from __future__ import annotations

import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.domain.zones import StreamCoverage
from storelens.stages.analytics import derive
from storelens.storage import SqlStorage, SqliteStorage
from storelens.storage.schema import zone_stats
from test_signin_limits_2 import PASSWORD, SITE as SIGNIN_SITE, _login
from test_zone_numbers_fixes_2 import MIN, SITE, T0, exit_event, stats_row, stream_with_stall

import sqlalchemy as sa


def test_the_account_ceiling_does_not_hold_the_admin_while_redis_is_down(tmp_path) -> None:
    site = {**SIGNIN_SITE, "live": {"redis_url": "redis://127.0.0.1:1/0"}}  # nothing listens there
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    app.state.context.auth.create_user("admin", PASSWORD, "admin")
    for i in range(12):  # twice the ceiling (6), one guess from each address
        assert _login(app, f"198.51.100.{10 + i}", "wrong guess").status_code == 401
    assert _login(app, "203.0.113.7", PASSWORD).status_code == 200  # the admin, unknown to this memory
    for _ in range(3):  # an address is still held by its own failures (3 a minute here)
        _login(app, "192.0.2.99", "wrong guess")
    assert _login(app, "192.0.2.99", "another guess").status_code == 429


def test_a_bucket_missing_between_stored_ones_is_read_from_the_frames(history_store) -> None:
    cfg = parse_config(SITE)
    frames = stream_with_stall(end_of_stream=False)
    history_store.write_records(frames + derive(cfg, frames))
    gone = T0 + 120 * MIN  # a minute with frames, its bucket not stored
    history_store._write(lambda conn: conn.execute(sa.delete(zone_stats).where(
        zone_stats.c.bucket_start_ms == gone)))
    now = frames[-1].ts_ms
    truth = StreamCoverage(StreamCoverage.for_zones(cfg.cameras[0].zones, cfg.zones).max_gap_ms)
    for f in frames:
        truth.add(f.ts_ms)
    [q] = signed_in_client(create_app(cfg, history_store)).get(
        "/v1/queues", params={"window_s": 7200}).json()["queues"]
    assert q["covered_s"] == pytest.approx(truth.covered_ms(now, 7_200_000) / 1000, abs=1e-3)


def test_a_range_ending_inside_a_stored_bucket_keeps_its_exits_exact(tmp_path) -> None:
    cfg = parse_config(SITE)
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records([stats_row(T0, 2, 25.0, 29.0), exit_event(T0 + 10_000, 20), exit_event(T0 + 40_000, 30)])
        [b] = signed_in_client(create_app(cfg, storage)).get("/v1/zones/stats", params={
            "camera_id": "c", "zone_id": "q", "start_ms": T0, "end_ms": T0 + 30_000}).json()["buckets"]
    assert b["dwell_source"] == "events" and b["dwell_s"]["n"] == 2 and b["dwell_s"]["median"] == 25.0
    assert b["visits"] == 2  # the stored bucket, whole, as before
