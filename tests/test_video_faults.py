"""Faults of video ingest on real files: corrupt frames, sources that end or give nothing, stops, gaps.

The videos are small MJPEG AVIs written here with OpenCV; a frame is corrupted on disk by wiping the start of its
JPEG (as a damaged recording is), and the real reader (:func:`storelens.backends.video.read_file_frames`, under
:func:`~storelens.backends.video.camera_frames`, the camera supervisor and the embedded pipeline) reads them.
"""
from __future__ import annotations

import logging
import pathlib
import struct
import threading
import time

import cv2
import numpy as np
import pytest

from storelens.backends import video
from storelens.backends.video import camera_frames, is_live, read_file_frames, read_live_frames
from storelens.config import CameraConfig, parse_config
from storelens.contract import messages as m
from storelens.domain.framerate import FrameRate
from storelens.errors import SourceError
from storelens.paths import asset

CAMPUS = asset("mot", "TUD-Campus", "TUD-Campus.mp4")  # 640x480, 25 fps, 71 frames
FPS = 10
T0 = 1_000_000


def level(i: int) -> int:
    """The grey level of frame ``i`` of :func:`write_clip` (tells which frame a decoded image is)."""
    return 20 + 7 * (i % 32)


def which(image: np.ndarray) -> int:
    """``i % 32`` of the frame ``i`` whose picture ``image`` is (JPEG moves the grey level by a unit or two)."""
    return int(round((float(image.mean()) - 20) / 7))


def write_clip(path: pathlib.Path, n: int = 30, size: tuple[int, int] = (64, 48)) -> pathlib.Path:
    """An MJPEG AVI of ``n`` flat grey frames at 10 fps, frame ``i`` at :func:`level` ``(i)``."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, size)
    for i in range(n):
        out.write(np.full((size[1], size[0], 3), level(i), np.uint8))
    out.release()
    return path


def wipe_frames(path: pathlib.Path, frames) -> pathlib.Path:
    """Zero the first 200 bytes of the JPEG of each of ``frames`` (its header: the frame cannot be decoded)."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    for f in frames:
        data[starts[f]:starts[f] + 200] = bytes(200)
    path.write_bytes(bytes(data))
    return path


def read(path, keep=None) -> tuple[list[tuple[int, int, int]], list[int]]:
    """``(index, ts_ms - T0, which picture)`` of each frame read, and the runs of bad frames reported."""
    bad: list[int] = []
    got = [(r.index, r.ts_ms - T0, which(r.image_bgr))
           for r in read_file_frames(str(path), T0, keep=keep, on_bad_frames=bad.append)]
    return got, bad


def expected(indices) -> list[tuple[int, int, int]]:
    return [(i, i * 1000 // FPS, i % 32) for i in indices]


# -- 1. a corrupt frame is skipped, not the end of the file -----------------------------------------------


@pytest.mark.parametrize(("wiped", "kept", "runs"), [
    pytest.param([10], [i for i in range(30) if i != 10], [1], id="one-frame-mid-file"),
    pytest.param([10, 11, 12, 20], [i for i in range(30) if i not in (10, 11, 12, 20)], [3, 1], id="two-runs"),
    pytest.param([0], list(range(1, 30)), [1], id="first-frame"),
    pytest.param([27, 28, 29], list(range(27)), [], id="last-frames"),  # the end (an estimated count is no proof)
])
def test_unreadable_frames_are_skipped_and_later_frames_keep_their_position(tmp_path, caplog, wiped, kept, runs):
    clip = wipe_frames(write_clip(tmp_path / "clip.avi"), wiped)
    with caplog.at_level(logging.WARNING, logger="storelens.backends.video"):
        got, bad = read(clip)
    assert got == expected(kept)  # each frame with its own index, time and picture
    assert bad == runs  # each run of bad frames reported once ...
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == len(runs)  # ... and logged once


def test_sampling_skips_to_the_next_good_frame_after_a_corrupt_one(tmp_path):
    """At 5 fps of the 10 fps clip the even frames are kept; frame 10 is unreadable: frame 11 takes its tick."""
    from storelens.backends.video import FrameSampler

    clip = wipe_frames(write_clip(tmp_path / "clip.avi"), [10])
    got, bad = read(clip, keep=FrameSampler(FPS, 5).keep)
    assert [g[0] for g in got] == [0, 2, 4, 6, 8, 11, 12, 14, 16, 18, 20, 22, 24, 26, 28] and bad == [1]
    assert got == expected([g[0] for g in got])


@pytest.mark.parametrize("short", [1, 0], ids=["one-short-of-the-limit", "the-limit"])
def test_a_long_unreadable_stretch_ends_the_file(tmp_path, short):
    """:data:`~storelens.backends.video.MAX_BAD_FRAMES_IN_A_ROW` unreadable frames in a row end reading (a
    truncated or ruined file, or the end of one whose frame count is unknown); one fewer is skipped."""
    limit = video.MAX_BAD_FRAMES_IN_A_ROW
    clip = wipe_frames(write_clip(tmp_path / "long.avi", n=limit + 15, size=(32, 24)), range(5, 5 + limit - short))
    got, bad = read(clip)
    after = range(5 + limit - short, limit + 15)
    assert got == expected([*range(5), *after]) if short else expected(range(5))
    assert bad == ([limit - short] if short else [])


@pytest.fixture
def clip_with_bad_frame_10(tmp_path) -> pathlib.Path:
    return wipe_frames(write_clip(tmp_path / "cam.avi"), [10])


def test_camera_frames_publish_every_good_frame_then_the_end(clip_with_bad_frame_10):
    frames = list(camera_frames(CameraConfig(id="cam", source=str(clip_with_bad_frame_10), start_ts_ms=T0)))
    assert len(frames) == 30 and frames[-1].end_of_stream and not any(f.end_of_stream for f in frames[:-1])
    assert [f.seq for f in frames] == list(range(30))
    assert [f.source_frame for f in frames[:-1]] == [i + 1 for i in range(30) if i != 10]
    assert [f.ts_ms - T0 for f in frames[9:12]] == [900, 1100, 1200]


def test_a_file_with_no_decodable_frame_ends_its_stream_then_fails(tmp_path):
    """The error comes after an end-of-stream marker, so downstream closes what the camera had."""
    clip = wipe_frames(write_clip(tmp_path / "dead.avi"), range(30))
    out: list[m.Frame] = []
    bad: list[int] = []
    with pytest.raises(SourceError, match=r"no decodable frame in .*dead\.avi"):
        for f in camera_frames(CameraConfig(id="dead", source=str(clip), start_ts_ms=T0), on_bad_frames=bad.append):
            out.append(f)
    assert [(f.seq, f.ts_ms, f.end_of_stream) for f in out] == [(0, T0, True)]
    assert bad == []  # unreadable to its end: no frame was skipped before a good one


# -- 1b. one camera's bad file does not stop the others ----------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    from storelens.backends.detectors import build_detector

    return build_detector(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}).detector)


@pytest.mark.slow
def test_embedded_run_goes_on_when_one_cameras_file_cannot_be_read(tmp_path, caplog, detector):
    """Embedded mode: a camera whose file has no decodable frame fails alone (logged, counted), its end-of-stream
    marker reaches analytics, and the other cameras are read to their end: one with a corrupt first frame (all
    its other frames), the TUD-Campus clip (all of it). Only when every camera fails does the run fail."""
    from storelens.runtime.embedded import EmbeddedPipeline

    dead = wipe_frames(write_clip(tmp_path / "dead.avi"), range(30))
    first_bad = wipe_frames(write_clip(tmp_path / "first_bad.avi"), [0])
    site = {"store": {"id": "s"}, "cameras": [
        {"id": "dead", "source": str(dead)}, {"id": "first-bad", "source": str(first_bad)},
        {"id": "campus", "source": str(CAMPUS), "target_fps": 5}]}
    pipe = EmbeddedPipeline(parse_config(site), detector=detector)
    with caplog.at_level(logging.ERROR, logger="storelens.runtime.embedded"):
        result = pipe.run()
    assert result.frames_per_camera == {"first-bad": 29, "campus": 15}
    assert result.errors.get("source") == 1 and result.errors.get("decode") == 1  # first-bad's frame 0
    failed = [r for r in caplog.records if r.getMessage() == "camera failed"]
    assert [r.camera for r in failed] == ["dead"] and "no decodable frame" in failed[0].error
    assert {"dead", "first-bad", "campus"} <= pipe.analytics.ended  # every stream closed downstream

    with pytest.raises(SourceError, match="no decodable frame"):  # nothing could be read (storelens count ...)
        EmbeddedPipeline(parse_config({"store": {"id": "s"}, "cameras": site["cameras"][:1]}),
                         detector=detector).run()


# -- 2. a stop is not an end of stream -------------------------------------------------------------------


def test_a_stopped_file_stream_has_no_end_of_stream_marker(tmp_path):
    clip = write_clip(tmp_path / "cam.avi")
    cam = CameraConfig(id="cam", source=str(clip), start_ts_ms=T0)
    got: list[m.Frame] = []
    for f in camera_frames(cam, should_stop=lambda: len(got) >= 3):
        got.append(f)
    assert [(f.seq, f.end_of_stream) for f in got] == [(0, False), (1, False), (2, False)]


def test_supervisor_stop_publishes_no_end_but_a_restart_ends_the_old_stream(tmp_path):
    """SIGTERM (the process stops: :meth:`CameraSupervisor.stop`) leaves the stream open: the next process goes on
    with its tracks. A re-pointed camera (a new ``start_ts_ms``; a new sampling alone resumes the file:
    tests/test_review_fixes_5.py) reads the file again from its start: the old stream ended for good and says so."""
    from storelens.runtime.ingest import CameraSupervisor

    clip = write_clip(tmp_path / "cam.avi", n=200, size=(32, 24))
    published: list[m.Frame] = []
    lock = threading.Lock()

    def publish(key: bytes, value: bytes) -> None:  # a consumer taking 20 ms a frame
        with lock:
            published.append(m.decode(m.Frame, value))
        time.sleep(0.02)

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(published) >= n:
                    return
            time.sleep(0.01)
        raise AssertionError(f"fewer than {n} frames published in 60 s")

    cam = CameraConfig(id="cam", source=str(clip), start_ts_ms=T0)
    stopping = threading.Event()
    errors: list = []
    sup = CameraSupervisor(publish, stopping.is_set, lambda c, exc: errors.append(exc))
    sup.apply([cam])
    wait_for(3)
    stopping.set()  # SIGTERM
    sup.stop(timeout_s=10)
    assert published and len(published) < 200 and not any(f.end_of_stream for f in published)

    published.clear()
    sup = CameraSupervisor(publish, lambda: False, lambda c, exc: errors.append(exc))
    sup.apply([cam])
    wait_for(3)
    sup.apply([cam.model_copy(update={"target_fps": 5.0, "start_ts_ms": T0 + 3_600_000})])  # re-pointed: restarted
    wait_for(len(published) + 2)
    sup.stop(timeout_s=10)
    ends = [i for i, f in enumerate(published) if f.end_of_stream]
    assert len(ends) == 1 and published[ends[0] + 1].ts_ms == T0 + 3_600_000  # the old stream's end, then the file
    assert published[ends[0] + 1].source_frame == 1  # again from its start
    assert [f.seq for f in published] == list(range(len(published)))
    assert not errors


# -- 3. a live source that opens but gives nothing is retried with backoff -------------------------------


def test_a_live_source_that_opens_but_gives_no_frame_is_reopened_with_backoff(tmp_path, caplog):
    """A real source that OpenCV opens but reads nothing from (an AVI whose every frame is corrupt) is reopened
    after 0.5 s, then 1 s, ... (not in a tight loop), and the wait ends as soon as the reader is stopped."""
    src = str(wipe_frames(write_clip(tmp_path / "cam.avi"), range(30)))
    assert not is_live(src) and cv2.VideoCapture(src).isOpened()  # a file read as a live stream: opens, no frame
    stop = threading.Event()
    got: list = []
    t = threading.Thread(target=lambda: got.extend(read_live_frames(src, should_stop=stop.is_set)), daemon=True)
    with caplog.at_level(logging.WARNING, logger="storelens.backends.video"):
        t.start()
        time.sleep(1.2)  # opens at 0 s, 0.5 s, then waits 1 s
        stop.set()
        t0 = time.monotonic()
        t.join(timeout=5)
        stopped_in = time.monotonic() - t0
    drops = [r for r in caplog.records if r.getMessage() == "stream dropped, reconnecting"]
    assert got == [] and not t.is_alive()
    assert 1 <= len(drops) <= 3, f"{len(drops)} reopens in 1.2 s"
    assert [r.backoff_s for r in drops[:2]] == [0.5, 1.0][:len(drops[:2])]
    assert stopped_in < 0.5  # the backoff wait ends on the stop


# -- 4. a gap in a stream is not its frame rate ------------------------------------------------------------


def _steady(fps: float, n: int, start: int = 0) -> list[int]:
    return [start + round(k * 1000 / fps) for k in range(n)]


@pytest.mark.parametrize(("stamps", "rate"), [
    pytest.param(_steady(5, 20), 5.0, id="steady-5fps"),
    pytest.param(_steady(5, 20) + _steady(5, 5, 3800 + 30_000), 5.0, id="30s-reconnect-gap"),
    pytest.param(_steady(5, 20) + _steady(5, 3, 3800 + 30_000) + _steady(5, 3, 4200 + 60_000), 5.0,
                 id="two-gaps-frames-between"),
    pytest.param(_steady(25, 20) + _steady(2, 30, 760 + 500), 2.0, id="new-rate-25-to-2fps"),
    pytest.param([0, 1] + _steady(5, 30, 201), 5.0, id="glitch-at-start"),
    # a live camera's frames stamped when read, in pairs 3 ms then 77 ms apart (25 fps): no break (was 333 fps)
    pytest.param([k // 2 * 80 + k % 2 * 3 for k in range(60)], 25.0, id="bursts-of-two"),
])
def test_frame_rate_leaves_gaps_out(stamps, rate):
    r = FrameRate()
    for t in stamps:
        r.update(t)
    assert r.reported == pytest.approx(rate, rel=0.1)


def test_frame_rate_after_a_gap_goes_on_from_the_rate_before():
    """At 5 fps, a 30 s gap (a reconnect) left the estimate at 0.31 fps and took ~40 frames to recover; now the
    gap is not told at all and the next frames go on at 5 fps."""
    r = FrameRate()
    told = [r.update(t) for t in _steady(5, 20)]
    assert [f for f in told if f is not None] == [5.0]
    told = [r.update(t) for t in _steady(5, 10, 3800 + 30_000)]
    assert told == [None] * 10 and r.reported == 5.0


# -- 5. variable frame rate: a frame's time is its presentation time --------------------------------------


def _variable_rate(path: pathlib.Path, runs: tuple[tuple[int, float], ...] = ((30, 0.5), (30, 1.5))) -> pathlib.Path:
    """An MP4 of 60 frames: by default the first 30 at 20 fps (50 ms apart), the next 30 at 6.67 fps (150 ms),
    6 s in all. ``runs``: (frames, duration of each in 100 ms), 60 frames and 6 s in all.

    Written at 10 fps by OpenCV, then its sample durations (the ``stts`` box) rewritten as a variable-rate
    recorder writes them; the total stays 6 s, so the edit list and header durations still fit.
    """
    assert sum(n for n, _ in runs) == 60 and sum(n * f for n, f in runs) == 60
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 48))
    for i in range(60):
        out.write(np.full((48, 64, 3), level(i), np.uint8))
    out.release()
    data = path.read_bytes()

    def rebuild(d: bytes) -> bytes:
        out, off = b"", 0
        while off < len(d):
            size, kind = struct.unpack(">I4s", d[off:off + 8])
            body = d[off + 8:off + size]
            if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
                body = rebuild(body)
            elif kind == b"stts":
                _, n, delta = struct.unpack(">4xIII", body)  # one entry: 60 frames of 1/10 s
                assert (n, delta % 2) == (60, 0)
                body = struct.pack(f">II{2 * len(runs)}I", 0, len(runs),
                                   *[v for n, f in runs for v in (n, int(delta * f))])
            out += struct.pack(">I4s", len(body) + 8, kind) + body
            off += size
        return out

    assert data.index(b"mdat") < data.index(b"moov")  # growing the index moves no frame
    path.write_bytes(rebuild(data))
    return path


def test_a_variable_frame_rate_file_is_stamped_and_sampled_by_presentation_time(tmp_path):
    clip = _variable_rate(tmp_path / "vfr.mp4")
    cap = cv2.VideoCapture(str(clip))
    assert cap.get(cv2.CAP_PROP_FPS) == 10  # the mean rate: index / fps would put every frame 100 ms apart
    cap.release()
    got, bad = read(clip)
    assert [g[0] for g in got] == list(range(60)) and [g[2] for g in got] == [i % 32 for i in range(60)]
    assert [g[1] for g in got] == [50 * i for i in range(30)] + [1500 + 150 * i for i in range(30)]
    kept = [r.ts_ms - T0 for r in read_file_frames(str(clip), T0, keep=video.FrameSampler(FPS, 5).keep)]
    assert kept[:8] == [0, 200, 400, 600, 800, 1000, 1200, 1400]  # 5 fps of the 20 fps part: every 4th frame
    assert all(b - a >= 150 for a, b in zip(kept, kept[1:])) and len(kept) == 30  # 5 fps of 6 s


def test_a_repeated_presentation_time_goes_on_from_the_last_time():
    """A frame whose presentation time does not move forward (a repeated or reset timestamp in joined
    recordings) gets the last time plus one frame interval, and the frames after it their own times again:
    times never go back (before, the rest of the file fell back to index / fps, 1 s ahead of its real times)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        # 20 frames 50 ms apart, one of 0 ms (frame 21 repeats frame 20's 1000 ms), 11 of 200 ms, 28 of 100 ms
        clip = _variable_rate(pathlib.Path(tmp) / "repeat.mp4", ((20, 0.5), (1, 0.0), (11, 2.0), (28, 1.0)))
        got, _ = read(clip)
    ts = [g[1] for g in got]
    assert [g[0] for g in got] == list(range(60)) and all(b > a for a, b in zip(ts, ts[1:]))
    assert ts[:21] == [50 * i for i in range(21)]
    assert ts[21] == 1100  # 1000 repeated: the last time + 1 / fps (10 fps)
    assert ts[22:33] == [1200 + 200 * i for i in range(11)] and ts[59] == 5900  # their own times again
