#!/usr/bin/env python
"""Cameras per machine: how many 480x360 cameras at 5 fps one machine detects and tracks in real time.

* ``storelens``: the product itself: N cameras through :class:`~storelens.runtime.embedded.EmbeddedPipeline`
  (ingest, detect-track batching the cameras, ``pipeline.batch_cameras``: one detector call and ONE re-id
  inference for the frames of several cameras; analytics), each camera a 480x360 5 fps file made from the
  clips below, with the site's default detector and tracker. Ingest reads files as fast as it can (no pacing
  option exists for file sources), so the bench paces them itself: camera frame k is published no earlier
  than k / 5 s after the start (a live camera), and the lag is measured from that moment to the tracked
  frame reaching analytics. Per N: unpaced camera-frames/s (capacity), then the paced run's lag and
  whether it kept up (:func:`kept_up`: the capacity per camera at least the cameras' fps, the lag not growing
  over the run and its second half below :data:`LAG_OK_S`; the table says which failed).
* ``ultralytics``: one ``YOLO.track()`` process per camera (ByteTrack), all running at once, as a user
  would deploy it, each reading the same ready-made 480x360 5 fps file as the pipeline's camera (decoded in its
  timed loop, as ingest decodes it). The export is a static 640x640 one: Ultralytics letterboxes every frame to
  640x640 (its ``imgsz`` 640); with ``--rect`` our detector runs at the frames' 4:3 instead (the header says so).

Sources: the visible 25 fps sequences (TUD-Stadtmitte, TUD-Campus, the CAVIAR
clips) resized to 480x360 and sampled to 5 fps (every 5th frame, all frames
decoded), camera k starting at a different clip.

    python bench/cameras.py [--cameras 1,2,4,6,8] [--frames 100] [--skip-ultralytics] [--frame-format bgr] \
        [--rect [--imgsz 480]]

(Until 2026-12-03 a second mode hand-copied the detect-track loop; it is gone: the runs measure the pipeline.)
"""
from __future__ import annotations

import argparse
import collections
import shlex
import subprocess
import sys
import threading
import time

import numpy as np

import benchlib
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime.bus import InProcessBus

FPS = 5
#: The embedded run kept up only if every frame of its second half reached analytics within this many seconds ...
LAG_OK_S = 1.0
#: ... and its lag did not grow: the median lag of the paced run's last quarter at most this much above the median
#: of its first quarter. A capacity just below the cameras' rate makes the lag grow steadily: a short run ends
#: before it reaches :data:`LAG_OK_S` (6 cameras at 4.7 fps each kept up over 30 frames, not over 100), but the
#: growth shows (~0.06 s of lag per second of run for a 6% shortfall). Batching jitter moves the quarter medians
#: by less (~0.1 s at 8 cameras).
LAG_GROWTH_OK_S = 0.25
#: Frames per camera per measurement by default (20 s of 5 fps: a verdict over 30-40 frames said little).
DEFAULT_FRAMES = 100
#: Ultralytics' ``imgsz`` in ``model.track`` (the static export's own 640x640).
ULTRALYTICS_IMGSZ = 640
STRIDE = 5  # 25 fps sources -> 5 fps
SIZE = (480, 360)
WEIGHTS = asset("models", "yolo11n_int8_openvino_model")
CLIPS = [asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4"), asset("mot", "TUD-Campus", "TUD-Campus.mp4"),
         asset("video", "caviar", "OneLeaveShop1front", "OneLeaveShop1front.mp4"),
         asset("video", "caviar", "EnterExitCrossingPaths1front", "EnterExitCrossingPaths1front.mp4"),
         asset("video", "caviar", "OneLeaveShopReenter1front", "OneLeaveShopReenter1front.mp4")]


class Camera:
    """A looping file source sampled to 5 fps and resized to 480x360, decoded as a camera would be."""

    def __init__(self, k: int) -> None:
        import cv2

        self.cv2, self.path = cv2, str(CLIPS[k % len(CLIPS)])
        self.cap = cv2.VideoCapture(self.path)
        for _ in range(7 * k):  # cameras sharing a clip start at different frames
            self.cap.grab()

    def read(self) -> np.ndarray:
        for _ in range(STRIDE - 1):
            if not self.cap.grab():
                self.cap = self.cv2.VideoCapture(self.path)
        ok, img = self.cap.read()
        if not ok:
            self.cap = self.cv2.VideoCapture(self.path)
            ok, img = self.cap.read()
        return self.cv2.resize(img, SIZE, interpolation=self.cv2.INTER_AREA)


def write_camera_file(k: int, frames: int, path: str) -> str:
    """Camera k's first ``frames`` frames as a 480x360 5 fps file at ``path`` (what a live camera at 5 fps would
    deliver): the file both the pipeline and the Ultralytics processes read."""
    import cv2

    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    cam = Camera(k)
    for _ in range(frames):
        out.write(cam.read())
    out.release()
    return path


class FileFrames:
    """A camera file of :func:`write_camera_file` read frame by frame (looping at its end), as the Ultralytics
    processes read it."""

    def __init__(self, path: str) -> None:
        import cv2

        self.cv2, self.path = cv2, path
        self.cap = cv2.VideoCapture(path)

    def read(self) -> np.ndarray:
        ok, img = self.cap.read()
        if not ok:
            self.cap.release()
            self.cap = self.cv2.VideoCapture(self.path)
            ok, img = self.cap.read()
        if not ok:
            raise RuntimeError(f"cannot read {self.path}")
        return img


def kept_up(per_camera_fps: float, lags_s: list[float], fps: float = FPS) -> tuple[bool, str]:
    """Whether N cameras at ``fps`` each were processed in real time, and why not: the unpaced capacity per camera
    (``per_camera_fps``) at least ``fps``, the paced run's lags (``lags_s``, in frame order) not growing (median of
    the last quarter at most :data:`LAG_GROWTH_OK_S` above that of the first) and its second half under
    :data:`LAG_OK_S`."""
    why = []
    if per_camera_fps < fps:
        why.append(f"capacity {per_camera_fps:.1f} < {fps:g} fps")
    q = len(lags_s) // 4
    if q == 0:
        why.append("too few frames")
    else:
        growth = float(np.median(lags_s[-q:]) - np.median(lags_s[:q]))
        if growth > LAG_GROWTH_OK_S:
            why.append(f"lag grew {growth:.2f} s")
        if max(lags_s[len(lags_s) // 2:]) >= LAG_OK_S:
            why.append(f"lag >= {LAG_OK_S:g} s")
    return not why, "; ".join(why)


class Embedded:
    """N file cameras through the embedded pipeline, the models loaded once for every run."""

    def __init__(self, frames: int, workdir: str, frame_format: str = "jpeg", rect: bool = False,
                 imgsz: int | None = None) -> None:
        from storelens.backends.detectors import build_detector
        from storelens.backends.trackers import tracker_factory

        self.frames, self.workdir, self.files, self.frame_format, self.rect = frames, workdir, {}, frame_format, rect
        self.imgsz = imgsz  # with rect: detector.imgsz (None: the export's own size)
        site = self.site(1)
        self.detector = build_detector(site.detector)
        self.embedder = tracker_factory(site.tracker)().embedder  # one re-id model, shared by every camera
        self.detector.detect_many([np.zeros((SIZE[1], SIZE[0], 3), np.uint8)] * 2)  # the batched path warmed up

    def file(self, k: int) -> str:
        """Camera k's frames as a 480x360 5 fps file (what a live camera at 5 fps would deliver)."""
        if k not in self.files:
            self.files[k] = write_camera_file(k, self.frames, f"{self.workdir}/camera{k}.mp4")
        return self.files[k]

    def site(self, n: int):
        from storelens.config import parse_config

        detector = {"weights": str(WEIGHTS), "confidence": 0.1, "rect": self.rect}
        if self.imgsz is not None:
            detector["imgsz"] = self.imgsz
        return parse_config({"store": {"id": "bench"}, "tracker": {"backend": "bytereid"}, "detector": detector,
                             "pipeline": {"batch_cameras": max(1, min(n, 64)), "frames": self.frame_format},
                             "cameras": [{"id": f"cam{k}", "source": self.file(k)} for k in range(n)]})

    def run(self, n: int, paced: bool) -> tuple[float, list[float], dict[int, int]]:
        """(camera-frames/s, each frame's lag in s when paced, frames per detector call -> calls)."""
        from storelens.backends.trackers import build_tracker
        from storelens.runtime.embedded import EmbeddedPipeline

        cfg = self.site(n)
        bus = PacedBus(FPS if paced else None)
        lags: list[float] = []

        def tracked(tf) -> None:
            if paced:
                lags.append(time.perf_counter() - bus.due(tf.seq))

        res = EmbeddedPipeline(cfg, detector=self.detector, bus=bus, on_tracked=tracked,
                               tracker_factory=lambda: build_tracker(cfg.tracker, self.embedder)).run()
        return res.frames / res.elapsed_s, lags, res.detect_batches


class PacedBus(InProcessBus):
    """The in-process bus, with each camera's k-th frame published no earlier than ``k / fps`` s after the first
    (``fps`` None: as fast as ingest reads)."""

    def __init__(self, fps: float | None) -> None:
        super().__init__(maxsize=8)  # as EmbeddedPipeline's own bus
        self.period_s = 1.0 / fps if fps else 0.0
        self.t0: float | None = None
        self._sent: collections.Counter[bytes] = collections.Counter()
        self._pace = threading.Lock()

    def due(self, k: int) -> float:
        """When camera frame ``k`` is due (``time.perf_counter()`` clock)."""
        return (self.t0 or 0.0) + k * self.period_s

    def publish(self, topic: str, key: bytes, value: bytes, headers=()) -> None:
        if topic == topics.FRAMES and key and self.period_s:
            with self._pace:
                self.t0 = self.t0 if self.t0 is not None else time.perf_counter()
                k = self._sent[key]
                self._sent[key] += 1
            if (wait := self.due(k) - time.perf_counter()) > 0:
                time.sleep(wait)
        super().publish(topic, key, value, headers)


def embedded_table(ns: list[int], frames: int, ultralytics: bool = True, frame_format: str = "jpeg",
                   rect: bool = False, imgsz: int | None = None) -> None:
    import tempfile

    print(f"Embedded pipeline (ingest -> detect-track batching the cameras -> analytics), {SIZE[0]}x{SIZE[1]}, "
          f"{frames} frames per camera, `pipeline.frames: {frame_format}`, `detector.rect: {str(rect).lower()}`"
          f"{'' if imgsz is None else f', `detector.imgsz: {imgsz}`'}; paced: camera frame k published at "
          f"k / {FPS} s. Ultralytics: `model.track(imgsz={ULTRALYTICS_IMGSZ})`, the static export letterboxed to "
          f"{ULTRALYTICS_IMGSZ}x{ULTRALYTICS_IMGSZ}"
          f"{' (differs from our detector: rect at the frames 4:3)' if rect else ''}, reading the same camera files\n")
    print("| cameras | unpaced: camera-frames/s | per camera fps | frames per detector call | "
          f"paced at {FPS} fps: lag median / p95 / max (ms) | kept up (capacity >= {FPS} fps, lag not growing "
          f"by > {LAG_GROWTH_OK_S:g} s, < {LAG_OK_S:g} s) | "
          "Ultralytics, one YOLO.track() process per camera: per camera fps (slowest), unpaced |")
    print("|---:|---:|---:|---:|---|---|---:|")
    with tempfile.TemporaryDirectory(prefix="bench-cameras-") as tmp:
        emb = Embedded(frames, tmp, frame_format, rect, imgsz)
        for n in ns:
            rate, _, batches = emb.run(n, paced=False)
            per_call = sum(k * c for k, c in batches.items()) / max(1, sum(batches.values())) if batches else 1.0
            _, lags, _ = emb.run(n, paced=True)
            ok, why = kept_up(rate / n, lags)
            ul = f"{ultralytics_processes([emb.file(k) for k in range(n)], frames):.1f}" if ultralytics else "-"
            print(f"| {n} | {rate:.1f} | {rate / n:.1f} | {per_call:.2f} | {np.median(lags) * 1000:.0f} / "
                  f"{np.percentile(lags, 95) * 1000:.0f} / {max(lags) * 1000:.0f} | "
                  f"{'yes' if ok else f'no ({why})'} | {ul} |", flush=True)


def ultralytics_child(path: str, frames: int) -> None:
    """One camera's ``YOLO.track()`` process on its camera file (:func:`write_camera_file`, the pipeline's own);
    prints its frames per second after model loading."""
    from ultralytics import YOLO

    def track(img: np.ndarray) -> None:
        model.track(img, tracker="bytetrack.yaml", imgsz=ULTRALYTICS_IMGSZ, classes=[0], verbose=False, persist=True)

    model = YOLO(str(WEIGHTS), task="detect")
    track(FileFrames(path).read())  # warm-up, then the file from its start
    cam = FileFrames(path)
    t0 = time.perf_counter()
    for _ in range(frames):
        track(cam.read())
    print(frames / (time.perf_counter() - t0))


def ultralytics_processes(paths: list[str], frames: int) -> float:
    """Per-camera fps (the slowest camera) with one ``YOLO.track()`` process per camera file, all at once."""
    procs = [subprocess.Popen([sys.executable, __file__, "_ultralytics", path, str(frames)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for path in paths]
    return min(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_ultralytics":
        ultralytics_child(sys.argv[2], int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", default="1,2,4,6,8")
    ap.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                    help=f"frames per camera per measurement (default {DEFAULT_FRAMES}: {DEFAULT_FRAMES // FPS} s)")
    ap.add_argument("--skip-ultralytics", action="store_true")
    ap.add_argument("--frame-format", choices=("jpeg", "bgr"), default="jpeg",
                    help="pipeline.frames: jpeg (the default, as the services) or bgr (raw pixels, no JPEG hop)")
    ap.add_argument("--rect", action="store_true", help="detector.rect: true (the detector at the frames' 4:3)")
    ap.add_argument("--imgsz", type=int, help="with --rect: detector.imgsz, the frame fitted into it (480: these "
                    "cameras' own 480x360, not enlarged to 640x480; default: the export's 640)")
    ap.add_argument("--embedded", action="store_true",
                    help="(the only mode now; accepted so that the commands recorded in BENCHMARKS.md still run)")
    args = ap.parse_args()
    if args.imgsz is not None and not args.rect:
        raise SystemExit("--imgsz needs --rect (a fixed 640x640 export runs at 640 otherwise)")
    ns = [int(x) for x in args.cameras.split(",")]
    print(f"Command: `{shlex.join(['python', 'bench/cameras.py', *sys.argv[1:]])}`\n")
    print(benchlib.cpu_line())
    print(benchlib.python_line())
    print()
    embedded_table(ns, args.frames, not args.skip_ultralytics, args.frame_format, args.rect, args.imgsz)
    return 0

if __name__ == "__main__":
    sys.exit(main())
