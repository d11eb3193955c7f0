"""Review of the merged ingest changes (31c), each with a test that fails on the code before.

1. A re-pointed camera whose old stream's end-of-stream marker is not delivered publishes it again until it is, then
   keeps its new stream's start and starts (before: its thread returned silently, the marker lost for good).
2. A file restarted at another ``target_fps`` after an unclean stop numbers its frames above every frame the stopped
   process may have published past the kept position (before: their seqs were used again for later frames, which
   downstream skipped as replays), and goes on from the first frame not known delivered.
"""
from __future__ import annotations

import threading

import pytest

from storelens.backends.video import FrameSampler, source_fps
from storelens.config import CameraConfig
from storelens.contract import messages as m
from storelens.runtime import ingest
from storelens.runtime.ingest import CameraSupervisor, StreamStart, stream_id
from test_merged_review_31b import _run, _video


# 1 ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["ingest down", "ingest running"])
def test_an_undelivered_end_marker_is_published_again_and_the_new_stream_starts(tmp_path, monkeypatch, where):
    """``ingest down``: the kept stream is another source's (re-pointed while ingest was down); ``ingest running``:
    re-pointed by a cameras list while its old stream runs. The marker's first delivery fails (the broker away
    longer than the producer's timeout, or it refused it)."""
    monkeypatch.setattr(ingest, "MARKER_RETRY_S", 0.01, raising=False)
    old = CameraConfig(id="c", source=_video(tmp_path / "old.avi", 40))
    new = CameraConfig(id="c", source=_video(tmp_path / "new.avi", 6))
    sent: list[m.Frame] = []
    kept, errors, retries, checks = [], [], [], []
    some_old = threading.Event()

    def publish(key, value, stopped):
        frame = m.decode(m.Frame, value)
        if where == "ingest running" and where_source[0] == "old" and len(sent) >= 3:
            some_old.set()
            while not stopped():  # the old stream's 4th frame waits: the broker is away, then the re-pointing
                threading.Event().wait(0.01)
            return False
        sent.append(frame)

    def delivered(cam, stopped):
        markers = [f for f in sent if f.end_of_stream]
        ok = not (len(markers) == 1 and not checks)  # the first marker's delivery fails
        if markers:
            checks.append(ok)
        return ok

    where_source = ["old" if where == "ingest running" else "new"]
    streams = {} if where == "ingest running" else {"c": StreamStart(stream_id(old), 0, 0, False, 0.0, (5, 5))}
    sup = CameraSupervisor(publish, lambda: False, lambda c, e: errors.append(e), streams=streams,
                           on_stream=lambda c, s, stopped: kept.append(s) or True, on_position=lambda c, p: None,
                           publish_takes_stop=True, delivered=delivered, on_end_retry=lambda c: retries.append(c.id))
    if where == "ingest running":
        sup.apply([old])
        assert some_old.wait(60)
        where_source[0] = "new"
        kept.clear()
    sup.apply([new])
    sup.threads()["c"].join(60)

    markers = [f for f in sent if f.end_of_stream]
    assert not errors and len(markers) == 3  # before: the old stream's marker once, nothing after it
    new_frames = [f for f in sent if not f.end_of_stream and f.seq > markers[0].seq]
    assert markers[0] == markers[1] and retries == ["c"]  # published twice, the failure counted
    assert [s.stream_id for s in kept] == [stream_id(new)]  # the new stream kept (before: on_stream never called)
    assert len(new_frames) == 6 and new_frames[0].seq > markers[0].seq  # and its frames published after the marker
    assert markers[-1].seq == new_frames[-1].seq + 1  # the new file's own end marker


# 2 ----------------------------------------------------------------------------------------------------------------

def _first_kept_from(path: str, fps: float, frame: int) -> int:
    """The first source frame (1-based) at or after ``frame`` that sampling at ``fps`` from the file's start keeps."""
    sampler = FrameSampler(source_fps(path), fps)
    return next(i + 1 for i in range(10_000) if sampler.keep(i, i / source_fps(path)) and i + 1 >= frame)


@pytest.mark.parametrize("old_fps, new_fps", [(10.0, 2.0), (0.0, 5.0), (2.0, 10.0)])
def test_a_restart_at_another_rate_after_an_unclean_stop_numbers_above_what_was_published(tmp_path, old_fps,
                                                                                          new_fps):
    src = _video(tmp_path / "v.avi", 60, 10.0)
    cam = CameraConfig(id="c", source=src, start_ts_ms=1_767_225_600_000, target_fps=old_fps or None)
    out, kept = _run(cam, {}, stop_after=25 if old_fps != 2.0 else 6)
    published = max(f.seq for f in out)
    # an unclean stop: the position kept at the stop is lost, the last one kept about a second of the file before
    crash = [k for k in kept if k.position[0] <= published][-1]
    assert crash.position[0] <= published  # frames past it were published (and maybe delivered)
    out2, _ = _run(cam.model_copy(update={"target_fps": new_fps}), {"c": crash})
    first = out2[0]
    assert first.seq > published  # before: 21 (10 -> 2 fps): the frames of seqs 21..24 skipped downstream as replays
    # no file time skipped: the first frame the new rate keeps at or after the first one not known delivered
    assert crash.position[1] < first.source_frame <= _first_kept_from(src, new_fps, crash.position[1] + 1)
    assert out2[-1].end_of_stream and [f.seq for f in out2] == list(range(first.seq, first.seq + len(out2)))


def test_a_restart_at_another_rate_before_any_position_was_kept_numbers_above_what_was_published(tmp_path):
    """A second unclean stop right after a rate change: only the resumed stream's start is kept (no position)."""
    src = _video(tmp_path / "v.avi", 60, 10.0)
    cam = CameraConfig(id="c", source=src, start_ts_ms=1_767_225_600_000, target_fps=10.0)
    started: list[StreamStart] = []
    out, kept = _run(cam, {}, stop_after=25)
    crash = [k for k in kept if k.position[0] <= max(f.seq for f in out)][-1]
    # the restart at 5 fps keeps its start, publishes 4 frames (under a second of the file) and stops uncleanly
    sup_out: list[m.Frame] = []
    stopping = [False]

    def publish(key, value):
        sup_out.append(m.decode(m.Frame, value))
        stopping[0] = len(sup_out) >= 4

    sup = CameraSupervisor(publish, lambda: stopping[0], lambda c, e: None, streams={"c": crash},
                           on_stream=lambda c, s, stopped: started.append(s) or True, on_position=lambda c, p: None)
    cam5 = cam.model_copy(update={"target_fps": 5.0})
    sup.apply([cam5])
    sup.threads()["c"].join(60)
    assert len(started) == 1 and started[0].position is None and len(sup_out) == 4
    out3, _ = _run(cam.model_copy(update={"target_fps": 2.0}), {"c": started[0]})
    assert out3[0].seq > max(f.seq for f in sup_out)  # before: from the start record's seq again (skipped downstream)
    assert started[0].after_source_frame < out3[0].source_frame <= _first_kept_from(
        src, 2.0, started[0].after_source_frame + 1)
