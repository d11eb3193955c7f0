"""history 11: counting accuracy audits (count_audits), issue 11 item 9.

Revision ID: 0011
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import FLAG, ID, INT, REAL

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "count_audits",
        sa.Column("audit_id", ID, nullable=False), sa.Column("ts_ms", INT, nullable=False),
        sa.Column("auditor", ID, nullable=False), sa.Column("cameras", sa.Text, nullable=False),
        sa.Column("start_ms", INT, nullable=True), sa.Column("end_ms", INT, nullable=True),
        *(sa.Column(c, INT, nullable=False) for c in ("n_clips", "n_correct", "system_in", "system_out",
                                                      "person_in", "person_out")),
        *(sa.Column(c, REAL, nullable=False) for c in ("accuracy", "ci_low", "ci_high", "confidence",
                                                       "count_accuracy", "min_accuracy")),
        sa.Column("method", ID, nullable=False), sa.Column("alerted", FLAG, nullable=False),
        sa.Column("clips", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("audit_id"),
    )
    op.create_index("count_audits_by_time", "count_audits", ["ts_ms"])
