"""gallery 2: track_decisions, the reid stage's decision of each track (customer, staff, abstained, erased).

A restarted reid stage looks a track up before it decides it: a track is decided once, and a track of an
erased customer never again; ``output`` keeps the CustomerMatch / StaffTrack published for a customer or staff
decision, which the restarted stage publishes again (the first may never have left the process).
``gallery_track_decisions`` on PostgreSQL, ``track_decisions`` in a SQLite gallery file.

Revision ID: 0020
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT

revision = "0020"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = "gallery_" if op.get_bind().dialect.name == "postgresql" else ""
    op.create_table(
        f"{p}track_decisions",
        sa.Column("camera_id", ID, nullable=False), sa.Column("track_id", INT, nullable=False),
        sa.Column("ts_ms", INT, nullable=False), sa.Column("decision", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=True), sa.Column("staff_id", ID, nullable=True),
        sa.Column("output", sa.LargeBinary, nullable=True),
        sa.PrimaryKeyConstraint("camera_id", "track_id"),
    )
    op.create_index(f"{p}track_decisions_ts", f"{p}track_decisions", ["ts_ms"])
    op.create_index(f"{p}track_decisions_customer", f"{p}track_decisions", ["customer_id"])


def downgrade() -> None:
    p = "gallery_" if op.get_bind().dialect.name == "postgresql" else ""
    op.drop_table(f"{p}track_decisions")
