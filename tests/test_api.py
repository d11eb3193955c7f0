"""The HTTP API over a real SQLite file, through FastAPI's TestClient."""
from __future__ import annotations

import pathlib
import re
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

import storelens
from storelens.api.testing import signed_in_client
from storelens.contract import messages as m
from storelens.api import MAX_BUCKETS, create_app
from storelens.config import SiteConfig, parse_config
from storelens.domain.counting import CrossingEvent, crossing_event_id
from storelens.storage import SqliteStorage

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of every bucket used below


def make_config() -> SiteConfig:
    return parse_config({
        "store": {"id": "store-42", "name": "Main street"},
        "cameras": [
            {
                "id": "cam-1", "source": "/tmp/x.mp4",
                "lines": [
                    {"id": "door", "a": [0, 300], "b": [640, 300]},
                    {"id": "side", "a": [600, 0], "b": [600, 480]},
                ],
                "zones": [{"id": "till", "polygon": [[0, 0], [100, 0], [100, 100]]}],
            },
            {"id": "cam-2", "source": "/tmp/y.mp4", "lines": [{"id": "back", "a": [0, 10], "b": [10, 10]}]},
        ],
    })


def ev(line: str, track: int, direction: str, ts_ms: int, seq: int, cam: str = "cam-1") -> CrossingEvent:
    return CrossingEvent(crossing_event_id(cam, line, track, seq), cam, line, track, direction, ts_ms, seq)  # type: ignore[arg-type]


@pytest.fixture
def storage(tmp_path: pathlib.Path) -> Iterator[SqliteStorage]:
    s = SqliteStorage(str(tmp_path / "api.db"))
    s.write_crossings([
        ev("door", 1, "in", T0 + 1_000, 25),
        ev("door", 2, "in", T0 + 30_000, 750),
        ev("door", 1, "out", T0 + 61_000, 1525),
        ev("side", 3, "in", T0 + 62_000, 1550),
        ev("back", 9, "in", T0 + 5_000, 125, cam="cam-2"),
    ])
    for seq, ts, tracks in [
        (0, T0, [(1, (10.0, 20.0, 50.0, 120.0), 0.5)]),
        (1, T0 + 40, [(1, (12.0, 22.0, 52.0, 122.0), 0.75), (2, (300.0, 40.0, 340.0, 140.0), 0.25)]),
        (2, T0 + 80, [(2, (302.0, 42.0, 342.0, 142.0), 0.5)]),
    ]:
        s.write_tracked_frame(m.TrackedFrame(camera_id="cam-1", seq=seq, ts_ms=ts, tracks=[
            m.Track(track_id=tid, bbox_xyxy=m.BoxXYXY(x1=b[0], y1=b[1], x2=b[2], y2=b[3]), confidence=c)
            for tid, b, c in tracks
        ]))
    s.write_occupancy(m.OccupancyUpdate(camera_id="cam-1", ts_ms=T0 + 62_000, occupancy=2, total_in=3, total_out=1))
    yield s
    s.close()


@pytest.fixture
def client(storage: SqliteStorage) -> Iterator[TestClient]:
    with signed_in_client(create_app(make_config(), storage)) as c:
        yield c


# -- ops -----------------------------------------------------------------------------


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_readyz_follows_storage(client: TestClient, storage: SqliteStorage) -> None:
    r = client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})
    storage.close()
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] != "ready"


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/v1/occupancy/cam-1")
    client.get("/v1/occupancy/cam-2")
    client.get("/v1/occupancy/nope")
    client.get("/v1/no/such/path/123")  # (other paths are the dashboard's: see storelens.api.dashboard)
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text

    def value(route: str, status: str) -> float:
        pat = (r'storelens_http_requests_total\{method="GET",route="' + re.escape(route)
               + r'",status="' + status + r'"\} ([0-9.e+]+)')
        match = re.search(pat, text)
        assert match, f"no sample for {route} {status} in:\n{text}"
        return float(match.group(1))

    assert value("/v1/occupancy/{camera_id}", "200") == 2.0
    assert value("/v1/occupancy/{camera_id}", "404") == 1.0
    assert value("<unmatched>", "404") == 1.0
    assert "cam-1" not in text and "/v1/no/such/path" not in text  # raw paths never become labels
    assert "storelens_http_request_duration_seconds_bucket" in text


def test_each_app_has_its_own_registry(storage: SqliteStorage) -> None:
    a = signed_in_client(create_app(make_config(), storage))
    b = signed_in_client(create_app(make_config(), storage))
    a.get("/healthz")
    a.get("/healthz")
    b.get("/healthz")
    assert 'route="/healthz",status="200"} 2.0' in a.get("/metrics").text
    assert 'route="/healthz",status="200"} 1.0' in b.get("/metrics").text


def test_openapi_lists_every_path(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"] == {"title": "StoreLens API", "version": storelens.__version__,
                            "description": spec["info"]["description"]}
    assert set(spec["paths"]) >= {
        "/healthz", "/readyz", "/metrics", "/v1/cameras", "/v1/counts", "/v1/occupancy",
        "/v1/occupancy/{camera_id}", "/v1/cameras/{camera_id}/tracks", "/v1/cameras/{camera_id}/crossings",
    }
    bucket = spec["components"]["schemas"]["BucketOut"]
    assert {"line_id", "start_ms", "end_ms", "in", "out"} <= set(bucket["properties"])
    counts_get = spec["paths"]["/v1/counts"]["get"]
    assert "404" in counts_get["responses"] and "422" in counts_get["responses"]
    bucket_s = next(p for p in counts_get["parameters"] if p["name"] == "bucket_s")
    assert (bucket_s["schema"]["minimum"], bucket_s["schema"]["maximum"]) == (1, 86_400 * 31)
    assert client.get("/docs").status_code == 200


# -- cameras -------------------------------------------------------------------------


def test_cameras(client: TestClient) -> None:
    assert client.get("/v1/cameras").json() == {
        "store_id": "store-42",
        "cameras": [
            {"id": "cam-1",
             "lines": [{"id": "door", "a": [0.0, 300.0], "b": [640.0, 300.0]},
                       {"id": "side", "a": [600.0, 0.0], "b": [600.0, 480.0]}],
             "zones": [{"id": "till"}]},
            {"id": "cam-2", "lines": [{"id": "back", "a": [0.0, 10.0], "b": [10.0, 10.0]}], "zones": []},
        ],
    }


# -- counts --------------------------------------------------------------------------


def test_counts_minute_buckets_and_totals(client: TestClient) -> None:
    r = client.get("/v1/counts", params={"camera_id": "cam-1", "start_ms": T0, "end_ms": T0 + 120_000})
    assert r.status_code == 200
    assert r.json() == {
        "camera_id": "cam-1", "start_ms": T0, "end_ms": T0 + 120_000, "bucket_s": 60, "aligned_to": "epoch",
        "timezone": "UTC",
        "buckets": [
            {"line_id": "door", "start_ms": T0, "end_ms": T0 + 60_000, "in": 2, "out": 0},
            {"line_id": "door", "start_ms": T0 + 60_000, "end_ms": T0 + 120_000, "in": 0, "out": 1},
            {"line_id": "side", "start_ms": T0 + 60_000, "end_ms": T0 + 120_000, "in": 1, "out": 0},
        ],
        "totals": {"door": {"in": 2, "out": 1}, "side": {"in": 1, "out": 0}},
    }


@pytest.mark.parametrize(("params", "buckets", "totals"), [
    pytest.param({"start_ms": T0, "end_ms": T0 + 61_000}, [("door", T0, 2, 0)],
                 {"door": (2, 0), "side": (0, 0)}, id="end-exclusive-and-zero-totals-for-configured-lines"),
    pytest.param({"start_ms": T0 + 30_000, "end_ms": T0 + 3_600_000, "bucket_s": 3600},
                 [("door", T0, 1, 1), ("side", T0, 1, 0)], {"door": (1, 1), "side": (1, 0)}, id="hour"),
    pytest.param({"start_ms": T0, "end_ms": T0 + 120_000, "line_id": "side"},
                 [("side", T0 + 60_000, 1, 0)], {"side": (1, 0)}, id="one-line"),
    pytest.param({"start_ms": 0, "end_ms": 1_000, "bucket_s": 1}, [], {"door": (0, 0), "side": (0, 0)},
                 id="no-data"),
])
def test_counts_table(client: TestClient, params: dict[str, object], buckets: list[tuple[str, int, int, int]],
                      totals: dict[str, tuple[int, int]]) -> None:
    body = client.get("/v1/counts", params={"camera_id": "cam-1", **params}).json()
    assert [(b["line_id"], b["start_ms"], b["in"], b["out"]) for b in body["buckets"]] == buckets
    assert body["totals"] == {k: {"in": i, "out": o} for k, (i, o) in totals.items()}


def test_counts_defaults(client: TestClient) -> None:
    # Without a range, the query spans the camera's crossings, so the default bucket works.
    body = client.get("/v1/counts", params={"camera_id": "cam-2"}).json()
    assert body["bucket_s"] == 60 and body["start_ms"] == T0 + 5_000 and body["end_ms"] == T0 + 5_001
    assert body["totals"] == {"back": {"in": 1, "out": 0}}
    body = client.get("/v1/counts", params={"camera_id": "cam-2", "bucket_s": 86_400}).json()
    assert body["start_ms"] == T0 + 5_000 and body["bucket_s"] == 86_400
    assert body["buckets"] == [{"line_id": "back", "start_ms": T0, "end_ms": T0 + 86_400_000, "in": 1, "out": 0}]
    assert body["totals"] == {"back": {"in": 1, "out": 0}}


@pytest.mark.parametrize(("params", "fragment"), [
    ({"start_ms": 10, "end_ms": 10}, "must be greater than start_ms"),
    ({"start_ms": 10, "end_ms": 5}, "must be greater than start_ms"),
    ({"bucket_s": 0}, "greater than or equal to 1"),
    ({"bucket_s": 86_400 * 31 + 1}, "less than or equal to"),
    ({"bucket_s": "abc"}, "valid integer"),
    ({"start_ms": "1.5"}, "valid integer"),
    ({"start_ms": -1}, "greater than or equal to 0"),
    ({"end_ms": 10**30}, "less than or equal to"),
    ({"start_ms": 0, "end_ms": 10**12, "bucket_s": 1}, f"more than the limit of {MAX_BUCKETS}"),
    ({"start_ms": 0, "end_ms": MAX_BUCKETS * 1000 + 1, "bucket_s": 1}, "narrow the range or use bucket_s >= 2"),
])
def test_counts_bad_input_is_422(client: TestClient, params: dict[str, object], fragment: str) -> None:
    r = client.get("/v1/counts", params={"camera_id": "cam-1", **params})
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_counts_bucket_limit_is_inclusive(client: TestClient) -> None:
    r = client.get("/v1/counts", params={"camera_id": "cam-1", "start_ms": 0,
                                         "end_ms": MAX_BUCKETS * 1000, "bucket_s": 1})
    assert r.status_code == 200
    assert r.json()["buckets"] == []


def test_counts_missing_camera_is_422(client: TestClient) -> None:
    r = client.get("/v1/counts")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "camera_id"]


@pytest.mark.parametrize(("params", "detail"), [
    ({"camera_id": "nope"}, "unknown camera 'nope'"),
    ({"camera_id": "cam-1", "line_id": "back"}, "unknown line 'back' of camera 'cam-1'"),
])
def test_counts_unknown_camera_or_line_is_404(client: TestClient, params: dict[str, str], detail: str) -> None:
    r = client.get("/v1/counts", params=params)
    assert (r.status_code, r.json()) == (404, {"detail": detail})


# -- occupancy ---------------------------------------------------------------------


def test_store_occupancy(client: TestClient) -> None:
    assert client.get("/v1/occupancy").json() == {
        "store_id": "store-42",
        "occupancy": 2,
        "cameras": [
            {"camera_id": "cam-1", "occupancy": 2, "total_in": 3, "total_out": 1, "ts_ms": T0 + 62_000,
             "last_seen_ts_ms": T0 + 80, "stale": False},  # the newest stored frame; a recorded file: never stale
            {"camera_id": "cam-2", "occupancy": 0, "total_in": 0, "total_out": 0, "ts_ms": 0, "stale": False},
        ],
        "stale": False,  # no camera is
    }


def test_store_occupancy_sums_cameras(client: TestClient, storage: SqliteStorage) -> None:
    storage.write_occupancy(m.OccupancyUpdate(camera_id="cam-2", ts_ms=T0, occupancy=5, total_in=5))
    assert client.get("/v1/occupancy").json()["occupancy"] == 7


@pytest.mark.parametrize(("camera_id", "status", "body"), [
    ("cam-1", 200, {"camera_id": "cam-1", "occupancy": 2, "total_in": 3, "total_out": 1, "ts_ms": T0 + 62_000,
                    "last_seen_ts_ms": T0 + 80, "stale": False}),
    ("cam-2", 200, {"camera_id": "cam-2", "occupancy": 0, "total_in": 0, "total_out": 0, "ts_ms": 0,
                    "stale": False}),
    ("cam-9", 404, {"detail": "unknown camera 'cam-9'"}),
])
def test_camera_occupancy(client: TestClient, camera_id: str, status: int, body: dict[str, object]) -> None:
    r = client.get(f"/v1/occupancy/{camera_id}")
    assert (r.status_code, r.json()) == (status, body)


# -- tracks and crossings --------------------------------------------------------------


def test_tracks(client: TestClient) -> None:
    r = client.get("/v1/cameras/cam-1/tracks", params={"start_ms": T0, "end_ms": T0 + 1_000})
    assert r.json() == {
        "camera_id": "cam-1",
        "tracks": [
            {"track_id": 1, "points": [
                {"ts_ms": T0, "seq": 0, "bbox_xyxy": [10.0, 20.0, 50.0, 120.0], "confidence": 0.5},
                {"ts_ms": T0 + 40, "seq": 1, "bbox_xyxy": [12.0, 22.0, 52.0, 122.0], "confidence": 0.75},
            ]},
            {"track_id": 2, "points": [
                {"ts_ms": T0 + 40, "seq": 1, "bbox_xyxy": [300.0, 40.0, 340.0, 140.0], "confidence": 0.25},
                {"ts_ms": T0 + 80, "seq": 2, "bbox_xyxy": [302.0, 42.0, 342.0, 142.0], "confidence": 0.5},
            ]},
        ],
    }


@pytest.mark.parametrize(("params", "expected"), [
    ({"start_ms": T0 + 40, "end_ms": T0 + 80}, [(1, [1]), (2, [1])]),
    ({"limit_points": 2}, [(1, [0, 1])]),
    ({"limit_points": 3}, [(1, [0, 1]), (2, [1])]),
    ({"start_ms": T0 + 81}, []),
])
def test_tracks_range_and_limit(client: TestClient, params: dict[str, int],
                                expected: list[tuple[int, list[int]]]) -> None:
    body = client.get("/v1/cameras/cam-1/tracks", params=params).json()
    assert [(t["track_id"], [p["seq"] for p in t["points"]]) for t in body["tracks"]] == expected


@pytest.mark.parametrize("params", [
    {"limit_points": 0}, {"limit_points": 100_001}, {"limit_points": "many"}, {"start_ms": 5, "end_ms": 1},
])
def test_tracks_bad_input_is_422(client: TestClient, params: dict[str, object]) -> None:
    assert client.get("/v1/cameras/cam-1/tracks", params=params).status_code == 422


def test_crossings(client: TestClient) -> None:
    r = client.get("/v1/cameras/cam-1/crossings", params={"start_ms": T0 + 30_000, "end_ms": T0 + 62_000})
    assert r.json() == [
        {"event_id": "cam-1:door:2:750", "line_id": "door", "track_id": 2, "direction": "in",
         "ts_ms": T0 + 30_000, "seq": 750},
        {"event_id": "cam-1:door:1:1525", "line_id": "door", "track_id": 1, "direction": "out",
         "ts_ms": T0 + 61_000, "seq": 1525},
    ]
    all_events = client.get("/v1/cameras/cam-1/crossings").json()
    assert [e["seq"] for e in all_events] == [25, 750, 1525, 1550]
    assert [e["seq"] for e in client.get("/v1/cameras/cam-1/crossings", params={"limit": 1}).json()] == [25]


@pytest.mark.parametrize("path", ["/v1/cameras/nope/tracks", "/v1/cameras/nope/crossings"])
def test_camera_paths_unknown_camera_is_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert (r.status_code, r.json()) == (404, {"detail": "unknown camera 'nope'"})


def test_crossings_bad_range_is_422(client: TestClient) -> None:
    r = client.get("/v1/cameras/cam-1/crossings", params={"start_ms": 5, "end_ms": 5})
    assert r.status_code == 422
    assert r.json() == {"detail": "end_ms (5) must be greater than start_ms (5)"}
