"""The tracker's contract: :class:`Tracker` turns detections into :class:`Tracks`; :data:`TRACKERS` builds them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from storelens.backends.detectors.base import Detections
from storelens.backends.registry import Registry
from storelens.config.trackers import TrackerConfig


@dataclass(frozen=True)
class Tracks:
    track_id: np.ndarray  # (N,) int64, camera-scoped
    bbox_xyxy: np.ndarray  # (N, 4) float32
    confidence: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int32

    def __len__(self) -> int:
        return len(self.track_id)


class Tracker(Protocol):
    """A camera's tracker. A backend's ``SNAPSHOT_FORMAT`` (its name and version, optional) and its ``embedder``
    (if it has one) tag its snapshots (:func:`snapshot_format`): a state saved by another backend, version or
    embedder is never handed to :meth:`restore`."""

    def update(self, image_bgr: np.ndarray, detections: Detections) -> Tracks: ...

    def snapshot(self) -> bytes:
        """Whole state, for exact recovery; :meth:`restore` continues identically."""
        ...

    def restore(self, data: bytes) -> None: ...


def snapshot_format(tracker: object, embedder: bool = True, model: bool = True) -> str:
    """The tag of ``tracker``'s snapshots: its ``SNAPSHOT_FORMAT`` (backend and version), else its class; for a
    tracker with an ``embedder`` (its state holds that model's features), then ``embedder=NAME/DIM``: the
    embedder's ``backend`` (its ``tracker.embedder`` name) or class, and the length of its features; then, for an
    embedder with a ``model_id`` (its weights: file stem and digest), ``model=ID``. Features of another model do
    not compare (of another length, the first frame's distances raised; of the same length, OMZ re-id 0288 and
    0287 agree at cosine ~0.07). ``embedder=False`` / ``model=False``: the tag without them, as snapshots were
    tagged before (:func:`restorable_formats`).

    >>> snapshot_format(object())
    'builtins.object'
    >>> from types import SimpleNamespace as NS
    >>> snapshot_format(NS(SNAPSHOT_FORMAT="pickle:x-1", embedder=NS(backend="omz-reid-openvino", dim=256)))
    'pickle:x-1 embedder=omz-reid-openvino/256'
    >>> snapshot_format(NS(SNAPSHOT_FORMAT="pickle:x-1", embedder=NS(backend="b", dim=2, model_id="m:ab")))
    'pickle:x-1 embedder=b/2 model=m:ab'
    """
    fmt = getattr(tracker, "SNAPSHOT_FORMAT", None)
    fmt = fmt if isinstance(fmt, str) else f"{type(tracker).__module__}.{type(tracker).__qualname__}"
    emb = getattr(tracker, "embedder", None)
    if not embedder or emb is None:
        return fmt
    name = getattr(emb, "backend", None) or type(emb).__qualname__
    fmt = f"{fmt} embedder={name}/{getattr(emb, 'dim', '?')}"
    model_id = getattr(emb, "model_id", None)
    return f"{fmt} model={model_id}" if model and isinstance(model_id, str) else fmt


def restorable_formats(tracker: object) -> tuple[str, ...]:
    """The snapshot tags ``tracker`` restores: its own (:func:`snapshot_format`); the older tags without the model
    or without the embedder (and untagged states, ``None``) only when its embedder runs its default weights or
    names no model, as every state saved before the tag named the model was of the default model unless
    configured otherwise, and such a state cannot be told from another model's.

    >>> from types import SimpleNamespace as NS
    >>> t = NS(SNAPSHOT_FORMAT="x", embedder=NS(backend="b", dim=2, model_id="m:ab", default_weights=False))
    >>> restorable_formats(t)
    ('x embedder=b/2 model=m:ab',)
    >>> t.embedder.default_weights = True
    >>> restorable_formats(t)
    ('x embedder=b/2 model=m:ab', 'x embedder=b/2', 'x', None)
    """
    want = snapshot_format(tracker)
    emb = getattr(tracker, "embedder", None)
    if emb is not None and isinstance(getattr(emb, "model_id", None), str) and not getattr(emb, "default_weights",
                                                                                             False):
        return (want,)
    return tuple(dict.fromkeys((want, snapshot_format(tracker, model=False), snapshot_format(tracker, embedder=False),
                                None)))


def check_feature_dim(features: Iterable[Any], dim: int | None) -> None:
    """Raise ``ValueError`` if one of a restored state's appearance ``features`` is not ``dim`` long (its
    embedder's; ``None``: unchecked): a state of another embedder, saved before :func:`snapshot_format` named it.

    >>> check_feature_dim([np.zeros(1280)], 256)
    Traceback (most recent call last):
    ValueError: the state holds appearance features of length 1280, the embedder gives 256
    """
    if dim is None:
        return
    for f in features:
        if f is not None and np.shape(f)[-1] != dim:
            raise ValueError(f"the state holds appearance features of length {np.shape(f)[-1]}, the embedder "
                             f"gives {dim}")


@runtime_checkable
class SharedAppearanceTracker(Protocol):
    """A tracker whose appearance step can run outside it: ``plan_appearance``, then its ``embedder`` on the
    boxes it asks for, then ``update_with_features`` equals ``update``. Trackers of several cameras that share
    one embedder then need ONE inference for all their crops (:func:`shared_embedder`)."""

    embedder: Any

    def plan_appearance(self, detections: Detections) -> tuple[np.ndarray, list[int]]:
        """(features known without inference, indices of the detections to embed)."""
        ...

    def update_with_features(self, detections: Detections, feats: np.ndarray, embedded: list[int]) -> Tracks: ...


@runtime_checkable
class FrameRateAware(Protocol):
    """A tracker whose frame-counted settings follow the rate frames really come at (the detect-track stage
    measures each camera's from its frames' timestamps)."""

    def set_frame_rate(self, fps: float) -> None: ...


@runtime_checkable
class RefindWindowAware(Protocol):
    """A tracker that can say how long after its last sighting a lost track can still be matched: a break in a
    camera's frames longer than that (a reconnect, a stall) ends the camera's tracker session in detect-track,
    as the tracker counts frames and would otherwise take the frame after the break for the next one."""

    def refind_window_ms(self, frame_interval_ms: float) -> float:
        """That time when frames come ``frame_interval_ms`` apart."""
        ...


def shared_embedder(trackers: Sequence[object]) -> Any | None:
    """The embedder that ALL ``trackers`` (two or more) share and that embeds several images in one call
    (``embed_many``); ``None`` when they must each run their own ``update``.

    >>> shared_embedder([object(), object()]) is None
    True
    """
    if len(trackers) < 2 or not all(isinstance(t, SharedAppearanceTracker) for t in trackers):
        return None
    embedder = trackers[0].embedder  # type: ignore[attr-defined]
    if not hasattr(embedder, "embed_many") or any(t.embedder is not embedder for t in trackers):  # type: ignore[attr-defined]
        return None
    return embedder


#: Tracker backends by ``tracker.backend``; builders take ``embedder=`` (``None``: the configured one).
TRACKERS: Registry[Tracker] = Registry(TrackerConfig, "tracker.backend")


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) boxes -> (N, M) intersection over union."""
    a = np.asarray(a_xyxy, np.float32).reshape(-1, 4)[:, None, :]
    b = np.asarray(b_xyxy, np.float32).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
