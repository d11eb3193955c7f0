#!/usr/bin/env python
"""Distributed mode on this machine: throughput through Kafka and end-to-end latency.

1. Throughput: frames per second through the bus (ingest -> Kafka -> detect-track
   -> Kafka), measured as the rate at which tracked frames arrive on the tracks
   topic, against the embedded pipeline on the same video and configuration.
2. Latency: a live camera is simulated by publishing the video's frames at its
   real frame rate, stamped with the wall clock (as ingest does for live
   sources); the API is polled every 20 ms and each crossing's latency is the
   time it first appears there minus its frame's timestamp. Median and p95.

Needs the stack (`scripts/stack.sh up`); starts the six services as processes.

    python bench/bench_distributed.py [--config storelens/examples/demo.yaml]
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from storelens.contract import messages as m  # noqa: E402
from storelens.config import KafkaConfig, load_config, parse_config  # noqa: E402
from storelens.runtime.localdeploy import KAFKA, LocalDeployment  # noqa: E402
from storelens.paths import asset  # noqa: E402


def throughput(site: dict, tmp: pathlib.Path) -> tuple[float, float, int]:
    from storelens.runtime.embedded import EmbeddedPipeline
    from storelens.runtime.kafka import KafkaConsumer

    cfg = parse_config(site, base=REPO)
    emb = EmbeddedPipeline(cfg).run()
    dep = LocalDeployment(tmp, site)
    try:
        for name in ("detect-track", "api", "analytics"):
            dep.start(name)
        for name in ("detect-track", "api", "analytics"):
            dep.wait_ready(name)
        c = KafkaConsumer(KafkaConfig(bootstrap_servers=KAFKA, group_prefix=dep.uid), "bench", [f"{dep.uid}.tracks"])
        while not c.assigned:
            c.poll(0.2)
        dep.start("ingest")
        times = []
        while True:
            msg = c.poll(60)
            if msg is None:
                raise RuntimeError("no tracked frame for 60 s")
            tf = m.decode(m.TrackedFrame, msg.value)
            if tf.end_of_stream:
                break
            times.append(time.perf_counter())
        c.close()
        fps = (len(times) - 1) / (times[-1] - times[0])
        return fps, emb.fps, len(times)
    finally:
        dep.shutdown()


def latency(site: dict, tmp: pathlib.Path) -> list[float]:
    from storelens.backends.video import camera_frames
    from storelens.runtime.kafka import KafkaBus

    cam_cfg = parse_config(site, base=REPO).cameras[0]
    dep = LocalDeployment(tmp, site)
    try:
        for name in ("detect-track", "api", "analytics"):
            dep.start(name)
        for name in ("detect-track", "api", "analytics"):
            dep.wait_ready(name)
        frames = [f for f in camera_frames(cam_cfg) if not f.end_of_stream]
        period = 1.0 / (cam_cfg.target_fps or 25.0)
        p = KafkaBus(KafkaConfig(bootstrap_servers=KAFKA), f"{dep.uid}-bench")
        first_seen: dict[str, float] = {}
        ts_of: dict[str, int] = {}
        t0 = time.time()
        api = dep.api  # signed in as the deployment's admin (every route needs sign-in)

        def poll_api() -> None:
            r = api.get(f"/v1/cameras/{cam_cfg.id}/crossings", params={"start_ms": 0, "end_ms": 2**53 - 1})
            r.raise_for_status()
            now = time.time()
            for ev in r.json():
                eid = ev["event_id"]
                if eid not in first_seen:
                    first_seen[eid], ts_of[eid] = now, ev["ts_ms"]

        for i, f in enumerate(frames):  # a live camera: real-time pace, wall-clock stamps
            while time.time() < t0 + i * period:
                poll_api()
                time.sleep(0.02)
            f.ts_ms = int(time.time() * 1000)
            p.publish(f"{dep.uid}.frames", cam_cfg.id.encode(), m.encode(f), headers=m.type_headers(f))
        p.close(30)
        settle = time.time() + 10
        while time.time() < settle:
            poll_api()
            time.sleep(0.02)
        return [(first_seen[e] * 1000 - ts_of[e]) / 1000 for e in first_seen]
    finally:
        dep.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "storelens" / "examples" / "demo.yaml"),
                    help="site config for the throughput run (its first camera)")
    ap.add_argument("--latency-fps", type=float, default=25.0,
                    help="frame rate of the live-paced latency feed (TUD-Stadtmitte is 25 fps; lower samples it)")
    args = ap.parse_args()
    site = yaml.safe_load(pathlib.Path(args.config).read_text())
    load_config(args.config)  # validate early
    site = {k: v for k, v in site.items() if k in ("store", "cameras", "detector", "tracker", "counting")}
    tud = {"store": {"id": "bench"}, "cameras": [{
        "id": "stadtmitte", "source": str(asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")), "target_fps": args.latency_fps,
        "lines": [{"id": f"x{x}", "a": [x, 0], "b": [x, 480]} for x in (120, 200, 280, 360, 440, 520, 600)]}]}
    with tempfile.TemporaryDirectory() as tmp:
        fps_bus, fps_emb, n = throughput(site, pathlib.Path(tmp))
        lat = latency(tud, pathlib.Path(tmp))
    print(f"Command: `{shlex.join(['python', 'bench/bench_distributed.py', *sys.argv[1:]])}`\n")
    print("| what | value |")
    print("|---|---:|")
    print(f"| embedded pipeline, {pathlib.Path(site['cameras'][0]['source']).name} ({n} frames) | {fps_emb:.1f} fps |")
    print(f"| through Kafka: ingest -> detect-track -> tracks topic | {fps_bus:.1f} fps ({fps_bus / fps_emb:.2f}x) |")
    if lat:
        q = statistics.quantiles(lat, n=20)
        print(f"| latency frame timestamp -> crossing visible in the API, live-paced TUD-Stadtmitte at "
              f"{args.latency_fps:g} fps, "
              f"{len(lat)} crossings | median {statistics.median(lat) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
