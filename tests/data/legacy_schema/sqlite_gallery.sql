-- Schema written by StoreLens before its migrations were Alembic's (storelens/faces/gallery.py at acc19bc, _SCHEMA: the SQLite gallery).
-- Statements end with ';' on a line end. Test fixture: do not edit.

CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customers(
    customer_id TEXT PRIMARY KEY,
    created_ts_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL REFERENCES customers(customer_id) ON DELETE CASCADE,
    ts_ms INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_customer ON embeddings(customer_id);
CREATE INDEX IF NOT EXISTS embeddings_ts ON embeddings(ts_ms);
CREATE TABLE IF NOT EXISTS visits(
    customer_id TEXT NOT NULL REFERENCES customers(customer_id) ON DELETE CASCADE,
    visit_no INTEGER NOT NULL,
    first_ts_ms INTEGER NOT NULL,
    last_ts_ms INTEGER NOT NULL,
    cameras TEXT NOT NULL,
    PRIMARY KEY (customer_id, visit_no)
);
CREATE INDEX IF NOT EXISTS visits_last_ts ON visits(last_ts_ms);
