"""``storelens export-dataset``: a YOLO + MOT training set from a store's own cameras.

Two sources of tracks:

* a video file (:func:`export_video`): the embedded pipeline runs on it into a temporary
  SQLite history, then that history is exported as below;
* the history (:func:`export_history`): the ``frames`` table holds frame *metadata* only
  (seq, time, size, ``source_frame``), never pixels, and ``track_points`` the boxes. The
  pixels come from decoding the camera's video file again (``cameras[].source`` of the site
  config, which must be a file: a live stream cannot be rewound); frame ``source_frame``
  (1-based) of the file is the stored frame.

What is written under ``OUT``::

    images/{train,val}/<camera>_<frame:06d>.jpg   sampled frames, heads of every box blurred
    labels/{train,val}/<camera>_<frame:06d>.txt   YOLO rows "0 cx cy w h" of the confident tracks
    mot/<camera>/gt/gt.txt + seqinfo.ini          every frame of the confident tracks (MOT gt style)
    dataset.yaml                                  ultralytics format, one class: person
    README.txt                                    provenance and licence fields

``OUT`` must be new or empty (a second export into it would mix its images with the first's: the same frame in
train and val), unless ``overwrite``: then those files of a previous export are replaced, nothing else in ``OUT``
is touched. The set is written into a hidden folder in ``OUT`` first (:data:`PARTIAL_PREFIX`) and moved into
place only once complete: an error, Ctrl-C or SIGTERM leaves ``OUT`` as it was.

Only *confident* tracks are labelled (:func:`storelens.domain.dataset.confident_tracks`);
the boxes of the other tracks are filled grey (114, as YOLO's letterbox) in the images, so
an unlabelled person does not teach the model that a person is background. Faces: the head
region of every box is blurred (:func:`storelens.stages.snapshots.blur_heads`) and, with
``face_detector`` (default), every face the face detector finds too (people without a box).

Example:
    >>> from storelens.config import load_config                                   # doctest: +SKIP
    >>> r = export_video("clip.mp4", "out/", every_n=5)                             # doctest: +SKIP
    >>> r.images, r.boxes                                                           # doctest: +SKIP
    (36, 201)
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import pathlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import sqlalchemy as sa

from storelens.backends.video import is_live, open_capture, source_fps
from storelens.config import SiteConfig
from storelens.config.cameras import redact_source
from storelens.domain import dataset as ds
from storelens.domain.mot import MotBox, write_mot
from storelens.errors import ConfigError, Interrupted
from storelens.stages.snapshots import blur_faces, blur_heads, face_finder
from storelens.storage.schema import frames as frames_table

#: Grey that hides the boxes of unlabelled (not confident) tracks.
IGNORE_GREY = 114
#: What an export writes in its folder: all that ``overwrite`` replaces there.
EXPORT_ITEMS = ("images", "labels", "mot", "dataset.yaml", "README.txt")
#: Name prefix of the hidden folder an export is written into before it is moved into place (one left by a killed
#: export is removed by the next ``overwrite``).
PARTIAL_PREFIX = ".storelens-export-partial-"


@dataclass
class ExportResult:
    out_dir: str
    images: int = 0
    boxes: int = 0
    ignored_boxes: int = 0
    mot_rows: int = 0
    tracks_kept: dict[str, int] = field(default_factory=dict)
    tracks_dropped: dict[str, int] = field(default_factory=dict)
    #: ``{camera: {source_frame: [(track_id, (x1, y1, x2, y2)), ...]}}`` of the written images.
    labelled: dict[str, dict[int, list[tuple[int, tuple[float, float, float, float]]]]] = field(default_factory=dict)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _frames(storage: Any, camera_id: str, start_ms: int | None, end_ms: int | None) -> list[tuple[int, int, int]]:
    """``(seq, ts_ms, source_frame)`` of the camera's stored frames (end of stream excluded)."""
    f = frames_table.c
    stmt = sa.select(f.seq, f.ts_ms, f.source_frame).where(f.camera_id == camera_id, f.end_of_stream == sa.false())
    if start_ms is not None:
        stmt = stmt.where(f.ts_ms >= start_ms)
    if end_ms is not None:
        stmt = stmt.where(f.ts_ms < end_ms)
    return [tuple(r) for r in storage._rows(stmt.order_by(f.seq))]


def check_out(out_dir: str | pathlib.Path, overwrite: bool = False) -> pathlib.Path:
    """``out_dir`` checked before an export: new or empty, or ``overwrite`` (:class:`ConfigError` otherwise, naming
    what is there)."""
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"export folder {out} is a file")
    there = sorted(p.name for p in out.iterdir()) if out.is_dir() and not overwrite else []
    if there:
        listed = ", ".join(there[:5]) + (", ..." if len(there) > 5 else "")
        raise ConfigError(f"export folder {out} is not empty ({listed}): an export into it would mix its images "
                          f"with what is there; choose a new folder, or --overwrite to replace a previous "
                          f"export's {', '.join(EXPORT_ITEMS)} (nothing else there is touched)")
    return out


def _move_into_place(work: pathlib.Path, out: pathlib.Path) -> None:
    """The complete export in ``work`` moved to ``out``, in place of a previous export's files (:data:`EXPORT_ITEMS`,
    and folders a killed export left): these are first moved aside into ``work/.replaced``, so the swap is a few
    renames. A failure or stop during them moves everything back (``out`` as it was); once they are done, the
    replaced files are only in ``work/.replaced`` (deleted with ``work`` by the caller)."""
    old = work / ".replaced"
    old.mkdir()
    aside: list[str] = []
    moved_in: list[str] = []
    try:
        for p in out.iterdir():
            if p.name in EXPORT_ITEMS or (p.name.startswith(PARTIAL_PREFIX) and p != work):
                os.replace(p, old / p.name)
                aside.append(p.name)
        for name in EXPORT_ITEMS:
            if (work / name).exists():
                os.replace(work / name, out / name)
                moved_in.append(name)
    except BaseException:  # the previous export back in place, the new files back into work (deleted with it)
        for name in reversed(moved_in):
            with contextlib.suppress(OSError):
                os.replace(out / name, work / name)
        for name in aside:
            with contextlib.suppress(OSError):
                os.replace(old / name, out / name)
        raise


def export_history(config: SiteConfig, storage: Any, out_dir: str | pathlib.Path, *,
                   cameras: Sequence[str] | None = None, start_ms: int | None = None, end_ms: int | None = None,
                   every_n: int = 10, min_confidence: float = 0.5, min_length: int = 10, val_fraction: float = 0.2,
                   face_detector: bool = True, jpeg_quality: int = 95, provenance: str = "history",
                   licence: str = "not stated (pass --licence)", overwrite: bool = False) -> ExportResult:
    """Export the stored tracks of ``cameras`` (default all) in ``[start_ms, end_ms)`` to ``out_dir`` (new or empty,
    or ``overwrite``: a previous export's files there replaced; see the module's doc)."""
    _check_options(every_n, min_confidence, min_length, val_fraction)
    known = {c.id: c for c in config.cameras}
    cams = list(cameras) if cameras else list(known)
    unknown = sorted(set(cams) - set(known))
    if unknown:
        raise ConfigError(f"unknown camera(s) {unknown}; the config has {sorted(known)}")
    out = check_out(out_dir, overwrite)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=out))
    try:
        result = _export(config, storage, out, work, cams, start_ms, end_ms, every_n, min_confidence, min_length,
                         val_fraction, face_detector, jpeg_quality, provenance, licence)
        _move_into_place(work, out)
    except BaseException:  # an error, Ctrl-C, SIGTERM (as KeyboardInterrupt in the CLI): OUT as it was
        shutil.rmtree(work, ignore_errors=True)
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    # the new set is in place: deleting the previous one (work/.replaced) may take long on a large export
    try:
        shutil.rmtree(work, ignore_errors=True)
    except KeyboardInterrupt:
        raise Interrupted(f"the export is complete in {out}; stopped while deleting the previous export's files "
                          f"(left in {work.name}, removed by the next --overwrite)") from None
    return result


def _export(config: SiteConfig, storage: Any, out: pathlib.Path, work: pathlib.Path, cams: list[str],
            start_ms: int | None, end_ms: int | None, every_n: int, min_confidence: float, min_length: int,
            val_fraction: float, face_detector: bool, jpeg_quality: int, provenance: str,
            licence: str) -> ExportResult:
    """:func:`export_history`'s files written into ``work`` (``dataset.yaml`` names ``out``, where they go)."""
    import cv2

    known = {c.id: c for c in config.cameras}
    result = ExportResult(out_dir=str(out.resolve()))
    find_faces: Callable[[np.ndarray], np.ndarray] | None = face_finder(config) if face_detector else None
    has_val = False
    for cam_id in cams:
        source = known[cam_id].source
        if is_live(source):
            raise ConfigError(f"camera {cam_id!r}: source {redact_source(source)!r} is a live stream; "
                              "the history stores no "
                              f"pixels, so the export needs the camera's video file as its source")
        frames = _frames(storage, cam_id, start_ms, end_ms)
        if not frames:
            raise ConfigError(f"camera {cam_id!r}: no stored frames in the range")
        lo, hi = frames[0][1], frames[-1][1] + 1
        paths = storage.tracks(cam_id, lo, hi, limit_points=10_000_000)
        keep = ds.confident_tracks({p.track_id: [pt.confidence for pt in p.points] for p in paths},
                                   min_confidence, min_length)
        result.tracks_kept[cam_id] = len(keep)
        result.tracks_dropped[cam_id] = len(paths) - len(keep)
        by_seq: dict[int, list[tuple[int, tuple[float, float, float, float]]]] = {}
        for p in paths:
            for pt in p.points:
                by_seq.setdefault(pt.seq, []).append((p.track_id, tuple(pt.bbox_xyxy)))
        seq_frame = {seq: sf for seq, _, sf in frames}
        picks = [(seq, sf) for seq, _, sf in frames if ds.sampled(seq, every_n)]
        split = {sf: ds.split_of(i, len(picks), val_fraction) for i, (_, sf) in enumerate(picks)}
        want = {sf: seq for seq, sf in picks}
        cap = open_capture(source)
        name = _safe(cam_id)
        width = height = 0
        try:
            idx = 0
            last = max(want, default=0)
            while idx < last:
                ok, image = cap.read()
                if not ok:
                    break
                idx += 1
                height, width = image.shape[:2]
                if idx not in want:
                    continue
                boxes = by_seq.get(want[idx], [])
                kept = [(tid, ds.clip_box(b, width, height)) for tid, b in boxes if tid in keep]
                kept = [(tid, b) for tid, b in kept if b is not None]
                dropped = [ds.clip_box(b, width, height) for tid, b in boxes if tid not in keep]
                dropped = [b for b in dropped if b is not None]
                img = _anonymise(image, [b for _, b in kept], dropped, find_faces)
                sp = split[idx]
                has_val |= sp == "val"
                stem = f"{name}_{idx:06d}"
                (work / "images" / sp).mkdir(parents=True, exist_ok=True)
                (work / "labels" / sp).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(work / "images" / sp / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                rows = [ds.yolo_row(b, width, height) for _, b in kept]
                (work / "labels" / sp / f"{stem}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
                result.images += 1
                result.boxes += len(rows)
                result.ignored_boxes += len(dropped)
                result.labelled.setdefault(cam_id, {})[idx] = kept
        finally:
            cap.release()
        mot = [MotBox(seq_frame[pt.seq], p.track_id, pt.bbox_xyxy[0], pt.bbox_xyxy[1],
                      pt.bbox_xyxy[2] - pt.bbox_xyxy[0], pt.bbox_xyxy[3] - pt.bbox_xyxy[1], 1.0)
               for p in paths if p.track_id in keep for pt in p.points if pt.seq in seq_frame]
        seq_dir = work / "mot" / name
        (seq_dir / "gt").mkdir(parents=True, exist_ok=True)
        result.mot_rows += write_mot(seq_dir / "gt" / "gt.txt", mot)
        fps = source_fps(source)
        (seq_dir / "seqinfo.ini").write_text(
            f"[Sequence]\nname={name}\nframeRate={fps:g}\nseqLength={max(seq_frame.values())}\n"
            f"imWidth={width}\nimHeight={height}\nimExt=.jpg\n")
    (work / "dataset.yaml").write_text(ds.dataset_yaml(str(out.resolve()), has_val))
    (work / "README.txt").write_text(_readme(config, cams, result, provenance, licence, every_n, min_confidence,
                                            min_length, val_fraction, face_detector))
    return result


def _check_options(every_n: int = 10, min_confidence: float = 0.5, min_length: int = 10, val_fraction: float = 0.2,
                   **_: Any) -> None:
    """Bad options fail with a clear error before any work (:class:`ConfigError`)."""
    ds.sampled(0, every_n)
    ds.split_of(0, 1, val_fraction)
    ds.confident_tracks({}, min_confidence, min_length)


def _anonymise(image: np.ndarray, kept: list, dropped: list, find_faces) -> np.ndarray:
    """Unlabelled boxes grey (the labelled boxes' pixels restored over them), then every head and face blurred."""
    img = image.copy()
    if dropped:
        for x1, y1, x2, y2 in dropped:
            img[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = IGNORE_GREY
        for x1, y1, x2, y2 in kept:
            sl = (slice(int(y1), int(np.ceil(y2))), slice(int(x1), int(np.ceil(x2))))
            img[sl] = image[sl]
    img, _ = blur_heads(img, np.array(kept + dropped, np.float64).reshape(-1, 4))
    if find_faces is not None:
        img, _ = blur_faces(img, find_faces(image))
    return img


def _readme(config: SiteConfig, cams: Sequence[str], r: ExportResult, provenance: str, licence: str, every_n: int,
            min_confidence: float, min_length: int, val_fraction: float, face_detector: bool) -> str:
    import storelens

    det = config.detector
    sources = "\n".join(f"  {c.id}: {c.source}" for c in config.cameras if c.id in cams)
    return f"""StoreLens training export (YOLO detection + MOT tracks, class 0 = person)

created: {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}
storelens: {getattr(storelens, '__version__', 'unknown')}
store: {config.store.id}
provenance: {provenance}
cameras and sources:
{sources}
labels made by: StoreLens detect-track (detector backend {getattr(det, 'backend', type(det).__name__)}, weights
  {getattr(det, 'weights', '?')}); the labels are machine-made pseudo-labels, not checked by a person
licence of the images: {licence}
licence note: the labels derive from the detector's output; check the detector weights' licence
  (the YOLO weights in StoreLens' assets are AGPL-3.0) before redistributing the data set
personal data: the head region of every box is blurred{' and every face the face detector found' if face_detector else ''};
  the images are still footage of people in the store: keep them under the store's retention rules
selection: every {every_n}th frame; tracks with >= {min_length} points and mean confidence >= {min_confidence}
  (kept {sum(r.tracks_kept.values())}, dropped {sum(r.tracks_dropped.values())}; dropped boxes are grey);
  the last {val_fraction:.0%} of each camera's sampled frames in time is the val split
contents: {r.images} images, {r.boxes} boxes, {r.mot_rows} MOT rows (mot/<camera>/gt/gt.txt:
  frame,id,left,top,width,height,1,-1,-1,-1, frame = 1-based frame of the source video; no img1/)
"""


def export_video(config: SiteConfig, out_dir: str | pathlib.Path, **kw: Any) -> ExportResult:
    """Run the embedded pipeline on ``config`` (one video camera) into a temporary history, then export it. The
    export uses tracks only: the run has no faces stage (``faces.enabled`` of the site is off for it), so no face
    gallery is needed and the site's is neither read nor written; nor has it alert webhooks (its alerts are not
    POSTed). A run stopped before the video's end (Ctrl-C,
    SIGTERM) exports nothing: :class:`~storelens.errors.Interrupted`."""
    from storelens.runtime.embedded import EmbeddedPipeline
    from storelens.storage.history import SqlStorage

    _check_options(**kw)
    if config.faces.enabled:
        config = config.model_copy(update={"faces": config.faces.model_copy(update={"enabled": False})})
    if config.alerts.webhooks:  # a re-run's alerts must not reach the production webhooks (nor wait in a temp DB)
        config = config.model_copy(update={"alerts": config.alerts.model_copy(update={"webhooks": []})})
    check_out(out_dir, kw.get("overwrite", False))  # before the pipeline runs
    with tempfile.TemporaryDirectory(prefix="storelens-export-") as tmp:
        storage = SqlStorage(str(pathlib.Path(tmp) / "history.sqlite"))
        try:
            run = EmbeddedPipeline(config, storage=storage).run()
            if run.interrupted:  # its tracks end early: not a set of the video
                raise Interrupted(f"the pipeline stopped after {run.frames} frames: nothing exported")
            kw.setdefault("provenance", "video " + ", ".join(c.source for c in config.cameras))
            return export_history(config, storage, out_dir, **kw)
        finally:
            storage.close()
