#!/usr/bin/env python
"""Person re-id inference: a dynamic batch dimension against the embedder's static, padded batch sizes.

A store camera's number of crops to embed changes from frame to frame. This runs
the same sequence of crop counts (random, fixed seed) on real TUD-Stadtmitte crops
through:

* ``dynamic``: the OMZ re-id IR with its batch dimension made dynamic (``-1``), one
  request, every call its own size (what the embedder did until 2026-12-04);
* ``embedder``: :class:`~storelens.backends.appearance.omz_reid_openvino.OpenVinoReidEmbedder`
  as shipped: one model compiled per size in ``BATCH_SIZES``, the crops padded up to the next;

for each precision asked (``f32``, the default, and ``default``: the CPU's own, bf16 on AVX512-BF16 CPUs),
alternating the two in rounds so that a burst of other load hits both. Prints ms per call (median of the
rounds), the compile time of each, and the largest difference between the two's embeddings.

The crop counts are drawn (``--mix street``, the default) as often as the
pipeline bench's street video asked for them (``bench/bench_pipeline.py``'s row c,
2026-12-04: 124 re-id calls for 151 frames, of 1..9 crops: :data:`STREET_CALLS`), or
(``--mix uniform``) uniformly from 1..8.

    python bench/reid_batch.py [--calls 300] [--rounds 3] [--precisions f32,default] [--mix street|uniform]
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import statistics
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import benchlib  # noqa: E402

from storelens.backends.appearance.omz_reid_openvino import (  # noqa: E402
    REID_INPUT_WH, OpenVinoReidEmbedder, reid_crops, reid_model_path,
)
from storelens.backends.openvino_device import latency_props  # noqa: E402
from storelens.domain.mot import read_mot  # noqa: E402
from storelens.paths import asset  # noqa: E402

#: Re-id calls of the pipeline bench's street video by number of crops (1..9; lazy appearance on).
STREET_CALLS = {1: 41, 2: 34, 3: 23, 4: 12, 5: 4, 6: 5, 7: 3, 8: 1, 9: 1}


def frame_and_boxes() -> tuple[np.ndarray, np.ndarray]:
    """TUD-Stadtmitte frame 116 and its ground-truth people (at least 8 boxes, repeated if fewer)."""
    import cv2

    cap = cv2.VideoCapture(str(asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")))
    for _ in range(116):
        ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit("cannot read TUD-Stadtmitte (set STORELENS_ASSETS)")
    people = read_mot(asset("mot", "TUD-Stadtmitte", "gt", "gt.txt"), evaluated_only=True)[116]
    boxes = np.array([[b.left, b.top, b.left + b.width, b.top + b.height] for b in people], np.float32)
    return frame, np.resize(boxes, (max(STREET_CALLS), 4))


class Dynamic:
    """The IR with a dynamic batch dimension, one request (the embedder before 2026-12-04)."""

    def __init__(self, precision: str) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(reid_model_path())
        model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([-1, 3, REID_INPUT_WH[1], REID_INPUT_WH[0]])})
        self.request = core.compile_model(model, "CPU", latency_props(2, precision)).create_infer_request()

    def embed(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        batch = np.empty((len(boxes), 3, REID_INPUT_WH[1], REID_INPUT_WH[0]), np.float32)
        reid_crops(image, boxes, batch)
        out = np.array(self.request.infer([batch])[0], np.float32).reshape(len(boxes), -1)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def timed_calls(model, frame: np.ndarray, boxes: np.ndarray, counts: np.ndarray) -> float:
    """ms per call over ``counts`` (crops per call)."""
    t0 = time.perf_counter()
    for n in counts:
        model.embed(frame, boxes[:n])
    return 1000 * (time.perf_counter() - t0) / len(counts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300, help="calls per round (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per model (default: %(default)s)")
    ap.add_argument("--precisions", default="f32,default", help="comma-separated (default: %(default)s)")
    ap.add_argument("--mix", choices=("street", "uniform"), default="street", help="crops per call (see above)")
    args = ap.parse_args()
    print(f"Command: `{shlex.join(['python', 'bench/reid_batch.py', *sys.argv[1:]])}`\n")
    print("\n".join([benchlib.cpu_line(), benchlib.python_line(), f"- openvino {benchlib.version('openvino')}"]))
    frame, boxes = frame_and_boxes()
    rng = np.random.default_rng(0)
    if args.mix == "street":
        sizes, weights = zip(*STREET_CALLS.items())
        counts = rng.choice(sizes, args.calls, p=np.array(weights) / sum(weights))
    else:
        counts = rng.integers(1, 9, args.calls)
    print(f"\n{args.calls} calls per round, crops per call: {args.mix} (mean {counts.mean():.2f}), "
          f"{args.rounds} rounds, TUD-Stadtmitte frame 116\n")
    print("| precision (as run) | dynamic batch: ms per call | embedder (static sizes, padded): ms per call | "
          "embedder / dynamic | compile: dynamic / embedder's sizes (s) | largest difference of an embedding |")
    print("|---|---:|---:|---:|---|---:|")
    for precision in args.precisions.split(","):
        t0 = time.perf_counter()
        dyn = Dynamic(precision)
        t_dyn = time.perf_counter() - t0
        t0 = time.perf_counter()
        emb = OpenVinoReidEmbedder(reid_model_path(), precision=precision, threads=2)
        for n in sorted(set(counts.tolist())):  # every size compiled before timing (as in a long run)
            emb.embed(frame, boxes[:n])
        t_emb = time.perf_counter() - t0
        for model in (dyn, emb):  # warm-up
            timed_calls(model, frame, boxes, counts[:20])
        runs = {"dyn": [], "emb": []}
        for _ in range(args.rounds):
            runs["dyn"].append(timed_calls(dyn, frame, boxes, counts))
            runs["emb"].append(timed_calls(emb, frame, boxes, counts))
        diff = max(float(np.abs(emb.embed(frame, boxes[:n]) - dyn.embed(frame, boxes[:n])).max()) for n in range(1, len(boxes) + 1))
        d, e = statistics.median(runs["dyn"]), statistics.median(runs["emb"])
        print(f"| {precision} ({emb.inference_precision}) | {d:.2f} | {e:.2f} | {e / d:.2f}x | {t_dyn:.2f} / "
              f"{t_emb:.2f} ({len(emb.compiled_batch_sizes)} sizes) | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
