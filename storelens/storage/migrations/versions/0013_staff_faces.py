"""history 13: the opt-in staff face gallery (staff_members, staff_face_embeddings), issue 11 item 3.

Revision ID: 0013
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff_members",
        sa.Column("staff_id", ID, nullable=False), sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("consent_at_ms", INT, nullable=False), sa.Column("consent_by", sa.Text, nullable=False),
        sa.Column("consent_note", sa.Text, nullable=False), sa.Column("created_ms", INT, nullable=False),
        sa.Column("revoked_ms", INT, nullable=True),
        sa.PrimaryKeyConstraint("staff_id"),
    )
    op.create_table(
        "staff_face_embeddings",
        sa.Column("staff_id", ID, sa.ForeignKey("staff_members.staff_id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False), sa.Column("model", ID, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False), sa.Column("created_ms", INT, nullable=False),
        sa.PrimaryKeyConstraint("staff_id", "seq"),
    )
