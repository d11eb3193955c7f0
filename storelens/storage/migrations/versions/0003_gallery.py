"""gallery 1: customers, embeddings (float32 vectors, never images), visits, meta.

Exactly the tables of the face gallery before Alembic: ``gallery_*`` with
layout 1 on PostgreSQL; ``meta``, ``customers``, ``embeddings``, ``visits`` in
a SQLite gallery file. PostgreSQL checks the size of every vector (``4 * dim``
bytes, ``dim`` given by the store).

Revision ID: 0003
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from storelens.storage.schema import ID, INT

revision = "0003"
down_revision = None
branch_labels = ("gallery",)
depends_on = None


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    dim = int(op.get_context().opts["storelens"]["dim"])
    p = "gallery_" if pg else ""

    def key(name: str, type_=ID, *args) -> sa.Column:
        # A one-column PRIMARY KEY in SQLite was declared without NOT NULL.
        return sa.Column(name, type_, *args, primary_key=True, nullable=not pg)

    def owner() -> sa.Column:
        return sa.Column("customer_id", ID, sa.ForeignKey(f"{p}customers.customer_id", ondelete="CASCADE"),
                         nullable=False)

    op.create_table(f"{p}meta", key("key"), sa.Column("value", sa.Text, nullable=False))
    op.create_table(f"{p}customers", key("customer_id"),
                    sa.Column("created_ts_ms", INT, nullable=False),
                    *([sa.Column("seq", INT, sa.Identity(always=True), nullable=False, unique=True)] if pg else []))
    op.create_table(
        f"{p}embeddings",
        key("id", INT, *([sa.Identity()] if pg else [])), owner(),
        sa.Column("ts_ms", INT, nullable=False), sa.Column("vector", sa.LargeBinary, nullable=False),
        *([sa.CheckConstraint(f"octet_length(vector) = {4 * dim}")] if pg else []), sqlite_autoincrement=True)
    op.create_index(f"{p}embeddings_customer", f"{p}embeddings", ["customer_id"])
    op.create_index(f"{p}embeddings_ts", f"{p}embeddings", ["ts_ms"])
    op.create_table(
        f"{p}visits", owner(), sa.Column("visit_no", sa.Integer, nullable=False),
        sa.Column("first_ts_ms", INT, nullable=False), sa.Column("last_ts_ms", INT, nullable=False),
        sa.Column("cameras", postgresql.ARRAY(sa.Text) if pg else sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "visit_no"))
    op.create_index(f"{p}visits_last_ts", f"{p}visits", ["last_ts_ms"])
