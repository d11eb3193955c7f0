#!/usr/bin/env python
"""Cost and false positives of the ingest's image digest (the ``camera_frozen`` alert).

For real clips from ``$STORELENS_ASSETS``: milliseconds per frame of
:func:`storelens.backends.video.image_digest` next to the JPEG encoding the ingest does anyway
(at the clip's size, quality 85), and how many consecutive frames of the real footage have
equal digests (each would be a frame counted as "frozen": 0 expected, since sensor noise and
compression change the picture slightly in every frame). Prints a Markdown table and the command.

    OMP_NUM_THREADS=1 python bench/image_digest.py
    python bench/image_digest.py --frames 100
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib import cpu_line, python_line  # noqa: E402

import cv2  # noqa: E402

from storelens.backends.video import image_digest  # noqa: E402
from storelens.paths import asset  # noqa: E402

CLIPS = {
    "people_street (1920x1080)": ("video", "people_street.mp4"),
    "TUD-Stadtmitte (640x480)": ("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4"),
    "Mall (640x480)": ("video", "mall", "mall_0001-0800.mp4"),
    "CAVIAR OneLeaveShop1front (384x288)": ("video", "caviar", "OneLeaveShop1front", "OneLeaveShop1front.mp4"),
}


def frames_of(path, n: int) -> list:
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    return out


def per_frame_ms(fn, frames: list) -> float:
    t0 = time.perf_counter()
    for f in frames:
        fn(f)
    return (time.perf_counter() - t0) * 1000 / len(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150, help="frames per clip (from the start)")
    args = ap.parse_args()
    print(f"`{' '.join(['python', 'bench/image_digest.py', *map(shlex.quote, sys.argv[1:])])}`"
          f" (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})\n")
    print(cpu_line())
    print(python_line() + f", opencv {cv2.__version__}, load average at start {os.getloadavg()[0]:.1f}\n")
    print("| clip | frames | digest ms/frame | JPEG encode ms/frame | equal consecutive digests |")
    print("|---|---|---|---|---|")
    for name, parts in CLIPS.items():
        path = asset(*parts)
        if not path.exists():
            print(f"| {name} | missing | | | |")
            continue
        frames = frames_of(path, args.frames)
        image_digest(frames[0])  # warm-up
        d_ms = min(per_frame_ms(image_digest, frames) for _ in range(3))
        j_ms = min(per_frame_ms(lambda f: cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85]), frames)
                   for _ in range(3))
        digests = [image_digest(f) for f in frames]
        equal = sum(a == b for a, b in zip(digests, digests[1:]))
        print(f"| {name} | {len(frames)} | {d_ms:.2f} | {j_ms:.2f} | {equal} of {len(frames) - 1} |")
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
