#!/usr/bin/env python
"""Faces per second through the attributes and reid *services* on Kafka, as Markdown.

The same real person crops as bench/bench_faces_stages.py (detect-track on the
identity-photo video) are produced ``--copies`` times (new track ids and seqs
each time) into a private ``person-crops`` topic while the attributes and reid
services run as separate processes against the local stack
(``scripts/stack.sh up``); the clock runs from the first crop produced until
each service's ``storelens_messages_in_total`` for the topic reaches the count,
so it includes Kafka transport, decode, the models and the produce of outputs.
Both services run at the same time on the machine's cores (as in a store).

    python bench/bench_faces_services.py [--copies 4]
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bench_faces_stages import collect_crops  # noqa: E402
from benchlib import cpu_line, python_line  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=4)
    args = ap.parse_args()

    import pathlib

    from storelens.config import KafkaConfig
    from storelens.contract import messages as m
    from storelens.runtime.kafka import KafkaBus
    from storelens.runtime.localdeploy import KAFKA, LocalDeployment

    with tempfile.TemporaryDirectory() as tmp:
        crops = collect_crops(tmp)
        site = {"store": {"id": "bench-faces"}, "cameras": [{"id": "door", "source": "/dev/null"}],
                "faces": {"enabled": True}}
        dep = LocalDeployment(pathlib.Path(tmp), site)
        try:
            for name in ("attributes", "reid"):
                dep.start(name)
            for name in ("attributes", "reid"):
                dep.wait_ready(name)
            topic = f"{dep.uid}.person-crops"
            producer = KafkaBus(KafkaConfig(bootstrap_servers=KAFKA), f"{dep.uid}-bench")
            n = 0
            t0 = time.perf_counter()
            for r in range(args.copies):
                for i, crop in enumerate(crops):
                    c = m.PersonCrop()
                    c.CopyFrom(crop)
                    c.seq = r * 100_000 + i
                    c.ts_ms = crop.ts_ms + r * 3_600_000
                    c.track_id = crop.track_id + r * 1000
                    producer.publish(topic, b"door", m.encode(c), headers=m.type_headers(c))
                    n += 1
            producer.close(60)
            done: dict[str, float] = {}
            while len(done) < 2 and time.perf_counter() - t0 < 900:
                for name in ("attributes", "reid"):
                    if name not in done and dep.metric(name, "storelens_messages_in_total", "person-crops") >= n:
                        done[name] = time.perf_counter() - t0
                time.sleep(0.2)
            faces = {name: dep.metric_value(name, "storelens_faces_total") for name in ("attributes", "reid")}
            for name in ("attributes", "reid"):
                dep.stop(name)
        finally:
            for p in dep.procs.values():
                if p.poll() is None:
                    p.kill()
    print("## Faces through the attributes and reid services on Kafka\n")
    print(f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`\n")
    print(cpu_line())
    print(python_line())
    print(f"- {n} person crops ({len(crops)} real crops x {args.copies}), produced at once to `person-crops`; "
          "both services running at the same time, local Kafka/PostgreSQL\n")
    print("| service | crops | faces checked by the gate | seconds | crops/s | faces/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("attributes", "reid"):
        t = done.get(name)
        if t is None:
            print(f"| {name} | {n} | {faces[name]:.0f} | not done in 900 s | | |")
        else:
            print(f"| {name} | {n} | {faces[name]:.0f} | {t:.1f} | {n / t:.1f} | {faces[name] / t:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
