"""Ingest: read a camera stream or a file with OpenCV, sample, resize, JPEG-encode.

* Files: timestamps come from the stream position (``start_ts_ms`` + the frame's
  presentation time in the file, which is ``frame_index / fps`` unless the file
  has a variable frame rate), so two runs over the same file produce identical messages; the
  last message has ``end_of_stream`` set when the file really ended (its end, or
  a file that could not be read), never when ingest was asked to stop. A frame
  that does not decode is skipped (logged, counted): the frames after it keep
  their positions (:func:`read_file_frames`).
* Live sources (RTSP/HTTP URLs, webcam indices, ``/dev/video*`` devices): timestamps come from the
  wall clock; a source that is missing, or that drops or gives no frame, is
  reopened with exponential backoff (reset by the first frame read).
* Sampling keeps the frame whose source time first reaches each tick of
  ``1 / target_fps``; ``source_frame`` keeps the 1-based source index.

Example:
    >>> from storelens.config import CameraConfig
    >>> cam = CameraConfig(id="cam-1", source="video.mp4", target_fps=5)
    >>> sampler = FrameSampler(source_fps=25, target_fps=cam.target_fps)
    >>> [i for i in range(12) if sampler.keep(i)]
    [0, 5, 10]
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from storelens.contract import messages as m
from storelens.config import CameraConfig, IngestConfig
from storelens.config.cameras import redact_source
from storelens.config.site import FrameFormat
from storelens.errors import SourceError

log = logging.getLogger(__name__)


#: Paths under ``/dev/`` that are no camera: memory file systems and descriptors (files), and the special files a
#: site uses as a placeholder source (``/dev/null``: a camera not installed yet, read as an empty file).
_DEV_NOT_CAMERAS = ("/dev/shm/", "/dev/fd/")
_DEV_FILES = frozenset({"/dev/null", "/dev/zero", "/dev/stdin", "/dev/random", "/dev/urandom"})

#: ``scheme://`` of a URL (RFC 3986 scheme characters).
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_live(source: str) -> bool:
    """URLs (``rtsp://``, ``http(s)://``, ``srt://``, ...; not ``file://``), webcam indices and devices are live;
    anything else is a file. A device is a path under ``/dev/`` but ``/dev/shm/`` (a memory file system), ``/dev/fd/``
    and special files such as ``/dev/null`` (a placeholder source: an empty file):
    ``/dev/video0``, udev's stable names (``/dev/v4l/by-id/usb-...-video-index0``) and aliases
    (``/dev/door-cam``); told by the name alone, so every process (ingest, analytics, the API) agrees without the
    device. Before, only a few schemes and ``/dev/video*`` were: other cameras were read as files (stamped from
    ``start_ts_ms``, numbered from 0 again after a restart, ended for good by a drop).

    >>> [is_live(s) for s in ("0", "/dev/video0", "rtsp://cam/1", "srt://cam:9000", "/dev/v4l/by-id/usb-c-video-index0",
    ...                       "/videos/door.mp4", "file:///videos/door.mp4", "/dev/shm/door.mp4", "/dev/null")]
    [True, True, True, True, True, False, False, False, False]
    """
    if source.isdigit() or (source.startswith("/dev/") and not source.startswith(_DEV_NOT_CAMERAS)
                            and source not in _DEV_FILES):
        return True
    return bool(_URL_SCHEME.match(source)) and not source.lower().startswith("file://")


class FrameSampler:
    """Keeps frames so the output rate is at most ``target_fps`` (``None``: all frames).

    A ``target_fps`` at or above ``source_fps`` keeps every frame of a constant rate; given the frames' times
    (``t_s``: a variable-frame-rate file, whose ``source_fps`` is its mean rate) its ticks still apply, up to a
    quarter of a tick early (times rounded to the file's time base, or jittering): the faster stretches are
    thinned to ``target_fps`` (before, all of them were kept, at up to twice and more the rate asked for).
    """

    def __init__(self, source_fps: float, target_fps: float | None) -> None:
        self.source_fps = source_fps if source_fps and source_fps > 0 else 25.0
        self.target_fps = target_fps
        self._next_t = 0.0

    def keep(self, index: int, t_s: float | None = None) -> bool:
        """Whether to keep frame ``index`` shown at ``t_s`` seconds into the source (default: ``index / fps``)."""
        if not self.target_fps or (self.target_fps >= self.source_fps and t_s is None):
            return True
        t = index / self.source_fps if t_s is None else t_s
        early = 1e-9 if self.target_fps < self.source_fps else 0.25 / self.target_fps
        if t + early >= self._next_t:
            self._next_t += 1.0 / self.target_fps
            while self._next_t <= t:
                self._next_t += 1.0 / self.target_fps
            return True
        return False


@dataclass(frozen=True)
class RawFrame:
    """A decoded source frame before encoding."""

    index: int  # 0-based position in the source
    ts_ms: int
    image_bgr: np.ndarray


def open_capture(source: str) -> cv2.VideoCapture:
    """Open ``source`` with OpenCV or raise :class:`SourceError` with the reason."""
    if not is_live(source):
        if not os.path.exists(source):
            raise SourceError(f"video not found: {source}")
        if os.path.isdir(source):
            raise SourceError(f"not a video file (a directory): {source}")
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise SourceError(f"cannot open video source {redact_source(source)!r}: OpenCV could not read it "
                          "(corrupt or unsupported)")
    return cap


#: The warning of :func:`read_file_frames` for a file that ends before its frame count (extras ``source``,
#: ``frames`` read, ``frame_count`` announced), logged unless the caller is told through ``on_short``.
SHORT_VIDEO_MESSAGE = "video ended before its frame count"

#: Unreadable frames in a row after which a file is taken as ended (:func:`read_file_frames`): a damaged stretch
#: of a recording (4 s at 25 fps) is skipped; a truncated file, or one whose frame count is unknown or too high (a
#: variable frame rate's count is an estimate), ends.
MAX_BAD_FRAMES_IN_A_ROW = 100


def read_file_frames(
    source: str, start_ts_ms: int = 0, keep: Callable[[int, float], bool] | None = None,
    on_bad_frames: Callable[[int], None] | None = None, on_short: Callable[[int, int], None] | None = None,
) -> Iterator[RawFrame]:
    """Frames of a video file in order, stamped by stream position.

    A frame's time is its presentation time in the file (``CAP_PROP_POS_MSEC``: right for a variable frame
    rate too); a frame without one, or whose time does not move forward (a file without times, a repeated or
    reset timestamp in joined recordings), gets the last frame's time plus ``1 / fps`` a frame: times never
    go back.
    ``keep(index, t_s)`` selects frames (``t_s``: that time in seconds): the others are decoded (the codec
    needs them) but not converted to BGR, which saves ~30% of the read cost of a 1080p frame.

    A frame that does not decode (a corrupt JPEG or packet) is skipped: its index is not reused, so later
    frames keep the index and time of their position in the file. Each run of skipped frames followed by a
    good one is logged once and its length passed to ``on_bad_frames(n)``. Reading ends at the file's frame
    count (``CAP_PROP_FRAME_COUNT``, when it gives one) or after :data:`MAX_BAD_FRAMES_IN_A_ROW` unreadable
    frames in a row; unreadable frames at the end are not counted (the count can be an estimate). A file that
    ends before its count (truncated or damaged) is told to ``on_short(frames_read, frame_count)``
    (``frames_read``: the frames that decoded, skipped ones not counted), or logged as a warning
    (:data:`SHORT_VIDEO_MESSAGE`) without it. Raises :class:`SourceError` if the file cannot be opened or no
    frame of it decodes.
    """
    cap = open_capture(source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 1000 else 25.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)  # 0: unknown

    try:
        index = decoded = bad = 0  # bad: unreadable frames in a row, just before ``index``
        last_i, last_ms = -1, -1000.0 / fps  # the index and time given to the last grabbed frame
        while True:
            img = None
            ok = cap.grab()
            if ok:
                t_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                if not (math.isfinite(t_ms) and t_ms > last_ms):  # no time, or one that did not move forward
                    t_ms = last_ms + (index - last_i) * 1000.0 / fps  # (a reset in joined recordings): go on
                last_i, last_ms = index, t_ms
                if keep is None or keep(index, t_ms / 1000.0):
                    ok, img = cap.retrieve()
                    ok = ok and img is not None
            if ok:
                if bad:
                    log.warning("unreadable video frames skipped", extra={
                        "source": redact_source(source), "first_frame": index - bad, "frames": bad})
                    if on_bad_frames is not None:
                        on_bad_frames(bad)
                    bad = 0
                decoded += 1
                if img is not None:
                    yield RawFrame(index, start_ts_ms + int(round(t_ms)), img)
            elif 0 < count <= index:
                break  # the end the file announced
            else:
                bad += 1
                if bad >= MAX_BAD_FRAMES_IN_A_ROW:
                    index += 1
                    break
            index += 1
        if decoded == 0:
            raise SourceError(f"no decodable frame in {redact_source(source)!r} (corrupt or empty video)")
        if bad and count:  # a truncated or damaged file (or an estimated count): the results miss its end
            if on_short is not None:
                on_short(decoded, count)
            else:
                log.warning(SHORT_VIDEO_MESSAGE, extra={
                    "source": redact_source(source), "frames": decoded, "frame_count": count})
    finally:
        cap.release()


def _wait(seconds: float, should_stop: Callable[[], bool]) -> None:
    """Sleep ``seconds``, or less once ``should_stop()``."""
    deadline = time.monotonic() + seconds
    while not should_stop() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))


def read_live_frames(
    source: str,
    max_backoff_s: float = 30.0,
    should_stop: Callable[[], bool] = lambda: False,
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    backoff_s: float = 0.5,
    on_reopen: Callable[[], None] | None = None,
    keep: Callable[[int], bool] | None = None,
) -> Iterator[RawFrame]:
    """Frames of a live source, reconnecting with exponential backoff until ``should_stop()``.

    Each frame is grabbed and stamped (``clock_ms()``) as soon as OpenCV has it, and converted to BGR only when
    ``keep(ts_ms)`` says so (default: every frame): a camera sampled at 5 of its 25 fps skips 80% of the
    conversions (:class:`TimeSampler`).

    The backoff (``backoff_s`` doubling to ``max_backoff_s``) is waited before each reopen, whether the source
    could not be opened or its stream dropped, and starts again at ``backoff_s`` only once a frame was read (grabbed and
    decoded): a source that opens but gives nothing, or whose frames never decode, is not reopened in a tight
    loop. Waits end early on ``should_stop()``.
    ``on_reopen()`` is called before each reopen attempt (every open but the first).
    """
    backoff = backoff_s
    index = 0
    first = True
    while not should_stop():
        if not first and on_reopen is not None:
            on_reopen()
        first = False
        try:
            cap = open_capture(source)
        except SourceError as exc:
            log.warning("source unavailable, retrying", extra={"source": redact_source(source), "error": str(exc),
                                                                      "backoff_s": backoff})
            _wait(backoff, should_stop)
            backoff = min(max_backoff_s, backoff * 2)
            continue
        try:
            while not should_stop():
                if not cap.grab():
                    break
                ts_ms = clock_ms()  # at capture: before the conversion, which only kept frames get
                index += 1
                if keep is not None and not keep(ts_ms):
                    continue
                ok, img = cap.retrieve()
                if not ok or img is None:
                    break
                backoff = backoff_s  # frames come (grabbed and decoded): the next drop is retried soon
                yield RawFrame(index - 1, ts_ms, img)
        finally:
            cap.release()
        if should_stop():
            break
        log.warning("stream dropped, reconnecting", extra={"source": redact_source(source), "backoff_s": backoff})
        _wait(backoff, should_stop)
        backoff = min(max_backoff_s, backoff * 2)


def resize_to_width(img: np.ndarray, width: int | None) -> np.ndarray:
    if not width or img.shape[1] == width:
        return img
    h = max(1, int(round(img.shape[0] * width / img.shape[1])))
    interp = cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, (width, h), interpolation=interp)


#: Width of the grey thumbnail that :func:`image_digest` hashes.
DIGEST_WIDTH_PX = 64


def image_digest(image_bgr: np.ndarray) -> bytes:
    """8-byte digest of the image downscaled to :data:`DIGEST_WIDTH_PX` wide (area average), grey.

    Equal digests mean the same picture: a frozen camera repeats it exactly, while a working
    one's sensor noise changes at least one of the ~2,000 thumbnail pixels in every frame (each
    averages dozens of source pixels, so its noise is below one grey level but still flips the
    rounding somewhere). About 0.2 ms for a 1080p frame (a JPEG encode is ~10 ms). The ``camera_frozen`` alert compares
    consecutive digests (:mod:`storelens.stages.alerts`).

    Example:
        >>> a = np.zeros((480, 640, 3), np.uint8)
        >>> image_digest(a) == image_digest(a.copy()), image_digest(a) == image_digest(a + 1)
        (True, False)
    """
    import hashlib

    h, w = image_bgr.shape[:2]
    tw = min(DIGEST_WIDTH_PX, w)
    size = (tw, max(1, round(h * tw / w)))
    if w > 4 * tw:  # bilinear to 4x the size first (0.2 ms instead of 4 ms for a 1080p area resize)
        image_bgr = cv2.resize(image_bgr, (4 * size[0], 4 * size[1]), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return hashlib.blake2b(np.ascontiguousarray(grey).tobytes(), digest_size=8).digest()


def encode_frame(camera_id: str, seq: int, raw: RawFrame, resize_width: int | None, jpeg_quality: int,
                 frame_format: FrameFormat = "jpeg") -> m.Frame:
    """A sampled source frame as a ``Frame`` message: resized, its digest, and its image as JPEG or raw BGR.

    ``frame_format="bgr"`` (in-process hand-over only, ``pipeline.frames``) skips the JPEG encode here and
    the decode in detect-track: ~4 ms of CPU a 960x540 frame, and the detector sees the source's pixels.
    """
    src_h, src_w = raw.image_bgr.shape[:2]
    img = resize_to_width(raw.image_bgr, resize_width)
    if frame_format == "bgr":
        image = {"bgr": img.tobytes()}  # row by row (C order), whatever the array's strides
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise SourceError(f"JPEG encoding failed for frame {raw.index} of camera {camera_id}")
        image = {"jpeg": buf.tobytes()}
    return m.Frame(
        camera_id=camera_id, seq=seq, ts_ms=raw.ts_ms, **image,
        width=img.shape[1], height=img.shape[0], source_frame=raw.index + 1,
        source_width=src_w, source_height=src_h, image_digest=image_digest(raw.image_bgr),
    )


#: JPEG qualities a frame over its topic's limit is encoded at again, best first (:func:`reencode_jpeg`).
SHRINK_QUALITIES = (75, 50, 30)


def reencode_jpeg(frame: m.Frame, fits: Callable[[m.Frame], bool],
                  qualities: Sequence[int] = SHRINK_QUALITIES) -> tuple[m.Frame, int] | None:
    """``frame`` with its JPEG encoded again at the first of ``qualities`` whose result ``fits``, and that quality;
    its size, digest and the rest unchanged (a tracker sees the same geometry). ``None`` when none fits, or the
    frame has no decodable JPEG."""
    if frame.WhichOneof("image") != "jpeg":
        return None
    img = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    for q in qualities:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        if not ok:
            continue
        out = m.Frame()
        out.CopyFrom(frame)
        out.jpeg = buf.tobytes()
        if fits(out):
            return out, int(q)
    return None


def decode_frame(frame: m.Frame) -> np.ndarray:
    """The BGR image of a Frame (JPEG or raw pixels); :class:`storelens.errors.DecodeError` if unusable.

    Raw pixels are not copied: the array is a read-only view of the message's bytes.

    Example:
        >>> f = m.Frame(camera_id="c", bgr=bytes(2 * 3 * 3), width=3, height=2)
        >>> decode_frame(f).shape
        (2, 3, 3)
    """
    from storelens.errors import DecodeError

    kind = frame.WhichOneof("image")
    if kind == "bgr":
        w, h = frame.width, frame.height
        if len(frame.bgr) != w * h * 3 or not w or not h:
            raise DecodeError(f"frame {frame.camera_id}/{frame.seq}: {len(frame.bgr)} bytes of BGR pixels, "
                              f"header says {w}x{h} ({w * h * 3} bytes)")
        return np.frombuffer(frame.bgr, dtype=np.uint8).reshape(h, w, 3)
    if not frame.jpeg:
        raise DecodeError(f"frame {frame.camera_id}/{frame.seq} has no image")
    img = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DecodeError(f"frame {frame.camera_id}/{frame.seq}: corrupt JPEG ({len(frame.jpeg)} bytes)")
    if (frame.width or frame.height) and (img.shape[1], img.shape[0]) != (frame.width, frame.height):
        raise DecodeError(
            f"frame {frame.camera_id}/{frame.seq}: JPEG is {img.shape[1]}x{img.shape[0]}, header says {frame.width}x{frame.height}"
        )
    return img


def camera_frames(cam: CameraConfig, should_stop: Callable[[], bool] = lambda: False,
                  frame_format: FrameFormat = "jpeg", first_seq: int = 0,
                  on_bad_frames: Callable[[int], None] | None = None,
                  after_source_frame: int = 0, reconnect: IngestConfig | None = None,
                  on_reopen: Callable[[], None] | None = None,
                  on_short: Callable[[int, int], None] | None = None) -> Iterator[m.Frame]:
    """Encoded (``frame_format``: see :func:`encode_frame`), sampled frames of one camera, then (for files)
    an end-of-stream marker.

    A file's frames are numbered from ``first_seq``: a file read again gives the same numbers, so detect-track
    and analytics skip a replay. A live stream's are numbered from its first frame's wall-clock time in ms (or
    ``first_seq`` if larger): a restarted ingest process, which has lost its counters, goes on above every
    number it published before (a camera gives far fewer than 1000 frames a second), and downstream does not
    take the new frames for redeliveries of the old ones.

    The end-of-stream marker comes when the file really ended: at its end, or before the error of a file that
    cannot be read (:class:`SourceError` raised after it, so downstream closes the tracks and visits it has).
    Stopped by ``should_stop()`` (SIGTERM, a stopped camera), a stream ends without one: the same file read again
    later goes on where this one stopped (a replay is skipped by seq), with its tracks. ``on_bad_frames(n)``,
    ``on_short(frames_read, frame_count)``: see :func:`read_file_frames`.

    ``after_source_frame``: a file's frames up to this one (1-based, a :attr:`Frame.source_frame`) are skipped:
    the same stream resumed with new sampling or encoding settings (:class:`~storelens.runtime.ingest.
    CameraSupervisor`) goes on after the last frame published, its timestamps going on too. The skipped frames
    still step the sampler, so the frames kept are those a run with the new settings from the start would keep.

    A live source is reopened with the backoff of ``reconnect`` (default :class:`~storelens.config.IngestConfig`),
    calling ``on_reopen()`` before each reopen (:func:`read_live_frames`).
    """
    live = is_live(cam.source)
    seq = None
    last_ts = cam.start_ts_ms
    ended, error = False, None  # ended: the file's end or its error, not a stop
    try:
        if live:  # sample by wall-clock time: a live stream's nominal fps is often wrong
            reconnect = reconnect or IngestConfig()
            raw_iter = read_live_frames(
                cam.source, reconnect.reconnect_backoff_max_s, should_stop, backoff_s=reconnect.reconnect_backoff_s,
                on_reopen=on_reopen, keep=TimeSampler(cam.target_fps).keep)
        else:
            sampler = FrameSampler(source_fps(cam.source), cam.target_fps)
            keep, bad_frames, index_at = sampler.keep, on_bad_frames, 0
            if after_source_frame > 0:
                def keep(index: int, t_s: float) -> bool:
                    nonlocal last_ts, index_at
                    index_at, kept = index, sampler.keep(index, t_s)
                    if index >= after_source_frame:
                        return kept
                    last_ts = cam.start_ts_ms + int(round(t_s * 1000))  # the end marker's time if no frame follows
                    return False
                if on_bad_frames is not None:  # the skipped stretch's unreadable frames were counted before
                    def bad_frames(n: int) -> None:
                        if index_at >= after_source_frame:
                            on_bad_frames(n)
            raw_iter = read_file_frames(cam.source, cam.start_ts_ms, keep=keep, on_bad_frames=bad_frames,
                                        on_short=on_short)
        for raw in raw_iter:
            if should_stop():
                break
            if seq is None:
                seq = max(first_seq, raw.ts_ms) if live else first_seq
            yield encode_frame(cam.id, seq, raw, cam.resize_width, cam.jpeg_quality, frame_format)
            last_ts = raw.ts_ms
            seq += 1
        else:
            ended = not live
    except Exception as exc:  # noqa: BLE001 (re-raised below, after a file's end-of-stream marker)
        if live:
            raise
        ended, error = True, exc
    if ended:
        yield m.Frame(camera_id=cam.id, seq=first_seq if seq is None else seq, ts_ms=last_ts, end_of_stream=True)
    if error is not None:
        raise error


class TimeSampler:
    """Keeps at most ``target_fps`` frames per second of timestamp (``None``: all): a live source's sampler."""

    def __init__(self, target_fps: float | None) -> None:
        self.period_ms = 1000.0 / target_fps if target_fps else 0.0
        self._next_ms: float | None = None

    def keep(self, ts_ms: int) -> bool:
        if not self.period_ms:
            return True
        if self._next_ms is not None and ts_ms < self._next_ms:
            return False
        self._next_ms = (ts_ms if self._next_ms is None else self._next_ms) + self.period_ms
        if self._next_ms <= ts_ms:  # after a stall, restart the ticks from this frame
            self._next_ms = ts_ms + self.period_ms
        return True


def _time_sampled(frames: Iterator[RawFrame], target_fps: float | None) -> Iterator[RawFrame]:
    """Keep at most ``target_fps`` frames per second of timestamp (:class:`TimeSampler`)."""
    sampler = TimeSampler(target_fps)
    return (raw for raw in frames if sampler.keep(raw.ts_ms))


def source_fps(source: str) -> float:
    cap = open_capture(source)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    finally:
        cap.release()
    return fps if 0 < fps < 1000 else 25.0


def frame_count(source: str) -> int | None:
    """Frame count a file reports (may be approximate), ``None`` for live sources."""
    if is_live(source):
        return None
    cap = open_capture(source)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    return n if n > 0 else None
