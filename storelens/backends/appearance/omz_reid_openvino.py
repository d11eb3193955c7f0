"""Person re-identification embeddings from Intel Open Model Zoo's OpenVINO IRs.

``person-reidentification-retail-0288`` (default, OSNet-type, 0.18M params) or
``-0287`` (larger, separates people better) from the shared assets: input
``1x3x256x128`` BGR, raw 0-255 (the IR holds the mean/std and the channel
swap), output a 256-d embedding that we L2-normalise (compare by cosine).

All crops of a call go through ONE inference request (the IR's batch
dimension is made dynamic at load time), and :meth:`OpenVinoReidEmbedder.embed_many`
takes crops of several images (cameras) at once for the same single request.

Registered as the appearance embedder ``omz-reid-openvino``
(:class:`~storelens.config.tracker_bytereid.OmzReidEmbedderConfig`), so the
deep-sort tracker can use it too (``tracker.embedder: omz-reid-openvino``).

Example:
    >>> emb = OpenVinoReidEmbedder(reid_model_path("0288"))       # doctest: +SKIP
    >>> emb.embed(image_bgr, boxes_xyxy).shape                     # doctest: +SKIP
    (5, 256)
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from storelens.backends.appearance.base import APPEARANCE
from storelens.backends.openvino_device import inference_precision, openvino_device
from storelens.config.tracker_bytereid import OmzReidEmbedderConfig
from storelens.errors import ModelError

#: (width, height) the OMZ person re-id models take.
REID_INPUT_WH = (128, 256)


def reid_model_path(variant: str = "0288", precision: str = "FP16") -> str:
    """Path of an OMZ person re-id IR (``.xml``) in the shared assets."""
    from storelens.paths import asset

    return str(asset("models", f"person-reidentification-retail-{variant}", precision,
                     f"person-reidentification-retail-{variant}.xml"))


def reid_crops(image_bgr: np.ndarray, bbox_xyxy: np.ndarray, out: np.ndarray) -> None:
    """Write the boxes of ``image_bgr`` into ``out`` (N, 3, 256, 128) float32: plain resize, BGR, raw 0-255."""
    import cv2

    w, h = REID_INPUT_WH
    img_h, img_w = image_bgr.shape[:2]
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(bbox_xyxy, np.float32).reshape(-1, 4)):
        x1i, y1i = min(max(0, int(x1)), img_w - 1), min(max(0, int(y1)), img_h - 1)
        x2i = min(img_w, max(x1i + 1, int(np.ceil(x2))))
        y2i = min(img_h, max(y1i + 1, int(np.ceil(y2))))
        crop = cv2.resize(image_bgr[y1i:y2i, x1i:x2i], (w, h), interpolation=cv2.INTER_LINEAR)
        out[i] = crop.transpose(2, 0, 1)


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class OpenVinoReidEmbedder:
    """OMZ person re-id IR, batched: (image, boxes) -> (N, 256) unit-length float32 rows."""

    dim = 256

    def __init__(self, model_xml: str, device: str = "cpu", precision: str = "default",
                 threads: int | None = None) -> None:
        if not os.path.isfile(model_xml):
            raise ModelError(f"re-id model not found: {model_xml} (set STORELENS_ASSETS to the shared assets)")
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(model_xml)
            model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([-1, 3, REID_INPUT_WH[1], REID_INPUT_WH[0]])})
        except Exception as exc:  # openvino raises RuntimeError subclasses for bad IRs
            raise ModelError(f"cannot load re-id model {model_xml}: {exc}") from exc
        props: dict = {"PERFORMANCE_HINT": "LATENCY"}
        if precision != "default":
            props["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            props["INFERENCE_NUM_THREADS"] = int(threads)
        ov_device = openvino_device(device)
        self._model = core.compile_model(model, ov_device, props)
        self._request = self._model.create_infer_request()
        #: The precision the device really runs ("f32"; "bf16" by default on CPUs that have it, whose
        #: rounding depends on the batch: embeddings of a crop alone and in a batch differ by ~5e-4).
        self.inference_precision = inference_precision(self._model)
        self.model_xml = model_xml
        self.calls = 0  # inference requests run (for tests and benchmarks)
        self.crops = 0

    def embed(self, image_bgr: np.ndarray, bbox_xyxy: np.ndarray) -> np.ndarray:
        """Embeddings of the boxes of one image, in one inference."""
        return self.embed_many([(image_bgr, bbox_xyxy)])[0]

    def embed_many(self, items: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Embeddings of the boxes of several images (e.g. one frame per camera), in ONE inference."""
        sizes = [len(np.asarray(b).reshape(-1, 4)) for _, b in items]
        total = sum(sizes)
        if total == 0:
            return [np.zeros((0, self.dim), np.float32) for _ in items]
        batch = np.empty((total, 3, REID_INPUT_WH[1], REID_INPUT_WH[0]), np.float32)
        start = 0
        for (image, boxes), n in zip(items, sizes):
            if n:
                reid_crops(image, boxes, batch[start:start + n])
            start += n
        feats = _l2(np.asarray(self._request.infer([batch])[0], np.float32).reshape(total, -1))
        self.calls += 1
        self.crops += total
        return np.split(feats, np.cumsum(sizes)[:-1])


@APPEARANCE.register("omz-reid-openvino")
def build(cfg: OmzReidEmbedderConfig) -> OpenVinoReidEmbedder:
    return OpenVinoReidEmbedder(cfg.weights or reid_model_path(), cfg.device, cfg.precision, cfg.threads)
