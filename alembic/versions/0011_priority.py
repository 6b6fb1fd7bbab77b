"""priority: queued jobs start highest priority first, then in manifest order (issue 30)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 16:00:00

A job's ``priority`` comes from its manifest (defaults, row or matrix); it is not part of the
job's key, so a ledger written before keeps every job and key, all at priority 0. The
scheduler's feed reads a run's queued jobs model by model, highest priority first: a partial
index over queued jobs only serves it and empties as the night goes on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    # Plain ADD COLUMN with a constant default: no table rebuild, instant on SQLite.
    op.add_column('jobs', sa.Column('priority', sa.Integer(), server_default='0', nullable=False))
    op.create_index('ix_jobs_queued', 'jobs', ['run_id', 'model', 'priority', 'seq'], unique=False,
                    sqlite_where=_QUEUED, postgresql_where=_QUEUED)


def downgrade() -> None:
    op.drop_index('ix_jobs_queued', table_name='jobs', sqlite_where=_QUEUED, postgresql_where=_QUEUED)
    # ALTER TABLE ... DROP COLUMN (SQLite ≥ 3.35): no rebuild, which the events' foreign key
    # would refuse (see 0009).
    op.drop_column('jobs', 'priority')
