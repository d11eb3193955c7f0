"""Detector + quality gate + attribute models for one image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from storelens.backends.face_attributes.age_gender import AgeGender, AgeGenderEstimator
from storelens.backends.face_attributes.emotion import EmotionClassifier
from storelens.backends.face_detectors.base import FaceDetector, Faces
from storelens.domain.face_aggregate import FaceObservation
from storelens.domain.face_quality import AttentionConfig, FaceQualityGate, QualityResult, is_attending


@dataclass(frozen=True)
class FaceAnalysis:
    bbox_xyxy: np.ndarray  # (4,)
    landmarks5: np.ndarray  # (5, 2)
    score: float
    quality: QualityResult
    attending: bool | None  # None when the pose is not usable (too small / blurry / cut off by the edge)
    age_gender: AgeGender | None  # None when not run (face rejected by the gate)
    emotion: np.ndarray | None  # (7,) probabilities, None when not run

    def observation(self) -> FaceObservation:
        """The per-frame input of :mod:`storelens.domain.face_aggregate`."""
        ag = self.age_gender
        return FaceObservation(
            quality=self.quality,
            age_years=None if ag is None else ag.age_years,
            p_male=None if ag is None else ag.p_male,
            emotion_probs=self.emotion,
            attending=self.attending,
        )


class FaceAnalyzer:
    """Detect -> quality gate -> (only on faces that pass) age/gender and emotion, plus attention.

    Either model may be ``None`` to skip it. Attention uses ``head_pose``'s
    yaw/pitch when given (``faces.attention.pose: head-pose-adas``: the head's
    pose; ``gaze-adas``: the gaze direction), else the landmark pose the quality
    gate measured. ``analyze(image, faces)`` accepts
    faces detected elsewhere (e.g. inside person crops).
    """

    def __init__(
        self,
        detector: FaceDetector | None,
        gate: FaceQualityGate | None = None,
        age_gender: AgeGenderEstimator | None = None,
        emotion: EmotionClassifier | None = None,
        attention: AttentionConfig | None = None,
        head_pose=None,
    ) -> None:
        self.detector = detector
        self.gate = gate or FaceQualityGate()
        self.age_gender = age_gender
        self.emotion = emotion
        self.attention = attention or AttentionConfig()
        #: Model head pose (:class:`~storelens.backends.face_attributes.head_pose_openvino.HeadPoseEstimator`)
        #: or gaze (:class:`~storelens.backends.face_attributes.gaze_openvino.GazeEstimator`): anything whose
        #: ``estimate(image, faces)`` gives objects with ``yaw_deg``/``pitch_deg``, used for attention instead
        #: of the landmark pose; ``None``: landmarks.
        self.head_pose = head_pose

    def analyze(self, image_bgr: np.ndarray, faces: Faces | None = None) -> list[FaceAnalysis]:
        if faces is None:
            if self.detector is None:
                raise ValueError("no detector configured: pass faces")
            faces = self.detector.detect(image_bgr)
        quality = self.gate.check(image_bgr, faces)
        good = np.array([q.ok for q in quality], bool)
        ag_list: list[AgeGender | None] = [None] * len(faces)
        emo: list[np.ndarray | None] = [None] * len(faces)
        if good.any():
            idx = np.flatnonzero(good)
            sub = faces[idx]
            if self.age_gender is not None:
                for i, r in zip(idx, self.age_gender.estimate(image_bgr, sub)):
                    ag_list[i] = r
            if self.emotion is not None:
                for i, p in zip(idx, self.emotion.classify(image_bgr, sub)):
                    emo[i] = p
        poses = [(q.yaw_deg, q.pitch_deg) for q in quality]
        usable = np.array([q.pose_usable for q in quality], bool)
        if self.head_pose is not None and usable.any():
            idx = np.flatnonzero(usable)
            for i, p in zip(idx, self.head_pose.estimate(image_bgr, faces[idx])):
                poses[i] = (p.yaw_deg, p.pitch_deg)
        out = []
        for i, q in enumerate(quality):
            att = is_attending(*poses[i], self.attention) if q.pose_usable else None
            out.append(FaceAnalysis(faces.bbox_xyxy[i], faces.landmarks5[i], float(faces.score[i]), q, att,
                                    ag_list[i], emo[i]))
        return out


def build_head_pose(cfg: AttentionConfig):
    """The head-pose (or gaze) model ``cfg.pose`` names, or ``None`` for ``landmarks`` (nothing to load)."""
    if cfg.pose == "landmarks":
        return None
    if cfg.pose == "gaze-adas":
        from storelens.backends.face_attributes.gaze_openvino import GazeEstimator

        return GazeEstimator(cfg)
    from storelens.backends.face_attributes.head_pose_openvino import HeadPoseEstimator

    return HeadPoseEstimator(cfg)
