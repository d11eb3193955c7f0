"""Buying units and staff-only zones end to end on real footage with ground truth (issue 11 items 3-4).

TUD-Stadtmitte (a pedestrian street: couples and small groups walk across the view) goes
once through the embedded pipeline (YOLO + tracker + analytics stage) into SQLite, with
vertical counting lines every 80 px and the left strip as a ``staff_only`` zone. The
expected values are what the same analytics stage gives on the sequence's ground-truth
boxes. Asserted, with tolerances for detection misses and id switches:

* the groups (buying units) the pipeline finds match the expected ones (pair precision and
  recall, ``bench/groups.py`` measures both sequences);
* the staff-only zone marks the same people as staff, and ``GET /v1/kpis`` excludes their
  entrance crossings from the visitors and counts them as ``staff_in``;
* ``GET /v1/counts?groups=true`` serves the stored buying units next to the crossings.
"""
from __future__ import annotations

import pathlib
import sys

import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain import staff as ST
from storelens.domain.counting import CrossingEvent
from storelens.domain.groups import compare_groups
from storelens.paths import asset
from storelens.stages.analytics import derive
from storelens.stages.groups import groups_from_records
from storelens.storage import SqlStorage
from storelens.storage import groups as gq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import groups as bench  # noqa: E402

pytestmark = pytest.mark.slow

NAME = "TUD-Stadtmitte"
STAFF_ZONE = {"id": "back", "kind": "staff_only", "polygon": [[0, 0], [160, 0], [160, 480], [0, 480]]}


def site(db: pathlib.Path) -> dict:
    raw = bench.site(asset("mot", NAME, f"{NAME}.mp4"), db)
    raw["cameras"][0]["zones"] = [STAFF_ZONE]
    return raw


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from storelens.runtime.embedded import EmbeddedPipeline

    video = asset("mot", NAME, f"{NAME}.mp4")
    if not video.exists():
        pytest.skip(f"asset missing: {video}")
    db = tmp_path_factory.mktemp("groups") / "live.db"
    cfg = parse_config(site(db))
    expected = derive(cfg, bench.gt_frames(asset("mot", NAME, "gt", "gt.txt"), 25.0))
    with SqlStorage(str(db)) as storage:
        EmbeddedPipeline(cfg, storage=storage).run()
    return cfg, expected, db


def test_groups_match_the_ground_truth_groups(run) -> None:
    cfg, expected, db = run
    with SqlStorage(str(db)) as storage:
        predicted = gq.stored_groups(storage, "cam")
    exp = groups_from_records(expected)
    s = compare_groups(exp, predicted)
    print(f"\n{NAME}: expected {s.units_expected} units / {s.groups_expected} groups of 2+, pipeline "
          f"{s.units_predicted} / {s.groups_predicted}; pairs P {s.pair_precision} R {s.pair_recall}")
    assert s.groups_expected >= 3  # the sequence has groups to find
    assert s.pair_precision is not None and s.pair_precision >= 0.8
    assert s.pair_recall is not None and s.pair_recall >= 0.55
    assert abs(s.units_predicted - s.units_expected) <= 3


def test_staff_only_zone_marks_staff_and_kpis_exclude_them(run) -> None:
    cfg, expected, db = run
    exp_staff = {(s.camera_id, s.track_id): s.ts_ms for s in expected if isinstance(s, m.StaffTrack)}
    exp_ins = [(c.ts_ms, c.camera_id, c.track_id) for c in expected
               if isinstance(c, CrossingEvent) and c.direction == "in"]
    exp_visitors, exp_staff_in = ST.split_entries(exp_ins, exp_staff)
    assert len(exp_staff) >= 2 and len(exp_staff_in) >= 1  # the zone catches people who also cross lines
    with SqlStorage(str(db)) as storage:
        staff = gq.staff_track_ids(storage, 0, 2**62)
        client = signed_in_client(create_app(cfg, storage))
        start = bench.START_TS_MS
        kpis = client.get("/v1/kpis", params={"period": "day", "start_ms": start, "end_ms": start + 60_000}).json()
        counts = client.get("/v1/counts", params={"camera_id": "cam", "groups": "true"}).json()
        ins = sum(t["in"] for t in counts["totals"].values())
    print(f"\nstaff tracks: ground truth {len(exp_staff)}, pipeline {len(staff)}; staff_in GT {len(exp_staff_in)} "
          f"pipeline {kpis['totals']['staff_in']}; visitors GT {len(exp_visitors)} pipeline "
          f"{kpis['totals']['visitors']}")
    assert abs(len(staff) - len(exp_staff)) <= 1
    assert abs(kpis["totals"]["staff_in"] - len(exp_staff_in)) <= 1
    assert kpis["staff_excluded"] is True
    assert kpis["totals"]["visitors"] + kpis["totals"]["staff_in"] == ins  # every entrance in is one or the other
    units = sum(t["groups_in"] for t in counts["totals"].values())
    assert 0 < units < ins  # some people came in together
    assert kpis["totals"]["buying_units"] <= units
