"""worker leases: runs.heartbeat_at, jobs.worker_id

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): instant on SQLite even for a ledger of 100k jobs.
    op.add_column('runs', sa.Column('heartbeat_at', sa.Float(), nullable=True))
    op.add_column('jobs', sa.Column('worker_id', sa.Integer(), nullable=True))
    op.create_index('ix_jobs_worker_id', 'jobs', ['worker_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_worker_id', table_name='jobs')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('worker_id')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('heartbeat_at')
