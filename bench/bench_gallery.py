#!/usr/bin/env python
"""Face gallery search latency, build time and memory at 10k-1M identities, exact vs approximate, as Markdown.

    python bench/bench_gallery.py                               # 10k, 100k, 1M identities (~2.5 min on 2 cores)
    python bench/bench_gallery.py --sizes 10000,100000 --queries 500
    python bench/bench_gallery.py --hnsw-max 1000000            # also HNSW at 1M (its build takes minutes)

Data: synthetic, **not** face embeddings. Each identity has a random unit
centre in 128 dimensions and one gallery embedding, centre + Gaussian noise
(renormalised); each query is a fresh noisy sample of a random identity, with
the same noise, so a query and its identity's embedding have a cosine
similarity of about 0.96 like real dlib genuine pairs. Latency depends on the
size, dimension and index only; recall (same top identity as exact search) on
this data is indicative only: real embeddings crowd into a narrow cone (dlib
impostor pairs: ~0.82), which makes approximate search harder.

Rows:

* ``flat`` and ``ivf``: a :class:`storelens.storage.gallery.FaceGallery` loaded
  with ``bulk_load`` (build = arrays + index, IVF training included) and
  queried with ``FaceGallery.match`` one embedding at a time (batch 1, Python
  overhead included), with the gallery's default settings (``ivf_nprobe``
  32, ``nlist`` 4 sqrt(N)).
* ``hnsw``: a bare ``faiss.IndexHNSWFlat`` (inner product, M=32,
  efConstruction=40, efSearch=64) for comparison; the gallery does not use it.
  By default only up to 100k, since its build grows to minutes at 1M.

Latency is measured with FAISS limited to 1 OpenMP thread (the gallery's
default ``search_threads``) and again with every core: for single queries,
extra threads mostly add synchronisation, badly so on a busy machine.
Each row runs in a fresh process; memory is the growth of its resident set
while building (gallery arrays and bookkeeping + index; the input array is
allocated before).
"""
from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import time

import numpy as np

from benchlib import cpu_line, python_line, version  # noqa: E402
from storelens.storage.gallery import FaceGallery, GalleryConfig

DIM = 128
NOISE = 0.2  # |noise| relative to the unit centre: genuine cosine ~ 1 / (1 + NOISE^2) ~ 0.96


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so the next RSS reading is honest."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_data(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.empty((n, DIM), np.float32)
    truth = rng.integers(0, n, queries)
    q = np.empty((queries, DIM), np.float32)
    chunk = 100_000
    centres_q = np.empty((queries, DIM), np.float32)
    for s in range(0, n, chunk):
        c = unit(rng.standard_normal((min(chunk, n - s), DIM), dtype=np.float32))
        x[s: s + len(c)] = unit(c + rng.standard_normal(c.shape, dtype=np.float32) * (NOISE / np.sqrt(DIM)))
        sel = (truth >= s) & (truth < s + len(c))
        centres_q[sel] = c[truth[sel] - s]
    q[:] = unit(centres_q + rng.standard_normal(q.shape, dtype=np.float32) * (NOISE / np.sqrt(DIM)))
    return x, q, truth


def exact_top1(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    best = np.full(len(q), -np.inf, np.float32)
    arg = np.zeros(len(q), np.int64)
    for s in range(0, len(x), 200_000):
        sims = x[s: s + 200_000] @ q.T
        i = sims.argmax(0)
        v = sims[i, np.arange(len(q))]
        better = v > best
        best[better], arg[better] = v[better], i[better] + s
    return arg


def timed(fn, q: np.ndarray, threads: int) -> tuple[float, float]:
    import faiss

    faiss.omp_set_num_threads(threads)
    for i in range(min(10, len(q))):  # warm-up
        fn(q[i])
    ts = []
    for i in range(len(q)):
        t0 = time.perf_counter()
        fn(q[i])
        ts.append(time.perf_counter() - t0)
    return 1000 * float(np.median(ts)), 1000 * float(np.percentile(ts, 95))


def machine_info() -> list[str]:
    import faiss

    return [
        cpu_line(),
        python_line(),
        f"- faiss-cpu {version('faiss-cpu')} ({faiss.get_compile_options()}), numpy {np.__version__}, "
        f"OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}",
    ]


def run_row(n: int, kind: str, queries: int, nprobe: int) -> dict:
    """Build one index over fresh data and measure it (in its own process, so memory is its own)."""
    import faiss

    all_threads = faiss.omp_get_max_threads()
    x, q, _ = make_data(n, queries)
    ids = [f"c{i}" for i in range(n)]
    ts = np.zeros(n, np.int64)
    exact = exact_top1(x, q)
    gc.collect()
    trim_heap()
    m0 = rss_mb()
    t0 = time.perf_counter()
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.add(x)
        index.hnsw.efSearch = 64
        build = time.perf_counter() - t0

        def query(v):
            return index.search(v[None], 1)

        def top_row(v):
            return int(index.search(v[None], 1)[1][0, 0])
        detail = "M=32, efC=40, efS=64 (bare FAISS)"
    else:
        cfg = GalleryConfig(dim=DIM, approximate_from=1 if kind == "ivf" else n + 1, ivf_nprobe=nprobe,
                            search_threads=None)  # the benchmark sets FAISS' threads itself
        gallery = FaceGallery(cfg)
        gallery.bulk_load(ids, x, ts)
        build = time.perf_counter() - t0
        query = gallery.match

        def top_row(v):
            return int(gallery.search(v, 1)[0].customer_id[1:])
        detail = (f"nlist={gallery._index.nlist}, nprobe={gallery._index.nprobe}" if kind == "ivf"
                  else "IndexFlatIP")
    mem = rss_mb() - m0
    lat = {t: timed(query, q, t) for t in sorted({1, all_threads})}
    faiss.omp_set_num_threads(all_threads)
    recall = float(np.mean([top_row(v) == e for v, e in zip(q, exact)]))
    return {"n": n, "kind": kind, "detail": detail, "build": build, "mem": mem,
            "lat": {str(t): v for t, v in lat.items()}, "recall": recall}


def main(argv: list[str] | None = None) -> int:
    import json
    import subprocess

    import faiss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="identities (one embedding each), comma-separated")
    ap.add_argument("--queries", type=int, default=200, help="timed queries per row")
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="largest size with an HNSW row (0: none)")
    ap.add_argument("--nprobe", type=int, default=GalleryConfig().ivf_nprobe)
    ap.add_argument("--row", help=argparse.SUPPRESS)  # internal: "N,kind", run one row and print JSON
    args = ap.parse_args(argv)
    if args.row:
        n, kind = args.row.split(",")
        print(json.dumps(run_row(int(n), kind, args.queries, args.nprobe)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    all_threads = faiss.omp_get_max_threads()
    load0 = os.getloadavg()[0]
    t_start = time.time()
    rows = []
    for n in sizes:
        for kind in ["flat", "ivf"] + (["hnsw"] if n <= args.hnsw_max else []):
            log(f"{n} {kind} ...")
            out = subprocess.run(
                [sys.executable, __file__, "--row", f"{n},{kind}", "--queries", str(args.queries),
                 "--nprobe", str(args.nprobe)], check=True, capture_output=True, text=True,
                # big temporaries always mmapped (glibc): freed memory is not reused unseen by RSS
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            log(f"  build {r['build']:.1f} s, {r['mem']:.0f} MB, " + ", ".join(
                f"{t} thr {a:.3f}/{b:.3f} ms" for t, (a, b) in r["lat"].items()) + f", same top-1 {r['recall']:.3f}")

    print(f"Command: `{shlex.join(['python', 'bench/bench_gallery.py', *(argv if argv is not None else sys.argv[1:])])}`")
    print()
    print(*machine_info(), sep="\n")
    print(f"- Load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; total {time.time() - t_start:.0f} s")
    print(f"- Synthetic 128-d unit vectors, one per identity (genuine cosine ~0.96), {args.queries} queries "
          "of batch 1 per row; each row in a fresh process")
    print()
    ths = sorted({1, all_threads})
    head = " | ".join(f"match() median / p95, {t} thread{'s' if t > 1 else ''} (ms)" for t in ths)
    print(f"| identities | index | settings | build (s) | memory (MB) | {head} | same top-1 as exact |")
    print("|---:|---|---|---:|---:|" + "---:|" * len(ths) + "---:|")
    for r in rows:
        cells = " | ".join(f"{r['lat'][str(t)][0]:.3f} / {r['lat'][str(t)][1]:.3f}" for t in ths)
        print(f"| {r['n']:,} | {r['kind']} | {r['detail']} | {r['build']:.1f} | {r['mem']:.0f} | {cells} "
              f"| {r['recall']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
