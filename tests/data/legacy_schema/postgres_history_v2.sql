-- Schema written by StoreLens before its migrations were Alembic's (storelens/storage_pg.py at acc19bc, MIGRATIONS[1]: history schema version 2).
-- Statements end with ';' on a line end. Test fixture: do not edit.

CREATE TABLE track_attributes (
            camera_id          TEXT COLLATE "C" NOT NULL,
            track_id           BIGINT           NOT NULL,
            first_ts_ms        BIGINT           NOT NULL,
            last_ts_ms         BIGINT           NOT NULL,
            last_seq           BIGINT           NOT NULL,
            n_faces            BIGINT           NOT NULL,
            n_used             BIGINT           NOT NULL,
            n_rejected         BIGINT           NOT NULL,
            age_years          DOUBLE PRECISION,
            age_low_years      DOUBLE PRECISION,
            age_high_years     DOUBLE PRECISION,
            gender             TEXT COLLATE "C" NOT NULL,
            gender_confidence  DOUBLE PRECISION NOT NULL,
            emotion            TEXT COLLATE "C" NOT NULL,
            emotion_confidence DOUBLE PRECISION NOT NULL,
            attention_share    DOUBLE PRECISION,
            final              BOOLEAN          NOT NULL,
            PRIMARY KEY (camera_id, track_id)
        );

CREATE INDEX track_attributes_by_time ON track_attributes (camera_id, last_ts_ms);

CREATE INDEX track_attributes_by_last_ts ON track_attributes (last_ts_ms);

CREATE TABLE customer_matches (
            event_id     TEXT COLLATE "C" PRIMARY KEY,
            camera_id    TEXT COLLATE "C" NOT NULL,
            track_id     BIGINT           NOT NULL,
            seq          BIGINT           NOT NULL,
            ts_ms        BIGINT           NOT NULL,
            customer_id  TEXT COLLATE "C" NOT NULL,
            similarity   DOUBLE PRECISION NOT NULL,
            is_new       BOOLEAN          NOT NULL,
            is_returning BOOLEAN          NOT NULL,
            visit_no     BIGINT           NOT NULL
        );

CREATE INDEX customer_matches_by_customer ON customer_matches (customer_id, ts_ms);
