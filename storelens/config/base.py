"""Building blocks of the config models: strict models, ``${VAR}``-expanded paths, per-backend configs.

:class:`BackendConfig` is how a kind of backend (detector, tracker, face
detector, ...) gets one settings class per backend, chosen by the ``backend``
field. A kind is a subclass that sets ``default_backend``; each backend
subclasses the kind with its own fields and a ``Literal`` discriminator, and
that subclassing makes it selectable (an *open* discriminated union: a new
backend needs no edit of the site config). Validating, or calling, the kind
returns the variant that ``backend`` names (missing: ``default_backend``);
an unknown name is an error on the ``backend`` field that lists the known ones.

Example (``faces.detector``: YuNet by default, or MTCNN):
    >>> from storelens.config.faces import FaceDetectorConfig, MtcnnFaceDetectorConfig
    >>> type(FaceDetectorConfig()).__name__, type(FaceDetectorConfig(backend="mtcnn")).__name__
    ('YuNetFaceDetectorConfig', 'MtcnnFaceDetectorConfig')
    >>> FaceDetectorConfig.model_validate({"backend": "mtcnn", "device": "cpu"}) == MtcnnFaceDetectorConfig()
    True
    >>> FaceDetectorConfig(backend="haar")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for FaceDetectorConfig
    backend
      Value error, unknown backend 'haar'; known: mtcnn, yunet ...
"""
from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from storelens.config.env import expand_env
from storelens.errors import ConfigError

#: What no text column takes: NUL (PostgreSQL refuses it) and lone surrogates (no UTF-8 encoding: SQLite's driver
#: and PostgreSQL's refuse them; a JSON body or a YAML escape can carry one as ``"\\ud800"``).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> str:
    """``value`` unchanged; ``ValueError`` (422 in a request) when it holds a character no database stores."""
    if (bad := _UNSTORABLE.search(value)) is not None:
        what = "NUL" if bad.group() == "\x00" else "a lone surrogate"
        raise ValueError(f"must not contain {what} (U+{ord(bad.group()):04X}, at {bad.start()}): text the "
                         f"database cannot store")
    return value


def check_storable(path: str, value: Any) -> None:
    """:class:`ConfigError` naming the field (``cameras[0].zones[1].product``) when a text anywhere in ``value``
    (JSON types; a key or a value) holds what the database cannot store (:func:`storable_text`): a site version
    holding one would break every read of the site."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        if isinstance(value, str):
            try:
                storable_text(value)
            except ValueError as e:
                raise ConfigError(f"{path}: {e}") from None
        return
    for k, v in items:
        if isinstance(k, str):
            try:
                storable_text(k)
            except ValueError as e:
                raise ConfigError(f"{path}: a key {e}") from None
        check_storable((f"{path}.{k}" if path else k) if isinstance(k, str) else f"{path}[{k}]", v)


class Strict(BaseModel):
    """Unknown keys are errors; values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _expand_optional(v: str | None) -> str | None:
    return None if v is None else expand_env(v)


#: A string with ``${VAR}`` / ``${VAR:-default}`` expanded (e.g. a weights path).
EnvStr = Annotated[str, AfterValidator(expand_env)]
#: The same, or ``None``.
OptionalEnvStr = Annotated[str | None, AfterValidator(_expand_optional)]
#: A float that is not NaN or infinite (coordinates: a NaN point would count nothing, and be saved as ``null``).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: OpenVINO's inference precision of a model's float layers: "default" is the device's own choice (on CPUs
#: with AVX512-BF16 or AMX, bf16: results differ slightly from a machine without it, and, for a model compiled
#: per batch size, with the batch). The detector and the person re-id take ``f32`` by default: the same
#: results on every CPU and at every batch size.
Precision = Literal["default", "f32", "bf16", "f16"]


def follow_unset(owner: BaseModel, attr: str, field: str, value: Any) -> None:
    """Within ``owner``'s validator: ``owner.<attr>.<field>`` becomes ``value`` unless the file set it, and
    stays "not set" (out of ``model_fields_set``), so it follows again when the model is re-validated or
    dumped with ``exclude_unset``. The one rule for a setting whose default is another setting's value.

    Example (an unset ``detector.confidence`` follows the tracker's low threshold):
        >>> from storelens.config.site import SiteConfig
        >>> site = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
        ...         "tracker": {"track_low_thresh": 0.2}}
        >>> d = SiteConfig.model_validate(site).detector
        >>> d.confidence, "confidence" in d.model_fields_set
        (0.2, False)
    """
    sub = getattr(owner, attr)
    if field in sub.model_fields_set or getattr(sub, field) == value:
        return
    followed = sub.model_copy(update={field: value})
    followed.__pydantic_fields_set__.discard(field)
    object.__setattr__(owner, attr, followed)  # the owner is frozen; this runs inside its own validation


class BackendConfig(Strict):
    """Base of a kind's per-backend settings (see the module docstring)."""

    backend: str
    #: Set on a kind (a direct subclass): the backend used when ``backend`` is missing.
    default_backend: ClassVar[str]
    #: The kind's backends by name (filled by subclassing).
    variants: ClassVar[dict[str, type[BackendConfig]]]

    def __new__(cls, *args: Any, **data: Any) -> BackendConfig:
        if cls._is_kind():
            cls = cls.variant(data.get("backend", cls.default_backend))
        return super().__new__(cls)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls._is_kind():
            cls.variants = {}
        elif "backend" in cls.__dict__.get("__annotations__", {}):
            names = get_args(cls.model_fields["backend"].annotation)
            if not names:
                raise TypeError(f"{cls.__name__}.backend must be a Literal of its name(s), resolvable where "
                                "the class is defined")
            for name in names:
                cls.variants[name] = cls

    @classmethod
    def _is_kind(cls) -> bool:
        return "default_backend" in cls.__dict__

    @classmethod
    def variant(cls, name: object) -> type[BackendConfig]:
        """The settings class of backend ``name``; a ``ValidationError`` on ``backend`` if unknown."""
        found = cls.variants.get(name) if isinstance(name, str) else None
        if found is None:
            msg = f"unknown backend {name!r}; known: {', '.join(sorted(cls.variants))}"
            raise ValidationError.from_exception_data(cls.__name__, [
                {"type": "value_error", "loc": ("backend",), "input": name, "ctx": {"error": ValueError(msg)}},
            ])
        return found

    @model_validator(mode="wrap")
    @classmethod
    def _pick_variant(cls, data: Any, handler: Any) -> Any:
        if not cls._is_kind() or isinstance(data, cls):
            return handler(data)
        if not isinstance(data, dict):
            return handler(data)  # pydantic's own type error
        return cls.variant(data.get("backend", cls.default_backend)).model_validate(data)
