"""Settings of the person detector (``detector`` in the site file), one class per backend.

``detector.backend`` picks the class (missing: ``ultralytics``); each backend
module in :mod:`storelens.backends.detectors` registers its builder under the
same name.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from storelens.config.base import BackendConfig, EnvStr


class DetectorConfig(BackendConfig):
    """The ``detector`` section: ``DetectorConfig(**settings)`` is the backend's own class."""

    default_backend: ClassVar[str] = "ultralytics"


class UltralyticsDetectorConfig(DetectorConfig):
    """Ultralytics YOLO (``backend: ultralytics``)."""

    backend: Literal["ultralytics"] = "ultralytics"
    #: Weights path (``.pt``, ``.onnx``, OpenVINO folder) or an Ultralytics model name
    #: such as ``yolo11n.pt`` (downloaded by Ultralytics where there is internet).
    weights: Annotated[EnvStr, Field(validate_default=True)] = "${STORELENS_ASSETS}/models/yolo11n_int8_openvino_model"
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.35
    iou: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    imgsz: Annotated[int, Field(ge=32, le=4096, multiple_of=32)] = 640
    device: str = "cpu"
    #: COCO classes kept; 0 = person.
    classes: list[int] = [0]
    #: Threads the runtime may use (``None``: its default).
    threads: Annotated[int | None, Field(ge=1)] = None
