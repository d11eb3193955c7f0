from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_IN: _ClassVar[Direction]
    DIRECTION_OUT: _ClassVar[Direction]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_IN: Direction
DIRECTION_OUT: Direction

class Frame(_message.Message):
    __slots__ = ("camera_id", "seq", "ts_ms", "jpeg", "width", "height", "source_frame", "end_of_stream", "source_width", "source_height")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FRAME_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    seq: int
    ts_ms: int
    jpeg: bytes
    width: int
    height: int
    source_frame: int
    end_of_stream: bool
    source_width: int
    source_height: int
    def __init__(self, camera_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., jpeg: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., source_frame: _Optional[int] = ..., end_of_stream: bool = ..., source_width: _Optional[int] = ..., source_height: _Optional[int] = ...) -> None: ...

class BoxXYXY(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Track(_message.Message):
    __slots__ = ("track_id", "bbox_xyxy", "confidence", "class_id")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    BBOX_XYXY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    bbox_xyxy: BoxXYXY
    confidence: float
    class_id: int
    def __init__(self, track_id: _Optional[int] = ..., bbox_xyxy: _Optional[_Union[BoxXYXY, _Mapping]] = ..., confidence: _Optional[float] = ..., class_id: _Optional[int] = ...) -> None: ...

class TrackedFrame(_message.Message):
    __slots__ = ("camera_id", "seq", "ts_ms", "width", "height", "tracks", "source_frame", "end_of_stream")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FRAME_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    seq: int
    ts_ms: int
    width: int
    height: int
    tracks: _containers.RepeatedCompositeFieldContainer[Track]
    source_frame: int
    end_of_stream: bool
    def __init__(self, camera_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., tracks: _Optional[_Iterable[_Union[Track, _Mapping]]] = ..., source_frame: _Optional[int] = ..., end_of_stream: bool = ...) -> None: ...

class PersonCrop(_message.Message):
    __slots__ = ("camera_id", "seq", "ts_ms", "track_id", "bbox_xyxy", "jpeg")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    BBOX_XYXY_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    seq: int
    ts_ms: int
    track_id: int
    bbox_xyxy: BoxXYXY
    jpeg: bytes
    def __init__(self, camera_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., track_id: _Optional[int] = ..., bbox_xyxy: _Optional[_Union[BoxXYXY, _Mapping]] = ..., jpeg: _Optional[bytes] = ...) -> None: ...

class LineCrossing(_message.Message):
    __slots__ = ("event_id", "camera_id", "line_id", "track_id", "direction", "ts_ms", "seq")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    camera_id: str
    line_id: str
    track_id: int
    direction: Direction
    ts_ms: int
    seq: int
    def __init__(self, event_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., line_id: _Optional[str] = ..., track_id: _Optional[int] = ..., direction: _Optional[_Union[Direction, str]] = ..., ts_ms: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class OccupancyUpdate(_message.Message):
    __slots__ = ("camera_id", "ts_ms", "occupancy", "total_in", "total_out")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_IN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_OUT_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    ts_ms: int
    occupancy: int
    total_in: int
    total_out: int
    def __init__(self, camera_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., occupancy: _Optional[int] = ..., total_in: _Optional[int] = ..., total_out: _Optional[int] = ...) -> None: ...

class CountWindow(_message.Message):
    __slots__ = ("camera_id", "line_id", "window_start_ms", "window_end_ms", "count_in", "count_out")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    COUNT_IN_FIELD_NUMBER: _ClassVar[int]
    COUNT_OUT_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    line_id: str
    window_start_ms: int
    window_end_ms: int
    count_in: int
    count_out: int
    def __init__(self, camera_id: _Optional[str] = ..., line_id: _Optional[str] = ..., window_start_ms: _Optional[int] = ..., window_end_ms: _Optional[int] = ..., count_in: _Optional[int] = ..., count_out: _Optional[int] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("source_topic", "key", "payload", "reason", "service", "ts_ms")
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    source_topic: str
    key: bytes
    payload: bytes
    reason: str
    service: str
    ts_ms: int
    def __init__(self, source_topic: _Optional[str] = ..., key: _Optional[bytes] = ..., payload: _Optional[bytes] = ..., reason: _Optional[str] = ..., service: _Optional[str] = ..., ts_ms: _Optional[int] = ...) -> None: ...

class StageSnapshot(_message.Message):
    __slots__ = ("stage", "input_topic", "input_partition", "next_offset", "camera_state", "state_format", "ts_ms")
    class CameraStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    STAGE_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOPIC_FIELD_NUMBER: _ClassVar[int]
    INPUT_PARTITION_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    CAMERA_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    input_topic: str
    input_partition: int
    next_offset: int
    camera_state: _containers.ScalarMap[str, bytes]
    state_format: str
    ts_ms: int
    def __init__(self, stage: _Optional[str] = ..., input_topic: _Optional[str] = ..., input_partition: _Optional[int] = ..., next_offset: _Optional[int] = ..., camera_state: _Optional[_Mapping[str, bytes]] = ..., state_format: _Optional[str] = ..., ts_ms: _Optional[int] = ...) -> None: ...
