"""Training data from a store's own cameras: which tracks to keep, and YOLO label rows.

Pure rules used by :mod:`storelens.storage.dataset` (``storelens export-dataset``):

* :func:`confident_tracks`: a track is kept when it has at least ``min_length`` points and
  its mean detection confidence is at least ``min_confidence`` (a track-level filter: a
  short or low-confidence track is more likely a false positive or a fragment);
* :func:`yolo_row` / :func:`parse_yolo_labels`: the YOLO text format, one box per line
  ``class cx cy w h`` normalised to [0, 1] by the image size;
* :func:`sampled`: every N-th published frame of a camera.

Example:
    >>> confident_tracks({7: [0.9, 0.8, 0.85], 8: [0.3, 0.4, 0.35], 9: [0.9]}, min_confidence=0.5, min_length=2)
    {7}
    >>> yolo_row((10, 20, 30, 60), 100, 100)
    '0 0.200000 0.400000 0.200000 0.400000'
    >>> parse_yolo_labels('0 0.2 0.4 0.2 0.4\\n')
    [(0, 0.2, 0.4, 0.2, 0.4)]
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from storelens.errors import ConfigError, StoreLensError

#: The one class of the exported data sets (YOLO class id 0).
PERSON_CLASS = 0
CLASS_NAMES = {PERSON_CLASS: "person"}


class LabelFormatError(StoreLensError):
    """A YOLO label file is malformed (the message names the line)."""


def confident_tracks(confidences: Mapping[int, Sequence[float]], min_confidence: float, min_length: int) -> set[int]:
    """Ids of the tracks with ``len >= min_length`` points and a mean confidence ``>= min_confidence``."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ConfigError(f"min_confidence must be in [0, 1], got {min_confidence}")
    if min_length < 1:
        raise ConfigError(f"min_length must be >= 1, got {min_length}")
    return {tid for tid, cs in confidences.items()
            if len(cs) >= min_length and sum(cs) / len(cs) >= min_confidence}


def sampled(seq: int, every_n: int) -> bool:
    """Whether published frame ``seq`` (from 0) is one of every ``every_n`` frames."""
    if every_n < 1:
        raise ConfigError(f"every_n must be >= 1, got {every_n}")
    return seq % every_n == 0


def clip_box(bbox_xyxy: Sequence[float], width: int, height: int) -> tuple[float, float, float, float] | None:
    """The box clipped to the image, ``None`` when nothing of it is inside."""
    x1, y1, x2, y2 = (float(v) for v in bbox_xyxy)
    x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))
    y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
    if x2 - x1 < 1.0 or y2 - y1 < 1.0:
        return None
    return (x1, y1, x2, y2)


def yolo_row(bbox_xyxy: Sequence[float], width: int, height: int, cls: int = PERSON_CLASS) -> str:
    """``class cx cy w h`` of a box (already inside the image), normalised by the image size."""
    x1, y1, x2, y2 = bbox_xyxy
    return (f"{cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")


def parse_yolo_labels(text: str) -> list[tuple[int, float, float, float, float]]:
    """Rows ``(class, cx, cy, w, h)`` of a YOLO label file; raises :class:`LabelFormatError`."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        cols = raw.split()
        if len(cols) != 5:
            raise LabelFormatError(f"line {lineno}: expected 5 columns 'class cx cy w h', got {len(cols)}")
        try:
            cls, vals = int(cols[0]), [float(c) for c in cols[1:]]
        except ValueError:
            raise LabelFormatError(f"line {lineno}: not numbers: {raw!r}") from None
        if not all(0.0 <= v <= 1.0 for v in vals):
            raise LabelFormatError(f"line {lineno}: values must be normalised to [0, 1]: {raw!r}")
        out.append((cls, *vals))
    return out


def yolo_to_xyxy(row: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Pixel corners of a parsed YOLO row ``(class, cx, cy, w, h)``."""
    _, cx, cy, w, h = row
    return ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)


def split_of(index: int, n: int, val_fraction: float) -> str:
    """``train`` or ``val`` for the ``index``-th of ``n`` sampled frames of a sequence: the last
    ``val_fraction`` of each sequence in time is ``val`` (neighbouring frames are near-duplicates,
    so a random split would leak)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    return "val" if index >= n - int(round(n * val_fraction)) else "train"


def dataset_yaml(root: str, has_val: bool) -> str:
    """The ultralytics ``dataset.yaml`` of an export rooted at ``root``."""
    names = "\n".join(f"  {k}: {v}" for k, v in CLASS_NAMES.items())
    return (f"path: {root}\ntrain: images/train\nval: images/{'val' if has_val else 'train'}\n"
            f"names:\n{names}\n")


def mean(values: Iterable[float]) -> float:
    vs = list(values)
    return sum(vs) / len(vs) if vs else 0.0
