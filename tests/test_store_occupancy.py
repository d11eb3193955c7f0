"""The store's occupancy that ``/v1/occupancy`` and ``/v1/live`` show is the ``store_occupancy`` alert's number.

A real analytics stage, run by the runner (in-process bus) over real ``TrackedFrame`` messages of two cameras,
writes through its sinks into a real SQLite store (and a real Redis live state); the real API app answers.
Camera ``c``'s ``door`` is the store's entrance; camera ``d``'s line is a department's: its shoppers are in the
store already. With ``store.entrance_lines: [c/door]`` the store's number counts ``c/door`` only (one row the
stage writes, camera id ``@store``); without, it counts every line (here 1 + 2), in the same row. Per camera,
nothing changes.
"""
from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from storelens.api import create_app
from storelens.api.routes.live import counts_snapshot
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain import counting
from storelens.errors import ConfigError
from storelens.runtime.bus import InProcessBus
from storelens.runtime.runner import Runner, RunnerCore
from storelens.runtime.sinks import HistorySink, LiveSink
from storelens.runtime.transports import InProcessTransport
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage.live import RedisLiveState
from test_alerts import IN, OUT, two_cameras, walk
from test_live import REDIS_URL

# c: 1 and 3 come in through the door, 1 goes out again (c: 2 in, 1 out, occupancy 1);
# d: 2 and 4 cross the department line (d: 2 in, occupancy 2).
FRAMES = sorted(walk("c", 1, IN, 0, 1000) + walk("d", 2, IN, 0, 1050) + walk("c", 3, IN, 4, 2600)
                + walk("d", 4, IN, 4, 2650) + walk("c", 1, OUT, 8, 4200), key=lambda f: f.ts_ms)
#: The store's row: camera id ``@store`` (documented; ``counting.STORE_OCCUPANCY_ID``), which no camera can have.
STORE_ROW = "@store"
RULES = [{"kind": "store_occupancy", "id": "full", "max": 1, "cooldown_s": 0}]


def handled(stage: AnalyticsStage, sinks: list, frames: list,
            bus: InProcessBus | None = None) -> Iterator[m.TrackedFrame]:
    """Each of ``frames`` once the runner (``stage`` and its ``sinks`` on an in-process bus, ``bus`` if given) has
    handled it."""
    bus = InProcessBus() if bus is None else bus
    runner = Runner(RunnerCore(stage, sinks), InProcessTransport(bus, list(stage.inputs), outputs=stage.outputs))
    for tf in frames:
        bus.publish(topics.TRACKS, topics.camera_key(tf.camera_id), m.encode(tf))
        assert runner.handle(runner.transport.poll(1.0))
        yield tf


@pytest.fixture(params=["storage", "redis"])
def live(request):
    """No live state (embedded mode: the API reads storage) or a real Redis one (distributed mode)."""
    if request.param == "storage":
        yield None
        return
    state = RedisLiveState(REDIS_URL, prefix=f"storelens-test:{uuid.uuid4().hex[:16]}")
    yield state
    state.clear()
    state.close()


@pytest.mark.parametrize("entrance, store, seen_rows", [
    # the entrance only: 2 in, 1 out; d's department crossings are not the store's again
    (["c/door"], {"occupancy": 1, "in": 2, "out": 1}, True),
    # no entrance lines: every line is an entrance (1 + 2), the store's row as well
    (None, {"occupancy": 3, "in": 4, "out": 1}, True),
])
def test_api_shows_the_alerts_store_occupancy(tmp_path, live, entrance, store, seen_rows) -> None:
    cfg = parse_config(two_cameras(RULES, entrance))
    stage = AnalyticsStage(cfg)
    bus = InProcessBus()
    published = bus.subscribe(topics.OCCUPANCY)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        sinks = [HistorySink(st)] + ([LiveSink(live)] if live is not None else [])
        app = create_app(cfg, st, live)
        client = signed_in_client(app, role="viewer")
        shown = []
        for _ in handled(stage, sinks, FRAMES, bus):
            api = client.get("/v1/occupancy").json()
            # after every frame: the number of the API is the one the store_occupancy alert reads
            assert api["occupancy"] == stage.store_alerts.store_occupancy() == stage.store_occupancy()
            shown.append(api["occupancy"])
        assert shown[-1] == store["occupancy"] and max(shown) == (2 if entrance else 4), shown

        api = client.get("/v1/occupancy").json()
        assert {c["camera_id"]: (c["occupancy"], c["total_in"], c["total_out"]) for c in api["cameras"]} == {
            "c": (1, 2, 1), "d": (2, 2, 0)}  # per camera: unchanged
        snap = counts_snapshot(app.state.context)  # what /v1/live pushes
        assert snap["store"] == store
        assert snap["store"]["occupancy"] == api["occupancy"] == stage.store_occupancy()
        assert [(c["camera_id"], c["occupancy"], c["in"], c["out"]) for c in snap["cameras"]] == [
            ("c", 1, 2, 1), ("d", 2, 2, 0)]
        assert client.get(f"/v1/occupancy/{STORE_ROW}").status_code == 404  # no camera

        # one row, stored and published as the cameras' are
        row = st.occupancy(STORE_ROW)
        sent = [m.decode(m.OccupancyUpdate, x.value) for x in iter(lambda: published.poll(0), None)]
        store_sent = [u for u in sent if u.camera_id == STORE_ROW]
        if seen_rows:
            assert (row.occupancy, row.total_in, row.total_out) == (store["occupancy"], store["in"], store["out"])
            assert row.ts_ms == max(f.ts_ms for f in FRAMES if f.camera_id == "c" and f.seq == 10)
            assert store_sent[-1] == row and {u.camera_id for u in sent} == {"c", "d", STORE_ROW}
            if live is not None:
                assert live.occupancy(STORE_ROW) == row
        else:
            assert row is None and not store_sent


def test_the_store_row_before_it_exists_and_with_entrance_lines_removed(tmp_path) -> None:
    """Older data (camera rows, no store row): the sum, as before. A store row is the store's number whatever
    lines it was counted over (a site without entrance lines writes one too)."""
    cfg = parse_config(two_cameras(RULES, ["c/door"]))
    with SqlStorage(str(tmp_path / "h.db")) as st:
        st.write_records([m.OccupancyUpdate(camera_id="c", ts_ms=10, occupancy=1, total_in=2, total_out=1),
                          m.OccupancyUpdate(camera_id="d", ts_ms=10, occupancy=2, total_in=2, total_out=0)])
        assert signed_in_client(create_app(cfg, st), role="viewer").get("/v1/occupancy").json()["occupancy"] == 3
        st.write_records([m.OccupancyUpdate(camera_id=STORE_ROW, ts_ms=10, occupancy=1, total_in=2,
                                            total_out=1)])
        app = create_app(cfg, st)
        assert signed_in_client(app, role="viewer").get("/v1/occupancy").json()["occupancy"] == 1
        assert counts_snapshot(app.state.context)["store"] == {"occupancy": 1, "in": 2, "out": 1}
        plain = create_app(parse_config(two_cameras(RULES)), st)
        assert signed_in_client(plain, role="viewer").get("/v1/occupancy").json()["occupancy"] == 1


def test_no_camera_can_have_the_store_rows_id() -> None:
    assert counting.STORE_OCCUPANCY_ID == STORE_ROW
    raw = two_cameras(RULES)
    raw["cameras"][1]["id"] = STORE_ROW
    with pytest.raises(ConfigError):
        parse_config(raw)
