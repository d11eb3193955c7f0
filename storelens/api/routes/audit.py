"""Counting accuracy audits in the dashboard (``/v1/audits``; issue 11 item 9).

A manager samples clips around stored line crossings (``POST /v1/audits/sample``), watches each
clip frame by frame (``GET .../frames/{index}.jpg``: heads blurred, the line drawn with its ``in``
side, see :func:`storelens.storage.audit.clip_frames`), tallies the people walking in and out, and
submits the tally (``POST /v1/audits``): the system's count of each clip is recomputed from the
stored crossings, the accuracy and its Wilson interval stored (``count_audits``) and, below
``audit.min_accuracy``, a ``count_accuracy`` alert raised, as ``storelens audit`` does.

A clip is named statelessly by ``(camera_id, line_id, crossing_ts_ms)`` (the sampled crossing);
the sample never returns the system's counts, so the person tallies blind. Browsers cannot play
the CLI's mp4v clips: the frames are served as JPEGs (rendered once per clip, kept in a small
in-process cache).

Example:
    >>> c = client.post("/v1/audits/sample", json={"clips": 2, "seed": 1}).json()["clips"][0]  # doctest: +SKIP
    >>> client.get(f"/v1/audits/clips/{c['camera_id']}/{c['line_id']}/{c['crossing_ts_ms']}/frames/0.jpg")  # doctest: +SKIP
    >>> client.post("/v1/audits", json={"clips": [{**c, "in": 1, "out": 0}]}).json()["accuracy"]  # doctest: +SKIP
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Annotated, Any, Callable, TypeVar

from fastapi import Depends, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from storelens.config import CameraConfig, SiteConfig
from storelens.errors import ConfigError, SourceError
from storelens.storage import audit as audit_store

from ..deps import MAX_TS_MS, ContextDep, Text, api_router, require_role
from ..models import ErrorOut, _Out
from ..security import Principal

router = api_router("audits", role="viewer")
T = TypeVar("T")

Manager = Annotated[Principal, Depends(require_role("manager"))]
ItemId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
#: Most clips of one audit (sample and submission).
MAX_CLIPS = 50
#: Rendered clips (JPEG frames) kept in memory, least recently used dropped first.
CACHE_CLIPS = 16
JPEG_QUALITY = 85
LIVE = {409: {"model": ErrorOut, "description": "A camera's source is a live stream (the history stores no "
                                                "pixels, the audit needs its video file) or its video file is "
                                                "missing or unreadable."}}


class SampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clips: int | None = Field(default=None, ge=1, le=MAX_CLIPS, description="Crossings to sample (default "
                                                                             "`audit.clips`).")
    start_ms: int | None = Field(default=None, ge=0, le=MAX_TS_MS, description="Only crossings at or after.")
    end_ms: int | None = Field(default=None, ge=1, le=MAX_TS_MS, description="Only crossings before.")
    cameras: list[Annotated[Text, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=100, description="Only these cameras (default: all).")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="Random seed (repeatable samples).")


class SampledClipOut(_Out):
    clip_id: str = Field(description="`camera_id/line_id/crossing_ts_ms`.")
    camera_id: str
    line_id: str
    crossing_ts_ms: int = Field(description="The sampled crossing: the clip is named by camera, line and this.")
    start_ms: int
    end_ms: int
    frames: int = Field(description="JPEG frames of the clip (`.../frames/{index}.jpg`, index from 0).")
    fps: float = Field(description="Frames per second of the camera's video (play speed).")


class SampleOut(_Out):
    clips: list[SampledClipOut]
    confidence: float
    min_accuracy: float


class TallyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    camera_id: Text = Field(min_length=1, max_length=200)
    line_id: Text = Field(min_length=1, max_length=200)
    crossing_ts_ms: int = Field(ge=0, le=MAX_TS_MS)
    person_in: int = Field(alias="in", ge=0, le=10_000, description="People the person saw walk in.")
    person_out: int = Field(alias="out", ge=0, le=10_000, description="People the person saw walk out.")


class SubmitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clips: list[TallyIn] = Field(min_length=1, max_length=MAX_CLIPS)


class ClipResultOut(_Out):
    clip_id: str
    camera_id: str
    line_id: str
    crossing_ts_ms: int
    system_in: int
    system_out: int
    person_in: int
    person_out: int
    correct: bool = Field(description="The system's in and out equal the person's.")


class AuditResultOut(_Out):
    audit_id: str
    auditor: str
    n_clips: int
    n_correct: int
    accuracy: float = Field(description="Correct clips / clips.")
    ci_low: float = Field(description="Wilson interval of the accuracy at `confidence`.")
    ci_high: float
    confidence: float
    count_accuracy: float = Field(description="1 - |count errors| / the person's total.")
    min_accuracy: float
    alerted: bool = Field(description="A count_accuracy alert was raised (accuracy below min_accuracy).")
    clips: list[ClipResultOut]


class AuditRowOut(_Out):
    audit_id: str
    ts_ms: int
    auditor: str
    cameras: list[str]
    n_clips: int
    n_correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    confidence: float
    count_accuracy: float
    min_accuracy: float
    alerted: bool


class AuditsOut(_Out):
    audits: list[AuditRowOut]


def _live_to_409(cam: CameraConfig) -> None:
    try:
        audit_store.check_source(cam)
    except ConfigError as e:
        raise HTTPException(409, str(e)) from None


def _unreadable_to_409(cam: CameraConfig, fn: Callable[[], T]) -> T:
    """``fn()``; a missing or unreadable video file of ``cam`` is a 409 (the site's state, not the request)."""
    try:
        return fn()
    except SourceError as e:
        raise HTTPException(409, f"camera {cam.id!r}: {e}") from None


@router.post("/v1/audits/sample", response_model=SampleOut, responses={
    404: {"model": ErrorOut, "description": "No line crossings stored in the range."}, **LIVE},
    summary="Sample clips around stored line crossings (manager)",
    description="The clips to tally, named by (camera_id, line_id, crossing_ts_ms), one per name (two people "
                "crossing a line in one frame are one clip); the system's counts are not returned (the person "
                "tallies blind).")
def post_sample(ctx: ContextDep, principal: Manager, body: SampleIn) -> SampleOut:
    config = ctx.config
    if body.start_ms is not None and body.end_ms is not None and body.end_ms <= body.start_ms:
        raise HTTPException(422, f"end_ms ({body.end_ms}) must be greater than start_ms ({body.start_ms})")
    known = {c.id: c for c in config.cameras}
    unknown = sorted(set(body.cameras or ()) - set(known))
    if unknown:
        raise HTTPException(422, f"cameras: unknown camera(s) {unknown}; the site has {sorted(known)}")
    try:
        picks = audit_store.pick_crossings(config, ctx.storage, body.clips, body.start_ms, body.end_ms, body.cameras,
                                        body.seed)
    except ConfigError as e:
        raise HTTPException(404, str(e)) from None
    info: dict[str, tuple[float, int]] = {}
    for cam_id in sorted({e.camera_id for e in picks}):
        _live_to_409(known[cam_id])
        info[cam_id] = _unreadable_to_409(known[cam_id], lambda: audit_store.source_info(known[cam_id]))
    out = []
    for ev in picks:
        c0, c1 = audit_store.clip_window(config, ev.ts_ms)
        fps, n_video = info[ev.camera_id]
        out.append(SampledClipOut(
            clip_id=f"{ev.camera_id}/{ev.line_id}/{ev.ts_ms}", camera_id=ev.camera_id, line_id=ev.line_id,
            crossing_ts_ms=ev.ts_ms, start_ms=c0, end_ms=c1, fps=fps,
            frames=audit_store.clip_frame_count(ctx.storage, ev.camera_id, c0, c1, video_frames=n_video)))
    return SampleOut(clips=out, confidence=config.audit.confidence, min_accuracy=config.audit.min_accuracy)


class _ClipCache:
    """JPEG frames of the last :data:`CACHE_CLIPS` clips rendered; one render per clip at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.clips: OrderedDict[tuple, list[bytes]] = OrderedDict()
        self.lock = threading.Lock()
        self.rendering: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple, render: Any) -> list[bytes]:
        with self.lock:
            if key in self.clips:
                self.clips.move_to_end(key)
                return self.clips[key]
            busy = self.rendering.setdefault(key, threading.Lock())
        with busy:
            with self.lock:
                if key in self.clips:
                    return self.clips[key]
            try:
                frames = render()
            finally:
                with self.lock:
                    self.rendering.pop(key, None)
            with self.lock:
                self.clips[key] = frames
                while len(self.clips) > self.size:
                    self.clips.popitem(last=False)
            return frames


_CACHE = _ClipCache(CACHE_CLIPS)


def _render(config: SiteConfig, storage: Any, cam: CameraConfig, clip: audit_store.Clip) -> list[bytes]:
    import cv2

    out = []
    for img in audit_store.clip_frames(cam, storage, clip.line_id, clip.start_ms, clip.end_ms):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            out.append(buf.tobytes())
    return out


@router.get("/v1/audits/clips/{camera_id}/{line_id}/{crossing_ts_ms}/frames/{index}.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "Frame `index` of the clip, JPEG (heads "
                                                                           "blurred, the line drawn)."},
                       404: {"model": ErrorOut, "description": "Unknown camera, no such crossing stored, or "
                                                               "index past the clip's end."}, **LIVE},
            summary="One frame of an audit clip (manager)")
def get_frame(ctx: ContextDep, principal: Manager, camera_id: ItemId, line_id: ItemId,
              crossing_ts_ms: Annotated[int, Path(ge=0, le=MAX_TS_MS)],
              index: Annotated[int, Path(ge=0, le=100_000, description="Frame of the clip, from 0.")]) -> Response:
    config = ctx.config
    cam = next((c for c in config.cameras if c.id == camera_id), None)
    if cam is None:
        raise HTTPException(404, f"unknown camera {camera_id!r}")
    clip = audit_store.make_clip(config, ctx.storage, camera_id, line_id, crossing_ts_ms)
    if clip is None:
        raise HTTPException(404, f"no crossing of line {line_id!r} of camera {camera_id!r} stored at {crossing_ts_ms}")
    _live_to_409(cam)
    line = next((ln for ln in cam.lines if ln.id == line_id), None)
    key = (cam.id, cam.source, line_id, clip.start_ms, clip.end_ms,
           None if line is None else (tuple(line.a), tuple(line.b)))
    frames = _unreadable_to_409(cam, lambda: _CACHE.get(key, lambda: _render(config, ctx.storage, cam, clip)))
    if index >= len(frames):
        raise HTTPException(404, f"the clip has {len(frames)} frames (index 0..{len(frames) - 1}), not {index + 1}")
    return Response(content=frames[index], media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=3600", "X-Clip-Frames": str(len(frames))})


@router.post("/v1/audits", response_model=AuditResultOut,
             summary="Submit a person's tally of the sampled clips (manager)",
             description="Recomputes each clip's system count from the stored crossings, stores the audit (auditor: "
                         "the signed-in user) and raises a count_accuracy alert below `audit.min_accuracy`. 422 when "
                         "a clip names no stored crossing or is given twice.")
def post_audit(ctx: ContextDep, principal: Manager, body: SubmitIn) -> AuditResultOut:
    config = ctx.config
    known = {c.id for c in config.cameras}
    clips, answers = [], {}
    for i, t in enumerate(body.clips):
        clip_id = f"{t.camera_id}/{t.line_id}/{t.crossing_ts_ms}"
        if t.camera_id not in known:
            raise HTTPException(422, f"clips[{i}].camera_id: unknown camera {t.camera_id!r}")
        if clip_id in answers:
            raise HTTPException(422, f"clips[{i}]: clip {clip_id} is given twice")
        clip = audit_store.make_clip(config, ctx.storage, t.camera_id, t.line_id, t.crossing_ts_ms, clip_id)
        if clip is None:
            raise HTTPException(422, f"clips[{i}]: no crossing of line {t.line_id!r} of camera {t.camera_id!r} "
                                     f"stored at {t.crossing_ts_ms}")
        clips.append(clip)
        answers[clip_id] = (t.person_in, t.person_out)
    try:
        summary, audit_id, alerted = audit_store.record_audit(config, ctx.storage, clips, answers,
                                                           auditor=principal.name)
    except ConfigError as e:
        raise HTTPException(422, str(e)) from None
    results = [ClipResultOut(clip_id=c.clip_id, camera_id=c.camera_id, line_id=c.line_id,
                             crossing_ts_ms=c.crossing_ts_ms, system_in=c.system_in, system_out=c.system_out,
                             person_in=answers[c.clip_id][0], person_out=answers[c.clip_id][1],
                             correct=(c.system_in, c.system_out) == answers[c.clip_id]) for c in clips]
    return AuditResultOut(audit_id=audit_id, auditor=principal.name, n_clips=summary.n_clips,
                          n_correct=summary.n_correct, accuracy=summary.accuracy, ci_low=summary.ci_low,
                          ci_high=summary.ci_high, confidence=summary.confidence,
                          count_accuracy=summary.count_accuracy, min_accuracy=config.audit.min_accuracy,
                          alerted=alerted, clips=results)


@router.get("/v1/audits", response_model=AuditsOut, summary="Past counting audits, newest first")
def get_audits(ctx: ContextDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AuditsOut:
    rows = audit_store.list_audits(ctx.storage, limit)
    return AuditsOut(audits=[AuditRowOut(
        audit_id=r["audit_id"], ts_ms=r["ts_ms"], auditor=r["auditor"], cameras=json.loads(r["cameras"] or "[]"),
        n_clips=r["n_clips"], n_correct=r["n_correct"], accuracy=r["accuracy"], ci_low=r["ci_low"],
        ci_high=r["ci_high"], confidence=r["confidence"], count_accuracy=r["count_accuracy"],
        min_accuracy=r["min_accuracy"], alerted=bool(r["alerted"])) for r in rows])
