"""Ingest: one thread per camera publishes its sampled frames (embedded mode and the ingest service).

:class:`CameraSupervisor` owns the threads: each camera has its own stop event, and
:meth:`CameraSupervisor.apply` puts a new cameras list in force without a restart (a site
version saved through ``/v1/site``): added cameras start, removed ones stop, and a camera
whose source or sampling changed (:data:`storelens.config.cameras.STREAM_FIELDS`) is stopped
and started again with its new settings. A restarted camera's frame numbers go on after the
old stream's (detect-track and analytics skip frames by seq), so nothing is mistaken for a
redelivery. A file camera that a cameras list removes, or re-points (a new ``source`` or
``start_ts_ms``: :data:`NEW_STREAM_FIELDS`), ends its stream with an end-of-stream marker (the
re-pointed one reads its file from the start: a new stream). A file camera whose sampling or
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

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from storelens.backends.video import camera_frames, is_live
from storelens.config import CameraConfig, IngestConfig
from storelens.config.cameras import CameraDiff, diff_cameras
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


@dataclass(frozen=True)
class StreamStart:
    """Where a camera's stream starts (``IngestStream`` on the ``ingest-state`` topic): the stream
    (:func:`stream_id`), its first frame's seq, and the file's last source frame (1-based) before it (0: the
    file's start; a file resumed with new sampling or encoding settings goes on after its last frame)."""

    stream_id: str
    first_seq: int
    after_source_frame: int = 0


def stream_id(cam: CameraConfig) -> str:
    """The identity of a camera's stream: a digest of its :data:`NEW_STREAM_FIELDS` (not the source itself,
    which can hold a password).

    >>> a = CameraConfig(id="c", source="a.mp4")
    >>> stream_id(a) == stream_id(a.model_copy(update={"target_fps": 2.0})), len(stream_id(a))
    (True, 16)
    """
    fields = json.dumps([getattr(cam, f) for f in NEW_STREAM_FIELDS])
    return hashlib.blake2b(fields.encode("utf-8"), digest_size=8).hexdigest()


def pump_camera(cam: CameraConfig, publish: Callable[[bytes, bytes], None], should_stop: Callable[[], bool],
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
    of ``reconnect``, ``on_reopen()`` called before each reopen. Raises
    :class:`~storelens.errors.StoreLensError` when the source cannot be read (a file's end-of-stream marker
    published first).
    """
    key = topics.camera_key(cam.id)
    n = 0
    for frame in camera_frames(cam, should_stop=should_stop, frame_format=frame_format, first_seq=first_seq,
                               on_bad_frames=on_bad_frames, after_source_frame=after_source_frame,
                               reconnect=reconnect, on_reopen=on_reopen, on_short=on_short):
        publish(key, m.encode(frame))
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
    #: Stopped for good by a cameras list (removed, or re-pointed: a new stream), not by the process.
    final: bool = False


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
    """

    def __init__(self, publish: Callable[[bytes, bytes], None], should_stop: Callable[[], bool],
                 on_error: Callable[[CameraConfig, StoreLensError], None], frame_format: FrameFormat = "jpeg",
                 on_bad_frames: Callable[[CameraConfig, int], None] | None = None,
                 reconnect: IngestConfig | None = None,
                 on_reopen: Callable[[CameraConfig], None] | None = None,
                 streams: dict[str, StreamStart] | None = None,
                 on_stream: Callable[[CameraConfig, StreamStart], None] | None = None,
                 on_short_file: Callable[[CameraConfig, int, int], None] | None = None) -> None:
        self.publish = publish
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
            for run in stopping:
                run.final = run.cam.id not in resumed  # a file's stream ends for good: its marker goes out
                run.stop.set()
            for run in stopping:
                if run.thread is not None:
                    run.thread.join(STOP_JOIN_S)
                    if run.thread.is_alive():
                        log.warning("camera thread did not stop in time", extra={"camera": run.cam.id})
                self._next_seq[run.cam.id] = max(self._next_seq.get(run.cam.id, 0), run.next_seq)
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
                self._runs[cam.id] = self._start(cam, old)
            self._runs = dict(sorted(self._runs.items(), key=lambda kv: order.get(kv[0], len(order))))
            return diff

    def _start(self, cam: CameraConfig, resume: _CameraRun | None = None) -> _CameraRun:
        """Start ``cam``'s thread; ``resume``: the stopped run of the same file stream, which it goes on after."""
        run = _CameraRun(cam, next_seq=self._next_seq.get(cam.id, 0), last_ts_ms=cam.start_ts_ms)
        if resume is not None:
            run.last_ts_ms, run.source_frame = resume.last_ts_ms, resume.source_frame
        first, after = run.next_seq, run.source_frame
        start = None  # a stream start to keep (on_stream) before the first frame
        old_end = None  # an end-of-stream marker of the camera's former stream, published before (its seq)
        if self._streams is not None:
            first, after, start, old_end = self._numbering(cam, first, after, resume is not None)
            # where the stream goes on from (a sampling change before its first frame resumes there, not at 0)
            run.next_seq, run.source_frame = first, after
        bad = None if self.on_bad_frames is None else (lambda n: self.on_bad_frames(cam, n))
        reopen = None if self.on_reopen is None else (lambda: self.on_reopen(cam))
        short = None if self.on_short_file is None else (lambda read, count: self.on_short_file(cam, read, count))
        stopped = lambda: self.should_stop() or run.stop.is_set()  # noqa: E731

        def seen(frame: m.Frame) -> None:
            run.next_seq, run.last_ts_ms, run.ended = frame.seq + 1, frame.ts_ms, frame.end_of_stream
            run.source_frame = frame.source_frame or run.source_frame  # an end marker has none

        def target() -> None:
            try:
                if old_end is not None:  # the former process's stream of the camera ended while ingest was down
                    # the old stream's last frame time is not kept: dated as the new stream's time runs (the wall
                    # clock for a live source, its start_ts_ms for a file; the wall clock for a file moved a file
                    # site's store clock months ahead). Analytics dates a marker at the camera's last frame it
                    # processed (kept in its saved state: AnalyticsStage.dated_end), so the old stream ends there
                    end = m.Frame(camera_id=cam.id, seq=old_end, end_of_stream=True,
                                  ts_ms=int(time.time() * 1000) if is_live(cam.source) else cam.start_ts_ms)
                    self.publish(topics.camera_key(cam.id), m.encode(end))
                if start is not None and self.on_stream is not None and self.on_stream(cam, start, stopped) is False:
                    return  # stopped before its start was kept: no frame of the stream goes out
                pump_camera(cam, self.publish, stopped, first, seen, self.frame_format, bad, after, self.reconnect,
                            reopen, on_short=short)
                if run.final and not run.ended and not is_live(cam.source) and not self.should_stop():
                    end = m.Frame(camera_id=cam.id, seq=run.next_seq, ts_ms=run.last_ts_ms, end_of_stream=True)
                    self.publish(topics.camera_key(cam.id), m.encode(end))
                    seen(end)
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
                   ) -> tuple[int, int, StreamStart | None, int | None]:
        """``(first seq, after source frame, the start to keep or None, the seq of the former stream's end marker
        or None)`` of a stream of ``cam`` started now, when the streams are kept (``streams``); ``first``/``after``:
        what this process alone would use.

        A camera re-pointed while ingest was down (a kept stream of another source) gets its former stream's
        end-of-stream marker first, numbered above it, and its new stream numbered after the marker: detect-track
        starts a new tracker session (the old tracks do not go on into the new source) and analytics closes the old
        stream's visits, as for a camera re-pointed while ingest runs. A marker downstream saw already (the process
        stopped before it kept the new start) is ignored there."""
        sid, saved = stream_id(cam), self._streams.get(cam.id)
        fresh = cam.id not in self._started  # this process's first start of the camera
        self._started.add(cam.id)
        if fresh and saved is not None and saved.stream_id == sid:
            return saved.first_seq, saved.after_source_frame, None, None  # the former process's stream: its numbers
        end = None
        if fresh and saved is None:  # nothing kept (a first start, or streams from before they were kept)
            start = StreamStart(sid, 0, 0)
        elif resumed:  # a file resumed with new sampling or encoding settings: its numbers go on
            start = StreamStart(sid, first, after)
        else:  # a new stream: above every number of the camera's former streams, this process's or another's
            floor = 0 if saved is None else saved.first_seq + 1
            seq = max(first, floor, int(time.time() * 1000))
            if fresh:  # re-pointed while ingest was down: the former stream's end marker at seq, frames after it
                end, seq = seq, seq + 1
            start = StreamStart(sid, seq, 0)
        self._streams[cam.id] = start
        return start.first_seq, start.after_source_frame, start, end

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
    return not is_live(new.source) and all(getattr(old, f) == getattr(new, f) for f in NEW_STREAM_FIELDS)


def start_ingest(cameras: Sequence[CameraConfig], publish: Callable[[bytes, bytes], None],
                 should_stop: Callable[[], bool],
                 on_error: Callable[[CameraConfig, StoreLensError], None]) -> list[threading.Thread]:
    """One daemon thread per camera; a camera whose source fails calls ``on_error`` (the others go on)."""
    sup = CameraSupervisor(publish, should_stop, on_error)
    sup.apply(cameras)
    return list(sup.threads().values())
