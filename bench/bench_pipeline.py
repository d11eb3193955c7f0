#!/usr/bin/env python
"""Throughput of StoreLens' detection/tracking path against its parts and Ultralytics' trackers.

Same video, same detector weights, same frame sampling and resizing (the
config's first camera: ``target_fps``, ``resize_width``) for every row:

  a   detector alone: OpenCV decode + sample + resize + the config's detector (``build_detector``: the
      ``openvino`` backend unless the config picks another), ``detect``
  b0  JPEG decode + detect on pre-encoded ``Frame`` messages (no tracker)
  b1  ``DetectTrackStage.process`` on pre-encoded ``Frame`` messages, the config's embedder
  b2  the same with the ``mobilenet-torch`` embedder (deep-sort-realtime's own 224x224 path)
  c   ``EmbeddedPipeline(config, storage=SqliteStorage(tmp)).run()`` end to end
  c0  the same with faces off; c0b faces off and ``pipeline.frames: bgr`` (raw frames, no JPEG hop), when
      the config hands over JPEG
  d1  ``YOLO(weights).track(..., tracker="botsort.yaml")`` fed frame by frame (persist=True)
  d2  the same with ``bytetrack.yaml``
  d3  BoT-SORT with ``with_reid: True, model: auto`` (may be n/a, the reason is printed)

Model loading and warm-up are outside the timed region. Prints a Markdown
table (fps, ms/frame, relative to row a), the machine, the command line and
the peak RSS; with ``--threads``, also each row's CPU time a frame by thread
(where the pipeline's time goes beside the detector). See bench/README.md.

    python bench/bench_pipeline.py                     # all rows, all frames
    python bench/bench_pipeline.py --frames 40 --only a,b
    python bench/bench_pipeline.py --only a,c --threads
"""
from __future__ import annotations

import argparse
import os
import pathlib
import resource
import shlex
import statistics
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

# Never let Ultralytics pip-install missing packages (e.g. `lap`) into the environment
# during a benchmark; a missing package makes its row "n/a" with the reason instead.
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the storelens CLI does (see storelens/cli.py)
OMP_AT_START = os.environ.get("OMP_NUM_THREADS")

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
# Import Ultralytics before torch, as the pipeline does (it builds the detector first): when
# OMP_NUM_THREADS is unset, Ultralytics sets it to 1, which fixes torch's thread count for
# every row, whatever --only selects.
import ultralytics  # noqa: E402,F401

from benchlib import cpu_line, python_line, version  # noqa: E402

from storelens.config import CameraConfig, SiteConfig, load_config  # noqa: E402
from storelens.backends.video import (  # noqa: E402
    FrameSampler, camera_frames, decode_frame, read_file_frames, resize_to_width, source_fps,
)

GROUPS = ("a", "b", "c", "d")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- frames ----------------------------------------------------------------------


def sampled_images(cam: CameraConfig, limit: int | None) -> Iterator[np.ndarray]:
    """Decoded BGR frames with the camera's sampling and resizing (what ingest does, minus JPEG)."""
    sampler = FrameSampler(source_fps(cam.source), cam.target_fps)
    n = 0
    for raw in read_file_frames(cam.source, cam.start_ts_ms, keep=sampler.keep):
        if limit is not None and n >= limit:
            break
        yield resize_to_width(raw.image_bgr, cam.resize_width)
        n += 1


def encoded_frames(cam: CameraConfig, limit: int | None) -> list:
    """The ingest's JPEG ``Frame`` messages (without the end-of-stream marker)."""
    out = []
    for f in camera_frames(cam):
        if f.end_of_stream or (limit is not None and len(out) >= limit):
            break
        out.append(f)
    return out


# -- rows ------------------------------------------------------------------------


@dataclass
class Run:
    frames: int
    elapsed_s: float
    boxes: int = 0  # detections/tracks output over the run, a sanity check that rows do similar work

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Row:
    key: str
    what: str
    fps: float | None = None
    frames: int = 0
    note: str = ""
    threads: list[dict[str, float]] | None = None  # --threads: per timed run, CPU ms a frame by thread (+ totals)


#: ``--threads``: how often the threads' CPU times are read (a thread that ends between two reads loses its last
#: interval; the process total, from ``time.process_time``, loses nothing).
THREAD_SAMPLE_S = 0.1


def _task_cpu_s() -> dict[tuple[int, int], tuple[str, float]]:
    """``(native thread id, its start time) -> (its /proc name, user + system CPU seconds)`` of this process's live
    threads (Linux; the start time tells a thread from a later one given the same id)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 of proc_pid_stat(5)
        out[(int(tid), int(fields[19]))] = (stat[stat.index("(") + 1:stat.rindex(")")],
                                            (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_by_thread(fn: Callable[[], Run]) -> tuple[Run, dict[str, float]]:
    """``fn()`` and the CPU seconds each thread name spent during it: Python threads by their ``threading`` name,
    native ones (OpenVINO's inference workers, FFmpeg's decoders) as ``native:<their /proc name>`` (OpenVINO's
    workers, like any unnamed native thread, carry the interpreter's name, e.g. ``native:python``); threads of one
    name summed. Key ``"*"``: the whole process, sampler included."""
    before, seen, names, done = _task_cpu_s(), {}, {}, threading.Event()
    me = threading.get_native_id()

    def read() -> None:
        now = _task_cpu_s()
        py = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        for key in now:
            if names.get(key) is None:  # a Python thread's name, once it shows among threading's
                names[key] = py.get(key[0]) or ("MainThread" if key[0] == me else None)
        seen.update(now)

    def sampler() -> None:
        while not done.wait(THREAD_SAMPLE_S):
            read()

    th = threading.Thread(target=sampler, name="bench-thread-sampler", daemon=True)
    cpu0 = time.process_time()
    th.start()
    try:
        run = fn()
    finally:
        done.set()
        th.join()
        read()
    total = time.process_time() - cpu0
    by_name: dict[str, float] = {}
    for key, (comm, cpu) in seen.items():
        if key[0] == th.native_id:
            continue
        name = names.get(key) or f"native:{comm}"
        by_name[name] = by_name.get(name, 0.0) + cpu - before.get(key, (comm, 0.0))[1]
    by_name["*"] = total
    return run, by_name


class Bench:
    def __init__(self, config: SiteConfig, limit: int | None, warmup: int) -> None:
        self.config = config.model_copy(update={"cameras": [config.cameras[0]]})
        self.cam = self.config.cameras[0]
        self.limit = limit
        self.warmup = warmup
        self._detector = None
        self._embedders: dict[str, object] = {}
        self._site_trackers: Callable[[], object] | None = None
        self._frames: list | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="storelens-bench-")
        self._runs = 0
        self.row_notes: dict[str, str] = {}

    # lazily built, shared models (loading is never timed)
    @property
    def detector(self):
        if self._detector is None:
            from storelens.backends.detectors import build_detector

            self._detector = build_detector(self.config.detector)  # the site's own (openvino by default)
        return self._detector

    def embedder(self, kind: str):
        if kind not in self._embedders:
            from storelens.backends.trackers import build_embedder

            self._embedders[kind] = build_embedder(self.deepsort_config(kind))
        return self._embedders[kind]

    @property
    def site_trackers(self) -> Callable[[], object]:
        """Row c: the config's own tracker (one per camera; bytereid's share one re-id model, built once here)."""
        if self._site_trackers is None:
            from storelens.backends.trackers import tracker_factory

            self._site_trackers = tracker_factory(self.config.tracker)
        return self._site_trackers

    def deepsort_config(self, kind: str):
        """Rows b1/b2: deep-sort with embedder ``kind`` (the config's deep-sort settings when it picks deep-sort)."""
        from storelens.config.trackers import DeepSortTrackerConfig

        tr = self.config.tracker
        base = tr.model_dump(exclude={"embedder"}) if isinstance(tr, DeepSortTrackerConfig) else {}
        return DeepSortTrackerConfig.model_validate({**base, "embedder": kind})

    def tracker_factory(self, kind: str) -> Callable[[], object]:
        from storelens.backends.trackers import DeepSortTracker

        cfg = self.deepsort_config(kind)
        emb = self.embedder(kind)
        return lambda: DeepSortTracker(cfg, embedder=emb)

    @property
    def frames(self) -> list:
        if self._frames is None:
            self._frames = encoded_frames(self.cam, self.limit)
        return self._frames

    def close(self) -> None:
        self._tmp.cleanup()

    # a ---------------------------------------------------------------------
    def run_detector(self, timed: bool = True) -> Run:
        det = self.detector
        if not timed:
            for img in sampled_images(self.cam, self.warmup):
                det.detect(img)
            return Run(0, 0.0)
        n = boxes = 0
        t0 = time.perf_counter()
        for img in sampled_images(self.cam, self.limit):
            boxes += len(det.detect(img))
            n += 1
        return Run(n, time.perf_counter() - t0, boxes)

    # b ---------------------------------------------------------------------
    def run_jpeg_detect(self, timed: bool = True) -> Run:
        det = self.detector
        frames = self.frames if timed else self.frames[: self.warmup]
        n = boxes = 0
        t0 = time.perf_counter()
        for f in frames:
            boxes += len(det.detect(decode_frame(f)))
            n += 1
        return Run(n, time.perf_counter() - t0, boxes)

    def run_stage(self, kind: str, timed: bool = True) -> Run:
        from storelens.stages import DetectTrackStage

        stage = DetectTrackStage(self.config, self.detector, self.tracker_factory(kind))
        stage.tracker(self.cam.id)  # build the tracker before timing
        frames = self.frames if timed else self.frames[: self.warmup]
        n = boxes = 0
        t0 = time.perf_counter()
        for f in frames:
            boxes += len(stage.process(f).tracks)
            n += 1
        return Run(n, time.perf_counter() - t0, boxes)

    # c ---------------------------------------------------------------------
    def run_pipeline(self, timed: bool = True, faces: bool = True, frames: str | None = None) -> Run:
        """Row c (the config as it is, faces included when it enables them); ``faces=False``: row c0, the
        same pipeline with ``faces.enabled: false`` (the product default: faces are opt-in); ``frames``:
        ``pipeline.frames`` instead of the config's (row c0b: ``bgr``, raw frames to detect-track)."""
        from storelens.runtime.embedded import EmbeddedPipeline
        from storelens.stages import DetectTrackStage
        from storelens.storage import SqliteStorage, open_gallery

        if not timed:  # warm the shared detector (and the config's tracker) on real frames
            from storelens.stages import DetectTrackStage

            stage = DetectTrackStage(self.config, self.detector, self.site_trackers)
            for f in self.frames[: self.warmup]:
                stage.process(f)
            return Run(0, 0.0)
        self._runs += 1
        storage = SqliteStorage(os.path.join(self._tmp.name, f"pipeline-{self._runs}.db"))
        done = 0
        boxes = 0
        pipe: EmbeddedPipeline | None = None

        def on_tracked(tf) -> None:
            nonlocal boxes
            boxes += len(tf.tracks)

        def on_frame_done(_camera_id: str) -> None:
            nonlocal done
            done += 1
            if self.limit is not None and done >= self.limit and pipe is not None:
                pipe.stop()  # detect-track ends after the frame in hand; what it passed on is still handled

        config = self.config if faces else self.config.model_copy(
            update={"faces": self.config.faces.model_copy(update={"enabled": False})})
        if frames is not None:
            config = config.model_copy(update={"pipeline": config.pipeline.model_copy(update={"frames": frames})})
        try:
            gallery = open_gallery(config) if config.faces.enabled else None
            pipe = EmbeddedPipeline(config, storage=storage, on_tracked=on_tracked, on_frame_done=on_frame_done,
                                    gallery=gallery)
            stage = DetectTrackStage(config, self.detector, self.site_trackers)
            result = pipe.run(stage)  # times itself from after the stage is built until the last frame
        finally:
            storage.close()
        return Run(result.frames, result.elapsed_s, boxes)

    # d ---------------------------------------------------------------------
    def ultralytics_tracker(self, tracker_yaml: str):
        from ultralytics import YOLO

        from storelens.backends.detectors import resolve_weights

        d = self.config.detector
        model = YOLO(resolve_weights(d.weights), task="detect")
        kwargs = dict(tracker=tracker_yaml, persist=True, stream=True, classes=d.classes, imgsz=d.imgsz,
                      conf=d.confidence, iou=d.iou, device=d.device, verbose=False)

        def run(timed: bool = True) -> Run:
            if model.predictor is not None and hasattr(model.predictor, "trackers"):
                del model.predictor.trackers  # fresh tracker state (persist=True re-creates it)
            n = boxes = 0
            t0 = time.perf_counter()
            for img in sampled_images(self.cam, self.limit if timed else self.warmup):
                for r in model.track(img, **kwargs):
                    if r.boxes is not None and r.boxes.is_track:
                        boxes += len(r.boxes.id)
                n += 1
            return Run(n, time.perf_counter() - t0, boxes)

        run.model = model  # type: ignore[attr-defined]
        return run

    def ultralytics_reid_tracker(self):
        """BoT-SORT with ``with_reid: True, model: auto``; records which ReID features it really used."""
        run = self.ultralytics_tracker(self.reid_tracker_yaml())
        weights = pathlib.Path(self.config.detector.weights).name

        def wrapped(timed: bool = True) -> Run:
            try:
                out = run(timed)
            except ModuleNotFoundError:
                raise
            except Exception as exc:
                if weights.endswith(".pt"):
                    raise
                # Ultralytics reuses the detector's feature maps only for PyTorch YOLO models; for
                # exported weights it loads a separate classifier (yolo26n-cls.pt) as the ReID model.
                raise RuntimeError(f"{weights} is not a .pt model, so `model: auto` loads yolo26n-cls.pt "
                                   f"as ReID model instead, which failed: {short_reason(exc)}") from exc
            trackers = getattr(run.model.predictor, "trackers", None) or [None]
            encoder = getattr(trackers[0], "encoder", None)
            if hasattr(encoder, "model"):  # an ultralytics ReID object: a separate model, not the detector's features
                name = pathlib.Path(str(getattr(encoder.model, "ckpt_path", None) or "a separate model")).name
                self.row_notes["d3"] = f"ReID features from {name}, not from the detector"
            elif encoder is not None:
                self.row_notes["d3"] = "ReID features from the detector's own feature maps"
            return out

        return wrapped

    def reid_tracker_yaml(self) -> str:
        from ultralytics.utils import YAML
        from ultralytics.utils.checks import check_yaml

        cfg = dict(YAML.load(check_yaml("botsort.yaml")))
        cfg.update(with_reid=True, model="auto")
        path = os.path.join(self._tmp.name, "botsort_reid.yaml")
        YAML.save(path, cfg)
        return path


# -- report ----------------------------------------------------------------------


def machine_info() -> list[str]:
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except Exception:
        torch_threads = "?"
    return [
        cpu_line(),
        f"- OMP_NUM_THREADS: {OMP_AT_START or 'unset'} at start, {os.environ.get('OMP_NUM_THREADS', 'unset')} after "
        f"importing ultralytics; torch intra-op threads: {torch_threads}",
        python_line(),
        "- torch " + version("torch") + ", ultralytics " + version("ultralytics") + ", openvino " + version("openvino")
        + ", opencv " + cv2.__version__ + ", deep-sort-realtime " + version("deep-sort-realtime")
        + ", numpy " + np.__version__,
    ]


def short_reason(exc: BaseException) -> str:
    msg = " ".join(str(exc).replace("\u274c", "").split())
    hint = ""
    if isinstance(exc, ModuleNotFoundError) and exc.name == "lap":
        hint = " (Ultralytics' trackers need it: pip install 'lap>=0.5.12'; YOLO_AUTOINSTALL=False keeps the bench from installing it)"
    msg = msg if len(msg) <= 400 else msg[:400] + "..."
    if type(exc) is RuntimeError and exc.__cause__ is not None:  # our own explanation, already names the cause
        return msg
    return f"{type(exc).__name__}: {msg}{hint}"


def thread_table(rows: list[Row], least_ms: float = 0.3) -> list[str]:
    """``--threads``: each row's CPU ms a frame (medians over its runs), the whole process and by thread."""
    out = [f"CPU time a frame by thread (`--threads`: medians over the runs; threads under {least_ms} ms a frame "
           "summed as \"others\"; a run's CPU includes its set-up and tear-down, e.g. building the pipeline):",
           "", "| row | ms/frame (wall) | CPU ms/frame, process | cores busy | CPU ms/frame by thread |",
           "|---|---:|---:|---:|---|"]
    for r in rows:
        if not (r.fps and r.threads):
            continue
        names = {k for run in r.threads for k in run} - {"*"}
        med = {k: statistics.median(run.get(k, 0.0) for run in r.threads) for k in names}
        total = statistics.median(run["*"] for run in r.threads)
        shown = sorted(((v, k) for k, v in med.items() if v >= least_ms), reverse=True)
        rest = sum(v for v in med.values() if v < least_ms)
        parts = [f"{k} {v:.1f}" for v, k in shown] + ([f"others {rest:.1f}"] if rest >= 0.05 else [])
        wall = 1000.0 / r.fps
        out.append(f"| {r.key} | {wall:.1f} | {total:.1f} | {total / wall:.2f} | {'; '.join(parts)} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="storelens/examples/demo.yaml", help="site config (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=None, help="sampled frames per run (default: the whole video)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per row; the median is reported (default: 1)")
    ap.add_argument("--only", default=",".join(GROUPS), help="row groups to run, e.g. a,b (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up frames per row (default: %(default)s)")
    ap.add_argument("--threads", action="store_true",
                    help="also print each row's CPU time a frame by thread (Linux: /proc/self/task)")
    args = ap.parse_args(argv)

    only = {g.strip() for g in args.only.split(",") if g.strip()}
    if not only or only - set(GROUPS):
        ap.error(f"--only takes a comma-separated subset of {','.join(GROUPS)}")
    if args.frames is not None and args.frames < 1:
        ap.error("--frames must be >= 1")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.threads and not os.path.isdir("/proc/self/task"):
        ap.error("--threads reads /proc/self/task, which this system does not have (Linux only)")

    cfg_path = pathlib.Path(args.config)
    if not cfg_path.exists() and not cfg_path.is_absolute() and (REPO / cfg_path).exists():
        cfg_path = REPO / cfg_path
    config = load_config(cfg_path)
    warnings.filterwarnings("ignore")
    load_start = os.getloadavg()

    bench = Bench(config, args.frames, args.warmup)
    cam = bench.cam
    emb = getattr(config.tracker, "embedder", "mobilenet-openvino")  # rows b1/b2 are deep-sort's
    rows: list[Row] = []
    runners: dict[str, Callable[..., Run]] = {}
    runs: dict[str, list[Run]] = {}

    def fail(r: Row, exc: BaseException) -> None:  # a row that cannot run is reported, not fatal
        log(f"[{r.key}] failed:\n{traceback.format_exc()}")
        r.note = "n/a: " + short_reason(exc)
        runners.pop(r.key, None)

    def row(key: str, what: str, prepare: Callable[[], Callable[..., Run]]) -> None:
        """Load the row's models and warm it up (untimed)."""
        r = Row(key, what)
        rows.append(r)
        try:
            log(f"[{key}] load + warm-up")
            fn = prepare()
            fn(timed=False)
            runners[key] = fn
            runs[key] = []
        except Exception as exc:
            fail(r, exc)

    try:
        if "a" in only:
            row("a", "detector alone (OpenCV decode + detect)", lambda: bench.run_detector)
        if "b" in only:
            row("b0", "JPEG decode + detect (no tracker)", lambda: bench.run_jpeg_detect)
            row("b1", f"DetectTrackStage, deep-sort + {emb} (JPEG decode + detect + embed + track)",
                lambda: lambda timed=True: bench.run_stage(emb, timed))
            row("b2", "DetectTrackStage, deep-sort + mobilenet-torch (224x224 crops)",
                lambda: lambda timed=True: bench.run_stage("mobilenet-torch", timed))
        if "c" in only:
            hop = {"bgr": "raw frames", "jpeg": "JPEG"}[config.pipeline.frames]  # pipeline.frames
            if config.faces.enabled:
                row("c0", f"EmbeddedPipeline.run(), faces off (ingest + {hop} + protobuf bus + detect-track + "
                    "analytics + SQLite)", lambda: lambda timed=True: bench.run_pipeline(timed, faces=False))
            if config.pipeline.frames == "jpeg":
                row("c0b", "EmbeddedPipeline.run(), faces off, `pipeline.frames: bgr` (ingest + raw frames + "
                    "protobuf bus + detect-track + analytics + SQLite)",
                    lambda: lambda timed=True: bench.run_pipeline(timed, faces=False, frames="bgr"))
            faces_on = " + faces: detection, attributes, re-id" if config.faces.enabled else ""
            row("c", f"EmbeddedPipeline.run() (ingest + {hop} + protobuf bus + detect-track + analytics + SQLite"
                f"{faces_on})", lambda: bench.run_pipeline)
        if "d" in only:
            row("d1", "Ultralytics YOLO.track, BoT-SORT (botsort.yaml, no ReID)",
                lambda: bench.ultralytics_tracker("botsort.yaml"))
            row("d2", "Ultralytics YOLO.track, ByteTrack (bytetrack.yaml)",
                lambda: bench.ultralytics_tracker("bytetrack.yaml"))
            row("d3", "Ultralytics YOLO.track, BoT-SORT + ReID (with_reid: True, model: auto)",
                bench.ultralytics_reid_tracker)
        # Timed rounds, round-robin over the rows, so a burst of background load
        # does not land on a single row; each row reports its median.
        for i in range(args.repeat):
            for r in rows:
                if r.key not in runners:
                    continue
                try:
                    if args.threads:
                        run, cpu = cpu_by_thread(lambda: runners[r.key](timed=True))
                        r.threads = (r.threads or []) + [{k: v * 1000 / max(1, run.frames) for k, v in cpu.items()}]
                    else:
                        run = runners[r.key](timed=True)
                except Exception as exc:
                    fail(r, exc)
                    continue
                runs[r.key].append(run)
                log(f"[{r.key}] run {i + 1}/{args.repeat}: {run.frames} frames in {run.elapsed_s:.2f} s = "
                    f"{run.fps:.2f} fps, {run.boxes / max(1, run.frames):.1f} boxes/frame")
        for r in rows:
            if r.key in runners and runs[r.key]:
                r.fps = statistics.median(x.fps for x in runs[r.key])
                r.frames = runs[r.key][0].frames
    finally:
        bench.close()

    base = next((r.fps for r in rows if r.key == "a" and r.fps), None)
    script = os.path.relpath(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else "bench/bench_pipeline.py"
    command = "python " + shlex.join([script, *sys.argv[1:]])
    counts = sorted({r.frames for r in rows if r.fps})
    main_count = next((r.frames for r in rows if r.fps and r.key not in ("c", "c0", "c0b")), counts[0] if counts else 0)
    w = cam.resize_width or "source"
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    out = [
        f"Command: `{command}`",
        "",
        f"Video: `{pathlib.Path(cam.source).name}` sampled at {cam.target_fps or 'source'} fps, resized to width {w}; "
        f"{main_count or 'no'} frames per run; median of {args.repeat} run(s) after {args.warmup} warm-up frames.",
        f"Detector: `{pathlib.Path(config.detector.weights).name}`, imgsz {config.detector.imgsz}, "
        f"conf {config.detector.confidence}, iou {config.detector.iou}, classes {config.detector.classes}, "
        f"device {config.detector.device}.",
        "",
        *machine_info(),
        f"- load average at start / end: {' '.join(f'{x:.2f}' for x in load_start)} / "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        "| what | fps | ms/frame | relative to detector alone |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        if r.fps:
            rel = f"{r.fps / base:.2f}x" if base else "-"
            what = r.what + (f" [{bench.row_notes[r.key]}]" if r.key in bench.row_notes else "")
            out.append(f"| {r.key}: {what} | {r.fps:.2f} | {1000.0 / r.fps:.1f} | {rel} |")
        else:
            reason = (r.note or "n/a").replace("|", "/")
            out.append(f"| {r.key}: {r.what} | n/a | n/a | {reason} |")
    for r in rows:
        if r.key in ("c", "c0", "c0b") and r.fps and r.frames != main_count:
            out.append(f"\nRow {r.key} processed {r.frames} frames: the pipeline is stopped once `--frames` frames "
                       "have gone through analytics (or when the video ends); frames still queued are not processed.")
    if args.threads:
        out += ["", *thread_table(rows)]
    out += ["", f"Peak RSS of the benchmark process (all models above loaded): {peak_mib:.0f} MiB"]
    print("\n".join(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
