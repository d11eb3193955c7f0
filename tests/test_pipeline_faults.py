"""Bad input in the embedded pipeline: it is dead-lettered with a reason, counted, and loses nothing else."""
from __future__ import annotations

import threading

import pytest

from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.bus import InProcessBus
from storelens.config import parse_config
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline

pytestmark = pytest.mark.slow

VIDEO = asset("mot", "TUD-Campus", "TUD-Campus.mp4")


def _config(**extra):
    return parse_config({
        "store": {"id": "t"},
        "cameras": [{"id": "campus", "source": str(VIDEO),
                     "lines": [{"id": "x300", "a": [300, 480], "b": [300, 0]}]}],
        **extra,
    })


@pytest.fixture(scope="module")
def stage():
    return EmbeddedPipeline(_config()).build_stage()


def _fresh(stage):
    """The shared detector with new trackers, so every run starts from the same state."""
    from storelens.stages import DetectTrackStage
    from storelens.backends.trackers import build_tracker

    cfg = _config()
    return DetectTrackStage(cfg, stage.detector, lambda: build_tracker(cfg.tracker))


def test_bad_messages_go_to_dead_letter_and_good_traffic_continues(stage):
    clean = EmbeddedPipeline(_config()).run(_fresh(stage))

    bus = InProcessBus(maxsize=8)
    dead = bus.subscribe(topics.DEAD_LETTER)
    good = m.Frame(camera_id="campus", seq=10_000, ts_ms=1, jpeg=b"\xff\xd8\xff\xe0 not really a jpeg",
                   width=640, height=480)
    bad = [
        (b"campus", m.encode(good)),  # corrupt JPEG
        (b"campus", m.encode(m.Frame(camera_id="campus", seq=1, jpeg=b"x" * 100))[:-30]),  # truncated protobuf
        (b"lobby", m.encode(m.Frame(camera_id="lobby", seq=0, jpeg=b"\xff\xd8"))),  # unknown camera
        (b"campus", m.encode(m.Frame(camera_id="campus", seq=10_001, ts_ms=2, bgr=bytes(640 * 479 * 3), width=640,
                                     height=480))),  # raw pixels one row short
    ]
    injected = threading.Event()

    def inject(tf):
        if tf.seq == 20 and not injected.is_set():
            injected.set()
            # from another thread: this callback runs on the analytics worker
            threading.Thread(target=lambda: [bus.publish(topics.FRAMES, k, v) for k, v in bad]).start()

    faulty = EmbeddedPipeline(_config(), bus=bus, on_tracked=inject).run(_fresh(stage))

    letters = []
    while (msg := dead.poll(timeout_s=0)) is not None:
        letters.append(m.decode(m.DeadLetter, msg.value))
    reasons = sorted(dl.reason for dl in letters)
    assert len(letters) == 4 and faulty.dead_letters == 4, reasons
    assert any("corrupt JPEG" in r for r in reasons), reasons
    assert any("cannot decode storelens.v1.Frame" in r for r in reasons), reasons
    assert any("unknown camera 'lobby'" in r for r in reasons), reasons
    assert any("919680 bytes of BGR pixels, header says 640x480 (921600 bytes)" in r for r in reasons), reasons
    assert all(dl.source_topic == topics.FRAMES and dl.service == "detect-track" and dl.payload for dl in letters)
    # nothing else was lost: same frames and same counts as the undisturbed run
    assert faulty.frames == clean.frames == 71
    assert faulty.line_counts == clean.line_counts


@pytest.mark.parametrize("frames", ["bgr", "jpeg"])
def test_frames_cross_the_bus_as_configured(stage, frames):
    """``pipeline.frames``: JPEG by default (as the services send), or raw pixels (no encode and decode)."""
    from storelens.runtime.transports import END_OF_TOPIC

    kinds: set = set()

    class Watched(InProcessBus):
        def publish(self, topic: str, key: bytes, value: bytes, headers=()) -> None:
            if topic == topics.FRAMES and value != END_OF_TOPIC:
                f = m.decode(m.Frame, value)
                kinds.add(f.WhichOneof("image") if not f.end_of_stream else "end")
            super().publish(topic, key, value, headers)

    cfg = _config() if frames == "jpeg" else _config(pipeline={"frames": frames})
    assert cfg.pipeline.frames == frames
    result = EmbeddedPipeline(cfg, bus=Watched(maxsize=8)).run(_fresh(stage))
    assert kinds == {frames, "end"}
    assert result.frames == 71 and result.dead_letters == 0
    assert sum(c["in"] + c["out"] for c in result.line_counts["campus"].values()) >= 3


def test_storage_outage_is_retried_reported_and_loses_nothing(stage, tmp_path):
    """The history database is locked by another process for 4 s mid-run (a real SQLite lock):
    the analytics runner retries with backoff, reports it, and the run neither hangs nor loses a row."""
    import sqlite3
    import time

    from storelens.storage import SqlStorage

    clean_db = SqlStorage(str(tmp_path / "clean.db"))
    clean = EmbeddedPipeline(_config(), storage=clean_db).run(_fresh(stage))

    path = str(tmp_path / "outage.db")
    store = SqlStorage(path, connect_timeout_s=1.0)
    locked, released = threading.Event(), threading.Event()

    def hold_lock() -> None:
        con = sqlite3.connect(path, timeout=30, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(4.0)
        con.execute("COMMIT")
        con.close()
        released.set()

    def on_tracked(tf) -> None:
        if tf.seq == 10 and not locked.is_set():
            threading.Thread(target=hold_lock, daemon=True).start()
            locked.wait(10)

    t0 = time.monotonic()
    res = EmbeddedPipeline(_config(), storage=store, on_tracked=on_tracked).run(_fresh(stage))
    assert released.is_set() and time.monotonic() - t0 < 120
    assert res.errors.get("storage", 0) >= 2, res.errors  # failed writes were retried and reported
    assert res.frames == clean.frames == 71 and res.line_counts == clean.line_counts
    assert store.line_totals("campus") == clean_db.line_totals("campus")
    tracks = lambda s: [(p.track_id, len(p.points)) for p in s.tracks("campus", 0, 2**62)]  # noqa: E731
    assert tracks(store) == tracks(clean_db) and len(tracks(store)) > 0
    store.close()
    clean_db.close()


def test_stop_from_another_thread_ends_the_run_while_a_stage_waits_on_a_full_queue(stage):
    """``stop()`` from another thread (here analytics' own callback) ends ``run()`` even when detect-track is
    waiting on analytics' full queue: analytics stops first and never drains it, so the bus must stop bounding
    at the stop (``run()`` hung there when it closed the bus only after every stage had ended)."""
    import time

    bus = InProcessBus(maxsize=8)
    pipe: EmbeddedPipeline | None = None
    taken: list[int] = []
    queue_was_full = threading.Event()

    def on_tracked(tf) -> None:  # on the analytics thread, which holds back here while detect-track runs on
        taken.append(tf.seq)
        if len(taken) != 3:
            return
        deadline = time.monotonic() + 60
        # analytics' queue of tracks is full (8) and detect-track's next publish waits (its offset is taken first)
        while bus.published(topics.TRACKS) < len(taken) + 8 + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        if bus.published(topics.TRACKS) >= len(taken) + 8 + 1:
            queue_was_full.set()
        pipe.stop()

    pipe = EmbeddedPipeline(_config(), bus=bus, on_tracked=on_tracked)
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = pipe.run(_fresh(stage))
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            out["error"] = exc

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=120)
    assert queue_was_full.is_set(), "detect-track never waited on a full queue: the test did not test the stop"
    assert not runner.is_alive(), "run() did not return after stop()"
    assert "error" not in out, out.get("error")
    assert 3 <= out["result"].frames < 71, out["result"].frames


def test_sigterm_ends_an_embedded_run_cleanly(tmp_path):
    """SIGTERM mid-run (Kubernetes, ``kill``, the demo's parent) ends the CLI's embedded runs as Ctrl-C does:
    ``run()`` stops each stage after the message in hand and returns what was counted, and the history holds it,
    instead of the process being killed mid-write. The SIGTERM handler is the CLI's only inside the run."""
    import os
    import signal

    from storelens.cli import _run
    from storelens.storage import SqlStorage

    class NotHandled(Exception):
        pass

    def not_handled(_signum, _frame):  # instead of the default action, which would kill the test session
        raise NotHandled("SIGTERM reached the test's own handler: the run installed none")

    sent: list[int] = []

    def on_tracked(tf) -> None:  # on the analytics thread; the signal goes to the main thread, in run()
        if tf.seq == 10 and not sent:
            sent.append(tf.seq)
            os.kill(os.getpid(), signal.SIGTERM)

    store = SqlStorage(str(tmp_path / "history.db"))
    previous = signal.signal(signal.SIGTERM, not_handled)
    try:
        result = _run(_config(), storage=store, on_tracked=on_tracked, show_progress=False)
        assert signal.getsignal(signal.SIGTERM) is not_handled  # the run's handler is gone again
    finally:
        signal.signal(signal.SIGTERM, previous)
        store.close()
    assert sent == [10]
    assert 11 <= result.frames < 71, result.frames  # stopped soon after the signal, not at the video's end
    reopened = SqlStorage(str(tmp_path / "history.db"))
    try:
        assert len(reopened.tracks("campus", 0, 2**62)) > 0  # what was tracked before the stop is kept
    finally:
        reopened.close()


def test_run_ends_its_site_watcher_before_returning(stage, tmp_path, monkeypatch):
    """``run()`` returns only once its look at the site versions in progress has ended, so a caller that closes
    the history right after it (the CLI, every test) never has that look read a closed store (it logged "could
    not read the site versions" with a traceback, into a closed stream at the end of a test)."""
    import time

    from storelens.runtime import embedded
    from storelens.storage import SqlStorage

    monkeypatch.setattr(embedded, "SITE_POLL_S", 0.05)  # the watcher looks within the run, however fast the run
    store = SqlStorage(str(tmp_path / "history.db"))
    pipeline = EmbeddedPipeline(_config(), storage=store)
    real, looks, errors = store.site_update, [], []

    def slow_site_update(*args):  # the watcher's look still running when the run ends
        if threading.current_thread().name != "site-watch":
            return real(*args)  # run()'s own first look
        pipeline._stop.wait()
        time.sleep(0.3)
        try:
            return real(*args)
        except Exception as exc:
            errors.append(exc)
            raise
        finally:
            looks.append(args)

    store.site_update = slow_site_update
    try:
        assert pipeline.run(_fresh(stage)).frames == 71
    finally:
        store.close()
    for t in threading.enumerate():  # before the fix, the watcher was still sleeping here
        if t.name == "site-watch":
            t.join(timeout=5)
    assert looks, "the watcher never looked at the site versions during the run"
    assert not errors, f"the watcher's look met the closed store: {errors}"


def test_a_run_keeps_the_newest_customer_matches_only():
    """A run of live cameras never ends: its result keeps the newest ``CUSTOMER_MATCHES_KEPT`` customer matches,
    in order (the history keeps them all), instead of every match since the start."""
    from storelens.runtime.embedded import CUSTOMER_MATCHES_KEPT, PipelineResult

    res = PipelineResult()
    res.customer_matches.extend(m.CustomerMatch(track_id=i) for i in range(CUSTOMER_MATCHES_KEPT + 5))
    assert len(res.customer_matches) == CUSTOMER_MATCHES_KEPT
    assert [x.track_id for x in list(res.customer_matches)[:2]] == [5, 6]
    assert res.customer_matches[-1].track_id == CUSTOMER_MATCHES_KEPT + 4
