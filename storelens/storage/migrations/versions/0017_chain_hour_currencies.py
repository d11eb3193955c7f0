"""history 17: ``chain_kpi_hours`` keyed by (store_id, start_ms, currency): an hour's sales in every currency.

A store taking two currencies published each hour's sales in one of them (the most frequent of its look-back)
and dropped the others. Its hours now carry the other currencies' sales too (``StoreKpiHour.other_sales``),
stored as rows of their own that hold those sales only, so the primary key takes the currency. The rows kept
are those of before (one per store-hour, in its currency). SQLite rebuilds the table (batch mode), PostgreSQL
swaps the primary key in place. A chain-rollup of before this revision cannot upsert into the new key (its
``ON CONFLICT`` names the old one): upgrade the chain's roll-up service with the database (one replica).

Revision ID: 0017
"""
import warnings

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_TABLE = "chain_kpi_hours"
_PK = "chain_kpi_hours_pkey"  # PostgreSQL's name of the primary key 0012 created


def _key(columns: list[str]) -> None:
    if op.get_bind().dialect.name == "sqlite":  # the key is part of the table: rebuilt, its indexes with it
        with warnings.catch_warnings():  # SQLAlchemy notes that the rebuilt table's key is not the reflected one
            warnings.filterwarnings("ignore", r".*specifies columns .* as primary_key=True", sa.exc.SAWarning)
            with op.batch_alter_table(_TABLE, recreate="always") as batch:
                batch.create_primary_key(_PK, columns)
    else:
        op.drop_constraint(_PK, _TABLE, type_="primary")
        op.create_primary_key(_PK, _TABLE, columns)


def upgrade() -> None:
    _key(["store_id", "start_ms", "currency"])


def downgrade() -> None:  # the rows of other currencies than each hour's main one go first
    op.execute(f"DELETE FROM {_TABLE} WHERE hours = 0 AND visitors = 0 AND EXISTS (SELECT 1 FROM {_TABLE} AS o "
               f"WHERE o.store_id = {_TABLE}.store_id AND o.start_ms = {_TABLE}.start_ms AND o.currency <> "
               f"{_TABLE}.currency AND (o.hours > 0 OR o.visitors > 0))")
    _key(["store_id", "start_ms"])
