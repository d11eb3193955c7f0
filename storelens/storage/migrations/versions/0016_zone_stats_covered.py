"""history 16: zone_stats.covered_ms, the time of a bucket the stream showed (its mean occupancy is over it).

``/v1/zones/stats`` merges stored buckets into longer ones weighting each bucket's mean by it, not by the
bucket's length (a bucket a stall left half covered counted as much as a whole one). NULL means the whole
bucket (``bucket_end_ms - bucket_start_ms``, what the merge assumed before): the rows stored before this
revision, and those an analytics service of before it writes during a rolling upgrade (its inserts do not
name the column). A nullable column is added in place, without rewriting the table.

Revision ID: 0016
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import INT

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("zone_stats") as batch:
        batch.add_column(sa.Column("covered_ms", INT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("zone_stats") as batch:
        batch.drop_column("covered_ms")
