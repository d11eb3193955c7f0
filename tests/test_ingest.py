"""Ingest on real video: sampling, resizing, timestamps, end of stream, live reconnect with backoff."""
from __future__ import annotations

import shutil
import threading
import time

import cv2
import numpy as np
import pytest

from storelens.contract import messages as m
from storelens.config import CameraConfig
from storelens.errors import DecodeError, SourceError
from storelens.backends.video import FrameSampler, camera_frames, decode_frame, is_live, read_live_frames
from storelens.paths import asset

CAMPUS = asset("mot", "TUD-Campus", "TUD-Campus.mp4")  # 640x480, 25 fps, 71 frames
STREET = asset("video", "people_street.mp4")  # 1920x1080, 30 fps, 302 frames


@pytest.mark.parametrize(("source_fps", "target_fps", "n", "kept"), [
    (25, None, 6, [0, 1, 2, 3, 4, 5]),
    (25, 25, 4, [0, 1, 2, 3]),
    (25, 50, 4, [0, 1, 2, 3]),  # cannot upsample
    (25, 5, 12, [0, 5, 10]),
    (30, 15, 7, [0, 2, 4, 6]),
    (30, 12, 11, [0, 3, 5, 8, 10]),  # 12 fps from 30: ticks every 2.5 frames
    (25, 0.5, 101, [0, 50, 100]),
], ids=["all", "same", "above-source", "every-5th", "half", "non-integer-ratio", "slow"])
def test_frame_sampler(source_fps, target_fps, n, kept):
    s = FrameSampler(source_fps, target_fps)
    assert [i for i in range(n) if s.keep(i)] == kept


@pytest.mark.parametrize(("source", "live"), [
    ("rtsp://10.0.0.5/stream1", True), ("http://cam/video.mjpg", True), ("0", True),
    ("/videos/a.mp4", False), ("relative/b.avi", False),
])
def test_is_live(source, live):
    assert is_live(source) is live


def test_file_frames_are_reproducible_and_end_with_eos():
    cam = CameraConfig(id="campus", source=str(CAMPUS), start_ts_ms=1_000_000)
    frames = list(camera_frames(cam))
    again = list(camera_frames(cam))
    assert [f.SerializeToString() for f in frames] == [f.SerializeToString() for f in again]
    assert len(frames) == 72 and frames[-1].end_of_stream and not frames[-1].jpeg
    assert [f.seq for f in frames] == list(range(72))
    assert [f.source_frame for f in frames[:-1]] == list(range(1, 72))
    assert [f.ts_ms for f in frames[:3]] == [1_000_000, 1_000_040, 1_000_080]  # 25 fps
    img = decode_frame(frames[5])
    assert img.shape == (480, 640, 3) and (frames[5].width, frames[5].height) == (640, 480)


def test_sampling_and_resize_keep_source_geometry():
    cam = CameraConfig(id="street", source=str(STREET), target_fps=10, resize_width=480)
    frames = list(camera_frames(cam))[:-1]
    assert len(frames) == 101  # 302 frames at 30 fps -> every 3rd
    assert [f.source_frame for f in frames[:3]] == [1, 4, 7]
    assert [f.ts_ms - cam.start_ts_ms for f in frames[:3]] == [0, 100, 200]
    f = frames[0]
    assert (f.width, f.height, f.source_width, f.source_height) == (480, 270, 1920, 1080)
    assert decode_frame(f).shape == (270, 480, 3)


def test_decode_frame_rejects_corrupt_and_mismatched_images():
    ok, buf = cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(DecodeError, match="corrupt JPEG"):
        decode_frame(m.Frame(camera_id="c", jpeg=b"\xff\xd8garbage", width=30, height=20))
    with pytest.raises(DecodeError, match="no image"):
        decode_frame(m.Frame(camera_id="c"))
    with pytest.raises(DecodeError, match="header says 64x48"):
        decode_frame(m.Frame(camera_id="c", jpeg=buf.tobytes(), width=64, height=48))
    assert decode_frame(m.Frame(camera_id="c", jpeg=buf.tobytes(), width=30, height=20)).shape == (20, 30, 3)


def test_raw_frames_carry_the_resized_source_pixels_and_the_same_header():
    """``pipeline.frames: bgr`` (the embedded default): the pixels the JPEG frames approximate, exactly."""
    cam = CameraConfig(id="street", source=str(STREET), target_fps=10, resize_width=480)
    raw = [f for f, _ in zip(camera_frames(cam, frame_format="bgr"), range(4))]
    jpeg = [f for f, _ in zip(camera_frames(cam), range(4))]
    cap = cv2.VideoCapture(str(STREET))
    ok, first = cap.read()
    cap.release()
    assert ok
    expected = cv2.resize(first, (480, 270), interpolation=cv2.INTER_AREA)
    for r, j in zip(raw, jpeg):
        assert r.WhichOneof("image") == "bgr" and not r.jpeg and j.WhichOneof("image") == "jpeg"
        header = ("camera_id", "seq", "ts_ms", "width", "height", "source_frame", "source_width", "source_height",
                  "image_digest")
        assert [getattr(r, k) for k in header] == [getattr(j, k) for k in header]
        img = decode_frame(m.decode(m.Frame, m.encode(r)))  # through the codec, as on the bus
        assert img.shape == (270, 480, 3) and not img.flags.writeable
        diff = np.abs(img.astype(int) - decode_frame(j).astype(int))
        assert 0 < diff.mean() < 3  # JPEG q90 is close, but lossy
    assert np.array_equal(decode_frame(raw[0]), expected)


@pytest.mark.parametrize(("frame", "error"), [
    (m.Frame(camera_id="c", bgr=bytes(30 * 20 * 3 - 1), width=30, height=20), "header says 30x20"),
    (m.Frame(camera_id="c", bgr=bytes(30 * 20 * 3), width=20, height=30 * 3), "header says 20x90"),
    (m.Frame(camera_id="c", bgr=bytes(12)), "header says 0x0"),
    (m.Frame(camera_id="c", bgr=b"", width=640, height=0), "header says 640x0"),  # was a 0x640 image
], ids=["short", "wrong-size", "no-size", "no-height"])
def test_decode_rejects_raw_pixels_that_do_not_fit_the_header(frame, error):
    with pytest.raises(DecodeError, match=error):
        decode_frame(frame)


def test_corrupt_file_is_a_source_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(CAMPUS.read_bytes()[:3000])
    with pytest.raises(SourceError):
        list(camera_frames(CameraConfig(id="c", source=str(bad))))


def test_live_source_reconnects_with_backoff(tmp_path):
    """A live source that is missing at first, then ends (drops), is reopened each time."""
    src = tmp_path / "cam.mp4"
    stop = threading.Event()
    got: list[int] = []
    clock = iter(range(10**9))

    def consume():
        for raw in read_live_frames(str(src), max_backoff_s=0.4, should_stop=stop.is_set,
                                    clock_ms=lambda: next(clock)):
            got.append(raw.index)
            if len(got) >= 71 * 2 + 5:  # the whole clip twice and then some: two reconnects
                stop.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(1.0)  # source unavailable: the reader backs off and retries
    assert got == [] and t.is_alive()
    shutil.copy(CAMPUS, src)
    t.join(timeout=60)
    assert not t.is_alive()
    assert got == list(range(len(got))) and len(got) == 71 * 2 + 5  # indices keep increasing across reconnects


def test_live_sampling_follows_timestamps():
    from storelens.backends.video import RawFrame, _time_sampled

    img = np.zeros((2, 2, 3), np.uint8)
    stamps = [0, 30, 70, 100, 140, 210, 240, 600, 610]  # irregular arrival, then a stall
    kept = [r.ts_ms for r in _time_sampled((RawFrame(i, t, img) for i, t in enumerate(stamps)), target_fps=10)]
    assert kept == [0, 100, 210, 600]
    assert len(list(_time_sampled((RawFrame(i, t, img) for i, t in enumerate(stamps)), None))) == len(stamps)


def _served_live_source(tmp_path, n_frames: int = 20) -> tuple[str, object]:
    """A live source: the first ``n_frames`` of TUD-Campus as an MJPG AVI served over HTTP (FFmpeg reads it as
    it arrives, and :func:`read_live_frames` reopens it when it ends, as a dropped stream)."""
    import functools
    import http.server

    cap = cv2.VideoCapture(str(CAMPUS))
    writer = cv2.VideoWriter(str(tmp_path / "cam.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 480))
    for _ in range(n_frames):
        ok, img = cap.read()
        assert ok
        writer.write(img)
    writer.release()
    cap.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/cam.avi", server


def test_a_restarted_ingest_numbers_a_live_camera_above_its_old_frames(tmp_path):
    """An ingest process that restarts has lost its counters. A live stream's frames are numbered from its first
    frame's wall-clock ms, so the new process's numbers are above every number the old one published and
    detect-track, analytics and faces (which skip ``seq <= last seq`` as redeliveries) take the new frames.
    Before, both processes numbered from 0 and the new frames were dropped until they passed the old count."""
    from storelens.runtime.ingest import CameraSupervisor

    url, server = _served_live_source(tmp_path)
    cam = CameraConfig(id="door", source=url)
    assert is_live(url)

    def one_process(n: int) -> list[m.Frame]:
        """A fresh supervisor (a new ingest process) publishing ``n`` frames of the camera, then stopped."""
        got: list[m.Frame] = []
        done = threading.Event()

        def publish(key: bytes, value: bytes) -> None:
            if len(got) < n:
                got.append(m.decode(m.Frame, value))
            if len(got) >= n:
                done.set()

        errors: list = []
        sup = CameraSupervisor(publish, done.is_set, lambda c, exc: errors.append(exc))
        sup.apply([cam])
        assert done.wait(60), f"the live camera published {len(got)} of {n} frames in 60 s"
        sup.stop(timeout_s=10)
        assert not errors
        return got

    try:
        t0_ms = int(time.time() * 1000)
        first = one_process(30)  # through one reconnect (the source "drops" after 20 frames)
        second = one_process(5)
    finally:
        server.shutdown()
    seqs = [f.seq for f in first]
    assert seqs == list(range(seqs[0], seqs[0] + 30))  # consecutive across the reconnect
    assert t0_ms <= seqs[0] <= first[0].ts_ms  # from the first frame's wall-clock ms
    assert not any(f.end_of_stream for f in first + second)  # a live stream has no end
    assert second[0].seq > seqs[-1]  # the restarted process goes on above the old numbers
    assert [f.seq for f in second] == list(range(second[0].seq, second[0].seq + 5))


def test_a_file_read_again_keeps_its_numbers_from_first_seq():
    """Files keep their numbering (a replay after a restart is skipped downstream); ``first_seq`` shifts it, as a
    camera restarted inside one process goes on after its old stream."""
    cam = CameraConfig(id="campus", source=str(CAMPUS), target_fps=5)
    frames = list(camera_frames(cam, first_seq=100))
    assert [f.seq for f in frames] == list(range(100, 100 + len(frames))) and frames[-1].end_of_stream
    assert [f.seq for f in camera_frames(cam)] == [f.seq - 100 for f in frames]


def test_a_camera_thread_failing_on_an_unexpected_error_is_reported_as_a_source_error():
    """Anything a camera's thread raises (here the publisher: a client library's own error) fails that camera
    through ``on_error``, logged and counted by the caller, instead of ending the thread silently."""
    from storelens.runtime.ingest import CameraSupervisor

    errors: list = []

    def publish(key: bytes, value: bytes) -> None:
        raise RuntimeError("client went away")

    sup = CameraSupervisor(publish, lambda: False, lambda cam, exc: errors.append((cam.id, exc)))
    sup.apply([CameraConfig(id="campus", source=str(CAMPUS))])
    for t in sup.threads().values():
        t.join(30)
    assert [(cid, type(exc)) for cid, exc in errors] == [("campus", SourceError)]
    assert "RuntimeError: client went away" in str(errors[0][1])
