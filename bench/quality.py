#!/usr/bin/env python
"""Tracking quality (MOTA, IDF1) and counting error against ground truth, as Markdown tables.

Runs the real CLI (`storelens track` and `storelens count`, every frame, the
default models) on the MOT sequences in the shared assets, scores the tracks
with motmetrics and compares per-line counts with the counts derived from
the ground-truth trajectories (`storelens.domain.mot.gt_line_counts`).

    python bench/quality.py [--config SITE.yaml]
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile

from storelens.config import CountingConfig, LineConfig
from storelens.domain.mot import evaluate_mot, gt_line_counts
from storelens.paths import asset

# Vertical lines drawn bottom-to-top (walking right is "in"), where people really cross.
SEQUENCES = {
    "TUD-Campus": [140, 300, 500],
    "TUD-Stadtmitte": [300, 460, 540],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="site config whose detector/tracker/counting settings are used")
    args = ap.parse_args()
    extra = ["--config", args.config] if args.config else []
    print(f"Command: `{shlex.join(['python', 'bench/quality.py', *sys.argv[1:]])}`")
    print()
    print("| sequence | frames | MOTA | IDF1 | MOTP (IoU) | ID switches | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    count_rows = []
    for seq, xs in SEQUENCES.items():
        video = asset("mot", seq, f"{seq}.mp4")
        gt = asset("mot", seq, "gt", "gt.txt")
        with tempfile.TemporaryDirectory() as tmp:
            hyp = f"{tmp}/hyp.txt"
            subprocess.run([sys.executable, "-m", "storelens.cli", "track", str(video), "--mot-out", hyp, *extra],
                           check=True, capture_output=True, text=True)
            s = evaluate_mot(gt, hyp)
        print(f"| {seq} | {s.num_frames} | {s.mota:.3f} | {s.idf1:.3f} | {s.motp_iou:.3f} | {s.num_switches} "
              f"| {s.precision:.3f} | {s.recall:.3f} |")
        lines = [LineConfig(id=f"x{x}", a=(x, 480), b=(x, 0)) for x in xs]
        cmd = [sys.executable, "-m", "storelens.cli", "count", str(video), "--json", *extra]
        for ln in lines:
            cmd += ["--line", f"{ln.id}={ln.a[0]:g},{ln.a[1]:g},{ln.b[0]:g},{ln.b[1]:g}"]
        got = {d["id"]: d for d in json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["lines"]}
        ref = gt_line_counts(gt, lines, CountingConfig())
        for ln in lines:
            g, r = got[ln.id], ref[ln.id]
            err = abs(g["in"] - r["in"]) + abs(g["out"] - r["out"])
            count_rows.append(f"| {seq} | {ln.id} | {g['in']} / {g['out']} | {r['in']} / {r['out']} | {err} |")
    print()
    print("| sequence | line | pipeline in / out | ground truth in / out | abs. error |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(count_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
