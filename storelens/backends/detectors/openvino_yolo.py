"""A YOLO export run by OpenVINO directly (``detector.backend: openvino``, the default).

The same pre- and post-processing as Ultralytics' predictor on a fixed-shape export (letterbox to the
model's input with grey 114 padding, RGB in [0, 1], converted by OpenVINO inside the compiled model;
best class per box, score above ``confidence``, ``classes`` kept, greedy per-class NMS at ``iou``, at
most 300 boxes, boxes back to image pixels and clipped), so the boxes equal ``backend: ultralytics`` on
the same weights (tests/test_detector_openvino.py compares them frame by frame on real footage). Without
PyTorch in the process it starts seconds sooner and uses ~0.7 GB less memory; the per-frame work around the
inference is a few numpy calls.

Reads the decoded-box output of Ultralytics' detection exports, ``(1, 4 + classes, anchors)``
(``xywh`` centre boxes in input pixels, then class scores); ``end2end`` exports (``(1, N, 6)``) too.

Example:
    >>> from storelens.config import OpenVINODetectorConfig
    >>> det = OpenVINOYoloDetector(OpenVINODetectorConfig(confidence=0.25))  # doctest: +SKIP
    >>> det.detect(image_bgr).bbox_xyxy.shape                                 # doctest: +SKIP
    (5, 4)
"""
from __future__ import annotations

import collections
import logging
import os
import pathlib
from typing import Sequence

import cv2
import numpy as np

from storelens.backends.detectors.base import DETECTORS, Detections
from storelens.backends.detectors.tiling import detect_as_configured
from storelens.backends.detectors.yolo_rect import STRIDES, fit_shape, rect_model
from storelens.backends.openvino_device import inference_precision, latency_props, openvino_device
from storelens.config.detectors import OpenVINODetectorConfig
from storelens.errors import ConfigError, ModelError

#: Ultralytics' predictor defaults that its detection exports assume.
PAD_VALUE = 114
MAX_DET = 300
_MAX_NMS = 30000
log = logging.getLogger(__name__)
#: Compiled frame shapes kept with ``detector.rect`` (~45 MB each; a store's cameras have a few).
MAX_SHAPES = 8
_CLASS_OFFSET = 7680.0  # per-class box offset of class-aware NMS (Ultralytics' max_wh)


def model_file(weights: str) -> pathlib.Path:
    """The ``.xml``/``.onnx`` file of ``weights`` (a file, or an ``*_openvino_model`` folder); ModelError if none."""
    p = pathlib.Path(weights)
    if p.is_dir():
        found = sorted(p.glob("*.xml"))
        if not found:
            raise ModelError(f"no OpenVINO .xml model in {weights} (detector.weights)")
        return found[0]
    if not p.is_file():
        raise ModelError(
            f"detector weights not found: {weights} (set detector.weights to a local file/folder; an "
            "Ultralytics model name such as yolo11n.pt needs detector.backend: ultralytics)")
    if p.suffix.lower() not in (".xml", ".onnx"):
        raise ModelError(f"detector.backend openvino reads an OpenVINO model folder, .xml or .onnx, not {p.name} "
                         "(set detector.backend: ultralytics for .pt and other formats)")
    return p


def letterbox(image_bgr: np.ndarray, out: np.ndarray) -> None:
    """Write ``image_bgr`` letterboxed into ``out`` (``(H, W, 3)`` uint8 BGR) as Ultralytics does: scaled to fit,
    centred, grey 114 padding. The model's input converts it to RGB in [0, 1] (:func:`uint8_bgr_input`).

    >>> out = np.empty((64, 64, 3), np.uint8)
    >>> letterbox(np.full((32, 64, 3), 255, np.uint8), out)
    >>> int(out[0, 0, 0]), int(out[32, 32, 0])  # grey padding above, the white image below
    (114, 255)
    """
    h, w = image_bgr.shape[:2]
    out_h, out_w = out.shape[:2]
    r = min(out_h / h, out_w / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    top, left = round((out_h - new_h) / 2 - 0.1), round((out_w - new_w) / 2 - 0.1)
    if (w, h) != (new_w, new_h):
        image_bgr = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out.fill(PAD_VALUE)
    out[top:top + new_h, left:left + new_w] = image_bgr


def uint8_bgr_input(model):
    """``model`` taking Ultralytics' input from a ``(1, H, W, 3)`` uint8 BGR image: OpenVINO's preprocessing does
    the float conversion, BGR->RGB and /255 inside the compiled model (the same input values: identical outputs,
    and ~3 ms a frame less than doing it in numpy on 2 cores)."""
    from openvino import Layout, Type
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(Type.u8).set_layout(Layout("NHWC")).set_color_format(ColorFormat.BGR)
    ppp.input().model().set_layout(Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
    return ppp.build()


def to_image_pixels(boxes_xyxy: np.ndarray, in_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """Boxes in the letterboxed input back to image pixels, clipped to the image (in place)."""
    gain = min(in_hw[0] / image_hw[0], in_hw[1] / image_hw[1])
    new_h, new_w = (max(round(x * gain), 1) for x in image_hw)
    pad_x, pad_y = round((in_hw[1] - new_w) / 2 - 0.1), round((in_hw[0] - new_h) / 2 - 0.1)
    boxes_xyxy -= np.array([pad_x, pad_y, pad_x, pad_y], np.float32)
    boxes_xyxy /= np.array([new_w / image_hw[1], new_h / image_hw[0]] * 2, np.float32)
    np.clip(boxes_xyxy[:, 0::2], 0, image_hw[1], out=boxes_xyxy[:, 0::2])
    np.clip(boxes_xyxy[:, 1::2], 0, image_hw[0], out=boxes_xyxy[:, 1::2])
    return boxes_xyxy


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS (highest score first; a box goes when its IoU with a kept one is > ``iou``).

    >>> nms(np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10]], np.float32),
    ...     np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist()
    [0, 2]
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes_xyxy.T
    area = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        order = rest[inter / (area[i] + area[rest] - inter) <= iou]
    return np.asarray(keep, np.int64)


def decode(pred: np.ndarray, confidence: float, iou: float, classes: Sequence[int] | None) -> tuple[np.ndarray, ...]:
    """One image's ``(4 + classes, anchors)`` output as (boxes xyxy in input pixels, scores, class ids).

    A box is kept when its best class is above ``confidence`` and in ``classes`` (Ultralytics' rule). With
    ``classes`` given, only the anchors where one of those classes is above ``confidence`` can pass, so the
    best class is looked for among those alone (~0.1 ms instead of ~1.4 for 8400 anchors x 80 classes; the
    same boxes).

    >>> pred = np.zeros((4 + 3, 3), np.float32)
    >>> pred[:4] = [[10, 20, 30], [10, 20, 30], [4, 4, 4], [4, 4, 4]]  # centre x, y, w, h
    >>> pred[4:, 0] = [0.9, 0.1, 0.0]   # a person
    >>> pred[4:, 1] = [0.5, 0.8, 0.0]   # best class 1: not a person, though its person score is high
    >>> pred[4:, 2] = [0.05, 0.0, 0.0]  # below the confidence
    >>> boxes, conf, cls = decode(pred, 0.25, 0.7, [0])
    >>> boxes.tolist(), [round(float(c), 2) for c in conf], cls.tolist()
    ([[8.0, 8.0, 12.0, 12.0]], [0.9], [0])
    """
    scores_all = pred[4:]
    if classes is not None:  # anchors where a kept class is above the confidence (a superset of the kept ones)
        cand = np.flatnonzero((scores_all[np.asarray(classes, np.int64)] > confidence).any(0))
    else:
        cand = np.arange(pred.shape[1])
    cls = scores_all[:, cand].argmax(0)
    conf = scores_all[cls, cand]
    keep = conf > confidence
    if classes is not None:
        keep &= np.isin(cls, classes)
    pos = np.flatnonzero(keep)  # positions in cand (anchor order)
    if pos.size > _MAX_NMS:
        pos = pos[np.argsort(-conf[pos], kind="stable")[:_MAX_NMS]]
    xywh = pred[:4, cand[pos]].T
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    conf, cls = conf[pos], cls[pos]
    kept = nms(boxes + (cls[:, None] * _CLASS_OFFSET).astype(np.float32), conf, iou)[:MAX_DET]
    return boxes[kept], conf[kept], cls[kept]


def decode_end2end(pred: np.ndarray, confidence: float, classes: Sequence[int] | None) -> tuple[np.ndarray, ...]:
    """One image's ``(N, 6)`` output of an end2end export (``x1 y1 x2 y2 score class`` in input pixels, NMS
    already done: YOLO26, YOLOv10) as (boxes xyxy, scores, class ids) above ``confidence``, ``classes`` kept.

    >>> rows = np.array([[0, 0, 9, 9, 0.9, 0], [5, 5, 9, 9, 0.05, 0], [1, 1, 4, 4, 0.8, 2]], np.float32)
    >>> boxes, conf, cls = decode_end2end(rows, 0.25, [0])
    >>> boxes.tolist(), [round(float(c), 2) for c in conf], cls.tolist()
    ([[0.0, 0.0, 9.0, 9.0]], [0.9], [0])
    """
    keep = pred[:, 4] > confidence
    if classes is not None:
        keep &= np.isin(pred[:, 5].astype(np.int32), classes)
    rows = pred[keep][:MAX_DET]
    return rows[:, :4].copy(), rows[:, 4], rows[:, 5].astype(np.int32)


@DETECTORS.register("openvino")
class OpenVINOYoloDetector:
    """YOLO person detector on OpenVINO (see the module docstring).

    With ``tiles`` other than ``[1, 1]`` each frame is cut into overlapping tiles
    (:mod:`storelens.backends.detectors.tiling`), as with ``backend: ultralytics``.
    """

    def __init__(self, cfg: OpenVINODetectorConfig) -> None:
        import openvino as ov

        if cfg.device.lower().startswith(("cuda", "mps")):
            raise ModelError(f"detector.device {cfg.device} is a PyTorch device: set detector.backend: ultralytics "
                             "(OpenVINO devices: cpu, GPU, NPU, AUTO)")
        path = model_file(cfg.weights)
        core = ov.Core()
        if cfg.cache_dir:
            os.makedirs(cfg.cache_dir, exist_ok=True)
            core.set_property({"CACHE_DIR": cfg.cache_dir})
        self._core, self._path = core, path
        self._device, self._props = openvino_device(cfg.device), latency_props(cfg.threads, cfg.precision)
        try:
            model = core.read_model(str(path))
            #: With ``rect``: the export as read, cloned for each shape's edit (no second read of the file).
            self._source = model.clone() if cfg.rect else None
            shape = model.inputs[0].get_partial_shape()
            if shape.is_dynamic:  # a dynamic export runs at imgsz x imgsz, one image a request
                model.reshape([1, 3, cfg.imgsz, cfg.imgsz])
            #: The export's own (square) input; with ``rect`` each frame shape gets its own (:meth:`_runner`).
            self.input_hw = tuple(int(d) for d in model.inputs[0].get_shape()[2:])
            compiled = core.compile_model(uint8_bgr_input(model), self._device, self._props)
            #: What the device really runs the float layers in ("f32", "bf16", ...; "" if it does not say).
            self.inference_precision = inference_precision(compiled)
            out = model.outputs[0].get_partial_shape()
        except Exception as exc:  # openvino raises RuntimeError subclasses for bad models and devices
            raise ModelError(f"cannot load detector model {path} on {cfg.device}: {exc}") from exc
        if out.rank.get_length() == 3 and out[2].is_static and out[2].get_length() != 6 and out[1].is_static:
            n = out[1].get_length() - 4  # (1, 4 + classes, anchors); an end2end export's (1, N, 6) is not checked
            bad = [c for c in cfg.classes if not 0 <= c < n]
            if bad:
                raise ConfigError(f"detector.classes: {bad} not among the model's {n} classes (0..{n - 1})")
        self.cfg = cfg
        #: With ``rect``, frames are fitted into ``imgsz`` if the site sets it, else into the export's own size.
        self._square_hw = (cfg.imgsz, cfg.imgsz) if "imgsz" in cfg.model_fields_set else self.input_hw
        if cfg.rect:  # an export the edit does not know fails here, at start, not at the first frame
            h0, w0 = self.input_hw
            for hw in ((max(h0 - STRIDES[-1], STRIDES[-1]), w0), (h0, max(w0 - STRIDES[-1], STRIDES[-1]))):
                self._rect_compiled(hw, compile_it=False)
        #: Input ``(h, w)`` -> (infer request, its uint8 input buffer): the export's square, or with ``rect`` one per
        #: frame shape, compiled at its first frame (that frame's inference allocates too), the
        #: :data:`MAX_SHAPES` used last kept.
        self._runners: collections.OrderedDict[tuple[int, int], tuple] = collections.OrderedDict()
        if not cfg.rect:
            self._runners[self.input_hw] = (compiled.create_infer_request(), np.empty((1, *self.input_hw, 3), np.uint8))
            self.detect(np.zeros((*self.input_hw, 3), np.uint8))  # the first inference allocates: not in timings

    def _runner(self, image_hw: tuple[int, int]) -> tuple[tuple[int, int], object, np.ndarray]:
        """The input shape, infer request and input buffer for an image of ``image_hw``: the export's square, or
        with ``rect`` the image fitted into ``imgsz`` x ``imgsz`` (compiled at the first image of that shape)."""
        hw = fit_shape(image_hw, self._square_hw, self.input_hw) if self.cfg.rect else self.input_hw
        runner = self._runners.get(hw)
        if runner is None:
            compiled = self._rect_compiled(hw)
            runner = self._runners[hw] = (compiled.create_infer_request(), np.empty((1, *hw, 3), np.uint8))
            log.info("detector: compiled for a %dx%d input (frames of %dx%d, detector.rect)", *hw, *image_hw)
            if len(self._runners) > MAX_SHAPES:
                old = next(iter(self._runners))
                del self._runners[old]
                log.warning("detector: more than %d frame shapes with detector.rect; dropped the %dx%d model "
                            "(it is compiled again when needed)", MAX_SHAPES, *old)
        else:
            self._runners.move_to_end(hw)
        return hw, *runner

    def _rect_compiled(self, hw: tuple[int, int], compile_it: bool = True):
        """The export edited for an ``hw`` input (:func:`rect_model`), compiled unless ``compile_it`` is False (then
        only checked); ModelError naming ``detector.rect`` if it cannot be."""
        try:
            model = rect_model(self._source.clone(), hw)
            return self._core.compile_model(uint8_bgr_input(model), self._device, self._props) if compile_it else None
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 (openvino's RuntimeError subclasses)
            raise ModelError(f"detector.rect: cannot run {self._path} at a {hw[0]}x{hw[1]} input ({exc}); "
                             "set detector.rect: false") from exc

    def detect(self, image_bgr: np.ndarray) -> Detections:
        return detect_as_configured(image_bgr, self._detect_one, self.cfg)

    def detect_many(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """:meth:`detect` of each image, in order (one inference an image: the exports have a batch of 1)."""
        return [self.detect(image) for image in images]

    def _detect_one(self, image_bgr: np.ndarray) -> Detections:
        cfg = self.cfg
        in_hw, request, buf = self._runner(image_bgr.shape[:2])
        letterbox(image_bgr, buf[0])
        pred = np.asarray(request.infer([buf])[0])[0]
        if pred.ndim == 2 and pred.shape[-1] == 6:  # end2end export: (N, x1 y1 x2 y2 score class), NMS done
            boxes, conf, cls = decode_end2end(pred, cfg.confidence, cfg.classes)
        else:
            boxes, conf, cls = decode(pred, cfg.confidence, cfg.iou, cfg.classes)
        if not len(conf):
            return Detections.empty()
        boxes = to_image_pixels(boxes.astype(np.float32), in_hw, image_bgr.shape[:2])
        return Detections(boxes, conf.astype(np.float32), cls.astype(np.int32))
