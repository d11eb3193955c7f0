"""Face-quality gate (size, sharpness, near-frontal pose) and head pose -> attention.

The gate runs on every detected face before any attribute model: age, gender
and emotion networks are trained on reasonably large, sharp, near-frontal
faces and give confident nonsense on anything else, so a face that fails the
gate is counted, never used.

Measures (all from the detector's box and 5 landmarks, no extra model):

* ``size_px``: the shorter side of the face box, in pixels of the image given (the person crop: pixels of
  the decoded frame, after the camera's ``resize_width``, not of the source).
* ``cut_off``: a landmark lies closer to the image's edge than ``min_edge_margin``
  inter-ocular distances (:func:`edge_margin`): the face is cut by the edge of the
  crop or frame. Person-like crops of the 9 photos of ``faces/identities``, the
  crop's left, right or top edge moved into the face box (27 crops per depth):
  with 40, 50 or 60 % of the box cut away none passes (the embedding's
  similarity to the uncut face falls to 0.82-0.98), with 30 % 2 pass, 20 % 12,
  10 % 21 and with the edge on the box all 27 (similarity 0.98-1.00); every
  UTKFace chip (tight crops) passes.
* ``sharpness``: variance of the Laplacian of the grey face crop after
  resizing the crop to ``canonical_px`` x ``canonical_px`` (48 by default,
  about the size the attribute networks see), so faces of different sizes are
  comparable. On the sharp photos in the shared assets it is 790-3450; a
  Gaussian blur with sigma = 5 % of the face width brings it to 19-117.
  It is not contrast-normalised: very dark, low-contrast faces score low.
* head pose from the 5 landmarks (weak-perspective face model, degrees):

  - ``roll``: angle of the eye line; positive = the eye on the image's right
    is lower (the head tilts clockwise as seen in the image).
  - ``yaw``: nose-tip offset from the eye midpoint along the (de-rolled) eye
    line, ``r = dx / eye_distance``; a nose tip ``NOSE_DEPTH`` eye-distances
    in front of the eyes gives ``yaw = atan(r / NOSE_DEPTH)`` for a level
    head; with the head nodded by ``pitch`` the nose tip's depth in front of
    the eye plane is ``NOSE_DEPTH cos(pitch) - 0.6 sin(pitch)``, used instead
    (a CCTV camera above the shoppers sees every face nodded down). Positive =
    the face turns towards the image's right.
  - ``pitch``: where the nose tip sits between the eye line and the mouth line,
    ``ratio = (nose - eyes) / (mouth - eyes)`` (vertical, de-rolled); a
    frontal face has ``FRONTAL_NOSE_RATIO`` (0.57, the median over the 21
    faces in the shared assets, range 0.51-0.65) and
    ``pitch = atan((ratio - 0.57) * EYE_MOUTH_OVER_NOSE_DEPTH)``. Positive =
    looking down.

  Five points cannot resolve large angles: beyond about 50-60 degrees of yaw
  the far eye is hidden and detectors guess its position, so treat the
  estimates as "near-frontal or not" plus a coarse direction. YuNet's own
  landmarks also lag behind strong in-plane rotation: a photo rotated by 10
  and 20 degrees measures 10 and 19, but 35, 45 and 60 degrees measure only
  21, 22 and 16 (the points slide onto brows and cheeks), so ``max_roll_deg``
  below about 20 is the only way to catch such faces with YuNet.

Example:
    >>> lm = np.array([[40, 50], [80, 50], [60, 73], [45, 90], [75, 90]], np.float32)
    >>> pose = head_pose(lm)
    >>> round(pose.yaw_deg), round(pose.roll_deg), -5 < pose.pitch_deg < 5
    (0, 0, True)
    >>> facing_camera(pose.yaw_deg, pose.pitch_deg, max_yaw_deg=20, max_pitch_deg=20)
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from storelens.config.faces import FaceQualityConfig, AttentionConfig  # noqa: F401  (defined there, re-exported)

#: Nose-tip depth in front of the eye centres, in inter-ocular distances (about 30 mm / 63 mm).
NOSE_DEPTH = 0.5
#: Frontal-face position of the nose tip between eye line (0) and mouth line (1).
FRONTAL_NOSE_RATIO = 0.57
#: Eye-to-mouth height over nose-tip depth (about 67 mm / 32 mm).
EYE_MOUTH_OVER_NOSE_DEPTH = 2.1

#: Nose tip below the eye line, in inter-ocular distances (frontal ratio x eye-to-mouth height).
_NOSE_DROP = FRONTAL_NOSE_RATIO * NOSE_DEPTH * EYE_MOUTH_OVER_NOSE_DEPTH

#: Reasons a face fails the gate (``QualityResult.reasons``).
REASONS = ("too_small", "blurry", "yaw", "pitch", "roll", "bad_landmarks", "cut_off")


@dataclass(frozen=True)
class HeadPose:
    yaw_deg: float
    pitch_deg: float
    roll_deg: float


@dataclass(frozen=True)
class QualityResult:
    ok: bool
    reasons: tuple[str, ...]  # subset of REASONS, empty when ok
    size_px: float
    sharpness: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float

    @property
    def pose_usable(self) -> bool:
        """Big and sharp enough, and whole, that the head pose (attention) means something, whatever the pose.

        Not a face cut by the image's edge (``cut_off``): its landmarks are guessed and the head-pose model sees
        half a face; on the photos of ``faces/identities`` and ``faces/expressions`` cut by 20-40 % of the box,
        13 of 60 landmark poses and 21 of 60 head-pose-adas poses gave the opposite attention of the whole face.
        """
        return not ({"too_small", "blurry", "bad_landmarks", "cut_off"} & set(self.reasons))


def head_pose(landmarks5: np.ndarray) -> HeadPose:
    """Yaw, pitch, roll in degrees from 5 landmarks (order of :mod:`storelens.backends.face_detectors`)."""
    lm = np.asarray(landmarks5, np.float64).reshape(5, 2)
    left_eye, right_eye = lm[0], lm[1]
    d = right_eye - left_eye
    roll = math.degrees(math.atan2(d[1], d[0]))
    eye_dist = float(np.hypot(*d))
    if not np.isfinite(lm).all() or eye_dist < 1e-6:
        return HeadPose(float("nan"), float("nan"), float("nan"))
    c, s = d / eye_dist  # rotate by -roll: the eye line becomes horizontal
    rot = np.array([[c, s], [-s, c]])
    q = (lm - (left_eye + right_eye) / 2) @ rot.T
    r = q[2, 0] / eye_dist
    mouth_y = (q[3, 1] + q[4, 1]) / 2
    if mouth_y <= 1e-6:  # mouth not below the eyes: landmarks are garbage
        return HeadPose(math.degrees(math.atan(r / NOSE_DEPTH)), float("nan"), roll)
    ratio = q[2, 1] / mouth_y
    pitch = math.atan((ratio - FRONTAL_NOSE_RATIO) * EYE_MOUTH_OVER_NOSE_DEPTH)
    # Nodding moves the nose tip towards (down) or away from (up) the eye plane, which
    # shrinks or grows the sideways nose offset a turn produces: use the pitched depth.
    depth = NOSE_DEPTH * math.cos(pitch) - _NOSE_DROP * math.sin(pitch)
    yaw = math.atan(r / max(depth, 0.15))
    return HeadPose(math.degrees(yaw), math.degrees(pitch), roll)


def sharpness(image_bgr: np.ndarray, bbox_xyxy: np.ndarray, canonical_px: int = 48) -> float:
    """Variance of the Laplacian of the grey box crop resized to ``canonical_px`` squared."""
    h, w = image_bgr.shape[:2]
    x0, y0, x1, y1 = (int(round(float(v))) for v in bbox_xyxy)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    crop = image_bgr[y0:y1, x0:x1]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    interp = cv2.INTER_AREA if min(grey.shape) > canonical_px else cv2.INTER_LINEAR
    grey = cv2.resize(grey, (canonical_px, canonical_px), interpolation=interp)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def edge_margin(image_hw: tuple[int, int], landmarks5: np.ndarray) -> float:
    """How far inside the image the nearest of the 5 landmarks lies, in inter-ocular distances (negative: outside).

    A face cut by the image's edge (a person crop's or the frame's) has its landmarks at, or guessed beyond,
    that edge. The box does not tell: YuNet's box ends at the edge of a face cut off by 40 %, and overshoots
    the edge of complete faces in tight crops (86 % of the UTKFace chips, whose landmarks lie >= 0.47
    inter-ocular distances inside).
    """
    lm = np.asarray(landmarks5, np.float64).reshape(5, 2)
    eye = float(np.hypot(*(lm[1] - lm[0])))
    if not np.isfinite(lm).all() or eye < 1e-6:
        return float("nan")
    h, w = image_hw
    return float(min(lm[:, 0].min(), lm[:, 1].min(), w - lm[:, 0].max(), h - lm[:, 1].max()) / eye)


def assess_face(
    image_bgr: np.ndarray, bbox_xyxy: np.ndarray, landmarks5: np.ndarray, cfg: FaceQualityConfig | None = None
) -> QualityResult:
    """Run the gate on one face; ``reasons`` lists every failed check (not just the first)."""
    cfg = cfg or FaceQualityConfig()
    b = np.asarray(bbox_xyxy, np.float64)
    size = float(max(0.0, min(b[2] - b[0], b[3] - b[1])))
    sharp = sharpness(image_bgr, b, cfg.canonical_px)
    pose = head_pose(landmarks5)
    reasons = []
    if size < cfg.min_size_px:
        reasons.append("too_small")
    if sharp < cfg.min_sharpness:
        reasons.append("blurry")
    if edge_margin(image_bgr.shape[:2], landmarks5) < cfg.min_edge_margin:
        reasons.append("cut_off")
    if not all(math.isfinite(v) for v in (pose.yaw_deg, pose.pitch_deg, pose.roll_deg)):
        reasons.append("bad_landmarks")
    else:
        if abs(pose.yaw_deg) > cfg.max_yaw_deg:
            reasons.append("yaw")
        if abs(pose.pitch_deg) > cfg.max_pitch_deg:
            reasons.append("pitch")
        if abs(pose.roll_deg) > cfg.max_roll_deg:
            reasons.append("roll")
    return QualityResult(not reasons, tuple(reasons), size, sharp, pose.yaw_deg, pose.pitch_deg, pose.roll_deg)


class FaceQualityGate:
    """:func:`assess_face` for every face of an image.

    Example:
        >>> gate = FaceQualityGate(FaceQualityConfig(min_size_px=60))
        >>> results = gate.check(image_bgr, faces)          # doctest: +SKIP
        >>> [r.reasons for r in results]                    # doctest: +SKIP
        [(), ('too_small',)]
    """

    def __init__(self, cfg: FaceQualityConfig | None = None) -> None:
        self.cfg = cfg or FaceQualityConfig()

    def check(self, image_bgr: np.ndarray, faces) -> list[QualityResult]:
        return [assess_face(image_bgr, b, lm, self.cfg) for b, lm in zip(faces.bbox_xyxy, faces.landmarks5)]


def facing_camera(yaw_deg: float, pitch_deg: float, max_yaw_deg: float = 20.0, max_pitch_deg: float = 20.0) -> bool:
    """Whether a head pose points at the camera, within the given half-angles."""
    if not (math.isfinite(yaw_deg) and math.isfinite(pitch_deg)):
        return False
    return abs(yaw_deg) <= max_yaw_deg and abs(pitch_deg) <= max_pitch_deg


def is_attending(yaw_deg: float, pitch_deg: float, cfg: AttentionConfig | None = None) -> bool:
    """Attention under ``cfg``: facing the camera, or turned towards the configured direction."""
    cfg = cfg or AttentionConfig()
    if cfg.mode == "camera":
        return facing_camera(yaw_deg, pitch_deg, cfg.max_yaw_deg, cfg.max_pitch_deg)
    if not (math.isfinite(yaw_deg) and math.isfinite(pitch_deg)):
        return False
    (ylo, yhi), (plo, phi) = cfg.yaw_range_deg, cfg.pitch_range_deg
    return ylo <= yaw_deg <= yhi and plo <= pitch_deg <= phi
