"""Ingest: one thread per camera publishes its sampled frames (embedded mode and the ingest service).

:class:`CameraSupervisor` owns the threads: each camera has its own stop event, and
:meth:`CameraSupervisor.apply` puts a new cameras list in force without a restart (a site
version saved through ``/v1/site``): added cameras start, removed ones stop, and a camera
whose source or sampling changed (:data:`storelens.config.cameras.STREAM_FIELDS`) is stopped
and started again with its new settings. A restarted camera's frame numbers go on after the
old stream's (detect-track and analytics skip frames by seq), so nothing is mistaken for a
redelivery. A file camera that a cameras list removes, and any camera it re-points (a new ``source``, credentials
aside, or ``start_ts_ms``: :data:`NEW_STREAM_FIELDS`), ends its stream with an end-of-stream marker (a re-pointed
file is read from the start: a new stream). A file camera whose sampling or
encoding only changed (``target_fps``, ``resize_width``, ``jpeg_quality``) goes on after the last
source frame it published, without a marker: its timestamps go on (no crossing of the file is
counted twice) and so do its tracks; one whose file had already ended stays ended. Stopped with
the process (:meth:`CameraSupervisor.stop`, SIGTERM) a file camera ends without a marker, so the
next process goes on with its tracks.

Given the streams a former process started (``streams``: the ingest service keeps them on the
compacted ``ingest-state`` topic, :class:`StreamStart` written through ``on_stream`` before a stream's
first frame), a restarted process numbers a camera's stream as the former one did when it is the same
stream (same ``source`` and ``start_ts_ms``: downstream skips the replay by seq), and a new stream (a
camera re-pointed while running or while ingest was down) from the wall clock's ms, above every number
of the camera's former streams (a camera publishes far fewer than 1000 frames a second): without them a
re-pointed file was numbered from 0 again after a restart, below what downstream had seen, and its
frames were dropped as redeliveries.

Example:
    >>> sup = CameraSupervisor(bus_publish, stop.is_set, on_error)   # doctest: +SKIP
    >>> sup.apply(config.cameras)                                     # doctest: +SKIP
    >>> sup.apply(new_cameras).removed                                # doctest: +SKIP
    ('till',)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Sequence

from storelens.backends.video import camera_frames, is_live
from storelens.config import CameraConfig, IngestConfig
from storelens.config.cameras import CameraDiff, diff_cameras, redact_source
from storelens.config.site import FrameFormat
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import SourceError, StoreLensError

log = logging.getLogger(__name__)

#: The stream settings whose change makes a file camera a new stream (an end-of-stream marker, then its file from
#: the start); a change of the others only (sampling, encoding) resumes the file after its last frame published.
NEW_STREAM_FIELDS = ("source", "start_ts_ms")

#: Seconds :meth:`CameraSupervisor.apply` waits for a stopped camera's thread to end.
STOP_JOIN_S = 30.0

#: A file camera's position (``on_position`` of :class:`CameraSupervisor`) is kept at most once per this much of
#: the file's time (the frames' ``ts_ms``) or :data:`POSITION_EVERY_FRAMES` frames, and at its end of stream and stop.
POSITION_EVERY_MS = 1000

#: A file camera's position is kept at least once per this many frames published (a frame rate above it a second,
#: or a variable one): after an unclean stop at most this many frames past the kept position were published, so a
#: restart at another ``target_fps`` numbers its frames from the kept position's seq plus this (above them all).
POSITION_EVERY_FRAMES = 50

#: Seconds between the publishes of a re-pointed camera's end-of-stream marker whose delivery failed.
MARKER_RETRY_S = 1.0


@dataclass(frozen=True)
class StreamStart:
    """Where a camera's stream starts (``IngestStream`` on the ``ingest-state`` topic): the stream
    (:func:`stream_id`), its first frame's seq, and the file's last source frame (1-based) before it (0: the
    file's start; a file resumed with new sampling or encoding settings goes on after its last frame).

    A file camera's record is kept again as its frames are delivered (``on_position`` of
    :class:`CameraSupervisor`: about once a second of the file, and at its end and stop) with its sampling
    (``target_fps``, 0: every frame) and ``position``: ``(next seq,
    last source frame published)``. A process started with the same sampling numbers the stream from its start (a
    replay downstream skips); one started with another ``target_fps`` goes on after ``position`` (before, it
    numbered the file from the start at the new rate: part of the file was counted twice or skipped), or after the
    start when no position was kept yet (a start with a ``target_fps``; one without, as a release before positions
    kept, replays), numbered from its seq plus :data:`POSITION_EVERY_FRAMES`: above every frame an unclean stop
    can have published past it (before, their seqs were used again for later frames, which downstream skipped as
    replays). The bound: those frames, at most :data:`POSITION_EVERY_FRAMES` (about a second of the file) while the
    broker takes them, are published again (downstream may count them twice); a lost position record widens it.
    ``ended``: the file ended, its end-of-stream marker is the position's seq; the stream stays ended."""

    stream_id: str
    first_seq: int
    after_source_frame: int = 0
    ended: bool = False
    target_fps: float = field(default=0.0, compare=False)
    position: tuple[int, int] | None = field(default=None, compare=False)


def stream_id(cam: CameraConfig) -> str:
    """The identity of a camera's stream: a digest of its :data:`NEW_STREAM_FIELDS`, the source redacted
    (:func:`~storelens.config.cameras.redact_source`): the digest, kept in clear on ``ingest-state``, says nothing
    of a password, and a new password (a rotation) is the same stream.

    >>> a = CameraConfig(id="c", source="rtsp://admin:old@cam/1")
    >>> stream_id(a) == stream_id(a.model_copy(update={"source": "rtsp://admin:new@cam/1"})), len(stream_id(a))
    (True, 16)
    """
    return _digest([redact_source(cam.source), *(getattr(cam, f) for f in NEW_STREAM_FIELDS[1:])])


def legacy_stream_id(cam: CameraConfig) -> str:
    """The :func:`stream_id` that releases before it was redacted gave (the full source, its password included):
    a stream kept by such a release is recognised as the same stream once (and kept again under the new id)."""
    return _digest([getattr(cam, f) for f in NEW_STREAM_FIELDS])


def previous_stream_id(cam: CameraConfig) -> str:
    """The :func:`stream_id` of the release before credentials were also masked in a URL's path and in more
    parameter names (``?usr=``, ``;password=``; :func:`_redact_source_v1`): a stream kept by it is recognised as
    the same stream once (and kept again under the new id), as :func:`legacy_stream_id`'s."""
    return _digest([_redact_source_v1(cam.source), *(getattr(cam, f) for f in NEW_STREAM_FIELDS[1:])])


#: :func:`_redact_source_v1`'s credential parameter names (frozen: :func:`previous_stream_id` hashes by them).
_SECRET_PARAM_V1 = re.compile(r"pass|pwd|secret|token|key|auth|sig|cred|user", re.IGNORECASE)


def _redact_source_v1(source: str) -> str:
    """The source as the previous release redacted it (frozen: digests kept on ``ingest-state`` hash it): the URL's
    user name and password removed, the values of query parameters named by :data:`_SECRET_PARAM_V1` ``***``.

    >>> _redact_source_v1("rtsp://a:b@cam/live;password=x?usr=admin&pwd=y")
    'rtsp://cam/live;password=x?usr=admin&pwd=***'
    """
    if "://" not in source:
        return source
    try:
        parts = urllib.parse.urlsplit(source)
    except ValueError:  # (that release raised here: no stream of such a source was kept by it)
        return redact_source(source)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(f"{k}=***" if sep and _SECRET_PARAM_V1.search(urllib.parse.unquote_plus(k)) else k + sep + v
                     for k, sep, v in (p.partition("=") for p in parts.query.split("&"))) if parts.query else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _digest(values: list) -> str:
    return hashlib.blake2b(json.dumps(values).encode("utf-8"), digest_size=8).hexdigest()


def same_stream(old: CameraConfig, new: CameraConfig) -> bool:
    """Whether ``new`` is ``old``'s stream (:data:`NEW_STREAM_FIELDS` equal, credentials in the source aside)."""
    return stream_id(old) == stream_id(new)


def pump_camera(cam: CameraConfig, publish: Callable[[bytes, bytes], bool | None], should_stop: Callable[[], bool],
                first_seq: int = 0, on_frame: Callable[[m.Frame], None] | None = None,
                frame_format: FrameFormat = "jpeg", on_bad_frames: Callable[[int], None] | None = None,
                after_source_frame: int = 0, reconnect: IngestConfig | None = None,
                on_reopen: Callable[[], None] | None = None,
                on_short: Callable[[int, int], None] | None = None) -> int:
    """Publish ``(key, Frame bytes)`` for every frame of ``cam`` until its source ends or a stop; the count.

    Frames are numbered from ``first_seq`` (a restarted camera goes on after its last frame; a live one from
    its first frame's wall-clock ms if that is larger: see :func:`~storelens.backends.video.camera_frames`);
    ``on_frame(frame)`` is called after each publish; ``frame_format`` is the image's encoding
    (:func:`~storelens.backends.video.encode_frame`: raw ``bgr`` only inside one process);
    ``on_bad_frames(n)`` is told each run of ``n`` unreadable frames a file skipped, ``on_short(frames_read,
    frame_count)`` a file that ends before its frame count (else logged); a file's frames up to
    ``after_source_frame`` (1-based) are skipped (a resumed stream); a live source is reopened with the backoff
    of ``reconnect``, ``on_reopen()`` called before each reopen. A ``publish`` that returns ``False`` (it gave up:
    the camera stops) ends the stream (that frame not published, ``on_frame`` not called). Raises
    :class:`~storelens.errors.StoreLensError` when the source cannot be read (a file's end-of-stream marker
    published first).
    """
    key = topics.camera_key(cam.id)
    n = 0
    for frame in camera_frames(cam, should_stop=should_stop, frame_format=frame_format, first_seq=first_seq,
                               on_bad_frames=on_bad_frames, after_source_frame=after_source_frame,
                               reconnect=reconnect, on_reopen=on_reopen, on_short=on_short):
        if publish(key, m.encode(frame)) is False:
            break
        if on_frame is not None:
            on_frame(frame)
        n += 1
    log.info("source ended", extra={"camera": cam.id, "frames": n})
    return n


@dataclass
class _CameraRun:
    cam: CameraConfig
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    #: The seq after the last frame published (the next stream of the camera starts there).
    next_seq: int = 0
    #: The time of the last frame published.
    last_ts_ms: int = 0
    #: The source frame (1-based) of the last frame published (a file resumed with new settings goes on after it).
    source_frame: int = 0
    #: The stream's end-of-stream marker was published.
    ended: bool = False
    #: Removed by a cameras list (a file's stream then ends with its marker), not stopped by the process.
    final: bool = False
    #: ``(seq, ts_ms)`` of the end-of-stream marker of the camera's re-pointed former stream that this run publishes
    #: first; ``None`` once known delivered (a run stopped before passes it to the camera's next one).
    owed_end: tuple[int, int] | None = None
    #: The stream published a frame, or goes on with a former process's stream (its end needs a marker).
    carries: bool = False


class CameraSupervisor:
    """One ingest thread per camera, each with its own stop event; :meth:`apply` a new cameras list.

    Args:
        publish: ``publish(key, Frame bytes)`` (the ``frames`` topic; the caller publishes them with the
            ``message-type`` header of a Frame, :func:`storelens.contract.messages.type_headers`).
        should_stop: the process is stopping (every camera stops).
        on_error: a camera whose source fails (the others go on).
        frame_format: how frames carry their image (``bgr`` only on the in-process bus).
        on_bad_frames: ``on_bad_frames(camera, n)``: a file camera skipped ``n`` unreadable frames in a row.
        on_short_file: ``on_short_file(camera, frames_read, frame_count)``: a file camera's file ended before its
            frame count (truncated or damaged); without it, logged as a warning.
        reconnect: the backoff of live sources' reopens (``ingest:`` of the site; default
            :class:`~storelens.config.IngestConfig`).
        on_reopen: ``on_reopen(camera)``: a live camera's source is about to be reopened (after a failed open
            or a dropped stream).
        streams: camera id -> the :class:`StreamStart` of its stream a former process started last (the ingest
            service's ``ingest-state``); ``None``: none kept (the embedded pipeline), every process numbers a
            file from 0.
        on_stream: ``on_stream(camera, start, stopped)``: called in the camera's thread before the first frame of
            a stream whose start is not in ``streams`` yet (to keep it); an error fails the camera. ``stopped()``
            says the camera's stream is stopping (a newer cameras list, or the process): a caller that retries
            gives up then and returns ``False``, and the stream publishes nothing (its replacement keeps its own
            start; before, the retries went on until the process stopped and a stale start could land last).
        on_position: ``on_position(camera, position)``: called in a file camera's thread with the
            :class:`StreamStart` its stream goes on from (to keep it: a process started with another ``target_fps``
            goes on after that frame): at most once per :data:`POSITION_EVERY_MS` of the file's time, at its
            end-of-stream marker (``ended``) and when the camera stops; only for frames ``delivered`` says were
            delivered, and never below the kept position of the stream (``streams``: a restart at the same rate
            replays the file from its start) nor clearing its ``ended``. Errors are the caller's (best effort: the
            next position supersedes a lost one).
        delivered: ``delivered(camera, stopped)``: waits until what the camera's thread handed to ``publish`` so
            far was delivered; whether it was (``False``: not, or ``stopped()`` said the camera stops). Asked before
            each ``on_position`` and after each publish of an end-of-stream marker of the camera's former stream
            (the kept new stream must not land while the marker can still be lost: see ``on_end_retry``).
            ``None``: ``publish`` delivers as it returns (the in-process bus).
        publish_takes_stop: ``publish(key, value, stopped)`` is given the camera's ``stopped()`` (a publish that
            retries while the broker is away gives up once it says so and returns ``False``): a camera re-pointed
            or removed during an outage ends within :data:`STOP_JOIN_S` (before, it kept retrying and its last frame
            could land after the new stream's first ones).
        on_end_retry: ``on_end_retry(camera)``: the end-of-stream marker of a re-pointed camera's former stream was
            not delivered (``delivered``); it is published again every :data:`MARKER_RETRY_S` until it is, or the
            camera stops (its next run then publishes it), the new stream waiting (logged; to count it).

    A camera re-pointed (another ``source``, credentials aside, or ``start_ts_ms``; live or file) ends its old
    stream with an end-of-stream marker, published by the new stream's thread before its first frame (detect-track
    starts a new tracker session, analytics closes the old stream's visits); a password-only change, or a sampling
    or encoding change, goes on without one.
    """

    def __init__(self, publish: Callable[[bytes, bytes], None], should_stop: Callable[[], bool],
                 on_error: Callable[[CameraConfig, StoreLensError], None], frame_format: FrameFormat = "jpeg",
                 on_bad_frames: Callable[[CameraConfig, int], None] | None = None,
                 reconnect: IngestConfig | None = None,
                 on_reopen: Callable[[CameraConfig], None] | None = None,
                 streams: dict[str, StreamStart] | None = None,
                 on_stream: Callable[[CameraConfig, StreamStart], None] | None = None,
                 on_short_file: Callable[[CameraConfig, int, int], None] | None = None,
                 on_position: Callable[[CameraConfig, StreamStart], None] | None = None,
                 publish_takes_stop: bool = False,
                 delivered: Callable[[CameraConfig, Callable[[], bool]], bool] | None = None,
                 on_end_retry: Callable[[CameraConfig], None] | None = None) -> None:
        self.publish = publish
        self.on_end_retry = on_end_retry
        self.delivered = delivered
        self.on_position = on_position
        self.publish_takes_stop = publish_takes_stop
        self.on_short_file = on_short_file
        self._streams = None if streams is None else dict(streams)
        self.on_stream = on_stream
        #: Cameras started by this process (a first start resumes the former process's stream).
        self._started: set[str] = set()
        self.reconnect, self.on_reopen = reconnect, on_reopen
        self.frame_format = frame_format
        self.on_bad_frames = on_bad_frames
        self.should_stop = should_stop
        self.on_error = on_error
        self._runs: dict[str, _CameraRun] = {}
        #: camera id -> the seq its next stream starts with (kept for removed cameras too)
        self._next_seq: dict[str, int] = {}
        self._lock = threading.RLock()
        self.closed = False
        #: :meth:`hold` calls not yet released (a cameras list on its way: the supervisor stays open).
        self._holds = 0

    @property
    def cameras(self) -> list[CameraConfig]:
        """The cameras in force (running or ended), in the order they were applied."""
        with self._lock:
            return [r.cam for r in self._runs.values()]

    def camera(self, camera_id: str) -> CameraConfig | None:
        """The camera in force with this id, or ``None``. Without the lock: a camera's thread may ask while
        :meth:`apply` waits for it."""
        run = self._runs.get(camera_id)
        return None if run is None else run.cam

    def threads(self) -> dict[str, threading.Thread]:
        with self._lock:
            return {cid: r.thread for cid, r in self._runs.items() if r.thread is not None}

    def alive(self) -> list[str]:
        """Ids of the cameras whose thread is running."""
        return sorted(cid for cid, t in self.threads().items() if t.is_alive())

    def apply(self, cameras: Sequence[CameraConfig]) -> CameraDiff:
        """Put ``cameras`` in force: start the added, stop the removed, restart those whose stream settings
        changed (a file whose sampling or encoding only changed resumes after its last frame published; other
        changes only update the kept settings). Nothing happens once :meth:`close_if_idle` closed the supervisor
        (an empty diff)."""
        with self._lock:
            if self.closed:
                log.warning("ingest has ended: the cameras list is not applied")
                return CameraDiff()
            diff = diff_cameras(self.cameras, cameras)
            stopping = [self._runs[cid] for cid in diff.removed] + [self._runs[c.id] for c in diff.restarted]
            resumed = {c.id for c in diff.restarted if _resumes(self._runs[c.id].cam, c)}
            repointed = {c.id for c in diff.restarted if not same_stream(self._runs[c.id].cam, c)}
            for run in stopping:
                run.final = run.cam.id in diff.removed  # a removed file's stream ends for good: its marker goes out
                run.stop.set()
            for run in stopping:
                if run.thread is not None:
                    run.thread.join(STOP_JOIN_S)
                    if run.thread.is_alive():
                        log.warning("camera thread did not stop in time", extra={"camera": run.cam.id})
                self._next_seq[run.cam.id] = max(self._next_seq.get(run.cam.id, 0), run.next_seq)
            # a re-pointed camera's old stream ends with a marker, published by the new stream's thread before its
            # first frame (so it cannot land after them): (seq, time) of the marker
            owed: dict[str, tuple[int, int]] = {}
            for cam in diff.restarted:
                old_run = self._runs[cam.id]
                if old_run.owed_end is not None:  # stopped before it published its marker (nor any frame): carried
                    owed[cam.id] = old_run.owed_end
                elif cam.id in repointed and old_run.carries and not old_run.ended:
                    owed[cam.id] = (self._next_seq[cam.id], self._end_ts(old_run))
                    self._next_seq[cam.id] += 1
            for cid in diff.removed:
                del self._runs[cid]
                log.info("camera stopped (removed)", extra={"camera": cid})
            for cam in diff.updated:
                self._runs[cam.id].cam = cam
            order = {c.id: i for i, c in enumerate(cameras)}
            for cam in [*diff.restarted, *diff.added]:
                old = self._runs.get(cam.id) if cam.id in resumed else None
                if old is not None and old.ended:  # the file had ended: nothing is left to read with the new settings
                    old.cam = cam
                    continue
                self._runs[cam.id] = self._start(cam, old, owed.get(cam.id))
            self._runs = dict(sorted(self._runs.items(), key=lambda kv: order.get(kv[0], len(order))))
            return diff

    @staticmethod
    def _end_ts(run: _CameraRun) -> int:
        """The time of a stopped stream's end-of-stream marker: its last frame's (a live stream without one: now)."""
        return run.last_ts_ms or (int(time.time() * 1000) if is_live(run.cam.source) else run.cam.start_ts_ms)

    def _start(self, cam: CameraConfig, resume: _CameraRun | None = None,
               owed_end: tuple[int, int] | None = None) -> _CameraRun:
        """Start ``cam``'s thread; ``resume``: the stopped run of the same file stream, which it goes on after;
        ``owed_end``: ``(seq, ts_ms)`` of the end-of-stream marker of the camera's re-pointed old stream, published
        first."""
        run = _CameraRun(cam, next_seq=self._next_seq.get(cam.id, 0), last_ts_ms=cam.start_ts_ms, owed_end=owed_end)
        if resume is not None:
            run.last_ts_ms, run.source_frame = resume.last_ts_ms, resume.source_frame
        first, after = run.next_seq, run.source_frame
        start = None  # a stream start to keep (on_stream) before the first frame
        old_end = None  # an end-of-stream marker of the camera's former stream, published before (its seq)
        ended = False  # the former process's stream of the camera (this one) had ended: its marker only, again
        if self._streams is not None:
            first, after, start, old_end, ended, run.carries = self._numbering(cam, first, after, resume is not None)
            # where the stream goes on from (a sampling change before its first frame resumes there, not at 0)
            run.next_seq, run.source_frame = first, after
            if ended:
                run.next_seq, run.ended = first + 1, True
            if old_end is not None:  # (never with owed_end: that is of a camera this process started before)
                # the former process's stream of the camera ended while ingest was down: its marker first. The old
                # stream's last frame time is not kept: dated as the new stream's time runs (the wall clock for a
                # live source, its start_ts_ms for a file; the wall clock for a file moved a file site's store clock
                # months ahead). Analytics dates a marker at the camera's last frame it processed (kept in its saved
                # state: AnalyticsStage.dated_end), so the old stream ends there
                owed_end = run.owed_end = (old_end, int(time.time() * 1000) if is_live(cam.source)
                                           else cam.start_ts_ms)
        bad = None if self.on_bad_frames is None else (lambda n: self.on_bad_frames(cam, n))
        reopen = None if self.on_reopen is None else (lambda: self.on_reopen(cam))
        short = None if self.on_short_file is None else (lambda read, count: self.on_short_file(cam, read, count))
        stopped = lambda: self.should_stop() or run.stop.is_set()  # noqa: E731
        sid, live = stream_id(cam), is_live(cam.source)
        # the position kept last: a replay of the file at the same rate from its start does not go below it, nor
        # clear its ended ((seq, source frame), ended); and the file time of the last one kept
        kept = self._streams.get(cam.id) if self._streams is not None and run.carries else None
        floor = [None if kept is None or kept.position is None or kept.stream_id != sid
                 else (kept.position, kept.ended)]
        kept_ts: list[int | None] = [None]
        since = [0]  # frames published since the last position kept (or its attempt that found nothing to keep)

        def settled() -> bool:
            return self.delivered is None or self.delivered(cam, stopped)

        def keep_position() -> bool:
            """Keep where the stream got to; ``False`` when its frames are not known delivered (tried again)."""
            pos, ended = (run.next_seq - 1 if run.ended else run.next_seq, run.source_frame), run.ended
            if floor[0] is not None:
                (seq, _), was_ended = floor[0]
                if was_ended or pos[0] < seq or (pos[0] == seq and not ended):
                    return True
            if not settled():  # not known delivered: the position kept stays at frames that were
                return False
            floor[0] = (pos, ended)
            self.on_position(cam, StreamStart(sid, first, after, ended, cam.target_fps or 0.0, pos))
            return True

        def publish(key: bytes, value: bytes, until: Callable[[], bool] = stopped) -> bool | None:
            return self.publish(key, value, until) if self.publish_takes_stop else self.publish(key, value)

        def seen(frame: m.Frame) -> None:
            run.next_seq, run.last_ts_ms, run.ended = frame.seq + 1, frame.ts_ms, frame.end_of_stream
            run.source_frame = frame.source_frame or run.source_frame  # an end marker has none
            run.carries = True
            if self.on_position is not None and not live:
                if kept_ts[0] is None:
                    kept_ts[0] = frame.ts_ms
                since[0] += 1
                if (frame.end_of_stream or frame.ts_ms - kept_ts[0] >= POSITION_EVERY_MS
                        or since[0] >= POSITION_EVERY_FRAMES) and keep_position():
                    # (one not kept is tried again at the next frame: at most POSITION_EVERY_FRAMES frames past the
                    # position kept are published while the broker takes them; StreamStart)
                    kept_ts[0], since[0] = frame.ts_ms, 0

        def end_former_stream(end_at: tuple[int, int]) -> bool:
            """Publish the end-of-stream marker of the camera's former stream until it is known delivered (before
            the new stream's start is kept and its first frame: they must not land while it can still be lost);
            ``False``: the camera stopped first. A failed delivery is logged and counted (``on_end_retry``) and the
            marker published again (before, the camera never started, silently, and the marker was lost)."""
            end = m.Frame(camera_id=cam.id, seq=end_at[0], ts_ms=end_at[1], end_of_stream=True)
            while True:
                if publish(topics.camera_key(cam.id), m.encode(end)) is False:
                    return False
                if settled():
                    run.owed_end = None
                    return True
                if stopped():
                    return False
                log.warning("end-of-stream marker of the camera's former stream not delivered, published again",
                            extra={"camera": cam.id, "seq": end_at[0], "retry_s": MARKER_RETRY_S})
                if self.on_end_retry is not None:
                    self.on_end_retry(cam)
                run.stop.wait(MARKER_RETRY_S)

        def target() -> None:
            try:
                if owed_end is not None and not end_former_stream(owed_end):
                    return  # stopped first: run.owed_end kept (the camera's next run publishes it)
                if ended:  # the file had ended (kept so): its marker again (downstream skips one it saw), no frame
                    end = m.Frame(camera_id=cam.id, seq=first, ts_ms=cam.start_ts_ms, end_of_stream=True)
                    publish(topics.camera_key(cam.id), m.encode(end))
                    return
                if start is not None and self.on_stream is not None:
                    if self.on_stream(cam, start, stopped) is False:
                        return  # stopped before its start was kept: no frame of the stream goes out
                pump_camera(cam, publish, stopped, first, seen, self.frame_format, bad, after, self.reconnect,
                            reopen, on_short=short)
                if run.final and not run.ended and not live and not self.should_stop():
                    # a removed file: its marker (no newer stream can overtake it: retried until the process stops)
                    end = m.Frame(camera_id=cam.id, seq=run.next_seq, ts_ms=run.last_ts_ms, end_of_stream=True)
                    if publish(topics.camera_key(cam.id), m.encode(end), self.should_stop) is not False:
                        seen(end)
                if self.on_position is not None and not live and not run.ended and run.carries:
                    keep_position()  # where the stopped stream got to (its last frames since the last one kept)
            except StoreLensError as exc:
                self.on_error(cam, exc)
            except Exception as exc:  # anything else (an OpenCV or client error) fails the camera the same way
                log.exception("camera thread failed", extra={"camera": cam.id})
                self.on_error(cam, SourceError(f"camera {cam.id}: {type(exc).__name__}: {exc}"))

        run.thread = threading.Thread(target=target, name=f"ingest-{cam.id}", daemon=True)
        run.thread.start()
        log.info("camera started", extra={"camera": cam.id, "first_seq": first, "after_source_frame": after})
        return run

    def _numbering(self, cam: CameraConfig, first: int, after: int, resumed: bool
                   ) -> tuple[int, int, StreamStart | None, int | None, bool, bool]:
        """``(first seq, after source frame, the start to keep or None, the seq of the former stream's end marker
        or None, whether the stream had ended, whether it goes on with the former process's stream)`` of a stream of
        ``cam`` started now, when the streams are kept (``streams``); ``first``/``after``: what this process alone
        would use.

        The former process's stream goes on: from its start with the same sampling (downstream skips the replay),
        else after its kept ``position``, above its numbers (:class:`StreamStart`). A stream kept under its
        :func:`legacy_stream_id` (a release that hashed the source with its password) or its
        :func:`previous_stream_id` (a release that masked fewer credentials) is the same stream, kept again under
        its new id.

        A camera re-pointed while ingest was down (a kept stream of another source) gets its former stream's
        end-of-stream marker first, numbered above it, and its new stream numbered after the marker: detect-track
        starts a new tracker session (the old tracks do not go on into the new source) and analytics closes the old
        stream's visits, as for a camera re-pointed while ingest runs. A marker downstream saw already (the process
        stopped before it kept the new start) is ignored there.

        A live camera's kept stream with a file's state (``ended``, ``position``: a device such as
        ``/dev/v4l/by-id/...`` a release before read as a file, :func:`~storelens.backends.video.is_live`) does not go
        on: a new live stream starts, numbered above the file's numbers (after the file stream's end marker when it
        had not ended). Before, with another ``target_fps`` an ended one stayed ended: the camera never streamed."""
        sid, saved = stream_id(cam), self._streams.get(cam.id)
        fresh = cam.id not in self._started  # this process's first start of the camera
        self._started.add(cam.id)
        fps = cam.target_fps or 0.0
        file_state = saved is not None and is_live(cam.source) and (saved.ended or saved.position is not None)
        if (fresh and saved is not None and not file_state
                and saved.stream_id in (sid, previous_stream_id(cam), legacy_stream_id(cam))):
            # the former process's stream: its numbers (kept again under the current id if it had an earlier one)
            again = None if saved.stream_id == sid else dataclasses.replace(saved, stream_id=sid)
            if saved.target_fps != fps and (saved.position is not None or saved.target_fps):
                # another rate: on after the last frame known delivered (the start's when none was kept yet)
                seq, after = saved.position or (saved.first_seq, saved.after_source_frame)
                if saved.ended:  # stays ended: its marker only (the same rate replays the file, marker included)
                    return seq, after, again, None, True, True
                # numbered above the frames an unclean stop may have published past it (StreamStart)
                again = StreamStart(sid, seq + POSITION_EVERY_FRAMES, after, target_fps=fps)
            if again is not None:
                self._streams[cam.id] = again
                return again.first_seq, again.after_source_frame, again, None, False, True
            return saved.first_seq, saved.after_source_frame, None, None, False, True
        end = None
        if fresh and saved is None:  # nothing kept (a first start, or streams from before they were kept)
            start = StreamStart(sid, 0, 0, target_fps=fps)
        elif resumed:  # a file resumed with new sampling or encoding settings: its numbers go on
            start = StreamStart(sid, first, after, target_fps=fps)
        else:  # a new stream: above every number of the camera's former streams, this process's or another's
            floor = 0 if saved is None else max(saved.first_seq, (saved.position or (0, 0))[0]) + 1
            seq = max(first, floor, int(time.time() * 1000))
            if fresh and not (saved is not None and saved.ended):
                # re-pointed while ingest was down: the former stream's end marker at seq, frames after it
                end, seq = seq, seq + 1
            start = StreamStart(sid, seq, 0, target_fps=fps)
        self._streams[cam.id] = start
        return start.first_seq, start.after_source_frame, start, end, False, False

    def close_if_idle(self) -> bool:
        """Close the supervisor (later :meth:`apply` calls do nothing) when no camera thread runs and nothing
        holds it open (:meth:`hold`); whether it did.

        The embedded pipeline ends ``frames`` after this (every file source ended).
        """
        with self._lock:
            if not self._holds and not self.alive():
                self.closed = True
            return self.closed

    def hold(self) -> bool:
        """Keep the supervisor open until :meth:`release` (a cameras list is on its way to :meth:`apply`, e.g. a
        site version waiting for the stages), so a camera added while the last source ends still starts.
        False (nothing held) when it has already closed."""
        with self._lock:
            if self.closed:
                return False
            self._holds += 1
            return True

    def release(self) -> None:
        """End one :meth:`hold`."""
        with self._lock:
            self._holds = max(0, self._holds - 1)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every camera and wait for its thread (at most ``timeout_s`` each)."""
        with self._lock:
            self.closed = True
            runs = list(self._runs.values())
        for run in runs:
            run.stop.set()
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout_s)


def _resumes(old: CameraConfig, new: CameraConfig) -> bool:
    """Whether ``new`` goes on with ``old``'s stream: a file whose :data:`NEW_STREAM_FIELDS` are unchanged."""
    return not is_live(new.source) and same_stream(old, new)


def start_ingest(cameras: Sequence[CameraConfig], publish: Callable[[bytes, bytes], None],
                 should_stop: Callable[[], bool],
                 on_error: Callable[[CameraConfig, StoreLensError], None]) -> list[threading.Thread]:
    """One daemon thread per camera; a camera whose source fails calls ``on_error`` (the others go on)."""
    sup = CameraSupervisor(publish, should_stop, on_error)
    sup.apply(cameras)
    return list(sup.threads().values())
