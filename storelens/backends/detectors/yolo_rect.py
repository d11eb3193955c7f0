"""A fixed-shape YOLO export run at a frame's own aspect ratio (``detector.rect``).

Ultralytics' fixed-shape exports (the int8 OpenVINO and ONNX files in the assets are 640x640) letterbox
every frame into a square: a 4:3 camera's frame fills 640x480 of it and the model spends a quarter of its
work on grey padding, a 16:9 one 40 %. Ultralytics' own PyTorch predictor does not: it pads only up to the
next multiple of the stride (``rect``), so a 4:3 frame runs at 640x480. Such an export cannot simply be
reshaped, because the shape is baked into a few constants: the anchor centres and strides of the detection
head (one per cell of the 80x80, 40x40 and 20x20 grids at 640) and the shapes of the ``Reshape`` ops around
the attention block and the box decoder. :func:`rect_model` rewrites exactly those (anchors recomputed for
the new grids; a reshape's spatial dimension left to OpenVINO as -1) and gives the model the new input.

The same edit runs an export at any multiple of 32, so with ``rect`` the detector's ``imgsz`` applies to fixed
exports too (:func:`fit_shape`: 832 runs a 16:9 frame at 832x480, the square model's cost, but never enlarges a frame
beyond its own size or the export's scale).

At the export's scale only the padding changes: every cell the frame covers sees the same pixels. On the visible
sequences the confident boxes are the same people (BENCHMARKS.md); the attention block then attends over the
frame's cells only, without the grey ones, so scores move a little.

Example:
    >>> fit_shape((360, 480), (640, 640))   # a 4:3 frame
    (480, 640)
    >>> fit_shape((1080, 1920), (640, 640))  # 16:9: 640x360, padded to 384
    (384, 640)
    >>> fit_shape((640, 640), (640, 640))
    (640, 640)
"""
from __future__ import annotations

import math

import numpy as np

from storelens.errors import ModelError

#: The strides of the three detection levels of Ultralytics' YOLOv8/YOLO11 heads.
STRIDES = (8, 16, 32)


def fit_shape(image_hw: tuple[int, int], square_hw: tuple[int, int], export_hw: tuple[int, int] | None = None,
              stride: int = STRIDES[-1]) -> tuple[int, int]:
    """The input ``(h, w)`` for ``image_hw``: the image scaled to fit ``square_hw`` (as :func:`letterbox` does), each
    side rounded up to a multiple of ``stride`` and never beyond ``square_hw``. With ``export_hw`` (the export's own
    square) a ``square_hw`` larger than it only keeps more of a larger image's pixels: an image is never enlarged
    beyond its own size or the export's scale, whichever is larger (a low-resolution camera gains nothing from
    invented pixels, and its people would be bigger than the model saw in training), but for the rounding up to
    the stride (a 700x700 image at 832 runs at 704x704, 0.6 % bigger).

    >>> fit_shape((1080, 1920), (832, 832), (640, 640))  # more of a large frame's pixels
    (480, 832)
    >>> fit_shape((288, 384), (832, 832), (640, 640))    # a small frame as at 640, not enlarged further
    (480, 640)
    >>> fit_shape((600, 800), (832, 832), (640, 640))    # at its own size
    (608, 800)
    >>> fit_shape((700, 700), (832, 832), (640, 640))
    (704, 704)
    """
    h, w = image_hw
    r = min(square_hw[0] / h, square_hw[1] / w)
    if export_hw is not None:
        r = min(r, max(1.0, min(export_hw[0] / h, export_hw[1] / w)))
    return tuple(min(math.ceil(max(round(s * r), 1) / stride) * stride, full)  # type: ignore[return-value]
                 for s, full in zip((h, w), square_hw))


def anchor_grid(h: int, w: int, strides=STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Ultralytics' ``make_anchors`` for an ``h`` x ``w`` input: cell centres ``(2, n)`` (x, y in grid units) and
    strides ``(1, n)``, level by level, row by row.

    >>> points, stride = anchor_grid(64, 32, (32,))
    >>> points.tolist(), stride.tolist()
    ([[0.5, 0.5], [0.5, 1.5]], [[32.0, 32.0]])
    """
    points, stride = [], []
    for s in strides:
        gy, gx = np.meshgrid(np.arange(h // s) + 0.5, np.arange(w // s) + 0.5, indexing="ij")
        points.append(np.stack([gx.ravel(), gy.ravel()]))
        stride.append(np.full((1, gx.size), s))
    return np.concatenate(points, 1).astype(np.float32), np.concatenate(stride, 1).astype(np.float32)


def rect_model(model, hw: tuple[int, int]):
    """``model`` (an ``openvino.Model`` of an Ultralytics YOLO detection export, read fresh: it is edited) taking a
    ``(1, 3, h, w)`` input; ModelError when the export has constants this does not know (then leave
    ``detector.rect`` off)."""
    import openvino as ov
    from openvino import opset13 as ops

    param = model.get_parameters()[0]
    shape = param.get_partial_shape()
    h, w = hw
    if shape.is_dynamic:  # a dynamic export takes any multiple of the stride as it is
        try:
            model.reshape([1, 3, h, w])
        except RuntimeError as exc:
            raise ModelError(f"detector.rect: this export does not run at {h}x{w} ({str(exc).splitlines()[0]}); "
                             "set detector.rect: false") from exc
        return model
    h0, w0 = (int(d) for d in param.get_shape()[2:])
    if (h, w) == (h0, w0):
        return model
    a0, s0 = anchor_grid(h0, w0)
    a1, s1 = anchor_grid(h, w)
    n0, n1 = a0.shape[1], a1.shape[1]
    areas = {(h0 // s) * (w0 // s) for s in STRIDES}
    grids = {(h0 // s, w0 // s): w // s for s in STRIDES}
    found = {"anchors": 0, "strides": 0}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        v = op.get_data()
        new = None
        if v.dtype == np.float32 and v.ndim >= 2 and v.shape[-1] == n0:
            flat = v.reshape(-1, n0)
            if flat.shape == a0.shape and np.array_equal(flat, a0):
                new, found["anchors"] = a1.reshape(*v.shape[:-1], n1), found["anchors"] + 1
            elif flat.shape == s0.shape and np.array_equal(flat, s0):
                new, found["strides"] = s1.reshape(*v.shape[:-1], n1), found["strides"] + 1
        elif v.dtype.kind == "i" and v.ndim == 1 and 2 <= v.size <= 6 and all(
                t.get_node().get_type_name() == "Reshape" and t.get_index() == 1
                for t in op.output(0).get_target_inputs()):
            dims = v.tolist()
            if dims[-1] == n0 or dims[-1] in areas:  # (..., anchors) or (..., cells of one level)
                new = np.array(dims[:-1] + [-1], v.dtype)
            elif tuple(dims[-2:]) in grids:  # (..., rows, columns) of one level
                new = np.array(dims[:-2] + [-1, grids[tuple(dims[-2:])]], v.dtype)
        if new is not None:
            op.output(0).replace(ops.constant(new).output(0))
    if not (found["anchors"] and found["strides"]):
        raise ModelError(f"detector.rect: cannot find the anchor constants of this export (found {found}); "
                         "set detector.rect: false")
    new_param = ops.parameter([1, 3, h, w], param.get_element_type(), name=param.get_friendly_name())
    new_param.output(0).get_tensor().set_names(param.output(0).get_names())
    param.output(0).replace(new_param.output(0))
    rect = ov.Model(model.get_results(), [new_param], model.get_friendly_name())
    try:
        rect.validate_nodes_and_infer_types()
    except RuntimeError as exc:
        raise ModelError(f"detector.rect: this export does not run at {h}x{w} ({str(exc).splitlines()[0]}); "
                         "set detector.rect: false") from exc
    out = rect.outputs[0].get_partial_shape()
    if out.is_dynamic or int(out[-1].get_length()) != n1:
        raise ModelError(f"detector.rect: the export's output {out} at {h}x{w} is not (1, 4 + classes, {n1}); "
                         "set detector.rect: false")
    return rect
