"""Follow-ups of a read-only review of the merged batch 33; each test fails on the code before:

1. A break in a camera's frames (a reconnect) ends its tracker session but keeps its stationary filter: the
   filter bridges the new ids to the old tracks and places, so a mannequin stays flagged on the first frame after
   the break (before, the filter was dropped: a mannequin counted as a person for ``after_s``). An end of stream
   still starts the filter afresh.
2. The merged zone buckets' distinct people are counted in time linear in the visits (before, every visit was
   joined to every bucket on ranges: a nested loop, ~3.4x the work for twice the days).
3. A stream kept under the digest of the previous source redaction (fewer credentials masked) goes on at the
   upgrade (before, a camera like ``?usr=admin&pwd=x`` restarted as a new stream: an end marker, new numbers).
4. A sign-out answered 503 (the sessions could not be ended) keeps the cookie: a retry from the same browser ends
   the sessions (before, the cookie was cleared and a retry sent no credential: 204, every session still valid).
5. Revoking a key revoked before (an older release, a cascade that failed half-way) revokes the keys it made
   (before, 404 and its keys stayed valid).
7. The bad-box filter is one helper (``Detections.well_formed_only``) used by detect-track and both trackers.
"""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.backends.detectors.base import Detections
from storelens.config import CameraConfig, parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.storage import SqliteStorage
from test_detect_track_review_33 import STEP_MS, T0, _factory, _frame, images  # noqa: F401 (fixture)

# -- 1. a break keeps the stationary filter --------------------------------------------------------------------------

MANNEQUIN = [300.0, 150.0, 360.0, 330.0]


class _Mannequin:
    """A detector that sees one thing standing still (a mannequin) in every frame."""

    def detect(self, image_bgr) -> Detections:
        return Detections(np.array([MANNEQUIN], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int32))


@pytest.mark.parametrize("between, still_after", [
    ("break", True),           # a reconnect: 5 s without frames (bytereid re-finds over 2.4 s at 12.5 fps)
    ("end of stream", False),  # a re-pointed camera: another view, the filter starts afresh
])
def test_a_break_keeps_the_stationary_filter(images, between, still_after) -> None:  # noqa: F811
    from storelens.stages.core import build_detect_track

    config = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c1", "source": "rtsp://cam/one"}],
                           "heatmap": {"enabled": False}, "stationary": {"after_s": 1.0}})
    stage = build_detect_track(config, detector=_Mannequin(), tracker_factory=_factory(config))
    first = [stage.process(_frame(i + 1, T0 + i * STEP_MS, images[0])).tracks for i in range(20)]
    assert [t.stationary for t in first[-1]] == [True]  # flagged after 1 s
    t1 = T0 + 19 * STEP_MS + 5_000
    if between == "end of stream":
        stage.handle(topics.FRAMES, m.Frame(camera_id="c1", seq=21, ts_ms=t1 - STEP_MS, end_of_stream=True))
    after = stage.process(_frame(22, t1, images[0])).tracks
    assert len(after) == 1 and after[0].track_id > first[-1][0].track_id  # a new tracker session: a new id
    assert after[0].stationary is still_after


# -- 2. distinct people of merged zone buckets, in linear time -----------------------------------------------------

def _zone_history(days: int, per_day: int = 1500) -> SqliteStorage:
    """``days`` of ``per_day`` visits of one zone (1 s to 5 min each) and its stored minute buckets."""
    from storelens.storage.schema import zone_events, zone_stats

    rng = np.random.default_rng(1)
    day, events, stats = 86_400_000, [], []
    for n, (t, dwell) in enumerate(zip(rng.integers(0, days * day, days * per_day),
                                       rng.integers(1_000, 300_000, days * per_day))):
        common = dict(camera_id="c", zone_id="z", zone_kind="area", track_id=n, seq=0)
        events += [dict(common, event_id=f"e{n}", kind="enter", ts_ms=int(t), dwell_ms=None, how=None),
                   dict(common, event_id=f"x{n}", kind="exit", ts_ms=int(t + dwell), dwell_ms=int(dwell), how="other")]
    for b in range(days * 1440):
        stats.append(dict(camera_id="c", zone_id="z", bucket_start_ms=b * 60_000, bucket_end_ms=(b + 1) * 60_000,
                          visits=1, unique_people=1, mean_occupancy=0, max_occupancy=0, visits_ended=0, stoppers=0,
                          served=0, abandoned=0, lost=0))
    st = SqliteStorage(":memory:")
    st._write(lambda c: (c.execute(zone_events.insert(), events), c.execute(zone_stats.insert(), stats)))
    return st


def _ticks(st: SqliteStorage) -> tuple[int, dict]:
    """SQLite virtual-machine steps (in thousands) of the hourly people of every stored bucket, and the answer."""
    from storelens.domain.calendar import BucketGrid
    from storelens.storage.zones import people_per_bucket

    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    raw = st._connection.connection.dbapi_connection
    raw.set_progress_handler(tick, 1000)
    try:
        got = people_per_bucket(st, "c", None, 0, 2**53 - 1, BucketGrid.epoch(3_600_000))
    finally:
        raw.set_progress_handler(None, 1000)
    return ticks[0], got


def test_merged_zone_buckets_take_linear_work() -> None:
    (short, got8), (long, got16) = (_ticks(_zone_history(days)) for days in (8, 16))
    assert len(got8) == 8 * 24 and len(got16) == 16 * 24
    assert sum(got16.values()) >= 16 * 1500  # every visit in at least its entry's hour
    assert long <= 2.2 * short, (short, long)


# -- 3. a stream kept under the previous redaction's digest ----------------------------------------------------------

def _previous_digest(cam: CameraConfig, redacted_then: str) -> str:
    """The stream id the previous release kept: the digest of the source as it redacted it (written out here)."""
    from storelens.runtime import ingest

    return ingest._digest([redacted_then, *(getattr(cam, f) for f in ingest.NEW_STREAM_FIELDS[1:])])


@pytest.mark.parametrize("source, redacted_then", [
    ("rtsp://cam/live?usr=admin&pwd=x", "rtsp://cam/live?usr=admin&pwd=***"),
    ("rtsp://admin:pw@cam/live;password=x", "rtsp://cam/live;password=x"),
    ("rtsp://10.0.0.5/user=admin&password=x&channel=1", "rtsp://10.0.0.5/user=admin&password=x&channel=1"),
])
def test_the_previous_redactions_stream_id_is_recognised(source, redacted_then) -> None:
    from storelens.runtime.ingest import previous_stream_id, stream_id

    cam = CameraConfig(id="c", source=source)
    assert previous_stream_id(cam) == _previous_digest(cam, redacted_then) != stream_id(cam)


def test_a_stream_kept_under_the_previous_redaction_goes_on(tmp_path) -> None:
    from storelens.runtime.ingest import stream_id
    from test_ingest import _served_live_source
    from test_ingest_review_31 import first_frame_of_kept_stream

    live, server = _served_live_source(tmp_path)
    try:
        cam = CameraConfig(id="door", source=live + "?usr=admin&pwd=x")  # the HTTP server ignores the query
        old = _previous_digest(cam, live + "?usr=admin&pwd=***")
        assert old != stream_id(cam)
        got, kept = first_frame_of_kept_stream(cam, old)
    finally:
        server.shutdown()
    assert got and not got[0].end_of_stream  # no end marker: the same stream
    # its start kept again under the new id (a live stream's frames are numbered above it by the clock)
    assert [(s.stream_id, s.first_seq) for s in kept] == [(stream_id(cam), 1000)]


# -- 4. a failed sign-out keeps the cookie: tests/test_dashboard_review_33.py (section 3) ---------------------------


# -- 5. revoking a key revoked before ---------------------------------------------------------------------------------

def test_revoking_a_key_revoked_before_revokes_the_keys_it_made() -> None:
    from storelens.storage import auth as store

    app = create_app(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}),
                     SqliteStorage(":memory:"))
    admin = signed_in_client(app)
    a = admin.post("/v1/api-keys", json={"name": "integration", "role": "admin"}).json()
    as_a = TestClient(app, headers={"Authorization": f"Bearer {a['key']}"})
    b = as_a.post("/v1/api-keys", json={"name": "made-by-a", "role": "viewer"}).json()
    as_b = TestClient(app, headers={"Authorization": f"Bearer {b['key']}"})
    assert store.revoke_api_key(app.state.context.storage, a["key_id"], 1)  # revoked by a release without cascade
    assert as_b.get("/v1/site").status_code == 200
    assert admin.delete(f"/v1/api-keys/{a['key_id']}").status_code == 204
    assert as_b.get("/v1/site").status_code == 401
    entries = admin.get("/v1/audit", params={"action": "api-keys.revoke"}).json()["entries"]
    assert {e["target"] for e in entries} == {b["key_id"]}  # A itself was not revoked now
    assert admin.delete("/v1/api-keys/0123456789ab").status_code == 404


# -- 7. one bad-box filter ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("boxes, kept", [
    ([[0, 0, 5, 9], [0, 0, 5, 9]], 2),
    ([[0, 0, 5, 9], [0, 0, np.nan, 9], [4, 0, 4, 9], [0, 9, 5, 0]], 1),
])
def test_well_formed_only(boxes, kept) -> None:
    d = Detections(np.array(boxes, np.float32), np.full(len(boxes), 0.9, np.float32), np.zeros(len(boxes), np.int32))
    out, dropped = d.well_formed_only()
    assert (len(out.bbox_xyxy), dropped) == (kept, len(boxes) - kept)
    assert (out is d) == (dropped == 0)
    assert np.isfinite(out.bbox_xyxy).all()

