"""facenet-pytorch's MTCNN face detector (``faces.detector.backend: mtcnn``).

The P/R/O-net weights ship inside the ``facenet-pytorch`` wheel, installed
with ``--no-deps`` (see ``requirements-nodeps.txt``). If the package cannot be
imported, constructing the detector raises :class:`~storelens.errors.ModelError`.
It is several times slower than YuNet on CPU (see the class docstring).
"""
from __future__ import annotations

import cv2
import numpy as np

from storelens.backends.face_detectors.base import FACE_DETECTORS, Faces, downscale
from storelens.config.faces import MTCNN_DEFAULT_SCORE_THRESHOLD, MtcnnFaceDetectorConfig
from storelens.errors import ModelError

__all__ = ["MTCNN_DEFAULT_SCORE_THRESHOLD", "MtcnnFaceDetector"]


class MtcnnFaceDetector:
    """facenet-pytorch's MTCNN (boxes + 5 landmarks, in the module docstring's order).

    Settings (:class:`~storelens.config.faces.MtcnnFaceDetectorConfig`): ``score_threshold``
    (MTCNN's third-stage threshold, :data:`MTCNN_DEFAULT_SCORE_THRESHOLD` by default),
    ``max_side`` and ``device``. The MTCNN weights come with the package.

    Torch's thread count is left alone (set it, e.g., through
    ``faces.emotion.threads``, which calls ``torch.set_num_threads``). On the
    2-core development machine, busy with other jobs (load 4-7), the 14 photos of
    ``faces/identities*`` (0.2-2.7 MP) took 490-560 ms per image with 1 torch
    thread and 1.5-2.1 s with 2 (YuNet: 120-170 ms); ``min_face_size=40`` took
    200-250 ms with 1 thread.

    Args:
        cfg: detector settings.
        min_face_size: smallest face (box side, pixels of the possibly downscaled
            image) searched for; facenet-pytorch's default is 20. The cost grows
            steeply as it shrinks (the image pyramid starts at 12 / min_face_size).
    """

    def __init__(self, cfg: MtcnnFaceDetectorConfig | None = None, min_face_size: int = 20) -> None:
        self.cfg = cfg = cfg or MtcnnFaceDetectorConfig()
        try:
            from facenet_pytorch import MTCNN
        except Exception as exc:  # ImportError, or torchvision failing to import on CPU torch
            raise ModelError(
                "faces.detector.backend 'mtcnn' needs the facenet-pytorch package "
                f"(pip install --no-deps facenet-pytorch), which cannot be imported here: {exc}"
            ) from exc
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be >= 12 (MTCNN's P-net input), got {min_face_size}")
        self.score_threshold = float(cfg.score_threshold)
        self.min_face_size = int(min_face_size)
        try:
            self._mtcnn = MTCNN(
                keep_all=True,
                device=cfg.device,
                min_face_size=self.min_face_size,
                thresholds=[0.6, 0.7, self.score_threshold],
            )
        except Exception as exc:  # e.g. an unknown device string
            raise ModelError(f"cannot load the MTCNN face detector on device {cfg.device!r}: {exc}") from exc
        self._mtcnn.eval()

    def detect(self, image_bgr: np.ndarray) -> Faces:
        img, scale = downscale(image_bgr, self.cfg.max_side)
        if image_bgr.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")
        if min(img.shape[:2]) < self.min_face_size:
            return Faces.empty()  # no pyramid level: facenet-pytorch would fail on an empty torch.cat
        boxes, probs, points = self._mtcnn.detect(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), landmarks=True)
        if boxes is None or len(boxes) == 0:
            return Faces.empty()
        probs = np.asarray(probs, np.float32).reshape(-1)
        keep = probs >= self.score_threshold
        faces = Faces(
            np.asarray(boxes, np.float32).reshape(-1, 4)[keep],
            np.asarray(points, np.float32).reshape(-1, 5, 2)[keep],
            probs[keep],
        )
        return faces.scaled(1.0 / scale)


@FACE_DETECTORS.register("mtcnn")
def build(cfg: MtcnnFaceDetectorConfig) -> MtcnnFaceDetector:
    return MtcnnFaceDetector(cfg, min_face_size=cfg.min_face_size_px)
