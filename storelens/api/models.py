"""Response models of the API (frozen pydantic models) and the shared error responses.

The models are the OpenAPI schemas; routes build them from what storage and
the live state return.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from storelens.domain.calendar import Alignment
from storelens.storage import AGE_BAND_KEYS, EMOTION_KEYS, GENDER_KEYS, age_band

class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Status(_Out):
    status: str = Field(examples=["ok"])


class ReadyOut(Status):
    """``/readyz``: ``status`` follows the storage; the live state is reported, never required."""

    live_state: Literal["ok", "unavailable"] | None = Field(
        default=None, description="Whether the live state (Redis) answers; absent without one.")


class ErrorOut(_Out):
    detail: str = Field(examples=["unknown camera 'cam-9'"])


class HTTPErrorWithFields(HTTPException):
    """An HTTP error whose JSON body carries ``fields`` beside ``detail`` (the app's error handler writes them)."""

    def __init__(self, status_code: int, detail: str, **fields: Any) -> None:
        super().__init__(status_code, detail)
        self.fields = fields


class FieldErrorOut(_Out):
    """One malformed request field (FastAPI's validation error)."""

    loc: list[str | int] = Field(description="Where: the part of the request, then the field path.",
                                 examples=[["query", "start_ms"]])
    msg: str
    type: str = Field(description="Error type, e.g. greater_than_equal.")
    input: Any = None
    ctx: dict[str, Any] | None = None


class InvalidRequestOut(_Out):
    """422: ``detail`` lists the malformed fields, or (a string) says which rule the valid fields break."""

    detail: list[FieldErrorOut] | str = Field(
        description="The malformed fields (request validation), or the rule the request breaks, e.g. an "
                    "empty range.", examples=["end_ms (5) must be greater than start_ms (10)"])


class LineOut(_Out):
    id: str
    a: tuple[float, float] = Field(description="Start point [x, y] in source pixels.")
    b: tuple[float, float] = Field(description="End point [x, y]; crossing from its left to its right is 'in'.")


class ZoneOut(_Out):
    id: str


class CameraOut(_Out):
    id: str
    lines: list[LineOut]
    zones: list[ZoneOut]


class CamerasOut(_Out):
    store_id: str
    cameras: list[CameraOut]


class InOut(_Out):
    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True)

    count_in: int = Field(alias="in", ge=0)
    count_out: int = Field(alias="out", ge=0)
    #: Buying units (``GET /v1/counts?groups=true`` only; absent otherwise).
    groups_in: int | None = Field(None, ge=0, description="Buying units in (people crossing together count once, "
                                  "a person alone is a unit); only with groups=true.")
    groups_out: int | None = Field(None, ge=0, description="Buying units out; only with groups=true.")


class BucketOut(_Out):
    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True)

    line_id: str
    start_ms: int = Field(description="Aligned bucket start (inclusive; a local midnight for days).")
    end_ms: int = Field(description="Aligned bucket end (exclusive; 23 or 25 hours after the start on a day "
                                    "the clocks change).")
    count_in: int = Field(alias="in", ge=0)
    count_out: int = Field(alias="out", ge=0)
    groups_in: int | None = Field(None, ge=0, description="Buying units in; only with groups=true.")
    groups_out: int | None = Field(None, ge=0, description="Buying units out; only with groups=true.")


#: What the buckets of a time series are aligned on (:meth:`~storelens.domain.calendar.StoreCalendar.grid`).
AlignedTo = Annotated[Alignment, Field(description=(
    "`store_local_day`: whole days from the store's local midnight (DST days have 23 or 25 hours); `epoch`: "
    "multiples of bucket_s since the Unix epoch; `store_local_hour`: those moved by the sub-hour part of the "
    "store's UTC offset (e.g. +05:30), so local whole hours are edges."))]
StoreTimezone = Annotated[str, Field(description="The store's time zone (store.timezone), of the local days.")]


class CountsOut(_Out):
    camera_id: str
    start_ms: int
    end_ms: int
    bucket_s: int
    aligned_to: AlignedTo
    timezone: StoreTimezone
    buckets: list[BucketOut] = Field(description="Non-empty buckets ordered by (start_ms, line_id).")
    totals: dict[str, InOut] = Field(description="Per line over [start_ms, end_ms); every configured line.")


class CameraOccupancyOut(_Out):
    camera_id: str
    occupancy: int = Field(description="Ins minus outs, never below zero, since the daily store.occupancy_reset.")
    total_in: int = Field(description="Ins since the daily store.occupancy_reset (the crossings stay in the history).")
    total_out: int = Field(description="Outs since the daily store.occupancy_reset.")
    ts_ms: int = Field(description="Time of the latest update; 0 if there is none yet.")
    last_seen_ts_ms: int | None = Field(
        default=None, description="Time of the newest frame handled for this camera (the live state's, else the "
        "newest stored frame's); absent when unknown.")
    stale: bool = Field(False, description="A live camera whose newest frame is older than 60 s at the wall clock "
                                           "(down, or its pipeline stopped): its numbers are its last frame's, not "
                                           "now's; also a live camera without any frame (age_s absent: never "
                                           "received, e.g. a wrong URL). The rule of /v1/zones and /v1/queues; "
                                           "never for recorded files.")
    age_s: float | None = Field(None, description="A live camera: the age of its newest frame at the wall clock; "
                                                  "absent for recorded files and before the first frame.")


class OccupancyOut(_Out):
    store_id: str
    occupancy: int = Field(description="The store's occupancy (the store_occupancy alert's): ins minus outs over "
                                       "store.entrance_lines when set, else over every line (at least 0, clamped "
                                       "once for the store); since the daily store.occupancy_reset.")
    stale: bool = Field(False, description="Some camera is `stale`: the store's number holds its last frame's "
                                           "counts.")
    cameras: list[CameraOccupancyOut]


class TrackPointOut(_Out):
    ts_ms: int
    seq: int
    bbox_xyxy: tuple[float, float, float, float] = Field(description="[x1, y1, x2, y2] in source pixels.")
    confidence: float


class TrackOut(_Out):
    track_id: int
    points: list[TrackPointOut]


class TracksOut(_Out):
    camera_id: str
    tracks: list[TrackOut]


class CrossingOut(_Out):
    event_id: str
    line_id: str
    track_id: int
    direction: Literal["in", "out"]
    ts_ms: int
    seq: int


class CustomerSummaryOut(_Out):
    customer_id: str = Field(description="Pseudonymous id (not derived from the face).")
    created_ts_ms: int
    visits: int = Field(ge=0, description="Retained visits.")
    first_seen_ts_ms: int = Field(description="Start of the first retained visit (created_ts_ms without visits).")
    last_seen_ts_ms: int = Field(description="End of the latest visit (created_ts_ms without visits).")
    returning: bool = Field(description="The latest visit is the customer's second or later.")
    cameras: list[str] = Field(description="Cameras of the retained visits, sorted.")


class CustomersOut(_Out):
    total: int = Field(ge=0, description="Customers matching the filters (all pages).")
    page: int = Field(ge=1)
    page_size: int = Field(ge=1)
    items: list[CustomerSummaryOut] = Field(description="Most recently seen first (ties: by id).")


class VisitOut(_Out):
    visit_no: int = Field(ge=1, description="1 for the first visit; above 1 when returning.")
    first_seen_ts_ms: int
    last_seen_ts_ms: int
    cameras: list[str]


class TrackAttributesOut(_Out):
    first_ts_ms: int
    last_ts_ms: int
    last_seq: int
    n_faces: int = Field(ge=0, description="Faces seen on the track.")
    n_used: int = Field(ge=0, description="Faces that passed the quality gate and were used.")
    n_rejected: int = Field(ge=0)
    age_years: float | None = Field(description="Median age estimate; null when unknown.")
    age_low_years: float | None
    age_high_years: float | None
    age_band: str = Field(description=f"One of {', '.join(AGE_BAND_KEYS)}.")
    gender: Literal["female", "male", "unknown"]
    gender_confidence: float
    emotion: str = Field(description=f"One of {', '.join(EMOTION_KEYS)}.")
    emotion_confidence: float
    attention_share: float | None = Field(description="Share of usable faces attending; null when none.")
    final: bool = Field(description="The track has ended (no further update).")


class CustomerTrackOut(_Out):
    event_id: str
    camera_id: str
    track_id: int
    seq: int
    ts_ms: int = Field(description="Time of the match decision.")
    similarity: float = Field(description="Cosine similarity to the matched gallery entry.")
    is_new: bool = Field(description="The customer was created by this track.")
    returning: bool
    visit_no: int
    attributes: TrackAttributesOut | None = Field(description="Face attributes of the track; null if none yet.")


class AttributeSummaryOut(_Out):
    tracks_with_faces: int = Field(ge=0, description="Matched tracks with at least one face.")
    gender: Literal["female", "male", "unknown"] = Field(description="The most confident known gender.")
    gender_confidence: float
    age_years: float | None = Field(description="Age of the track with the most used faces (narrowest interval).")
    age_low_years: float | None
    age_high_years: float | None
    age_band: str

    @classmethod
    def from_tracks(cls, tracks: list[dict[str, Any]]) -> AttributeSummaryOut:
        """The most confident known gender and the best-supported age over a customer's tracks."""
        known = [t["attributes"] for t in tracks if t["attributes"] is not None and t["attributes"]["n_faces"] > 0]
        gendered = [a for a in known if a["gender"] != "unknown"]
        g = max(gendered, key=lambda a: (a["gender_confidence"], a["n_used"], a["last_ts_ms"]), default=None)

        def age_key(a: dict[str, Any]) -> tuple:
            lo, hi = a["age_low_years"], a["age_high_years"]
            width = hi - lo if lo is not None and hi is not None else float("inf")
            return a["n_used"], -width, a["last_ts_ms"]

        age = max((a for a in known if a["age_years"] is not None), key=age_key, default=None)
        return cls(
            tracks_with_faces=len(known),
            gender=g["gender"] if g else "unknown", gender_confidence=g["gender_confidence"] if g else 0.0,
            age_years=age["age_years"] if age else None, age_low_years=age["age_low_years"] if age else None,
            age_high_years=age["age_high_years"] if age else None,
            age_band=age_band(age["age_years"] if age else None),
        )


class CustomerOut(_Out):
    customer_id: str
    returning: bool
    visits: list[VisitOut] = Field(description="By visit number.")
    tracks: list[CustomerTrackOut] = Field(description="Tracks matched to the customer, oldest first.")
    summary: AttributeSummaryOut


class DemographicsOut(_Out):
    camera_id: str | None = Field(description="The camera, or null for the whole store.")
    start_ms: int | None
    end_ms: int | None
    tracks: int = Field(ge=0, description="Tracks with at least one face whose last sighting is in the range.")
    age: dict[str, int | None] = Field(description=f"Tracks per age band: {', '.join(AGE_BAND_KEYS)}; null: "
                                       "suppressed (fewer than k_min people).")
    gender: dict[str, int | None] = Field(description=f"Tracks per gender: {', '.join(GENDER_KEYS)}; null: "
                                          "suppressed.")
    emotion: dict[str, int | None] = Field(description=f"Tracks per dominant emotion: {', '.join(EMOTION_KEYS)}; "
                                           "null: suppressed.")
    suppressed: bool = Field(False, description="Some counts were withheld (null): a band of fewer than k_min "
                                                "people, or the next smallest band of its breakdown; every band "
                                                "when `tracks` is 1 to k_min-1.")
    k_min: int = Field(5, ge=1, description="The smallest group reported (privacy.k_min).")



#: ``responses=`` of every route with request parameters (added by :class:`~storelens.api.deps.ApiRoute`).
INVALID_REQUEST = {422: {"model": InvalidRequestOut, "description": "Malformed request, or valid fields that "
                                                                     "break a rule of the route (e.g. an empty range)."}}
#: ``responses=`` of the routes with a request body (added by :class:`~storelens.api.deps.ApiRoute`).
UNREADABLE_BODY = {400: {"model": ErrorOut, "description": "The body cannot be read (e.g. JSON that is not UTF-8)."}}
#: ``responses=`` of the routes that answer 404 for an unknown camera (or line).
NOT_FOUND = {404: {"model": ErrorOut, "description": "Unknown camera or line."}}
#: ``responses=`` of the routes that need the customer gallery.
FACES_OFF = {503: {"model": ErrorOut, "description": "Face recognition is disabled (no customer gallery)."}}
#: ``responses=`` of the routes of one customer.
UNKNOWN_CUSTOMER = {404: {"model": ErrorOut, "description": "Unknown customer."}}
