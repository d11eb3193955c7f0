"""Gaze direction from Intel Open Model Zoo's ``gaze-estimation-adas-0002`` (for ``faces.attention.pose: gaze-adas``).

Per face of one image, as OMZ's gaze_estimation_demo does it (with the landmark
model the shared assets have):

1. head pose: :class:`~storelens.backends.face_attributes.head_pose_openvino.HeadPoseEstimator`
   (head-pose-estimation-adas-0001);
2. eye centres: ``landmarks-regression-retail-0009`` (input ``0`` ``Nx3x48x48`` BGR
   raw 0-255, the detector's box resized; output ``95`` = 5 (x, y) in [0, 1] of
   the box: eye on the image's left, eye on the image's right, nose, mouth corners);
3. eye crops: a square of :data:`EYE_SCALE` x the inter-ocular distance around
   each eye centre, rotated by the head roll so the eyes are level, 60x60
   (OMZ's demo: 1.8 x the eye-corner distance; an eye is about 0.45 inter-ocular
   distances wide, see :data:`EYE_SCALE`);
4. ``gaze-estimation-adas-0002`` (inputs ``left_eye_image``/``right_eye_image``
   ``Nx3x60x60`` BGR raw 0-255, left = the eye on the image's left, and
   ``head_pose_angles`` ``Nx3`` = yaw, pitch, roll with roll passed as 0 since the
   crops are levelled); output ``gaze_vector`` ``Nx3`` (not unit length: x
   towards the image's right, y up, z < 0 towards the camera), normalised and
   rotated back by the roll.

The gaze yaw/pitch use the signs of the head pose
(:func:`storelens.domain.face_quality.head_pose`, ``head_pose_openvino``): yaw > 0
= looking towards the image's right, pitch > 0 = looking down; (0, 0) = looking
straight into the camera. So ``faces.attention`` (camera or direction mode)
applies to where the eyes point rather than where the head points.

Example:
    >>> est = GazeEstimator(AttentionConfig(pose="gaze-adas"))       # doctest: +SKIP
    >>> g = est.estimate(image_bgr, faces)[0]                        # doctest: +SKIP
    >>> round(g.yaw_deg), round(g.pitch_deg), round(g.head_pose.yaw_deg)  # doctest: +SKIP
    (2, -4, 1)
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from storelens.backends.face_attributes.head_pose_openvino import HeadPoseEstimator
from storelens.backends.face_detectors.base import Faces
from storelens.backends.openvino_device import latency_props
from storelens.config.faces import AttentionConfig
from storelens.domain.face_quality import HeadPose
from storelens.errors import ModelError

#: Path parts of the IRs under the shared assets.
GAZE_ASSET = ("models", "gaze-estimation-adas-0002", "FP16", "gaze-estimation-adas-0002.xml")
LANDMARKS_ASSET = ("models", "landmarks-regression-retail-0009", "FP16", "landmarks-regression-retail-0009.xml")
#: Network input sides (pixels).
EYE_INPUT_PX = 60
LANDMARKS_INPUT_PX = 48
#: Eye-crop side over the inter-ocular distance (eye centre to eye centre). About OMZ's 1.8 x eye width; on 250
#: UTKFace chips + the photos the mirror error of the gaze yaw was flat from 0.6 to 0.9 (median 5.5-6.4 deg) and
#: worse at 0.45 (10.9 deg), see BENCHMARKS.md "Attention".
EYE_SCALE = 0.75


@dataclass(frozen=True)
class GazeDirection:
    """Where the eyes of one face point, and the head pose the gaze model was given.

    ``yaw_deg``/``pitch_deg``: the gaze, in the head pose's signs (yaw > 0 towards
    the image's right, pitch > 0 down; 0, 0 = into the camera). ``vector``: the
    unit gaze vector (x right, y up, z < 0 towards the camera). NaN when the eyes
    could not be located.
    """

    yaw_deg: float
    pitch_deg: float
    head_pose: HeadPose
    vector: tuple[float, float, float]


def gaze_model_path() -> str:
    from storelens.paths import asset

    return str(asset(*GAZE_ASSET))


def landmarks_model_path() -> str:
    from storelens.paths import asset

    return str(asset(*LANDMARKS_ASSET))


def gaze_angles(vector: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of a gaze vector (x right, y up, z towards the scene), head-pose signs.

    >>> gaze_angles(np.array([0.0, 0.0, -1.0]))
    (0.0, -0.0)
    >>> [round(a) for a in gaze_angles(np.array([0.5, -0.5, -0.7071]))]
    [35, 30]
    """
    x, y, z = (float(v) for v in vector)
    return math.degrees(math.atan2(x, -z)), math.degrees(math.atan2(-y, math.hypot(x, z)))


def eye_crop(image_bgr: np.ndarray, centre_xy, side_px: float, roll_deg: float,
             out_px: int = EYE_INPUT_PX) -> np.ndarray:
    """The ``out_px`` square around ``centre_xy``, ``side_px`` wide, turned by ``-roll_deg`` (eyes level).

    ``roll_deg`` > 0 = the eye on the image's right lower (head-pose sign), so the
    crop's x axis runs along the eye line. Outside the image: edge pixels repeated.
    """
    import cv2

    k = side_px / out_px
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    lin = k * np.array([[c, -s], [s, c]])
    half = (out_px - 1) / 2
    t = np.asarray(centre_xy, np.float64) - lin @ np.array([half, half])
    m = np.hstack([lin, t[:, None]])  # crop pixel -> image pixel
    return cv2.warpAffine(image_bgr, m, (out_px, out_px), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _compile(core, path: str, field: str, what: str, shapes: dict, props: dict):
    if not os.path.isfile(path):
        raise ModelError(f"faces.attention.{field}: {what} model not found: {path} "
                         "(an OpenVINO .xml with its .bin beside it; set STORELENS_ASSETS to the shared assets)")
    import openvino as ov

    try:
        model = core.read_model(path)
        names = {n for i in model.inputs for n in i.get_names()}
        missing = sorted(set(shapes) - names)
        if missing:
            raise ModelError(f"inputs {missing} missing (has {sorted(names)})")
        model.reshape({n: ov.PartialShape(s) for n, s in shapes.items()})
        return core.compile_model(model, "CPU", props)
    except Exception as exc:  # openvino raises RuntimeError subclasses for bad IRs
        raise ModelError(f"faces.attention.{field}: cannot load {what} model {path}: {exc}") from exc


class GazeEstimator:
    """Head pose + eye landmarks + gaze model, batched per image: (image, faces) -> :class:`GazeDirection` per face.

    Loads three OpenVINO IRs (weights ``faces.attention.weights``,
    ``landmarks_weights``, ``gaze_weights``; ``None`` = the shared assets), each
    with ``faces.attention.threads`` threads.
    """

    def __init__(self, cfg: AttentionConfig | None = None) -> None:
        self.cfg = cfg = cfg or AttentionConfig(pose="gaze-adas")
        self.head_pose = HeadPoseEstimator(cfg)
        import openvino as ov

        props = latency_props(cfg.threads)
        core = ov.Core()
        self.landmarks_xml = cfg.landmarks_weights if cfg.landmarks_weights is not None else landmarks_model_path()
        self.gaze_xml = cfg.gaze_weights if cfg.gaze_weights is not None else gaze_model_path()
        lm = _compile(core, self.landmarks_xml, "landmarks_weights", "eye-landmark",
                      {"0": [-1, 3, LANDMARKS_INPUT_PX, LANDMARKS_INPUT_PX]}, props)
        eye = [-1, 3, EYE_INPUT_PX, EYE_INPUT_PX]
        gz = _compile(core, self.gaze_xml, "gaze_weights", "gaze",
                      {"left_eye_image": eye, "right_eye_image": eye, "head_pose_angles": [-1, 3]}, props)
        self._lm_request, self._lm_out = lm.create_infer_request(), lm.outputs[0]
        self._gz_request, self._gz_out = gz.create_infer_request(), gz.outputs[0]

    def eye_centres(self, image_bgr: np.ndarray, faces: Faces) -> np.ndarray:
        """(N, 2, 2) image pixels: the eye on the image's left, then the one on its right, per face."""
        import cv2

        h, w = image_bgr.shape[:2]
        n = len(faces)
        batch = np.zeros((n, 3, LANDMARKS_INPUT_PX, LANDMARKS_INPUT_PX), np.float32)
        boxes = np.zeros((n, 4), np.float64)
        for i, b in enumerate(np.asarray(faces.bbox_xyxy, np.float64)):
            x0, y0 = min(max(0, int(round(b[0]))), w - 1), min(max(0, int(round(b[1]))), h - 1)
            x1, y1 = min(w, max(x0 + 1, int(round(b[2])))), min(h, max(y0 + 1, int(round(b[3]))))
            boxes[i] = (x0, y0, x1, y1)
            crop = image_bgr[y0:y1, x0:x1]
            batch[i] = cv2.resize(crop, (LANDMARKS_INPUT_PX, LANDMARKS_INPUT_PX)).transpose(2, 0, 1)
        rel = np.asarray(self._lm_request.infer([batch])[self._lm_out], np.float64).reshape(n, 5, 2)[:, :2]
        size = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        return boxes[:, None, :2] + rel * size

    def estimate(self, image_bgr: np.ndarray, faces: Faces) -> list[GazeDirection]:
        """Gaze (and head pose) of the detected faces of one image; three inferences whatever the face count."""
        n = len(faces)
        if n == 0:
            return []
        poses = self.head_pose.estimate(image_bgr, faces)
        eyes = self.eye_centres(image_bgr, faces)
        left = np.zeros((n, 3, EYE_INPUT_PX, EYE_INPUT_PX), np.float32)
        right = np.zeros_like(left)
        angles = np.zeros((n, 3), np.float32)
        valid = np.zeros(n, bool)
        for i, (pose, (le, re)) in enumerate(zip(poses, eyes)):
            iod = float(np.hypot(*(re - le)))
            if not (np.isfinite(eyes[i]).all() and iod >= 2.0):
                continue
            valid[i] = True
            side = EYE_SCALE * iod
            left[i] = eye_crop(image_bgr, le, side, pose.roll_deg).transpose(2, 0, 1)
            right[i] = eye_crop(image_bgr, re, side, pose.roll_deg).transpose(2, 0, 1)
            angles[i] = (pose.yaw_deg, pose.pitch_deg, 0.0)  # crops are levelled: roll 0, as OMZ's demo
        out: list[GazeDirection] = []
        if valid.any():
            res = self._gz_request.infer({"left_eye_image": left[valid], "right_eye_image": right[valid],
                                          "head_pose_angles": angles[valid]})
            vecs = np.asarray(res[self._gz_out], np.float64).reshape(-1, 3)
        j = 0
        nan = float("nan")
        for i, pose in enumerate(poses):
            if not valid[i]:
                out.append(GazeDirection(nan, nan, pose, (nan, nan, nan)))
                continue
            v = vecs[j]
            j += 1
            v = v / max(float(np.linalg.norm(v)), 1e-9)
            # Back from the levelled crops: turn (x right, y up) by the roll, as OMZ's demo does.
            c, s = math.cos(math.radians(pose.roll_deg)), math.sin(math.radians(pose.roll_deg))
            v = np.array([v[0] * c + v[1] * s, -v[0] * s + v[1] * c, v[2]])
            yaw, pitch = gaze_angles(v)
            out.append(GazeDirection(yaw, pitch, pose, (float(v[0]), float(v[1]), float(v[2]))))
        return out
