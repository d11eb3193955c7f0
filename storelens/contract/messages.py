"""The wire contract: protobuf messages of package ``storelens.v1``.

Generated code lives in ``storelens/_gen`` (regenerate with
``python scripts/gen_proto.py``; a test fails if it drifts from ``proto/``).
Both the in-process bus and Kafka carry exactly these bytes.

Example:
    >>> from storelens.contract.messages import Frame, encode, decode
    >>> data = encode(Frame(camera_id="cam-1", seq=3, ts_ms=120))
    >>> decode(Frame, data).seq
    3
"""
from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

from storelens._gen.storelens.v1.messages_pb2 import (  # noqa: F401  (re-exported)
    Alert,
    BoxXYXY,
    CameraSnapshot,
    CountWindow,
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
from storelens.errors import DecodeError

__all__ = [
    "BoxXYXY", "CountWindow", "DeadLetter", "Direction", "Frame", "LineCrossing", "OccupancyUpdate",
    "PersonCrop", "StageSnapshot", "Track", "TrackedFrame", "DIRECTION_IN", "DIRECTION_OUT",
    "FaceObservation", "TrackAttributes", "CustomerMatch", "CustomerErasure", "Gender", "Emotion",
    "GENDER_NAMES", "EMOTION_NAMES", "gender_value", "emotion_value",
    "encode", "decode", "direction_name",
    "ZoneEvent", "ZoneEventKind", "ZONE_EVENT_ENTER", "ZONE_EVENT_EXIT", "ZONE_EVENT_LOITER",
    "ZONE_EVENT_KIND_NAMES", "ZONE_EVENT_KINDS", "ZoneOccupancy", "ZoneStats", "HeatmapCell", "HeatmapWindow",
    "CameraSnapshot",
    "TrackSummary", "TrackCrossing", "ZoneVisit",
    "PosTransaction",
    "Alert",
    "GroupCrossing", "StaffTrack",
    "StoreKpiHour",
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
