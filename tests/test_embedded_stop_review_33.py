"""Review 33: an embedded stop keeps what the stages had already finished and queued for the stages downstream.

A stop (``stop()``, Ctrl-C, SIGTERM) ends each stage's thread after the message in hand. What waited on the bus
between two stages was never read: the faces stage's final attribute summaries and reid decisions of tracks that
ended just before the stop (their demographics, a returning customer's visit) and the tracked frames waiting for
analytics never reached the history (the faces stage's own ``end_streams`` re-creates only the tracks still open).
Now the stages after detect-track handle what is queued for them, in pipeline order, before they end their open
streams; a write that fails then (one try: the run is stopping) is logged and counted in ``errors["end_streams"]``,
and what is left for that stage is not tried (the stop stays short), where a failed hand-over was only counted as
a storage error. Real frames: a short video of an identity photo through ingest, YOLO, the default tracker (and with
faces YuNet, the gate, age/gender/emotion, dlib and the gallery); analytics is held on a SQLite write lock taken by a
second connection while the file ends, then stopped.
"""
from __future__ import annotations

import logging
import pathlib
import sqlite3
import threading
from dataclasses import dataclass, field

import pytest

from storelens.backends.face_video import write_visit_video
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime.bus import InProcessBus
from storelens.runtime.embedded import EmbeddedPipeline, PipelineResult
from storelens.runtime.transports import END_OF_TOPIC
from storelens.storage import SqlStorage, open_gallery
from test_zones_e2e import stored  # sorted rows of a query on the SQLite history

pytestmark = pytest.mark.slow  # the real detector and tracker (and face models) over a short video

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
HOLD, GAP = 10, 2
N_FRAMES = GAP + HOLD + GAP  # one person (write_visit_video: a gap, the photo, a gap)
#: analytics takes the write lock after this frame: what follows (frames, the end of stream, the faces' final
#: summary and decision, the end-of-topic markers) fits the bus' queues (8 each), so the stages before it end
STALL_AFTER_SEQ = N_FRAMES - 7
WAIT_S = 300  # a guard against a hang only (the file ends in seconds)
TYPES = {topics.TRACKS: m.TrackedFrame, topics.TRACK_ATTRIBUTES: m.TrackAttributes,
         topics.CUSTOMER_MATCHES: m.CustomerMatch}


@dataclass
class Stalled:
    result: PipelineResult
    db: pathlib.Path
    #: topic -> what the stages published on it during the run
    published: dict[str, list] = field(default_factory=dict)


def stalled_run(tmp_path: pathlib.Path, *, faces: bool, relock_at_seq: int | None = None) -> Stalled:
    """Run the video with analytics held (a write lock taken after frame :data:`STALL_AFTER_SEQ`: its next write
    waits for it) until the stages before it have ended (the file's end), then stop the run and release the lock
    (analytics' write in hand goes through, its thread stops). ``relock_at_seq``: once analytics has handled that
    frame, its writes wait 1 s only and the lock is taken again."""
    video = write_visit_video([asset("faces", "identities", "obama", "obama.jpg")], tmp_path / "visit.avi",
                              size_wh=(640, 360), hold_frames=HOLD, gap_frames=GAP)
    db = tmp_path / "history.db"
    config = parse_config({
        "store": {"id": "stop-33"},
        "cameras": [{"id": "door", "source": str(video), "start_ts_ms": T0}],
        "tracker": {"track_buffer": 8}, "crops": {"every_n_frames": 3, "min_height_px": 48},
        "storage": {"backend": "sqlite", "path": str(db)},
        "faces": {"enabled": faces},
    })
    storage = SqlStorage(str(db), connect_timeout_s=WAIT_S)  # how long a write waits for the lock
    gallery = open_gallery(config) if faces else None
    bus = InProcessBus(maxsize=8)
    # what the last stage before analytics publishes, read as it comes (never holding it back)
    watched = {t: bus.subscribe(t) for t in ((topics.TRACK_ATTRIBUTES, topics.CUSTOMER_MATCHES) if faces
                                              else (topics.TRACKS,))}
    out = Stalled(PipelineResult(), db, {t: [] for t in watched})
    upstream_ended = threading.Event()
    lock = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None, timeout=WAIT_S)
    stalled = threading.Event()

    def on_tracked(tf: m.TrackedFrame) -> None:  # after the frame's write (on analytics' thread, or at the stop)
        if tf.seq == STALL_AFTER_SEQ or tf.seq == relock_at_seq:
            if tf.seq == relock_at_seq:
                storage._conn.execute("PRAGMA busy_timeout = 1000")  # the driver's connection (for tests)
            while True:  # analytics' next write waits for this lock
                try:
                    lock.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError:  # SQLite answered busy without waiting: try again
                    threading.Event().wait(0.01)
            stalled.set()

    def watch() -> None:
        ended: set[str] = set()
        while len(ended) < len(watched):
            for t, sub in watched.items():
                msg = sub.poll(0.05)
                if msg is not None and msg.value == END_OF_TOPIC:
                    ended.add(t)
                elif msg is not None:
                    out.published[t].append(m.decode(TYPES[t], msg.value))
        upstream_ended.set()

    pipe = EmbeddedPipeline(config, storage=storage, gallery=gallery, bus=bus, on_tracked=on_tracked)

    def stopper() -> None:  # analytics is held and the stages before it have ended: stop, then let it go on
        stalled.wait(WAIT_S)
        upstream_ended.wait(WAIT_S)
        pipe.stop()
        if stalled.is_set():
            lock.execute("ROLLBACK")

    threading.Thread(target=watch, daemon=True).start()
    threading.Thread(target=stopper, daemon=True).start()
    try:
        out.result = pipe.run()
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
        if gallery is not None:
            gallery.store.close()
        storage.close()
    assert stalled.is_set() and upstream_ended.is_set() and out.result.interrupted
    return out


def test_a_stop_keeps_the_final_summaries_decisions_and_frames_queued_for_analytics(tmp_path: pathlib.Path) -> None:
    run = stalled_run(tmp_path, faces=True)
    result, db = run.result, run.db
    finals = [x for x in run.published[topics.TRACK_ATTRIBUTES] if x.final]
    matches = run.published[topics.CUSTOMER_MATCHES]
    assert finals and matches, (run.published, result.faces)  # the file's end closed the track, with its decision
    # the final summaries and decisions the faces stage had published reached the history (were: none)
    assert sorted(stored(db, "SELECT track_id, n_faces FROM track_attributes WHERE final = 1")) == \
        sorted((x.track_id, x.n_faces) for x in finals)
    assert sorted(stored(db, "SELECT track_id, customer_id FROM customer_matches")) == \
        sorted((x.track_id, x.customer_id) for x in matches)
    assert [(x.track_id, x.customer_id) for x in result.customer_matches] == [(x.track_id, x.customer_id)
                                                                              for x in matches]
    # and so did every tracked frame, up to the end of stream (were: those analytics had taken before the stop)
    assert result.frames == N_FRAMES, result.frames
    assert stored(db, "SELECT COUNT(*), SUM(end_of_stream) FROM frames") == [(N_FRAMES + 1, 1)]
    assert "end_streams" not in result.errors and not result.dead_letters, (result.errors, result.dead_letters)


def test_a_write_failing_at_the_stop_is_reported_and_ends_the_hand_over(tmp_path: pathlib.Path, caplog) -> None:
    """The history is locked again (down) once analytics has written the first frame left for it at the stop: the
    next one's write fails (one try), which is logged and counted in ``errors["end_streams"]``, and the frames and
    end of stream left after it are not tried (each would wait for the lock), nor analytics' own ``end_streams``
    (its end-of-stream rows, alerts and resolves would follow frames not written; before: tried, failing the same
    way, counted twice). The run still returns its result."""
    first_left = STALL_AFTER_SEQ + 2  # STALL_AFTER_SEQ + 1 is analytics' message in hand at the stop
    with caplog.at_level(logging.ERROR, logger="storelens.runtime.embedded"):
        run = stalled_run(tmp_path, faces=False, relock_at_seq=first_left)
    result, db = run.result, run.db
    assert len(run.published[topics.TRACKS]) == N_FRAMES + 1  # every frame and the end of stream were tracked
    # frames up to the first one left were written; the next failed, the rest were not tried
    assert stored(db, "SELECT COUNT(*), MAX(seq) FROM frames") == [(first_left + 1, first_left)]
    assert result.frames == first_left + 1, result.frames
    [failed] = [r for r in caplog.records if "was not all handled" in r.getMessage()]
    assert (failed.stage, failed.topic, failed.left) == ("analytics", topics.TRACKS, N_FRAMES - first_left)
    assert result.errors["end_streams"] == 1, result.errors  # the hand-over; analytics' own end_streams not tried
