"""Head pose (yaw, pitch, roll) from Intel Open Model Zoo's ``head-pose-estimation-adas-0001``.

The OpenVINO IR in the shared assets (``models/head-pose-estimation-adas-0001/FP16/``,
1.9M params): input ``data`` ``Nx3x60x60`` BGR, raw 0-255; outputs
``angle_y_fc``, ``angle_p_fc``, ``angle_r_fc`` (each ``Nx1``): yaw, pitch, roll
in degrees (trained range yaw +-90, pitch/roll +-70; OMZ reports a MAE of
5.4/5.5/4.6 degrees on Biwi). The face crop is OMZ's: a square of 1.2 x the
longer side of the detector's box, clipped to the image, resized to 60x60.

The model's signs are those of :func:`storelens.domain.face_quality.head_pose`,
so either estimate can feed :func:`~storelens.domain.face_quality.is_attending`:
yaw > 0 = nose towards the image's right, pitch > 0 = looking down (the girl
looking down in ``obama_and_biden.jpg``: +31), roll > 0 = the eye on the
image's right lower (a photo rotated 20 degrees clockwise: +23). Checked on the
shared faces, see ``bench/attention.py``.

Selected with ``faces.attention.pose: head-pose-adas`` (weights from
``faces.attention.weights``, default the shared asset; nothing is downloaded).

Example:
    >>> est = HeadPoseEstimator()                                    # doctest: +SKIP
    >>> est.estimate(image_bgr, faces)[0]                            # doctest: +SKIP
    HeadPose(yaw_deg=0.9, pitch_deg=-3.1, roll_deg=1.2)
"""
from __future__ import annotations

import os

import numpy as np

from storelens.backends.face_detectors.base import Faces
from storelens.backends.openvino_device import latency_props
from storelens.config.faces import AttentionConfig
from storelens.domain.face_quality import HeadPose
from storelens.errors import ModelError

#: Path parts of the IR under the shared assets.
HEAD_POSE_ASSET = ("models", "head-pose-estimation-adas-0001", "FP16", "head-pose-estimation-adas-0001.xml")
#: Network input side (pixels).
INPUT_PX = 60
#: Crop side over the longer side of the face box (OMZ's interactive_face_detection_demo).
CROP_SCALE = 1.2
#: Model output -> sign to get (yaw, pitch, roll) in :func:`~storelens.domain.face_quality.head_pose`'s signs.
_OUTPUTS = (("angle_y_fc", 1.0), ("angle_p_fc", 1.0), ("angle_r_fc", 1.0))


def head_pose_model_path() -> str:
    from storelens.paths import asset

    return str(asset(*HEAD_POSE_ASSET))


def square_crop_box(bbox_xyxy: np.ndarray, scale: float = CROP_SCALE) -> np.ndarray:
    """Square (x0, y0, x1, y1) of ``scale`` x the box's longer side, same centre."""
    x0, y0, x1, y1 = (float(v) for v in bbox_xyxy)
    side = scale * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def face_crop(image_bgr: np.ndarray, bbox_xyxy: np.ndarray) -> np.ndarray:
    """The square face crop the model is fed (before resizing), clipped to the image."""
    h, w = image_bgr.shape[:2]
    x0, y0, x1, y1 = square_crop_box(bbox_xyxy)
    x0i, y0i = min(max(0, int(round(x0))), w - 1), min(max(0, int(round(y0))), h - 1)
    x1i, y1i = min(w, max(x0i + 1, int(round(x1)))), min(h, max(y0i + 1, int(round(y1))))
    return image_bgr[y0i:y1i, x0i:x1i]


class HeadPoseEstimator:
    """OMZ head-pose IR, batched: face crops or (image, faces) -> :class:`HeadPose` per face."""

    def __init__(self, cfg: AttentionConfig | None = None) -> None:
        self.cfg = cfg = cfg or AttentionConfig()
        path = cfg.weights if cfg.weights is not None else head_pose_model_path()
        if not os.path.isfile(path):
            raise ModelError(f"faces.attention.weights: head-pose model not found: {path} "
                             "(an OpenVINO .xml with its .bin beside it; set STORELENS_ASSETS to the shared assets)")
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(path)
            names = {n for o in model.outputs for n in o.get_names()}
            missing = [n for n, _ in _OUTPUTS if n not in names]
            if missing:
                raise ModelError(f"outputs {missing} missing (has {sorted(names)})")
            model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([-1, 3, INPUT_PX, INPUT_PX])})
            self._model = core.compile_model(model, "CPU", latency_props(cfg.threads))
        except Exception as exc:  # openvino raises RuntimeError subclasses for bad IRs
            raise ModelError(f"faces.attention.weights: cannot load head-pose model {path}: {exc}") from exc
        self._request = self._model.create_infer_request()
        self._outputs = [(self._model.output(n), sign) for n, sign in _OUTPUTS]
        self.model_xml = path

    def estimate_crops(self, crops_bgr: list[np.ndarray]) -> list[HeadPose]:
        """Poses of square-ish BGR face crops (any size; resized to 60x60), in one inference."""
        import cv2

        if not crops_bgr:
            return []
        batch = np.empty((len(crops_bgr), 3, INPUT_PX, INPUT_PX), np.float32)
        for i, crop in enumerate(crops_bgr):
            batch[i] = cv2.resize(crop, (INPUT_PX, INPUT_PX)).transpose(2, 0, 1)
        res = self._request.infer([batch])
        angles = np.stack([sign * np.asarray(res[o], np.float64).reshape(-1) for o, sign in self._outputs], 1)
        return [HeadPose(float(y), float(p), float(r)) for y, p, r in angles]

    def estimate(self, image_bgr: np.ndarray, faces: Faces) -> list[HeadPose]:
        """Poses of the detected faces of one image."""
        return self.estimate_crops([face_crop(image_bgr, b) for b in faces.bbox_xyxy])
