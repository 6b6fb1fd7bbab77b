"""deliver_to: where each clip is owed, so delivery survives an edited manifest

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): instant on SQLite even for a ledger of 100k jobs.
    op.add_column('jobs', sa.Column('deliver_to', sa.Text(), nullable=True))
    # Clips that earlier runs left undelivered have no deliver_to yet: the next run of a
    # manifest containing them records it (or `batchgen deliver --to URL` names it).


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('deliver_to')
