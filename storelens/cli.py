"""``storelens`` command line: demo, count, track.

Every error from bad input ends with one ``error: ...`` line on stderr and
exit code 2 (1 for unexpected failures), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
from typing import Sequence

from storelens.errors import ConfigError, StoreLensError

EXAMPLE_CONFIG = pathlib.Path(__file__).with_name("examples") / "demo.yaml"


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
    if (x1, y1) == (x2, y2):
        raise ConfigError(f"bad --line {text!r}: both ends are the same point")
    return {"id": line_id, "a": [x1, y1], "b": [x2, y2]}


def _base_config(path: str | None) -> dict:
    from storelens.config.site import read_yaml

    if path is None:
        return {"store": {"id": "cli"}}
    p = pathlib.Path(path)
    raw = read_yaml(p)
    if not isinstance(raw, dict):
        raise ConfigError(f"config error in {p}: expected a mapping at the top level")
    return raw


def single_source_config(source: str, lines: Sequence[str], config_path: str | None):
    """A site config for one source, every frame, full resolution (CLI count/track)."""
    from storelens.config import parse_config

    raw = _base_config(config_path)
    raw = {k: v for k, v in raw.items() if k != "cameras"}
    raw.setdefault("store", {"id": "cli"})
    raw["cameras"] = [{"id": "cam", "source": source, "lines": [parse_line(t, i + 1) for i, t in enumerate(lines)]}]
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


def _run(config, storage=None, on_tracked=None, show_progress: bool = True):
    import time

    from storelens.backends.video import FrameSampler, source_fps, frame_count, is_live
    from storelens.runtime.embedded import EmbeddedPipeline

    total: int | None = 0
    for cam in config.cameras:
        n = None if is_live(cam.source) else frame_count(cam.source)
        if n is None:
            total = None
            break
        sampler = FrameSampler(source_fps(cam.source), cam.target_fps)
        total += sum(1 for i in range(n) if sampler.keep(i))
    gallery = None
    if config.faces.enabled:
        from storelens.storage import open_gallery

        gallery = open_gallery(config)
    pipe = EmbeddedPipeline(config, storage=storage, on_tracked=on_tracked, gallery=gallery)
    if not show_progress:
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
    with prog:
        return pipe.run()


def cmd_count(args) -> int:
    config = single_source_config(args.source, args.line, args.config)
    result = _run(config, show_progress=not args.json and sys.stderr.isatty())
    counts = result.line_counts["cam"]
    if args.json:
        print(json.dumps({"lines": [{"id": lid, "in": c["in"], "out": c["out"]} for lid, c in counts.items()],
                          "frames": result.frames}))
    else:
        from rich.table import Table

        table = Table(title=f"{args.source}: {result.frames} frames, {result.fps:.1f} fps")
        for col in ("line", "in", "out"):
            table.add_column(col)
        for lid, c in counts.items():
            table.add_row(lid, str(c["in"]), str(c["out"]))
        from rich.console import Console

        Console().print(table)
    _print_faces(result)
    return 0


def mot_rows(tf) -> list[str]:
    """MOTChallenge rows ``frame,id,left,top,width,height,conf,-1,-1,-1`` of a TrackedFrame."""
    rows = []
    for t in tf.tracks:
        b = t.bbox_xyxy
        rows.append(f"{tf.source_frame},{t.track_id},{b.x1:.2f},{b.y1:.2f},{b.x2 - b.x1:.2f},{b.y2 - b.y1:.2f},"
                     f"{t.confidence:.4f},-1,-1,-1")
    return rows


def cmd_track(args) -> int:
    config = single_source_config(args.source, [], args.config)
    out = pathlib.Path(args.mot_out)
    if out.parent and not out.parent.exists():
        raise ConfigError(f"output folder does not exist: {out.parent}")
    rows: list[str] = []
    result = _run(config, on_tracked=lambda tf: rows.extend(mot_rows(tf)), show_progress=sys.stderr.isatty())
    out.write_text("\n".join(rows) + ("\n" if rows else ""))
    print(f"wrote {len(rows)} boxes of {result.frames} frames to {out}")
    return 0


def cmd_demo(args) -> int:
    from storelens.config import load_config
    from storelens.storage import open_storage

    config = load_config(args.config or EXAMPLE_CONFIG)
    updates: dict = {}
    if args.source:
        cams = list(config.cameras)
        src = args.source if "://" in args.source or args.source.isdigit() else str(pathlib.Path(args.source).resolve())
        cams[0] = cams[0].model_copy(update={"source": src})
        updates["cameras"] = cams
    if args.db:
        updates["storage"] = config.storage.model_copy(update={"path": args.db})
    if args.port is not None or args.host:
        updates["api"] = config.api.model_copy(update={k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None})
    if updates:
        config = config.model_copy(update=updates)
    if not args.no_serve:
        _check_port_free(config.api.host, config.api.port)  # fail before minutes of processing, not after
    # The pipeline runs in a child process: the server process then holds no native
    # inference runtimes (with them loaded, shutting the server down crashed).
    import multiprocessing

    import signal

    def _interrupt(_signum, _frame) -> None:
        raise KeyboardInterrupt

    child = multiprocessing.get_context("spawn").Process(target=_demo_pipeline, args=(config,), name="pipeline")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    child.start()
    try:
        child.join()
    except KeyboardInterrupt:
        child.terminate()  # SIGTERM/Ctrl-C while processing: stop the pipeline too
        child.join(timeout=30)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if child.exitcode != 0:
        return child.exitcode if child.exitcode and child.exitcode > 0 else 1
    if args.no_serve:
        return 0
    from storelens.api import create_app, serve

    storage = open_storage(config.storage)
    gallery_store = None
    if config.faces.enabled:
        from storelens.storage import open_gallery_store

        gallery_store = open_gallery_store(config)
    host, port = config.api.host, config.api.port
    print(f"API serving at http://{host}:{port}  (docs: http://{host}:{port}/docs, counts: "
          f"http://{host}:{port}/v1/counts?camera_id={config.cameras[0].id}"
          + (f", customers: http://{host}:{port}/v1/customers" if gallery_store is not None else "")
          + "); Ctrl-C to stop", flush=True)
    try:
        serve(create_app(config, storage, gallery_store=gallery_store), host, port)
    finally:
        storage.close()
        if gallery_store is not None:
            gallery_store.close()
    return 0


def _demo_pipeline(config) -> None:
    """Child process of ``demo``: run the pipeline into storage and print the summary."""
    from storelens.logs import setup_logging
    from storelens.storage import open_storage

    setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "WARNING"))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        storage = open_storage(config.storage)
        try:
            result = _run(config, storage=storage, show_progress=True)
        finally:
            storage.close()
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    _print_summary(config, result)
    sys.stdout.flush()


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot serve the API on {host}:{port}: {exc.strerror}; pass --port") from None


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


def _print_faces(result) -> None:
    if result.faces:
        f = result.faces
        print(f"faces: {f.get('attributes_crops', 0)} person crops, {f.get('attributes_faces', 0)} faces, "
              f"{f.get('attributes_accepted', 0)} passed the quality gate, {f.get('attributes_rejected', 0)} rejected; "
              f"customers: {f.get('reid_matches', 0)} tracks matched ({f.get('reid_new', 0)} new, "
              f"{f.get('reid_returning', 0)} returning)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="storelens", description="Retail analytics on existing CCTV cameras.")
    p.add_argument("--log-level", default=os.environ.get("STORELENS_LOG_LEVEL", "WARNING"))
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole pipeline on a video, print a summary, serve the API")
    d.add_argument("--config", help="site configuration YAML (default: the bundled example)")
    d.add_argument("--source", help="video file or stream URL replacing the first camera's source")
    d.add_argument("--db", help="SQLite file (default: storage.path of the config)")
    d.add_argument("--host")
    d.add_argument("--port", type=int)
    d.add_argument("--no-serve", action="store_true", help="exit after the summary")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("count", help="count line crossings in a video")
    c.add_argument("source")
    c.add_argument("--line", action="append", required=True, metavar="[ID=]X1,Y1,X2,Y2",
                   help="counting line in source pixels; repeat for more lines")
    c.add_argument("--json", action="store_true")
    c.add_argument("--config", help="take detector/tracker/counting settings from this site config")
    c.set_defaults(func=cmd_count)

    t = sub.add_parser("track", help="write tracks in MOTChallenge format")
    t.add_argument("source")
    t.add_argument("--mot-out", required=True)
    t.add_argument("--config", help="take detector/tracker settings from this site config")
    t.set_defaults(func=cmd_track)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # FFmpeg/OpenCV would print their own noise (e.g. "moov atom not found") before our one-line error.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    # The tracker's small matrices gain nothing from BLAS threads, which would
    # spin against the detector's threads on a small CPU (measured: 46 -> 33 ms/frame).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    from storelens.logs import setup_logging

    setup_logging(args.log_level)
    try:
        return args.func(args)
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: still one line, no traceback
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
