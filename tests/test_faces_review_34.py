"""Review fixes of the faces attributes stage (review 34), on the real models and the shared face photos.

1. A face cut by the crop's (or frame's) edge (quality reason ``cut_off``) does not count for attention: its
   landmarks are guessed and the head-pose model sees part of a face, so its pose often says the opposite of the
   whole face's. Before, such faces voted in the track's ``attention_share`` (a person at the frame's edge, or a
   tight person box, looked away from the display).
2. ``faces.attention`` refuses a setting of the mode it is not in: ``yaw_range_deg: [20, 60]`` (a shelf to the
   camera's right) without ``mode: direction`` was accepted and ignored (attention stayed "facing the camera"),
   as were ``max_yaw_deg``/``max_pitch_deg`` in direction mode.
3. ``faces.enabled`` with ``crops.every_n_frames: 0`` is refused: no person crop is ever made, so the embedded
   faces stage loaded its models and produced nothing (no demographics, no customers) without a word.
4. The attributes service's stage runs its models before it changes anything, as the reid stage does: a crop a
   model fails on (a dead letter) no longer ends, and loses the final summary of, the tracks its arrival made idle.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from storelens.config import parse_config
from storelens.config.faces import AttentionConfig
from storelens.errors import ConfigError
from storelens.contract import messages as m
from storelens.paths import asset
from storelens.contract import topics
from storelens.stages.faces import AttributesStage, DecodedCrop
from test_runtime_review_9 import _BrokenOn  # a real model that raises on one odd crop

FACES = asset("faces")
pytestmark = pytest.mark.skipif(not (FACES / "identities_test").is_dir(), reason="shared face assets not found")


def site(tmp_path, **faces):
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
                         "storage": {"path": str(tmp_path / "h.db")},
                         "faces": {"enabled": True, "aggregation": {"min_faces": 1}, **faces}})


def person_crop(img: np.ndarray, seq: int, track_id: int) -> m.PersonCrop:
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    h, w = img.shape[:2]
    return m.PersonCrop(camera_id="door", seq=seq, ts_ms=1_000 + 100 * seq, track_id=track_id,
                        bbox_xyxy=m.BoxXYXY(x1=0, y1=0, x2=w, y2=h), jpeg=buf.tobytes())


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faces34")
    return {pose: AttributesStage(site(tmp, attention={"pose": pose})) for pose in ("landmarks", "head-pose-adas")}


# (pose model, photo, how it is cut): the whole face attends; the cut one, measured before the fix, did not
CUT_FACES = [
    ("landmarks", ("identities_test", "obama1.jpg"), "left_half"),
    ("landmarks", ("identities", "biden", "biden2.jpg"), "right_half"),
    ("head-pose-adas", ("identities_test", "obama1.jpg"), "bottom_two_thirds"),
    ("head-pose-adas", ("expressions", "happy.jpg"), "left_half"),
]


def cut(img: np.ndarray, how: str) -> np.ndarray:
    h, w = img.shape[:2]
    return {"left_half": img[:, :w // 2], "right_half": img[:, w // 2:], "bottom_two_thirds": img[h // 3:]}[how]


@pytest.mark.parametrize("pose, photo, how", CUT_FACES)
def test_cut_off_face_does_not_count_for_attention(stages, pose, photo, how):
    stage = stages[pose]
    img = cv2.imread(str(FACES.joinpath(*photo)))
    track_id = 100 + CUT_FACES.index((pose, photo, how))
    seq = 10 * track_id
    whole = stage.process(person_crop(img, seq, track_id))
    (obs,) = whole.observations
    assert obs.accepted and obs.attending is True
    part = stage.process(person_crop(cut(img, how), seq + 1, track_id))
    (obs,) = part.observations
    assert "cut_off" in obs.rejected_reasons
    assert not obs.HasField("attending")  # before: False (the guessed pose looked away)
    summary = part.summaries[-1]
    assert summary.n_faces == 2 and summary.attention_n == 1  # before: 2
    assert summary.attention_share == pytest.approx(1.0)  # before: 0.5


@pytest.mark.parametrize("attention, field", [
    ({"yaw_range_deg": [20, 60]}, "yaw_range_deg"),
    ({"mode": "camera", "pitch_range_deg": [-10, 10]}, "pitch_range_deg"),
    ({"mode": "direction", "yaw_range_deg": [20, 60], "max_yaw_deg": 30}, "max_yaw_deg"),
    ({"mode": "direction", "yaw_range_deg": [20, 60], "max_pitch_deg": 10}, "max_pitch_deg"),
])
def test_attention_setting_of_the_other_mode_is_refused(tmp_path, attention, field):
    with pytest.raises(ConfigError, match=f"faces.attention: {field}: a setting of attention mode"):
        site(tmp_path, attention=attention)


@pytest.mark.parametrize("attention", [
    {}, {"max_yaw_deg": 30, "max_pitch_deg": 15}, {"mode": "direction", "yaw_range_deg": [20, 60]},
    {"mode": "direction", "yaw_range_deg": [20, 60], "pitch_range_deg": [-40, 10]},
    {"mode": "camera", "yaw_range_deg": None, "pitch_range_deg": [-25, 25], "max_yaw_deg": 20},  # defaults written out
])
def test_attention_settings_of_their_mode_round_trip(tmp_path, attention):
    cfg = site(tmp_path, attention=attention).faces.attention
    assert AttentionConfig.model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize("faces_enabled, every_n_frames, refused", [
    (True, 0, True), (True, 1, False), (False, 0, False), (True, None, False),
])
def test_faces_without_crops_is_refused(tmp_path, faces_enabled, every_n_frames, refused):
    doc = {"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
           "storage": {"path": str(tmp_path / "h.db")}, "faces": {"enabled": faces_enabled}}
    if every_n_frames is not None:
        doc["crops"] = {"every_n_frames": every_n_frames}
    if refused:
        with pytest.raises(ConfigError, match="faces.enabled needs person crops, but crops.every_n_frames is 0"):
            parse_config(doc)
    else:
        assert parse_config(doc).faces.enabled is faces_enabled


@pytest.mark.parametrize("broken", ["detector", "analyzer"])
def test_a_crop_a_model_fails_on_ends_no_track(tmp_path, stages, broken):
    real = stages["landmarks"]
    detector, analyzer = real.finder.detector, real.analyzer
    if broken == "detector":
        detector = _BrokenOn(detector, "detect", 301)
    else:
        analyzer = _BrokenOn(analyzer, "analyze", 301)
    stage = AttributesStage(site(tmp_path), analyzer=analyzer, detector=detector)
    obama = cv2.imread(str(FACES / "identities" / "obama" / "obama.jpg"))
    odd = cv2.resize(cv2.imread(str(FACES / "identities" / "obama" / "obama2.jpg")), (301, 301))
    later = 1_000 + 100 + 20_000  # track 1 is idle by then (faces.reid.track_idle_s: 10 s)

    def handle(img, seq, track_id, ts_ms):
        crop = person_crop(img, seq, track_id)
        crop.ts_ms = ts_ms
        return stage.handle(topics.PERSON_CROPS, DecodedCrop(crop, cv2.imdecode(np.frombuffer(crop.jpeg, np.uint8),
                                                                                  cv2.IMREAD_COLOR)))

    published = list(handle(obama, 1, 1, 1_100).publish)
    with pytest.raises(RuntimeError, match="failed on this crop"):  # the runner dead-letters it
        handle(odd, 2, 2, later)
    published += handle(obama, 3, 2, later + 100).publish
    finals = [(p.message.track_id, p.message.n_faces) for p in published
              if p.topic == topics.TRACK_ATTRIBUTES and p.message.final]
    assert finals == [(1, 1)]  # before: [] (track 1 ended on the failed crop, its final summary lost with it)
    assert stage.stats["crops"] == 2
