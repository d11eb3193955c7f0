"""``storelens audit``: clips around sampled line crossings, a person's tally, the measured accuracy.

1. :func:`sample_clips` draws ``n`` crossings at random (seeded) from the history over a range
   and cuts a clip of ``clip_before_s`` + ``clip_after_s`` around each from the camera's video
   file (the history stores no pixels: ``frames.source_frame`` points into ``cameras[].source``),
   heads blurred (:func:`storelens.stages.snapshots.blur_heads` on the stored boxes), the line
   drawn with its ``in`` side marked, one clip per drawn ``(camera, line, ts_ms)``. The system's count of a
   clip is every stored crossing of that line inside the clip's time window (a clip may hold more than the
   sampled one, e.g. two people crossing in the same frame).
   :func:`clip_frames` renders a clip's frames (BGR arrays): the mp4 writer here and the API's JPEG frames
   (``/v1/audits``, the dashboard's audit view) both use it; :func:`make_clip` names a clip statelessly by
   ``(camera_id, line_id, crossing_ts_ms)`` and recomputes the system's count from storage.
2. A person tallies the ins and outs of each clip (a CLI prompt, or a CSV ``clip_id,in,out``).
3. :func:`record_audit` computes :func:`storelens.domain.audit.summarise` (Wilson interval),
   stores a ``count_audits`` row and, when the accuracy is below ``audit.min_accuracy``,
   writes an :class:`~storelens.contract.messages.Alert` of kind ``count_accuracy`` to the
   ``alerts`` table like the stage's alerts (``alert_id`` = ``count_accuracy:{store}:{audit_id}``).

Example:
    >>> clips = sample_clips(config, storage, "audit/", n=20, seed=1)          # doctest: +SKIP
    >>> answers = {c.clip_id: (1, 0) for c in clips}                            # a person's tally  # doctest: +SKIP
    >>> record_audit(config, storage, clips, answers).accuracy                  # doctest: +SKIP
    0.95
"""
from __future__ import annotations

import csv
import json
import pathlib
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import sqlalchemy as sa

from storelens.backends.video import is_live, open_capture
from storelens.config import SiteConfig
from storelens.config.cameras import redact_source
from storelens.contract import messages as m
from storelens.domain.audit import AuditSummary, ClipTally, summarise
from storelens.domain.counting import CrossingEvent
from storelens.errors import ConfigError
from storelens.stages.snapshots import blur_heads
from storelens.storage.schema import count_audits
from storelens.storage.schema import frames as frames_table

#: ``rule_id`` and ``kind`` of the alert an audit raises.
ALERT_KIND = "count_accuracy"


@dataclass(frozen=True)
class Clip:
    clip_id: str
    camera_id: str
    line_id: str
    event_id: str
    crossing_ts_ms: int
    start_ms: int
    end_ms: int
    path: str
    system_in: int
    system_out: int


def pick_crossings(config: SiteConfig, storage: Any, n: int | None = None, start_ms: int | None = None,
                   end_ms: int | None = None, cameras: Sequence[str] | None = None,
                   seed: int | None = None) -> list[CrossingEvent]:
    """Draw ``n`` (default ``audit.clips``) stored crossings at random (``seed``), by camera then time: one per
    clip, i.e. per distinct ``(camera, line, ts_ms)`` (two people crossing a line in one frame make one clip,
    whose system count holds both: :func:`make_clip`); fewer when the range has fewer.

    The draw picks positions among the range's crossings (counted in the database) and reads only those
    rows, so a long history costs about ``n`` small queries, not every crossing in memory.
    """
    n = config.audit.clips if n is None else n
    if n < 1:
        raise ConfigError(f"the number of clips must be >= 1, got {n}")
    known = {c.id for c in config.cameras}
    cams = list(cameras) if cameras else [c.id for c in config.cameras]
    unknown = sorted(set(cams) - known)
    if unknown:
        raise ConfigError(f"unknown camera(s) {unknown}; the config has {sorted(known)}")
    lo, hi = (-(2**62) if start_ms is None else start_ms), (2**62 if end_ms is None else end_ms)
    sizes = [storage.crossing_count(cam, lo, hi) for cam in cams]
    total = sum(sizes)
    if not total:
        raise ConfigError("no line crossings stored in the range: nothing to audit")
    picked: dict[tuple[str, str, int], CrossingEvent] = {}
    for k in _positions(random.Random(seed), total, min(n, total)):  # positions in camera order, then time
        if len(picked) >= n:
            break
        i = 0
        while k >= sizes[i]:
            k -= sizes[i]
            i += 1
        for ev in storage.crossings(cams[i], lo, hi, limit=1, offset=k):
            picked.setdefault((ev.camera_id, ev.line_id, ev.ts_ms), ev)  # the clip of another drawn one: draw again
    return sorted(picked.values(), key=lambda e: (e.camera_id, e.ts_ms))


def _positions(rng: random.Random, total: int, first: int) -> Iterator[int]:
    """``0 .. total - 1`` in random order, lazily: the first ``first`` as ``rng.sample`` draws them, then each
    further one at random among those not given yet (memory for the ones given, not for ``total``)."""
    given = set()
    for k in rng.sample(range(total), first):
        given.add(k)
        yield k
    while 2 * len(given) < total:
        k = rng.randrange(total)
        if k not in given:
            given.add(k)
            yield k
    rest = [k for k in range(total) if k not in given]  # fewer than the ones given: drawn without retries
    rng.shuffle(rest)
    yield from rest


def clip_window(config: SiteConfig, crossing_ts_ms: int) -> tuple[int, int]:
    """``[start_ms, end_ms)`` of the clip around a crossing (``audit.clip_before_s`` / ``clip_after_s``)."""
    before, after = int(config.audit.clip_before_s * 1000), int(config.audit.clip_after_s * 1000)
    return crossing_ts_ms - before, crossing_ts_ms + after + 1


def make_clip(config: SiteConfig, storage: Any, camera_id: str, line_id: str, crossing_ts_ms: int,
              clip_id: str = "", path: str = "") -> Clip | None:
    """The clip of the stored crossing of ``line_id`` at ``crossing_ts_ms`` with the system's count of its
    window (every stored crossing of that line inside it); ``None`` when no such crossing is stored.

    Example:
        >>> make_clip(config, storage, "door", "x320", 1_767_225_604_120).system_in    # doctest: +SKIP
        1
    """
    ev = next((e for e in storage.crossings(camera_id, crossing_ts_ms, crossing_ts_ms + 1) if e.line_id == line_id),
              None)
    if ev is None:
        return None
    c0, c1 = clip_window(config, ev.ts_ms)
    same = [e for e in storage.crossings(camera_id, c0, c1) if e.line_id == line_id]
    return Clip(clip_id, camera_id, line_id, ev.event_id, ev.ts_ms, c0, c1, path,
                sum(e.direction == "in" for e in same), sum(e.direction == "out" for e in same))


def sample_clips(config: SiteConfig, storage: Any, out_dir: str | pathlib.Path, n: int | None = None,
                 start_ms: int | None = None, end_ms: int | None = None, cameras: Sequence[str] | None = None,
                 seed: int | None = None) -> list[Clip]:
    """Draw ``n`` (default ``audit.clips``) crossings and write their clips (mp4) and ``clips.csv``."""
    picks = pick_crossings(config, storage, n, start_ms, end_ms, cameras, seed)
    known = {c.id: c for c in config.cameras}
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, ev in enumerate(picks, 1):
        clip = make_clip(config, storage, ev.camera_id, ev.line_id, ev.ts_ms, f"c{i:03d}", str(out / f"c{i:03d}.mp4"))
        assert clip is not None  # ev is stored
        _write_clip(known[ev.camera_id], storage, clip)
        clips.append(clip)
    with (out / "clips.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip_id", "camera_id", "line_id", "start_ms", "end_ms", "path"])
        for c in clips:
            w.writerow([c.clip_id, c.camera_id, c.line_id, c.start_ms, c.end_ms, c.path])
    return clips


def check_source(cam: Any) -> None:
    """:class:`ConfigError` when the camera's source is a live stream (the clips are cut from its video file)."""
    if is_live(cam.source):
        raise ConfigError(f"camera {cam.id!r}: source {redact_source(cam.source)!r} is a live stream; "
                          "the history stores no "
                          f"pixels, so the audit needs the camera's video file")


def _source_frames(storage: Any, camera_id: str, start_ms: int, end_ms: int) -> dict[int, int]:
    """``{source_frame: seq}`` of the stored frames of ``[start_ms, end_ms)``."""
    f = frames_table.c
    rows = storage._rows(sa.select(f.seq, f.source_frame).where(
        f.camera_id == camera_id, f.ts_ms >= start_ms, f.ts_ms < end_ms, f.end_of_stream == sa.false())
        .order_by(f.seq))
    return {int(sf): int(seq) for seq, sf in rows}


def clip_frame_count(storage: Any, camera_id: str, start_ms: int, end_ms: int, video_frames: int = 0) -> int:
    """Frames :func:`clip_frames` yields for the window: every video frame from the first stored one to the last
    (up to the video's ``video_frames``, when known)."""
    seq_of = _source_frames(storage, camera_id, start_ms, end_ms)
    if not seq_of:
        return 0
    last = min(max(seq_of), video_frames) if video_frames > 0 else max(seq_of)
    return max(0, last - min(seq_of) + 1)


def source_info(cam: Any) -> tuple[float, int]:
    """``(fps, frames)`` of the camera's video file (fps 25 when it does not say; frames 0 when unknown)."""
    import cv2

    check_source(cam)
    cap = open_capture(cam.source)
    try:
        return float(cap.get(cv2.CAP_PROP_FPS) or 25.0), max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    finally:
        cap.release()


def clip_frames(cam: Any, storage: Any, line_id: str, start_ms: int, end_ms: int,
                label: str | None = None) -> Iterator[np.ndarray]:
    """The clip's frames (BGR) read from the camera's video file: heads blurred on the stored boxes, the line
    ``line_id`` drawn with its ``in`` side, ``label`` written at the top left. What the mp4 clips of
    :func:`sample_clips` hold and what the API serves as JPEGs.

    Example:
        >>> frames = list(clip_frames(cam, storage, "door", clip.start_ms, clip.end_ms))   # doctest: +SKIP
        >>> len(frames) == clip_frame_count(storage, cam.id, clip.start_ms, clip.end_ms)  # doctest: +SKIP
        True
    """
    import cv2

    check_source(cam)
    seq_of = _source_frames(storage, cam.id, start_ms, end_ms)
    if not seq_of:
        return
    boxes: dict[int, list] = {}
    for p in storage.tracks(cam.id, start_ms, end_ms):
        for pt in p.points:
            boxes.setdefault(pt.seq, []).append(pt.bbox_xyxy)
    line = next((ln for ln in cam.lines if ln.id == line_id), None)
    cap = open_capture(cam.source)
    try:
        first, last = min(seq_of), max(seq_of)
        if first > 1:
            cap.set(cv2.CAP_PROP_POS_FRAMES, first - 1)
        for idx in range(first, last + 1):
            ok, image = cap.read()
            if not ok:
                break
            img, _ = blur_heads(image, np.array(boxes.get(seq_of.get(idx, -1), []), np.float64).reshape(-1, 4))
            if line is not None:
                _draw_line(img, line)
            if label:
                cv2.putText(img, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
            yield img
    finally:
        cap.release()


def _write_clip(cam: Any, storage: Any, clip: Clip) -> None:
    import cv2

    check_source(cam)
    fps, _ = source_info(cam)
    writer = None
    try:
        for img in clip_frames(cam, storage, clip.line_id, clip.start_ms, clip.end_ms, label=clip.clip_id):
            if writer is None:
                h, w = img.shape[:2]
                writer = cv2.VideoWriter(clip.path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            writer.write(img)
    finally:
        if writer is not None:
            writer.release()


def _draw_line(img: np.ndarray, line: Any) -> None:
    """The counting line, and an arrow from its middle pointing the way an ``in`` crossing walks."""
    import cv2

    (ax, ay), (bx, by) = line.a, line.b
    cv2.line(img, (int(ax), int(ay)), (int(bx), int(by)), (0, 255, 255), 2)
    mx, my = (ax + bx) / 2, (ay + by) / 2
    dx, dy = bx - ax, by - ay
    norm = max(1e-9, (dx * dx + dy * dy) ** 0.5)
    # crossing from the left-hand side of A->B to its right-hand side is "in" (README, "Counting convention")
    nx, ny = -dy / norm, dx / norm
    tip = (int(mx + nx * 25), int(my + ny * 25))
    cv2.arrowedLine(img, (int(mx), int(my)), tip, (0, 255, 255), 2, tipLength=0.4)
    cv2.putText(img, "in", tip, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)


def record_audit(config: SiteConfig, storage: Any, clips: Sequence[Clip], answers: dict[str, tuple[int, int]], *,
                 auditor: str = "cli", start_ms: int | None = None, end_ms: int | None = None,
                 min_accuracy: float | None = None, now_ms: int | None = None) -> tuple[AuditSummary, str, bool]:
    """Summarise the person's ``answers`` (``{clip_id: (in, out)}``) against ``clips``; store the audit and,
    below ``min_accuracy`` (default ``audit.min_accuracy``), a ``count_accuracy`` alert.

    Returns ``(summary, audit_id, alerted)``. Every clip must be answered (else :class:`ConfigError`).
    """
    missing = sorted(c.clip_id for c in clips if c.clip_id not in answers)
    extra = sorted(set(answers) - {c.clip_id for c in clips})
    if missing or extra:
        raise ConfigError(f"answers do not match the clips: missing {missing}, unknown {extra}")
    tallies = [ClipTally(c.clip_id, c.system_in, c.system_out, *answers[c.clip_id]) for c in clips]
    summary = summarise(tallies, config.audit.confidence)
    threshold = config.audit.min_accuracy if min_accuracy is None else min_accuracy
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"the minimum accuracy must be in [0, 1], got {threshold}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    audit_id = f"audit-{now_ms}"
    cams = sorted({c.camera_id for c in clips})
    alerted = summary.accuracy < threshold
    detail = [{**asdict(c), "person_in": answers[c.clip_id][0], "person_out": answers[c.clip_id][1]} for c in clips]
    row = dict(audit_id=audit_id, ts_ms=now_ms, auditor=auditor, cameras=json.dumps(cams), start_ms=start_ms,
               end_ms=end_ms, n_clips=summary.n_clips, n_correct=summary.n_correct, system_in=summary.system_in,
               system_out=summary.system_out, person_in=summary.person_in, person_out=summary.person_out,
               accuracy=summary.accuracy, ci_low=summary.ci_low, ci_high=summary.ci_high,
               confidence=summary.confidence, count_accuracy=summary.count_accuracy, min_accuracy=threshold,
               method=summary.method, alerted=alerted, clips=json.dumps(detail))
    storage._write(lambda conn: conn.execute(sa.insert(count_audits).values(**row)))
    if alerted:
        where = cams[0] if len(cams) == 1 else config.store.id
        storage.write_records([m.Alert(
            alert_id=f"{ALERT_KIND}:{config.store.id}:{audit_id}", rule_id=ALERT_KIND, kind=ALERT_KIND,
            severity=config.audit.severity, camera_id=cams[0] if len(cams) == 1 else "", zone_id="",
            state="firing", ts_ms=now_ms, seq=0, fired_ts_ms=now_ms, value=summary.accuracy, threshold=threshold,
            message=(f"{where}: counting accuracy {summary.accuracy:.0%} ({summary.n_correct}/{summary.n_clips} clips, "
                     f"{summary.confidence:.0%} CI {summary.ci_low:.0%}-{summary.ci_high:.0%}) below "
                     f"{threshold:.0%}"))])
    return summary, audit_id, alerted


def list_audits(storage: Any, limit: int = 100) -> list[dict[str, Any]]:
    """Stored audits, newest first."""
    rows = storage._rows(sa.select(count_audits).order_by(count_audits.c.ts_ms.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]
