"""Person re-identification embeddings from Intel Open Model Zoo's OpenVINO IRs.

``person-reidentification-retail-0288`` (default, OSNet-type, 0.18M params) or
``-0287`` (larger, separates people better) from the shared assets: input
``1x3x256x128`` BGR, raw 0-255 (the IR holds the mean/std and the channel
swap), output a 256-d embedding that we L2-normalise (compare by cosine).

The crops of a call (up to 8) go through ONE inference request, and
:meth:`OpenVinoReidEmbedder.embed_many` takes crops of several images (cameras)
at once for the same request. The model is compiled for fixed batch sizes
(:data:`BATCH_SIZES`, each once, in the background at load) and a call's crops
are padded up to the next one (its cost grows with the padded size: ~2.7-3.5 ms
of CPU a row). Why not a dynamic batch dimension: OpenVINO's CPU plugin then
re-plans every layer whenever the size differs from the last call's, and a
store camera's number of crops changes from frame to frame (``bench/reid_batch.py``,
crop counts as a street camera asks them: 8.1 ms a call dynamic, 6.0 ms padded
to static sizes, f32 on 2 AVX-512 cores). More crops than the largest size take
inferences of it and one of the size the rest is padded to (:func:`batches_for`).

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
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Sequence

import numpy as np

from storelens.backends.appearance.base import APPEARANCE, model_identity, same_file
from storelens.backends.openvino_device import inference_precision, latency_props, openvino_device
from storelens.config.tracker_bytereid import OmzReidEmbedderConfig
from storelens.errors import ModelError

#: (width, height) the OMZ person re-id models take.
REID_INPUT_WH = (128, 256)
#: Batch sizes the model is compiled for (each ~250 ms and ~25 MB, in the background at load); a call's crops are
#: padded up to the next size, and more than the last go through inferences of the last and one for the rest
#: (:func:`batches_for`). An inference costs about its padded size in crops (f32, 2 AVX-512 cores: 3.5 ms of CPU
#: for 1 crop, 2.7 ms a crop for 8), so 3, 5 or 6 crops padded to 4 or 8 paid up to 60 % for padding.
BATCH_SIZES = (1, 2, 3, 4, 6, 8)
#: Sizes compiled in the background as soon as the model loads (the batch of 1 is compiled before the constructor
#: returns, so a bad model fails there).
PRECOMPILED = BATCH_SIZES[1:]


def batch_size_for(n: int) -> int:
    """The compiled batch size ``n`` crops are padded up to (the largest, for more than it holds).

    >>> [batch_size_for(n) for n in (1, 2, 3, 5, 8, 9, 40)]
    [1, 2, 3, 6, 8, 8, 8]
    """
    return next((b for b in BATCH_SIZES if b >= n), BATCH_SIZES[-1])


def batches_for(n: int) -> list[int]:
    """The compiled sizes of the inferences ``n`` crops take: the largest as often as it fills, then the rest's
    (9 crops of 8 cameras: 8 + 1, not 8 + 8).

    >>> [batches_for(n) for n in (0, 3, 8, 9, 13, 16)]
    [[], [3], [8], [8, 1], [8, 6], [8, 8]]
    """
    largest = BATCH_SIZES[-1]
    rest = n % largest
    return [largest] * (n // largest) + ([batch_size_for(rest)] if rest else [])


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
    backend = "omz-reid-openvino"  # its tracker.embedder name (trackers tag their snapshots with it)

    def __init__(self, model_xml: str, device: str = "cpu", precision: str = "f32",
                 threads: int | None = None) -> None:
        if not os.path.isfile(model_xml):
            raise ModelError(f"re-id model not found: {model_xml} (set STORELENS_ASSETS to the shared assets)")
        import openvino as ov

        self._core = ov.Core()
        try:
            self._ir = self._core.read_model(model_xml)
        except Exception as exc:  # openvino raises RuntimeError subclasses for bad IRs
            raise ModelError(f"cannot load re-id model {model_xml}: {exc}") from exc
        self._props = latency_props(threads, precision)
        self._device = openvino_device(device)
        self.model_xml = model_xml
        weights_bin = os.path.splitext(model_xml)[0] + ".bin"
        #: The model in tracker snapshot tags (:func:`~storelens.backends.trackers.base.snapshot_format`).
        self.model_id = model_identity(model_xml, *([weights_bin] if os.path.isfile(weights_bin) else []))
        #: The default model (``tracker.reid_weights`` unset): states tagged before the tag named it restore.
        self.default_weights = same_file(model_xml, reid_model_path())
        self._lock = threading.Lock()
        self._requests: dict[int, Future] = {}  # batch size -> its compiled model's infer request
        #: compiles, one at a time, in a thread of its own (an idle thread after the first few)
        self._compiler = ThreadPoolExecutor(1, thread_name_prefix="reid-compile")
        first = self._request_for(1).result()  # waited for: a bad model or device fails at load time
        #: The precision the device really runs ("f32", the default; with ``precision="default"``, "bf16" on CPUs
        #: that have it, whose rounding depends on the batch size: a crop's embedding moves by up to ~5e-3).
        self.inference_precision = inference_precision(first.get_compiled_model())
        for size in PRECOMPILED:
            self._request_for(size)  # not waited for
        self.calls = 0  # inference requests run (for tests and benchmarks)
        self.crops = 0

    def _compile(self, size: int):
        import openvino as ov

        model = self._ir.clone()
        try:
            model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([size, 3, REID_INPUT_WH[1], REID_INPUT_WH[0]])})
            return self._core.compile_model(model, self._device, self._props).create_infer_request()
        except Exception as exc:  # openvino raises RuntimeError subclasses
            raise ModelError(f"cannot compile re-id model {self.model_xml} for {self._device}, batch {size}: "
                             f"{exc}") from exc

    def _request_for(self, size: int) -> Future:
        """The infer request of the model compiled for ``size`` crops (compiled once, on first need)."""
        with self._lock:
            if size not in self._requests:
                self._requests[size] = self._compiler.submit(self._compile, size)
            return self._requests[size]

    @property
    def compiled_batch_sizes(self) -> list[int]:
        """Batch sizes compiled so far (for tests and benchmarks)."""
        with self._lock:
            return sorted(size for size, fut in self._requests.items() if fut.done() and not fut.exception())

    def embed(self, image_bgr: np.ndarray, bbox_xyxy: np.ndarray) -> np.ndarray:
        """Embeddings of the boxes of one image, in one inference."""
        return self.embed_many([(image_bgr, bbox_xyxy)])[0]

    def embed_many(self, items: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Embeddings of the boxes of several images (e.g. one frame per camera), in ONE inference of up to
        ``BATCH_SIZES[-1]`` crops (more take one inference per that many, and one for the rest)."""
        sizes = [len(np.asarray(b).reshape(-1, 4)) for _, b in items]
        total = sum(sizes)
        if total == 0:
            return [np.zeros((0, self.dim), np.float32) for _ in items]
        batches = batches_for(total)
        batch = np.zeros((sum(batches), 3, REID_INPUT_WH[1], REID_INPUT_WH[0]), np.float32)
        start = 0
        for (image, boxes), n in zip(items, sizes):
            if n:
                reid_crops(image, boxes, batch[start:start + n])
            start += n
        out, start = [], 0
        for size in batches:
            request = self._request_for(size).result()
            out.append(np.array(request.infer([batch[start:start + size]])[0], np.float32).reshape(size, -1))  # a copy
            start += size
        feats = _l2(np.concatenate(out)[:total])
        self.calls += len(out)
        self.crops += total
        return np.split(feats, np.cumsum(sizes)[:-1])


@APPEARANCE.register("omz-reid-openvino")
def build(cfg: OmzReidEmbedderConfig) -> OpenVinoReidEmbedder:
    return OpenVinoReidEmbedder(cfg.weights or reid_model_path(), cfg.device, cfg.precision, cfg.threads)
