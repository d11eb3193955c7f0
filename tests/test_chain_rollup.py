"""The chain roll-up (issue 11 item 6): stores publish their KPI hours, the chain adds them up.

Two stores in two time zones (Berlin, New York), each a real pipeline run over a CAVIAR shop
entrance clip (a door line, a shop-floor `area` zone) on the Saturday morning of its own
calendar, plus point-of-sale transactions. Each store's hours go through the chain's stage
(``ChainRollupStage``) into a chain history; the chain's API must give, per store, exactly the
figures the store's own ``GET /v1/kpis`` gives (medians within one histogram bin), and add
them up by region and chain. On Kafka: the ``chain-rollup`` service reads both stores' topics
by regex into PostgreSQL.
"""
from __future__ import annotations

import datetime as dt
import pathlib
import time
import uuid

import pytest
import sqlalchemy as sa
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.cli import main
from storelens.config import load_config, parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain import pos
from storelens.domain import rollup as R
from storelens.paths import asset
from storelens.runtime.bus import BusMessage
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.runtime.rollup import hour_key
from storelens.runtime.runner import RunnerCore
from storelens.runtime.sinks import HistorySink
from storelens.stages.rollup import ChainRollupStage
from storelens.storage import SqliteStorage, open_storage
from storelens.storage import business as bq
from storelens.storage.rollup import chain_stores, kpi_hours, kpi_publisher
from storelens.storage.schema import pos_transactions

DAY = "2026-10-24"  # a Saturday
DOOR = {"id": "door", "a": [340, 135], "b": [140, 135]}
FLOOR = {"id": "floor", "kind": "area", "polygon": [[0, 0], [384, 0], [384, 130], [0, 130]]}
STORES = {  # id: (clip, time zone, region, sales in cents at minutes after 10:00 local)
    "berlin-01": ("EnterExitCrossingPaths1front", "Europe/Berlin", "north", [(20, 1250), (50, 3999)]),
    "nyc-01": ("OneLeaveShopReenter1front", "America/New_York", "east", [(30, 2000)]),
}
CHAIN = {"store": {"id": "chain", "name": "The chain"}, "cameras": [], "chain": {}, "privacy": {"k_min": 1}}


def local_ms(tz: str, hhmm: str) -> int:
    import zoneinfo

    return int(dt.datetime.fromisoformat(f"{DAY}T{hhmm}:00").replace(tzinfo=zoneinfo.ZoneInfo(tz)).timestamp() * 1000)


def store_site(store: str, tmp: pathlib.Path) -> dict:
    clip, tz, region, _ = STORES[store]
    return {"store": {"id": store, "name": store.upper(), "region": region, "timezone": tz,
                      "opening_hours": {"sat": ["09:00", "20:00"]}},
            "privacy": {"k_min": 1},
            "storage": {"backend": "sqlite", "path": str(tmp / f"{store}.sqlite")},
            "cameras": [{"id": "entrance", "source": str(asset("video", "caviar", clip, f"{clip}.mp4")),
                         "start_ts_ms": local_ms(tz, "10:05"), "lines": [DOOR], "zones": [FLOOR]}]}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """store id -> (site file, config): the real pipeline's history plus the store's sales."""
    tmp = tmp_path_factory.mktemp("chain")
    out = {}
    for store, (_, tz, _, sales) in STORES.items():
        path = tmp / f"{store}.yaml"
        path.write_text(yaml.safe_dump(store_site(store, tmp)))
        config = load_config(path)
        storage = open_storage(config.storage)
        try:
            EmbeddedPipeline(config, storage=storage).run()
            bq.write_transactions(storage, [
                pos.transaction(f"{store}-r{i}", store, "till-1", local_ms(tz, "10:00") + minute * 60_000, cents,
                                "EUR", 1) for i, (minute, cents) in enumerate(sales)])
        finally:
            storage.close()
        out[store] = (path, config)
    return out


def own_kpis(config, period: str = "day") -> dict:
    storage = open_storage(config.storage)
    try:
        with signed_in_client(create_app(config, storage)) as c:
            start = local_ms(config.store.timezone, "00:00")
            r = c.get("/v1/kpis", params={"period": period, "start_ms": start, "end_ms": start + 86_400_000})
            assert r.status_code == 200, r.text
            return r.json()
    finally:
        storage.close()


def roll_into(chain_storage, hours: list[m.StoreKpiHour]) -> RunnerCore:
    core = RunnerCore(ChainRollupStage(parse_config(CHAIN)), [HistorySink(chain_storage)])
    for i, h in enumerate(hours):
        msg = BusMessage(f"{h.store_id}.{topics.STORE_KPIS}", hour_key(h), m.encode(h), i)
        core.write_sinks(core.process(msg, topics.STORE_KPIS))
    return core


def hours_of(config, storage, now_ms: int | None = None) -> list[m.StoreKpiHour]:
    start = local_ms(config.store.timezone, "00:00")
    return kpi_hours(config, storage, start, start + 86_400_000, now_ms or start + 86_400_000)


FIGURES = ("visitors", "staff_in", "transactions", "sales_minor", "conversion", "atv_minor",
           "sales_per_visitor_minor", "abandonments", "queue_served")


def test_chain_figures_equal_each_stores_own(stores) -> None:
    chain = SqliteStorage(":memory:")
    own = {}
    for store, (_, config) in stores.items():
        storage = open_storage(config.storage)
        try:
            hours = hours_of(config, storage)
        finally:
            storage.close()
        assert len(hours) == 11 and {h.day for h in hours} == {DAY}  # 09:00-20:00 of its own Saturday
        roll_into(chain, hours)
        own[store] = own_kpis(config)
    # the real footage crossed the door and entered the floor zone, and there were sales
    assert all(o["totals"]["visitors"] >= 1 and o["totals"]["transactions"] >= 1 for o in own.values())
    assert any(o["totals"]["median_dwell_s"] is not None for o in own.values())

    with signed_in_client(create_app(parse_config(CHAIN), chain)) as c:
        listed = c.get("/v1/stores").json()
        assert [(s["store_id"], s["region"], s["timezone"], s["name"]) for s in listed["stores"]] == [
            ("berlin-01", "north", "Europe/Berlin", "BERLIN-01"), ("nyc-01", "east", "America/New_York", "NYC-01")]
        assert listed["regions"] == ["east", "north"]
        by_store = c.get("/v1/chain/kpis", params={"from_day": DAY, "to_day": DAY}).json()
        by_region = c.get("/v1/chain/kpis", params={"from_day": DAY, "to_day": DAY, "group_by": "region"}).json()
        whole = c.get("/v1/chain/kpis", params={"from_day": DAY, "to_day": DAY, "group_by": "chain",
                                                "period": "week"}).json()
        other = c.get("/v1/kpis", params={"store": "nyc-01", "period": "day", "start_ms": local_ms(
            "America/New_York", "00:00"), "end_ms": local_ms("America/New_York", "23:00")}).json()
        assert c.get("/v1/kpis", params={"store": "nowhere", "start_ms": 0}).status_code == 404

    groups = {g["group"]: g for g in by_store["groups"]}
    assert set(groups) == set(STORES)
    for store, o in own.items():
        mine, theirs = o["totals"], groups[store]["totals"]
        assert {f: theirs[f] for f in FIGURES} == {f: mine[f] for f in FIGURES}, store
        assert theirs["hours"] == 11.0 and groups[store]["buckets"][0]["key"] == DAY
        if mine["median_dwell_s"] is not None:  # the histogram's median lies in the exact median's bin
            assert _same_bin(theirs["median_dwell_s"], mine["median_dwell_s"]), (theirs, mine)
    assert {f: other["totals"][f] for f in FIGURES} == {f: own["nyc-01"]["totals"][f] for f in FIGURES}
    assert other["source"] == "rollup" and other["buckets"][0]["label"] == DAY

    total = {f: sum(o["totals"][f] for o in own.values()) for f in ("visitors", "transactions", "sales_minor")}
    assert {f: whole["chain"][f] for f in total} == total
    assert [g["group"] for g in whole["groups"]] == ["chain"] and whole["groups"][0]["buckets"][0]["label"] == \
        "2026-W43"
    assert {g["group"]: g["totals"]["visitors"] for g in by_region["groups"]} == {
        "north": own["berlin-01"]["totals"]["visitors"], "east": own["nyc-01"]["totals"]["visitors"]}
    conv = whole["chain"]["transactions"] / whole["chain"]["visitors"]
    for g in by_store["groups"]:
        assert g["comparison"]["conversion_index"] == pytest.approx(g["totals"]["conversion"] / conv)
    assert sorted(g["comparison"]["rank_conversion"] for g in by_store["groups"]) == [1, 2]


def _same_bin(a: float, b: float) -> bool:
    import bisect

    return bisect.bisect_right(R.DWELL_EDGES_S, a) == bisect.bisect_right(R.DWELL_EDGES_S, b) or abs(a - b) < 1e-9


def test_republishing_sends_only_changed_hours_and_the_chain_keeps_the_newest(stores) -> None:
    _, config = stores["berlin-01"]
    config = config.model_copy(update={"rollup": config.rollup.model_copy(update={"enabled": True})})
    storage = open_storage(config.storage)
    chain = SqliteStorage(":memory:")
    try:
        sent: list = []
        pub = kpi_publisher(config, storage, sent.extend)
        assert pub.run() > 0 and pub.run() == 0  # nothing changed: nothing sent
        roll_into(chain, [h for _, h in sent])
        before = c_totals(chain)
        late = local_ms("Europe/Berlin", "10:40")  # the hour in progress at the last frame (camera clock)
        bq.write_transactions(storage, [pos.transaction("late-1", "berlin-01", "till-2", late, 500, "EUR", 1)])
        sent.clear()
        assert pub.run() == 1 and sent[0][1].label.startswith(f"{DAY}T10:00")  # only that hour again
        roll_into(chain, [h for _, h in sent])
        roll_into(chain, [_older(sent[0][1])])  # a stale copy changes nothing
        after = c_totals(chain)
        assert after["transactions"] == before["transactions"] + 1
        assert after["sales_minor"] == before["sales_minor"] + 500
    finally:
        storage._write(lambda conn: conn.execute(  # leave the module's history as it was
            sa.delete(pos_transactions).where(pos_transactions.c.transaction_id == "late-1")))
        storage.close()


def _older(h: m.StoreKpiHour) -> m.StoreKpiHour:
    old = m.StoreKpiHour()
    old.CopyFrom(h)
    old.computed_ms -= 1
    old.transactions = 0
    old.sales_minor = 0
    return old


def c_totals(chain) -> dict:
    with signed_in_client(create_app(parse_config(CHAIN), chain)) as c:
        return c.get("/v1/chain/kpis", params={"from_day": DAY, "to_day": DAY, "group_by": "chain"}).json()["chain"]


@pytest.mark.parametrize("mutate, reason", [
    (lambda h: setattr(h, "visitors", -3), "visitors: negative"),
    (lambda h: setattr(h, "store_id", "../etc"), "store_id"),
    (lambda h: setattr(h, "end_ms", h.start_ms + 7_200_000), "not an hour bucket"),
    (lambda h: h.dwell_hist.extend([1] * 40), "dwell_hist"),
    (lambda h: setattr(h, "day", "someday"), "day: not a date"),
])
def test_malformed_hours_are_dead_letters_and_lose_nothing_else(mutate, reason) -> None:
    chain = SqliteStorage(":memory:")
    good = m.StoreKpiHour(store_id="s1", start_ms=0, end_ms=3_600_000, day="1970-01-01",
                          label="1970-01-01T00:00+00:00", hours=1.0, visitors=4, computed_ms=1)
    bad = m.StoreKpiHour()
    bad.CopyFrom(good)
    mutate(bad)
    core = RunnerCore(ChainRollupStage(parse_config(CHAIN)), [HistorySink(chain)])
    handled = [core.write_sinks(core.process(BusMessage("s1.store-kpis", b"k", v, i), topics.STORE_KPIS))
               for i, v in enumerate([m.encode(bad), b"\x08\xff\xff garbage", m.encode(good)])]
    assert [h.dead_letter is not None for h in handled] == [True, True, False]
    assert reason in handled[0].dead_letter.reason
    assert [s.store_id for s in chain_stores(chain)] == ["s1"] and core.dead_letters == 2


def test_cli_publishes_locally_and_as_json(stores, capsys) -> None:
    path, config = stores["nyc-01"]
    assert main(["kpis", "publish", "--config", str(path), "--json", "--lookback-h", "48"]) == 0
    hours = __import__("json").loads(capsys.readouterr().out)["hours"]
    assert {h["store_id"] for h in hours} == {"nyc-01"} and sum(int(h.get("visitors", 0)) for h in hours) >= 1
    assert main(["kpis", "publish", "--config", str(path), "--local"]) == 0
    assert "published to the local roll-up tables" in capsys.readouterr().out
    storage = open_storage(config.storage)
    try:
        with signed_in_client(create_app(config, storage), role="viewer") as c:
            assert [s["store_id"] for s in c.get("/v1/stores").json()["stores"]] == ["nyc-01"]
            assert c.get("/v1/chain/kpis", params={"from_day": DAY, "to_day": DAY}).json()["chain"]["visitors"] == \
                own_kpis(config)["totals"]["visitors"]
    finally:
        storage.close()


@pytest.mark.slow
def test_chain_rollup_service_reads_every_store_topic_into_postgres(stores, tmp_path) -> None:
    from storelens.config import KafkaConfig
    from storelens.runtime.kafka import KafkaBus, consume_all
    from storelens.runtime.localdeploy import KAFKA, LocalDeployment

    ns = "ch" + uuid.uuid4().hex[:8]
    chain_site = {**CHAIN, "chain": {"topic_pattern": rf"^{ns}-[a-z0-9-]+\.store-kpis$", "metadata_refresh_s": 2}}
    dep = LocalDeployment(tmp_path, chain_site)
    try:
        for store, (path, _) in stores.items():  # each store publishes to its own prefixed topic
            site = yaml.safe_load(path.read_text())
            site["kafka"] = {"bootstrap_servers": KAFKA, "topic_prefix": f"{ns}-{store}."}
            p = tmp_path / f"{store}-kafka.yaml"
            p.write_text(yaml.safe_dump(site))
            assert main(["kpis", "publish", "--config", str(p)]) == 0
        bus = KafkaBus(KafkaConfig(bootstrap_servers=KAFKA), f"{ns}-test")
        bus.publish(f"{ns}-berlin-01.store-kpis", b"x", b"\x08\xff\xff not an hour")
        bus.close(30)
        dep.start("chain-rollup")
        dep.wait_ready("chain-rollup")
        chain = open_storage(parse_config({**CHAIN, "storage": {"backend": "postgres", "dsn": dep.dsn}}).storage)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and len(chain_stores(chain)) < 2:
                time.sleep(1)
            assert [s.store_id for s in chain_stores(chain)] == ["berlin-01", "nyc-01"], dep.log("chain-rollup")
            with signed_in_client(create_app(parse_config(CHAIN), chain)) as c:
                whole = c.get("/v1/chain/kpis", params={"from_day": DAY, "to_day": DAY, "group_by": "chain"}).json()
            total = sum(own_kpis(cfg)["totals"]["visitors"] for _, cfg in stores.values())
            deadline = time.time() + 60
            while whole["chain"]["visitors"] != total and time.time() < deadline:  # the last hours may lag
                time.sleep(1)
                with signed_in_client(create_app(parse_config(CHAIN), chain)) as c:
                    whole = c.get("/v1/chain/kpis", params={"from_day": DAY, "to_day": DAY,
                                                            "group_by": "chain"}).json()
            assert whole["chain"]["visitors"] == total and whole["chain"]["stores"] == 2
        finally:
            chain.close()
        letters = consume_all(KafkaConfig(bootstrap_servers=KAFKA), dep.dead_topic, timeout_s=30, expect=1)
        assert len(letters) == 1 and "cannot decode" in m.decode(m.DeadLetter, letters[0].value).reason
        assert dep.stop("chain-rollup") == 0
    finally:
        for proc in dep.procs.values():
            if proc.poll() is None:
                proc.kill()


def test_chain_config_needs_no_cameras_but_a_store_does() -> None:
    assert parse_config(CHAIN).cameras == []
    with pytest.raises(Exception, match="at least 1 camera"):
        parse_config({"store": {"id": "s"}, "cameras": []})
    with pytest.raises(Exception, match="topic_pattern"):
        parse_config({**CHAIN, "chain": {"topic_pattern": "store-kpis"}})

