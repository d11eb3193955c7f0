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

class Gender(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GENDER_UNSPECIFIED: _ClassVar[Gender]
    GENDER_UNKNOWN: _ClassVar[Gender]
    GENDER_FEMALE: _ClassVar[Gender]
    GENDER_MALE: _ClassVar[Gender]

class Emotion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMOTION_UNSPECIFIED: _ClassVar[Emotion]
    EMOTION_UNKNOWN: _ClassVar[Emotion]
    EMOTION_ANGRY: _ClassVar[Emotion]
    EMOTION_DISGUST: _ClassVar[Emotion]
    EMOTION_FEAR: _ClassVar[Emotion]
    EMOTION_HAPPY: _ClassVar[Emotion]
    EMOTION_SAD: _ClassVar[Emotion]
    EMOTION_SURPRISE: _ClassVar[Emotion]
    EMOTION_NEUTRAL: _ClassVar[Emotion]

class ZoneEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZONE_EVENT_KIND_UNSPECIFIED: _ClassVar[ZoneEventKind]
    ZONE_EVENT_ENTER: _ClassVar[ZoneEventKind]
    ZONE_EVENT_EXIT: _ClassVar[ZoneEventKind]
    ZONE_EVENT_LOITER: _ClassVar[ZoneEventKind]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_IN: Direction
DIRECTION_OUT: Direction
GENDER_UNSPECIFIED: Gender
GENDER_UNKNOWN: Gender
GENDER_FEMALE: Gender
GENDER_MALE: Gender
EMOTION_UNSPECIFIED: Emotion
EMOTION_UNKNOWN: Emotion
EMOTION_ANGRY: Emotion
EMOTION_DISGUST: Emotion
EMOTION_FEAR: Emotion
EMOTION_HAPPY: Emotion
EMOTION_SAD: Emotion
EMOTION_SURPRISE: Emotion
EMOTION_NEUTRAL: Emotion
ZONE_EVENT_KIND_UNSPECIFIED: ZoneEventKind
ZONE_EVENT_ENTER: ZoneEventKind
ZONE_EVENT_EXIT: ZoneEventKind
ZONE_EVENT_LOITER: ZoneEventKind

class Frame(_message.Message):
    __slots__ = ("camera_id", "seq", "ts_ms", "jpeg", "bgr", "width", "height", "source_frame", "end_of_stream", "source_width", "source_height", "image_digest")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    BGR_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FRAME_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    seq: int
    ts_ms: int
    jpeg: bytes
    bgr: bytes
    width: int
    height: int
    source_frame: int
    end_of_stream: bool
    source_width: int
    source_height: int
    image_digest: bytes
    def __init__(self, camera_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., jpeg: _Optional[bytes] = ..., bgr: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., source_frame: _Optional[int] = ..., end_of_stream: bool = ..., source_width: _Optional[int] = ..., source_height: _Optional[int] = ..., image_digest: _Optional[bytes] = ...) -> None: ...

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
    __slots__ = ("track_id", "bbox_xyxy", "confidence", "class_id", "appearance", "stationary", "staff_uniform")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    BBOX_XYXY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    APPEARANCE_FIELD_NUMBER: _ClassVar[int]
    STATIONARY_FIELD_NUMBER: _ClassVar[int]
    STAFF_UNIFORM_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    bbox_xyxy: BoxXYXY
    confidence: float
    class_id: int
    appearance: _containers.RepeatedScalarFieldContainer[float]
    stationary: bool
    staff_uniform: str
    def __init__(self, track_id: _Optional[int] = ..., bbox_xyxy: _Optional[_Union[BoxXYXY, _Mapping]] = ..., confidence: _Optional[float] = ..., class_id: _Optional[int] = ..., appearance: _Optional[_Iterable[float]] = ..., stationary: bool = ..., staff_uniform: _Optional[str] = ...) -> None: ...

class TrackedFrame(_message.Message):
    __slots__ = ("camera_id", "seq", "ts_ms", "width", "height", "tracks", "source_frame", "end_of_stream", "image_digest")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FRAME_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    seq: int
    ts_ms: int
    width: int
    height: int
    tracks: _containers.RepeatedCompositeFieldContainer[Track]
    source_frame: int
    end_of_stream: bool
    image_digest: bytes
    def __init__(self, camera_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., tracks: _Optional[_Iterable[_Union[Track, _Mapping]]] = ..., source_frame: _Optional[int] = ..., end_of_stream: bool = ..., image_digest: _Optional[bytes] = ...) -> None: ...

class PersonCrop(_message.Message):
    __slots__ = ("camera_id", "seq", "ts_ms", "track_id", "bbox_xyxy", "jpeg", "end_of_stream")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    BBOX_XYXY_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    seq: int
    ts_ms: int
    track_id: int
    bbox_xyxy: BoxXYXY
    jpeg: bytes
    end_of_stream: bool
    def __init__(self, camera_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., track_id: _Optional[int] = ..., bbox_xyxy: _Optional[_Union[BoxXYXY, _Mapping]] = ..., jpeg: _Optional[bytes] = ..., end_of_stream: bool = ...) -> None: ...

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

class IngestStream(_message.Message):
    __slots__ = ("camera_id", "stream_id", "first_seq", "after_source_frame", "ts_ms", "ended", "target_fps", "position_seq", "position_source_frame")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    AFTER_SOURCE_FRAME_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    TARGET_FPS_FIELD_NUMBER: _ClassVar[int]
    POSITION_SEQ_FIELD_NUMBER: _ClassVar[int]
    POSITION_SOURCE_FRAME_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    stream_id: str
    first_seq: int
    after_source_frame: int
    ts_ms: int
    ended: bool
    target_fps: float
    position_seq: int
    position_source_frame: int
    def __init__(self, camera_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., first_seq: _Optional[int] = ..., after_source_frame: _Optional[int] = ..., ts_ms: _Optional[int] = ..., ended: bool = ..., target_fps: _Optional[float] = ..., position_seq: _Optional[int] = ..., position_source_frame: _Optional[int] = ...) -> None: ...

class FaceObservation(_message.Message):
    __slots__ = ("camera_id", "seq", "ts_ms", "track_id", "face_bbox_xyxy", "landmarks5_xy", "detection_score", "accepted", "rejected_reasons", "sharpness", "yaw_deg", "pitch_deg", "roll_deg", "attending", "age_years", "p_male", "emotion_probs", "face_detector")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_BBOX_XYXY_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS5_XY_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REASONS_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    YAW_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_DEG_FIELD_NUMBER: _ClassVar[int]
    ROLL_DEG_FIELD_NUMBER: _ClassVar[int]
    ATTENDING_FIELD_NUMBER: _ClassVar[int]
    AGE_YEARS_FIELD_NUMBER: _ClassVar[int]
    P_MALE_FIELD_NUMBER: _ClassVar[int]
    EMOTION_PROBS_FIELD_NUMBER: _ClassVar[int]
    FACE_DETECTOR_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    seq: int
    ts_ms: int
    track_id: int
    face_bbox_xyxy: BoxXYXY
    landmarks5_xy: _containers.RepeatedScalarFieldContainer[float]
    detection_score: float
    accepted: bool
    rejected_reasons: _containers.RepeatedScalarFieldContainer[str]
    sharpness: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    attending: bool
    age_years: float
    p_male: float
    emotion_probs: _containers.RepeatedScalarFieldContainer[float]
    face_detector: str
    def __init__(self, camera_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., track_id: _Optional[int] = ..., face_bbox_xyxy: _Optional[_Union[BoxXYXY, _Mapping]] = ..., landmarks5_xy: _Optional[_Iterable[float]] = ..., detection_score: _Optional[float] = ..., accepted: bool = ..., rejected_reasons: _Optional[_Iterable[str]] = ..., sharpness: _Optional[float] = ..., yaw_deg: _Optional[float] = ..., pitch_deg: _Optional[float] = ..., roll_deg: _Optional[float] = ..., attending: bool = ..., age_years: _Optional[float] = ..., p_male: _Optional[float] = ..., emotion_probs: _Optional[_Iterable[float]] = ..., face_detector: _Optional[str] = ...) -> None: ...

class TrackAttributes(_message.Message):
    __slots__ = ("camera_id", "track_id", "first_ts_ms", "last_ts_ms", "last_seq", "n_faces", "n_used", "n_rejected", "rejected_reasons", "age_years", "age_low_years", "age_high_years", "age_unknown_reason", "gender", "gender_confidence", "emotion", "emotion_confidence", "emotion_probabilities", "attention_share", "attention_n", "final")
    class RejectedReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class EmotionProbabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_TS_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_TS_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    N_FACES_FIELD_NUMBER: _ClassVar[int]
    N_USED_FIELD_NUMBER: _ClassVar[int]
    N_REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REASONS_FIELD_NUMBER: _ClassVar[int]
    AGE_YEARS_FIELD_NUMBER: _ClassVar[int]
    AGE_LOW_YEARS_FIELD_NUMBER: _ClassVar[int]
    AGE_HIGH_YEARS_FIELD_NUMBER: _ClassVar[int]
    AGE_UNKNOWN_REASON_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    GENDER_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    EMOTION_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EMOTION_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_SHARE_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_N_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    track_id: int
    first_ts_ms: int
    last_ts_ms: int
    last_seq: int
    n_faces: int
    n_used: int
    n_rejected: int
    rejected_reasons: _containers.ScalarMap[str, int]
    age_years: float
    age_low_years: float
    age_high_years: float
    age_unknown_reason: str
    gender: Gender
    gender_confidence: float
    emotion: Emotion
    emotion_confidence: float
    emotion_probabilities: _containers.ScalarMap[str, float]
    attention_share: float
    attention_n: int
    final: bool
    def __init__(self, camera_id: _Optional[str] = ..., track_id: _Optional[int] = ..., first_ts_ms: _Optional[int] = ..., last_ts_ms: _Optional[int] = ..., last_seq: _Optional[int] = ..., n_faces: _Optional[int] = ..., n_used: _Optional[int] = ..., n_rejected: _Optional[int] = ..., rejected_reasons: _Optional[_Mapping[str, int]] = ..., age_years: _Optional[float] = ..., age_low_years: _Optional[float] = ..., age_high_years: _Optional[float] = ..., age_unknown_reason: _Optional[str] = ..., gender: _Optional[_Union[Gender, str]] = ..., gender_confidence: _Optional[float] = ..., emotion: _Optional[_Union[Emotion, str]] = ..., emotion_confidence: _Optional[float] = ..., emotion_probabilities: _Optional[_Mapping[str, float]] = ..., attention_share: _Optional[float] = ..., attention_n: _Optional[int] = ..., final: bool = ...) -> None: ...

class CustomerMatch(_message.Message):
    __slots__ = ("event_id", "camera_id", "track_id", "seq", "ts_ms", "customer_id", "similarity", "is_new", "returning", "visit_no", "visit_first_ts_ms", "n_faces", "embedder")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    IS_NEW_FIELD_NUMBER: _ClassVar[int]
    RETURNING_FIELD_NUMBER: _ClassVar[int]
    VISIT_NO_FIELD_NUMBER: _ClassVar[int]
    VISIT_FIRST_TS_MS_FIELD_NUMBER: _ClassVar[int]
    N_FACES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    camera_id: str
    track_id: int
    seq: int
    ts_ms: int
    customer_id: str
    similarity: float
    is_new: bool
    returning: bool
    visit_no: int
    visit_first_ts_ms: int
    n_faces: int
    embedder: str
    def __init__(self, event_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., track_id: _Optional[int] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., customer_id: _Optional[str] = ..., similarity: _Optional[float] = ..., is_new: bool = ..., returning: bool = ..., visit_no: _Optional[int] = ..., visit_first_ts_ms: _Optional[int] = ..., n_faces: _Optional[int] = ..., embedder: _Optional[str] = ...) -> None: ...

class CustomerErasure(_message.Message):
    __slots__ = ("customer_id", "ts_ms", "request_id")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    ts_ms: int
    request_id: str
    def __init__(self, customer_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ZoneEvent(_message.Message):
    __slots__ = ("event_id", "camera_id", "zone_id", "zone_kind", "track_id", "kind", "ts_ms", "seq", "dwell_ms", "how")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_KIND_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DWELL_MS_FIELD_NUMBER: _ClassVar[int]
    HOW_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    camera_id: str
    zone_id: str
    zone_kind: str
    track_id: int
    kind: ZoneEventKind
    ts_ms: int
    seq: int
    dwell_ms: int
    how: str
    def __init__(self, event_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., zone_kind: _Optional[str] = ..., track_id: _Optional[int] = ..., kind: _Optional[_Union[ZoneEventKind, str]] = ..., ts_ms: _Optional[int] = ..., seq: _Optional[int] = ..., dwell_ms: _Optional[int] = ..., how: _Optional[str] = ...) -> None: ...

class ZoneStats(_message.Message):
    __slots__ = ("camera_id", "zone_id", "bucket_start_ms", "bucket_end_ms", "visits", "unique_people", "mean_occupancy", "max_occupancy", "dwell_median_s", "dwell_p90_s", "visits_ended", "stoppers", "served", "abandoned", "lost", "covered_ms")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    BUCKET_START_MS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_END_MS_FIELD_NUMBER: _ClassVar[int]
    VISITS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_PEOPLE_FIELD_NUMBER: _ClassVar[int]
    MEAN_OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    MAX_OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    DWELL_MEDIAN_S_FIELD_NUMBER: _ClassVar[int]
    DWELL_P90_S_FIELD_NUMBER: _ClassVar[int]
    VISITS_ENDED_FIELD_NUMBER: _ClassVar[int]
    STOPPERS_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    COVERED_MS_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    zone_id: str
    bucket_start_ms: int
    bucket_end_ms: int
    visits: int
    unique_people: int
    mean_occupancy: float
    max_occupancy: int
    dwell_median_s: float
    dwell_p90_s: float
    visits_ended: int
    stoppers: int
    served: int
    abandoned: int
    lost: int
    covered_ms: int
    def __init__(self, camera_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., bucket_start_ms: _Optional[int] = ..., bucket_end_ms: _Optional[int] = ..., visits: _Optional[int] = ..., unique_people: _Optional[int] = ..., mean_occupancy: _Optional[float] = ..., max_occupancy: _Optional[int] = ..., dwell_median_s: _Optional[float] = ..., dwell_p90_s: _Optional[float] = ..., visits_ended: _Optional[int] = ..., stoppers: _Optional[int] = ..., served: _Optional[int] = ..., abandoned: _Optional[int] = ..., lost: _Optional[int] = ..., covered_ms: _Optional[int] = ...) -> None: ...

class ZoneOccupancy(_message.Message):
    __slots__ = ("camera_id", "ts_ms", "seq", "occupancy")
    class OccupancyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    ts_ms: int
    seq: int
    occupancy: _containers.ScalarMap[str, int]
    def __init__(self, camera_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., seq: _Optional[int] = ..., occupancy: _Optional[_Mapping[str, int]] = ...) -> None: ...

class HeatmapCell(_message.Message):
    __slots__ = ("gx", "gy", "occupancy_ms", "dwell_ms")
    GX_FIELD_NUMBER: _ClassVar[int]
    GY_FIELD_NUMBER: _ClassVar[int]
    OCCUPANCY_MS_FIELD_NUMBER: _ClassVar[int]
    DWELL_MS_FIELD_NUMBER: _ClassVar[int]
    gx: int
    gy: int
    occupancy_ms: int
    dwell_ms: int
    def __init__(self, gx: _Optional[int] = ..., gy: _Optional[int] = ..., occupancy_ms: _Optional[int] = ..., dwell_ms: _Optional[int] = ...) -> None: ...

class HeatmapWindow(_message.Message):
    __slots__ = ("camera_id", "window_start_ms", "window_end_ms", "cell_px", "width", "height", "cells")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    CELL_PX_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    window_start_ms: int
    window_end_ms: int
    cell_px: int
    width: int
    height: int
    cells: _containers.RepeatedCompositeFieldContainer[HeatmapCell]
    def __init__(self, camera_id: _Optional[str] = ..., window_start_ms: _Optional[int] = ..., window_end_ms: _Optional[int] = ..., cell_px: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., cells: _Optional[_Iterable[_Union[HeatmapCell, _Mapping]]] = ...) -> None: ...

class CameraSnapshot(_message.Message):
    __slots__ = ("camera_id", "ts_ms", "seq", "width", "height", "jpeg", "blurred")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    BLURRED_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    ts_ms: int
    seq: int
    width: int
    height: int
    jpeg: bytes
    blurred: int
    def __init__(self, camera_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., seq: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., jpeg: _Optional[bytes] = ..., blurred: _Optional[int] = ...) -> None: ...

class ZoneVisit(_message.Message):
    __slots__ = ("zone_id", "zone_kind", "enter_ts_ms", "exit_ts_ms")
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_KIND_FIELD_NUMBER: _ClassVar[int]
    ENTER_TS_MS_FIELD_NUMBER: _ClassVar[int]
    EXIT_TS_MS_FIELD_NUMBER: _ClassVar[int]
    zone_id: str
    zone_kind: str
    enter_ts_ms: int
    exit_ts_ms: int
    def __init__(self, zone_id: _Optional[str] = ..., zone_kind: _Optional[str] = ..., enter_ts_ms: _Optional[int] = ..., exit_ts_ms: _Optional[int] = ...) -> None: ...

class TrackCrossing(_message.Message):
    __slots__ = ("line_id", "direction", "ts_ms")
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    line_id: str
    direction: Direction
    ts_ms: int
    def __init__(self, line_id: _Optional[str] = ..., direction: _Optional[_Union[Direction, str]] = ..., ts_ms: _Optional[int] = ...) -> None: ...

class TrackSummary(_message.Message):
    __slots__ = ("camera_id", "track_id", "first_ts_ms", "last_ts_ms", "first_seq", "last_seq", "n_frames", "first_x", "first_y", "last_x", "last_y", "appearance", "zones", "crossings")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_TS_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_TS_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    N_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FIRST_X_FIELD_NUMBER: _ClassVar[int]
    FIRST_Y_FIELD_NUMBER: _ClassVar[int]
    LAST_X_FIELD_NUMBER: _ClassVar[int]
    LAST_Y_FIELD_NUMBER: _ClassVar[int]
    APPEARANCE_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    CROSSINGS_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    track_id: int
    first_ts_ms: int
    last_ts_ms: int
    first_seq: int
    last_seq: int
    n_frames: int
    first_x: float
    first_y: float
    last_x: float
    last_y: float
    appearance: _containers.RepeatedScalarFieldContainer[float]
    zones: _containers.RepeatedCompositeFieldContainer[ZoneVisit]
    crossings: _containers.RepeatedCompositeFieldContainer[TrackCrossing]
    def __init__(self, camera_id: _Optional[str] = ..., track_id: _Optional[int] = ..., first_ts_ms: _Optional[int] = ..., last_ts_ms: _Optional[int] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., n_frames: _Optional[int] = ..., first_x: _Optional[float] = ..., first_y: _Optional[float] = ..., last_x: _Optional[float] = ..., last_y: _Optional[float] = ..., appearance: _Optional[_Iterable[float]] = ..., zones: _Optional[_Iterable[_Union[ZoneVisit, _Mapping]]] = ..., crossings: _Optional[_Iterable[_Union[TrackCrossing, _Mapping]]] = ...) -> None: ...

class PosTransaction(_message.Message):
    __slots__ = ("transaction_id", "store_id", "register_id", "ts_ms", "amount_minor", "currency", "items_count")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTER_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_COUNT_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    store_id: str
    register_id: str
    ts_ms: int
    amount_minor: int
    currency: str
    items_count: int
    def __init__(self, transaction_id: _Optional[str] = ..., store_id: _Optional[str] = ..., register_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., items_count: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("alert_id", "rule_id", "kind", "severity", "camera_id", "zone_id", "state", "ts_ms", "seq", "fired_ts_ms", "value", "threshold", "message", "fired_seq")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRED_TS_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIRED_SEQ_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    rule_id: str
    kind: str
    severity: str
    camera_id: str
    zone_id: str
    state: str
    ts_ms: int
    seq: int
    fired_ts_ms: int
    value: float
    threshold: float
    message: str
    fired_seq: int
    def __init__(self, alert_id: _Optional[str] = ..., rule_id: _Optional[str] = ..., kind: _Optional[str] = ..., severity: _Optional[str] = ..., camera_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., state: _Optional[str] = ..., ts_ms: _Optional[int] = ..., seq: _Optional[int] = ..., fired_ts_ms: _Optional[int] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., message: _Optional[str] = ..., fired_seq: _Optional[int] = ...) -> None: ...

class GroupCrossing(_message.Message):
    __slots__ = ("event_id", "camera_id", "line_id", "direction", "ts_ms", "seq", "last_ts_ms", "track_ids")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_TS_MS_FIELD_NUMBER: _ClassVar[int]
    TRACK_IDS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    camera_id: str
    line_id: str
    direction: Direction
    ts_ms: int
    seq: int
    last_ts_ms: int
    track_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, event_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., line_id: _Optional[str] = ..., direction: _Optional[_Union[Direction, str]] = ..., ts_ms: _Optional[int] = ..., seq: _Optional[int] = ..., last_ts_ms: _Optional[int] = ..., track_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class StaffTrack(_message.Message):
    __slots__ = ("camera_id", "track_id", "ts_ms", "seq", "cue", "detail")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CUE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    track_id: int
    ts_ms: int
    seq: int
    cue: str
    detail: str
    def __init__(self, camera_id: _Optional[str] = ..., track_id: _Optional[int] = ..., ts_ms: _Optional[int] = ..., seq: _Optional[int] = ..., cue: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class SiteUpdate(_message.Message):
    __slots__ = ("version", "ts_ms", "actor", "store_id", "cameras_json", "alert_rules_json")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_JSON_FIELD_NUMBER: _ClassVar[int]
    ALERT_RULES_JSON_FIELD_NUMBER: _ClassVar[int]
    version: int
    ts_ms: int
    actor: str
    store_id: str
    cameras_json: str
    alert_rules_json: str
    def __init__(self, version: _Optional[int] = ..., ts_ms: _Optional[int] = ..., actor: _Optional[str] = ..., store_id: _Optional[str] = ..., cameras_json: _Optional[str] = ..., alert_rules_json: _Optional[str] = ...) -> None: ...

class StoreKpiHour(_message.Message):
    __slots__ = ("store_id", "store_name", "region", "timezone", "start_ms", "end_ms", "day", "label", "hours", "visitors", "staff_in", "buying_units", "transactions", "sales_minor", "currency", "dwell_hist", "queue_wait_hist", "abandonments", "computed_ms", "window_start_ms", "window_end_ms", "window_hour_starts_ms", "other_sales")
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    HOURS_FIELD_NUMBER: _ClassVar[int]
    VISITORS_FIELD_NUMBER: _ClassVar[int]
    STAFF_IN_FIELD_NUMBER: _ClassVar[int]
    BUYING_UNITS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    SALES_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    DWELL_HIST_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_HIST_FIELD_NUMBER: _ClassVar[int]
    ABANDONMENTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_HOUR_STARTS_MS_FIELD_NUMBER: _ClassVar[int]
    OTHER_SALES_FIELD_NUMBER: _ClassVar[int]
    store_id: str
    store_name: str
    region: str
    timezone: str
    start_ms: int
    end_ms: int
    day: str
    label: str
    hours: float
    visitors: int
    staff_in: int
    buying_units: int
    transactions: int
    sales_minor: int
    currency: str
    dwell_hist: _containers.RepeatedScalarFieldContainer[int]
    queue_wait_hist: _containers.RepeatedScalarFieldContainer[int]
    abandonments: int
    computed_ms: int
    window_start_ms: int
    window_end_ms: int
    window_hour_starts_ms: _containers.RepeatedScalarFieldContainer[int]
    other_sales: _containers.RepeatedCompositeFieldContainer[CurrencySales]
    def __init__(self, store_id: _Optional[str] = ..., store_name: _Optional[str] = ..., region: _Optional[str] = ..., timezone: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., day: _Optional[str] = ..., label: _Optional[str] = ..., hours: _Optional[float] = ..., visitors: _Optional[int] = ..., staff_in: _Optional[int] = ..., buying_units: _Optional[int] = ..., transactions: _Optional[int] = ..., sales_minor: _Optional[int] = ..., currency: _Optional[str] = ..., dwell_hist: _Optional[_Iterable[int]] = ..., queue_wait_hist: _Optional[_Iterable[int]] = ..., abandonments: _Optional[int] = ..., computed_ms: _Optional[int] = ..., window_start_ms: _Optional[int] = ..., window_end_ms: _Optional[int] = ..., window_hour_starts_ms: _Optional[_Iterable[int]] = ..., other_sales: _Optional[_Iterable[_Union[CurrencySales, _Mapping]]] = ...) -> None: ...

class CurrencySales(_message.Message):
    __slots__ = ("currency", "transactions", "sales_minor")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    SALES_MINOR_FIELD_NUMBER: _ClassVar[int]
    currency: str
    transactions: int
    sales_minor: int
    def __init__(self, currency: _Optional[str] = ..., transactions: _Optional[int] = ..., sales_minor: _Optional[int] = ...) -> None: ...
