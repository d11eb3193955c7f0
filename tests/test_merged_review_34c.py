"""Review fixes of the merged batch 34 (returning customers, retention clocks, journeys' appearance, the summary).

1. The retention purge never goes past the host's clock, wherever it runs (one rule,
   :func:`storelens.domain.purge_clock.host_clamped_ms`): the scheduled purge (``RetentionPurge``, clock
   ``camera`` or a file camera's own clock under ``auto``) went by a stored frame dated a year ahead and deleted every
   customer of the gallery and every other camera's history; and a crop dated ahead made the gallery take a customer
   just erased by the API for one purged by retention (``FaceGallery._gone``), enrolling the erased face anew.
2. A track seen since before the gap that started the customer's latest visit (a second camera's track decided
   later) no longer dates that visit back over the earlier one: visits never overlap.
3. A track's appearance mean keeps each length of vector apart (up to three): a third length no longer wipes the
   sum of the second, and the length with the most vectors is the mean.
4. The embedded run's summary says ``returning visits`` (the count of returning visits), not ``returning`` tracks.

Real SQLite (and the test stack's PostgreSQL, ``STORELENS_PG_DSN``, skipped when it cannot be reached) stores.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import sqlalchemy as sa

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.storage import SqlGalleryStore, SqlStorage
from test_reid_review_34 import gallery_store

DAY_MS = 86_400_000
MIN = 60_000


def frame(camera_id: str, ts_ms: int, seq: int) -> m.TrackedFrame:
    return m.TrackedFrame(camera_id=camera_id, seq=seq, ts_ms=ts_ms, width=640, height=480, tracks=[
        m.Track(track_id=seq, bbox_xyxy=m.BoxXYXY(x1=0, y1=0, x2=5, y2=9), confidence=0.9)])


def unit(i: int, dim: int = 4) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    v[i] = 1.0
    return v


# -- 1. the retention purge never goes past the host's clock ----------------------------------------------------------

@pytest.mark.parametrize("case, cameras, ahead_cam", [
    ("clock camera: every camera a file", [("clip", "clip.mp4"), ("other", "other.mp4")], "clip"),
    ("clock auto: a file camera's own clock beside a live one", [("door", "rtsp://cam/1"), ("clip", "clip.mp4")],
     "clip"),
])
def test_the_scheduled_purge_never_goes_by_a_frame_from_the_future(case, cameras, ahead_cam, tmp_path) -> None:
    """A frame dated 400 days ahead: the gallery is cut at the wall clock less its retention (a customer enrolled
    now stays, one of 31 days ago goes), every camera's rows of yesterday stay; counted once per run."""
    from prometheus_client import CollectorRegistry

    from storelens.runtime.retention import RetentionPurge
    from storelens.runtime.service import ServiceMetrics

    wall = int(time.time() * 1000)
    site = parse_config({"store": {"id": "s"}, "faces": {"reid": {"retention_days": 30}},
                         "cameras": [{"id": c, "source": src} for c, src in cameras]})
    metrics = ServiceMetrics(CollectorRegistry())
    with SqlStorage(str(tmp_path / "h.db")) as store, SqlGalleryStore(tmp_path / "g.db", dim=4) as gallery:
        store.write_batch(tracked_frames=[frame(c, wall - DAY_MS, i) for i, (c, _) in enumerate(cameras, 1)]
                          + [frame(ahead_cam, wall + 400 * DAY_MS, 9)])
        for cid, ts, i in (("now", wall, 0), ("old", wall - 31 * DAY_MS, 1)):
            gallery.add_customer(cid, ts)
            gallery.add_embedding(cid, ts, unit(i))
        purge = RetentionPurge(store, site, wall_ms=lambda: wall, gallery=gallery)
        deleted = purge.run(metrics)
        assert (gallery.customer_exists("now"), gallery.customer_exists("old")) == (True, False), case
        assert deleted.get("gallery_customers") == 1, case
        assert deleted.get("track_points", 0) == 0 and deleted.get("frames", 0) == 0, case
        kept = sorted(r[0] for r in store._rows(sa.text("SELECT camera_id FROM track_points")))
        assert kept == sorted([*(c for c, _ in cameras), ahead_cam]), case
        assert metrics.errors.labels("clock_ahead")._value.get() == 1, case
        assert purge.clock_ahead_runs == 1


def test_a_crop_from_the_future_never_takes_an_erased_customer_for_a_purged_one(tmp_path) -> None:
    """The API erased a customer (rows gone from the store); a crop of their face dated a year ahead comes: the
    face is the erased person's (``CustomerErased``, nothing enrolled), not a customer "purged by retention" whose
    face makes a new customer."""
    from storelens.backends.face_index import CustomerErased, FaceGallery, GalleryConfig

    wall = int(time.time() * 1000)
    with SqlGalleryStore(tmp_path / "g.db", dim=4) as store:
        gallery = FaceGallery(GalleryConfig(dim=4), store=store, retention_ms=30 * DAY_MS)
        cid, _, is_new = gallery.enroll_or_match(unit(0), wall)
        assert is_new
        assert store.delete_customer(cid)  # the API's erasure, another process: the index here still has them
        with pytest.raises(CustomerErased) as err:
            gallery.enroll_or_match(unit(0), wall + 400 * DAY_MS)
        assert type(err.value) is CustomerErased and cid in str(err.value)
        assert store.counts()["customers"] == 0
        assert gallery.take_erased(cid) is not None  # kept for the erasure request, as for any erased customer


# -- 2. visits never overlap -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_track_seen_since_before_the_gap_never_dates_its_visit_over_the_earlier_one(kind, tmp_path) -> None:
    """Gap 30 min: visit 1 9:00-9:10; a track at 10:00 starts visit 2; a second camera's track seen since 9:05,
    decided at 10:01, joins visit 2 (already published as visit 2, returning) from the end of visit 1 on, not from
    9:05: the stored visits do not overlap and keep the numbers the decisions went out with."""
    from storelens.backends.face_index import VisitTracker

    h = 3_600_000
    with gallery_store(kind, tmp_path, dim=4) as store:
        store.add_customer("c", 9 * h)
        visits = VisitTracker(store, gap_ms=30 * MIN)
        got = [visits.record("c", 9 * h, "door"), visits.record("c", 9 * h + 10 * MIN, "door"),
               visits.record("c", 10 * h, "door"),
               visits.record("c", 10 * h + MIN, "aisle", since_ts_ms=9 * h + 5 * MIN)]
        assert [(v.visit_no, started) for v, started in got] == [(1, True), (1, False), (2, True), (2, False)]
        stored = [(v.visit_no, v.first_ts_ms, v.last_ts_ms, v.cameras) for v in visits.visits("c")]
        assert stored == [(1, 9 * h, 9 * h + 10 * MIN, ("door",)),
                          (2, 9 * h + 10 * MIN, 10 * h + MIN, ("aisle", "door"))]
        assert all(a[2] <= b[1] for a, b in zip(stored, stored[1:]))


# -- 3. appearance vectors of three lengths -------------------------------------------------------------------------

def test_the_appearance_mean_is_the_length_with_the_most_vectors_of_three() -> None:
    """4-d x3, 2-d x2, 3-d x1, 2-d x2: the 2-d vectors are most (4); before, the 3-d one wiped the 2-d sum kept apart
    and the 4-d mean won. Every vector not in the mean as it stood is counted."""
    from storelens.stages.analytics import AnalyticsStage

    site = parse_config({"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "/tmp/x.mp4"}],
                         "journeys": {"track_end_after_s": 1, "min_track_frames": 3}})
    stage = AnalyticsStage(site)
    apps = [[1.0, 0, 0, 0]] * 3 + [[0, 1.0]] * 2 + [[0, 0, 1.0]] + [[0, 1.0]] * 2
    summaries, errors = [], 0
    for seq in range(len(apps) + 20):  # one track standing, then frames without it: it ends
        tf = m.TrackedFrame(camera_id="cam", seq=seq, ts_ms=seq * 100, width=400, height=400)
        if seq < len(apps):
            t = tf.tracks.add(track_id=1, bbox_xyxy=m.BoxXYXY(x1=90, y1=40, x2=110, y2=100), confidence=0.9)
            t.appearance.extend(apps[seq])
        out = stage.handle(topics.TRACKS, tf)
        summaries += [p.message for p in out.publish if p.topic == topics.TRACK_SUMMARIES]
        errors += out.info.get("errors", {}).get("bad_appearance", 0)
    [summary] = summaries
    assert list(summary.appearance) == pytest.approx([0.0, 1.0])
    assert errors == 5  # every 2-d and 3-d vector: each came while the 4-d vectors were most


# -- 4. the embedded run's summary ----------------------------------------------------------------------------------

def test_the_summary_counts_returning_visits_not_tracks(capsys) -> None:
    """Two tracks matched, one returning visit (its second track is the same visit): the line says visits."""
    from types import SimpleNamespace

    from storelens.cli import _print_faces

    _print_faces(SimpleNamespace(faces={"attributes_crops": 9, "attributes_faces": 4, "attributes_accepted": 3,
                                        "attributes_rejected": 1, "reid_matches": 2, "reid_new": 1,
                                        "reid_returning": 1}))
    assert capsys.readouterr().out.strip() == ("faces: 9 person crops, 4 faces, 3 passed the quality gate, 1 rejected; "
                                               "customers: 2 tracks matched (1 new); 1 returning visit")
