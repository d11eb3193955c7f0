"""Review fixes, sixth batch: nothing the faces stages hold open is lost at a stop; zone statistics merged
over a stall weigh each bucket by the time its stream showed.

1. An embedded run with faces on, stopped mid-stream from another thread (Ctrl-C, SIGTERM, the demo's stop):
   the tracks the faces stage still has open get their ``final`` attribute summaries and, when they showed a
   good face but fewer than ``faces_per_decision``, their reid decision (a customer), in the history and in
   the run's result (``FacesStage.end_streams``, handed to analytics at the stop as analytics' own
   ``end_streams``). Real frames: a video of the labelled identity photos through ingest, YOLO, the default
   tracker, YuNet, the gate, age/gender/emotion, dlib and the gallery.
2. ``/v1/zones/stats`` over an hour of minute buckets: a minute a stall left mostly uncovered weighs by the
   time the stream showed in it (``zone_stats.covered_ms``), not by the whole minute. Rows stored without it
   (before migration 0016, or by an analytics of before it) count the whole bucket (SQLite and PostgreSQL).
"""
from __future__ import annotations

import pathlib
import threading

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.conninfo import make_conninfo

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.backends.face_video import write_visit_video
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.stages.analytics import derive
from storelens.storage import SCHEMA_VERSION, SqlStorage, open_gallery
from storelens.storage import zones as zq
from storelens.storage.migrations import revisions
from test_storage_migrations import PG_DSN, pg, pg_schema  # noqa: F401 (pg_schema: a fixture)
from test_review_fixes_7 import downgrade_to
from test_zone_stalls import IN_Q, SITE, frame
from test_zones_e2e import stored  # sorted rows of a query on the SQLite history

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MIN, HOUR = 60_000, 3_600_000

# -- 1. the faces stages at a stop ----------------------------------------------------------------------------

PEOPLE = [("obama", "obama.jpg"), ("biden", "biden.jpg"), ("kit_harington", "john1.jpeg"),
          ("alex_lacamoire", "img1.jpg"), ("rose_leslie", "img1.jpg")]
HOLD_FRAMES, GAP_FRAMES = 20, 12  # 2 s per photo at 10 fps, 1.2 s apart (tracks never idle: track_idle_s 10 s)


@pytest.mark.slow  # the real detector, tracker and face models over a video
def test_a_stop_mid_stream_ends_the_faces_open_tracks(tmp_path: pathlib.Path) -> None:
    video = write_visit_video([asset("faces", "identities", p, f) for p, f in PEOPLE], tmp_path / "visit.avi",
                              hold_frames=HOLD_FRAMES, gap_frames=GAP_FRAMES)
    n_frames = GAP_FRAMES + len(PEOPLE) * (HOLD_FRAMES + GAP_FRAMES)
    config = parse_config({
        "store": {"id": "faces-stop"},
        "cameras": [{"id": "door", "source": str(video), "start_ts_ms": T0}],
        "tracker": {"track_buffer": 8}, "crops": {"every_n_frames": 5},  # as tests/test_faces_pipeline.py
        "storage": {"backend": "sqlite", "path": str(tmp_path / "history.db")},
        # 4 crops per photo: no track shows this many good faces, so every decision is taken when its track
        # ends -- at the stop, for the people still in view
        "faces": {"enabled": True, "reid": {"faces_per_decision": 6}},
    })
    storage = SqlStorage(config.storage.path)
    gallery = open_gallery(config)
    pipe = EmbeddedPipeline(config, storage=storage, gallery=gallery)

    def stopper() -> None:  # another thread, as a signal handler or the demo's server: stop at the 2nd person
        for _ in range(6000):
            stages = pipe.faces_stages
            if stages is not None and stages[0].stats["accepted"] >= 5:  # the first photo gives at most 4
                pipe.stop()
                return
            threading.Event().wait(0.05)

    threading.Thread(target=stopper, daemon=True).start()
    result = pipe.run()
    gallery.store.close()
    storage.close()
    db = tmp_path / "history.db"
    # stopped while the second person was in view, long before the end of the file
    assert pipe._stop.is_set() and result.frames < n_frames - 2 * (HOLD_FRAMES + GAP_FRAMES), result.frames

    # every track with a face has its final summary, and every one with a good face its customer
    attributes = stored(db, "SELECT track_id, final, n_used, gender FROM track_attributes")
    assert attributes and all(final == 1 for _, final, _, _ in attributes), attributes
    with_good_face = {t for t, _, n_used, _ in attributes if n_used > 0}
    assert len(with_good_face) >= 2, attributes  # obama's track and biden's (in view at the stop)
    matches = stored(db, "SELECT track_id, customer_id, is_new FROM customer_matches")
    assert {t for t, _, _ in matches} == with_good_face, (matches, attributes)
    assert len({c for _, c, _ in matches}) == len(matches) and all(new for _, _, new in matches)  # two people
    assert {g for _, _, _, g in attributes} <= {"male", "unknown"}  # (few faces of the last one: unknown)
    # the run's result has the decisions too
    assert sorted((x.track_id, x.customer_id) for x in result.customer_matches) == [(t, c) for t, c, _ in matches]
    assert "end_streams" not in result.errors


# -- 2. zone statistics merged over a stall -------------------------------------------------------------------

HOLD = 2400  # the default lost_after_ms: the longest a frame's occupancy holds across a stall
ENTERED = 0  # entries confirmed at 0.6 s (enter_after_ms 500 at 5 fps), counted from their time, like the dwell


def stalled_queue() -> list[m.TrackedFrame]:
    """5 fps. Minute 0: the queue is empty all along. Minute 1: two people in it from 1:00 to 1:10, when the
    stream stalls (no frame) until 10:00; they are still there then, until the stream ends at 10:10."""
    times = [(t, {}) for t in range(0, MIN, 200)] + [(t, {1: IN_Q, 2: IN_Q}) for t in range(MIN, MIN + 10_001, 200)]
    times += [(t, {1: IN_Q, 2: IN_Q}) for t in range(10 * MIN, 10 * MIN + 10_001, 200)]
    out = [frame(i, t, tracks) for i, (t, tracks) in enumerate(times)]
    return out + [m.TrackedFrame(camera_id="c", seq=len(out), ts_ms=out[-1].ts_ms, end_of_stream=True)]


def test_merged_zone_stats_weigh_each_bucket_by_the_time_its_stream_showed(tmp_path: pathlib.Path) -> None:
    """Minute 0 is seen whole with nobody inside; minute 1 only 12.4 s (10 s of frames, then the last one held
    2.4 s) with two people; minute 10 10 s with two. Over the hour the stream showed 82.4 s, two people in
    43.6 s of it: a mean of 0.53. Weighing each minute by 60 s made it 1.30 (as if the two had stood there
    for the whole of minute 1 and minute 10)."""
    cfg = parse_config(SITE)
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records(derive(cfg, stalled_queue()))
        client = signed_in_client(create_app(cfg, storage))
        minutes = client.get("/v1/zones/stats", params={"camera_id": "c", "start_ms": 0, "end_ms": HOUR}).json()
        covered = {0: MIN, 1: 10_000 + HOLD, 10: 10_000}
        means = {0: 0.0, 1: 2 * (10_000 + HOLD - ENTERED) / (10_000 + HOLD), 10: 2.0}
        assert {b["start_ms"] // MIN: b["mean_occupancy"] for b in minutes["buckets"]} == \
            {k: pytest.approx(v) for k, v in means.items()}
        [hour] = client.get("/v1/zones/stats", params={"camera_id": "c", "start_ms": 0, "end_ms": HOUR,
                                                        "bucket_s": 3600}).json()["buckets"]
        shown = sum(covered.values())
        assert hour["mean_occupancy"] == pytest.approx(sum(means[k] * covered[k] for k in covered) / shown)
        assert hour["mean_occupancy"] == pytest.approx(2 * (10_000 + HOLD - ENTERED + 10_000) / 82_400)
        assert (hour["visits"], hour["max_occupancy"]) == (2, 2)
        rows = zq.zone_buckets(storage, "c", "q", 0, HOUR)  # the stored weights
        assert {r.start_ms // MIN: r.covered_ms for r in rows} == covered


def old_row(start_ms: int, mean: float) -> str:
    """A zone bucket as an analytics of before migration 0016 writes it (no ``covered_ms``)."""
    return ("INSERT INTO zone_stats (camera_id, zone_id, bucket_start_ms, bucket_end_ms, visits, unique_people, "
            "mean_occupancy, max_occupancy, visits_ended, stoppers, served, abandoned, lost) "
            f"VALUES ('c', 'q', {start_ms}, {start_ms + MIN}, 1, 1, {mean}, 1, 0, 0, 0, 0, 0)")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_zone_stats_stored_without_covered_ms_count_their_whole_bucket(kind: str, tmp_path: pathlib.Path,
                                                                       pg_schema: str) -> None:  # noqa: F811
    """A history of the release before migration 0016 (no ``covered_ms``) with a zone bucket opens in place: the
    old row counts its whole minute in a merge, as before; so do a ZoneStats from an analytics of before the
    field (unset) and a row such an analytics inserts into the upgraded table during a rolling upgrade."""
    target = str(tmp_path / "h.db") if kind == "sqlite" else PG_DSN
    schema = None if kind == "sqlite" else pg_schema
    SqlStorage(target, schema=schema).close()
    # the schema before migration 0016 (each later revision undone by its own downgrade()), with a row
    engine = sa.create_engine(f"sqlite:///{target}") if kind == "sqlite" else sa.create_engine(
        "postgresql+psycopg://", poolclass=sa.pool.NullPool, creator=lambda: psycopg.connect(
            make_conninfo(PG_DSN, options=f"-c search_path={pg_schema}")))
    with engine.begin() as conn:
        downgrade_to(conn, revisions("history").index("0016"))
        conn.execute(sa.text(old_row(2 * MIN, 0.5)))
    engine.dispose()
    with SqlStorage(target, schema=schema) as storage:
        assert storage.schema_version() == SCHEMA_VERSION
        storage.write_records([m.ZoneStats(camera_id="c", zone_id="q", bucket_start_ms=3 * MIN,
                                           bucket_end_ms=4 * MIN, mean_occupancy=1.5, max_occupancy=2),
                               m.ZoneStats(camera_id="c", zone_id="q", bucket_start_ms=4 * MIN,
                                           bucket_end_ms=5 * MIN, mean_occupancy=3.0, max_occupancy=3,
                                           covered_ms=20_000)])
        storage._write(lambda conn: conn.execute(sa.text(old_row(5 * MIN, 1.0))))
        rows = zq.zone_buckets(storage, "c", "q", 0, HOUR)
        assert [(r.start_ms // MIN, r.covered_ms) for r in rows] == [(2, MIN), (3, MIN), (4, 20_000), (5, MIN)]
        assert zq.covered_mean(rows) == pytest.approx((0.5 + 1.5 + 1.0 + 3.0 / 3) * MIN / (3 * MIN + 20_000))
