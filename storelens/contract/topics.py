"""Topic names and their settings, declared once for every mode and service.

Keys are camera ids (UTF-8), so one camera's messages stay ordered within a
partition (except where :attr:`TopicSpec.keyed_by_camera` is false). The
distributed deployment creates topics from :data:`TOPICS`, each kept by time with a
``segment.ms`` well below its ``retention.ms`` (:func:`segment_ms`).
"""
from __future__ import annotations

from dataclasses import dataclass

FRAMES = "frames"
TRACKS = "tracks"
PERSON_CROPS = "person-crops"
CROSSINGS = "crossings"
OCCUPANCY = "occupancy"
COUNTS = "counts"
DEAD_LETTER = "dead-letter"
FACE_OBSERVATIONS = "face-observations"
TRACK_ATTRIBUTES = "track-attributes"
CUSTOMER_MATCHES = "customer-matches"
#: Right-to-erasure requests from the API to reid (keyed by customer id, not camera).
CUSTOMER_ERASURES = "customer-erasures"
#: Tracks the reid stage recognised as enrolled staff by face (``StaffTrack``, cue ``face``), to the history.
STAFF_TRACKS = "staff-tracks"
ZONE_EVENTS = "zone-events"
ZONE_STATS = "zone-stats"
ZONE_OCCUPANCY = "zone-occupancy"
HEATMAPS = "heatmaps"
TRACK_SUMMARIES = "track-summaries"
#: Reference frames of the cameras (faces blurred), the background of heatmaps.
CAMERA_SNAPSHOTS = "camera-snapshots"
#: Point-of-sale transactions (keyed by store id) from the API / `storelens pos import` to the history.
POS_TRANSACTIONS = "pos-transactions"
#: Alerts of the site's rules (firing / resolved), from the analytics stage.
ALERTS = "alerts"
#: Compacted, keyed by store id: the site's cameras, lines and zones edited through the API (``SiteUpdate``).
SITE_CONFIG = "site-config"
#: Compacted, keyed ``<store_id>/<start_ms>``: one hour of the store's KPIs (``StoreKpiHour``), what a chain rolls up.
STORE_KPIS = "store-kpis"
#: Private, compacted: detect-track's tracker snapshots (one per frames partition).
DETECT_TRACK_STATE = "detect-track-state"
#: Private, compacted, keyed by camera id: where ingest's stream of each camera starts (``IngestStream``).
INGEST_STATE = "ingest-state"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    message: str  # fully-qualified protobuf message name
    partitions: int
    retention_ms: int
    retention_bytes: int = -1  # per partition; -1 unbounded
    max_message_bytes: int = 1_048_588
    compacted: bool = False
    #: ``partitions`` is fixed; otherwise the deployment's ``kafka.partitions`` is used.
    partitions_fixed: bool = False
    #: Keyed by camera id (:func:`camera_key`): at most one partition per camera gets messages, so at most
    #: min(partitions, cameras) consumers of a group get any (the KEDA ceilings of k8s/).
    keyed_by_camera: bool = True
    #: A compacted topic's ``segment.ms`` (``None``: the broker's, 7 days). Compaction never cleans the open
    #: segment: a topic written often (``ingest-state``: file positions) needs it short to stay small.
    compacted_segment_ms: int | None = None
    #: A compacted topic's ``min.cleanable.dirty.ratio`` (``None``: the broker's, 0.5).
    min_cleanable_dirty_ratio: float | None = None

    @property
    def segment_ms(self) -> int | None:
        """The topic's ``segment.ms`` (:func:`segment_ms`; compacted: :attr:`compacted_segment_ms`; ``None``: the
        broker's)."""
        return self.compacted_segment_ms if self.compacted else segment_ms(self.retention_ms)


#: The longest time a segment of a time-retained topic stays open (Kafka's default ``segment.ms`` is 7 days).
MAX_SEGMENT_MS = 24 * 3_600_000


def segment_ms(retention_ms: int) -> int | None:
    """``segment.ms`` of a topic kept ``retention_ms``: a quarter of it, at most :data:`MAX_SEGMENT_MS`;
    ``None`` when it is not time-retained (``retention_ms`` <= 0).

    Kafka deletes whole segments, once a segment's newest record is past ``retention.ms``; a segment
    stays open (and keeps every record in it) until ``segment.bytes`` (1 GiB) or ``segment.ms`` (7 days by
    default). Bounding ``segment.ms`` bounds how long a record outlives its retention: at most
    ``segment.ms`` plus the broker's ``log.retention.check.interval.ms`` (5 minutes by default).

    >>> segment_ms(3_600_000), segment_ms(30 * 86_400_000), segment_ms(-1)
    (900000, 86400000, None)
    """
    if retention_ms <= 0:
        return None
    return max(1, min(retention_ms // 4, MAX_SEGMENT_MS))


_HOUR = 3_600_000
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(FRAMES, "storelens.v1.Frame", 6, 1 * _HOUR, retention_bytes=2 * 1024**3, max_message_bytes=8 * 1024**2),
    TopicSpec(PERSON_CROPS, "storelens.v1.PersonCrop", 6, 1 * _HOUR, retention_bytes=1024**3, max_message_bytes=2 * 1024**2),
    TopicSpec(TRACKS, "storelens.v1.TrackedFrame", 6, 24 * _HOUR),
    TopicSpec(CROSSINGS, "storelens.v1.LineCrossing", 6, 7 * 24 * _HOUR),
    TopicSpec(OCCUPANCY, "storelens.v1.OccupancyUpdate", 6, 7 * 24 * _HOUR),
    TopicSpec(COUNTS, "storelens.v1.CountWindow", 6, 7 * 24 * _HOUR),
    TopicSpec(FACE_OBSERVATIONS, "storelens.v1.FaceObservation", 6, 7 * 24 * _HOUR),
    TopicSpec(TRACK_ATTRIBUTES, "storelens.v1.TrackAttributes", 6, 7 * 24 * _HOUR),
    TopicSpec(CUSTOMER_MATCHES, "storelens.v1.CustomerMatch", 6, 7 * 24 * _HOUR),
    TopicSpec(STAFF_TRACKS, "storelens.v1.StaffTrack", 6, 7 * 24 * _HOUR),
    TopicSpec(ZONE_EVENTS, "storelens.v1.ZoneEvent", 6, 7 * 24 * _HOUR),
    TopicSpec(ZONE_STATS, "storelens.v1.ZoneStats", 6, 7 * 24 * _HOUR),
    TopicSpec(ZONE_OCCUPANCY, "storelens.v1.ZoneOccupancy", 6, 1 * 24 * _HOUR),
    TopicSpec(TRACK_SUMMARIES, "storelens.v1.TrackSummary", 6, 7 * 24 * _HOUR),
    TopicSpec(HEATMAPS, "storelens.v1.HeatmapWindow", 6, 7 * 24 * _HOUR, max_message_bytes=8 * 1024**2),
    TopicSpec(CAMERA_SNAPSHOTS, "storelens.v1.CameraSnapshot", 6, 7 * 24 * _HOUR, max_message_bytes=8 * 1024**2),
    TopicSpec(POS_TRANSACTIONS, "storelens.v1.PosTransaction", 6, 30 * 24 * _HOUR, keyed_by_camera=False),
    TopicSpec(ALERTS, "storelens.v1.Alert", 6, 30 * 24 * _HOUR),
    TopicSpec(CUSTOMER_ERASURES, "storelens.v1.CustomerErasure", 1, 30 * 24 * _HOUR, partitions_fixed=True,
              keyed_by_camera=False),
    # keyed like the message it holds (a camera id, or another topic's key)
    TopicSpec(DEAD_LETTER, "storelens.v1.DeadLetter", 1, 14 * 24 * _HOUR, max_message_bytes=8 * 1024**2,
              partitions_fixed=True, keyed_by_camera=False),
    TopicSpec(STORE_KPIS, "storelens.v1.StoreKpiHour", 1, -1, compacted=True, partitions_fixed=True,
              keyed_by_camera=False),
    TopicSpec(SITE_CONFIG, "storelens.v1.SiteUpdate", 1, -1, compacted=True, partitions_fixed=True,
              keyed_by_camera=False),
    TopicSpec(DETECT_TRACK_STATE, "storelens.v1.StageSnapshot", 1, -1, max_message_bytes=64 * 1024**2,
              compacted=True, partitions_fixed=True, keyed_by_camera=False),  # keyed `<frames topic>/<partition>`
    TopicSpec(INGEST_STATE, "storelens.v1.IngestStream", 1, -1, compacted=True, partitions_fixed=True,
              keyed_by_camera=False, compacted_segment_ms=_HOUR, min_cleanable_dirty_ratio=0.1),
)


def spec(base: str) -> TopicSpec | None:
    """The declared :class:`TopicSpec` of base topic ``base`` (``None``: not declared)."""
    return next((s for s in TOPICS if s.name == base), None)


def record_bytes(key: bytes, value: bytes, headers=()) -> int:
    """The bytes one message takes in a record batch as the broker checks it against ``max.message.bytes``: its
    key, value and headers plus a margin for the batch's and record's headers and the producer's lz4 framing
    (an incompressible value, e.g. JPEG, grows ~0.1%).

    >>> record_bytes(b"cam-1", bytes(1_000_000)) <= 1_048_588
    True
    """
    n = len(key or b"") + len(value) + sum(len(k) + len(v or b"") for k, v in headers)
    return n + 1024 + n // 512


def fits(max_message_bytes: int, key: bytes, value: bytes, headers=()) -> bool:
    """Whether a message fits a topic whose ``max.message.bytes`` is ``max_message_bytes`` (:func:`record_bytes`)."""
    return record_bytes(key, value, headers) <= max_message_bytes


def topic_name(base: str, prefix: str = "") -> str:
    """The topic a deployment uses for ``base``: ``kafka.topic_prefix`` + base name."""
    return f"{prefix}{base}"


def base_name(topic: str, prefix: str = "") -> str:
    """The base name of a deployment's topic (the inverse of :func:`topic_name`).

    >>> base_name("store-1.tracks", "store-1.")
    'tracks'
    """
    return topic[len(prefix):] if prefix and topic.startswith(prefix) else topic


def camera_key(camera_id: str) -> bytes:
    return camera_id.encode("utf-8")
