"""Crowd occupancy: tiling / head-NMS helpers, region counting and calibration (table-driven), and the chosen
detector settings against the head-count ground truth of the Mall frames (real model, real video).

The measured numbers and how they were chosen: ``bench/occupancy_mall.py`` (and its Markdown output).
"""
from __future__ import annotations

import csv
import doctest

import numpy as np
import pytest

from storelens.backends.detectors import tiling
from storelens.backends.detectors.base import Detections
from storelens.backends.detectors.tiling import detect_tiled, head_nms, merge_boxes, tile_grid
from storelens.config.detectors import UltralyticsDetectorConfig
from storelens.domain import occupancy
from storelens.domain.occupancy import BandCalibration, anchor_points, band_counts, count_in_mask, inside_mask

# -- tiling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("w,h,grid,overlap", [
    (640, 480, (1, 1), 0.2), (640, 480, (2, 2), 0.2), (640, 480, (3, 2), 0.2), (1920, 1080, (4, 3), 0.3),
    (100, 50, (2, 1), 0.0),
])
def test_tile_grid_covers_the_image_with_the_overlap(w, h, grid, overlap) -> None:
    tiles = tile_grid(w, h, grid, overlap)
    assert len(tiles) == grid[0] * grid[1]
    cover = np.zeros((h, w), int)
    for x1, y1, x2, y2 in tiles:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1
    if grid[0] > 1:  # neighbours share about `overlap` of a tile
        (ax1, _, ax2, _), (bx1, _, _, _) = tiles[0], tiles[1]
        assert abs((ax2 - bx1) / (ax2 - ax1) - overlap) < 0.02


@pytest.mark.parametrize("grid,overlap", [((0, 1), 0.2), ((2, 2), 1.0), ((2, 2), -0.1)])
def test_tile_grid_rejects(grid, overlap) -> None:
    with pytest.raises(ValueError):
        tile_grid(640, 480, grid, overlap)


def test_detect_tiled_shifts_boxes_back_and_merges_duplicates() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    person = np.array([300, 200, 340, 300], np.float32)  # in the overlap of all four 2x2 tiles
    seen = []

    def detect(crop: np.ndarray) -> Detections:
        # the fake detector knows where it is from the crop's identity in the parent image
        y0 = (crop.__array_interface__["data"][0] - image.__array_interface__["data"][0]) // (640 * 3)
        x0 = ((crop.__array_interface__["data"][0] - image.__array_interface__["data"][0]) % (640 * 3)) // 3
        seen.append((x0, y0, crop.shape[1], crop.shape[0]))
        box = person - np.array([x0, y0, x0, y0], np.float32) + np.float32(len(seen) % 2)  # 0/1 px apart
        return Detections(box[None], np.array([0.5 + 0.1 * len(seen)], np.float32), np.zeros(1, np.int32))

    got = detect_tiled(image, detect, (2, 2), 0.2, merge_iou=0.6)
    assert len(seen) == 4 and len(got) == 1
    assert np.allclose(got.bbox_xyxy[0], person, atol=1.01)
    assert got.confidence[0] == pytest.approx(0.9)
    with_full = detect_tiled(image, lambda c: Detections.empty(), (2, 2), 0.2, merge_iou=0.6, full_frame=True)
    assert len(with_full) == 0


@pytest.mark.parametrize("boxes,scores,radius,kept", [
    ([[10, 10, 50, 110], [12, 12, 48, 60]], [0.9, 0.5], 0.6, [0]),  # whole body + upper body: one head
    ([[10, 10, 50, 110], [12, 12, 48, 60]], [0.4, 0.5], 0.6, [1]),  # the better-scored one stays
    ([[10, 10, 50, 110], [60, 10, 100, 110]], [0.9, 0.8], 0.6, [0, 1]),  # side by side: two heads
    ([[10, 10, 50, 110], [38, 10, 78, 110]], [0.9, 0.8], 0.6, [0, 1]),  # heads 0.7 widths apart: two at 0.6
    ([[10, 10, 50, 110], [38, 10, 78, 110]], [0.9, 0.8], 0.8, [0]),  # ... one at 0.8
    ([], [], 0.6, []),
])
def test_head_nms(boxes, scores, radius, kept) -> None:
    got = head_nms(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), radius)
    assert got.tolist() == kept


def test_merge_boxes_keeps_separate_people() -> None:
    boxes = np.array([[0, 0, 10, 30], [1, 0, 11, 30], [20, 0, 30, 30]], np.float32)
    assert sorted(merge_boxes(boxes, np.array([0.5, 0.9, 0.7], np.float32), 0.6).tolist()) == [1, 2]


def test_config_defaults_unchanged_and_validated() -> None:
    cfg = UltralyticsDetectorConfig()
    assert (tuple(cfg.tiles), cfg.head_nms, cfg.imgsz, cfg.confidence) == ((1, 1), 0.0, 640, 0.35)
    assert tuple(UltralyticsDetectorConfig(tiles=[2, 2]).tiles) == (2, 2)
    for bad in ({"tiles": [0, 2]}, {"tile_overlap": 0.95}, {"head_nms": -1}, {"tiles": [2]}):
        with pytest.raises(Exception):
            UltralyticsDetectorConfig(**bad)


# -- region counting and calibration ---------------------------------------------------------------------


@pytest.mark.parametrize("anchor,expected", [
    ("head", [[20.0, 16.0], [110.0, 56.0]]),
    ("bottom_center", [[20.0, 70.0], [110.0, 110.0]]),
    ("center", [[20.0, 40.0], [110.0, 80.0]]),
])
def test_anchor_points(anchor, expected) -> None:
    boxes = np.array([[10, 10, 30, 70], [100, 50, 120, 110]], np.float32)  # (x1, y1, x2, y2), 60 px high
    assert np.allclose(anchor_points(boxes, anchor), expected)


def test_anchor_points_rejects_unknown() -> None:
    with pytest.raises(ValueError):
        anchor_points(np.zeros((1, 4)), "feet")  # type: ignore[arg-type]


def test_inside_mask_rounds_and_clips() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    pts = np.array([[2, 2], [4.4, 4.4], [4.6, 4.6], [-3, 3], [3, 30]], float)
    assert inside_mask(pts, mask).tolist() == [True, True, False, False, False]
    assert count_in_mask(pts, mask) == 2
    assert band_counts(np.array([[0, 1], [0, 5], [0, 9]]), [0, 5, 10]).tolist() == [1, 2]


def test_band_calibration_recovers_factors_and_offset() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, size=(50, 2)).astype(float)
    y = 1.5 * x[:, 0] + 0.9 * x[:, 1] + 2.0
    cal = BandCalibration.fit(x, y, [0, 100, 480], offset=True, ridge=0)
    assert cal.factors == pytest.approx((1.5, 0.9)) and cal.offset == pytest.approx(2.0)
    assert cal.apply([0, 0]) == pytest.approx(2.0)
    assert cal.correct(np.array([[5, 50], [5, 300]])) == pytest.approx(1.5 + 0.9 + 2.0)
    with pytest.raises(ValueError):
        BandCalibration.fit(x, y, [0, 480])


@pytest.mark.parametrize("module", [occupancy, tiling])
def test_doctests(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted > 0 and result.failed == 0


# -- the Mall frames (real model, real video) ------------------------------------------------------------

#: The chosen crowd setting (bench/occupancy_mall.py: tiles-2x2+head; its confidence threshold was chosen on
#: frames 1-400 and holds on 401-800). About 4x the detector time of the default (4 tiles).
CHOSEN = {"tiles": (2, 2), "tile_overlap": 0.2, "head_nms": 0.6, "confidence": 0.1}
STEP = 4  # every 4th of the 800 frames (200 frames)
SPLIT = 400  # frames <= SPLIT: fit part (calibration); the rest: held out
#: Bounds: measured on these 200 frames (chosen: MAE 2.63 per frame, 2.48 on the held-out half; default 14.7;
#: band calibration fitted on the first half: 2.72 on the second), plus a margin of about 0.3 for
#: run-to-run differences of the int8 runtime on other CPUs.
MAX_MAE_CHOSEN = 3.0
MAX_MAE_CALIBRATED_HELD_OUT = 3.0


def _mall():
    import cv2

    from storelens.paths import asset

    video = asset("video", "mall", "mall_0001-0800.mp4")
    if not video.is_file():
        pytest.fail(f"missing test data {video}: set STORELENS_ASSETS to the shared assets folder")
    with open(asset("video", "mall", "counts_0001-0800.csv")) as f:
        truth = {int(r["frame"]): int(r["count"]) for r in csv.DictReader(f)}
    mask = cv2.imread(str(asset("video", "mall", "roi_mask.png")), cv2.IMREAD_GRAYSCALE) > 0
    cap = cv2.VideoCapture(str(video))
    idx, frames, n = [], [], 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n += 1
        if (n - 1) % STEP == 0:
            idx.append(n)
            frames.append(img)
    return np.array(idx), frames, np.array([truth[i] for i in idx], float), mask


@pytest.fixture(scope="module")
def mall_results():
    from storelens.backends.detectors import build_detector

    idx, frames, truth, mask = _mall()
    out = {"idx": idx, "truth": truth}
    for name, settings in (("default", {}), ("chosen", CHOSEN)):
        det = build_detector(UltralyticsDetectorConfig(**settings))
        points = []
        for img in frames:
            p = anchor_points(det.detect(img).bbox_xyxy, "head")
            points.append(p[inside_mask(p, mask)])
        out[name] = points
        out[name + "_count"] = np.array([len(p) for p in points], float)
    return out


@pytest.mark.slow
def test_mall_chosen_setting_within_bound_and_beats_default(mall_results) -> None:
    truth = mall_results["truth"]
    mae_default = np.abs(mall_results["default_count"] - truth).mean()
    err = mall_results["chosen_count"] - truth
    mae = np.abs(err).mean()
    held = mall_results["idx"] > SPLIT
    print(f"\nMall every {STEP}th frame: default MAE {mae_default:.2f}, chosen MAE {mae:.2f} "
          f"(held-out {np.abs(err[held]).mean():.2f}, bias {err.mean():+.2f})")
    assert mae <= MAX_MAE_CHOSEN
    assert np.abs(err[held]).mean() <= MAX_MAE_CHOSEN
    assert mae < mae_default / 3


@pytest.mark.slow
def test_mall_band_calibration_holds_on_the_held_out_frames(mall_results) -> None:
    truth, idx = mall_results["truth"], mall_results["idx"]
    edges = [0, 120, 480]
    x = np.array([band_counts(p, edges) for p in mall_results["chosen"]], float)
    fit = idx <= SPLIT
    cal = BandCalibration.fit(x[fit], truth[fit], edges)
    err = np.array([cal.apply(r) for r in x]) - truth
    mae_held = np.abs(err[~fit]).mean()
    print(f"\nband calibration {cal.factors}: held-out MAE {mae_held:.2f}")
    assert all(0.5 < f < 2.5 for f in cal.factors)
    assert mae_held <= MAX_MAE_CALIBRATED_HELD_OUT
