"""fleet night: the credit cap and the breaker's probes counted for a fleet (issue 30)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 19:20:00

On a cooperative (PostgreSQL) ledger, ``--max-credits`` holds for the workers running one
manifest together, not for each: ``runs.fleet_id`` names the fleet a worker joined and
``runs.credits_committed`` the estimate of the creates it sent. ``breakers.probes`` counts the
probes a fleet sent since a breaker opened, so the fleet gives up after three, not each worker.
Added columns only; existing rows get NULL / 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('fleet_id', sa.Integer(), nullable=True))
    op.add_column('runs', sa.Column('credits_committed', sa.Float(), server_default='0', nullable=False))
    op.add_column('breakers', sa.Column('probes', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): no rebuild (see 0011).
    op.drop_column('breakers', 'probes')
    op.drop_column('runs', 'credits_committed')
    op.drop_column('runs', 'fleet_id')
