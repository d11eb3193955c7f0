"""history 14: users.session_epoch, so signing out and a password reset end the user's sessions.

Revision ID: 0014
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import INT

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("session_epoch", INT, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_epoch")
