"""history 2: face history (per-track attributes, customer matches).

Exactly the tables of StoreLens' ``schema_version`` 2 (hand-written DDL before Alembic).

Revision ID: 0002
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import FLAG, ID, INT, REAL

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _cols(type_, *names: str, nullable: bool = False) -> list[sa.Column]:
    return [sa.Column(n, type_, nullable=nullable) for n in names]


def upgrade() -> None:
    op.create_table(
        "track_attributes", *_cols(ID, "camera_id"),
        *_cols(INT, "track_id", "first_ts_ms", "last_ts_ms", "last_seq", "n_faces", "n_used", "n_rejected"),
        *_cols(REAL, "age_years", "age_low_years", "age_high_years", nullable=True),
        *_cols(ID, "gender"), *_cols(REAL, "gender_confidence"), *_cols(ID, "emotion"),
        *_cols(REAL, "emotion_confidence"), *_cols(REAL, "attention_share", nullable=True), *_cols(FLAG, "final"),
        sa.PrimaryKeyConstraint("camera_id", "track_id"), sqlite_with_rowid=False)
    # /v1/demographics: optional camera + time range on the last sighting.
    op.create_index("track_attributes_by_time", "track_attributes", ["camera_id", "last_ts_ms"])
    op.create_index("track_attributes_by_last_ts", "track_attributes", ["last_ts_ms"])
    op.create_table(
        "customer_matches", sa.Column("event_id", ID, primary_key=True, nullable=op.get_bind().dialect.name == "sqlite"), *_cols(ID, "camera_id"),
        *_cols(INT, "track_id", "seq", "ts_ms"), *_cols(ID, "customer_id"), *_cols(REAL, "similarity"),
        *_cols(FLAG, "is_new", "is_returning"), *_cols(INT, "visit_no"))
    # /v1/customers/{id} and erasure: by customer, in time order.
    op.create_index("customer_matches_by_customer", "customer_matches", ["customer_id", "ts_ms"])
