"""task api: jobs.api, the API a job's task belongs to

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): instant on SQLite even for a ledger of 100k jobs.
    # NULL for tasks created before this column existed: their API is unknown, not foreign.
    op.add_column('jobs', sa.Column('api', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('api')
