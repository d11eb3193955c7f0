"""history 15: indexes the retention purge and the erasure search instead of scanning whole tables.

* ``customer_matches_by_time`` (``ts_ms``): the hourly purge of expired track-to-customer links;
* ``track_summaries_by_last_ts`` (``last_ts_ms``): the hourly purge of expired track summaries;
* ``track_points_by_track`` (``camera_id``, ``track_id``): the erasure of a customer's tracks' points,
  without reading every point of the camera.

Building them on a large existing history takes a while, once, at the upgrade. On PostgreSQL they are built
``CONCURRENTLY`` (:func:`~storelens.storage.dialects.add_index`): the pipeline's writes to those tables go on
meanwhile, the first service that opens the store waits for the build (on a history with weeks of track
points, give that rollout a longer startup probe, or open the store once by hand first). SQLite builds them in
the migration's transaction.

Revision ID: 0015
"""
from alembic import op

from storelens.storage.dialects import add_index

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_index(op, "customer_matches_by_time", "customer_matches", ["ts_ms"])
    add_index(op, "track_summaries_by_last_ts", "track_summaries", ["last_ts_ms"])
    add_index(op, "track_points_by_track", "track_points", ["camera_id", "track_id"])


def downgrade() -> None:
    op.drop_index("track_points_by_track", "track_points")
    op.drop_index("track_summaries_by_last_ts", "track_summaries")
    op.drop_index("customer_matches_by_time", "customer_matches")
