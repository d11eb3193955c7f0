-- Schema written by StoreLens before its migrations were Alembic's (storelens/storage.py at acc19bc, MIGRATIONS[1]: history schema version 2).
-- Statements end with ';' on a line end. Test fixture: do not edit.

CREATE TABLE track_attributes (
            camera_id          TEXT    NOT NULL,
            track_id           INTEGER NOT NULL,
            first_ts_ms        INTEGER NOT NULL,
            last_ts_ms         INTEGER NOT NULL,
            last_seq           INTEGER NOT NULL,
            n_faces            INTEGER NOT NULL,
            n_used             INTEGER NOT NULL,
            n_rejected         INTEGER NOT NULL,
            age_years          REAL,
            age_low_years      REAL,
            age_high_years     REAL,
            gender             TEXT    NOT NULL,
            gender_confidence  REAL    NOT NULL,
            emotion            TEXT    NOT NULL,
            emotion_confidence REAL    NOT NULL,
            attention_share    REAL,
            final              INTEGER NOT NULL,
            PRIMARY KEY (camera_id, track_id)
        ) WITHOUT ROWID;

CREATE INDEX track_attributes_by_time ON track_attributes (camera_id, last_ts_ms);

CREATE INDEX track_attributes_by_last_ts ON track_attributes (last_ts_ms);

CREATE TABLE customer_matches (
            event_id     TEXT    PRIMARY KEY,
            camera_id    TEXT    NOT NULL,
            track_id     INTEGER NOT NULL,
            seq          INTEGER NOT NULL,
            ts_ms        INTEGER NOT NULL,
            customer_id  TEXT    NOT NULL,
            similarity   REAL    NOT NULL,
            is_new       INTEGER NOT NULL,
            is_returning INTEGER NOT NULL,
            visit_no     INTEGER NOT NULL
        );

CREATE INDEX customer_matches_by_customer ON customer_matches (customer_id, ts_ms);
