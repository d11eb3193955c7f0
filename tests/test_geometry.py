"""storelens.domain.geometry: image coordinates, x right and y down."""
from __future__ import annotations

import math

import numpy as np
import pytest

from storelens.domain.geometry import (
    anchors_bottom_center,
    cross,
    points_in_polygon,
    projection_t,
    segments_intersect,
    side_of_line,
    signed_distance,
)

H_A, H_B = (0, 300), (640, 300)  # horizontal line A->B pointing right: in side is below


@pytest.mark.parametrize(
    "p, a, b, side",
    [
        pytest.param((320, 310), H_A, H_B, 1, id="below_horizontal_is_right"),
        pytest.param((320, 290), H_A, H_B, -1, id="above_horizontal_is_left"),
        pytest.param((320, 300), H_A, H_B, 0, id="on_horizontal"),
        pytest.param((900, 300), H_A, H_B, 0, id="on_extension_beyond_b"),
        pytest.param((320, 310), H_B, H_A, -1, id="reversed_line_flips_side"),
        pytest.param((250, 100), (300, 0), (300, 480), 1, id="vertical_down_left_is_right"),
        pytest.param((350, 100), (300, 0), (300, 480), -1, id="vertical_down_right_is_left"),
        pytest.param((350, 100), (300, 480), (300, 0), 1, id="vertical_up_right_is_right"),
        pytest.param((100, 300), (0, 0), (400, 400), 1, id="diagonal_below_left"),
        pytest.param((300, 100), (0, 0), (400, 400), -1, id="diagonal_above_right"),
        pytest.param((200, 200), (0, 0), (400, 400), 0, id="diagonal_on_line"),
        pytest.param((320.5, 300.0001), H_A, H_B, 1, id="float_just_below"),
    ],
)
def test_side_of_line(p, a, b, side):
    got = side_of_line(p, a, b)
    assert got == side
    assert type(got) is int
    assert math.copysign(1, cross(a, b, p)) == side or side == 0


@pytest.mark.parametrize(
    "p, side",
    [
        pytest.param(np.array([320.0, 310.0]), 1, id="numpy_point_below"),
        pytest.param(np.array([320.0, 290.0]), -1, id="numpy_point_above"),
        pytest.param(np.array([320.0, 300.0]), 0, id="numpy_point_on"),
        pytest.param((np.float32(1), np.float32(301)), 1, id="numpy_float32_scalars"),
        pytest.param((np.int64(1), np.int64(299)), -1, id="numpy_int_scalars"),
    ],
)
def test_side_of_line_accepts_numpy_points(p, side):
    """Anchors come out of numpy arrays; numpy scalars must work like Python numbers."""
    got = side_of_line(p, np.array(H_A, dtype=np.float64), np.array(H_B, dtype=np.float64))
    assert got == side
    assert type(got) is int


@pytest.mark.parametrize(
    "p, a, b, dist",
    [
        pytest.param((320, 310), H_A, H_B, 10.0, id="below_positive"),
        pytest.param((320, 290), H_A, H_B, -10.0, id="above_negative"),
        pytest.param((320, 300), H_A, H_B, 0.0, id="on_line"),
        pytest.param((5000, 290), H_A, H_B, -10.0, id="infinite_line_not_segment"),
        pytest.param((320, 310), H_B, H_A, -10.0, id="reversed_line"),
        pytest.param((0, 10), (0, 0), (10, 10), 10 / math.sqrt(2), id="diagonal"),
        pytest.param((10, 0), (0, 0), (10, 10), -10 / math.sqrt(2), id="diagonal_other_side"),
        pytest.param((250, 7), (300, 0), (300, 1), 50.0, id="short_vertical_scale_independent"),
        pytest.param((250, 7), (300, 0), (300, 1000), 50.0, id="long_vertical_same_distance"),
    ],
)
def test_signed_distance(p, a, b, dist):
    assert signed_distance(p, a, b) == pytest.approx(dist)
    assert np.sign(signed_distance(p, a, b)) == side_of_line(p, a, b)


@pytest.mark.parametrize(
    "p0, p1, a, b, hit",
    [
        pytest.param((10, 290), (10, 320), H_A, H_B, True, id="proper_crossing"),
        pytest.param((10, 320), (10, 290), H_A, H_B, True, id="proper_crossing_reversed_path"),
        pytest.param((10, 290), (10, 320), H_B, H_A, True, id="proper_crossing_reversed_line"),
        pytest.param((10, 100), (600, 500), H_A, H_B, True, id="long_diagonal_jump"),
        pytest.param((10, 250), (10, 290), H_A, H_B, False, id="stops_short"),
        pytest.param((700, 250), (700, 350), H_A, H_B, False, id="beyond_end_b"),
        pytest.param((-1, 250), (-1, 350), H_A, H_B, False, id="beyond_end_a"),
        pytest.param((10, 250), (10, 300), H_A, H_B, True, id="path_endpoint_touches_segment"),
        pytest.param((10, 300), (10, 350), H_A, H_B, True, id="path_starts_on_segment"),
        pytest.param((0, 250), (0, 350), H_A, H_B, True, id="path_through_endpoint_a"),
        pytest.param((640, 250), (640, 350), H_A, H_B, True, id="path_through_endpoint_b"),
        pytest.param((640, 300), (700, 350), H_A, H_B, True, id="endpoints_touch"),
        pytest.param((641, 300), (700, 350), H_A, H_B, False, id="endpoints_one_px_apart"),
        pytest.param((100, 300), (200, 300), H_A, H_B, True, id="collinear_inside"),
        pytest.param((-100, 300), (100, 300), H_A, H_B, True, id="collinear_overlapping_a"),
        pytest.param((600, 300), (900, 300), H_A, H_B, True, id="collinear_overlapping_b"),
        pytest.param((-100, 300), (900, 300), H_A, H_B, True, id="collinear_covering"),
        pytest.param((700, 300), (900, 300), H_A, H_B, False, id="collinear_disjoint"),
        pytest.param((-300, 300), (-1, 300), H_A, H_B, False, id="collinear_disjoint_before_a"),
        pytest.param((640, 300), (900, 300), H_A, H_B, True, id="collinear_touching_at_b"),
        pytest.param((0, 290), (640, 290), H_A, H_B, False, id="parallel_above"),
        pytest.param((0, 310), (640, 310), H_A, H_B, False, id="parallel_below"),
        pytest.param((0, 0), (10, 10), (0, 5), (10, 15), False, id="parallel_diagonal"),
        pytest.param((320, 300), (320, 300), H_A, H_B, True, id="zero_length_path_on_segment"),
        pytest.param((320, 299), (320, 299), H_A, H_B, False, id="zero_length_path_off_segment"),
        pytest.param((0, 0), (4, 4), (0, 4), (4, 0), True, id="x_shape"),
        pytest.param((0, 0), (1, 1), (0, 4), (4, 0), False, id="x_shape_too_short"),
    ],
)
def test_segments_intersect(p0, p1, a, b, hit):
    assert segments_intersect(p0, p1, a, b) is hit
    # symmetric in its two segments and in each segment's direction
    assert segments_intersect(a, b, p0, p1) is hit
    assert segments_intersect(p1, p0, b, a) is hit


@pytest.mark.parametrize(
    "p, a, b, t",
    [
        pytest.param((0, 250), H_A, H_B, 0.0, id="at_a"),
        pytest.param((640, 350), H_A, H_B, 1.0, id="at_b"),
        pytest.param((320, 0), H_A, H_B, 0.5, id="middle"),
        pytest.param((-320, 300), H_A, H_B, -0.5, id="before_a"),
        pytest.param((960, 300), H_A, H_B, 1.5, id="after_b"),
        pytest.param((320, 300), H_B, H_A, 0.5, id="reversed"),
    ],
)
def test_projection_t(p, a, b, t):
    assert projection_t(p, a, b) == pytest.approx(t)


SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=float)
CONCAVE_U = np.array([[0, 0], [3, 0], [3, 7], [7, 7], [7, 0], [10, 0], [10, 10], [0, 10]], dtype=float)
TRIANGLE = [(0, 0), (10, 0), (0, 10)]


@pytest.mark.parametrize(
    "points, polygon, inside",
    [
        pytest.param([(5, 5)], SQUARE, [True], id="square_centre"),
        pytest.param([(15, 5), (-1, 5), (5, -1), (5, 11)], SQUARE, [False] * 4, id="square_outside_each_side"),
        pytest.param([(0.001, 0.001), (9.999, 9.999)], SQUARE, [True, True], id="square_near_corners"),
        pytest.param([(5, 2), (5, 8), (1, 5), (9, 5)], CONCAVE_U, [False, True, True, True], id="concave_notch"),
        pytest.param([(2, 2), (6, 6), (2, 7)], TRIANGLE, [True, False, True], id="triangle_list_input"),
        pytest.param([(5, 5)], SQUARE[::-1], [True], id="clockwise_order"),
        pytest.param(np.array([5.0, 5.0]), SQUARE, [True], id="single_flat_point"),
        pytest.param(np.empty((0, 2)), SQUARE, [], id="no_points"),
    ],
)
def test_points_in_polygon(points, polygon, inside):
    got = points_in_polygon(points, polygon)
    assert got.dtype == bool
    assert got.tolist() == inside


def test_points_in_polygon_horizontal_edges_no_warnings():
    with np.errstate(all="raise"):  # the horizontal edges divide by zero internally
        assert points_in_polygon([(5, 0), (5, 5)], SQUARE).tolist()[1] is True


@pytest.mark.parametrize(
    "boxes, anchors",
    [
        pytest.param([[10, 20, 30, 100]], [[20, 100]], id="single"),
        pytest.param([10, 20, 30, 100], [[20, 100]], id="flat_single"),
        pytest.param([[0, 0, 1, 1], [100.5, 50, 201.5, 400]], [[0.5, 1], [151, 400]], id="two_float"),
        pytest.param(np.array([[10, 20, 30, 100]], dtype=np.float32), [[20, 100]], id="float32"),
        pytest.param(np.array([[10, 20, 31, 100]], dtype=np.int32), [[20.5, 100]], id="int_boxes_half_pixel"),
        pytest.param(np.empty((0, 4)), np.empty((0, 2)), id="empty"),
    ],
)
def test_anchors_bottom_center(boxes, anchors):
    got = anchors_bottom_center(boxes)
    assert got.dtype == np.float64
    assert got.shape == np.asarray(anchors).reshape(-1, 2).shape
    np.testing.assert_allclose(got, np.asarray(anchors, dtype=float).reshape(-1, 2))
