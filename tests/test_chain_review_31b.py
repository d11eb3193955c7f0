"""Review of the merged chain roll-up / POS change (batch 31b), each fix with a test that fails on the code before.

1. The default ``chain.topic_pattern`` subscribes ``berlin_store-kpis`` but the transport mapped only ``.``-prefixed
   topics to their base name: every hour of such a store was a dead letter.
2. ``privacy.retention.days.staff_tracks: 1`` clipped the look-back to 0 h (nothing ever published); 1.02 to 0.48 h
   (an hour sent only in its first 29 minutes): the current hour (and today's) is always sent.
3. ``replace`` of stored sales needs the admin role and leaves an audit entry (old and new values) per sale.
5. Conversion's "no visitors" hold-out is decided per store over the whole request, not per bucket.
7. A stray quote in a POS CSV spoils its own line only.
"""
from __future__ import annotations

import pytest
from test_chain_rollup import CHAIN
from test_chain_review_31 import store_config, visitors_at

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.bus import BusMessage
from storelens.runtime.rollup import hour_key
from storelens.runtime.runner import RunnerCore
from storelens.runtime.sinks import HistorySink
from storelens.stages.rollup import ChainRollupStage
from storelens.storage.rollup import hour_rows

H = 1767261600000  # 2026-01-01T10:00Z
HOUR = 3_600_000


# -- 1. a store topic with a prefix not ending in "." --------------------------------------------------------


def chain_transport():
    from storelens.runtime.transports import ConsumerGroup, KafkaTransport

    chain = parse_config(CHAIN)
    stage = ChainRollupStage(chain)
    group = ConsumerGroup(stage.name, tuple(stage.inputs), pattern=chain.chain.topic_pattern)
    return chain, stage, KafkaTransport(chain.kafka, "chain-rollup-31b", [group])


@pytest.mark.parametrize(("topic", "base"), [
    ("store-kpis", topics.STORE_KPIS),
    ("s1.store-kpis", topics.STORE_KPIS),
    ("berlin_store-kpis", topics.STORE_KPIS),   # before: unchanged, "does not consume topic"
    ("berlin-store-kpis", topics.STORE_KPIS),
    ("xstore-kpis", topics.STORE_KPIS),
    ("a.b-c_store-kpis", topics.STORE_KPIS),
])
def test_a_store_topic_with_any_allowed_prefix_maps_to_store_kpis(topic, base) -> None:
    _, _, tr = chain_transport()
    try:
        assert tr.base_topic(topic) == base
    finally:
        tr.close()


def test_an_hour_on_an_underscore_prefixed_topic_is_one_row_and_no_dead_letter(history_store) -> None:
    chain, stage, tr = chain_transport()
    try:
        h = m.StoreKpiHour(store_id="berlin", store_name="Berlin", region="east", timezone="UTC", start_ms=H,
                           end_ms=H + HOUR, day="2026-01-01", label="2026-01-01T10:00+00:00", hours=1.0,
                           computed_ms=1, visitors=7, buying_units=-1)
        core = RunnerCore(stage, [HistorySink(history_store)])
        msg = BusMessage("berlin_store-kpis", hour_key(h), m.encode(h), 0)
        core.write_sinks(core.process(msg, tr.base_topic(msg.topic)))
    finally:
        tr.close()
    assert core.dead_letters == 0
    rows = hour_rows(history_store, stores=["berlin"])
    assert [(r.start_ms, r.kpis.visitors) for r in rows] == [(H, 7)]


# -- 2. a retention shorter than a day ----------------------------------------------------------------------


@pytest.mark.parametrize(("staff_days", "minute"), [(1, 45), (1, 5), (1.02, 45), (1.02, 10)])
def test_the_current_hour_is_always_sent_under_a_short_retention(tmp_path, staff_days, minute) -> None:
    from storelens.storage import open_storage
    from storelens.storage.rollup import kpi_publisher

    config = store_config(tmp_path, privacy={"k_min": 1, "retention": {"days": {"staff_tracks": staff_days}}},
                          rollup={"enabled": True, "every_s": 300})
    now = H + minute * 60_000
    storage = open_storage(config.storage)
    sent: list = []
    try:
        visitors_at(storage, H - HOUR + 30 * 60_000, 4, "prev")
        visitors_at(storage, H + 60_000, 3)
        pub = kpi_publisher(config, storage, lambda items: sent.extend(h for _, h in items))
        pub.now_ms = lambda: now
        assert pub.run() >= 1  # before: 0 (staff_tracks 1: a look-back of 0 h), or the hour left out (1.02)
        visitors_at(storage, H + 120_000, 2, "late")
        assert pub.run() >= 1  # the current hour's new figures are sent
    finally:
        storage.close()
    by_start = {}
    for h in sent:
        by_start[h.start_ms] = h
    assert by_start[H].visitors == 5
    if minute <= 5:  # the hour that ended within every_s: its final figures
        assert by_start[H - HOUR].visitors == 4
    # today's business day began 10 h ago, within the 24 h the crossings are kept: its hours are sent too
    assert min(by_start) == H - 10 * HOUR
    for h in sent:
        assert h.window_start_ms <= min(by_start) and list(h.window_hour_starts_ms)[-1] == H


# -- 3. replacing stored sales: admin only, audited -----------------------------------------------------------


SITE = {"store": {"id": "s1", "timezone": "UTC"}, "cameras": [{"id": "door", "source": "x.mp4"}]}


def replaced_entries(storage) -> list[dict]:
    from storelens.storage.auth import list_audit

    return list_audit(storage, action="pos.replace")[0]


def test_replace_over_the_api_needs_admin_and_is_audited(history_store) -> None:
    from storelens.api import create_app
    from storelens.api.testing import signed_in_client
    from storelens.storage import business as bq

    sale = {"transaction_id": "t1", "register_id": "r1", "ts_ms": H, "amount_minor": 10_000, "currency": "EUR"}
    fixed = {**sale, "amount_minor": 1_000}
    app = create_app(parse_config(SITE), history_store)
    with signed_in_client(app, role="manager") as c:  # the till integration's key
        assert c.post("/v1/transactions", json={"transactions": [sale]}).json()["new"] == 1
        r = c.post("/v1/transactions", params={"replace": "true"}, json={"transactions": [fixed]})
        assert r.status_code == 403, r.text  # before: 200, the stored sale overwritten
        assert "admin" in r.text
    assert [x.amount_minor for x in bq.sales(history_store, "s1", 0, 2**53)] == [10_000]
    assert replaced_entries(history_store) == []
    with signed_in_client(app, role="admin") as c:
        r = c.post("/v1/transactions", params={"replace": "true"}, json={"transactions": [fixed]})
        assert r.status_code == 200 and r.json()["replaced"] == 1, r.text
    (entry,) = replaced_entries(history_store)  # before: none
    assert entry["target"] == "t1" and entry["actor"].startswith("key:")
    assert entry["detail"]["old"]["amount_minor"] == 10_000 and entry["detail"]["new"]["amount_minor"] == 1_000
    assert entry["detail"]["old"]["ts_ms"] == H and entry["detail"]["old"]["currency"] == "EUR"


def test_replace_from_the_cli_is_audited(tmp_path, capsys) -> None:
    import yaml

    from storelens.cli import main
    from storelens.storage import SqliteStorage

    cfg, db = tmp_path / "site.yaml", tmp_path / "pos.db"
    cfg.write_text(yaml.safe_dump({**SITE, "storage": {"backend": "sqlite", "path": str(tmp_path / "h.db")}}))
    head = "transaction_id,register_id,time,amount,items\n"
    first, fixed = tmp_path / "first.csv", tmp_path / "fixed.csv"
    first.write_text(head + "t1,r1,2026-01-01T10:00:00Z,100.00,1\nt2,r1,2026-01-01T10:01:00Z,5.00,1\n")
    fixed.write_text(head + "t1,r1,2026-01-01T10:00:00Z,10.00,2\nt2,r1,2026-01-01T10:01:00Z,5.00,1\n")
    args = ["--config", str(cfg), "--db", str(db), "--json"]
    assert main(["pos", "import", str(first), *args]) == 0
    assert main(["pos", "import", str(fixed), *args, "--replace"]) == 0
    capsys.readouterr()
    with SqliteStorage(str(db)) as s:
        (entry,) = replaced_entries(s)  # before: none
    assert (entry["actor"], entry["target"]) == ("cli", "t1")
    assert entry["detail"]["old"]["amount_minor"] == 10_000 and entry["detail"]["new"]["amount_minor"] == 1_000
    assert (entry["detail"]["old"]["items_count"], entry["detail"]["new"]["items_count"]) == (1, 2)


# -- 7. a stray quote spoils its own line only ------------------------------------------------------------------


def test_a_stray_quote_spoils_only_its_line(tmp_path, capsys) -> None:
    import json

    import yaml

    from storelens.cli import main
    from storelens.storage import SqliteStorage
    from storelens.storage import business as bq

    cfg, db, f = tmp_path / "site.yaml", tmp_path / "pos.db", tmp_path / "pos.csv"
    cfg.write_text(yaml.safe_dump({**SITE, "storage": {"backend": "sqlite", "path": str(tmp_path / "h.db")}}))
    rows = ["transaction_id,register_id,time,amount,items"]
    for i in range(9):  # lines 2-10; line 3 has a stray quote
        amount = '"1.00' if i == 1 else "1.00"
        rows.append(f"t{i},r1,2026-01-01T10:00:{i:02d}Z,{amount},1")
    f.write_text("\n".join(rows) + "\n")
    assert main(["pos", "import", str(f), "--config", str(cfg), "--db", str(db), "--json"]) == 1
    out, err = capsys.readouterr()
    errors = [e for e in err.splitlines() if "line " in e]
    assert len(errors) == 1 and "line 3:" in errors[0] and "unclosed quote" in errors[0], err
    assert json.loads(out) == {"rows": 9, "new": 8, "duplicates": 0, "bad": 1, "conflicts": 0, "replaced": 0}
    with SqliteStorage(str(db)) as s:
        assert len(bq.sales(s, "s1", 0, 2**53)) == 8  # before: 1 (the quote swallowed lines 3 to 10)
