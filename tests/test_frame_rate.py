"""A tracker's frame-counted settings keep their time at whatever rate a camera's frames come.

``tracker.track_buffer`` is 60 frames at ``tracker.fps`` (25) = 2.4 s. Through the embedded pipeline, a
real CAVIAR clip sampled by ingest at 25, 10 and 5 fps: detect-track measures the rate from the frames'
timestamps and the bytereid tracker keeps a lost track 60, 24 and 12 frames (2.4 s each time). And what
it changes: at 10 fps, two people 3.5 s apart are two tracks (with the buffer counted in frames they
were one: 60 frames = 6 s).
"""
from __future__ import annotations

import cv2
import pytest

from storelens.backends.detectors import build_detector
from storelens.backends.trackers import tracker_factory
from storelens.config import parse_config
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline

CLIP = asset("video", "caviar", "EnterExitCrossingPaths1front", "EnterExitCrossingPaths1front.mp4")


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """The first 2 s (50 frames at 25 fps) of the clip."""
    path = tmp_path_factory.mktemp("rate") / "clip.mp4"
    cap = cv2.VideoCapture(str(CLIP))
    fps = cap.get(cv2.CAP_PROP_FPS)
    ok, frame = cap.read()
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
    for _ in range(50):
        out.write(frame)
        ok, frame = cap.read()
    out.release()
    assert fps == 25
    return str(path)


@pytest.fixture(scope="module")
def detector():
    return build_detector(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}).detector)


@pytest.mark.parametrize(("target_fps", "frames_kept"), [(None, 60), (10.0, 24), (5.0, 12)])
def test_track_buffer_is_the_same_time_at_every_sampling_rate(short_clip, detector, target_fps, frames_kept):
    cfg = parse_config({"store": {"id": "s"},
                        "cameras": [{"id": "c", "source": short_clip, "target_fps": target_fps}]})
    make, made = tracker_factory(cfg.tracker), []

    def factory():
        made.append(make())
        return made[-1]

    res = EmbeddedPipeline(cfg, detector=detector, tracker_factory=factory).run()
    assert res.frames == {None: 50, 10.0: 20, 5.0: 10}[target_fps]
    (tracker,) = made
    assert tracker._bot.max_frames_lost == frames_kept  # what Ultralytics' tracker removes lost tracks by
    assert tracker._bot.frame_rate == pytest.approx(target_fps or 25.0)
    assert frames_kept / tracker._bot.frame_rate == pytest.approx(2.4)


def test_people_longer_apart_than_the_buffer_are_different_tracks_at_10_fps(tmp_path, detector):
    from storelens.backends.face_video import write_visit_video

    photos = [asset("faces", "identities", p, n) for p, n in
              [("obama", "obama2.jpg"), ("alex_lacamoire", "img1.jpg"), ("biden", "biden2.jpg")]]
    video = write_visit_video(photos, tmp_path / "visit.avi", size_wh=(640, 360), fps=10.0, hold_frames=24,
                              gap_frames=35)  # 3.5 s empty between two people
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": str(video)}]})
    spans: dict[int, list[int]] = {}

    def tracked(tf) -> None:
        for t in tf.tracks:
            spans.setdefault(t.track_id, []).append(tf.source_frame)

    EmbeddedPipeline(cfg, detector=detector, on_tracked=tracked).run()
    people = sorted((min(f), max(f)) for f in spans.values())
    # obama2.jpg shows three people: 3 tracks on the first photo, then one a photo; none spans a gap
    assert len({first // 59 for first, _ in people}) == 3, people
    assert all(last - first < 24 + 5 for first, last in people), people
