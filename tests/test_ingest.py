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
], ids=["short", "wrong-size", "no-size"])
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
