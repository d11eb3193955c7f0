#!/usr/bin/env python
"""Faces per second through the attributes and reid stages (the services' processing code), as Markdown.

Person crops are the real output of detect-track (YOLO + DeepSORT) on videos
built from the labelled identity photos (:mod:`storelens.backends.face_video`; the
same two visits as tests/test_faces_pipeline.py). Each stage then processes
every crop exactly as its service does for a ``person-crops`` message
(JPEG decode, YuNet on the crop, quality gate, then age/gender + emotion, or
dlib embedding + FAISS match + visit bookkeeping), one thread, timed per crop.
Kafka transport is not included (tests/test_distributed_faces.py runs the services).

    python bench/bench_faces_stages.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchlib import cpu_line, python_line, version  # noqa: E402


def collect_crops(tmp: str) -> list:
    from storelens.contract import messages as m
    from storelens.contract import topics
    from storelens.runtime.bus import InProcessBus
    from storelens.config import parse_config
    from storelens.backends.face_video import write_visit_video
    from storelens.paths import asset
    from storelens.runtime.embedded import EmbeddedPipeline

    people = [("obama", "obama.jpg"), ("biden", "biden.jpg"), ("kit_harington", "john1.jpeg"),
              ("obama", "obama2.jpg"), ("alex_lacamoire", "img1.jpg"), ("biden", "biden2.jpg"),
              ("rose_leslie", "img1.jpg")]
    video = write_visit_video([asset("faces", "identities", p, f) for p, f in people], os.path.join(tmp, "v.avi"),
                              hold_frames=20, gap_frames=12)
    cfg = parse_config({"store": {"id": "bench"}, "cameras": [{"id": "door", "source": str(video)}],
                        "tracker": {"track_buffer": 8}, "crops": {"every_n_frames": 5}})
    bus = InProcessBus(maxsize=0)
    sub = bus.subscribe(topics.PERSON_CROPS)
    EmbeddedPipeline(cfg, bus=bus).run()
    crops = []
    while (msg := sub.poll(timeout_s=0.1)) is not None and msg.value != b"__stop__":
        crop = m.decode(m.PersonCrop, msg.value)
        if not crop.end_of_stream:
            crops.append(crop)
    return crops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import numpy as np

    from storelens.config import parse_config
    from storelens.storage.gallery import FaceGallery, SqliteGalleryStore
    from storelens.stages.faces import AttributesStage, ReidStage

    with tempfile.TemporaryDirectory() as tmp:
        crops = collect_crops(tmp)
        cfg = parse_config({"store": {"id": "bench"}, "cameras": [{"id": "door", "source": "x"}],
                            "faces": {"enabled": True}})
        t0 = time.perf_counter()
        attributes = AttributesStage(cfg)
        load_attr = time.perf_counter() - t0
        t0 = time.perf_counter()
        reid = ReidStage(cfg, FaceGallery(cfg.faces.gallery, store=SqliteGalleryStore(os.path.join(tmp, "g.db"))))
        load_reid = time.perf_counter() - t0
        rows = []
        for name, stage in (("attributes", attributes), ("reid", reid)):
            per_crop, faces = [], 0
            for r in range(args.rounds):
                for i, crop in enumerate(crops):
                    c = type(crop)()
                    c.CopyFrom(crop)
                    c.seq = r * 100_000 + i  # every round is new input (no redelivery skip)
                    c.track_id = crop.track_id + r * 1000
                    t = time.perf_counter()
                    stage.process(c)
                    per_crop.append(time.perf_counter() - t)
            faces = stage.stats["faces"]
            total = sum(per_crop)
            rows.append((name, len(per_crop), faces, stage.stats.get("accepted", 0), total,
                         statistics.median(per_crop) * 1000, float(np.percentile(per_crop, 95)) * 1000))
    print("## Faces through the attributes and reid stages\n")
    print(f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`\n")
    print(cpu_line())
    print(python_line())
    print(f"- onnxruntime {version('onnxruntime')}, torch {version('torch')}, dlib-bin {version('dlib-bin')}, "
          f"faiss-cpu {version('faiss-cpu')}, opencv {version('opencv-python-headless')}")
    print(f"- {len(crops)} real person crops from detect-track on the identity-photo video, x{args.rounds} rounds; "
          f"model load: attributes {load_attr:.1f} s, reid {load_reid:.1f} s\n")
    print("| stage | crops | faces found | passed gate | crops/s | faces/s | median ms/crop | p95 ms/crop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, faces, acc, total, med, p95 in rows:
        print(f"| {name} | {n} | {faces} | {acc} | {n / total:.1f} | {faces / total:.1f} | {med:.1f} | {p95:.1f} |")
    print("\nreid embeds only until a track is decided (faces.reid.faces_per_decision = "
          f"{cfg.faces.reid.faces_per_decision}); later crops of a decided track only extend its visit.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
