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
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('heartbeat_at', sa.Float(), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_jobs_worker_id', ['worker_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_jobs_worker_id_runs'), 'runs', ['worker_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_jobs_worker_id_runs'), type_='foreignkey')
        batch_op.drop_index('ix_jobs_worker_id')
        batch_op.drop_column('worker_id')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('heartbeat_at')
