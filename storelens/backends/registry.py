"""Backends registered by name: a :class:`Registry` per kind of backend.

A backend is one module: its settings class lives in the config layer (a
variant of a :class:`~storelens.config.base.BackendConfig` kind, with
``backend: Literal["name"]``) and its module registers a build function
under the same name::

    @DETECTORS.register("ultralytics")
    def build(cfg: UltralyticsDetectorConfig) -> Detector:
        return UltralyticsDetector(cfg)

``DETECTORS.build(cfg, **deps)`` then calls the builder that ``cfg.backend``
names, passing ``deps`` (e.g. a tracker's embedder) on.

Example:
    >>> from storelens.backends.face_detectors import FACE_DETECTORS
    >>> from storelens.config.faces import FaceDetectorConfig
    >>> FACE_DETECTORS.names()
    ['mtcnn', 'yunet']
    >>> type(FACE_DETECTORS.build(FaceDetectorConfig(backend="yunet"))).__name__
    'YuNetFaceDetector'
"""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from storelens.config.base import BackendConfig
from storelens.errors import ModelError

T = TypeVar("T")
Builder = Callable[..., T]


class Registry(Generic[T]):
    """Build functions of one kind of backend, by name.

    Args:
        kind: the kind's settings class; only names it has a variant for can be registered.
        field: where the name is set in the site file, for error messages (e.g. ``faces.detector.backend``).
    """

    def __init__(self, kind: type[BackendConfig], field: str) -> None:
        self.kind = kind
        self.field = field
        self._builders: dict[str, Builder[T]] = {}

    def register(self, name: str) -> Callable[[Builder[T]], Builder[T]]:
        """Decorator: ``fn(config, **deps)`` builds backend ``name``."""
        if name not in self.kind.variants:
            raise ValueError(f"{self.field}: no settings class for backend {name!r} (define a {self.kind.__name__} "
                             f"subclass with backend: Literal[{name!r}] first)")
        if name in self._builders:
            raise ValueError(f"{self.field}: backend {name!r} is already registered")

        def add(fn: Builder[T]) -> Builder[T]:
            self._builders[name] = fn
            return fn

        return add

    def unregister(self, name: str) -> None:
        """Forget backend ``name`` (for tests that register their own)."""
        self._builders.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def build(self, config: BackendConfig, **deps: Any) -> T:
        """The backend ``config.backend`` names, built from ``config`` (and ``deps``)."""
        name = config.backend
        builder = self._builders.get(name)
        if builder is None:
            raise ModelError(f"{self.field}: unknown backend {name!r}; known: {', '.join(self.names()) or 'none'}")
        return builder(config, **deps)
