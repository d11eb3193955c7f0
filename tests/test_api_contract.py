"""The API contract under fuzzing: schemathesis, every check, against the app in-process.

The app runs over a small SQLite history with real records of every kind the routes
read (crossings, tracked frames, occupancy, zone events and statistics, track
summaries, heatmap windows, face attributes, customer matches, transactions) and a
real customer gallery, signed in as an admin (API key). Schemathesis loads the app's OpenAPI schema
and runs all its phases (coverage, fuzzing, stateful; examples when the schema has
some) with every check enabled, a bounded number of examples per operation, a fixed
seed and no example database (deterministic); the test fails on any failed check or
server error and prints each failure with its curl reproduction. About a minute on
2 cores.
"""
from __future__ import annotations

import pathlib
import time
from typing import Any, Iterator

import numpy as np
import pytest
import schemathesis

from storelens.api.testing import api_key_for, signed_in_client
from storelens.api import create_app
from storelens.config import SiteConfig, parse_config
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent, crossing_event_id
from storelens.storage import SqliteStorage
from storelens.storage.gallery import SqliteGalleryStore, Visit

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEED = 20261203
#: Examples per operation and phase (about 4200 requests in all, under a minute on 2 cores).
MAX_EXAMPLES = 100
SQUARE = [[[100, 100], [0.0, 0.0]], [[300, 100], [2.0, 0.0]], [[300, 300], [2.0, 2.0]], [[100, 300], [0.0, 2.0]]]
POLY = [[0, 0], [200, 0], [200, 200], [0, 200]]


def site(plan: pathlib.Path) -> SiteConfig:
    return parse_config({
        "store": {"id": "store-42", "name": "Main street", "timezone": "Europe/Berlin",
                  "entrance_lines": ["door/entry"],
                  "opening_hours": {d: ["09:00", "20:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")}},
        "cameras": [
            {"id": "door", "source": "/tmp/door.mp4", "floor": {"points": SQUARE},
             "lines": [{"id": "entry", "a": [0, 300], "b": [640, 300]}],
             "zones": [{"id": "hall", "kind": "entrance", "polygon": POLY}]},
            {"id": "floor", "source": "/tmp/floor.mp4",
             "zones": [{"id": "fruit", "kind": "shelf", "polygon": POLY},
                       {"id": "till", "kind": "queue", "polygon": POLY, "service_edge": [0, 1]}]},
        ],
        "journeys": {"links": [{"from": "door", "to": "floor", "max_s": 30, "both_ways": True}]},
        "floor_plan": {"image": str(plan), "px_per_m": 100, "origin_px": [0, 0], "cell_m": 0.5},
    })


def summary(cam: str, tid: int, first_s: int, last_s: int, emb: list[float],
            zones: tuple = (), crossings: tuple = ()) -> m.TrackSummary:
    s = m.TrackSummary(camera_id=cam, track_id=tid, first_ts_ms=T0 + first_s * 1000, last_ts_ms=T0 + last_s * 1000,
                       n_frames=10)
    s.appearance.extend(np.asarray(emb, np.float64) / np.linalg.norm(emb))
    for z, k, a, b in zones:
        s.zones.add(zone_id=z, zone_kind=k, enter_ts_ms=T0 + a * 1000, exit_ts_ms=T0 + b * 1000)
    for ln, d, t in crossings:
        s.crossings.add(line_id=ln, direction=m.DIRECTION_IN if d == "in" else m.DIRECTION_OUT, ts_ms=T0 + t * 1000)
    return s


def fill(s: SqliteStorage) -> None:
    s.write_crossings([
        CrossingEvent(crossing_event_id("door", "entry", k, k * 25), "door", "entry", k, d, T0 + t, k * 25)
        for k, (d, t) in enumerate([("in", 1_000), ("in", 30_000), ("out", 61_000), ("in", 62_000)], 1)])
    for seq in range(20):
        s.write_tracked_frame(m.TrackedFrame(camera_id="door", seq=seq, ts_ms=T0 + seq * 100, tracks=[
            m.Track(track_id=1, bbox_xyxy=m.BoxXYXY(x1=100 + seq * 5, y1=50, x2=140 + seq * 5, y2=150),
                    confidence=0.9)]))
    s.write_occupancy(m.OccupancyUpdate(camera_id="door", ts_ms=T0 + 62_000, occupancy=2, total_in=3, total_out=1))
    s.write_records([
        summary("door", 1, 0, 5, [1, 0, 0], zones=(("hall", "entrance", 0, 5),), crossings=(("entry", "in", 3),)),
        summary("floor", 7, 10, 60, [0.9, 0.1, 0], zones=(("fruit", "shelf", 12, 30), ("till", "queue", 35, 58))),
        summary("door", 2, 65, 70, [1, 0.05, 0], crossings=(("entry", "out", 68),)),
        *[m.ZoneEvent(event_id=f"z{k}", camera_id="floor", zone_id=z, zone_kind=kind, track_id=k, kind=ev,
                      ts_ms=T0 + t, seq=k, **extra)
          for k, (z, kind, ev, t, extra) in enumerate([
              ("fruit", "shelf", m.ZONE_EVENT_ENTER, 12_000, {}),
              ("fruit", "shelf", m.ZONE_EVENT_EXIT, 30_000, {"dwell_ms": 18_000, "how": "other"}),
              ("till", "queue", m.ZONE_EVENT_ENTER, 35_000, {}),
              ("till", "queue", m.ZONE_EVENT_LOITER, 50_000, {}),
              ("till", "queue", m.ZONE_EVENT_EXIT, 58_000, {"dwell_ms": 23_000, "how": "service_edge"})])],
        m.ZoneStats(camera_id="floor", zone_id="till", bucket_start_ms=T0, bucket_end_ms=T0 + 60_000,
                    mean_occupancy=0.4),
        m.HeatmapWindow(camera_id="door", window_start_ms=T0, window_end_ms=T0 + 60_000, cell_px=16, width=640,
                        height=480, cells=[m.HeatmapCell(gx=7, gy=9, occupancy_ms=10_000, dwell_ms=9_000)]),
        m.PosTransaction(transaction_id="r-1", register_id="till-1", ts_ms=T0 + 40_000, amount_minor=1250,
                         currency="EUR", items_count=2),
    ])
    s.write_track_attributes([m.TrackAttributes(
        camera_id="door", track_id=1, first_ts_ms=T0, last_ts_ms=T0 + 5_000, last_seq=125, n_faces=3,
        gender=m.gender_value("female"), emotion=m.emotion_value("happy"), age_years=31.0)])
    s.write_customer_matches([m.CustomerMatch(event_id="door:1", camera_id="door", track_id=1, seq=25,
                                              ts_ms=T0 + 1_000, customer_id="cust-a", is_new=True, visit_no=1)])


def fill_gallery(g: SqliteGalleryStore) -> None:
    rng = np.random.default_rng(0)
    for cid, created in (("cust-a", T0), ("cust-b", T0 + 10)):
        g.add_customer(cid, created)
        g.add_embedding(cid, created, rng.standard_normal(4).astype(np.float32))
    g.save_visit(Visit("cust-a", 1, T0, T0 + 60_000, ("door",)))


#: What schemathesis' positive_data_acceptance accepts for a schema-valid request, plus 422: the routes
#: refuse valid fields that break a rule OpenAPI cannot state (an empty range, too many buckets, both
#: or neither of ``ts_ms``/``time``); :func:`schema_valid_requests_pass_validation` checks those 422s.
POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]


@schemathesis.check
def schema_valid_requests_pass_validation(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request refused with 422 breaks a rule the schema cannot state, never one it states.

    The rule is a route's own check (``detail`` a string) or a model validator (errors of type
    ``value_error``); an error of another type (``greater_than_equal``, ``missing``, ...) means the
    documented schema and the request validation disagree.
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    detail = response.json().get("detail")
    if isinstance(detail, str):
        return None
    stated = [d for d in detail if d.get("type") != "value_error"]
    if stated:
        raise AssertionError(f"schema-valid request refused by request validation: {stated}")
    return None


def run_schemathesis(app: Any) -> tuple[list[str], dict[str, int], int]:
    """Every phase and check of schemathesis against ``app``: (failure reports, failures per check, cases run)."""
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import from_schema
    from schemathesis.engine import events

    config = SchemathesisConfig.from_dict({
        "seed": SEED,
        "headers": {"Authorization": f"Bearer {api_key_for(app, 'admin')}"},  # an admin reaches every route
        "checks": {"enabled": True, "positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES}},
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "deterministic": True, "database": "none"},
    })
    # /v1/live is an endless event stream (tests/test_api_live.py reads it)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config).exclude(path="/v1/live")
    reports: list[str] = []
    by_check: dict[str, int] = {}
    cases = 0
    phases: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            cases += len(event.recorder.cases)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.failure_info is None:
                        continue
                    by_check[check.name] = by_check.get(check.name, 0) + 1
                    failure = check.failure_info.failure
                    reports.append(f"[{check.name}] {event.recorder.label}: {failure.title}\n  {failure.message}\n"
                                   f"  {check.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError):
            reports.append(f"[error] {event.label}: {event.info.format()}")
            by_check["error"] = by_check.get("error", 0) + 1
        elif isinstance(event, events.PhaseFinished):
            phases.append(f"{event.phase.name.value}: {event.status.value}")
        elif isinstance(event, events.EngineFinished):
            assert event.stop_reason == "completed", event.stop_reason
        elif isinstance(event, events.FatalError):
            raise event.exception
    print(f"\nschemathesis phases: {', '.join(phases)}")
    return reports, by_check, cases


@pytest.fixture
def app(tmp_path: pathlib.Path) -> Iterator[Any]:
    import cv2

    plan = tmp_path / "plan.png"
    cv2.imwrite(str(plan), np.full((300, 400, 3), 255, np.uint8))
    storage = SqliteStorage(str(tmp_path / "history.db"))
    gallery = SqliteGalleryStore(tmp_path / "gallery.db", dim=4)
    try:
        fill(storage)
        fill_gallery(gallery)
        yield create_app(site(plan), storage, gallery_store=gallery)
    finally:
        gallery.close()
        storage.close()


def test_405_allows_every_method_of_the_path(app: Any) -> None:

    with signed_in_client(app) as c:
        r = c.options("/v1/customers/cust-a")  # GET and DELETE are two routes of one path
        assert (r.status_code, r.headers["allow"], r.json()) == (405, "DELETE, GET", {"detail": "Method Not Allowed"})
        assert c.put("/v1/counts").headers["allow"] == "GET"
        assert c.get("/v1/transactions").headers["allow"] == "POST"


def test_every_422_is_documented_as_one_schema(app: Any) -> None:

    with signed_in_client(app) as c:
        spec = c.get("/openapi.json").json()
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                has_params = bool(op.get("parameters") or op.get("requestBody"))
                assert ("422" in op["responses"]) == has_params, (method, path)
                if has_params:
                    ref = op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/InvalidRequestOut", (method, path)
        assert "HTTPValidationError" not in spec["components"]["schemas"]
        bad_field = c.get("/v1/counts", params={"camera_id": "door", "start_ms": -1})
        assert bad_field.status_code == 422 and bad_field.json()["detail"][0]["loc"] == ["query", "start_ms"]
        bad_rule = c.get("/v1/counts", params={"camera_id": "door", "start_ms": 10, "end_ms": 5})
        assert bad_rule.json() == {"detail": "end_ms (5) must be greater than start_ms (10)"}
        assert c.post("/v1/transactions", content=b"\xff", headers={"content-type": "application/json"}
                      ).status_code == 400  # documented on routes with a body


def test_api_contract_holds_under_fuzzing(app: Any) -> None:
    started = time.monotonic()
    reports, by_check, cases = run_schemathesis(app)
    print(f"\nschemathesis: {cases} cases in {time.monotonic() - started:.0f} s; failures by check: {by_check}")
    assert cases > 1000
    assert not reports, f"{len(reports)} failures ({by_check}):\n\n" + "\n\n".join(reports[:40])
