"""``storelens`` command line: demo, count, zones, track, replay.

Every error from bad input ends with one ``error: ...`` line on stderr and
exit code 2 (1 for unexpected failures), never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import sys
import time
from typing import Callable, Sequence

from storelens.errors import ConfigError, Interrupted, StoreLensError

EXAMPLE_CONFIG = pathlib.Path(__file__).with_name("examples") / "demo.yaml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _checked_points(points: list[list[float]], option: str, text: str) -> list[list[float]]:
    """``points`` of ``--line``/``--zone`` validated as a site file's (``Point`` of the config: finite numbers;
    ``float()`` takes "nan" and "inf"), one rule for both; :class:`ConfigError` names the option."""
    from pydantic import TypeAdapter, ValidationError

    from storelens.config.site import Point

    try:
        TypeAdapter(list[Point]).validate_python(points)
    except ValidationError as err:
        why = {e["type"]: e["msg"] for e in err.errors()}
        said = ("the coordinates must be finite numbers (no nan or inf)" if set(why) == {"finite_number"}
                else "; ".join(why.values()))
        raise ConfigError(f"bad {option} {text!r}: {said}") from None
    return points


def parse_line(text: str, index: int) -> dict:
    """``[ID=]X1,Y1,X2,Y2`` -> line config dict (source pixel coordinates)."""
    line_id = f"line-{index}"
    spec = text
    if "=" in text:
        line_id, spec = text.split("=", 1)
        if not re.fullmatch(r"[A-Za-z0-9._-]+", line_id):
            raise ConfigError(f"bad --line {text!r}: the id {line_id!r} may only use letters, digits, '.', '_' and '-'")
    parts = spec.split(",")
    try:
        x1, y1, x2, y2 = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"bad --line {text!r}: expected X1,Y1,X2,Y2 (four numbers, source pixels)") from None
    a, b = _checked_points([[x1, y1], [x2, y2]], "--line", text)
    if a == b:
        raise ConfigError(f"bad --line {text!r}: both ends are the same point")
    return {"id": line_id, "a": a, "b": b}


#: The options whose value is a list of coordinates, which may start with a negative number.
COORDINATE_OPTIONS = ("--line", "--zone")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--line -50,100,300,100`` written as ``--line=-50,100,300,100`` (also ``--zone``): argparse
    takes a value starting with ``-`` for an option (``expected one argument``) unless it is one number alone.

    Example:
        >>> join_negative_values(["count", "v.mp4", "--line", "-50,100,300,100", "--line", "0,1,2,3"])
        ['count', 'v.mp4', '--line=-50,100,300,100', '--line', '0,1,2,3']
    """
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--":  # what follows is positional
            return [*out, arg, *it]
        if arg in COORDINATE_OPTIONS:
            value = next(it, None)
            if value is not None and re.match(r"-\.?\d", value):
                arg = f"{arg}={value}"
            elif value is not None:
                out.append(arg)
                arg = value
        out.append(arg)
    return out


def parse_zone(text: str, index: int) -> dict:
    """``[ID=]X1,Y1,X2,Y2,X3,Y3[,...]`` -> zone config dict (an ``area`` polygon in source pixels)."""
    zone_id, spec = f"zone-{index}", text
    if "=" in text:
        zone_id, spec = text.split("=", 1)
        if not re.fullmatch(r"[A-Za-z0-9._-]+", zone_id):
            raise ConfigError(f"bad --zone {text!r}: the id {zone_id!r} may only use letters, digits, '.', '_' and '-'")
    try:
        values = [float(p) for p in spec.split(",")]
    except ValueError:
        raise ConfigError(f"bad --zone {text!r}: expected X1,Y1,X2,Y2,X3,Y3[,...] (numbers, source pixels)") from None
    if len(values) < 6 or len(values) % 2:
        raise ConfigError(f"bad --zone {text!r}: expected an even count of at least 6 numbers (3+ vertices)")
    return {"id": zone_id, "polygon": _checked_points([values[i:i + 2] for i in range(0, len(values), 2)], "--zone",
                                                      text)}


def _base_config(path: str | None) -> dict:
    from storelens.config.site import read_yaml

    if path is None:
        return {"store": {"id": "cli"}}
    p = pathlib.Path(path)
    raw = read_yaml(p)
    if not isinstance(raw, dict):
        raise ConfigError(f"config error in {p}: expected a mapping at the top level")
    return raw


def single_source_config(source: str, lines: Sequence[str], config_path: str | None, zones: Sequence[str] = ()):
    """A site config for one source, every frame, full resolution (CLI count/zones/track/heatmap/export-dataset).

    ``source`` is the command line's: a relative path is relative to the working directory (as ``demo --source``),
    not to the ``--config`` file's folder. The site file's cameras are replaced by the one camera ``cam``; what
    names its cameras goes with them: ``store.entrance_lines``, ``journeys.links`` and the ``alerts`` section (a run
    on a clip fires no webhook of the store either).
    """
    from storelens.config import parse_config
    from storelens.config.site import resolve_source

    raw = _base_config(config_path)
    raw = {k: v for k, v in raw.items() if k not in ("cameras", "alerts")}
    store = raw.setdefault("store", {"id": "cli"})
    if isinstance(store, dict):
        raw["store"] = {k: v for k, v in store.items() if k != "entrance_lines"}
    if isinstance(raw.get("journeys"), dict):
        raw["journeys"] = {k: v for k, v in raw["journeys"].items() if k != "links"}
    raw["cameras"] = [{"id": "cam", "source": resolve_source(source, pathlib.Path.cwd()),
                       "lines": [parse_line(t, i + 1) for i, t in enumerate(lines)],
                       "zones": [parse_zone(t, i + 1) for i, t in enumerate(zones)]}]
    base = pathlib.Path(config_path).parent.resolve() if config_path else pathlib.Path.cwd()
    return parse_config(raw, origin=config_path or "command line", base=base)


def _progress(total: int | None, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[fps]:.1f} fps"), transient=False, console=_stderr_console())
    task = prog.add_task(label, total=total, fps=0.0)
    return prog, task


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM (Kubernetes, ``kill``, the demo's parent) raises ``KeyboardInterrupt`` as Ctrl-C
    does, so an embedded run ends with :meth:`EmbeddedPipeline.run`'s clean stop (each stage after the message in
    hand, webhooks flushed, what was counted returned) instead of the process being killed mid-write. The previous
    handler comes back after the block. Off the main thread (where signals cannot be handled) it does nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum, _frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _expected_frames(config, storage=None) -> int | None:
    """Frames a run of ``config`` processes: those its cameras' sampling keeps of the video files' frame counts
    (``None``: a live camera, or a count the file does not give)."""
    from storelens.backends.video import FrameSampler, frame_count, is_live, source_fps
    from storelens.runtime.embedded import site_in_force

    total: int | None = 0
    for cam in site_in_force(config, storage)[1]:  # the newest site version's (a removed camera's file may be gone)
        n = None if is_live(cam.source) else frame_count(cam.source)
        if n is None:
            return None
        sampler = FrameSampler(source_fps(cam.source), cam.target_fps)
        total += sum(1 for i in range(n) if sampler.keep(i))
    return total


def _interrupted_note(config, result) -> str | None:
    """``results cover N of M frames`` when the run of ``config`` was stopped (Ctrl-C, SIGTERM:
    ``result.interrupted``), else ``None``. A stop is how a run of live cameras ends: ``None`` then too (its results
    are written under their names, exit 0), after a short ``stopped: ...`` note on stderr."""
    from storelens.backends.video import is_live

    if not result.interrupted:
        return None
    if config.cameras and all(is_live(cam.source) for cam in config.cameras):
        print(f"stopped: the live source's results cover the {result.frames} frames until the stop", file=sys.stderr)
        return None
    try:
        total = _expected_frames(config)
    except StoreLensError:  # the file went away meanwhile
        total = None
    return f"results cover {result.frames}" + (f" of {total}" if total else "") + " frames"


def _partial_path(path: str | pathlib.Path) -> pathlib.Path:
    """Where a stopped run's output goes instead of ``path``: ``t.txt`` -> ``t.partial.txt`` (never taken for a
    complete run's file)."""
    p = pathlib.Path(path)
    return p.with_name(f"{p.stem}.partial{p.suffix}")


def _write_file(path: str | pathlib.Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: into a temporary file beside it, renamed over it at the end
    (a Ctrl-C or SIGTERM while writing leaves the old file or none, not half of one). A path that is not a regular
    file (``/dev/stdout``, a symlink) is written in place."""
    path = pathlib.Path(path)
    raw = data.encode() if isinstance(data, str) else data
    if path.is_symlink() or (path.exists() and not path.is_file()):
        path.write_bytes(raw)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with _sigterm_as_interrupt():
            try:
                tmp.write_bytes(raw)
            except PermissionError:  # a folder that takes no new file, its file writable (writable_output)
                path.write_bytes(raw)
                return
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _run(config, storage=None, on_tracked=None, show_progress: bool = True, scratch: bool = False):
    """Run the embedded pipeline on ``config``. The site's face gallery (customers) is used only with the site's
    history (``storage``, not ``scratch``: the demo); a clip's run without it (count, zones, track, heatmap's
    throw-away store) matches faces in a gallery in memory and leaves the site's gallery as it is. A video file
    that ends before its announced frame count is told on stderr (``warning: ...``). Ctrl-C or SIGTERM stops the run
    cleanly: the result covers the frames processed until then and says so (``result.interrupted``: the commands
    then print ``interrupted: ...`` and exit 130, :func:`_interrupted_note`)."""
    import time

    from storelens.config.cameras import redact_source
    from storelens.runtime.embedded import EmbeddedPipeline

    total = _expected_frames(config, storage)
    gallery = staff_faces = None
    history = storage is not None and not scratch
    if config.faces.enabled and not history:  # not the site's customers: nothing written to (or made at) its gallery
        from storelens.backends.face_index import FaceGallery

        gallery = FaceGallery(config.faces.gallery)
    elif config.faces.enabled:
        from storelens.storage import open_gallery

        gallery = open_gallery(config)
        if config.staff.faces is not None and config.staff.faces.enabled:
            from storelens.storage.staff_faces import StaffFaceSource

            staff_faces = StaffFaceSource(storage)  # the opt-in staff face gallery (storelens staff enroll)
    elif history:  # no faces stage: a gallery left by earlier runs is still purged (retention_days)
        from storelens.storage.gallery import open_gallery_store_to_purge

        gallery = open_gallery_store_to_purge(config, storage)
    short: list[tuple[str, int, int]] = []
    pipe = EmbeddedPipeline(config, storage=storage, on_tracked=on_tracked, gallery=gallery, staff_faces=staff_faces,
                            on_short_file=lambda cam, read, count: short.append((redact_source(cam.source), read,
                                                                                 count)))
    if not show_progress:
        with _sigterm_as_interrupt(), _short_videos_told(short):
            return pipe.run()
    prog, task = _progress(total, "processing")
    t0 = [None]

    def tick(_cam: str) -> None:
        if t0[0] is None:
            t0[0] = time.perf_counter()
        done = pipe.result.frames
        dt = time.perf_counter() - t0[0]
        prog.update(task, completed=done, fps=(done - 1) / dt if dt > 0 else 0.0)

    pipe.on_frame_done = tick
    with prog, _sigterm_as_interrupt(), _short_videos_told(short):
        return pipe.run()


@contextlib.contextmanager
def _short_videos_told(short: list[tuple[str, int, int]]):
    """Within the block, the pipeline appends ``(source, frames_read, frame_count)`` to ``short`` for each video file
    that ends before its announced frame count (a truncated or damaged file: ``EmbeddedPipeline(on_short_file=)``,
    which then logs nothing); after it, each is told once on stderr, whatever the log level: the results cover only
    the frames read."""
    try:
        yield
    finally:
        for source, read, count in short:
            print(f"warning: {source}: only {read} of its {count} frames were read (the file is truncated or "
                  f"damaged): the results cover those frames", file=sys.stderr)


def cmd_count(args) -> int:
    config = single_source_config(args.source, args.line, args.config)
    result = _run(config, show_progress=not args.json and sys.stderr.isatty())
    note = _interrupted_note(config, result)  # what was counted is printed, then the note; exit 130
    counts = result.line_counts["cam"]
    if args.json:
        doc = {"lines": [{"id": lid, "in": c["in"], "out": c["out"]} for lid, c in counts.items()],
               "frames": result.frames} | ({"interrupted": True} if note else {})
        print(json.dumps(doc | ({"faces": result.faces} if result.faces else {})))  # the faces summary inside
        return _stopped(note)
    else:
        from rich.table import Table

        table = Table(title=f"{_shown(args.source)}: {result.frames} frames, {result.fps:.1f} fps")
        for col in ("line", "in", "out"):
            table.add_column(col)
        for lid, c in counts.items():
            table.add_row(lid, str(c["in"]), str(c["out"]))
        from rich.console import Console

        Console().print(table)
    _print_faces(result)
    return _stopped(note)


def _shown(source: str) -> str:
    """A command's SOURCE as its output shows it: a camera URL's user, password and credential-like parameters
    removed (:func:`~storelens.config.cameras.redact_source`), as in the logs."""
    from storelens.config.cameras import redact_source

    return redact_source(source)


def _stopped(note: str | None, what: str = "") -> int:
    """0 after a complete run (``note`` None); else ``interrupted: <note><what>`` on stderr and 130."""
    if note is None:
        return 0
    print(f"interrupted: {note}{what}", file=sys.stderr)
    return 130


def zone_summary(config, frames: Sequence, n_frames: int) -> list[dict]:
    """Per zone of the one camera: visits, occupancy per source frame (anchors inside, stationary
    tracks excluded) and dwell of the ended visits (``storelens zones --json``)."""
    import numpy as np

    from storelens.contract import messages as m
    from storelens.domain.geometry import points_in_polygon
    from storelens.domain.zones import zone_anchors
    from storelens.stages.analytics import derive

    cam = config.cameras[0]
    eos = m.TrackedFrame(camera_id=cam.id, seq=(frames[-1].seq + 1) if frames else 0,
                         ts_ms=frames[-1].ts_ms if frames else 0, end_of_stream=True)
    events = [r for r in derive(config, [*frames, eos]) if isinstance(r, m.ZoneEvent)]
    out = []
    for z in cam.zones:
        if z.kind == "exclude":
            continue
        rules = z.rules(config.zones)
        poly = np.asarray(z.polygon, dtype=np.float64)
        per_frame = [0] * n_frames
        for tf in frames:
            boxes = np.array([[t.bbox_xyxy.x1, t.bbox_xyxy.y1, t.bbox_xyxy.x2, t.bbox_xyxy.y2]
                              for t in tf.tracks if not t.stationary], np.float64).reshape(-1, 4)
            i = (tf.source_frame or tf.seq + 1) - 1
            if 0 <= i < n_frames:
                per_frame[i] = int(points_in_polygon(zone_anchors(boxes, rules.anchor), poly).sum()) if len(boxes) else 0
        dwell = [e.dwell_ms / 1000 for e in events if e.zone_id == z.id and e.kind == m.ZONE_EVENT_EXIT]
        med, p90 = (float(v) for v in np.percentile(dwell, [50, 90])) if dwell else (None, None)
        out.append({"id": z.id, "visits": sum(e.zone_id == z.id and e.kind == m.ZONE_EVENT_ENTER for e in events),
                    "max_occupancy": max(per_frame, default=0),
                    "mean_occupancy": float(np.mean(per_frame)) if per_frame else 0.0,
                    "dwell_s": {"median": med, "p90": p90, "total": float(sum(dwell))},
                    "occupancy_per_frame": per_frame})
    return out


def cmd_zones(args) -> int:
    config = single_source_config(args.source, [], args.config, zones=args.zone)
    frames: list = []
    result = _run(config, on_tracked=frames.append, show_progress=not args.json and sys.stderr.isatty())
    note = _interrupted_note(config, result)  # what was counted is printed, then the note; exit 130
    n = max([tf.source_frame or tf.seq + 1 for tf in frames], default=0)
    zones = zone_summary(config, frames, n)
    if args.json:
        print(json.dumps({"frames": result.frames, "fps": round(result.fps, 2), "zones": zones}
                         | ({"interrupted": True} if note else {})))
        return _stopped(note)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{_shown(args.source)}: {result.frames} frames, {result.fps:.1f} fps")
    for col in ("zone", "visits", "max", "mean", "dwell median s", "dwell p90 s", "dwell total s"):
        table.add_column(col)
    for z in zones:
        d = z["dwell_s"]
        fmt = (lambda v: "-" if v is None else f"{v:.1f}")
        table.add_row(z["id"], str(z["visits"]), str(z["max_occupancy"]), f"{z['mean_occupancy']:.2f}",
                      fmt(d["median"]), fmt(d["p90"]), fmt(d["total"]))
    Console().print(table)
    return _stopped(note)


def cmd_replay(args) -> int:
    from storelens.storage import open_storage
    from storelens.storage.replay import replay

    if site_config_path(args.config) is None:  # the bundled example's lines would overwrite the derived rows
        raise ConfigError("replay needs the site whose analytics settings re-derive the history: give --config FILE "
                          "or set $STORELENS_CONFIG (neither is set; the bundled example's cameras, lines and zones "
                          "would replace the stored crossings, zones and heatmaps)")
    config = _history_config(args)  # stored track points: no video
    if args.from_ms is not None and args.to_ms is not None and args.to_ms <= args.from_ms:
        raise ConfigError(f"--to ({args.to_ms}) must be greater than --from ({args.from_ms})")
    cams = args.camera or None
    storage = open_storage(config.storage)
    try:
        # the lines and zones in force, as a rederive=true edit's; what of --config differs is warned of
        config, _ = _site_in_force(config, storage, site_file=args.config)
        unknown = sorted(set(cams or []) - {c.id for c in config.cameras})
        if unknown:
            raise ConfigError(f"unknown camera(s) {unknown}; the config has {[c.id for c in config.cameras]}")
        results = replay(config, storage, args.from_ms, args.to_ms, cams)
    finally:
        storage.close()
    if args.json:
        print(json.dumps({"cameras": [r.__dict__ for r in results]}))
        return 0
    for r in results:
        made = ", ".join(f"{n} {k}" for k, n in sorted(r.counts.items())) or "nothing"
        stopped = ("" if r.stopped_at_ms is None else
                   f"; no frame since {r.stopped_at_ms}: camera stopped, its open rows closed at that frame")
        print(f"{r.camera_id}: {r.frames} frames in [{r.start_ms}, {r.end_ms}) re-derived: {made}; "
              f"{r.deleted} old rows replaced{stopped}")
    return 0


def cmd_pos_import(args) -> int:
    """``storelens pos import FILE.csv``: store the good rows (idempotent), report the bad ones; exit 1 if any."""
    from storelens.domain.pos import read_csv
    from storelens.storage import open_storage
    from storelens.storage.business import import_transactions

    path = pathlib.Path(args.file)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    config = _history_config(args, create=True)  # sales may come before the first run
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            items, errors = read_csv(f, config.store.id, args.currency)
    except UnicodeDecodeError:
        data, line = path.read_bytes(), "?"
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 (line {line}): save the CSV as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
                          ) from None
    for e in errors:
        print(f"{path}: {e}", file=sys.stderr)
    from storelens.runtime.rollup import republish_advice
    from storelens.storage.rollup import kpi_now_ms

    storage = open_storage(config.storage)
    try:  # one write: a transaction id given twice in the file differently is a conflict wherever the copies are
        r = import_transactions(storage, items, replace=args.replace, actor="cli")  # a replace is audited
        # replaced sales before the KPI look-back: the chain gets their hours only from a wider `kpis publish`
        late = republish_advice(config, r.replaced_ts_ms, kpi_now_ms(config, storage)) if r.replaced_ts_ms else None
    finally:
        storage.close()
    if late is not None:
        print(f"{path}: warning: {late.message}", file=sys.stderr)
    hint = "" if args.replace else " (--replace stores the file's row in place of the stored one)"
    for tid in r.conflicts:
        print(f"{path}: transaction_id {tid}: conflict: its time, amount, currency, register or items differ from "
              f"the stored transaction's or between its rows in the file; not imported{hint}", file=sys.stderr)
    clash = set(r.conflicts)
    bad = len(errors) + sum(1 for x in items if x.transaction_id in clash)
    result = {"rows": len(items) + len(errors), "new": r.new, "duplicates": r.duplicates, "bad": bad,
              "conflicts": len(r.conflicts), "replaced": r.replaced}
    print(json.dumps(result) if args.json else
          f"{path}: {r.new} new transactions, {r.duplicates} duplicates, {bad} bad rows"
          + (f" ({len(r.conflicts)} transaction ids in conflict)" if r.conflicts else "")
          + (f", {r.replaced} replaced" if r.replaced else ""))
    return 1 if bad else 0


def mot_rows(tf) -> list[str]:
    """MOTChallenge rows ``frame,id,left,top,width,height,conf,-1,-1,-1`` of a TrackedFrame."""
    rows = []
    for t in tf.tracks:
        b = t.bbox_xyxy
        rows.append(f"{tf.source_frame},{t.track_id},{b.x1:.2f},{b.y1:.2f},{b.x2 - b.x1:.2f},{b.y2 - b.y1:.2f},"
                     f"{t.confidence:.4f},-1,-1,-1")
    return rows


def writable_output(path: str, flag: str) -> pathlib.Path:
    """``path`` checked before a run that writes it at its end: its folder exists and a file can be written
    there (a folder, ``/proc/x`` or ``a_file/x.txt`` would lose the whole run); an existing file is kept as it is,
    a new one is not left behind. :class:`ConfigError` names the flag."""
    out = pathlib.Path(path)
    if out.parent and not out.parent.exists():
        raise ConfigError(f"{flag} {path}: output folder does not exist: {out.parent}")
    existed = out.exists() or out.is_symlink()
    try:
        with out.open("ab"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write this file: {exc.strerror or exc}") from None
    if not existed:
        out.unlink(missing_ok=True)
    return out


def writable_folder(path: str, flag: str) -> pathlib.Path:
    """``path`` checked before a command that writes files into it (made with its parents when missing): not a
    file, and a folder can be made and written there; what the check makes is removed again. :class:`ConfigError`
    names the flag."""
    import tempfile

    out = pathlib.Path(path)
    missing, there = [], out
    while not (there.exists() or there.is_symlink()) and there != there.parent:
        missing.append(there)
        there = there.parent
    if not there.is_dir():
        raise ConfigError(f"{flag} {path}: not a folder ({there} is a file)")
    try:
        for d in reversed(missing):
            d.mkdir()
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write files there: {exc.strerror or exc}") from None
    finally:
        for d in missing:  # the deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
    return out


def cmd_track(args) -> int:
    out = writable_output(args.mot_out, "--mot-out")
    config = single_source_config(args.source, [], args.config)
    rows: list[str] = []
    result = _run(config, on_tracked=lambda tf: rows.extend(mot_rows(tf)), show_progress=sys.stderr.isatty())
    text = "\n".join(rows) + ("\n" if rows else "")
    note = _interrupted_note(config, result)
    if note is not None:  # not under --mot-out's name: an evaluator would score it as the whole video's
        return _stopped(note, _keep_partial({out: text}, f"the {len(rows)} boxes so far") if result.frames
                        else f"; nothing written ({out})")
    _write_file(out, text)
    print(f"wrote {len(rows)} boxes of {result.frames} frames to {out}")
    return 0


def _keep_partial(files: dict, what: str) -> str:
    """Write a stopped run's outputs (``{path: data}``) under their partial names (:func:`_partial_path`); the end
    of the ``interrupted: ...`` note saying where (or that they could not be written)."""
    done = []
    for path, data in files.items():
        partial = _partial_path(path)
        try:
            _write_file(partial, data)
        except OSError as exc:
            return f"; {what} could not be written to {partial}: {exc.strerror or exc} ({path} not written)"
        done.append((partial, path))
    return (f"; {what} written to {', '.join(str(p) for p, _ in done)} "
            f"({', '.join(str(p) for _, p in done)} not written)")


def cmd_kpis_publish(args) -> int:
    """``storelens kpis publish``: the store's KPI hours for the chain roll-up (Kafka ``store-kpis``, or ``--local``)."""
    from google.protobuf.json_format import MessageToDict
    from pydantic import ValidationError

    from storelens.contract import topics
    from storelens.stages.rollup import ChainRollupStage
    from storelens.storage import open_storage
    from storelens.storage.rollup import kpi_publisher

    config = _history_config(args)
    rollup = {"enabled": True} | ({"lookback_h": args.lookback_h} if args.lookback_h is not None else {})
    try:  # validated as rollup.lookback_h in a site file (model_copy would take -5, 0 or nan)
        rollup_config = type(config.rollup).model_validate({**config.rollup.model_dump(), **rollup})
    except ValidationError as err:
        raise ConfigError("; ".join(f"--lookback-h {args.lookback_h}: {e['msg']} (rollup.lookback_h)"
                                    for e in err.errors())) from None
    config = config.model_copy(update={"rollup": rollup_config})
    storage = open_storage(config.storage)
    sent: list = []
    try:
        if args.json:
            publish = sent.extend
        elif args.local:  # the chain's own stage, writing into this store's roll-up tables
            stage = ChainRollupStage(config)

            def publish(items) -> None:
                storage.write_records([r for _, h in items for r in stage.handle(topics.STORE_KPIS, h).records])
                sent.extend(items)
        else:
            from storelens.runtime.workers import TopicPublisher

            kafka = TopicPublisher(config, topics.STORE_KPIS)

            def publish(items) -> None:
                kafka.publish(items)
                sent.extend(items)
        kpi_publisher(config, storage, publish).run()
    finally:
        storage.close()
    if args.json:
        print(json.dumps({"hours": [MessageToDict(h, preserving_proto_field_name=True) for _, h in sent]}, indent=1))
    else:
        where = "the local roll-up tables" if args.local else topics.topic_name(topics.STORE_KPIS,
                                                                                 config.kafka.topic_prefix)
        from storelens.contract.messages import window_only

        n = sum(not window_only(h) for _, h in sent)
        empty = " (its window has no hour: the window alone)" if n < len(sent) else ""
        print(f"{n} hour(s) of store {config.store.id!r} published to {where}{empty}")
    return 0


def site_config_path(path: str | None) -> str | None:
    """The site file of a command's ``--config`` ``path``: it, else ``$STORELENS_CONFIG`` (set in the service
    images: ``kubectl exec ... storelens users ...`` uses the pod's site), else ``None`` (the bundled example)."""
    return path or os.environ.get("STORELENS_CONFIG") or None


def load_site(path: str | None, open_cameras: bool = True):
    """The site file ``path`` (relative paths in it relative to its folder), else ``$STORELENS_CONFIG``'s
    (:func:`site_config_path`), else the bundled example, whose relative ``storage.path`` (``storelens-demo.db``) is
    the working directory's. ``open_cameras=False``: for a command that never opens the cameras, whose ``${VAR}``s
    (e.g. ``${CAM_PASSWORD}``) then need not be set (:func:`~storelens.config.site.parse_config`)."""
    from storelens.config import load_config

    path = site_config_path(path)
    if path is not None and path == os.environ.get("STORELENS_CONFIG") and not pathlib.Path(path).is_file():
        raise ConfigError(f"config file not found: {path} ($STORELENS_CONFIG)")
    base = None if path else pathlib.Path.cwd()
    return load_config(path or EXAMPLE_CONFIG, base=base, open_cameras=open_cameras)


def _history_config(args, create: bool = False):
    """The site config of ``--config`` with ``--db`` (a SQLite file) as its history store; the cameras' ``${VAR}``s
    expanded only for a command that opens them (``args.opens_cameras``, declared with the command: :func:`command`;
    see :func:`load_site`).

    The commands that read or change an existing history refuse a SQLite file that does not exist (a typo in
    ``--db`` would otherwise be a new, empty database: no rows, or an admin nobody signs in with).
    ``create``: the commands that set a store up (``users create-admin``, ``staff enroll``, ``pos import``,
    ``site import``) create it, and say so on stderr."""
    args.config = site_config_path(args.config)  # what the messages name as the site file
    config = load_site(args.config, open_cameras=args.opens_cameras)
    if args.db:
        config = _with_db(config, args.db)
    if _new_sqlite_file(config) is not None:
        if not create:
            where = "--db" if args.db else "storage.path"
            raise ConfigError(f"no history database at {config.storage.path} ({where}); give an existing one with "
                              f"--db, or run the pipeline first (`storelens demo [--config FILE]`); `users "
                              f"create-admin`, `site import`, `staff enroll` and `pos import` create a new one")
        print(f"note: creating a new history database at {config.storage.path}", file=sys.stderr)
    return config


def _with_db(config, db: str):
    """``config`` with the SQLite file ``db`` (``--db``) as its history, whatever the site's storage, and the face
    gallery beside it (``<db>.gallery.db``): not the site's ``faces.reid.sqlite_path`` (its customers)."""
    return config.model_copy(update={
        "storage": config.storage.model_copy(update={"backend": "sqlite", "path": db}),
        "faces": config.faces.model_copy(update={"reid": config.faces.reid.model_copy(update={"sqlite_path": None})})})


def _new_sqlite_file(config) -> pathlib.Path | None:
    """The SQLite file of ``config``'s history when it does not exist yet (opening the store creates it)."""
    path = config.storage.path
    if config.storage.backend != "sqlite" or path == ":memory:" or path.startswith("file:"):
        return None
    return None if pathlib.Path(path).exists() else pathlib.Path(path)


def _site_in_force(config, storage, say: bool = True, site_file: str | None = None):
    """``config`` with the newest site version of ``storage`` in force (its cameras, lines, zones and alert rules:
    the version wins over the site file, as in the API and the pipeline) and that version (0: none); ``say``: a
    note on stderr names it (``replay``, ``audit``, ``export-dataset --from-db``), and a warning names what of the
    site file (``site_file``, ``--config``) differs from it and is not used
    (:func:`~storelens.config.site.site_file_override`)."""
    from storelens.config import with_site_update
    from storelens.config.site import site_file_override
    from storelens.storage import site as sq

    update = sq.site_update(storage, config.store.id)
    if update is None:
        return config, 0
    if say:
        print(f"note: site version {update.version} in force: its cameras, lines, zones and alert rules, not the "
              f"site file's", file=sys.stderr)
        if override := site_file_override(config, update):
            print(f"warning: {site_file or 'the bundled example site'}: {override} (this command uses the "
                  f"version's too: import the file first to use its)", file=sys.stderr)
    return with_site_update(config, update), update.version


def cmd_export_dataset(args) -> int:
    """``storelens export-dataset SOURCE|--from-db``: YOLO images + labels and MOT tracks (issue 11 item 8)."""
    from storelens.storage.dataset import export_history, export_video

    kw = dict(every_n=args.every, min_confidence=args.min_confidence, min_length=args.min_length,
              val_fraction=args.val_fraction, face_detector=not args.no_face_detector, licence=args.licence,
              overwrite=args.overwrite)
    if args.provenance:
        kw["provenance"] = args.provenance
    if (args.source is None) == (not args.from_db):
        raise ConfigError("give either SOURCE (a video file) or --from-db (stored tracks + the cameras' video files)")
    writable_folder(args.out, "--out")  # before the pipeline runs on SOURCE
    try:  # a stop leaves --out as it was (the set is moved into place only once complete)
        with _sigterm_as_interrupt():
            if args.source is not None:
                config = single_source_config(args.source, [], args.config)
                result = export_video(config, args.out, **kw)
            else:
                from storelens.storage import open_storage

                config = _history_config(args)
                storage = open_storage(config.storage)
                try:
                    config, _ = _site_in_force(config, storage, site_file=args.config)
                    result = export_history(config, storage, args.out, cameras=args.camera or None,
                                            start_ms=args.from_ms, end_ms=args.to_ms, **kw)
                finally:
                    storage.close()
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(f"nothing exported ({args.out} as it was)") from None
    summary = {"out": result.out_dir, "images": result.images, "boxes": result.boxes,
               "ignored_boxes": result.ignored_boxes, "mot_rows": result.mot_rows,
               "tracks_kept": result.tracks_kept, "tracks_dropped": result.tracks_dropped}
    print(json.dumps(summary) if args.json else
          f"wrote {result.images} images, {result.boxes} boxes, {result.mot_rows} MOT rows to {result.out_dir}")
    return 0


def cmd_audit(args) -> int:
    """``storelens audit``: clips around sampled crossings, a person's tally, accuracy + alert (issue 11 item 9)."""
    from storelens.domain.audit import parse_answers
    from storelens.storage import open_storage
    from storelens.storage.audit import record_audit, sample_clips

    config = _history_config(args)
    if args.from_ms is not None and args.to_ms is not None and args.to_ms <= args.from_ms:
        raise ConfigError(f"--to ({args.to_ms}) must be greater than --from ({args.from_ms})")
    writable_folder(args.out, "--out")  # before clips are cut (an existing file, /proc/x)
    answers = None
    if args.answers:
        path = pathlib.Path(args.answers)
        if not path.is_file():
            raise ConfigError(f"no such file: {path}")
        from storelens.config.site import read_utf8

        answers = parse_answers(read_utf8(path, "--answers {path}: not UTF-8 (line {line}): save the CSV as UTF-8",
                                          encoding="utf-8-sig"))
    storage = open_storage(config.storage)
    try:
        config, _ = _site_in_force(config, storage, site_file=args.config)
        seed = args.seed
        if answers is None and seed is None:  # a seed to name: the same clips again, for --answers
            import secrets

            seed = secrets.randbelow(1_000_000)
        clips = sample_clips(config, storage, args.out, n=args.clips, start_ms=args.from_ms, end_ms=args.to_ms,
                             cameras=args.camera or None, seed=seed)
        if answers is None:
            answers = _prompt_tally(clips, pathlib.Path(args.out) / "answers.csv", seed)
        summary, audit_id, alerted = record_audit(config, storage, clips, answers, auditor=args.auditor,
                                                  start_ms=args.from_ms, end_ms=args.to_ms,
                                                  min_accuracy=args.min_accuracy)
    finally:
        storage.close()
    doc = {"audit_id": audit_id, "alerted": alerted, **summary.__dict__, "clips_dir": str(pathlib.Path(args.out))}
    print(json.dumps(doc) if args.json else
          f"{audit_id}: {summary.n_correct}/{summary.n_clips} clips exact, accuracy {summary.accuracy:.1%} "
          f"({summary.confidence:.0%} Wilson interval {summary.ci_low:.1%}-{summary.ci_high:.1%}), count accuracy "
          f"{summary.count_accuracy:.1%}; system {summary.system_in} in / {summary.system_out} out, person "
          f"{summary.person_in} / {summary.person_out}" + ("; ALERT count_accuracy raised" if alerted else ""))
    return 0


def _prompt_tally(clips, path: pathlib.Path, seed: int) -> dict[str, tuple[int, int]]:
    """The person's tally of ``clips`` typed at a prompt, each answer written to ``path`` (CSV ``clip_id,in,out``,
    what ``--answers`` reads) as soon as it is typed: an error later (a stopped audit, the database) loses none."""
    import csv

    print(f"note: each answer is written to {path} as it is typed; to record them again: --answers {path} --seed "
          f"{seed} (with the same --clips, --camera, --from and --to, and no new crossings in that range)",
          file=sys.stderr)
    answers: dict[str, tuple[int, int]] = {}
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["clip_id", "in", "out"])
        f.flush()
        for c in clips:
            while True:
                try:
                    text = input(f"{c.clip_id} {c.path} (camera {c.camera_id}, line {c.line_id}): "
                                 f"people in and out, e.g. '1 0'> ")
                except EOFError:
                    raise ConfigError(f"no answer for clip {c.clip_id} (end of input; the {len(answers)} answers "
                                      f"before it are in {path}); give --answers FILE.csv for a non-interactive "
                                      f"audit") from None
                except KeyboardInterrupt:
                    raise Interrupted(f"{len(answers)} of {len(clips)} clips tallied, their answers in {path} "
                                      f"(nothing stored)") from None
                parts = text.replace(",", " ").split()
                if len(parts) == 2 and all(p.isdigit() for p in parts):
                    answers[c.clip_id] = (int(parts[0]), int(parts[1]))
                    w.writerow([c.clip_id, *answers[c.clip_id]])
                    f.flush()
                    break
                print("  type two whole numbers: people in, people out (e.g. '1 0')", file=sys.stderr)
    return answers


def cmd_heatmap(args) -> int:
    """Heatmap of one video (every frame): a PNG over its first frame (faces blurred), optionally the JSON grid."""
    import tempfile

    from storelens.domain.heatmap import cells_to_grid
    from storelens.domain.heatmap_draw import heatmap_png
    from storelens.storage import SqlStorage
    from storelens.storage import heatmaps as hm

    for path, flag in ((args.out, "--out"), (args.json, "--json")):
        if path:
            writable_output(path, flag)
    config = single_source_config(args.source, [], args.config)
    cell_px = args.cell or config.heatmap.cell_px
    config = config.model_copy(update={"heatmap": config.heatmap.model_copy(update={"cell_px": cell_px,
                                                                                     "enabled": True})})
    with tempfile.TemporaryDirectory(prefix="storelens-heatmap-") as tmp:
        store = SqlStorage(str(pathlib.Path(tmp) / "heatmap.db"))
        try:
            result = _run(config, storage=store, show_progress=sys.stderr.isatty(), scratch=True)
            cells = hm.heatmap(store, "cam", 0, 2**53 - 1, cell_px=cell_px)
            snap = hm.snapshot(store, "cam")
        finally:
            store.close()
    note = _interrupted_note(config, result)
    width = cells.width if cells else (snap.width if snap else 0)
    height = cells.height if cells else (snap.height if snap else 0)
    if not width or not height:
        if note is not None:
            return _stopped(note, f"; nothing written ({args.out})")
        raise StoreLensError(f"no frames were processed from {_shown(args.source)}")
    grid = cells_to_grid(cells.values(args.kind) if cells else [], width, height, cell_px)
    files = {args.out: heatmap_png(grid, cell_px, width, height, snap.jpeg if snap else None)}
    total_s = (cells.total_ms(args.kind) if cells else 0) / 1000
    if args.json:
        files[args.json] = (json.dumps({
            "source": _shown(args.source), "frames": result.frames, "kind": args.kind, "cell_px": cell_px,
            "width": width, "height": height, "rows": grid.shape[0], "cols": grid.shape[1],
            "total_occupancy_ms": cells.total_ms("occupancy") if cells else 0,
            "total_dwell_ms": cells.total_ms("dwell") if cells else 0,
            "cells": [{"gx": c[0], "gy": c[1], "occupancy_ms": c[2], "dwell_ms": c[3]}
                      for c in (cells.cells if cells else [])],
        }) + "\n")
    if note is not None:  # not under --out's / --json's names: it would pass for the whole video's
        return _stopped(note, _keep_partial(files, f"the heatmap of those frames ({total_s:.1f} person-seconds)"))
    for path, data in files.items():
        _write_file(path, data)
    print(f"wrote {args.out}: {result.frames} frames, {total_s:.1f} person-seconds ({args.kind}) "
          f"on a {grid.shape[1]}x{grid.shape[0]} grid of {cell_px} px")
    return 0


def _demo_config(args):
    """The site ``demo`` runs: ``--config`` (or the bundled example) with ``--source``, ``--db`` (and then no
    ``live.redis_url``), ``--host`` and ``--port`` in place of the file's. The cameras change through
    ``with_cameras``, so that the site versions saved by edits (``site_version_document``) hold ``--source``, not
    the file's source."""
    from pydantic import ValidationError

    from storelens.config import with_cameras
    from storelens.config.site import resolve_source, site_version_document

    config = load_site(args.config, open_cameras=args.opens_cameras)
    updates: dict = {}
    if args.source:
        cams = site_version_document(config)["cameras"]  # as written: other cameras keep their ${VAR}s
        cams[0]["source"] = resolve_source(args.source, pathlib.Path.cwd())
        config = with_cameras(config, cams, origin="--source")
    if args.db:  # a SQLite file (and its gallery beside it), whatever the site's backend (as --db of the others)
        config = _with_db(config, args.db)
        # and no Redis: the site's would show its live occupancy and share its sign-in limits
        updates["live"] = config.live.model_copy(update={"redis_url": None})
    if args.port is not None or args.host:
        given = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
        try:  # validated as in a site file (model_copy would take --port 70000)
            updates["api"] = type(config.api).model_validate({**config.api.model_dump(), **given})
        except ValidationError as err:
            raise ConfigError("; ".join(f"--{e['loc'][0]} {given[e['loc'][0]]}: {e['msg']}"
                                        for e in err.errors())) from None
    if updates:
        config = config.model_copy(update=updates)
    return config


def cmd_demo(args) -> int:
    config = _demo_config(args)
    if not args.no_serve:
        _check_port_free(config.api.host, config.api.port)  # fail before minutes of processing, not after
    # The pipeline runs in a child process: the server process then holds no native
    # inference runtimes (with them loaded, shutting the server down crashed). The API is
    # served from the start, while the pipeline runs (a live camera never ends), and after
    # a finite source ends; SIGTERM / Ctrl-C stop both.
    import logging
    import multiprocessing
    import threading

    level = logging.getLevelName(logging.getLogger().level)  # main()'s: --log-level, else $STORELENS_LOG_LEVEL
    child = multiprocessing.get_context("spawn").Process(target=_demo_pipeline, args=(config, level),
                                                         name="pipeline")
    if args.no_serve:
        with _sigterm_as_interrupt():
            child.start()
            try:
                child.join()
            except KeyboardInterrupt:
                child.terminate()  # SIGTERM/Ctrl-C while processing: stop the pipeline too (cleanly: see _run)
                child.join(timeout=30)
                raise
        return child.exitcode if child.exitcode and child.exitcode > 0 else (0 if child.exitcode == 0 else 1)

    from storelens.api import serve
    from storelens.api.server import build_app
    from storelens.runtime.retention import purge_lease

    # creates the schema before the child and the API use it; storage, gallery, erasures to the pipeline and the
    # retention purge (the pipeline's while it runs, then the API's), closed at the app's shutdown
    app = build_app(config)
    signin = _demo_admin(app)
    lease = purge_lease(app.state.context.storage)
    if lease is not None:  # the child pipeline purges: not the API until it has ended (taken before it starts)
        lease.hold_for_pipeline()
    child.start()
    failed = threading.Event()

    def _watch() -> None:
        child.join()
        if lease is not None:
            lease.close()
        if child.exitcode == 0:
            print("pipeline finished; still serving the API (Ctrl-C to stop)", flush=True)
        else:
            print(f"error: the pipeline exited with {child.exitcode}; stopping", file=sys.stderr, flush=True)
            failed.set()

    threading.Thread(target=_watch, name="pipeline-watch", daemon=True).start()
    host, port = config.api.host, config.api.port
    print(f"API serving at http://{host}:{port}  (dashboard: http://{host}:{port}/, docs: "
          f"http://{host}:{port}/docs); {signin}; Ctrl-C to stop", flush=True)
    try:
        serve(app, host, port, stop=failed)
    finally:
        if child.is_alive():
            child.terminate()  # stops the pipeline cleanly (it flushes what it has)
            child.join(timeout=30)
    return 1 if failed.is_set() else 0


def _demo_admin(app) -> str:
    """How to sign in to the demo: the first admin, made with a printed random password if there is no user."""
    import secrets

    from storelens.storage.auth import list_users

    ctx = app.state.context
    users = list_users(ctx.storage)
    if users:
        admins = [u["username"] for u in users if u["role"] == "admin"] or [users[0]["username"]]
        return (f"sign in as {admins[0]!r} (forgot the password? storelens users create-admin "
                f"--db {ctx.config.storage.path})")
    password = secrets.token_urlsafe(12)
    ctx.auth.create_user("admin", password, "admin")
    return f"sign in as 'admin' with password {password!r} (set STORELENS_ADMIN_PASSWORD to choose it)"


def _read_password(env: str | None = None) -> str:
    """The password of ``users`` commands: ``$env`` if given and set (``create-admin``: the first admin's variable,
    ``auth.admin_password_env``), else stdin (a prompt on a terminal). ``create`` gives no variable: another user
    never gets the admin's password from the environment."""
    password = os.environ.get(env) if env else None
    if password:
        return password
    stdin = sys.stdin
    closed = stdin is None or stdin.closed  # None: started with stdin closed (`<&-`)
    if not closed and stdin.isatty():
        import getpass

        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            raise ConfigError("the passwords differ")
        return password
    password = "" if closed else stdin.readline().rstrip("\n")
    if not password:  # e.g. `kubectl exec` without -i: an empty stdin
        also = f", or set ${env} (auth.admin_password_env)" if env else ""
        raise ConfigError(f"password: none on stdin ({'closed' if closed else 'empty'}): pipe it, e.g. "
                          f"`printf '%s\\n' \"$PASSWORD\" | storelens users ...` (through kubectl: `kubectl exec -i`)"
                          f"{also}")
    return password


def cmd_site(args) -> int:
    """``storelens site export|import``: the site in force as YAML (the newest version's cameras and alert rules
    in the site file); a YAML's cameras, lines, zones and alert rules as a new version (what an edit through the
    API saves, :func:`~storelens.config.site.site_version_document`)."""
    import yaml

    from storelens.config import entrance_lines_of, journey_links_of, load_config, with_cameras
    from storelens.config.site import site_document, site_version_document, unversioned_differences, written_document
    from storelens.storage import open_storage
    from storelens.storage import auth as audit_store
    from storelens.storage import site as sq

    if getattr(args, "out", None):  # site export --out: checked before the store is read
        writable_output(args.out, "--out")
    # checked before a store is made; no camera is opened: a ${CAM_PASSWORD} need not be set (the version keeps it)
    importing = load_config(args.file, open_cameras=False) if args.site_command == "import" else None
    args.config = site_config_path(args.config)
    site_file = args.config or "the bundled example site"
    as_read = load_site(args.config, False) if importing is not None else None  # before --db replaces its storage
    if importing is not None and importing.store.id != (store := as_read.store.id):
        raise ConfigError(f"{args.file} is a site file of store {importing.store.id!r}, not of {store!r} ({site_file}):"
                          f" give --config the site file of store {importing.store.id!r}")
    config = _history_config(args, create=importing is not None)  # cameras before a first run
    if importing is not None and (left := unversioned_differences(as_read, importing)):
        print(f"warning: {', '.join(left)} of {args.file} differ from the site file's ({site_file}) and are not "
              f"imported (a site version holds only the cameras, lines, zones and alert rules): to apply them, edit "
              f"the site file and restart the services", file=sys.stderr)
    storage = open_storage(config.storage)
    try:
        config, version = _site_in_force(config, storage, say=False)  # as the API and the pipeline put it in force
        if args.site_command == "export":
            doc = written_document(config, site_document(config, exclude_defaults=True))  # ${VAR}s unexpanded
            # the file must load: entrance lines of cameras (lines) the version removed are not in it
            left_out = [x for x in entrance_lines_of(config) or () if x not in (config.store.entrance_lines or ())]
            if left_out:
                print(f"warning: store.entrance_lines: {', '.join(repr(x) for x in left_out)} left out of the "
                      f"exported file (site version {version} has no such camera line): a site file replaced by it "
                      "no longer counts the stored crossings of those lines as store entrances (past visitors, "
                      "journeys), and adding the camera back later does not bring them back (add them to "
                      "store.entrance_lines again with it)", file=sys.stderr)
            links_out = [ln for ln in journey_links_of(config) if ln not in config.journeys.links]
            if links_out:
                print(f"warning: journeys.links: {', '.join(f'{ln.source!r} to {ln.target!r}' for ln in links_out)} "
                      f"left out of the exported file (site version {version} has no such camera): a site file "
                      "replaced by it no longer links the stored journeys through that camera (add the links again "
                      "with the camera)", file=sys.stderr)
            text = f"# StoreLens site, version {version} (storelens site export)\n" + yaml.safe_dump(doc, sort_keys=False)
            if args.out:
                pathlib.Path(args.out).write_text(text)
                print(f"wrote {args.out}: site version {version}", file=sys.stderr)
            else:
                sys.stdout.write(text)
            return 0
        # the whole file is validated; its cameras and alert rules as written become the version
        written = site_version_document(importing)
        new = with_cameras(config, written["cameras"], origin=args.file, alert_rules=written["alert_rules"])
        saved = sq.save_site(storage, version, site_version_document(new), "cli", int(time.time() * 1000))
        if saved is None:
            raise ConfigError("the site changed while importing: run the import again")
        audit_store.audit(storage, int(time.time() * 1000), "cli", "site.import", args.file, {"version": saved})
        where = ""
        if config.storage.backend == "postgres":  # distributed: the services read site-config (as after an API edit)
            from storelens.runtime.workers import SiteConfigPublisher

            publisher = SiteConfigPublisher(config)
            try:
                publisher(sq.site_update(storage, config.store.id, saved - 1))
            except StoreLensError as exc:
                raise StoreLensError(f"site version {saved} saved, but not published to {publisher.topic} ({exc}): "
                                     "a running API sends it (at its start and every 30 s), or import again to "
                                     "publish it") from None
            finally:
                publisher.close()
            where = f" (published to {publisher.topic})"
        print(f"imported {args.file}: site version {saved} ({len(new.cameras)} cameras, {len(new.alerts.rules)} "
              f"alert rules){where}; running pipelines apply it without a restart")
    finally:
        storage.close()
    return 0


def cmd_users(args) -> int:
    """``storelens users create-admin|create|list|delete`` and ``api-key``: sign-in accounts in the store's database."""
    from storelens.api.security import USERNAME_PATTERN, Authenticator, check_new_user
    from storelens.storage import open_storage
    from storelens.storage import auth as store

    config = _history_config(args, create=args.users_command == "create-admin")  # the first admin: a new store
    username = getattr(args, "username", None)
    if args.users_command == "create-admin" and username is None:
        # create-admin's default name (no name given): the first admin's, as the API creates it
        username = os.environ.get(config.auth.admin_username_env) or "admin"
    if username is not None and not re.fullmatch(USERNAME_PATTERN, username):  # e.g. "" from an unset variable
        raise ConfigError(f"users {args.users_command}: {username!r} is not a user name (1-64 letters, digits and "
                          f". _ @ -, not first)")
    if args.users_command in ("create-admin", "create"):  # checked before a new store is made
        role = "admin" if args.users_command == "create-admin" else args.role
        try:
            password = _read_password(config.auth.admin_password_env if args.users_command == "create-admin"
                                      else None)
            check_new_user(config.auth, username, password, role)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    storage = open_storage(config.storage)
    try:
        auth = Authenticator(config.auth, storage, sessions=False)  # signs no session: no JWT key needed
        if args.users_command in ("create-admin", "create"):
            created = auth.create_user(username, password, role)
            store.audit(storage, int(time.time() * 1000), "cli", f"users.{args.users_command}", username,
                        {"role": role, "created": created})
            revoked = auth.revoke_keys_of(username, role, "cli")  # a demoted user's keys above its new role
            print(f"{'created' if created else 'updated'} {role} {username!r}"
                  + (f"; revoked its API keys {', '.join(revoked)}" if revoked else ""))
        elif args.users_command == "delete":
            if not auth.delete_user(username, "cli"):  # and the API keys it created (audited)
                raise ConfigError(f"no such user: {username!r}")
            store.audit(storage, int(time.time() * 1000), "cli", "users.delete", username)
            print(f"deleted {username!r}")
        elif args.users_command == "api-key":
            key_id, key = auth.create_api_key(args.name, args.role, "cli")
            store.audit(storage, int(time.time() * 1000), "cli", "api-keys.create", key_id,
                        {"role": args.role, "name": args.name})
            print(key)
        else:
            for u in store.list_users(storage):
                print("\t".join([u["username"], u["role"], *(["disabled"] if u["disabled"] else [])]))
    finally:
        storage.close()
    return 0


def cmd_db(args) -> int:
    """``storelens db upgrade|current|wait``: migrate the site's SQL tables to this release's schema (what each
    process does when it opens them with ``storage.migrate: auto``; with ``wait`` the services leave it to this
    command), print their revision and the head (exit 1 when one is behind or newer), or wait until they are at the head
    (the services' initContainer). The site file: ``--config``, else ``$STORELENS_CONFIG``, else the bundled
    example."""
    from storelens.storage import upgrade

    config = load_site(args.config, open_cameras=False)
    if args.db:
        config = _with_db(config, args.db)
    if args.db_command == "current":
        off_head = False  # behind, or newer than this release (a rollback): neither is ready for it
        for rev in upgrade.current(config):
            off_head = off_head or rev.current != rev.head
            state = ("up to date" if rev.current == rev.head else "behind: run `storelens db upgrade`"
                     if rev.current < rev.head else "NEWER than this StoreLens")
            print(f"{rev.chain} ({rev.where}): revision {rev.describe()}; head {rev.describe(rev.head)}: {state}")
        return 1 if off_head else 0
    if args.db_command == "wait":
        return _db_wait(config)
    if _new_sqlite_file(config) is not None:  # a typo in --db / storage.path would be two new, empty databases
        if not args.create:
            where = "--db" if args.db else "storage.path"
            raise ConfigError(f"no history database at {config.storage.path} ({where}); give an existing one, or "
                              f"--create to create it")
        print(f"note: creating a new history database at {config.storage.path}", file=sys.stderr)
    for before, after in upgrade.upgrade(config):
        print(f"{after.chain} ({after.where}): revision {before.describe()} -> {after.describe()}"
              f"{' (head)' if after.current == after.head else ''}")
    return 0


def _db_wait(config) -> int:
    """``storelens db wait``: until ``db upgrade`` brought every store to this release's head (0); a schema newer
    than this StoreLens or an unreachable store: the error (2); SIGTERM/SIGINT: 0, quietly (the pod is stopping).
    The wait of the services' ``storage.migrate: wait`` (:func:`storelens.storage.base.poll_schema`)."""
    import signal

    from storelens.errors import WaitStopped
    from storelens.runtime import service
    from storelens.storage import upgrade

    before = {sig: signal.signal(sig, lambda *_: service.STOP.set()) for sig in (signal.SIGTERM, signal.SIGINT)}

    def behind(exc, new: bool, _retry_s: float) -> None:
        if new:  # once per state: the log of an initContainer that waits long stays short
            rev = upgrade.ChainRevision(exc.chain, exc.where, exc.current, exc.head)
            print(f"waiting for `storelens db upgrade`: {rev.chain} ({rev.where}) at revision {rev.describe()}, "
                  f"head {rev.describe(rev.head)}", file=sys.stderr, flush=True)

    try:
        revs = upgrade.wait(config, service.STOP, behind)
    except WaitStopped:
        return 0
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    for rev in revs:
        print(f"{rev.chain} ({rev.where}): revision {rev.describe()} (head)")
    return 0


def _demo_pipeline(config, log_level: str = "WARNING") -> None:
    """Child process of ``demo``: run the pipeline into storage and print the summary; ``log_level`` is the
    parent's (``--log-level``)."""
    from storelens.logs import setup_logging
    from storelens.storage import open_storage

    setup_logging(log_level)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        storage = open_storage(config.storage)
        try:
            result = _run(config, storage=storage, show_progress=True)
            _print_summary(config, result)
            _print_zones(config, storage)
            _print_behaviour(config, storage)
        finally:
            storage.close()
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.stdout.flush()


def _check_port_free(host: str, port: int) -> None:
    """Whether the API can listen on ``host:port``, as uvicorn binds (``SO_REUSEADDR``: the connections of a
    demo stopped a moment ago, in TIME-WAIT, do not hold the port); ``--port`` is suggested only when another
    process listens there."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:  # uvicorn's choice of family
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except (OSError, UnicodeError) as exc:
            hint = "pass --port" if getattr(exc, "errno", None) == errno.EADDRINUSE else "check --host (or api.host)"
            raise ConfigError(f"cannot serve the API on {host}:{port}: {getattr(exc, 'strerror', None) or exc}; "
                              f"{hint}") from None


def _print_summary(config, result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"StoreLens demo: {result.frames} frames in {result.elapsed_s:.1f} s ({result.fps:.1f} fps)")
    for col in ("camera", "line", "in", "out", "occupancy"):
        table.add_column(col)
    for cam in config.cameras:
        for lid, c in result.line_counts[cam.id].items():
            table.add_row(cam.id, lid, str(c["in"]), str(c["out"]), str(result.occupancy[cam.id]))
    Console().print(table)
    _print_faces(result)


def _print_zones(config, storage) -> None:
    """Zones and queues of the demo run, read back from the history (what the API serves)."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from storelens.storage import zones as zq

    rows = [(c, z) for c in config.cameras for z in c.zones if z.kind != "exclude"]
    if not rows:
        return
    table = Table(title="zones (GET /v1/zones, /v1/zones/stats, /v1/queues, /v1/interest)")
    for col in ("zone", "kind", "visits", "max in", "dwell s med/p90", "notes"):
        table.add_column(col)
    for cam, z in rows:
        stats = zq.zone_buckets(storage, cam.id, z.id, 0, 2**53 - 1)
        exits = [e for e, _ in zq.events(storage, cam.id, 0, 2**53 - 1, zone_ids=[z.id], kinds=["exit"])]
        dwell = [(e.dwell_ms or 0) / 1000 for e in exits]
        med_p90 = "/".join(f"{v:.1f}" for v in np.percentile(dwell, [50, 90])) if dwell else "-"
        notes = ""
        if z.kind == "queue":
            served = [d for e, d in zip(exits, dwell) if e.how == "service_edge"]
            notes = (f"{len(served)} served, {sum(e.how == 'other' for e in exits)} left"
                     + (f", wait {np.median(served):.1f} s" if served else ""))
        elif z.kind == "shelf":
            limit = z.rules(config.zones).stopper_after_s
            stoppers = sum(d >= limit for d in dwell)
            notes = f"{stoppers}/{len(dwell)} stopped" + (f" ({stoppers / len(dwell):.0%})" if dwell else "")
        name = z.id if len(config.cameras) == 1 else f"{cam.id}/{z.id}"
        table.add_row(name, z.kind, str(sum(s.visits for s in stats)),
                      str(max((s.max_occupancy for s in stats), default=0)), med_p90, notes)
    Console().print(table)


def _print_behaviour(config, storage) -> None:
    """Heatmap totals and journeys of the demo run, from the history (what the API serves)."""
    from storelens.config import entrance_lines_of, journeys_of
    from storelens.domain.journeys import flows, top_paths
    from storelens.storage import heatmaps as hq
    from storelens.storage import journeys as jq

    end = 2**53 - 1
    for cam in config.cameras:
        hm = hq.heatmap(storage, cam.id, 0, end)
        if hm is not None:
            busiest = max(hm.cells, key=lambda c: c[2], default=None)
            where = "" if busiest is None else (
                f"; busiest cell x {busiest[0] * hm.cell_px}-{(busiest[0] + 1) * hm.cell_px} px, "
                f"y {busiest[1] * hm.cell_px}-{(busiest[1] + 1) * hm.cell_px} px: {busiest[2] / 1000:.1f} s")
            print(f"heatmap {cam.id}: {hm.total_ms('occupancy') / 1000:.1f} person-s, "
                  f"{hm.total_ms('dwell') / 1000:.1f} s lingering in {len(hm.cells)} cells of {hm.cell_px} px over "
                  f"{hm.minutes} min{where} (GET /v1/cameras/{cam.id}/heatmap?format=png)")
    js = jq.journeys(storage, journeys_of(config), 0, end, entrance_lines_of(config), exclude_staff=True)  # as the API
    if js:
        paths = top_paths(js, 3)
        top = "; ".join(f"{' > '.join(p)} x{n}" for p, n in paths)
        print(f"journeys: {len(js)} ({sum(len(j.tracks) > 1 for j in js)} across cameras), "
              f"{sum(flows(js).values())} zone-to-zone transitions; top paths: {top} (GET /v1/journeys, /v1/flows)")


def _print_faces(result) -> None:
    if result.faces:
        f = result.faces
        print(f"faces: {f.get('attributes_crops', 0)} person crops, {f.get('attributes_faces', 0)} faces, "
              f"{f.get('attributes_accepted', 0)} passed the quality gate, {f.get('attributes_rejected', 0)} rejected; "
              f"customers: {f.get('reid_matches', 0)} tracks matched ({f.get('reid_new', 0)} new); "
              f"{_plural(f.get('reid_returning', 0), 'returning visit')}")


def _plural(n: int, noun: str) -> str:
    """``n`` and the noun, in the plural unless one.

    >>> _plural(1, "returning visit"), _plural(2, "returning visit")
    ('1 returning visit', '2 returning visits')
    """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def cmd_faces(args) -> int:
    """``storelens faces IMAGE ...``: faces, age, gender, emotion per image (logic in runtime.still_faces)."""
    from storelens.runtime.still_faces import StillFaceAnalyzer, load_faces_config, render_table

    doc = StillFaceAnalyzer(load_faces_config(args.config)).analyze(args.images)
    print(json.dumps(doc, indent=2) if args.json else render_table(doc))
    return 2 if all("error" in e for e in doc["images"]) else 0


def cmd_staff(args) -> int:
    """``storelens staff enroll|list|remove``: the opt-in staff face gallery (logic in storage.staff_faces)."""
    from storelens.storage import open_storage
    from storelens.storage import auth as audit_log
    from storelens.storage import staff_faces

    if args.staff_command == "enroll" and not (args.consent_by or "").strip():
        raise ConfigError("staff enroll: --consent-by is required (who recorded the member's consent)")
    config = _history_config(args, create=args.staff_command == "enroll")  # staff may be enrolled before a run
    new_file = _new_sqlite_file(config)
    storage = open_storage(config.storage)
    done = False
    try:
        now_ms = int(time.time() * 1000)
        if args.staff_command == "enroll":
            n, problems = staff_faces.enroll_images(storage, config.faces, args.id, args.name,
                                                    consent_by=args.consent_by, images=args.images,
                                                    consent_note=args.consent_note or "")
            for problem in problems:
                print(f"warning: {problem}", file=sys.stderr)
            audit_log.audit(storage, now_ms, "cli", "staff.enroll", args.id,
                            {"consent_by": args.consent_by, "embeddings": n})
            print(f"enrolled {args.id!r} ({args.name}): {n} face embedding(s), consent recorded by {args.consent_by}")
        elif args.staff_command == "list":
            rows = staff_faces.list_members(storage)
            if args.json:
                print(json.dumps(rows, indent=2))
            for r in [] if args.json else rows:
                note = f" ({r['consent_note']})" if r["consent_note"] else ""
                print(f"{r['staff_id']}\t{r['display_name']}\t{r['embeddings']} embedding(s)\tconsent by "
                      f"{r['consent_by']} at {r['consent_at_ms']}{note}")
        else:
            if not staff_faces.remove(storage, args.id):
                raise ConfigError(f"no such staff member: {args.id!r}")
            audit_log.audit(storage, now_ms, "cli", "staff.remove", args.id)
            print(f"removed {args.id!r} and their face embeddings")
        done = True
    finally:
        storage.close()
        if not done and new_file is not None:  # e.g. no face found: no empty store left (a later --db typo)
            new_file.unlink(missing_ok=True)
    return 0


def _field_bounds(model: type, field: str) -> tuple[float, float]:
    """The ``ge``/``le`` bounds of ``model.field`` in the config model (an argument type checks its value against the
    same range the site file's field has)."""
    meta = model.model_fields[field].metadata
    return next(m.ge for m in meta if hasattr(m, "ge")), next(m.le for m in meta if hasattr(m, "le"))


def cell_px(text: str) -> int:
    """``heatmap --cell``: a whole number within ``heatmap.cell_px``'s bounds in the config model; the error names
    the range (``argument --cell: 1 is out of range: use 2 to 512``)."""
    from storelens.config.behaviour import HeatmapConfig

    lo, hi = _field_bounds(HeatmapConfig, "cell_px")
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of pixels ({lo} to {hi})") from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use {lo} to {hi}")
    return value


def min_accuracy(text: str) -> float:
    """``audit --min-accuracy``: a fraction within ``audit.min_accuracy``'s bounds in the config model (0 to 1),
    checked when the arguments are read, before any clip is cut or tallied; ``90`` (a percentage) is refused with
    the fraction it likely means (``argument --min-accuracy: 90.0 is out of range: use 0 to 1, e.g. 0.9 for
    90%``)."""
    import math

    from storelens.config.audit import AuditConfig

    lo, hi = _field_bounds(AuditConfig, "min_accuracy")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number ({lo} to {hi}, e.g. 0.9 for 90%)") from None
    if not lo <= value <= hi:  # nan too
        hint = f", e.g. {value / 100:g} for {value:g}%" if math.isfinite(value) and 1 < value <= 100 else ""
        raise argparse.ArgumentTypeError(f"{value} is out of range: use {lo} to {hi}{hint}")
    return value


def command(parser: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int], *,
            opens_cameras: bool) -> None:
    """Make ``parser`` the command that runs ``func(args)``, and declare whether it opens the site's cameras
    (``args.opens_cameras``): then their ``${VAR}``s (e.g. ``${CAM_PASSWORD}``) must be set; a command that never
    opens them (it reads or writes the history, or replaces them by its SOURCE) runs without them (:func:`load_site`).
    Every command is made with it (checked by :func:`build_parser`, :func:`commands`): none can be forgotten."""
    parser.set_defaults(func=func, opens_cameras=opens_cameras)


def commands(parser: argparse.ArgumentParser,
             path: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command of ``parser`` (its subcommands' leaves, by their words: ``("users", "create")``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: parser}
    return {k: v for a in subs for name, p in a.choices.items() for k, v in commands(p, (*path, name)).items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="storelens", description="Retail analytics on existing CCTV cameras.")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                   help="default: $STORELENS_LOG_LEVEL, else WARNING")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole pipeline on a video, print a summary, serve the API")
    d.add_argument("--config", help="site configuration YAML (default: $STORELENS_CONFIG, else the bundled example)")
    d.add_argument("--source", help="video file or stream URL replacing the first camera's source")
    d.add_argument("--db", help="SQLite file (default: storage.path of the config); with it, no Redis "
                                "(the config's live.redis_url is left out)")
    d.add_argument("--host")
    d.add_argument("--port", type=int)
    d.add_argument("--no-serve", action="store_true", help="exit after the summary")
    command(d, cmd_demo, opens_cameras=True)

    c = sub.add_parser("count", help="count line crossings in a video")
    c.add_argument("source")
    c.add_argument("--line", action="append", required=True, metavar="[ID=]X1,Y1,X2,Y2",
                   help="counting line in source pixels; repeat for more lines")
    c.add_argument("--json", action="store_true")
    c.add_argument("--config", help="take detector/tracker/counting settings from this site config")
    command(c, cmd_count, opens_cameras=False)  # the site's cameras are replaced by SOURCE

    z = sub.add_parser("zones", help="zone visits, occupancy and dwell in a video")
    z.add_argument("source")
    z.add_argument("--zone", action="append", required=True, metavar="[ID=]X1,Y1,X2,Y2,X3,Y3[,...]",
                   help="zone polygon in source pixels; repeat for more zones")
    z.add_argument("--json", action="store_true")
    z.add_argument("--config", help="take detector/tracker/zone-rule settings from this site config")
    command(z, cmd_zones, opens_cameras=False)  # the site's cameras are replaced by SOURCE

    r = sub.add_parser("replay", help="re-derive crossings, zones and heatmaps from stored track points")
    r.add_argument("--config",
                   help="site configuration (storage, the analytics settings; default: $STORELENS_CONFIG; one of "
                        "them is required: never the bundled example's); the cameras, lines and zones are the "
                        "newest site version's when there is one: `storelens site import` a file with moved lines "
                        "or new zones first (a warning names what of the file differs from that version)")
    r.add_argument("--db", help="SQLite history file (default: the config's storage)")
    r.add_argument("--from", dest="from_ms", type=int, metavar="MS", help="range start, ms since epoch")
    r.add_argument("--to", dest="to_ms", type=int, metavar="MS", help="range end (exclusive), ms since epoch")
    r.add_argument("--camera", action="append", help="only this camera (repeatable)")
    r.add_argument("--json", action="store_true")
    command(r, cmd_replay, opens_cameras=False)  # stored track points: no video

    t = sub.add_parser("track", help="write tracks in MOTChallenge format")
    t.add_argument("source")
    t.add_argument("--mot-out", required=True)
    t.add_argument("--config", help="take detector/tracker settings from this site config")
    command(t, cmd_track, opens_cameras=False)  # the site's cameras are replaced by SOURCE

    h = sub.add_parser("heatmap", help="occupancy/dwell heatmap of a video as a PNG over its first frame")
    h.add_argument("source")
    h.add_argument("--out", required=True, metavar="FILE.png")
    h.add_argument("--json", metavar="FILE", help="also write the grid as JSON")
    h.add_argument("--cell", type=cell_px, metavar="PX",
                   help="cell size in source pixels, 2 to 512 (default: the config's heatmap.cell_px)")
    h.add_argument("--kind", choices=("occupancy", "dwell"), default="occupancy")
    h.add_argument("--config", help="take detector/tracker/heatmap settings from this site config")
    command(h, cmd_heatmap, opens_cameras=False)  # the site's cameras are replaced by SOURCE

    fc = sub.add_parser("faces", help="faces in still images: age, gender (or unknown), child, emotion, quality")
    fc.add_argument("images", nargs="+", metavar="IMAGE")
    fc.add_argument("--config", help="take the faces settings from this site config")
    fc.add_argument("--json", action="store_true")
    command(fc, cmd_faces, opens_cameras=False)  # still images, the faces section only

    sf = sub.add_parser("staff", help="the opt-in staff face gallery: enrol (consent recorded), list, remove")
    sf_sub = sf.add_subparsers(dest="staff_command", required=True)
    for name, help_ in (("enroll", "enrol a staff member's face from photos (the largest face of each image)"),
                        ("list", "list the enrolled staff members and their consent records"),
                        ("remove", "consent withdrawn: delete the member and their face embeddings")):
        x = sf_sub.add_parser(name, help=help_)
        if name == "enroll":
            x.add_argument("--id", required=True, help="staff id (shown as the StaffTrack detail)")
            x.add_argument("--name", required=True, help="display name")
            x.add_argument("--consent-by", help="who recorded the member's consent (required)")
            x.add_argument("--consent-note", default="", help="e.g. where the signed form is kept")
            x.add_argument("images", nargs="+", metavar="IMAGE")
        elif name == "remove":
            x.add_argument("id", help="staff id")
        else:
            x.add_argument("--json", action="store_true")
        x.add_argument("--config", help="site configuration (storage, faces; default: $STORELENS_CONFIG, else the "
                                        "bundled example)")
        x.add_argument("--db", help="SQLite history file (default: the config's storage)")
        command(x, cmd_staff, opens_cameras=False)

    si = sub.add_parser("site", help="the site's cameras, lines and zones as edited through the API (YAML)")
    si_sub = si.add_subparsers(dest="site_command", required=True)
    se = si_sub.add_parser("export", help="print the site in force (the site file with the newest edited cameras "
                                          "and alert rules)")
    se.add_argument("--out", help="write to this file instead of stdout")
    sim = si_sub.add_parser("import", help="save a site file's cameras, lines, zones and alert rules as the next "
                                           "version")
    sim.add_argument("file")
    for x in (se, sim):
        x.add_argument("--config", help="site configuration (storage; default: $STORELENS_CONFIG, else the bundled "
                                        "example)")
        x.add_argument("--db", help="SQLite history file (default: the config's storage)")
        command(x, cmd_site, opens_cameras=False)

    us = sub.add_parser("users", help="sign-in accounts and API keys of the API and dashboard")
    us_sub = us.add_subparsers(dest="users_command", required=True)
    for name, help_ in (("create-admin", "create an admin or reset one (password from $STORELENS_ADMIN_PASSWORD, "
                                         "the variable auth.admin_password_env names, or stdin)"),
                        ("create", "create a user or reset one (password from stdin or a prompt, never "
                                   "$STORELENS_ADMIN_PASSWORD)"),
                        ("delete", "delete a user"), ("list", "list users"),
                        ("api-key", "create an API key for a machine client (printed once)")):
        u = us_sub.add_parser(name, help=help_)
        if name == "api-key":
            u.add_argument("name", help="what the key is for, e.g. 'till 3'")
        elif name != "list":
            u.add_argument("username", nargs="?" if name == "create-admin" else None,
                           help="default: $STORELENS_ADMIN_USERNAME (the variable auth.admin_username_env names), "
                                "else admin" if name == "create-admin" else None)
        if name in ("create", "api-key"):
            u.add_argument("--role", required=True, choices=("viewer", "manager", "admin"))
        u.add_argument("--config", help="site configuration (storage; default: $STORELENS_CONFIG, else the bundled "
                                        "example)")
        u.add_argument("--db", help="SQLite history file (default: the config's storage)")
        command(u, cmd_users, opens_cameras=False)

    ex = sub.add_parser("export-dataset", help="YOLO images/labels and MOT tracks of confident tracks (faces blurred)")
    ex.add_argument("source", nargs="?", help="video file to run the pipeline on (or --from-db)")
    ex.add_argument("--from-db", action="store_true", help="export stored tracks; pixels from the cameras' video files")
    ex.add_argument("--out", required=True, metavar="DIR")
    ex.add_argument("--config", help="site configuration (cameras, storage, detector)")
    ex.add_argument("--db", help="SQLite history file (default: the config's storage)")
    ex.add_argument("--camera", action="append", help="only this camera (repeatable; --from-db)")
    ex.add_argument("--from", dest="from_ms", type=int, metavar="MS", help="range start, ms since epoch (--from-db)")
    ex.add_argument("--to", dest="to_ms", type=int, metavar="MS", help="range end (exclusive) (--from-db)")
    ex.add_argument("--every", type=int, default=10, metavar="N", help="write every N-th frame (default 10)")
    ex.add_argument("--min-confidence", type=float, default=0.5, help="mean confidence of a kept track (default 0.5)")
    ex.add_argument("--min-length", type=int, default=10, help="points of a kept track (default 10)")
    ex.add_argument("--val-fraction", type=float, default=0.2, help="last part of each camera for val (default 0.2)")
    ex.add_argument("--no-face-detector", action="store_true", help="blur the head boxes only")
    ex.add_argument("--licence", default="not stated (pass --licence)", help="licence of the footage (README.txt)")
    ex.add_argument("--provenance", help="where the footage comes from (README.txt)")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace a previous export in --out (its images/, labels/, mot/, dataset.yaml, README.txt; "
                         "nothing else there); without it --out must be new or empty")
    ex.add_argument("--json", action="store_true")
    command(ex, cmd_export_dataset, opens_cameras=True)  # --from-db: frames from the cameras' videos

    au = sub.add_parser("audit", help="counting accuracy: tally clips around sampled crossings (faces blurred)")
    au.add_argument("--config", help="site configuration (cameras with their video files, storage, audit)")
    au.add_argument("--db", help="SQLite history file (default: the config's storage)")
    au.add_argument("--out", required=True, metavar="DIR", help="where the clips (mp4) and clips.csv go")
    au.add_argument("--clips", type=int, help="crossings to sample (default audit.clips)")
    au.add_argument("--camera", action="append", help="only this camera (repeatable)")
    au.add_argument("--from", dest="from_ms", type=int, metavar="MS", help="range start, ms since epoch")
    au.add_argument("--to", dest="to_ms", type=int, metavar="MS", help="range end (exclusive)")
    au.add_argument("--seed", type=int, help="random seed of the sample (same seed, same clips)")
    au.add_argument("--answers", metavar="FILE.csv",
                    help="the tally as CSV clip_id,in,out (else a prompt per clip, each answer written to "
                         "DIR/answers.csv as it is typed: give it here, with the --seed the prompt names, to record "
                         "a tally again)")
    au.add_argument("--min-accuracy", type=min_accuracy, metavar="X",
                    help="alert threshold, a fraction 0 to 1, e.g. 0.9 (default audit.min_accuracy)")
    au.add_argument("--auditor", default="cli", help="who tallied (stored with the audit)")
    au.add_argument("--json", action="store_true")
    command(au, cmd_audit, opens_cameras=True)  # clips cut from the cameras' videos

    kp = sub.add_parser("kpis", help="the store's KPIs for the chain roll-up")
    kp_sub = kp.add_subparsers(dest="kpis_command", required=True)
    kpp = kp_sub.add_parser("publish", help="publish the KPI hours of the last rollup.lookback_h hours to the "
                                            "store's store-kpis topic (what the analytics service does with "
                                            "rollup.enabled; for an embedded store, e.g. from cron)")
    kpp.add_argument("--config", help="site configuration (store, storage, kafka; default: $STORELENS_CONFIG, "
                                      "else the bundled example)")
    kpp.add_argument("--db", help="SQLite history file (default: the config's storage)")
    kpp.add_argument("--lookback-h", type=float, help="hours back from now, > 0 and at most 744 (default "
                                                      "rollup.lookback_h); now is the wall clock, or the newest "
                                                      "stored frame for video files")
    out = kpp.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the hours instead of publishing them")
    out.add_argument("--local", action="store_true", help="roll them up into this store's own database "
                                                          "(GET /v1/stores, /v1/chain/kpis) instead of Kafka")
    command(kpp, cmd_kpis_publish, opens_cameras=False)

    db = sub.add_parser("db", help="the SQL schema of the site's storage: migrate it (Alembic), show its revision")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    for name, help_ in (("upgrade", "migrate the storage's tables to this release's head revision (under the "
                                    "migration lock; run it before services with storage.migrate: wait)"),
                        ("current", "print the storage's schema revision and this release's head (exit 1 when "
                                    "behind or newer than this StoreLens)"),
                        ("wait", "wait until the storage's tables are at this release's head revision (`db "
                                 "upgrade` ran; a Kubernetes initContainer of the services with storage.migrate: "
                                 "wait); exit 0 then or on SIGTERM, 2 when they are newer than this StoreLens")):
        x = db_sub.add_parser(name, help=help_)
        x.add_argument("--config", help="site configuration (storage; default: $STORELENS_CONFIG, else the bundled "
                                        "example)")
        x.add_argument("--db", help="SQLite history file (default: the config's storage)")
        if name == "upgrade":
            x.add_argument("--create", action="store_true", help="create the SQLite file when there is none (else "
                                                                  "refused: a typo would be a new, empty database)")
        command(x, cmd_db, opens_cameras=False)  # the storage only

    pos = sub.add_parser("pos", help="point-of-sale transactions")
    pos_sub = pos.add_subparsers(dest="pos_command", required=True)
    pi = pos_sub.add_parser("import", help="import a CSV of transactions (idempotent by transaction_id)")
    pi.add_argument("file", metavar="FILE.csv",
                    help="columns transaction_id,register_id,time,amount,items[,currency]; time ISO 8601 with "
                         "offset or ms since epoch; amount in major units (12.50)")
    pi.add_argument("--config", help="site configuration (store id, storage; default: $STORELENS_CONFIG, else the "
                                     "bundled example)")
    pi.add_argument("--db", help="SQLite history file (default: the config's storage)")
    pi.add_argument("--currency", default="EUR", help="currency of rows without one (default EUR)")
    pi.add_argument("--replace", action="store_true",
                    help="a stored transaction id whose row differs (time, amount, currency, register, items) is "
                         "replaced by the file's (default: a conflict, reported, nothing changed); each replacement "
                         "is an audit entry (pos.replace, actor cli) with the old and new values")
    pi.add_argument("--json", action="store_true")
    command(pi, cmd_pos_import, opens_cameras=False)
    for words, leaf in commands(p).items():  # each made with command(): what it runs, whether it opens the cameras
        if leaf.get_default("func") is None or not isinstance(leaf.get_default("opens_cameras"), bool):
            raise RuntimeError(f"storelens {' '.join(words)}: made without command() (opens_cameras undeclared)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # FFmpeg/OpenCV would print their own noise (e.g. "moov atom not found") before our one-line error.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    # The tracker's small matrices gain nothing from BLAS threads, which would
    # spin against the detector's threads on a small CPU (measured: 46 -> 33 ms/frame).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    from storelens.logs import setup_logging

    # --log-level is one of LOG_LEVELS (argparse); a $STORELENS_LOG_LEVEL that is no level logs at WARNING (the CLI's
    # default), saying so, as the services do: the same ConfigMap feeds the initContainers' `storelens db upgrade`
    setup_logging(args.log_level or os.environ.get("STORELENS_LOG_LEVEL", "WARNING"), fallback="WARNING")
    try:
        return args.func(args)
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Interrupted: what the results cover
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: still one line, no traceback
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
