-- Schema written by StoreLens before its migrations were Alembic's (storelens/storage.py at acc19bc, MIGRATIONS[0]: history schema version 1).
-- Statements end with ';' on a line end. Test fixture: do not edit.

CREATE TABLE track_points (
            camera_id  TEXT    NOT NULL,
            seq        INTEGER NOT NULL,
            track_id   INTEGER NOT NULL,
            ts_ms      INTEGER NOT NULL,
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            confidence REAL    NOT NULL,
            PRIMARY KEY (camera_id, seq, track_id)
        ) WITHOUT ROWID;

CREATE INDEX track_points_by_time ON track_points (camera_id, ts_ms);

CREATE TABLE crossings (
            event_id  TEXT    PRIMARY KEY,
            camera_id TEXT    NOT NULL,
            line_id   TEXT    NOT NULL,
            track_id  INTEGER NOT NULL,
            direction TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
            ts_ms     INTEGER NOT NULL,
            seq       INTEGER NOT NULL
        );

CREATE INDEX crossings_by_time ON crossings (camera_id, ts_ms);

CREATE TABLE occupancy (
            camera_id TEXT    PRIMARY KEY,
            ts_ms     INTEGER NOT NULL,
            occupancy INTEGER NOT NULL,
            total_in  INTEGER NOT NULL,
            total_out INTEGER NOT NULL
        );

CREATE TABLE count_windows (
            camera_id       TEXT    NOT NULL,
            line_id         TEXT    NOT NULL,
            window_start_ms INTEGER NOT NULL,
            window_end_ms   INTEGER NOT NULL,
            count_in        INTEGER NOT NULL,
            count_out       INTEGER NOT NULL,
            PRIMARY KEY (camera_id, line_id, window_start_ms)
        ) WITHOUT ROWID;
