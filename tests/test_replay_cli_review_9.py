"""Review fixes (issue 9) of the replay and the command line, each against real storage (SQLite, and PostgreSQL of
the test stack where the SQL could differ) and the real CLI (``storelens.cli.main``):

1. a replay keeps the counts of days whose track points the retention purge took but whose frames it kept
   (``privacy.retention.days: {track_points: 1, frames: 7 | null}``): it re-derives only where both are stored;
2. a replay deletes no row dated after the newest frame it read (a running pipeline's crossing written after
   the replay's read, in the same hour), through ``replay`` and the API's ``rederive=true``;
3. ``users create`` never gives the new user ``$STORELENS_ADMIN_PASSWORD`` (the admin's): its password comes
   from stdin; ``create-admin`` reads the variable ``auth.admin_password_env`` names;
4. ``kpis publish --lookback-h`` is checked as ``rollup.lookback_h`` (> 0, <= 744 h): a bad value is a
   config error naming the option, exit 2; ``0`` is not taken as "not given";
5. ``demo --db FILE`` with a PostgreSQL site writes the SQLite file, as ``--db`` of the other commands does.
"""
from __future__ import annotations

import io
import json
import sys

import pytest
import sqlalchemy as sa
import yaml

from storelens.api import create_app
from storelens.api.security import Authenticator
from storelens.api.testing import signed_in_client
from storelens.cli import main
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.paths import asset
from storelens.runtime.localdeploy import PG_DSN
from storelens.storage import SqlStorage
from storelens.storage.privacy import purge_expired
from storelens.storage.replay import replay
from storelens.storage.schema import count_windows, crossings, frames, heatmap_windows, track_points, zone_events
from test_cli_followups_3 import pg_schema  # noqa: F401 (a fixture)

DAY = 86_400_000
T0 = 10 * DAY  # midnight UTC
LINE = {"id": "l", "a": [0, 50], "b": [200, 50]}
ZONE = {"id": "z", "polygon": [[0, 0], [200, 0], [200, 200], [0, 200]]}
PASSWORD = "correct horse battery"


def site_doc(days: dict | None = None) -> dict:
    doc = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", "lines": [LINE], "zones": [ZONE]}]}
    if days is not None:
        doc["privacy"] = {"retention": {"days": days}}
    return doc


def walk(storage, track_id: int, base_ms: int, seq0: int) -> int:
    """A person walking down through the line (one crossing "in") in 20 frames 200 ms apart; returns the next seq."""
    for i in range(20):
        y = 10 + i * 5
        storage.write_tracked_frame(m.TrackedFrame(
            camera_id="c", seq=seq0 + i, ts_ms=base_ms + i * 200, width=200, height=200, source_frame=seq0 + i + 1,
            tracks=[m.Track(track_id=track_id, bbox_xyxy=m.BoxXYXY(x1=90, y1=y - 10, x2=110, y2=y),
                            confidence=0.9)]))
    return seq0 + 20


def three_days(storage) -> None:
    seq = 0
    for day in range(3):
        seq = walk(storage, day + 1, T0 + day * DAY, seq)


def derived_rows(storage) -> dict[str, list]:
    """What the analytics stage derived and a replay replaces (rows in a stable order)."""
    out = {}
    for table, order in ((crossings, "event_id"), (count_windows, "window_start_ms"), (zone_events, "ts_ms"),
                         (heatmap_windows, "window_start_ms")):
        rows = storage._rows(sa.select(table).order_by(table.c[order]))
        out[table.name] = sorted(tuple(r) for r in rows)
    return out


# 1 ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("frames_days", [7, None], ids=["frames 7 days", "frames kept"])
def test_a_replay_keeps_the_counts_of_days_whose_track_points_were_purged(history_store, frames_days) -> None:
    config = parse_config(site_doc({"track_points": 1, "frames": frames_days}))
    three_days(history_store)
    replay(config, history_store)  # derives the three days
    assert history_store.line_totals("c") == {"l": {"in": 3, "out": 0}}
    gone = purge_expired(history_store, config.privacy.retention.days, T0 + 2 * DAY + 10_000)
    assert gone["track_points"] == 40 and gone["frames"] == 0  # days 1 and 2: frames without their points
    before = derived_rows(history_store)
    assert len(before["crossings"]) == 3 and len(before["count_windows"]) == 3 and before["zone_events"]

    [res] = replay(config, history_store)  # no --from: would range from the oldest frame

    assert history_store.line_totals("c") == {"l": {"in": 3, "out": 0}}
    assert derived_rows(history_store) == before  # day 3 re-derived as it was, days 1 and 2 kept
    # from the hour after day 2's frames (the newest without their points): day 3 only
    assert res.start_ms == T0 + DAY + 3_600_000 and res.counts["CrossingEvent"] == 1
    assert "track points" in res.note


def test_a_replay_with_every_track_point_purged_derives_and_deletes_nothing(history_store) -> None:
    config = parse_config(site_doc({"track_points": 1, "frames": None}))
    three_days(history_store)
    replay(config, history_store)
    before = derived_rows(history_store)
    purge_expired(history_store, config.privacy.retention.days, T0 + 4 * DAY)  # every point gone, frames kept
    assert not history_store._rows(sa.select(track_points.c.seq))
    assert history_store._rows(sa.select(frames.c.seq))

    [res] = replay(config, history_store)

    assert (res.deleted, res.written) == (0, 0) and res.start_ms == res.end_ms
    assert derived_rows(history_store) == before


def test_storelens_replay_keeps_the_counts_of_purged_points(tmp_path, capsys) -> None:
    db = tmp_path / "h.db"
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(site_doc({"track_points": 1, "frames": 7})))
    with SqlStorage(str(db)) as s:
        three_days(s)
        config = parse_config(site_doc({"track_points": 1, "frames": 7}))
        replay(config, s)
        purge_expired(s, config.privacy.retention.days, T0 + 2 * DAY + 10_000)
    assert main(["replay", "--config", str(site), "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out, out
    with SqlStorage(str(db)) as s:
        assert s.line_totals("c") == {"l": {"in": 3, "out": 0}}


# 2 ---------------------------------------------------------------------------------------------------------------

def frames_then_a_live_crossing(storage) -> tuple[int, CrossingEvent]:
    """Frames up to T (one crossing), then a crossing a pipeline wrote at T + 5 s, the same hour (its frames not
    yet stored when the replay read)."""
    walk(storage, 1, T0, 0)
    newest = T0 + 19 * 200
    live = CrossingEvent("live-2", "c", "l", 2, "in", newest + 5_000, 45)
    storage.write_batch(crossings=[live])
    return newest, live


def test_a_replay_keeps_a_crossing_dated_after_the_newest_frame_it_read(history_store) -> None:
    config = parse_config(site_doc())
    frames_then_a_live_crossing(history_store)

    [res] = replay(config, history_store)

    assert res.counts["CrossingEvent"] == 1
    assert history_store.line_totals("c") == {"l": {"in": 2, "out": 0}}
    assert "live-2" in {r[0] for r in history_store._rows(sa.select(crossings.c.event_id))}


def test_an_edit_with_rederive_keeps_a_crossing_dated_after_the_newest_frame(tmp_path) -> None:
    config = parse_config(site_doc())
    storage = SqlStorage(str(tmp_path / "h.db"))
    try:
        frames_then_a_live_crossing(storage)
        client = signed_in_client(create_app(config, storage))
        r = client.put("/v1/site/cameras/c/lines/l", params={"rederive": "true"}, json=LINE)
        assert r.status_code == 200, r.text
        assert r.json()["rederived"]["CrossingEvent"] == 1
        assert storage.line_totals("c") == {"l": {"in": 2, "out": 0}}
    finally:
        storage.close()


# 3 ---------------------------------------------------------------------------------------------------------------

def signs_in(db, username: str, password: str) -> bool:
    config = parse_config(site_doc())
    with SqlStorage(str(db)) as s:
        return Authenticator(config.auth, s).login(username, password, "test") is not None


def test_users_create_does_not_give_the_new_user_the_admins_password(tmp_path, monkeypatch) -> None:
    db = tmp_path / "h.db"
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(site_doc()))
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["users", "create-admin", "--config", str(site), "--db", str(db)]) == 0
    for created in (True, False):  # a new user, then a reset of one
        ana = f"ana's own password {created}"
        monkeypatch.setattr(sys, "stdin", io.StringIO(ana + "\n"))
        assert main(["users", "create", "ana", "--role", "manager", "--config", str(site), "--db", str(db)]) == 0
        assert signs_in(db, "ana", ana)
        assert not signs_in(db, "ana", PASSWORD)
    assert signs_in(db, "admin", PASSWORD)


def test_create_admin_reads_the_configured_variable(tmp_path, monkeypatch) -> None:
    db = tmp_path / "h.db"
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({**site_doc(), "auth": {"admin_password_env": "H7_BOSS_PASSWORD"}}))
    monkeypatch.setenv("H7_BOSS_PASSWORD", PASSWORD)
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", "not the configured variable")
    monkeypatch.setattr(sys, "stdin", io.StringIO("nor stdin's password\n"))
    assert main(["users", "create-admin", "boss", "--config", str(site), "--db", str(db)]) == 0
    assert signs_in(db, "boss", PASSWORD)


# 4 ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, error", [
    ("-5", "--lookback-h -5.0: Input should be greater than 0"),
    ("0", "--lookback-h 0.0: Input should be greater than 0"),
    ("1e6", "--lookback-h 1000000.0: Input should be less than or equal to 744"),
    ("nan", "--lookback-h nan: "),
    ("inf", "--lookback-h inf: Input should be less than or equal to 744"),
    ("2", None),
])
def test_kpis_publish_checks_lookback_h_as_the_config_does(tmp_path, capsys, value, error) -> None:
    db = tmp_path / "h.db"
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(site_doc()))
    SqlStorage(str(db)).close()
    code = main(["kpis", "publish", "--config", str(site), "--db", str(db), "--json", "--lookback-h", value])
    captured = capsys.readouterr()
    if error is None:
        assert code == 0, captured.err
        assert json.loads(captured.out) == {"hours": []}
    else:
        assert code == 2, (captured.out, captured.err)
        assert captured.err.startswith(f"error: {error}"), captured.err
        assert "(rollup.lookback_h)" in captured.err and not captured.out


# 5 ---------------------------------------------------------------------------------------------------------------

def test_demo_db_writes_the_sqlite_file_whatever_the_sites_backend(tmp_path, pg_schema) -> None:  # noqa: F811
    import psycopg
    from psycopg.conninfo import make_conninfo

    video = asset("mot", "TUD-Campus", "TUD-Campus.mp4")
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "store": {"id": "s"},
        "storage": {"backend": "postgres", "dsn": make_conninfo(PG_DSN, options=f"-c search_path={pg_schema}")},
        "cameras": [{"id": "door", "source": str(video), "target_fps": 2,
                     "lines": [{"id": "in", "a": [0, 240], "b": [640, 240]}]}]}))
    db = tmp_path / "h.db"
    assert main(["demo", "--no-serve", "--config", str(site), "--db", str(db)]) == 0
    with SqlStorage(str(db)) as s:
        assert s._rows(sa.select(sa.func.count()).select_from(frames))[0][0] > 0
    with psycopg.connect(PG_DSN, connect_timeout=5) as c:  # the site's PostgreSQL is left alone
        assert c.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                         (pg_schema,)).fetchone()[0] == 0
