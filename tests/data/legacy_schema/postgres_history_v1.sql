-- Schema written by StoreLens before its migrations were Alembic's (storelens/storage_pg.py at acc19bc, MIGRATIONS[0]: history schema version 1).
-- Statements end with ';' on a line end. Test fixture: do not edit.

CREATE TABLE track_points (
            camera_id  TEXT COLLATE "C" NOT NULL,
            seq        BIGINT           NOT NULL,
            track_id   BIGINT           NOT NULL,
            ts_ms      BIGINT           NOT NULL,
            x1 DOUBLE PRECISION NOT NULL, y1 DOUBLE PRECISION NOT NULL,
            x2 DOUBLE PRECISION NOT NULL, y2 DOUBLE PRECISION NOT NULL,
            confidence DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (camera_id, seq, track_id)
        );

CREATE INDEX track_points_by_time ON track_points (camera_id, ts_ms, seq, track_id);

CREATE TABLE crossings (
            event_id  TEXT COLLATE "C" PRIMARY KEY,
            camera_id TEXT COLLATE "C" NOT NULL,
            line_id   TEXT COLLATE "C" NOT NULL,
            track_id  BIGINT           NOT NULL,
            direction TEXT COLLATE "C" NOT NULL CHECK (direction IN ('in', 'out')),
            ts_ms     BIGINT           NOT NULL,
            seq       BIGINT           NOT NULL
        );

CREATE INDEX crossings_by_time ON crossings (camera_id, ts_ms) INCLUDE (line_id, direction);

CREATE TABLE occupancy (
            camera_id TEXT COLLATE "C" PRIMARY KEY,
            ts_ms     BIGINT NOT NULL,
            occupancy BIGINT NOT NULL,
            total_in  BIGINT NOT NULL,
            total_out BIGINT NOT NULL
        );

CREATE TABLE count_windows (
            camera_id       TEXT COLLATE "C" NOT NULL,
            line_id         TEXT COLLATE "C" NOT NULL,
            window_start_ms BIGINT NOT NULL,
            window_end_ms   BIGINT NOT NULL,
            count_in        BIGINT NOT NULL,
            count_out       BIGINT NOT NULL,
            PRIMARY KEY (camera_id, line_id, window_start_ms)
        );
