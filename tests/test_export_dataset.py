"""``storelens export-dataset`` on real footage (issue 11 item 8).

TUD-Stadtmitte (640x480, 179 frames, people walking towards and across the camera) goes through
the real pipeline (YOLO + tracker) into a SQLite history; the export from that history is checked
against the stored tracks, the decoded source frames and the project's MOT reader. The SOURCE
mode runs on TUD-Campus (71 frames).
"""
from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest
import yaml

from storelens.cli import main
from storelens.config import load_config
from storelens.domain import dataset as ds
from storelens.domain.mot import read_mot
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.stages.snapshots import HEAD_FRACTION
from storelens.storage import open_storage

VIDEO = asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")
EVERY, MIN_CONF, MIN_LEN = 10, 0.5, 10


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    db = tmp / "history.sqlite"
    site = tmp / "site.yaml"
    site.write_text(yaml.safe_dump({
        "store": {"id": "export"}, "faces": {"enabled": False}, "storage": {"path": str(db)},
        "cameras": [{"id": "tud", "source": str(VIDEO), "lines": []}]}))
    config = load_config(site)
    storage = open_storage(config.storage)
    try:
        EmbeddedPipeline(config, storage=storage).run()
    finally:
        storage.close()
    out = tmp / "out"
    rc = main(["export-dataset", "--from-db", "--config", str(site), "--out", str(out), "--every", str(EVERY),
               "--min-confidence", str(MIN_CONF), "--min-length", str(MIN_LEN), "--licence", "CC-BY-4.0 (test)",
               "--json"])
    assert rc == 0
    storage = open_storage(config.storage)
    paths = storage.tracks("tud", 0, 2**62, limit_points=10_000_000)
    storage.close()
    return out, paths


def _labels(out: pathlib.Path) -> dict[int, list]:
    got = {}
    for p in sorted(out.glob("labels/*/*.txt")):
        got[int(p.stem.split("_")[-1])] = ds.parse_yolo_labels(p.read_text())
    return got


def _frame(index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(VIDEO))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index - 1)
    ok, img = cap.read()
    cap.release()
    assert ok
    return img


def test_labels_parse_and_lie_inside_the_images(exported):
    out, _ = exported
    labels = _labels(out)
    n_frames = 179
    assert sorted(labels) == [seq + 1 for seq in range(0, n_frames, EVERY)]  # every 10th frame, source frame = seq + 1
    assert sum(len(v) for v in labels.values()) > 50
    for frame, rows in labels.items():
        split = "val" if (out / "images" / "val" / f"tud_{frame:06d}.jpg").exists() else "train"
        img = cv2.imread(str(out / "images" / split / f"tud_{frame:06d}.jpg"))
        h, w = img.shape[:2]
        assert (w, h) == (640, 480)
        for row in rows:
            assert row[0] == ds.PERSON_CLASS
            x1, y1, x2, y2 = ds.yolo_to_xyxy(row, w, h)
            assert -0.01 <= x1 < x2 <= w + 0.01 and -0.01 <= y1 < y2 <= h + 0.01
    assert any((out / "images" / "val").glob("*.jpg")) and any((out / "images" / "train").glob("*.jpg"))


def test_boxes_match_the_stored_confident_tracks(exported):
    out, paths = exported
    keep = {p.track_id for p in paths
            if len(p.points) >= MIN_LEN and np.mean([pt.confidence for pt in p.points]) >= MIN_CONF}
    assert 0 < len(keep) < len(paths)  # the filter keeps some tracks and drops others on this clip
    for frame, rows in _labels(out).items():
        want = sorted(ds.clip_box(pt.bbox_xyxy, 640, 480) for p in paths if p.track_id in keep
                      for pt in p.points if pt.seq == frame - 1)
        got = sorted(ds.yolo_to_xyxy(r, 640, 480) for r in rows)
        assert len(got) == len(want), frame
        np.testing.assert_allclose(np.array(got).reshape(-1, 4), np.array(want).reshape(-1, 4), atol=0.01)


def _sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def _head(box, w: int = 640, h: int = 480) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return int(round(x1)), int(round(y1)), int(round(x2)), int(round(y1 + (y2 - y1) * HEAD_FRACTION))


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_written_images_have_the_heads_blurred(exported):
    # sharpness (variance of the Laplacian) in each head box: written image against the decoded source frame.
    # A head next to another blurred patch (another head, an unlabelled track's head, a detected face) keeps the
    # step where the two patches meet, so the bound on every head is looser than on the typical one.
    out, _ = exported
    alone, crowded = [], []
    for frame, rows in _labels(out).items():
        jpg = next(out.glob(f"images/*/tud_{frame:06d}.jpg"))
        written, original = cv2.imread(str(jpg)), _frame(frame)
        heads = [_head(ds.yolo_to_xyxy(r, 640, 480)) for r in rows]
        for i, (x1, y1, x2, y2) in enumerate(heads):
            if x2 - x1 < 20:
                continue
            sl = (slice(y1, y2), slice(x1, x2))
            ratio = _sharpness(written[sl]) / _sharpness(original[sl])
            near = any(_overlap((x1 - 10, y1, x2 + 10, y2), o) for j, o in enumerate(heads) if j != i)
            (crowded if near else alone).append(ratio)
    ratios = alone + crowded
    assert len(alone) > 20
    assert np.median(alone) < 0.1 and np.median(ratios) < 0.1
    assert max(ratios) < 0.6, sorted(ratios)[-3:]


def test_mot_file_loads_with_the_project_reader(exported):
    out, paths = exported
    mot = read_mot(out / "mot" / "tud" / "gt" / "gt.txt", evaluated_only=True)
    ids = {b.track_id for bs in mot.values() for b in bs}
    keep = {p.track_id: p for p in paths
            if len(p.points) >= MIN_LEN and np.mean([pt.confidence for pt in p.points]) >= MIN_CONF}
    assert ids == set(keep)
    assert sum(len(bs) for bs in mot.values()) == sum(len(p.points) for p in keep.values())
    assert min(mot) >= 1 and max(mot) <= 179
    assert "frameRate=25" in (out / "mot" / "tud" / "seqinfo.ini").read_text()


def test_dataset_yaml_and_readme(exported):
    out, _ = exported
    doc = yaml.safe_load((out / "dataset.yaml").read_text())
    assert doc["names"] == {0: "person"} and doc["train"] == "images/train" and doc["val"] == "images/val"
    assert pathlib.Path(doc["path"]) == out.resolve()
    readme = (out / "README.txt").read_text()
    for field in ("provenance:", "licence of the images: CC-BY-4.0 (test)", "labels made by:", "personal data:",
                  str(VIDEO)):
        assert field in readme


def test_source_mode_runs_the_pipeline(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["export-dataset", str(asset("mot", "TUD-Campus", "TUD-Campus.mp4")), "--out", str(out),
               "--every", "5", "--min-length", "5", "--no-face-detector", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == len(list(out.glob("images/*/*.jpg"))) == 15  # frames 1, 6, ..., 71
    assert summary["boxes"] == sum(len(ds.parse_yolo_labels(p.read_text())) for p in out.glob("labels/*/*.txt")) > 10
    assert read_mot(out / "mot" / "cam" / "gt" / "gt.txt")


@pytest.mark.parametrize("argv, message", [
    (["export-dataset", "--out", "X"], "either SOURCE"),
    (["export-dataset", "clip.mp4", "--from-db", "--out", "X"], "either SOURCE"),
    (["export-dataset", "/nonexistent.mp4", "--out", "X"], "nonexistent"),
    (["export-dataset", str(VIDEO), "--every", "0", "--out", "X"], "every_n"),
])
def test_bad_input_is_one_clear_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


@pytest.mark.parametrize("text, ok", [
    ("0 0.5 0.5 0.2 0.4\n", True), ("", True), ("0 0.5 0.5 0.2\n", False), ("0 0.5 x 0.2 0.4\n", False),
    ("0 1.5 0.5 0.2 0.4\n", False),
])
def test_yolo_label_parser(text, ok):
    if ok:
        ds.parse_yolo_labels(text)
    else:
        with pytest.raises(ds.LabelFormatError):
            ds.parse_yolo_labels(text)
