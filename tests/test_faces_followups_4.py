"""Faces follow-ups 4, each on the real component (real YuNet and dlib models on the labelled photos, real SQLite
gallery and history files, the PostgreSQL of ``scripts/stack.sh``).

1. A reid decision the gallery's store kept, whose ``CustomerMatch`` / ``StaffTrack`` never left the process (it
   stopped between the stage's call and the runner's publish), is published by the restarted stage, unchanged.
   Before, the redelivered crop found the decision and only extended the visit: the history never got the
   track's customer link, nor the staff recognition (the member counted as a visitor).
2. An erasure whose history step failed (500) is retried with the same tracks: the history is erased before the
   gallery forgets which tracks were the customer's. Before, the gallery's delete went first: the retry found no
   track (404) and the late rows of a track whose match the history had not stored yet were written.
3. PostgreSQL: a history write that read the tombstones before an erasure committed cannot commit the erased
   track's rows after it (a transaction-scoped advisory lock, shared by the writers, exclusive for the erasure).
   Before, the track's new rows survived the erasure.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.backends.face_index import FaceGallery
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime.sinks import HistorySink
from storelens.runtime.still_faces import StillFaceEmbedder
from storelens.stages.analytics import AnalyticsStage
from storelens.stages.faces import ReidStage
from storelens.storage import SqlStorage
from storelens.storage.gallery import SqlGalleryStore
from storelens.storage.schema import staff_tracks, track_points
from storelens.storage.staff_faces import StaffFaceSource, enroll_images
from test_faces_review_fixes_3 import ERASABLE_TABLES, _later_rows, _rows_of, pg_schema, site
from test_staff_faces import ENROL, OBAMA_PROBE, OTHER_PERSON, config, crop

pytestmark = pytest.mark.skipif(not (asset("faces") / "identities").is_dir(), reason="shared face assets not found")
PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
T0 = 1_767_225_600_000


@pytest.fixture(scope="module")
def models() -> StillFaceEmbedder:
    return StillFaceEmbedder()


# -- 1. a decision stored, its message never published -----------------------------------------------------------


@pytest.mark.parametrize("first_publish", ["lost", "delivered"])
@pytest.mark.parametrize("who", ["customer", "staff"])
def test_a_decision_whose_message_never_left_the_process_is_published_after_the_restart(
        tmp_path, models, who, first_publish):
    cfg = config(tmp_path)
    history = SqlStorage(str(tmp_path / "history.db"))
    n, problems = enroll_images(history, cfg.faces, "obama", "B. Obama", consent_by="HR", images=ENROL,
                                embedder=models)
    assert (n, problems) == (2, [])
    person = OBAMA_PROBE if who == "staff" else OTHER_PERSON
    topic = topics.STAFF_TRACKS if who == "staff" else topics.CUSTOMER_MATCHES

    def start() -> ReidStage:
        gallery = FaceGallery(cfg.faces.gallery, store=SqlGalleryStore(tmp_path / "gallery.db", dim=128))
        return ReidStage(cfg, gallery, embedder=models.embedder, detector=models.detector,
                         staff_faces=StaffFaceSource(history))

    def crops():  # the track's two crops: the second decides it; after a restart both are redelivered
        return [crop(1, 7, person, T0), crop(2, 7, person, T0 + 100)]

    def write(messages) -> None:  # what analytics does with them: records -> history
        analytics = AnalyticsStage(cfg)
        HistorySink(history).write([r for x in messages for r in analytics.handle(topic, x).records])

    first = start()
    outputs = [first.handle(topics.PERSON_CROPS, c) for c in crops()]
    [decision] = [p.message for p in outputs[1].publish]
    assert outputs[0].publish == [] and isinstance(decision, m.StaffTrack if who == "staff" else m.CustomerMatch)
    if first_publish == "delivered":
        write([decision])
    before = history.customer_tracks(decision.customer_id) if who == "customer" else None
    first.gallery.store.close()  # the process stops before the runner publishes (lost) or after (delivered)

    second = start()
    again = [[p for p in second.handle(topics.PERSON_CROPS, c).publish] for c in crops()]
    # the decision is published once more, unchanged (was: nothing; the crops only extended the visit)
    assert [[(p.topic, m.encode(p.message)) for p in out] for out in again] == [[(topic, m.encode(decision))], []]
    write([p.message for p in again[0]])
    if who == "customer":
        tracks = history.customer_tracks(decision.customer_id)
        assert [(t["event_id"], t["camera_id"], t["track_id"], t["is_new"]) for t in tracks] == [
            (decision.event_id, "door", 7, True)]
        if first_publish == "delivered":
            assert tracks == before  # the copy changed nothing
        assert second.gallery.store.counts()["customers"] == 1  # decided once: nobody enrolled twice
    else:
        assert history._rows(sa.select(staff_tracks.c.track_id, staff_tracks.c.cue, staff_tracks.c.detail)) == [
            (7, "face", "obama")]
        assert len(second.gallery) == 0
    second.gallery.store.close()
    history.close()


# -- 2. an erasure whose history step failed, retried ------------------------------------------------------------


def test_an_erasure_that_failed_in_the_history_is_retried_with_the_customers_tracks(tmp_path):
    history = SqlStorage(str(tmp_path / "h.db"), connect_timeout_s=0.3)
    gallery = SqlGalleryStore(tmp_path / "g.db", dim=128)
    gallery.add_customers([("alice", T0)])
    # the reid stage decided track 7 as alice; the history writer has stored nothing of the track yet
    from storelens.backends.face_index import TrackDecision

    gallery.save_track_decision("door", 7, TrackDecision("customer", "alice", None, T0))
    client = signed_in_client(create_app(site(tmp_path), history, gallery_store=gallery),
                              raise_server_exceptions=False)

    assert client.get("/v1/customers/alice").status_code == 200  # the API key's use is recorded (once a minute)

    blocker = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another connection holds the history's write lock
    assert client.delete("/v1/customers/alice").status_code == 500  # the history's erasure failed
    blocker.execute("ROLLBACK")
    blocker.close()
    assert gallery.decided_tracks("alice") == {("door", 7)}  # was: set(), the gallery's delete had gone first

    assert client.delete("/v1/customers/alice").status_code == 204  # was: 404, the gallery had forgotten track 7
    assert not gallery.customer_exists("alice")
    history.write_records(_later_rows(7, 2, T0 + 2))  # the writer catches up with track 7
    assert _rows_of(history, [("door", 7)]) == dict.fromkeys(ERASABLE_TABLES, 0)  # were written
    history.close()
    gallery.close()


# -- 3. PostgreSQL: a write in progress and an erasure -----------------------------------------------------------


def _frame(seq: int, *tracks: int) -> m.TrackedFrame:
    box = m.BoxXYXY(x1=10, y1=20, x2=50, y2=120)
    return m.TrackedFrame(camera_id="door", seq=seq, ts_ms=T0 + seq, tracks=[m.Track(track_id=t, bbox_xyxy=box)
                                                                             for t in tracks])


def test_a_history_write_in_progress_cannot_bring_an_erased_track_back_on_postgres():
    with pg_schema() as schema, contextlib.ExitStack() as stack:
        writer = stack.enter_context(SqlStorage(PG_DSN, schema=schema))
        api = stack.enter_context(SqlStorage(PG_DSN, schema=schema))
        writer.write_records([_frame(4, 7), _frame(5, 9), m.CustomerMatch(
            event_id="e7", camera_id="door", track_id=7, seq=4, ts_ms=T0 + 4, customer_id="alice")])
        api.ping()
        pids = {"writer": writer._conn.info.backend_pid, "erasure": api._conn.info.backend_pid}
        watch = stack.enter_context(psycopg.connect(PG_DSN, autocommit=True))

        def waiting(who: str) -> bool:
            row = watch.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pids[who],)).fetchone()
            return row is not None and row[0] == "Lock"

        def wait_until(cond, what: str) -> None:
            deadline = time.monotonic() + 20
            while not cond():
                assert time.monotonic() < deadline, what
                time.sleep(0.02)

        # a third session holds frame 5's row: the writer's batch stops there, after its look-up of the tombstones
        holder = stack.enter_context(psycopg.connect(PG_DSN))
        holder.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        holder.execute("SELECT 1 FROM frames WHERE camera_id = 'door' AND seq = 5 FOR UPDATE")
        errors: list[BaseException] = []

        def run(fn):
            def body():
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 (reported below)
                    errors.append(exc)
            t = threading.Thread(target=body, daemon=True)
            t.start()
            return t

        # track 7 still in view, and track 8 of the same customer, whose match the erasure cannot have seen yet
        w = run(lambda: writer.write_records([_frame(5, 7, 8, 9), m.CustomerMatch(
            event_id="e8", camera_id="door", track_id=8, seq=5, ts_ms=T0 + 5, customer_id="alice")]))
        wait_until(lambda: waiting("writer"), "the writer did not reach frame 5")
        e = run(lambda: api.erase_customer("alice", tracks=[("door", 7)]))
        wait_until(lambda: not e.is_alive() or waiting("erasure"), "the erasure neither ended nor waited")
        holder.rollback()  # the writer goes on
        w.join(20)
        e.join(20)
        assert not w.is_alive() and not e.is_alive() and errors == []
        points = writer._rows(sa.select(track_points.c.track_id, track_points.c.seq).order_by(
            track_points.c.track_id, track_points.c.seq))
        assert [tuple(r) for r in points] == [(9, 5)]  # was: (7, 5) and (8, 5) too, written after the erasure
        assert writer.customer_tracks("alice") == []
        writer.write_records([_frame(6, 7, 8, 9)])  # and later ones are dropped
        assert writer._rows(sa.select(sa.func.count()).select_from(track_points).where(
            track_points.c.track_id.in_([7, 8]))) == [(0,)]
