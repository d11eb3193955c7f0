"""Settings of the person detector (``detector`` in the site file), one class per backend.

``detector.backend`` picks the class (missing: ``openvino``); each backend
module in :mod:`storelens.backends.detectors` registers its builder under the
same name. Both YOLO backends take the same settings (:class:`YoloDetectorConfig`):

* ``openvino`` (default): the YOLO export run by OpenVINO directly (an ``*_openvino_model`` folder, an
  ``.xml`` or an ``.onnx`` file), without PyTorch: the same boxes as ``ultralytics`` on such weights, a
  process that starts seconds sooner and stays ~0.7 GB smaller;
* ``ultralytics``: ``ultralytics.YOLO`` for every format it reads (``.pt``, hub names such as
  ``yolo11n.pt`` that it downloads, ...).
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from storelens.config.base import BackendConfig, EnvStr, OptionalEnvStr, Precision


class DetectorConfig(BackendConfig):
    """The ``detector`` section: ``DetectorConfig(**settings)`` is the backend's own class."""

    default_backend: ClassVar[str] = "openvino"


class YoloDetectorConfig(DetectorConfig):
    """Settings both YOLO backends take (not a backend itself)."""

    #: Weights path (``.pt``, ``.onnx``, OpenVINO folder) or an Ultralytics model name
    #: such as ``yolo11n.pt`` (downloaded by Ultralytics where there is internet).
    weights: Annotated[EnvStr, Field(validate_default=True)] = "${STORELENS_ASSETS}/models/yolo11n_int8_openvino_model"
    #: Smallest detection score kept. Unset in a site file with the ``bytereid`` tracker (the
    #: default), it is the tracker's ``track_low_thresh`` (0.1; :class:`storelens.config.site.SiteConfig`
    #: fills it in); 0.35 otherwise (``deepsort``). Set above ``track_low_thresh``, it is kept, and
    #: bytereid's second (low-score) stage then sees nothing below it.
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.35
    iou: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    #: Input size. Exports with a fixed input shape (the int8 OpenVINO/ONNX files in the assets are
    #: 640x640) run at their own size, unless ``rect`` (``backend: openvino``) reshapes them: then a frame is fitted
    #: into ``imgsz`` x ``imgsz`` if set (into the export's size if not), so 832 on a 16:9 camera runs at 832x480, about the work of today's 640x640, with
    #: small, far people 1.3x bigger. Or use ``tiles`` to see small people bigger.
    imgsz: Annotated[int, Field(ge=32, le=4096, multiple_of=32)] = 640
    device: str = "cpu"
    #: COCO classes kept; 0 = person.
    classes: list[int] = [0]
    #: Threads the runtime may use (``None``: its default).
    threads: Annotated[int | None, Field(ge=1)] = None
    #: Tiled inference for crowded, far views: ``[columns, rows]`` overlapping tiles, each run
    #: through the model at ``imgsz`` and merged by NMS (``[1, 1]``: the whole frame at once).
    #: ``[2, 2]`` costs about 4x the detector time; see ``bench/occupancy_mall.py``.
    tiles: tuple[Annotated[int, Field(ge=1, le=8)], Annotated[int, Field(ge=1, le=8)]] = (1, 1)
    #: Share of a tile that overlaps its neighbour (a person cut by one tile edge is whole in the next).
    tile_overlap: Annotated[float, Field(ge=0.0, lt=0.9)] = 0.2
    #: With tiles: also run the whole frame and merge (finds people bigger than a tile).
    tile_full_frame: bool = False
    #: IoU above which boxes of neighbouring tiles are one person (``None``: ``iou``).
    tile_merge_iou: Annotated[float | None, Field(gt=0.0, le=1.0)] = None
    #: One person per head: drop a box whose head point (10 % below its top) is closer than this times the
    #: narrower box's width to a better box's head point (crowds: whole-body + upper-body duplicates). 0: off.
    head_nms: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0


#: Weights Ultralytics runs through PyTorch (a ``.yaml`` builds an untrained model), where ``threads`` applies.
TORCH_WEIGHTS_SUFFIXES = (".pt", ".torchscript", ".yaml", ".yml")


class UltralyticsDetectorConfig(YoloDetectorConfig):
    """Ultralytics YOLO (``backend: ultralytics``): every weights format ``ultralytics.YOLO`` reads.

    ``threads`` is honoured for PyTorch weights only (:data:`TORCH_WEIGHTS_SUFFIXES`; PyTorch's thread count, set
    after Ultralytics' own setup, which sets it to the CPUs less one): for OpenVINO or ONNX weights Ultralytics
    compiles the model with its own settings, so ``threads`` is refused there (``backend: openvino`` runs the same
    weights with it).
    """

    backend: Literal["ultralytics"] = "ultralytics"

    @field_validator("threads")
    @classmethod
    def _threads_for_torch_weights(cls, v: int | None, info: ValidationInfo) -> int | None:
        weights = info.data.get("weights")
        if v is not None and isinstance(weights, str) and not weights.lower().endswith(TORCH_WEIGHTS_SUFFIXES):
            raise ValueError(f"threads is not honoured by backend: ultralytics for {weights} (OpenVINO/ONNX "
                             "weights: Ultralytics compiles them with its own thread settings); use backend: "
                             "openvino for these weights, or leave threads unset")
        return v


class OpenVINODetectorConfig(YoloDetectorConfig):
    """A YOLO export run by OpenVINO without PyTorch (``backend: openvino``, the default).

    ``weights`` is an ``*_openvino_model`` folder, its ``.xml``, or an ``.onnx`` export; ``device`` is
    ``cpu`` or an OpenVINO device name (``GPU``, ``GPU.1``, ``AUTO``, ...).
    """

    backend: Literal["openvino"] = "openvino"
    #: OpenVINO's compiled-model cache folder (``None``: no cache). A warm cache cuts the model's
    #: compile at start from ~1 s to ~0.1 s on a 2-core CPU.
    cache_dir: OptionalEnvStr = None
    #: Inference precision of the model's float layers (the int8 ones stay int8): ``f32`` (the default) gives
    #: the same boxes on every CPU (a chain with mixed hardware comparing stores), at the same speed as bf16
    #: for the int8 export measured (BENCHMARKS.md); ``default`` is OpenVINO's choice, bf16 on CPUs with
    #: AVX512-BF16 or AMX, f16 on GPUs (on a GPU, set ``default`` or ``f16``: f32 is slower there).
    precision: Precision = "f32"
    #: Run a fixed-shape export at each frame's own aspect ratio, padded only to the next multiple of 32 (640x480
    #: for a 4:3 camera, 640x384 for 16:9) instead of letterboxed into the export's square, as Ultralytics'
    #: PyTorch predictor does (:mod:`storelens.backends.detectors.yolo_rect`). ~23 % less detector time on a
    #: 4:3 camera, ~35 % on 16:9; the boxes move a little (the grey padding is gone), so ``false`` keeps
    #: the boxes of Ultralytics on the same export. One compiled model per frame shape, made at its first frame
    #: (~0.5 s and ~45 MB each on a 2-core CPU; the 8 used last are kept). Ultralytics' YOLOv8/YOLO11 detection
    #: exports (``(1, 4 + classes, anchors)`` output); another export (end2end ones among them) is refused at start.
    #: The frame is fitted into ``imgsz`` when set, else into the export's own size.
    rect: bool = False
