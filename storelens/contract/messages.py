"""The wire contract: protobuf messages of package ``storelens.v1``.

Generated code lives in ``storelens/_gen`` (regenerate with
``python scripts/gen_proto.py``; a test fails if it drifts from ``proto/``).
Both the in-process bus and Kafka carry exactly these bytes.

**The type header.** Protobuf parsing is lenient: the bytes of one message type often parse as another
(a ``Frame`` with a ``source_frame`` reads as a ``PersonCrop`` with ``end_of_stream`` set). So every
message published on the bus carries the header :data:`TYPE_HEADER` (``message-type``; a Kafka record
header, a field of the in-process bus' messages) with its message's full protobuf name, the package's
version included (``storelens.v1.PersonCrop``): :func:`type_headers`. A consumer checks it against the
message class its topic carries before decoding (:func:`check_type`; the runner does it for every stage).
A message without the header (an older producer, a message already on a topic before the upgrade) is
decoded as before.

Example:
    >>> from storelens.contract.messages import Frame, encode, decode
    >>> data = encode(Frame(camera_id="cam-1", seq=3, ts_ms=120))
    >>> decode(Frame, data).seq
    3
    >>> type_headers(Frame(camera_id="cam-1"))
    (('message-type', b'storelens.v1.Frame'),)
    >>> try:
    ...     check_type(type_headers(Frame()), PersonCrop)
    ... except DecodeError as exc:
    ...     print(exc)
    wrong message type: storelens.v1.Frame, where storelens.v1.PersonCrop is expected (header message-type)
"""
from __future__ import annotations

import functools
from typing import Iterable, TypeVar

from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

from storelens._gen.storelens.v1.messages_pb2 import (  # noqa: F401  (re-exported)
    Alert,
    BoxXYXY,
    CameraSnapshot,
    CountWindow,
    CurrencySales,
    CustomerErasure,
    CustomerMatch,
    DeadLetter,
    Direction,
    Emotion,
    FaceObservation,
    Frame,
    GroupCrossing,
    Gender,
    HeatmapCell,
    HeatmapWindow,
    IngestStream,
    LineCrossing,
    OccupancyUpdate,
    PersonCrop,
    PosTransaction,
    SiteUpdate,
    StaffTrack,
    StageSnapshot,
    StoreKpiHour,
    Track,
    TrackAttributes,
    TrackedFrame,
    TrackCrossing,
    TrackSummary,
    ZoneEvent,
    ZoneEventKind,
    ZoneOccupancy,
    ZoneStats,
    ZoneVisit,
)
from storelens.errors import DecodeError, WrongMessageType

__all__ = [
    "BoxXYXY", "CountWindow", "DeadLetter", "Direction", "Frame", "LineCrossing", "OccupancyUpdate",
    "PersonCrop", "StageSnapshot", "Track", "TrackedFrame", "DIRECTION_IN", "DIRECTION_OUT",
    "FaceObservation", "TrackAttributes", "CustomerMatch", "CustomerErasure", "Gender", "Emotion",
    "GENDER_NAMES", "EMOTION_NAMES", "gender_value", "emotion_value",
    "encode", "decode", "direction_name", "TYPE_HEADER", "Headers", "type_headers", "check_type",
    "ZoneEvent", "ZoneEventKind", "ZONE_EVENT_ENTER", "ZONE_EVENT_EXIT", "ZONE_EVENT_LOITER",
    "ZONE_EVENT_KIND_NAMES", "ZONE_EVENT_KINDS", "ZoneOccupancy", "ZoneStats", "HeatmapCell", "HeatmapWindow",
    "CameraSnapshot",
    "TrackSummary", "TrackCrossing", "ZoneVisit",
    "PosTransaction",
    "Alert",
    "GroupCrossing", "StaffTrack",
    "StoreKpiHour", "CurrencySales",
]

M = TypeVar("M", bound=Message)

DIRECTION_IN = Direction.Value("DIRECTION_IN")
DIRECTION_OUT = Direction.Value("DIRECTION_OUT")
ZONE_EVENT_ENTER = ZoneEventKind.Value("ZONE_EVENT_ENTER")
ZONE_EVENT_EXIT = ZoneEventKind.Value("ZONE_EVENT_EXIT")
ZONE_EVENT_LOITER = ZoneEventKind.Value("ZONE_EVENT_LOITER")


def encode(msg: Message) -> bytes:
    """Serialise ``msg`` with the protobuf binary codec."""
    return msg.SerializeToString()


def decode(cls: type[M], data: bytes) -> M:
    """Parse ``data`` as ``cls``; raise :class:`DecodeError` with a reason if it is not one."""
    msg = cls()
    try:
        msg.ParseFromString(data)
    except (_PbDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"cannot decode {cls.DESCRIPTOR.full_name}: {exc}") from exc
    return msg


#: The bus header naming the protobuf message type of a message's value (its full name, e.g. ``storelens.v1.Frame``).
TYPE_HEADER = "message-type"

#: A bus message's headers: ``(name, value)`` pairs, as Kafka record headers are.
Headers = tuple[tuple[str, bytes], ...]


@functools.cache
def _headers_of(cls: type[Message]) -> Headers:
    return ((TYPE_HEADER, cls.DESCRIPTOR.full_name.encode()),)


def type_headers(msg: Message | type[Message]) -> Headers:
    """The headers to publish ``msg`` (or a message of class ``msg``) with: :data:`TYPE_HEADER`, its full name."""
    return _headers_of(msg if isinstance(msg, type) else type(msg))


def check_type(headers: Iterable[tuple[str, bytes | None]], cls: type[Message]) -> None:
    """Raise :class:`~storelens.errors.WrongMessageType` when ``headers`` name another message type than ``cls``
    (the class the message's topic carries); nothing when they name none (an older producer: decoded as before).

    Cheap on the hot path: no header, nothing; else a scan of the (one) header and a bytes compare.
    """
    if not headers:
        return
    for name, value in headers:
        if name == TYPE_HEADER:
            expected = _headers_of(cls)[0][1]
            if value != expected:
                actual = (value or b"").decode("utf-8", "replace") or "(empty)"
                raise WrongMessageType(f"wrong message type: {actual}, where {expected.decode()} is expected "
                                       f"(header {TYPE_HEADER})")
            return


def window_only(h: StoreKpiHour) -> bool:
    """A ``StoreKpiHour`` without an hour (``start_ms`` and ``end_ms`` 0) that only announces its window: what a
    store publishes when its window holds no hour at all, so the chain deletes the store's hours in it."""
    return h.start_ms == 0 and h.end_ms == 0


#: ZoneEventKind value -> ``"enter"``, ``"exit"`` or ``"loiter"`` (the names of the domain and the tables).
ZONE_EVENT_KIND_NAMES = {ZONE_EVENT_ENTER: "enter", ZONE_EVENT_EXIT: "exit", ZONE_EVENT_LOITER: "loiter"}
#: The inverse of :data:`ZONE_EVENT_KIND_NAMES`.
ZONE_EVENT_KINDS = {name: value for value, name in ZONE_EVENT_KIND_NAMES.items()}


def direction_name(direction: int) -> str:
    """``DIRECTION_IN`` -> ``"in"``, ``DIRECTION_OUT`` -> ``"out"``."""
    return {DIRECTION_IN: "in", DIRECTION_OUT: "out"}.get(direction, "unspecified")


#: Gender enum value -> lower-case name used by the API ("unknown", "female", "male").
GENDER_NAMES = {Gender.Value("GENDER_UNKNOWN"): "unknown", Gender.Value("GENDER_FEMALE"): "female",
                Gender.Value("GENDER_MALE"): "male"}
#: Emotion enum value -> FER2013 class name ("unknown", "angry", ..., "neutral").
EMOTION_NAMES = {Emotion.Value(f"EMOTION_{n.upper()}"): n for n in
                 ("unknown", "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")}


def gender_value(name: str) -> int:
    """``"male"`` -> ``GENDER_MALE``; anything else unknown."""
    return {v: k for k, v in GENDER_NAMES.items()}.get(name, Gender.Value("GENDER_UNKNOWN"))


def emotion_value(name: str) -> int:
    """``"happy"`` -> ``EMOTION_HAPPY``; anything else unknown."""
    return {v: k for k, v in EMOTION_NAMES.items()}.get(name, Emotion.Value("EMOTION_UNKNOWN"))
