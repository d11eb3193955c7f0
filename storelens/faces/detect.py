"""Face detection (boxes + 5 landmarks) behind a small Protocol; YuNet and MTCNN backends.

Every backend returns :class:`Faces` in the input image's pixel coordinates,
with the five landmarks in one fixed order, *as seen in the image*:

    0 eye on the image's left   (the person's right eye; YuNet "right eye")
    1 eye on the image's right  (the person's left eye)
    2 nose tip
    3 mouth corner on the image's left  (YuNet "mouth right")
    4 mouth corner on the image's right (YuNet "mouth left")

That is YuNet's own order, and facenet-pytorch's MTCNN returns the same one
(checked on the 16 matched faces of ``faces/identities*`` in the shared assets:
every MTCNN point lies nearest the YuNet point of the same index), so no
backend reorders points.

* :class:`YuNetFaceDetector` (default): OpenCV's ``cv2.FaceDetectorYN`` with
  the YuNet ONNX weights from the shared assets
  (``models/face_detection_yunet_2026may.onnx``). The network input size is set
  per image, so any image size works; ``max_side`` optionally downscales large
  frames first (faster, loses small faces) and maps the results back.
* :class:`MtcnnFaceDetector`: facenet-pytorch's MTCNN (P/R/O-net weights ship
  inside the ``facenet-pytorch`` wheel, installed with ``--no-deps``: see
  ``requirements-nodeps.txt``). If the package cannot be imported,
  constructing it raises :class:`~storelens.errors.ModelError`. It is several
  times slower than YuNet on CPU (see the class docstring).

A detector object keeps per-image state (the input size) and is not
thread-safe: use one per worker thread.

Example:
    >>> import cv2
    >>> from storelens.paths import asset
    >>> det = YuNetFaceDetector(FaceDetectorConfig())
    >>> faces = det.detect(cv2.imread(str(asset("faces", "identities", "obama", "obama.jpg"))))
    >>> len(faces), faces.bbox_xyxy.shape, faces.landmarks5.shape
    (1, (1, 4), (1, 5, 2))
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from storelens.errors import ModelError
from storelens.paths import asset
from storelens.faces.settings import FaceDetectorConfig  # noqa: F401  (defined there, re-exported)

log = logging.getLogger(__name__)

YUNET_ASSET = ("models", "face_detection_yunet_2026may.onnx")


@dataclass(frozen=True)
class Faces:
    """Faces of one image, in that image's pixel coordinates."""

    bbox_xyxy: np.ndarray  # (N, 4) float32
    landmarks5: np.ndarray  # (N, 5, 2) float32, order in the module docstring
    score: np.ndarray  # (N,) float32

    @classmethod
    def empty(cls) -> "Faces":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, idx) -> "Faces":
        """Subset by index, slice or boolean mask; always returns :class:`Faces`."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return Faces(self.bbox_xyxy[idx], self.landmarks5[idx], self.score[idx])

    def scaled(self, s: float) -> "Faces":
        """Coordinates multiplied by ``s`` (e.g. from a resized image back to source pixels)."""
        if s == 1.0:
            return self
        return Faces(self.bbox_xyxy * np.float32(s), self.landmarks5 * np.float32(s), self.score)

    def translated(self, dx: float, dy: float) -> "Faces":
        """Coordinates shifted by (dx, dy) (e.g. from a person crop back to the frame)."""
        return Faces(
            self.bbox_xyxy + np.array([dx, dy, dx, dy], np.float32),
            self.landmarks5 + np.array([dx, dy], np.float32),
            self.score,
        )


class FaceDetector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> Faces: ...


def _resolve(path: str | None, default: tuple[str, ...], what: str) -> str:
    p = path if path is not None else str(asset(*default))
    if not os.path.isfile(p):
        raise ModelError(f"{what} weights not found: {p}")
    return p


class YuNetFaceDetector:
    """OpenCV YuNet (``cv2.FaceDetectorYN``); the input size follows each image."""

    def __init__(self, cfg: FaceDetectorConfig | None = None) -> None:
        self.cfg = cfg = cfg or FaceDetectorConfig()
        self.weights = _resolve(cfg.weights, YUNET_ASSET, "YuNet face detector")
        try:
            self._net = cv2.FaceDetectorYN.create(
                self.weights, "", (320, 320), cfg.score_threshold, cfg.nms_threshold, cfg.top_k
            )
        except cv2.error as exc:
            raise ModelError(f"cannot load YuNet face detector {self.weights}: {exc}") from exc
        self._size: tuple[int, int] = (320, 320)

    def detect(self, image_bgr: np.ndarray) -> Faces:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
        h, w = image_bgr.shape[:2]
        scale = 1.0
        img = image_bgr
        if self.cfg.max_side and max(h, w) > self.cfg.max_side:
            scale = self.cfg.max_side / max(h, w)
            img = cv2.resize(image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
        if (w, h) != self._size:
            self._net.setInputSize((w, h))
            self._size = (w, h)
        _, raw = self._net.detect(img)
        if raw is None or len(raw) == 0:
            return Faces.empty()
        raw = raw.astype(np.float32)
        # YuNet can emit non-finite rows on tiny or flat inputs (seen on small CCTV person crops)
        raw = raw[np.isfinite(raw).all(axis=1)]
        if len(raw) == 0:
            return Faces.empty()
        xywh = raw[:, 0:4]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)
        faces = Faces(boxes, raw[:, 4:14].reshape(-1, 5, 2).copy(), raw[:, 14].copy())
        return faces.scaled(1.0 / scale)


#: MTCNN's final-stage score threshold when ``score_threshold`` is not set explicitly.
#: ``FaceDetectorConfig.score_threshold``'s default (0.7) is YuNet's: MTCNN scores real
#: faces in the shared assets 0.99-1.0 (the child turned away in obama_and_biden.jpg:
#: 0.991) and its two false positives there, on blurred background, 0.80 and 0.815.
MTCNN_DEFAULT_SCORE_THRESHOLD = 0.9


class MtcnnFaceDetector:
    """facenet-pytorch's MTCNN (boxes + 5 landmarks, in the module docstring's order).

    Settings used from :class:`FaceDetectorConfig`: ``score_threshold`` (MTCNN's
    third-stage threshold; when the config does not set it explicitly,
    :data:`MTCNN_DEFAULT_SCORE_THRESHOLD` is used instead of YuNet's default),
    ``max_side`` and ``device``. ``weights``, ``nms_threshold`` and ``top_k`` are
    YuNet's and ignored. The MTCNN weights come with the package.

    Torch's thread count is left alone (set it, e.g., through
    ``faces.emotion.threads``, which calls ``torch.set_num_threads``). On the
    2-core development machine, busy with other jobs (load 4-7), the 14 photos of
    ``faces/identities*`` (0.2-2.7 MP) took 490-560 ms per image with 1 torch
    thread and 1.5-2.1 s with 2 (YuNet: 120-170 ms); ``min_face_size=40`` took
    200-250 ms with 1 thread.

    Args:
        cfg: detector settings (``backend`` is not checked).
        min_face_size: smallest face (box side, pixels of the possibly downscaled
            image) searched for; facenet-pytorch's default is 20. The cost grows
            steeply as it shrinks (the image pyramid starts at 12 / min_face_size).
    """

    def __init__(self, cfg: FaceDetectorConfig | None = None, min_face_size: int = 20) -> None:
        self.cfg = cfg = cfg or FaceDetectorConfig(backend="mtcnn")
        try:
            from facenet_pytorch import MTCNN
        except Exception as exc:  # ImportError, or torchvision failing to import on CPU torch
            raise ModelError(
                "faces.detector.backend 'mtcnn' needs the facenet-pytorch package "
                f"(pip install --no-deps facenet-pytorch), which cannot be imported here: {exc}"
            ) from exc
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be >= 12 (MTCNN's P-net input), got {min_face_size}")
        if cfg.weights is not None:
            log.warning("faces.detector.weights (%s) is YuNet's and ignored by the mtcnn backend", cfg.weights)
        self.score_threshold = (
            float(cfg.score_threshold) if "score_threshold" in cfg.model_fields_set else MTCNN_DEFAULT_SCORE_THRESHOLD
        )
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
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
        if image_bgr.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")
        h, w = image_bgr.shape[:2]
        scale = 1.0
        img = image_bgr
        if self.cfg.max_side and max(h, w) > self.cfg.max_side:
            scale = self.cfg.max_side / max(h, w)
            img = cv2.resize(image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
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


def build_face_detector(cfg: FaceDetectorConfig | None = None) -> FaceDetector:
    cfg = cfg or FaceDetectorConfig()
    if cfg.backend == "yunet":
        return YuNetFaceDetector(cfg)
    if cfg.backend == "mtcnn":
        return MtcnnFaceDetector(cfg, min_face_size=cfg.min_face_size_px)
    raise ModelError(f"unknown face detector backend {cfg.backend!r}")
