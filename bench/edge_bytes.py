#!/usr/bin/env python
"""Bytes per camera-minute that would cross the store's uplink in each edge/cloud split.

Runs the real embedded pipeline (``EmbeddedPipeline``: ingest, detect-track, analytics; the
same stages, protobuf encoding and keys as the Kafka services) on real footage from
``$STORELENS_ASSETS`` and counts, per topic, the bytes of every message published (key +
protobuf value, exactly what a Kafka producer sends, without Kafka's own record/batch
overhead and compression):

  frames        ``storelens.v1.Frame``: the JPEG frames ingest publishes (edge -> cloud when
                only ingest runs in the store)
  tracks        ``storelens.v1.TrackedFrame``: detect-track's output (boxes, ids)
  person-crops  ``storelens.v1.PersonCrop``: the person crops attributes and reid consume
  snapshots     ``storelens.v1.CameraSnapshot``: the reference frames of the heatmaps

A camera-minute is 60 s of the source video (frames / source fps), sampled as the
camera's ``target_fps`` and ``resize_width`` say; the default camera settings are those of
the example store overlay (10 fps, 960 px wide). Prints a Markdown table and the command.

    python bench/edge_bytes.py                              # every clip below
    python bench/edge_bytes.py --clips caviar-feecp1 --target-fps 5
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import sys
import time
from collections import defaultdict

os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib import cpu_line, python_line  # noqa: E402

from storelens.backends.video import source_fps  # noqa: E402
from storelens.config import parse_config  # noqa: E402
from storelens.contract import messages as m  # noqa: E402
from storelens.contract import topics  # noqa: E402
from storelens.runtime.bus import InProcessBus  # noqa: E402
from storelens.runtime.embedded import EmbeddedPipeline  # noqa: E402
from storelens.runtime.transports import END_OF_TOPIC  # noqa: E402

#: name -> (path under $STORELENS_ASSETS, what it shows, resize the frames to 960 px?)
CLIPS = {
    "people-street": ("video/people_street.mp4", "1920x1080 busy street, ~20 people", True),
    "caviar-feecp1": ("video/caviar/EnterExitCrossingPaths1front/EnterExitCrossingPaths1front.mp4",
                      "384x288 shop entrance, 2-4 people", False),
    "caviar-fols1": ("video/caviar/OneLeaveShop1front/OneLeaveShop1front.mp4",
                     "384x288 shop entrance, 1-3 people", False),
}
#: Topic of each measured column.
COLUMNS = {"frames": topics.FRAMES, "tracks": topics.TRACKS, "person-crops": topics.PERSON_CROPS,
           "snapshots": topics.CAMERA_SNAPSHOTS}


#: Messages that carry ``end_of_stream`` (sent once when a file source ends).
END_OF_STREAM = {topics.FRAMES: m.Frame, topics.TRACKS: m.TrackedFrame, topics.PERSON_CROPS: m.PersonCrop}


class CountingBus(InProcessBus):
    """The in-process bus, counting the messages and bytes (key + value) published per topic."""

    def __init__(self, maxsize: int = 8) -> None:
        super().__init__(maxsize=maxsize)
        self.bytes: dict[str, int] = defaultdict(int)
        self.messages: dict[str, int] = defaultdict(int)

    def publish(self, topic: str, key: bytes, value: bytes, headers=()) -> None:
        # Neither the embedded end-of-topic marker nor a file's end-of-stream message is traffic
        # a live camera makes.
        eos = topic in END_OF_STREAM and (value == END_OF_TOPIC or END_OF_STREAM[topic].FromString(value).end_of_stream)
        if value != END_OF_TOPIC and not eos:
            self.bytes[topic] += len(key) + len(value)
            self.messages[topic] += 1
        super().publish(topic, key, value, headers)


def site(assets: pathlib.Path, clip: str, target_fps: float, resize: bool, jpeg_quality: int,
         crop_min_height: int | None = None) -> dict:
    path, _, big = CLIPS[clip]
    cam = {"id": clip, "source": str(assets / path), "target_fps": target_fps, "jpeg_quality": jpeg_quality}
    if big and resize:
        cam["resize_width"] = 960
    extra = {"crops": {"min_height_px": crop_min_height}} if crop_min_height else {}
    return {
        **extra,
        "store": {"id": "bench"},
        "cameras": [cam],
        "detector": {"weights": str(assets / "models/yolo11n_int8_openvino_model"), "confidence": 0.35,
                     "imgsz": 640, "device": "cpu", "threads": 2},
        "tracker": {"backend": "deepsort", "embedder": "mobilenet-openvino"},
    }


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} GB"


def measure(assets: pathlib.Path, clip: str, target_fps: float, resize: bool, jpeg_quality: int,
            crop_min_height: int | None = None) -> dict:
    cfg = parse_config(site(assets, clip, target_fps, resize, jpeg_quality, crop_min_height),
                       origin=f"edge_bytes {clip}")
    import cv2

    cap = cv2.VideoCapture(cfg.cameras[0].source)
    n_src = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    minutes = n_src / source_fps(cfg.cameras[0].source) / 60
    bus = CountingBus()
    t0 = time.perf_counter()
    result = EmbeddedPipeline(cfg, bus=bus).run()
    return {"clip": clip, "minutes": minutes, "frames": result.frames, "elapsed_s": time.perf_counter() - t0,
            "bytes": dict(bus.bytes), "messages": dict(bus.messages),
            "size": f"{cfg.cameras[0].resize_width or 'source'} px",
            "snapshot_every_min": cfg.heatmap.snapshot_every_min}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default=",".join(CLIPS), help=f"comma-separated, of {', '.join(CLIPS)}")
    ap.add_argument("--target-fps", type=float, default=10.0, help="ingest sampling rate (default 10)")
    ap.add_argument("--jpeg-quality", type=int, default=90, help="ingest JPEG quality (default 90)")
    ap.add_argument("--crop-min-height", type=int, default=None,
                    help="crops.min_height_px (default: the config default, 96 source px)")
    ap.add_argument("--no-resize", action="store_true", help="publish 1080p frames at source size")
    args = ap.parse_args(argv)
    assets = pathlib.Path(os.environ.get("STORELENS_ASSETS", "/work/shared/assets"))
    clips = [c.strip() for c in args.clips.split(",") if c.strip()]
    unknown = [c for c in clips if c not in CLIPS]
    if unknown:
        ap.error(f"unknown clip(s) {unknown}; choose from {list(CLIPS)}")
    rows = []
    for clip in clips:
        print(f"running {clip} ...", file=sys.stderr, flush=True)
        rows.append(measure(assets, clip, args.target_fps, not args.no_resize, args.jpeg_quality,
                            args.crop_min_height))

    print(f"Command: `{' '.join(shlex.quote(a) for a in ['python', 'bench/edge_bytes.py', *(argv or sys.argv[1:])])}`")
    print(cpu_line())
    print(python_line())
    print(f"- ingest: {args.target_fps:g} fps, JPEG quality {args.jpeg_quality}; crops: a track every 10 of its "
          f"frames, people >= {args.crop_min_height or 96} source px tall; snapshots: the steady rate "
          "(one per `heatmap.snapshot_every_min`, 60)")
    print()
    print("Bytes per camera-minute (key + protobuf value as published; Kafka record overhead and "
          "compression not included):")
    print()
    print("| clip | frame size | frames sampled | frames | tracks | person-crops | snapshots | uplink (tracks + crops + snapshots) | "
          "frames / uplink |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per_min = {k: r["bytes"].get(t, 0) / r["minutes"] for k, t in COLUMNS.items()}
        # One snapshot at start, then one every heatmap.snapshot_every_min: the steady rate, not
        # the start-up one extrapolated from a short clip.
        n_snap = r["messages"].get(topics.CAMERA_SNAPSHOTS, 0)
        per_min["snapshots"] = (r["bytes"].get(topics.CAMERA_SNAPSHOTS, 0) / n_snap / r["snapshot_every_min"]
                                if n_snap and r["snapshot_every_min"] else 0.0)
        edge = per_min["tracks"] + per_min["person-crops"] + per_min["snapshots"]
        ratio = per_min["frames"] / edge if edge else float("inf")
        desc = CLIPS[r["clip"]][1].split(" ")[0]
        print(f"| {r['clip']} ({desc}) | {r['size']} | {r['frames']} | {human(per_min['frames'])} | "
              f"{human(per_min['tracks'])} | {human(per_min['person-crops'])} | {human(per_min['snapshots'])} | "
              f"{human(edge)} | {ratio:.0f}x |")
    print()
    print("Messages and mean message size:")
    print()
    print("| clip | source minutes | frames (n, mean) | tracks (n, mean) | person-crops (n, mean) | run time |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = []
        for k in ("frames", "tracks", "person-crops"):
            n = r["messages"].get(COLUMNS[k], 0)
            cells.append(f"{n}, {human(r['bytes'].get(COLUMNS[k], 0) / n) if n else '-'}")
        print(f"| {r['clip']} | {r['minutes']:.3f} | {' | '.join(cells)} | {r['elapsed_s']:.1f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
