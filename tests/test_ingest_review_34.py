"""Ingest review 34: sources the supervisor must survive or classify right.

1. A camera source that :func:`urllib.parse.urlsplit` refuses (an IPv6 host without its ``]``, a hostname in
   brackets) made :func:`~storelens.config.redact.redact_source` raise: :meth:`CameraSupervisor.apply` raised out of
   the ingest service's start (every camera stopped, at every restart: the site version is read again), and out of
   the embedded run. Now the source is redacted by hand and the camera reconnects like any unreachable one.
2. Live sources named otherwise than the few schemes and ``/dev/video*`` (``srt://``, udev's stable device names
   ``/dev/v4l/by-id/...``) were read as files: a camera that is not there yet got an end-of-stream marker and
   failed for good (a device that is: stamped from ``start_ts_ms``, numbered from 0 again after a restart).
3. A variable-frame-rate file whose mean rate is at or below ``target_fps`` was not sampled at all: its faster
   stretches were published at their own rate (20 fps for a ``target_fps`` of 10).
"""
from __future__ import annotations

import threading

import pytest

from storelens.backends.video import camera_frames, is_live
from storelens.config import CameraConfig, IngestConfig
from storelens.config.redact import redact_source
from storelens.contract import messages as m
from storelens.paths import asset
from storelens.runtime.ingest import CameraSupervisor, StreamStart, previous_stream_id, stream_id
from storelens.runtime.localdeploy import free_port
from test_video_faults import _variable_rate

CAMPUS = asset("mot", "TUD-Campus", "TUD-Campus.mp4")  # 640x480, 25 fps, 71 frames
FAST = IngestConfig(reconnect_backoff_s=0.01, reconnect_backoff_max_s=0.02)


@pytest.mark.parametrize(("source", "shown"), [
    ("rtsp://admin:S3cret@[fe80::1/live?password=hunter2", "rtsp://[fe80::1/live?password=***"),
    ("rtsp://admin:S3cret@[nvr-1]:554/user=admin&password=hunter2&channel=1",
     "rtsp://[nvr-1]:554/user=***&password=***&channel=1"),
    ("rtsp://admin:S3cret@[x", "rtsp://[x"),
], ids=["unclosed-ipv6", "bracketed-hostname", "host-only"])
def test_an_unparsable_url_is_redacted_without_its_credentials(source, shown):
    assert redact_source(source) == shown
    cam = CameraConfig(id="door", source=source)
    assert stream_id(cam) == stream_id(cam.model_copy(update={"source": source.replace("S3cret", "new")}))
    previous_stream_id(cam)  # (the digest a former release kept: no error either)


@pytest.mark.parametrize("streams", [None, {"bad": StreamStart("0" * 16, 0)}], ids=["embedded", "service"])
def test_one_camera_with_an_unparsable_url_does_not_stop_the_others(streams):
    """Before, apply() raised ValueError ("Invalid IPv6 URL"): the ingest service exited at every start."""
    frames: list[m.Frame] = []
    reopens: list[str] = []
    errors: list = []
    stop = threading.Event()

    def publish(key: bytes, value: bytes) -> None:
        frames.append(m.decode(m.Frame, value))

    def reopening(cam: CameraConfig) -> None:
        reopens.append(cam.id)

    sup = CameraSupervisor(publish, stop.is_set, lambda cam, exc: errors.append((cam.id, exc)), reconnect=FAST,
                           on_reopen=reopening, streams=streams, on_stream=lambda cam, start, stopped: True)
    good = CameraConfig(id="good", source=str(CAMPUS), target_fps=5)
    bad = CameraConfig(id="bad", source=f"rtsp://admin:S3cret@[fe80::1:{free_port()}/live")
    sup.apply([bad, good])
    sup.threads()["good"].join(60)
    assert not sup.threads()["good"].is_alive()
    assert "bad" in sup.alive()  # reconnecting with backoff, as any camera that cannot be reached
    stop.set()
    sup.stop(timeout_s=10)
    assert not errors and reopens and set(reopens) == {"bad"}
    ours = [f for f in frames if f.camera_id == "good"]
    assert ours[-1].end_of_stream and [f.seq for f in ours] == list(range(16))  # 71 frames at 5 of 25, the end
    # the bad camera: nothing but, in the service, the end marker of the other stream kept for it (re-pointed)
    assert [f.end_of_stream for f in frames if f.camera_id == "bad"] == ([] if streams is None else [True])


@pytest.mark.parametrize("source", [
    "srt://127.0.0.1:{port}?mode=caller",
    "/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_{port}-video-index0",
    "/dev/door-cam-{port}",
], ids=["srt", "v4l-by-id", "udev-alias"])
def test_a_live_source_that_is_not_there_yet_is_reopened_not_ended(source):
    """Before, these were files: the camera published an end-of-stream marker and failed ("video not found")."""
    source = source.format(port=free_port())
    assert is_live(source)
    reopens = [0]

    def reopening() -> None:
        reopens[0] += 1

    cam = CameraConfig(id="door", source=source)
    got = list(camera_frames(cam, should_stop=lambda: reopens[0] >= 2, reconnect=FAST, on_reopen=reopening))
    assert got == [] and reopens[0] == 2


@pytest.mark.parametrize(("source", "live"), [
    ("/videos/door.mp4", False), ("relative/dev/video0.avi", False), ("file:///videos/door.mp4", False),
    ("/dev/shm/door.mp4", False), ("RTSP://cam/1", True), ("rtsps://cam/1", True), ("0", True),
])
def test_files_stay_files(source, live):
    assert is_live(source) is live


@pytest.mark.parametrize(("target_fps", "fast_kept", "slow_kept"), [
    (30, 30, 30),  # above every stretch's rate: every frame
    (20, 30, 30),  # the fast stretch's own rate
    (15, 23, 29),  # 1.5 s at 15 fps (a tick up to a quarter early); the first slow frame 50 ms after a kept one
    (10, 15, 30),  # the file's mean rate: its fast stretch was kept whole (30 frames in 1.5 s)
    (5, 8, 22),  # below the mean rate (sampled before too): 4.5 s at 5 fps
])
def test_a_variable_rate_file_is_thinned_to_target_fps(tmp_path, target_fps, fast_kept, slow_kept):
    """60 frames, 30 at 20 fps (1.5 s), then 30 at 6.67 fps (4.5 s): a mean of 10 fps (``CAP_PROP_FPS``)."""
    clip = _variable_rate(tmp_path / "vfr.mp4")
    cam = CameraConfig(id="door", source=str(clip), target_fps=target_fps, start_ts_ms=0)
    frames = list(camera_frames(cam))
    assert frames[-1].end_of_stream
    ts = [f.ts_ms for f in frames[:-1]]
    assert (sum(t < 1500 for t in ts), sum(t >= 1500 for t in ts)) == (fast_kept, slow_kept)
    assert all(b - a >= 1000 / target_fps - 250 / target_fps - 1 for a, b in zip(ts, ts[1:]))


def _constant_rate(path, fps: int, n: int):
    import cv2
    import numpy as np

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for i in range(n):
        out.write(np.full((48, 64, 3), i % 250, np.uint8))
    out.release()
    return path


@pytest.mark.parametrize(("fps", "ext"), [(25, "campus"), (30, "mp4"), (29.97, "mp4"), (30, "mkv"), (29.97, "mkv")])
@pytest.mark.parametrize("above", [0, 5, 30])
def test_a_constant_rate_file_keeps_every_frame_at_or_above_its_rate(tmp_path, fps, ext, above):
    """(an mkv's times are whole ms: 0, 33, 67, 100, ... at 30 fps, up to 0.7 ms before the ticks)"""
    clip = CAMPUS if ext == "campus" else _constant_rate(tmp_path / f"cfr.{ext}", fps, 90)
    cam = CameraConfig(id="door", source=str(clip), target_fps=fps + above, resize_width=64)
    kept = [f.source_frame for f in camera_frames(cam) if not f.end_of_stream]
    assert kept == list(range(1, 72 if ext == "campus" else 91))
